"""The gallery on real faces through the operations layer: enrol, identify open-set, verify, erase, isolation,
bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceledger.errors import (AlreadyExists, ConsentRequired, InvalidArgument, ManyFaces, NoFace, NotFound)
from faceledger.gallery.records import Consent
from faceledger.service import Actor, Faceledger

CONSENT = Consent("explicit-consent", "form-2026-001")
ME = Actor.local()
CAST = ("amy", "bernadette", "howard", "leonard", "penny", "raj", "sheldon")


@pytest.fixture()
def gallery(settings, engine, tmp_path, backend):
    g = Faceledger(settings.model_copy(update={"home": tmp_path, **backend}), engine)
    yield g
    g.close()


@pytest.fixture()
def cast(gallery, people):
    """The bbt cast enrolled from their first two photos; photos 3-5 are left for probes."""
    gallery.create_collection(ME, "bbt")
    for name in CAST:
        gallery.enroll(ME, "bbt", name, [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)],
                       display_name=name.title(), consent=CONSENT)
    return gallery


def counts(g: Faceledger, collection: str) -> tuple[int, int]:
    c = g.get_collection(ME, collection)
    return c.subjects, c.faces


def test_identify_enrolled_people_and_unknown_stranger(cast, people):
    hits = 0
    for name in CAST:
        for i in (3, 4, 5):
            result = cast.identify(ME, "bbt", people / "bbt" / name / f"{name}{i}.png", top_k=3)
            assert len(result.faces) == 1
            face = result.faces[0]
            hits += face.subject_id == name
            assert face.decision in ("match", "unknown") and len(face.candidates) == 3
            if face.decision == "match":
                assert face.subject_id == name  # never the wrong person at FMR 1e-4
    assert hits >= 18  # of 21 probes
    for i in (1, 2, 3):  # stuart was never enrolled
        stranger = cast.identify(ME, "bbt", people / "bbt" / "stuart" / f"stuart{i}.png").faces[0]
        assert stranger.decision == "unknown" and stranger.subject_id is None
        assert all(not c.match for c in stranger.candidates)


def test_candidates_carry_calibrated_fmr(cast, people):
    face = cast.identify(ME, "bbt", people / "bbt" / "penny" / "penny3.png").faces[0]
    top, rest = face.candidates[0], face.candidates[1:]
    assert top.subject_id == "penny" and top.fmr < 1e-4 <= min(c.fmr for c in rest)
    assert [c.similarity for c in face.candidates] == sorted((c.similarity for c in face.candidates), reverse=True)


def test_group_photo_identifies_each_face(cast, people):
    result = cast.identify(ME, "bbt", people / "bbt" / "bbt1.jpg")
    assert len(result.faces) >= 3
    matched = [f.subject_id for f in result.faces if f.decision == "match"]
    assert len(matched) == len(set(matched)) >= 1  # nobody is matched twice


def test_verify_claims(cast, people):
    assert cast.verify(ME, "bbt", "sheldon", people / "bbt" / "sheldon" / "sheldon4.png").match is True
    assert cast.verify(ME, "bbt", "raj", people / "bbt" / "sheldon" / "sheldon4.png").match is False
    with pytest.raises(NotFound):
        cast.verify(ME, "bbt", "nobody", people / "bbt" / "sheldon" / "sheldon4.png")


def test_same_image_twice_is_idempotent(cast, people):
    before = counts(cast, "bbt")
    again = cast.enroll(ME, "bbt", "amy", [people / "bbt" / "amy" / "amy1.png"])
    assert again.faces[0].created is False
    assert counts(cast, "bbt") == before


def test_consent_is_required_and_checked(gallery, people):
    gallery.create_collection(ME, "door")
    photo = people / "face_recognition_examples" / "obama.jpg"
    with pytest.raises(ConsentRequired):
        gallery.enroll(ME, "door", "obama", [photo])
    past = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(ConsentRequired):
        gallery.enroll(ME, "door", "obama", [photo], consent=Consent("explicit-consent", expires_at=past))
    assert counts(gallery, "door") == (0, 0)
    info = gallery.enroll(ME, "door", "obama", [photo], consent=CONSENT)
    assert info.consent["basis"] == "explicit-consent" and info.consent["reference"] == "form-2026-001"
    gallery.create_collection(ME, "open", require_consent=False)
    assert gallery.enroll(ME, "open", "obama", [photo]).faces[0].created


def test_refusals_change_nothing(cast, people, tmp_path):
    before = counts(cast, "bbt")
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(blank)
    with pytest.raises(NoFace):
        cast.enroll(ME, "bbt", "newcomer", [blank], consent=CONSENT)
    with pytest.raises(ManyFaces):
        cast.enroll(ME, "bbt", "newcomer", [people / "face_recognition_examples" / "two_people.jpg"], consent=CONSENT)
    with pytest.raises(NoFace):  # all or nothing: one good image and one bad one enrol neither
        cast.enroll(ME, "bbt", "newcomer", [people / "bbt" / "stuart" / "stuart1.png", blank], consent=CONSENT)
    with pytest.raises(NotFound):
        cast.enroll(ME, "nope", "x", [people / "bbt" / "stuart" / "stuart1.png"], consent=CONSENT)
    with pytest.raises(InvalidArgument):
        cast.enroll(ME, "bbt", " padded ", [people / "bbt" / "stuart" / "stuart1.png"], consent=CONSENT)
    with pytest.raises(AlreadyExists):
        cast.create_subject(ME, "bbt", "amy", consent=CONSENT)
    with pytest.raises(AlreadyExists):
        cast.create_collection(ME, "bbt")
    with pytest.raises(NotFound):
        cast.erase_subject(ME, "bbt", "nobody")
    assert counts(cast, "bbt") == before
    picked = cast.enroll(ME, "bbt", "obama", [people / "face_recognition_examples" / "two_people.jpg"], face=1,
                         consent=CONSENT)
    assert len(picked.faces) == 1


def test_empty_collection_and_faceless_probe(gallery, people, tmp_path):
    gallery.create_collection(ME, "empty")
    result = gallery.identify(ME, "empty", people / "bbt" / "amy" / "amy3.png")
    assert result.faces[0].decision == "unknown" and result.faces[0].candidates == []
    Image.new("RGB", (300, 300), (40, 40, 40)).save(tmp_path / "dark.png")
    assert gallery.identify(ME, "empty", tmp_path / "dark.png").faces == []
    with pytest.raises(NotFound):
        gallery.identify(ME, "missing", people / "bbt" / "amy" / "amy3.png")


def test_collections_never_see_each_other(cast, people):
    cast.create_collection(ME, "other")
    cast.enroll(ME, "other", "stuart", [people / "bbt" / "stuart" / "stuart1.png"], consent=CONSENT)
    other = cast.identify(ME, "other", people / "bbt" / "amy" / "amy3.png").faces[0]
    assert [c.subject_id for c in other.candidates] == ["stuart"]
    receipt = cast.delete_collection(ME, "other")
    assert receipt.subject_ids == ["stuart"] and len(receipt.face_ids) == 1
    with pytest.raises(NotFound):
        cast.identify(ME, "other", people / "bbt" / "amy" / "amy3.png")
    assert counts(cast, "bbt")[0] == len(CAST)


def _stored_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file() and "cache" not in p.parts)


def _files_holding(g: Faceledger, blobs) -> set[str]:
    """Where ``blobs`` (or their first 64 bytes) are stored: "home" for files under HOME, else the name of each
    PostgreSQL table or index whose files hold one, after a checkpoint wrote every page out (WAL not scanned)."""
    found = set()
    stored = _stored_bytes(g.settings.home)
    if any(b in stored or b[:64] in stored for b in blobs):
        found.add("home")
    db = g.gallery.store.db
    if db.dialect.name != "postgresql":
        return found
    with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("CHECKPOINT")
        datadir = Path(conn.exec_driver_sql("SHOW data_directory").scalar())
        oid = conn.exec_driver_sql("SELECT oid FROM pg_database WHERE datname = current_database()").scalar()
        names = {str(n): r for n, r in conn.exec_driver_sql(
            "SELECT pg_relation_filenode(oid), relname FROM pg_class WHERE pg_relation_filenode(oid) IS NOT NULL")}
    for path in (datadir / "base" / str(oid)).iterdir():
        data = path.read_bytes()
        if any(b in data or b[:64] in data for b in blobs):
            found.add(names.get(path.name.split(".")[0].split("_")[0], path.name))
    return found


def test_erasure_leaves_no_template_anywhere(cast, people, settings, engine):
    probe = people / "bbt" / "leonard" / "leonard3.png"
    assert cast.identify(ME, "bbt", probe).faces[0].subject_id == "leonard"
    with cast.gallery.store.session() as s:
        from sqlalchemy import select

        from faceledger.gallery.schema import Face, Subject

        templates = s.scalars(select(Face.template).join(Subject).where(Subject.external_id == "leonard")).all()
    cast.close()  # persist the index, so the erasure must also clean a file on disk
    home = cast.settings.home
    before = _files_holding(cast, templates)
    assert before, "the templates are stored somewhere"

    g = Faceledger(cast.settings, engine)
    receipt = g.erase_subject(ME, "bbt", "leonard")
    assert len(receipt.face_ids) == 2 and receipt.erased_at
    after = g.identify(ME, "bbt", probe).faces[0]
    assert "leonard" not in [c.subject_id for c in after.candidates] and after.decision == "unknown"
    assert not g.gallery.index_contains("bbt", receipt.face_ids)
    with pytest.raises(NotFound):
        g.get_subject(ME, "bbt", "leonard")
    still = _files_holding(g, templates)  # database, WAL and index files under HOME; PostgreSQL's tables
    g.close()
    # nothing anywhere, except what the receipt names as pending (pgvector's HNSW index until it is rebuilt)
    vectors = {"face_vectors", "face_vectors_hnsw"}
    allowed = vectors if any(p.startswith("pgvector:") for p in receipt.pending) else set()
    assert still <= allowed, (still, receipt.pending)
    if cast.gallery.store.db.dialect.name == "postgresql":
        assert any(p.startswith("postgresql-wal") for p in receipt.pending)
    if still:  # pgvector: the rebuild the receipt names leaves nothing
        rebuilt = Faceledger(cast.settings, engine)
        rebuilt.rebuild_index(ME, "bbt")
        assert not _files_holding(rebuilt, templates) & vectors
        rebuilt.close()
    reopened = Faceledger(cast.settings, engine)
    assert "leonard" not in [c.subject_id for c in reopened.identify(ME, "bbt", probe).faces[0].candidates]
    reopened.close()


def test_index_is_reconciled_with_the_database(cast, people, engine):
    cast.close()
    g = Faceledger(cast.settings, engine)
    report = g.gallery.startup()
    assert report["default/bbt"]["source"] in ("loaded", "pgvector", "milvus") and report["default/bbt"]["count"] == 2 * len(CAST)
    with g.gallery.store.db.begin() as conn:  # the database changes behind the index's back (as after a crash)
        from sqlalchemy import text

        conn.execute(text("DELETE FROM faces WHERE id = (SELECT MIN(id) FROM faces)"))
    g2 = Faceledger(cast.settings, engine)
    fixed = g2.gallery.startup()["default/bbt"]
    # pgvector's row left with its face (ON DELETE CASCADE): nothing to repair; a FAISS copy had one face too many
    assert fixed["removed"] == (0 if cast.settings.vector_store.startswith("pgvector") else 1)
    assert fixed["count"] == 2 * len(CAST) - 1
    assert g2.rebuild_index(ME, "bbt")["count"] == 2 * len(CAST) - 1
    g.close()
    g2.close()


def test_subject_listing_and_details(cast):
    listed = cast.list_subjects(ME, "bbt")
    assert [s.subject_id for s in listed] == sorted(CAST)
    amy = cast.get_subject(ME, "bbt", "amy")
    assert amy.display_name == "Amy" and len(amy.faces) == 2
    assert all(len(f.image_sha256) == 64 and f.quality["passed"] for f in amy.faces)
    assert "template" not in str(amy.to_dict())
    np.testing.assert_equal(cast.list_subjects(ME, "bbt", limit=2, offset=1)[0].subject_id, sorted(CAST)[1])


def test_two_processes_on_one_database_see_each_others_enrolments_and_erasures(settings, engine, tmp_path,
                                                                               backend, people):
    """Two service instances with their own HOME (their own FAISS copies) on one database, as two hosts or two
    workers: an enrolment through A is identified through B at once; after A erases the subject, B never returns
    it, holds no copy of its templates in memory or on disk, and writes none back when it shuts down."""
    shared = {**backend, "audit_key": "k" * 64}
    a = Faceledger(settings.model_copy(update={"home": tmp_path / "a", **shared}), engine)
    b = Faceledger(settings.model_copy(update={"home": tmp_path / "b", **shared}), engine)
    a.create_collection(ME, "door")
    a.enroll(ME, "door", "penny", [people / "bbt" / "penny" / f"penny{i}.png" for i in (1, 2)], consent=CONSENT)
    a.enroll(ME, "door", "raj", [people / "bbt" / "raj" / "raj1.png"], consent=CONSENT)
    probe = people / "bbt" / "penny" / "penny3.png"
    assert b.identify(ME, "door", probe).faces[0].subject_id == "penny"
    faces = [f.face_id for f in b.get_subject(ME, "door", "penny").faces]
    b.close()  # B's index file now holds penny's templates
    receipt = a.erase_subject(ME, "door", "penny")
    assert sorted(receipt.face_ids) == sorted(faces)
    assert b.identify(ME, "door", probe).faces[0].subject_id != "penny"
    assert not b.gallery.index_contains("door", faces)
    b.close()
    a.close()
    again = Faceledger(settings.model_copy(update={"home": tmp_path / "b", **shared}), engine)
    loaded = again.gallery.startup()  # B's persisted copy, checked against SQL: nothing erased had to be removed
    assert [(r["count"], r["removed"]) for r in loaded.values()] == [(1, 0)]
    assert not again.gallery.index_contains("door", faces)
    again.close()
    assert again.audit.verify().ok
