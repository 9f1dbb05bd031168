"""Face-level operations: what front ends that address single faces need (Rekognition's and CompreFace's APIs).

In faceledger every face belongs to a subject. A face indexed through a face-level front end belongs to
no person yet: it is enrolled as its own subject, named ``~<face uuid>`` (``FACE_SUBJECT``; no person id
of those APIs can start with ``~``), until it is associated with a person. Every operation here runs
through the same steps as the rest of the operations layer (scope, binding, guardrails, one audit event),
and enrolments need a consent basis: the collection's own attestation, recorded by an admin, since these
APIs carry no consent record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from faceledger.errors import ConsentRequired, InvalidArgument, ManyFaces, NoFace, NotFound
from faceledger.gallery.enrolment import check_subject_id
from faceledger.gallery.face_rows import FaceRow
from faceledger.gallery.gallery import IndexedFaces
from faceledger.gallery.records import CollectionInfo, CollectionRef, Consent, ErasureReceipt, iso
from faceledger.gallery.schema import utcnow
from faceledger.imaging import ImageInput
from faceledger.matching.openset import fpir_at
from faceledger.pipeline.engine import FaceAnalysis
from faceledger.service import events as ev
from faceledger.service.actor import Actor
from faceledger.service.consent import instant

FACE_SUBJECT = "~"  # the prefix of a face's own subject (a face associated with no person)
MAX_SEARCH = 4096


def face_subject(face_uuid: str) -> str:
    return FACE_SUBJECT + face_uuid


def is_person(subject_id: str) -> bool:
    return not subject_id.startswith(FACE_SUBJECT)


def check_person(subject_id: str) -> None:
    """A person's id through these front ends may not look like a face's own subject."""
    if isinstance(subject_id, str) and subject_id.startswith(FACE_SUBJECT):
        raise InvalidArgument(f"a person's id may not start with '{FACE_SUBJECT}' (the subjects of faces of no "
                              "person)", field="subject")


@dataclass(frozen=True)
class Hit:
    """A face or a person found by a search: its best similarity and the chance a stranger scores as high (``rate``:
    FPIR at the gallery's size for a search, the upper confidence bound; ``basis``: measured or extrapolated)."""

    subject_id: str
    display_name: str | None
    score: float
    rate: float
    basis: str
    face: FaceRow | None = None  # for a face hit


@dataclass(frozen=True)
class Search:
    probe: FaceAnalysis | None  # the analysed probe image (None when searching by a stored face or person)
    probe_index: int | None  # which of its faces was searched (the largest)
    probe_face: FaceRow | None  # the stored face searched with
    gallery_faces: int
    hits: list[Hit]  # faces, or persons with ``by_person``, best first


@dataclass(frozen=True)
class Comparison:
    source: FaceAnalysis
    source_index: int
    target: FaceAnalysis
    matches: list[tuple[float, float, str]]  # per target face: (similarity, FMR upper bound, basis)


class FaceLevelOperations:
    """Mixed into ``Faceledger``: uses its gallery, engine, calibration, ``_operation``, ``_done`` and guardrails."""

    # ------------------------------------------------------------------ consent for front ends without one
    def attest_consent(self, actor: Actor, collection: str, basis: str, reference: str | None) -> CollectionInfo:
        """Record the collection's legal basis for enrolments through front ends that carry no consent record."""
        with self._operation("collection.attest", actor, collection):
            self.authorize(actor, "collection.attest")
            if not isinstance(basis, str) or not basis.strip() or len(basis) > 64:
                raise InvalidArgument("an attestation states its legal basis (1 to 64 characters)")
            c = self.gallery.collection(collection, actor.tenant)
            attestation = {"basis": basis.strip(), "reference": reference, "attested_at": iso(utcnow()),
                           "attested_by": actor.key_id or actor.purpose}
            self.gallery.store.set_attestation(c.id, attestation)
            self._done(ev.ConsentAttested(actor, collection, decision=f"basis {basis.strip()}, reference {reference}"))
        return self.gallery.get_collection(collection, actor.tenant)

    def attested_consent(self, c: CollectionRef) -> Consent | None:
        """The consent an enrolment through a face-level front end carries: none needed, or the attestation."""
        if not c.require_consent:
            return None
        if not c.consent_attestation:
            raise ConsentRequired(
                f"collection '{c.name}' requires consent, and this API carries no consent record: an admin first "
                f"attests the collection's legal basis (`faceledger collections attest {c.name} --basis ... "
                "--reference ...`)", collection=c.name)
        a = c.consent_attestation
        return Consent(a["basis"], a.get("reference"))

    # ------------------------------------------------------------------ faces
    def index_faces(self, actor: Actor, collection: str, image: ImageInput, *, max_faces: int | None = None,
                    external_image_id: str | None = None) -> IndexedFaces:
        """Enrol the faces of an image that pass the quality limits (largest first, at most ``max_faces``), each as
        a face of no person yet; all in one transaction."""
        with self._operation("enroll", actor, collection):
            self.authorize(actor, "enroll")
            c = self.gallery.collection(collection, actor.tenant, for_search=True)
            consent = self.attested_consent(c)
            done = self.gallery.index_faces(collection, image, tenant=actor.tenant, max_faces=max_faces,
                                            external_image_id=external_image_id, consent=consent,
                                            subject_for=face_subject)
            ids = tuple(f.face_id for _, _, f in done.indexed)
            self._done(ev.FacesEnrolled(actor, collection, tuple(s for _, s, _ in done.indexed),
                                        decision=f"enrolled {len(ids)} faces, {len(done.skipped)} not",
                                        faces=len(done.analysis), face_ids=ids))
        return done

    def add_face(self, actor: Actor, collection: str, subject_id: str, image: ImageInput) -> FaceRow:
        """Enrol the one face of an image for a person: a new person carries the collection's attested consent, an
        existing one keeps their own consent record (which must still be valid)."""
        actor.check_collection(collection)
        check_person(subject_id)
        c = self.gallery.collection(collection, actor.tenant)
        known = self.gallery.subject_exists(collection, subject_id, tenant=actor.tenant)
        info = self.enroll(actor, collection, subject_id, [image], consent=None if known else self.attested_consent(c))
        return FaceRow(info.subject_id, info.display_name, info.faces[-1])

    def create_person(self, actor: Actor, collection: str, subject_id: str) -> None:
        """A person without faces yet, with the collection's attested consent."""
        actor.check_collection(collection)
        check_person(subject_id)
        c = self.gallery.collection(collection, actor.tenant)
        self.create_subject(actor, collection, subject_id, consent=self.attested_consent(c))

    def collection_faces(self, actor: Actor, collection: str, *, subject_id: str | None = None,
                         uuids: Sequence[str] | None = None, after: int = 0, offset: int = 0, limit: int = 1000,
                         persons_only: bool = False) -> list[FaceRow]:
        """A page of the collection's faces (after face id ``after``, then skipping ``offset``), of one subject, some
        face UUIDs, or persons only."""
        self.reach(actor, "subjects.read", collection)
        c = self.gallery.collection(collection, actor.tenant)
        return self.gallery.store.face_page(c.id, subject_id=subject_id, uuids=uuids, after=after, offset=offset,
                                            limit=limit, without_prefix=FACE_SUBJECT if persons_only else None)

    def count_faces(self, actor: Actor, collection: str, *, subject_id: str | None = None,
                    persons_only: bool = False) -> int:
        self.reach(actor, "subjects.read", collection)
        c = self.gallery.collection(collection, actor.tenant)
        return self.gallery.store.count_faces(c.id, subject_id=subject_id,
                                              without_prefix=FACE_SUBJECT if persons_only else None)

    def persons(self, actor: Actor, collection: str, *, after: str = "", limit: int = 100) -> list[str]:
        """Subject ids of persons (faces of no person left out), in order after ``after``."""
        self.reach(actor, "subjects.read", collection)
        c = self.gallery.collection(collection, actor.tenant)
        return self.gallery.store.subject_page(c.id, without_prefix=FACE_SUBJECT, after=after, limit=limit)

    def count_persons(self, actor: Actor, collection: str) -> int:
        self.reach(actor, "collections.read", collection)
        c = self.gallery.collection(collection, actor.tenant)
        return self.gallery.store.count_subjects(c.id, without_prefix=FACE_SUBJECT)

    def erase_faces(self, actor: Actor, collection: str, uuids: Sequence[str], *,
                    person_faces: bool = True) -> tuple[ErasureReceipt | None, list[str], list[FaceRow]]:
        """Erase faces by UUID in one transaction: (the receipt or None when nothing was erased, the UUIDs not found,
        the faces kept because they belong to a person and ``person_faces`` is False). A face of no person leaves
        with its subject."""
        with self._operation("erase", actor, collection):
            self.authorize(actor, "erase")
            c = self.gallery.collection(collection, actor.tenant)
            found = self.gallery.store.faces_by_uuid(c.id, uuids)
            missing = [u for u in dict.fromkeys(uuids) if u not in found]
            kept = [r for r in found.values() if is_person(r.subject_id) and not person_faces]
            erase = [r for r in found.values() if r not in kept]
            receipt = None
            if erase:
                receipt = self.gallery.delete_faces(collection, erase, tenant=actor.tenant,
                                                    drop_empty=[r.subject_id for r in erase
                                                                if not is_person(r.subject_id)])
            seq = self._done(ev.SubjectErased(actor, collection, tuple(sorted({r.subject_id for r in erase})),
                                              decision=f"erased {len(erase)} faces", faces=len(erase),
                                              face_ids=tuple(r.face.face_id for r in erase)))
        return (dataclasses.replace(receipt, audit_seq=seq) if receipt else None), missing, kept

    # ------------------------------------------------------------------ persons
    def associate_faces(self, actor: Actor, collection: str, subject_id: str, uuids: Sequence[str], *,
                        max_rate: float | None = None) -> tuple[list[str], dict[str, str]]:
        """Give faces of no person to a person: (UUIDs now the person's, {UUID: why not}). Reasons: FACE_NOT_FOUND,
        ASSOCIATED_TO_A_DIFFERENT_USER, LOW_MATCH_CONFIDENCE (the face does not match the person's faces at
        ``max_rate``, a false-match rate)."""
        with self._operation("faces.associate", actor, collection, [subject_id]):
            self.authorize(actor, "faces.associate")
            c = self.gallery.collection(collection, actor.tenant, for_search=True)
            self.gallery.store.get_subject(c, subject_id)  # NOT_FOUND for an unknown person
            found = self.gallery.store.faces_by_uuid(c.id, uuids)
            templates = self.gallery.store.subject_templates(c, subject_id)
            done, failed, moves = [], {}, {}
            for u in dict.fromkeys(uuids):
                row = found.get(u)
                if row is None:
                    failed[u] = "FACE_NOT_FOUND"
                elif row.subject_id == subject_id:
                    done.append(u)
                elif is_person(row.subject_id):
                    failed[u] = "ASSOCIATED_TO_A_DIFFERENT_USER"
                elif max_rate is not None and templates and self._match_rate(c, u, templates) > max_rate:
                    failed[u] = "LOW_MATCH_CONFIDENCE"
                else:
                    moves[row.face.face_id] = subject_id
                    done.append(u)
            if moves:
                self.gallery.store.move_faces(c, moves, owners={found[u].face.face_id: found[u].subject_id
                                                                for u in done if found[u].subject_id != subject_id},
                                              drop_empty=[found[u].subject_id for u in done
                                                          if found[u].subject_id != subject_id])
            self._done(ev.FacesAssociated(actor, collection, (subject_id,), decision=f"associated {len(moves)} faces",
                                          face_ids=tuple(moves)))
        return done, failed

    def _match_rate(self, c: CollectionRef, face_uuid: str, templates: list[np.ndarray]) -> float:
        _, template = self.gallery.store.face_template(c.id, face_uuid)
        best = float(np.max(np.stack(templates) @ template))
        return fpir_at(self.calibration.fmr_detail(best)[1], len(templates))  # best of k comparisons

    def disassociate_faces(self, actor: Actor, collection: str, subject_id: str,
                           uuids: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Take faces from a person: each becomes a face of no person again. (UUIDs done, {UUID: why not}):
        FACE_NOT_FOUND or ASSOCIATED_TO_A_DIFFERENT_USER."""
        with self._operation("faces.disassociate", actor, collection, [subject_id]):
            self.authorize(actor, "faces.disassociate")
            c = self.gallery.collection(collection, actor.tenant)
            person = self.gallery.store.get_subject(c, subject_id)
            found = self.gallery.store.faces_by_uuid(c.id, uuids)
            done, failed, moves = [], {}, {}
            for u in dict.fromkeys(uuids):
                row = found.get(u)
                if row is None:
                    failed[u] = "FACE_NOT_FOUND"
                elif row.subject_id != subject_id:
                    failed[u] = "ASSOCIATED_TO_A_DIFFERENT_USER"
                else:
                    moves[row.face.face_id] = face_subject(u)
                    done.append(u)
            if moves:
                self.gallery.store.move_faces(c, moves, owners={f: subject_id for f in moves},
                                              consent=_consent_of(person.consent))
            self._done(ev.FacesDisassociated(actor, collection, (subject_id,),
                                             decision=f"disassociated {len(moves)} faces", face_ids=tuple(moves)))
        return done, failed

    def rename_subject(self, actor: Actor, collection: str, subject_id: str, new_id: str) -> bool:
        """Rename a subject; into an existing subject's id, the two merge. Returns whether they merged."""
        with self._operation("subject.rename", actor, collection, [subject_id, new_id]):
            self.authorize(actor, "subject.rename")
            check_subject_id(new_id)
            check_person(subject_id)  # a face of no person becomes one only through associate_faces
            check_person(new_id)
            c = self.gallery.collection(collection, actor.tenant)
            merged = self.gallery.store.rename_subject(c, subject_id, new_id)
            self._done(ev.SubjectRenamed(actor, collection, (subject_id, new_id),
                                         decision="merged" if merged else "renamed"))
        return merged

    # ------------------------------------------------------------------ search and compare
    def search(self, actor: Actor, collection: str, *, image: ImageInput | None = None, face_uuid: str | None = None,
               subject_id: str | None = None, top_k: int = 100, max_rate: float | None = None,
               by_person: bool = False, quality_filter: bool = False) -> Search:
        """1:N by the largest face of an image, a stored face or a person's faces: the best faces (or persons, with
        ``by_person``), each with the chance that a search for a stranger scores as high in this gallery (FPIR at
        its size); ``max_rate`` keeps only those at or below it. The guardrails and audit record of ``identify``."""
        with self._operation("identify", actor, collection, [subject_id] if subject_id else []):
            self.authorize(actor, "identify")
            if not 1 <= top_k <= MAX_SEARCH:
                raise InvalidArgument(f"at most {MAX_SEARCH} results, at least 1")
            c = self.gallery.collection(collection, actor.tenant, for_search=True)
            probe = index = probe_face = None
            if face_uuid is not None:
                probe_face, template = self.gallery.store.face_template(c.id, face_uuid)
                templates = template[None]
            elif subject_id is not None:
                kept = self.gallery.store.subject_templates(c, subject_id)
                if not kept:
                    raise NotFound(f"subject '{subject_id}' has no enrolled face", subject_id=subject_id)
                templates = np.stack(kept[:20])
            self._search_limits(actor)
            if image is not None:
                probe = self.engine.analyze(image)
                if not len(probe):
                    raise NoFace("no face was found in the image")
                _check_quality(probe, 0, quality_filter)
                index, templates = 0, probe.templates[:1]
            fetch = min(MAX_SEARCH, top_k * 4 + 1 if by_person else top_k + 1)
            found = self.gallery.search_faces(c, templates, fetch)
            n = self.gallery.store.face_count(c.id)
            best: dict[object, tuple[FaceRow, float]] = {}
            for hits in found:
                for row, score in hits:
                    if probe_face is not None and row.face.uuid == probe_face.face.uuid:
                        continue
                    if by_person and (not is_person(row.subject_id) or row.subject_id == subject_id):
                        continue
                    key = row.subject_id if by_person else row.face.face_id
                    if key not in best or score > best[key][1]:
                        best[key] = (row, score)
            hits = []
            for row, score in sorted(best.values(), key=lambda rs: -rs[1])[:top_k]:
                _, upper, basis = self.calibration.fmr_detail(score)
                rate = fpir_at(upper, n)
                if max_rate is None or rate <= max_rate * (1 + 1e-9):
                    hits.append(Hit(row.subject_id, row.display_name, score, rate, basis,
                                    None if by_person else row))
            self._done(ev.FaceIdentified(actor, collection, tuple(h.subject_id for h in hits),
                                         tuple(h.score for h in hits), faces=1,
                                         decision=f"{len(hits)} {'persons' if by_person else 'faces'} returned"
                                                  + (f" at FPIR <= {max_rate:.3g}" if max_rate is not None else "")))
        return Search(probe, index, probe_face, n, hits)

    def compare_faces(self, actor: Actor, source: ImageInput, target: ImageInput, *, one_source_face: bool = False,
                      target_face_required: bool = False, quality_filter: bool = False) -> Comparison:
        """The largest face of ``source`` against every face of ``target``: similarity and per-comparison FMR each.
        ``one_source_face``: a source with several faces is refused (MANY_FACES); ``target_face_required``: a
        target without a face is refused (NO_FACE); ``quality_filter``: a source face failing the quality limits is
        refused."""
        with self._operation("compare", actor):
            self.authorize(actor, "compare")
            a = self.engine.analyze(source)
            if not len(a):
                raise NoFace("no face was found in the source image")
            if one_source_face and len(a) > 1:
                raise ManyFaces(f"the source image has {len(a)} faces; it must show one", faces=len(a))
            _check_quality(a, 0, quality_filter)
            b = self.engine.analyze(target)
            if target_face_required and not len(b):
                raise NoFace("no face was found in the target image")
            matches = []
            if len(b):
                for score in (b.templates @ a.templates[0]).tolist():
                    _, upper, basis = self.calibration.fmr_detail(score)
                    matches.append((score, upper, basis))
            self._done(ev.FacesCompared(actor, scores=tuple(m[0] for m in matches), faces=1 + len(b),
                                        decision=f"{len(b)} target faces compared"))
        return Comparison(a, 0, b, matches)

    def compare_with_face(self, actor: Actor, collection: str, face_uuid: str, image: ImageInput) -> tuple[
            FaceRow, FaceAnalysis, list[tuple[float, float, str]]]:
        """1:1 of every face of an image against one enrolled face: (that face, the image's analysis, per face
        (similarity, FMR upper bound, basis)). NO_FACE for an image without a face."""
        with self._operation("verify", actor, collection):
            self.authorize(actor, "verify")
            c = self.gallery.collection(collection, actor.tenant, for_search=True)
            row, template = self.gallery.store.face_template(c.id, face_uuid)
            a = self.engine.analyze(image)
            if not len(a):
                raise NoFace("no face was found in the image")
            matches = []
            for score in (a.templates @ template).tolist():
                _, upper, basis = self.calibration.fmr_detail(score)
                matches.append((score, upper, basis))
            self._done(ev.SubjectVerified(actor, collection, (row.subject_id,), tuple(m[0] for m in matches),
                                          decision=f"{len(a)} faces compared with face {face_uuid}", faces=len(a)))
        return row, a, matches


def _check_quality(analysis: FaceAnalysis, i: int, required: bool) -> None:
    """With ``required``, refuse (INVALID_ARGUMENT) a face that fails the quality limits, before it is searched."""
    q = analysis.quality[i]
    if required and not q.passed:
        raise InvalidArgument("the face fails the quality limits", reasons=[r.value for r in q.reasons])


def _consent_of(record: dict | None) -> Consent | None:
    if not record:
        return None
    return Consent(record["basis"], record.get("reference"), instant(record.get("given_at"), "given_at"),
                   instant(record.get("expires_at"), "expires_at"))
