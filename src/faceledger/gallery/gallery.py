"""The gallery: the SQL store (truth) and a vector store (search), kept in step, with the enrolment rules.

Writes go to SQL first (one transaction per call: a subject is never half-written), then
to the vector store. After a crash between the two, start-up reconciliation brings the
vector store back in step; search results are always joined with SQL, so an erased face
can never be returned even by a vector store that lags.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from contextlib import nullcontext
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from faceledger.config import Settings, get_settings
from faceledger.errors import AlreadyExists, IncompatibleTemplates, InvalidArgument, NotCalibrated, NotFound
from faceledger.gallery.enrolment import check_consent, check_name, check_subject_id, enrolment_face
from faceledger.gallery.face_rows import FaceRow
from faceledger.gallery.records import (CollectionInfo, CollectionRef, Consent, ErasureReceipt, FaceInfo, NewFace,
                                        SubjectInfo, iso)
from faceledger.gallery.schema import utcnow
from faceledger.gallery.store import SqlStore
from faceledger.imaging import ImageInput
from faceledger.matching.calibration import Calibration, load_calibration
from faceledger.matching.openset import OpenSetPolicy, check_target_fpir
from faceledger.pipeline.align import align
from faceledger.pipeline.engine import FaceAnalysis, FaceEngine
from faceledger.vectors import open_vector_store

ENROL_TRIES = 4  # writes of one enrolment that lost a race to other calls' commits, before ALREADY_EXISTS
Ranked = list[tuple[str, str | None, float]]  # (subject id, display name, best similarity), best first


@dataclass(frozen=True)
class IndexedFaces:
    """What ``Gallery.index_faces`` did with each face of an image (faces by index into ``analysis``)."""

    analysis: FaceAnalysis
    indexed: list[tuple[int, str, FaceInfo]]  # (face index, subject id, the enrolled face)
    skipped: list[tuple[int, list[str]]]  # (face index, reasons: quality codes or EXCEEDS_MAX_FACES)


class Gallery:
    def __init__(self, settings: Settings | None = None, engine: FaceEngine | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = engine or FaceEngine(self.settings)
        self.store = SqlStore(self.settings)
        dim = sum(self.engine.recognizer(c.recognizer).dim for c in self.engine.profile.components)
        self.vectors = open_vector_store(self.settings.vector_store, source=self.store, dim=dim,
                                         directory=self.settings.home / "index", cipher=self.store.cipher,
                                         integrity_key=self.store.index_key(),
                                         ivf_threshold=self.settings.ivf_threshold,
                                         probe_fraction=self.settings.ivf_probe_fraction,
                                         sync_interval=self.settings.vector_sync_interval,
                                         plaintext_accepted=self.settings.plaintext_vectors_accepted)
        self._calibration: Calibration | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def cipher(self):
        return self.store.cipher

    @property
    def dim(self) -> int:
        return self.vectors.dim

    def startup(self) -> dict[str, dict]:
        """Load every collection's vectors and check them against SQL; what was repaired, by tenant/collection.
        An erasure whose WAL purge was pending is completed here."""
        self.store.purge_freed_pages()
        names = {cid: f"{tenant}/{name}" for cid, tenant, name in self.store.collection_names()}
        return {names.get(cid, str(cid)): r for cid, r in self.vectors.startup().items()}

    def close(self) -> None:
        self.vectors.close()
        self.store.close()

    def rekey(self, new_key: bytes | None) -> int:
        count = self.store.rekey(new_key)
        self.vectors.cipher = self.store.cipher
        self.vectors.reset()
        return count

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            self._calibration = load_calibration(self.engine.model_id, self.settings.home)
            if self._calibration is None:
                raise NotCalibrated(f"no calibration for model {self.engine.model_id}; run `faceledger eval calibrate`")
        return self._calibration

    # ------------------------------------------------------------------ collections
    def create_collection(self, name: str, *, tenant: str = "default", target_fmr: float = 1e-4,
                          target_fpir: float | None = None, require_consent: bool = True, store_crops: bool = False,
                          retention_days: int | None = None) -> CollectionInfo:
        check_name(name, "collection name", 128)
        target_fpir = self.settings.default_target_fpir if target_fpir is None else target_fpir
        self._check_targets(target_fpir, target_fmr)
        return self.store.create_collection(tenant, name, model_id=self.engine.model_id, target_fmr=target_fmr,
                                            target_fpir=target_fpir,
                                            require_consent=require_consent, store_crops=store_crops,
                                            retention_days=retention_days)

    def update_collection(self, name: str, *, tenant: str = "default", target_fpir: float | None = None,
                          target_fmr: float | None = None) -> CollectionInfo:
        c = self.store.collection(tenant, name)
        self._check_targets(c.target_fpir if target_fpir is None else target_fpir,
                            c.target_fmr if target_fmr is None else target_fmr)
        return self.store.update_collection(c.id, target_fpir=target_fpir, target_fmr=target_fmr)

    def _check_targets(self, target_fpir: float, target_fmr: float) -> None:
        check_target_fpir(target_fpir)
        if not 0 < target_fmr < 1:
            raise InvalidArgument("target_fmr is a probability in (0, 1)", target_fmr=target_fmr)
        self.calibration.threshold(target_fmr)  # refuses an FMR the calibration cannot support
        self.calibration.threshold(target_fpir)  # and an FPIR it could not support even for one face

    def collection(self, name: str, tenant: str = "default", *, for_search: bool = False) -> CollectionRef:
        c = self.store.collection(tenant, name)
        if for_search and c.model_id != self.engine.model_id:
            raise IncompatibleTemplates(
                f"collection '{c.name}' holds templates of another model; use its profile or re-enrol",
                collection_model=c.model_id, engine_model=self.engine.model_id)
        return c

    def list_collections(self, tenant: str = "default") -> list[CollectionInfo]:
        return self.store.list_collections(tenant)

    def get_collection(self, name: str, tenant: str = "default") -> CollectionInfo:
        return self.store.collection_info(tenant, name)

    def delete_collection(self, name: str, tenant: str = "default") -> ErasureReceipt:
        cid, subjects, face_ids = self.store.delete_collection(tenant, name)
        self.vectors.drop(cid)
        return ErasureReceipt(name, subjects, face_ids, iso(utcnow()),
                              pending=self.store.purge_freed_pages() + self.vectors.erasure_pending())

    # ------------------------------------------------------------------ subjects
    def list_subjects(self, collection: str, *, tenant: str = "default", limit: int = 100,
                      offset: int = 0, search: str | None = None) -> list[SubjectInfo]:
        return self.store.list_subjects(self.collection(collection, tenant).id, limit=limit, offset=offset,
                                        search=search)

    def get_subject(self, collection: str, subject_id: str, *, tenant: str = "default") -> SubjectInfo:
        return self.store.get_subject(self.collection(collection, tenant), subject_id)

    def create_subject(self, collection: str, subject_id: str, *, tenant: str = "default",
                       display_name: str | None = None, metadata: dict | None = None,
                       consent: Consent | None = None) -> SubjectInfo:
        check_subject_id(subject_id)
        c = self.collection(collection, tenant)
        stored = self.store.stored_consent(c.id, subject_id)
        if stored is not None:
            raise AlreadyExists(f"subject '{subject_id}' already exists in '{collection}'", subject_id=subject_id)
        check_consent(c.require_consent, c.name, None, consent, utcnow())
        return self.store.create_subject(c, subject_id, display_name=display_name, metadata=metadata, consent=consent)

    def delete_subject(self, collection: str, subject_id: str, *, tenant: str = "default") -> ErasureReceipt:
        """Erase a subject: every template leaves the database and the vector store in this call."""
        c = self.collection(collection, tenant)
        face_ids = self.store.delete_subject(c, subject_id)
        pending = self._after_erase(c.id, face_ids)
        return ErasureReceipt(collection, [subject_id], face_ids, iso(utcnow()), pending=pending)

    def delete_face(self, collection: str, subject_id: str, face_id: int, *,
                    tenant: str = "default") -> ErasureReceipt:
        c = self.collection(collection, tenant)
        self.store.delete_face(c, subject_id, face_id)
        pending = self._after_erase(c.id, [face_id])
        return ErasureReceipt(collection, [subject_id], [face_id], iso(utcnow()), pending=pending)

    def delete_faces(self, collection: str, rows: Sequence[FaceRow], *, tenant: str = "default",
                     drop_empty: Sequence[str] = ()) -> ErasureReceipt:
        """Erase faces (found by ``faces_by_uuid``) in one transaction, and those of ``drop_empty``'s subjects they
        leave without a face."""
        c = self.collection(collection, tenant)
        face_ids = [r.face.face_id for r in rows]
        self.store.delete_faces(c, face_ids, owners={r.face.face_id: r.subject_id for r in rows},
                                drop_empty=drop_empty)
        pending = self._after_erase(c.id, face_ids)
        return ErasureReceipt(collection, sorted({r.subject_id for r in rows}), face_ids, iso(utcnow()),
                              pending=pending)

    def _after_erase(self, cid: int, face_ids: Sequence[int]) -> list[str]:
        self.vectors.remove(cid, np.array(face_ids, np.int64))
        return self.store.purge_freed_pages() + self.vectors.erasure_pending()

    # ------------------------------------------------------------------ enrolment
    def enroll(self, collection: str, subject_id: str, images: Sequence[ImageInput], *, tenant: str = "default",
               display_name: str | None = None, metadata: dict | None = None, consent: Consent | None = None,
               face: int | None = None) -> SubjectInfo:
        """Enrol one face per image for a subject (created if new). All or nothing: any refusal changes nothing.

        Enrolling an image already enrolled for the subject adds nothing (``created`` False).
        """
        check_subject_id(subject_id)
        if not images:
            raise InvalidArgument("enrolment needs at least one image")
        # check before the slow part: unknown collection, model, consent
        c = self.collection(collection, tenant, for_search=True)
        check_consent(c.require_consent, c.name, self.store.stored_consent(c.id, subject_id), consent, utcnow())
        self.vectors.load(c.id)  # loaded before this write commits, so the new faces are added exactly once
        known = self.store.enrolled_hashes(c.id, subject_id)
        prepared = []
        for image in images:
            bgr = self.engine.decode(image)
            digest = hashlib.sha256(bgr.tobytes()).hexdigest()
            # an image already enrolled for this subject is not analysed again (idempotent, resumable)
            prepared.append(NewFace(digest) if digest in known else
                            enrolment_face(self.engine, bgr, digest, face, c.store_crops))
        # a concurrent enrolment may create the same subject or add the same image first, or an erasure delete the
        # subject meanwhile: each conflict means another call committed, so the next try reads it (the image found:
        # ``created`` False; the subject gone: enrolled anew). Two enrolments that both lost the subject's creation
        # to a third then race each other for the image, so one try is not always enough (measured, PostgreSQL)
        for _ in range(ENROL_TRIES):
            try:  # consent checked again as stored in the writing transaction (the subject may be gone since)
                info, new_ids, new_vectors = self.store.write_enrolment(
                    c, subject_id, prepared, model_id=self.engine.model_id, display_name=display_name,
                    metadata=metadata, consent=consent,
                    check_consent=lambda stored: check_consent(c.require_consent, c.name, stored, consent, utcnow()))
                break
            except (IntegrityError, StaleDataError) as exc:
                conflict = exc
        else:
            raise AlreadyExists(f"subject '{subject_id}' was changed by other calls during each try of this enrolment "
                                f"({type(conflict).__name__}): nothing of it was written; send it again",
                                subject_id=subject_id) from conflict
        if new_ids:  # nothing fallible runs between the commit and this add
            self.vectors.add(c.id, np.array(new_ids, np.int64), np.stack(new_vectors))
        return info

    def index_faces(self, collection: str, image: ImageInput, *, tenant: str = "default", max_faces: int | None = None,
                    external_image_id: str | None = None, consent: Consent | None = None,
                    subject_for=lambda face_uuid: face_uuid) -> IndexedFaces:
        """Enrol every face of an image that passes the quality limits, largest first, at most ``max_faces``, each as
        a new subject named ``subject_for(its face uuid)`` (the face-level front ends: a face belongs to no person
        until it is associated with one). All in one transaction; the faces not enrolled come back with reasons."""
        if max_faces is not None and max_faces < 1:
            raise InvalidArgument("max_faces is at least 1")
        c = self.collection(collection, tenant, for_search=True)
        check_consent(c.require_consent, c.name, None, consent, utcnow())
        bgr = self.engine.decode(image)
        analysis = self.engine.analyze(bgr)
        digest = hashlib.sha256(bgr.tobytes()).hexdigest()
        image_id, size = str(uuid.uuid4()), [int(bgr.shape[1]), int(bgr.shape[0])]
        chosen, skipped = [], []
        for i, q in enumerate(analysis.quality):
            if not q.passed:
                skipped.append((i, [r.value for r in q.reasons]))
            elif max_faces is not None and len(chosen) >= max_faces:
                skipped.append((i, ["EXCEEDS_MAX_FACES"]))
            else:
                chosen.append(i)
        boxes = [[round(float(v), 1) for v in b] for b in analysis.detections.boxes]
        items = []
        for i in chosen:
            face_uuid = str(uuid.uuid4())
            crop = None
            if c.store_crops:
                crop = cv2.imencode(".jpg", align(bgr, analysis.detections.landmarks[i]))[1].tobytes()
            items.append((subject_for(face_uuid), NewFace(digest, analysis.templates[i], analysis.quality[i].to_dict(),
                                                          boxes[i], crop, size, external_image_id, face_uuid,
                                                          image_id)))
        infos = []
        if items:
            self.vectors.load(c.id)
            infos, ids, vectors = self.store.write_new_subjects(c, items, model_id=self.engine.model_id,
                                                                consent=consent)
            self.vectors.add(c.id, np.array(ids, np.int64), np.stack(vectors))
        return IndexedFaces(analysis, list(zip(chosen, [sid for sid, _ in items], infos)), skipped)

    def enroll_templates(self, collection: str, subject_ids: Sequence[str], templates: np.ndarray,
                         image_hashes: Sequence[str], *, tenant: str = "default", chunk: int = 20_000,
                         bulk: bool = False) -> int:
        """Bulk-load templates made elsewhere by this engine's model (evaluation, benchmarks, migration).

        One face per row; subjects are created as needed with the collection's consent rule
        waived, so this path is for data that needs no consent record (public benchmarks) and
        is not exposed by the API. Each chunk is one transaction. ``bulk``: an initial import, the vector
        store may build its index once at the end (pgvector drops and rebuilds its HNSW index). Returns the
        faces added.
        """
        if templates.shape[1] != self.dim:
            raise InvalidArgument(f"templates have {templates.shape[1]} dimensions, the model makes {self.dim}")
        c = self.collection(collection, tenant, for_search=True)
        self.vectors.load(c.id)
        added = 0
        with self.vectors.bulk_load() if bulk else nullcontext():
            for start in range(0, len(subject_ids), chunk):
                vecs = np.asarray(templates[start : start + chunk], np.float32)
                ids = self.store.insert_templates(c.id, list(subject_ids[start : start + chunk]), vecs,
                                                  image_hashes[start : start + chunk], model_id=self.engine.model_id)
                self.vectors.add(c.id, ids, vecs)
                added += len(ids)
        return added

    # ------------------------------------------------------------------ search
    def search(self, c: CollectionRef, templates: np.ndarray, top_k: int) -> list[Ranked]:
        """Top-k subjects per template, each scored by its best face; only faces SQL still holds."""
        return [ranked[:top_k] for ranked, _ in self.search_for_decision(c, templates, top_k)]

    def search_for_decision(self, c: CollectionRef, templates: np.ndarray,
                            top_k: int) -> list[tuple[Ranked, float | None]]:
        """Per template: every subject found, best first (a decision looks past the top-k that are shown), and a
        bound on the subjects not found. Each face fetched belongs to a found subject, so when fewer than two
        subjects are found in a full fetch, the lowest score fetched bounds every other subject's best score
        (so the second-subject rule of the open-set decision cannot be skipped by one subject's many faces)."""
        if not len(templates):
            return []
        fetch = max(top_k * 4, 20)
        scores, ids = self.vectors.search(c.id, templates, fetch)
        owner = self.store.owners(c.id, sorted({int(i) for i in ids.ravel() if i >= 0}))
        out = []
        for row_scores, row_ids in zip(scores, ids):
            best: dict[str, tuple[str | None, float]] = {}
            for score, fid in zip(row_scores, row_ids):
                if fid in owner:  # joined with SQL: an erased or foreign face is never returned
                    ext, name = owner[fid]
                    if ext not in best or score > best[ext][1]:
                        best[ext] = (name, float(score))
            ranked = [(ext, name, score) for ext, (name, score) in sorted(best.items(), key=lambda kv: -kv[1][1])]
            full = int((row_ids >= 0).sum()) == fetch  # the store had more faces than were fetched
            out.append((ranked, float(row_scores[-1]) if full and len(ranked) < 2 else None))
        return out

    def search_faces(self, c: CollectionRef, templates: np.ndarray, top_k: int) -> list[list[tuple[FaceRow, float]]]:
        """Face-level search: per template the ``top_k`` best faces (not subjects) with their subject, best first;
        only faces SQL still holds."""
        if not len(templates):
            return []
        scores, ids = self.vectors.search(c.id, templates, top_k)
        rows = self.store.face_rows(c.id, sorted({int(i) for i in ids.ravel() if i >= 0}))
        return [[(rows[int(f)], float(v)) for v, f in zip(row_scores, row_ids) if int(f) in rows]
                for row_scores, row_ids in zip(scores, ids)]

    def search_templates(self, collection: str, templates: np.ndarray, *, tenant: str = "default",
                         top_k: int = 5) -> list[Ranked]:
        """Top-k (subject id, name, best similarity) per template, for evaluation and batch work."""
        return self.search(self.collection(collection, tenant, for_search=True), templates, top_k)

    def open_set_policy(self, c: CollectionRef, target_fpir: float | None = None) -> OpenSetPolicy:
        """The collection's open-set thresholds for its size now (every face of every subject is searched)."""
        return OpenSetPolicy.derive(self.calibration, c.target_fpir if target_fpir is None else target_fpir,
                                    self.store.face_count(c.id), margin=self.settings.match_margin)

    def best_score(self, c: CollectionRef, subject_id: str, template: np.ndarray) -> tuple[float, int]:
        """1:1 against a claimed subject: (the probe against the subject's best-matching face, faces compared)."""
        templates = self.store.subject_templates(c, subject_id)
        if not templates:
            raise NotFound(f"subject '{subject_id}' has no enrolled face", subject_id=subject_id)
        return float(np.max(np.stack(templates) @ template)), len(templates)

    # ------------------------------------------------------------------ upkeep
    def subject_exists(self, collection: str, subject_id: str, *, tenant: str = "default") -> bool:
        try:
            return self.store.stored_consent(self.collection(collection, tenant).id, subject_id) is not None
        except NotFound:
            return False

    def retention_due(self, now: dt.datetime) -> list[tuple[str, str, str, str]]:
        return self.store.retention_due(now)

    def check_index(self, collection: str, tenant: str = "default") -> dict:
        return self.vectors.check(self.collection(collection, tenant).id)

    def rebuild_index(self, collection: str, tenant: str = "default") -> dict:
        return self.vectors.rebuild(self.collection(collection, tenant).id)

    def index_contains(self, collection: str, face_ids: Sequence[int], tenant: str = "default") -> bool:
        cid = self.collection(collection, tenant).id
        return bool(self.vectors.contains(cid, np.asarray(face_ids, np.int64)).any())
