"""The gallery: the one layer the CLI and the API call to enrol, identify, verify and erase.

Writes go to SQL first (one transaction per call: a subject is never half-written), then
to the search index. After a crash between the two, start-up reconciliation brings the
index back in step; search results are always joined with SQL, so an erased face can
never be returned even by an index that lags.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceledger.config import Settings, get_settings
from faceledger.errors import (AlreadyExists, ConsentRequired, EnrollmentRefused, IncompatibleTemplates,
                               InvalidArgument, ManyFaces, NoFace, NotFound)
from faceledger.gallery.db import open_database
from faceledger.gallery.crypto import TemplateCipher, parse_key
from faceledger.gallery.index import FaissIndex, reconcile
from faceledger.gallery.records import (Candidate, CollectionInfo, Consent, ErasureReceipt, FaceInfo,
                                        IdentifyResult, ProbeResult, SubjectInfo, iso)
from faceledger.gallery.schema import Collection, Face, Meta, Subject, TenantPolicy, utcnow
from faceledger.imaging import ImageInput
from faceledger.matching.calibration import Calibration, NotCalibrated, load_calibration
from faceledger.matching.compare import Comparison, decide
from faceledger.pipeline.align import align
from faceledger.pipeline.engine import FaceAnalysis, FaceEngine


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return value.replace(tzinfo=dt.timezone.utc) if value is not None and value.tzinfo is None else value


class Gallery:
    def __init__(self, settings: Settings | None = None, engine: FaceEngine | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = engine or FaceEngine(self.settings)
        self.db, self.session = open_database(self.settings.db_url)
        self.cipher = TemplateCipher(parse_key(self.settings.template_key))
        self._check_template_key()
        self.index_dir = self.settings.home / "index"
        self._indexes: dict[int, FaissIndex] = {}
        self._dirty: set[int] = set()
        self._lock = threading.RLock()
        self._calibration: Calibration | None = None

    # ------------------------------------------------------------------ lifecycle
    def _check_template_key(self) -> None:
        """A wrong or missing template key stops start-up with a clear error, never gives wrong answers."""
        with self.session() as s:
            row = s.get(Meta, "template_key_check")
            if row is None:
                has_faces = s.scalar(select(func.count()).select_from(Face)) > 0
                row = Meta(key="template_key_check", value="none" if has_faces else self.cipher.check_value())
                s.add(row)
                s.commit()
            self.cipher.verify_check(row.value)

    def rekey(self, new_key: bytes | None) -> int:
        """Re-encrypt every template under ``new_key`` (None: store in the clear), in one transaction."""
        new = TemplateCipher(new_key)
        with self.session() as s:
            faces = s.scalars(select(Face)).all()
            for f in faces:
                f.template = new.pack(self.cipher.unpack(f.template))
            s.merge(Meta(key="template_key_check", value=new.check_value()))
            s.commit()
        self.cipher = new
        with self._lock:
            for path in self.index_dir.glob("collection-*"):
                path.unlink()
            self._indexes.clear()
            self._dirty.clear()
        self._purge_freed_pages()
        return len(faces)

    def startup(self) -> dict[str, dict]:
        """Load every collection's index and check it against the database; returns what was repaired."""
        report = {}
        with self.session() as s:
            collections = s.scalars(select(Collection)).all()
        for c in collections:
            report[c.name] = self._load_index(c.id)
        return report

    def close(self) -> None:
        """Persist changed indexes (so the next start-up loads instead of rebuilding)."""
        with self._lock:
            for cid in list(self._dirty):
                if cid in self._indexes:
                    self._indexes[cid].save(self._index_path(cid), {"collection_id": cid}, self.cipher)
            self._dirty.clear()
        self.db.dispose()

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            self._calibration = load_calibration(self.engine.model_id, self.settings.home)
            if self._calibration is None:
                raise NotCalibrated(f"no calibration for model {self.engine.model_id}; run `faceledger eval calibrate`")
        return self._calibration

    # ------------------------------------------------------------------ collections
    def create_collection(self, name: str, *, tenant: str = "default", target_fmr: float = 1e-4,
                          require_consent: bool = True, store_crops: bool = False,
                          retention_days: int | None = None) -> CollectionInfo:
        if not name or len(name) > 128:
            raise InvalidArgument("a collection name has 1 to 128 characters")
        self.calibration.threshold(target_fmr)  # refuses an FMR the calibration cannot support
        with self.session() as s:
            c = Collection(tenant=tenant, name=name, model_id=self.engine.model_id, target_fmr=target_fmr,
                           require_consent=require_consent, store_crops=store_crops, retention_days=retention_days)
            s.add(c)
            try:
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"collection '{name}' already exists", collection=name) from None
            return self._collection_info(s, c)

    def list_collections(self, tenant: str = "default") -> list[CollectionInfo]:
        with self.session() as s:
            rows = s.scalars(select(Collection).where(Collection.tenant == tenant).order_by(Collection.name)).all()
            return [self._collection_info(s, c) for c in rows]

    def list_all_collections(self) -> list[CollectionInfo]:
        """Every tenant's collections (for metrics and maintenance, never for a caller)."""
        with self.session() as s:
            return [self._collection_info(s, c) for c in s.scalars(select(Collection).order_by(Collection.id))]

    def get_collection(self, name: str, tenant: str = "default") -> CollectionInfo:
        with self.session() as s:
            return self._collection_info(s, self._collection(s, name, tenant))

    def delete_collection(self, name: str, tenant: str = "default") -> ErasureReceipt:
        with self.session() as s:
            c = self._collection(s, name, tenant)
            subjects = s.scalars(select(Subject.external_id).where(Subject.collection_id == c.id)).all()
            face_ids = s.scalars(select(Face.id).where(Face.collection_id == c.id)).all()
            cid = c.id
            s.execute(delete(Face).where(Face.collection_id == cid))
            s.execute(delete(Subject).where(Subject.collection_id == cid))
            s.delete(c)
            s.commit()
        with self._lock:
            self._indexes.pop(cid, None)
            self._dirty.discard(cid)
            for path in (self._index_path(cid), self._index_path(cid).with_suffix(".json")):
                path.unlink(missing_ok=True)
        self._purge_freed_pages()
        return ErasureReceipt(name, list(subjects), list(face_ids), iso(utcnow()))

    # ------------------------------------------------------------------ subjects
    def list_subjects(self, collection: str, *, tenant: str = "default", limit: int = 100,
                      offset: int = 0) -> list[SubjectInfo]:
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            rows = s.scalars(select(Subject).where(Subject.collection_id == c.id).order_by(Subject.external_id)
                             .limit(limit).offset(offset)).all()
            return [self._subject_info(s, r, faces=False) for r in rows]

    def get_subject(self, collection: str, subject_id: str, *, tenant: str = "default") -> SubjectInfo:
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            return self._subject_info(s, self._subject(s, c, subject_id))

    def create_subject(self, collection: str, subject_id: str, *, tenant: str = "default",
                       display_name: str | None = None, metadata: dict | None = None,
                       consent: Consent | None = None) -> SubjectInfo:
        _check_subject_id(subject_id)
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            if s.scalar(select(Subject.id).where(Subject.collection_id == c.id, Subject.external_id == subject_id)):
                raise AlreadyExists(f"subject '{subject_id}' already exists in '{collection}'", subject_id=subject_id)
            self._check_consent(c, None, consent)
            subject = Subject(collection_id=c.id, external_id=subject_id, display_name=display_name,
                              meta=metadata or {}, **_consent_columns(consent))
            s.add(subject)
            try:
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"subject '{subject_id}' already exists in '{collection}'",
                                    subject_id=subject_id) from None
            return self._subject_info(s, subject)

    def delete_subject(self, collection: str, subject_id: str, *, tenant: str = "default") -> ErasureReceipt:
        """Erase a subject: every template leaves the database and the index in this call."""
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            subject = self._subject(s, c, subject_id)
            face_ids = s.scalars(select(Face.id).where(Face.subject_id == subject.id)).all()
            cid = c.id
            s.execute(delete(Face).where(Face.subject_id == subject.id))
            s.delete(subject)
            s.commit()
        self._after_erase(cid, np.array(face_ids, np.int64))
        return ErasureReceipt(collection, [subject_id], list(face_ids), iso(utcnow()))

    def delete_face(self, collection: str, subject_id: str, face_id: int, *, tenant: str = "default") -> ErasureReceipt:
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            subject = self._subject(s, c, subject_id)
            face = s.get(Face, face_id)
            if face is None or face.subject_id != subject.id:
                raise NotFound(f"face {face_id} not found for subject '{subject_id}'", face_id=face_id)
            cid = c.id
            s.delete(face)
            s.commit()
        self._after_erase(cid, np.array([face_id], np.int64))
        return ErasureReceipt(collection, [subject_id], [face_id], iso(utcnow()))

    # ------------------------------------------------------------------ enrolment
    def enroll(self, collection: str, subject_id: str, images: Sequence[ImageInput], *, tenant: str = "default",
               display_name: str | None = None, metadata: dict | None = None, consent: Consent | None = None,
               face: int | None = None) -> SubjectInfo:
        """Enrol one face per image for a subject (created if new). All or nothing: any refusal changes nothing.

        In each image, the faces that pass the quality limits are candidates; exactly one
        must remain unless ``face`` picks one (an index into the faces, largest first).
        Enrolling an image already enrolled for the subject adds nothing (``created`` False).
        """
        _check_subject_id(subject_id)
        if not images:
            raise InvalidArgument("enrolment needs at least one image")
        with self.session() as s:  # check before the slow part: unknown collection, consent, model
            c = self._collection(s, collection, tenant)
            existing = s.scalar(select(Subject).where(Subject.collection_id == c.id, Subject.external_id == subject_id))
            self._check_consent(c, existing, consent)
            self._check_model(c)
            store_crops = c.store_crops
            self._index(c.id)  # loaded before this write commits, so the new faces are added exactly once
            known = set() if existing is None else set(
                s.scalars(select(Face.image_sha256).where(Face.subject_id == existing.id)))
        prepared = []
        for image in images:
            bgr = self.engine.decode(image)
            digest = hashlib.sha256(bgr.tobytes()).hexdigest()
            # an image already enrolled for this subject is not analysed again (idempotent, resumable)
            prepared.append({"sha": digest} if digest in known else self._enrolment_face(bgr, digest, face, store_crops))
        for attempt in range(2):  # a concurrent enrolment may create the same subject first
            try:
                return self._write_enrolment(collection, tenant, subject_id, display_name, metadata, consent, prepared)
            except IntegrityError:
                if attempt:
                    raise

    def _enrolment_face(self, bgr: np.ndarray, digest: str, face: int | None, store_crops: bool) -> dict:
        analysis = self.engine.analyze(bgr)
        if len(analysis) == 0:
            raise NoFace("no face was found in the image")
        if face is not None:
            if not 0 <= face < len(analysis):
                raise InvalidArgument(f"face {face} asked for, the image has {len(analysis)}", faces=len(analysis))
            chosen = face
            if not analysis.quality[chosen].passed:
                raise EnrollmentRefused("the chosen face fails the quality limits",
                                        reasons=[r.value for r in analysis.quality[chosen].reasons])
        else:
            passing = [i for i, q in enumerate(analysis.quality) if q.passed]
            if not passing:
                raise EnrollmentRefused("no face passes the quality limits",
                                        reasons=sorted({r.value for q in analysis.quality for r in q.reasons}),
                                        faces=[q.to_dict() for q in analysis.quality])
            if len(passing) > 1:
                raise ManyFaces(f"{len(passing)} faces pass the quality limits; say which one (0 is the largest)",
                                faces=len(analysis), boxes=_boxes(analysis))
            chosen = passing[0]
        crop = None
        if store_crops:
            crop = cv2.imencode(".jpg", align(bgr, analysis.detections.landmarks[chosen]))[1].tobytes()
        return {"template": analysis.templates[chosen], "quality": analysis.quality[chosen].to_dict(),
                "box": _boxes(analysis)[chosen], "sha": digest, "crop": crop}

    def _write_enrolment(self, collection, tenant, subject_id, display_name, metadata, consent, prepared):
        new_ids, new_vectors = [], []
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            subject = s.scalar(select(Subject).where(Subject.collection_id == c.id, Subject.external_id == subject_id))
            if subject is None:
                subject = Subject(collection_id=c.id, external_id=subject_id, meta={}, **_consent_columns(consent))
                s.add(subject)
            elif consent is not None:
                for k, v in _consent_columns(consent).items():
                    setattr(subject, k, v)
            if display_name is not None:
                subject.display_name = display_name
            if metadata is not None:
                subject.meta = {**(subject.meta or {}), **metadata}
            s.flush()
            faces = []
            for p in prepared:
                row = s.scalar(select(Face).where(Face.subject_id == subject.id, Face.image_sha256 == p["sha"]))
                if row is None and "template" not in p:  # was enrolled when we looked, erased since
                    raise AlreadyExists("the subject changed during this enrolment; send it again")
                if row is None:
                    row = Face(subject_id=subject.id, collection_id=c.id, template=self.cipher.pack(p["template"]),
                               model_id=self.engine.model_id, quality=p["quality"], image_sha256=p["sha"],
                               box=p["box"], crop=p["crop"])
                    s.add(row)
                    s.flush()
                    new_ids.append(row.id)
                    new_vectors.append(p["template"])
                    faces.append(row)
                elif row not in faces:
                    faces.append(row)
            s.commit()  # acknowledged from here on: durable (WAL, synchronous=FULL)
            cid = c.id
            info = self._subject_info(s, subject, faces=False)
            face_infos = [FaceInfo(f.id, f.image_sha256, f.box, f.quality, iso(f.enrolled_at), f.id in new_ids)
                          for f in faces]
        if new_ids:
            self._index(cid).add(np.array(new_ids, np.int64), np.stack(new_vectors))
            self._dirty.add(cid)
        return SubjectInfo(info.subject_id, info.display_name, info.metadata, info.consent, info.created_at,
                           face_infos)

    def enroll_templates(self, collection: str, subject_ids: Sequence[str], templates: np.ndarray,
                         image_hashes: Sequence[str], *, tenant: str = "default", chunk: int = 20_000) -> int:
        """Bulk-load templates made elsewhere by this engine's model (evaluation, benchmarks, migration).

        One face per row; subjects are created as needed with the collection's consent rule
        waived, so this path is for data that needs no consent record (public benchmarks) and
        is not exposed by the API. Each chunk is one transaction. Returns the faces added.
        """
        if templates.shape[1] != self._dim():
            raise InvalidArgument(f"templates have {templates.shape[1]} dimensions, the model makes {self._dim()}")
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            self._check_model(c)
            cid = c.id
        index = self._index(cid)
        added = 0
        now = utcnow()
        for start in range(0, len(subject_ids), chunk):
            ids = list(subject_ids[start : start + chunk])
            vecs = np.asarray(templates[start : start + chunk], np.float32)
            with self.session() as s:
                known = dict(s.execute(select(Subject.external_id, Subject.id).where(
                    Subject.collection_id == cid, Subject.external_id.in_(set(ids)))).all())
                new = sorted(set(ids) - set(known))
                if new:
                    s.execute(Subject.__table__.insert(), [
                        {"collection_id": cid, "external_id": e, "metadata": {}, "created_at": now} for e in new])
                    known.update(s.execute(select(Subject.external_id, Subject.id).where(
                        Subject.collection_id == cid, Subject.external_id.in_(new))).all())
                first = (s.scalar(select(func.max(Face.id))) or 0) + 1
                rows = [{"id": first + i, "subject_id": known[e], "collection_id": cid, "template": self.cipher.pack(v),
                         "model_id": self.engine.model_id, "quality": {}, "image_sha256": h, "box": [],
                         "enrolled_at": now}
                        for i, (e, v, h) in enumerate(zip(ids, vecs, image_hashes[start : start + chunk]))]
                s.execute(Face.__table__.insert(), rows)
                s.commit()
            index.add(np.array([r["id"] for r in rows], np.int64), vecs)
            self._dirty.add(cid)
            added += len(rows)
        self._maybe_upgrade(cid)
        return added

    def _maybe_upgrade(self, cid: int) -> None:
        """An exact index that has grown past ``ivf_threshold`` is rebuilt as IVF."""
        with self._lock:
            index = self._indexes.get(cid)
            if index is not None and index.kind == "flat" and len(index) >= self.settings.ivf_threshold:
                self._indexes[cid] = self._build(cid)
                self._dirty.add(cid)

    # ------------------------------------------------------------------ search
    def identify(self, collection: str, image: ImageInput, *, tenant: str = "default", top_k: int = 5,
                 target_fmr: float | None = None, max_faces: int | None = None,
                 human_review: bool = False) -> IdentifyResult:
        """1:N for every face of the probe (largest first): top-k subjects and an open-set decision.

        An image without a face gives an empty ``faces`` list; an empty collection gives
        every face the decision "unknown" with no candidates.
        """
        if not 1 <= top_k <= 100:
            raise InvalidArgument("top_k is between 1 and 100")
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            self._check_model(c)
            cid, fmr = c.id, target_fmr or c.target_fmr
        threshold = self.calibration.threshold(fmr)
        analysis = self.engine.analyze(image)
        n = min(len(analysis), max_faces or self.settings.max_faces)
        results = []
        if n:
            index = self._index(cid)
            per_face = self._search(cid, index, analysis.templates[:n], top_k) if len(index) else [[]] * n
            for i in range(n):
                candidates = []
                for subject_id, name, sim in per_face[i]:
                    f, bound = self.calibration.fmr(sim)
                    candidates.append(Candidate(subject_id, name, sim, f, bound,
                                                None if human_review else sim >= threshold))
                if human_review:  # candidates for a person to judge; the service decides nothing
                    results.append(ProbeResult(_boxes(analysis)[i], analysis.quality[i].to_dict(), "review", None,
                                               candidates))
                    continue
                top = candidates[0] if candidates and candidates[0].match else None
                results.append(ProbeResult(_boxes(analysis)[i], analysis.quality[i].to_dict(),
                                           "match" if top else "unknown", top.subject_id if top else None,
                                           candidates))
        return IdentifyResult(collection, self.engine.model_id, fmr, threshold, results)

    def search_templates(self, collection: str, templates: np.ndarray, *, tenant: str = "default",
                         top_k: int = 5) -> list[list[tuple[str, str | None, float]]]:
        """Top-k (subject id, name, best similarity) per template, for evaluation and batch work."""
        with self.session() as s:
            cid = self._collection(s, collection, tenant).id
        index = self._index(cid)
        return self._search(cid, index, templates, top_k) if len(index) else [[] for _ in templates]

    def _search(self, cid: int, index: FaissIndex, templates: np.ndarray, top_k: int):
        scores, ids = index.search(templates, max(top_k * 4, 20))
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        with self.session() as s:  # joined with SQL: only faces that exist, in this collection
            owner = {fid: (ext, name) for fid, ext, name in s.execute(
                select(Face.id, Subject.external_id, Subject.display_name).join(Subject)
                .where(Face.id.in_(wanted), Face.collection_id == cid))}
        out = []
        for row_scores, row_ids in zip(scores, ids):
            best: dict[str, tuple[str | None, float]] = {}
            for score, fid in zip(row_scores, row_ids):
                if fid in owner:  # a subject is scored by its best face
                    ext, name = owner[fid]
                    if ext not in best or score > best[ext][1]:
                        best[ext] = (name, float(score))
            ranked = sorted(best.items(), key=lambda kv: -kv[1][1])[:top_k]
            out.append([(ext, name, score) for ext, (name, score) in ranked])
        return out

    def verify(self, collection: str, subject_id: str, image: ImageInput, *, tenant: str = "default",
               target_fmr: float | None = None, face: int | None = None) -> Comparison:
        """1:1 against a claimed subject: the probe's face against the subject's best-matching face."""
        with self.session() as s:
            c = self._collection(s, collection, tenant)
            self._check_model(c)
            subject = self._subject(s, c, subject_id)
            templates = [self.cipher.unpack(t) for t in
                         s.scalars(select(Face.template).where(Face.subject_id == subject.id))]
            fmr = target_fmr or c.target_fmr
        if not templates:
            raise NotFound(f"subject '{subject_id}' has no enrolled face", subject_id=subject_id)
        analysis, i = self.engine.single_face(image, face=face)
        score = float(np.max(np.stack(templates) @ analysis.templates[i]))
        return decide(score, self.calibration, fmr)

    # ------------------------------------------------------------------ guardrails
    def tenant_policy(self, tenant: str) -> TenantPolicy:
        with self.session() as s:
            return s.get(TenantPolicy, tenant) or TenantPolicy(tenant=tenant, identify_per_hour=None,
                                                                max_faces_per_search=None, human_review=False)

    def set_tenant_policy(self, tenant: str, **changes) -> dict:
        with self.session() as s:
            policy = s.get(TenantPolicy, tenant) or TenantPolicy(tenant=tenant, human_review=False)
            for k, v in changes.items():
                setattr(policy, k, v)
            s.merge(policy)
            s.commit()
        return self.tenant_policy_dict(tenant)

    def tenant_policy_dict(self, tenant: str) -> dict:
        p = self.tenant_policy(tenant)
        return {"tenant": tenant, "identify_per_hour": p.identify_per_hour,
                "max_faces_per_search": p.max_faces_per_search, "human_review": p.human_review}

    # ------------------------------------------------------------------ retention
    def retention_due(self, now: dt.datetime) -> list[tuple[str, str, str, str]]:
        """(tenant, collection, subject id, reason) for subjects whose consent expired or retention lapsed."""
        due = []
        with self.session() as s:
            rows = s.execute(select(Collection.tenant, Collection.name, Collection.retention_days, Subject.external_id,
                                    Subject.created_at, Subject.consent_expires_at).join(Subject)).all()
        for tenant, name, days, ext, created, expires in rows:
            if expires is not None and _aware(expires) <= now:
                due.append((tenant, name, ext, "consent expired"))
            elif days is not None and _aware(created) + dt.timedelta(days=days) <= now:
                due.append((tenant, name, ext, f"retention of {days} days lapsed"))
        return due

    # ------------------------------------------------------------------ index upkeep
    def check_index(self, collection: str, tenant: str = "default") -> dict:
        with self.session() as s:
            cid = self._collection(s, collection, tenant).id
        with self._lock:
            self._indexes.pop(cid, None)
        return self._load_index(cid)

    def rebuild_index(self, collection: str, tenant: str = "default") -> dict:
        with self.session() as s:
            cid = self._collection(s, collection, tenant).id
        with self._lock:
            self._indexes[cid] = self._build(cid)
            self._indexes[cid].save(self._index_path(cid), {"collection_id": cid}, self.cipher)
            self._dirty.discard(cid)
            return {"kind": self._indexes[cid].kind, "count": len(self._indexes[cid])}

    def index_contains(self, collection: str, face_ids: Sequence[int], tenant: str = "default") -> bool:
        with self.session() as s:
            cid = self._collection(s, collection, tenant).id
        return bool(np.isin(np.asarray(face_ids, np.int64), self._index(cid).ids()).any())

    def _index_path(self, cid: int) -> Path:
        return self.index_dir / f"collection-{cid}.faiss"

    def _index(self, cid: int) -> FaissIndex:
        with self._lock:
            if cid not in self._indexes:
                self._load_index(cid)
            return self._indexes[cid]

    def _load_index(self, cid: int) -> dict:
        """Load the persisted index (or build one) and reconcile it with the database."""
        with self._lock:
            loaded = FaissIndex.load(self._index_path(cid), self.settings.ivf_probe_fraction, self.cipher)
            if loaded is None or loaded[0].dim != self._dim():
                self._indexes[cid] = self._build(cid)
                self._dirty.add(cid)
                return {"source": "rebuilt from database", "count": len(self._indexes[cid]), "added": 0,
                        "removed": 0}
            index = loaded[0]
            added, removed = reconcile(index, self._face_ids(cid), self._vectors)
            self._indexes[cid] = index
            if added or removed:
                self._dirty.add(cid)
            self._maybe_upgrade(cid)
            return {"source": "loaded", "count": len(index), "added": added, "removed": removed}

    def _build(self, cid: int) -> FaissIndex:
        ids, vectors = self._all_vectors(cid)
        return FaissIndex.build(ids, vectors, self._dim(), ivf_threshold=self.settings.ivf_threshold,
                                probe_fraction=self.settings.ivf_probe_fraction)

    def _dim(self) -> int:
        return sum(self.engine.recognizer(c.recognizer).dim for c in self.engine.profile.components)

    def _face_ids(self, cid: int) -> np.ndarray:
        with self.db.connect() as conn:
            rows = conn.execute(text("SELECT id FROM faces WHERE collection_id = :c"), {"c": cid}).fetchall()
        return np.array([r[0] for r in rows], np.int64)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        out = {}
        with self.session() as s:
            for start in range(0, len(ids), 5000):
                chunk = [int(i) for i in ids[start : start + 5000]]
                out.update(s.execute(select(Face.id, Face.template).where(Face.id.in_(chunk))).all())
        if not len(ids):
            return np.zeros((0, self._dim()), np.float32)
        return np.stack([self.cipher.unpack(out[int(i)]) for i in ids])

    def _all_vectors(self, cid: int) -> tuple[np.ndarray, np.ndarray]:
        ids, vecs = [], []
        with self.db.connect() as conn:
            result = conn.execution_options(yield_per=50_000).execute(
                text("SELECT id, template FROM faces WHERE collection_id = :c ORDER BY id"), {"c": cid})
            for fid, blob in result:
                ids.append(fid)
                vecs.append(self.cipher.open(blob))
        dim = self._dim()
        matrix = np.frombuffer(b"".join(vecs), np.float32).reshape(-1, dim) if vecs else np.zeros((0, dim), np.float32)
        return np.array(ids, np.int64), matrix

    def _after_erase(self, cid: int, face_ids: np.ndarray) -> None:
        self._index(cid).remove(face_ids)
        with self._lock:  # the persisted copy still holds the erased vectors: drop it now, rewrite at close
            self._index_path(cid).unlink(missing_ok=True)
            self._index_path(cid).with_suffix(".json").unlink(missing_ok=True)
            self._dirty.add(cid)
        self._purge_freed_pages()

    def _purge_freed_pages(self) -> None:
        """Leave no copy of erased rows in the WAL file (secure_delete zeroes the main file's pages)."""
        if self.db.dialect.name == "sqlite":
            with self.db.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    # ------------------------------------------------------------------ helpers
    def _collection(self, s: Session, name: str, tenant: str) -> Collection:
        c = s.scalar(select(Collection).where(Collection.tenant == tenant, Collection.name == name))
        if c is None:
            raise NotFound(f"collection '{name}' not found", collection=name)
        return c

    def _subject(self, s: Session, c: Collection, subject_id: str) -> Subject:
        subject = s.scalar(select(Subject).where(Subject.collection_id == c.id, Subject.external_id == subject_id))
        if subject is None:
            raise NotFound(f"subject '{subject_id}' not found in '{c.name}'", subject_id=subject_id)
        return subject

    def _check_model(self, c: Collection) -> None:
        if c.model_id != self.engine.model_id:
            raise IncompatibleTemplates(
                f"collection '{c.name}' holds templates of another model; use its profile or re-enrol",
                collection_model=c.model_id, engine_model=self.engine.model_id)

    @staticmethod
    def _check_consent(c: Collection, subject: Subject | None, consent: Consent | None) -> None:
        if consent is not None and consent.expires_at is not None and _aware(consent.expires_at) <= utcnow():
            raise ConsentRequired("the consent record has already expired", expires_at=iso(consent.expires_at))
        if not c.require_consent or consent is not None:
            return
        if subject is None or subject.consent_basis is None:
            raise ConsentRequired(f"collection '{c.name}' requires a consent record to enrol")
        if subject.consent_expires_at is not None and _aware(subject.consent_expires_at) <= utcnow():
            raise ConsentRequired("the subject's consent has expired; record a new one",
                                  expires_at=iso(subject.consent_expires_at))

    def _collection_info(self, s: Session, c: Collection) -> CollectionInfo:
        subjects = s.scalar(select(func.count()).select_from(Subject).where(Subject.collection_id == c.id))
        faces = s.scalar(select(func.count()).select_from(Face).where(Face.collection_id == c.id))
        return CollectionInfo(c.name, c.tenant, c.model_id, c.target_fmr, c.require_consent, c.store_crops,
                              c.retention_days, iso(c.created_at), subjects or 0, faces or 0)

    @staticmethod
    def _subject_info(s: Session, subject: Subject, faces: bool = True) -> SubjectInfo:
        consent = None
        if subject.consent_basis:
            consent = Consent(subject.consent_basis, subject.consent_reference, subject.consent_given_at,
                              subject.consent_expires_at).to_dict()
        face_infos = []
        if faces:
            rows = s.scalars(select(Face).where(Face.subject_id == subject.id).order_by(Face.id)).all()
            face_infos = [FaceInfo(f.id, f.image_sha256, f.box, f.quality, iso(f.enrolled_at), True) for f in rows]
        return SubjectInfo(subject.external_id, subject.display_name, dict(subject.meta or {}), consent,
                           iso(subject.created_at), face_infos)


def _boxes(analysis: FaceAnalysis) -> list[list[float]]:
    return [[round(float(v), 1) for v in b] for b in analysis.detections.boxes]


def _consent_columns(consent: Consent | None) -> dict:
    if consent is None:
        return {}
    return {"consent_basis": consent.basis, "consent_reference": consent.reference,
            "consent_given_at": consent.given_at or utcnow(), "consent_expires_at": consent.expires_at}


def _check_subject_id(subject_id: str) -> None:
    if not isinstance(subject_id, str) or not 1 <= len(subject_id) <= 256 or subject_id.strip() != subject_id:
        raise InvalidArgument("a subject id is a string of 1 to 256 characters without surrounding spaces")
