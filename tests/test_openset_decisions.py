"""Open-set decisions by FPIR: the rule on synthetic scores with known answers, the migration of FMR
collections, and the three decisions (match, review, unknown) through the API and the CLI on real faces."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from scipy.stats import norm

from faceledger.api.app import create_app
from faceledger.client import Client
from faceledger.config import Settings
from faceledger.errors import InvalidArgument, NotCalibrated
from faceledger.gallery.db import MIGRATIONS
from faceledger.matching.calibration import Calibration
from faceledger.matching.openset import MATCH, REVIEW, UNKNOWN, OpenSetPolicy, fpir_at
from faceledger.service import Actor, Faceledger
from inprocess import Bridge, in_process


# ---------------------------------------------------------------------------- the rule, synthetic scores
@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)  # impostor similarities N(0, 0.1): FMR(t) = sf(t / 0.1), known exactly
    return Calibration.build("test-model", rng.normal(0.0, 0.1, 2_000_000), rng.normal(0.7, 0.1, 10_000),
                             "synthetic normal scores", bootstrap=100)


def test_threshold_follows_the_gallery_size(calibration):
    policies = [OpenSetPolicy.derive(calibration, 1e-2, n) for n in (1, 10, 100, 1_000, 10_000)]
    scores = [p.match_score for p in policies]
    assert scores == sorted(scores) and len(set(scores)) == len(scores)
    for p in policies:  # the true FPIR at each threshold meets the target (known distribution)
        assert fpir_at(norm.sf(p.match_score / 0.1), p.gallery_faces) <= 1e-2 * 1.1
        assert p.review_score < p.match_score  # a review band below the match threshold
    assert [p.threshold.basis for p in policies] == ["measured"] * 3 + ["extrapolated"] * 2
    # enrolment grows the gallery, erasure shrinks it: the thresholds follow both ways
    assert OpenSetPolicy.derive(calibration, 1e-2, 100).to_dict() == policies[2].to_dict()


def test_three_decisions_and_never_two_matches(calibration):
    p = OpenSetPolicy.derive(calibration, 1e-2, 100, margin=0.05)
    t, r = p.match_score, p.review_score
    assert p.decide(t + 0.2, None) == MATCH
    assert p.decide(t + 0.2, t - 0.2) == MATCH  # clearly ahead of the second
    assert p.decide(t + 0.2, t + 0.01) == REVIEW  # two subjects above the threshold: a person decides
    assert p.decide(t + 0.02, t - 0.01) == REVIEW  # above, but not the margin ahead
    assert p.decide((t + r) / 2, None) == REVIEW  # the review band
    assert p.decide(r - 0.01, None) == UNKNOWN and p.decide(None) == UNKNOWN
    top = np.array([t + 0.2, t + 0.2, t + 0.2, t + 0.02, (t + r) / 2, r - 0.01])
    second = np.array([np.nan, t - 0.2, t + 0.01, t - 0.01, np.nan, np.nan])
    assert p.decide_many(top, second).tolist() == [MATCH, MATCH, REVIEW, REVIEW, REVIEW, UNKNOWN]


def test_unsupported_size_never_says_match(calibration):
    p = OpenSetPolicy.derive(calibration, 1e-3, 10**12)  # far below what the tail model supports
    assert not p.supported and p.threshold is None and p.to_dict()["threshold"] is None
    assert p.decide(0.99, None) == REVIEW and p.decide(p.review_score - 1e-3) == UNKNOWN
    assert set(p.decide_many(np.array([0.99, 2.0]), np.array([np.nan, np.nan]))) == {REVIEW}


def test_measured_fpir_of_simulated_searches_meets_the_target(calibration):
    # 4,000 strangers search a gallery of 500 faces (impostor scores N(0, 0.1)); decided "match" at most ~target
    p = OpenSetPolicy.derive(calibration, 0.05, 500)
    rng = np.random.default_rng(7)
    scores = np.sort(rng.normal(0.0, 0.1, (4_000, 500)), axis=1)
    matched = np.mean(p.decide_many(scores[:, -1], scores[:, -2]) == MATCH)
    assert matched <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / 4_000) and matched > 0.05 / 3


# ---------------------------------------------------------------------------- migration
def test_migration_turns_a_collections_fmr_into_its_equivalent_fpir(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        connection.execute(sa.text(
            "INSERT INTO collections (id, tenant, name, model_id, target_fmr, require_consent, store_crops, created_at)"
            " VALUES (1, 'default', 'staff', 'm', 1e-4, 1, 0, '2026-01-01'), (2, 'default', 'empty', 'm', 1e-4, 1, 0,"
            " '2026-01-01'), (3, 'default', 'lax', 'm', 1e-2, 1, 0, '2026-01-01')"))
        for sid, cid in ((1, 1), (2, 3)):
            connection.execute(sa.text("INSERT INTO subjects (id, collection_id, external_id, metadata, created_at) "
                                       "VALUES (:s, :c, :e, '{}', '2026-01-01')"), {"s": sid, "c": cid, "e": f"s{sid}"})
        faces = [{"s": 1 if i < 373 else 2, "c": 1 if i < 373 else 3, "h": f"{i:064d}"} for i in range(373 + 200)]
        connection.execute(sa.text(
            "INSERT INTO faces (subject_id, collection_id, template, model_id, quality, image_sha256, box, "
            "enrolled_at) VALUES (:s, :c, x'00', 'm', '{}', :h, '[]', '2026-01-01')"), faces)
        command.upgrade(config, "head")
        rows = dict(connection.execute(sa.text("SELECT name, target_fpir FROM collections")).all())
    assert rows["staff"] == pytest.approx(1 - (1 - 1e-4) ** 373)  # 3.7%: what 1e-4 per comparison meant there
    assert rows["empty"] == pytest.approx(1e-4)  # one face's worth
    assert rows["lax"] == 0.5  # 1 - 0.99 ** 200 = 87%, capped


# ---------------------------------------------------------------------------- real faces: API and CLI
def enrol_plan(people: Path) -> list[tuple[str, list[Path]]]:
    """Penny and Amy, and Penny a second time under another id (a duplicate enrolment): a probe of Penny then
    scores high with two subjects, which is for a person to resolve."""
    bbt = people / "bbt"
    return [("penny", [bbt / "penny" / "penny1.png", bbt / "penny" / "penny2.png"]),
            ("amy", [bbt / "amy" / "amy1.png", bbt / "amy" / "amy2.png"]),
            ("penny-badge", [bbt / "penny" / "penny3.png"])]


def check_three(match: dict, review: dict, unknown: dict) -> None:
    m, r, u = (d["faces"][0] for d in (match, review, unknown))
    assert m["decision"] == "match" and m["subject_id"] == "amy"
    assert [c["match"] for c in m["candidates"]] == [True] + [False] * (len(m["candidates"]) - 1)
    assert r["decision"] == "review" and r["subject_id"] is None
    assert {c["subject_id"] for c in r["candidates"][:2]} == {"penny", "penny-badge"}
    assert not any(c["match"] for c in r["candidates"])  # never two matches, and none when unsure
    assert u["decision"] == "unknown" and u["subject_id"] is None and not any(c["match"] for c in u["candidates"])
    for d in (match, review, unknown):
        assert d["gallery_faces"] == 5 and d["target_fpir"] == 1e-3 and d["supported"] is True
        assert d["basis"] == "measured" and d["review_threshold"] < d["threshold"]
        for c in d["faces"][0]["candidates"]:  # every candidate: its FMR and this gallery's FPIR at its score
            assert c["fmr_basis"] in ("measured", "extrapolated", "bound")
            assert c["fpir"] == pytest.approx(1 - (1 - c["fmr"]) ** 5, rel=1e-6) or c["fmr_basis"] != "measured"
    assert m["candidates"][0]["similarity"] >= match["threshold"] > u["candidates"][0]["similarity"]


def test_api_three_decisions_and_best_of_k_verify(people, tmp_path):
    settings = Settings(home=tmp_path, cache=Path(os.environ["FACELEDGER_CACHE"]))
    fl = Faceledger(settings)
    key, _ = fl.create_key(Actor.local("acme"), "acme", ["admin"], "tests: open-set decisions")
    app = create_app(settings, fl)
    bbt = people / "bbt"
    with in_process(app) as portal:
        api = Client("http://testserver", key, transport=Bridge(app, portal))
        created = api.create_collection("staff", target_fpir=1e-3)
        assert created["target_fpir"] == 1e-3 and created["target_fmr"] == 1e-4
        for subject, photos in enrol_plan(people):
            api.enroll("staff", subject, photos, consent_basis="explicit-consent")
        check_three(api.identify("staff", bbt / "amy" / "amy4.png"),
                    api.identify("staff", bbt / "penny" / "penny5.png"),
                    api.identify("staff", bbt / "stuart" / "stuart1.png"))
        # a search may ask for a stricter FPIR: its threshold is higher
        strict = api.identify("staff", bbt / "amy" / "amy4.png", fpir=1e-4)
        assert strict["target_fpir"] == 1e-4 and strict["threshold"] > api.identify(
            "staff", bbt / "amy" / "amy4.png")["threshold"]
        # verify against a subject with two faces takes the best of two: its threshold is the one of FMR ~ target / 2
        two = api.verify("staff", "penny", bbt / "penny" / "penny4.png")
        one = api.verify("staff", "penny-badge", bbt / "penny" / "penny4.png")
        assert two["faces_compared"] == 2 and one["faces_compared"] == 1
        assert two["threshold"] == pytest.approx(fl.calibration.threshold(1 - (1 - 1e-4) ** 0.5), abs=1e-6)
        assert two["threshold"] > one["threshold"] and two["match"] is True
        # erasure shrinks the gallery: the threshold follows it
        api.delete_subject("staff", "penny-badge")
        after = api.identify("staff", bbt / "penny" / "penny5.png")
        assert after["gallery_faces"] == 4 and after["threshold"] < strict["threshold"]
        assert after["faces"][0]["decision"] == "match" and after["faces"][0]["subject_id"] == "penny"


def cli(*args: str, home: Path) -> dict:
    env = {**os.environ, "FACELEDGER_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", *args], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


@pytest.mark.slow  # eight CLI processes, each loading the models: the API test above covers the same decisions
def test_cli_three_decisions(people, tmp_path):
    bbt = people / "bbt"
    assert cli("collections", "create", "staff", "--target-fpir", "0.001", home=tmp_path)["target_fpir"] == 1e-3
    for subject, photos in enrol_plan(people):
        cli("enroll", "staff", subject, *map(str, photos), "--consent", "explicit-consent", home=tmp_path)
    check_three(cli("identify", "staff", str(bbt / "amy" / "amy4.png"), home=tmp_path),
                cli("identify", "staff", str(bbt / "penny" / "penny5.png"), home=tmp_path),
                cli("identify", "staff", str(bbt / "stuart" / "stuart1.png"), home=tmp_path))


def test_targets_beyond_the_calibration_are_refused(settings, engine, tmp_path, people):
    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    me = Actor.local()
    floor = fl.calibration.lowest_fmr
    with pytest.raises(NotCalibrated) as info:  # the README's promise: below the tail's floor, refused
        fl.create_collection(me, "strict", target_fmr=floor / 10)
    assert info.value.details["lowest_fmr"] == floor
    with pytest.raises(NotCalibrated):
        fl.create_collection(me, "stricter", target_fpir=floor / 10)
    with pytest.raises(NotCalibrated):
        ex = people / "face_recognition_examples"
        fl.compare(me, ex / "obama.jpg", ex / "obama2.jpg", target_fmr=floor / 10)
    assert fl.list_collections(me) == []  # nothing created
    fl.close()


# ---------------------------------------------------------------------------- review fixes
def test_downgrade_keeps_subjects_and_faces(tmp_path, settings, engine, people):
    home = tmp_path / "home"
    fl = Faceledger(settings.model_copy(update={"home": home}), engine)
    fl.create_collection(Actor.local(), "door", require_consent=False)
    fl.enroll(Actor.local(), "door", "amy", [people / "bbt" / "amy" / "amy1.png"])
    fl.close()
    engine_ = sa.create_engine(f"sqlite:///{home / 'faceledger.db'}")
    sa.event.listen(engine_, "connect", lambda c, _: c.execute("PRAGMA foreign_keys=ON"))
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with engine_.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
        counts = [connection.execute(sa.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in
                  ("collections", "subjects", "faces")]
    assert counts == [1, 1, 1]


def unit(rng, base, noise):
    v = base + noise * rng.standard_normal(base.shape)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_decision_looks_past_top_k_and_past_one_subjects_many_faces(settings, engine, tmp_path):
    """A subject with more faces than a search fetches must not hide a second subject that also scores high,
    and asking for one candidate must not turn a "review" into a "match"."""
    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    me = Actor.local()
    fl.create_collection(me, "many", require_consent=False)
    rng = np.random.default_rng(0)
    dim = fl.gallery.dim
    person = rng.standard_normal(dim)
    faces = np.stack([unit(rng, person, 0.02) for _ in range(30)] + [unit(rng, person, 0.03)])
    ids = ["a"] * 30 + ["b"]  # "b" is the same person enrolled under a second id
    fl.gallery.enroll_templates("many", ids, faces, [f"{i:064d}" for i in range(31)])
    c = fl.gallery.collection("many", "default", for_search=True)
    policy = fl.gallery.open_set_policy(c)
    probe = unit(rng, person, 0.02)[None, :]
    from faceledger.matching.decisions import open_set
    for top_k in (1, 2, 5):
        (ranked, bound), = fl.gallery.search_for_decision(c, probe, top_k)
        result = open_set([0, 0, 1, 1], {}, ranked, fl.calibration, policy, top_k=top_k, unseen_bound=bound)
        assert result.decision == "review" and not any(x.match for x in result.candidates), (top_k, ranked[:3])
        assert len(result.candidates) == min(top_k, len(ranked))
    fl.close()


def test_verify_with_a_target_that_k_faces_push_below_the_floor_makes_no_decision(settings, engine, tmp_path,
                                                                                  people):
    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    me = Actor.local()
    floor = fl.calibration.lowest_fmr
    fl.create_collection(me, "strict", target_fmr=floor * 1.5, require_consent=False)
    penny = people / "bbt" / "penny"
    fl.enroll(me, "strict", "penny", [penny / "penny1.png"])
    one = fl.verify(me, "strict", "penny", penny / "penny4.png")
    assert one.faces_compared == 1 and one.threshold_basis == "extrapolated" and one.match is not None
    fl.enroll(me, "strict", "penny", [penny / "penny2.png"])
    two = fl.verify(me, "strict", "penny", penny / "penny4.png")  # floor * 1.5 / 2 < floor
    assert two.faces_compared == 2 and two.threshold_basis == "unsupported" and two.match is None
    assert two.to_dict()["threshold"] is None
    fl.close()


def test_policy_changes_are_admin_only_audited_and_searches_may_only_be_stricter(settings, engine, tmp_path,
                                                                                 people):
    from faceledger.errors import Forbidden
    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    admin = Actor.local("acme")
    fl.create_collection(admin, "staff", target_fpir=1e-3, require_consent=False)
    fl.enroll(admin, "staff", "amy", [people / "bbt" / "amy" / "amy1.png"])
    key, info = fl.create_key(admin, "acme", ["identify"], "door")
    app = fl.authenticate(key)
    probe = people / "bbt" / "amy" / "amy4.png"
    assert fl.identify(app, "staff", probe, target_fpir=1e-4).policy.target_fpir == 1e-4  # stricter: fine
    with pytest.raises(Forbidden):
        fl.identify(app, "staff", probe, target_fpir=1e-2)  # looser: an admin's decision
    with pytest.raises(Forbidden):
        fl.update_collection(app, "staff", target_fpir=1e-2)
    changed = fl.update_collection(admin, "staff", target_fpir=1e-2)
    assert changed.target_fpir == 1e-2 and changed.target_fmr == 1e-4
    assert fl.identify(app, "staff", probe).policy.target_fpir == 1e-2
    records = fl.query_audit(admin, operation="collection.update")
    assert sorted(r["outcome"] for r in records) == ["FORBIDDEN", "ok"]
    assert [r["decision"] for r in records if r["outcome"] == "ok"] == [
        "target_fpir 0.001 -> 0.01, target_fmr 0.0001 -> 0.0001"]
    with pytest.raises(InvalidArgument):
        fl.update_collection(admin, "staff", target_fpir=0.9)
    fl.close()


def test_human_review_decides_nothing_even_for_an_empty_gallery(settings, engine, tmp_path, people):
    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    me = Actor.local("watch")
    fl.create_collection(me, "door", require_consent=False)
    fl.set_tenant_policy(me, "watch", human_review=True)
    empty = fl.identify(me, "door", people / "bbt" / "amy" / "amy4.png")
    assert empty.faces[0].decision == "review" and empty.human_review
    fl.enroll(me, "door", "amy", [people / "bbt" / "amy" / "amy1.png"])
    face = fl.identify(me, "door", people / "bbt" / "amy" / "amy4.png").faces[0]
    assert face.decision == "review" and face.subject_id is None and face.candidates[0].match is None
    fl.close()
