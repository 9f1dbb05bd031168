"""The SQL store: every read and write of the identity database goes through here.

Collections, subjects and faces (templates encrypted by the template cipher when a key is
set), tenant policies, retention queries and the template-key check. It is also the
``TemplateSource`` that vector stores rebuild and reconcile themselves from: SQL is the
source of truth. Plain records come out, never ORM objects.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceledger.config import Settings
from faceledger.errors import AlreadyExists, NotFound
from faceledger.gallery.crypto import TemplateCipher, parse_key
from faceledger.gallery import outbox
from faceledger.gallery.face_rows import SUBJECTS_LOCK, FaceRows, _consent_columns, _face_ids, _face_info
from faceledger.gallery.face_rows import _subject as _find_subject
from faceledger.gallery.feed import ADD, DROP, REMOVE, record_changes
from faceledger.gallery.db import BUSY_TIMEOUT_MS, open_database, write_lock
from faceledger.gallery.face_counts import FaceCounts
from faceledger.gallery.records import (
    CollectionInfo,
    CollectionRef,
    Consent,
    NewFace,
    StoredConsent,
    SubjectInfo,
    TenantPolicyInfo,
    iso,
)
from faceledger.gallery.schema import (MAX_ROW_ID, Collection, Face, FaceChange, Meta, Subject, TenantPolicy,
                                      UsageCounter, utcnow)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; faceledger stores UTC."""
    return value.replace(tzinfo=dt.timezone.utc) if value is not None and value.tzinfo is None else value


class SqlStore(FaceRows):
    def __init__(self, settings: Settings) -> None:
        self.db, self.session = open_database(settings.db_url)
        outbox.install(self.session)  # every data-changing commit carries its operation's audit intent
        self.cipher = TemplateCipher(parse_key(settings.template_key))
        self._check_template_key()
        self._face_counts = FaceCounts(self.session)
        # set by a vector store that lives in this database (pgvector): called with (session, collection id, face
        # ids, templates) inside the transaction that adds those faces
        self.vector_writer = None

    def close(self) -> None:
        self.db.dispose()

    # ------------------------------------------------------------------ template key
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

    def index_key(self) -> bytes:
        """The deployment's key authenticating persisted vector indexes: random, created once, kept in the database."""
        import secrets

        with self.session() as s:
            row = s.get(Meta, "index_key")
            if row is None:
                try:
                    s.add(Meta(key="index_key", value=secrets.token_hex(32)))
                    s.commit()
                except IntegrityError:  # another process created it first
                    s.rollback()
                row = s.get(Meta, "index_key")
            return bytes.fromhex(row.value)

    def deployment_id(self) -> str:
        """A short public name of this database (names its collections in external engines, e.g. Milvus)."""
        import hashlib

        return hashlib.sha256(b"deployment" + self.index_key()).hexdigest()[:12]

    def get_meta_int(self, key: str) -> int:
        with self.session() as s:
            row = s.get(Meta, key)
            return int(row.value) if row is not None else 0

    def raise_meta_int(self, key: str, value: int) -> None:
        """Set a counter kept in ``meta`` to ``value`` unless it is already higher (several processes may race)."""
        for _ in range(3):
            with self.session() as s:
                row = s.get(Meta, key, with_for_update=True)
                if row is None:
                    s.add(Meta(key=key, value=str(int(value))))
                elif int(row.value) < value:
                    row.value = str(int(value))
                try:
                    s.commit()
                    return
                except IntegrityError:  # created by another process first
                    s.rollback()

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
        self.purge_freed_pages()
        return len(faces)

    # ------------------------------------------------------------------ collections
    def create_collection(self, tenant: str, name: str, *, model_id: str, target_fmr: float, target_fpir: float,
                          require_consent: bool, store_crops: bool, retention_days: int | None) -> CollectionInfo:
        with self.session() as s:
            c = Collection(tenant=tenant, name=name, model_id=model_id, target_fmr=target_fmr, target_fpir=target_fpir,
                           require_consent=require_consent, store_crops=store_crops, retention_days=retention_days)
            s.add(c)
            try:
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"collection '{name}' already exists", collection=name) from None
            return self._collection_info(s, c)

    def update_collection(self, cid: int, *, target_fpir: float | None, target_fmr: float | None) -> CollectionInfo:
        with self.session() as s:
            c = s.get(Collection, cid)
            if target_fpir is not None:
                c.target_fpir = target_fpir
            if target_fmr is not None:
                c.target_fmr = target_fmr
            s.commit()
            return self._collection_info(s, c)

    def collection(self, tenant: str, name: str) -> CollectionRef:
        with self.session() as s:
            return _ref(self._collection(s, name, tenant))

    def collection_info(self, tenant: str, name: str) -> CollectionInfo:
        with self.session() as s:
            return self._collection_info(s, self._collection(s, name, tenant))

    def list_collections(self, tenant: str | None) -> list[CollectionInfo]:
        """A tenant's collections by name; every tenant's (by id) with ``tenant=None``, for maintenance only."""
        with self.session() as s:
            q = select(Collection).order_by(Collection.id)
            if tenant is not None:
                q = select(Collection).where(Collection.tenant == tenant).order_by(Collection.name)
            return [self._collection_info(s, c) for c in s.scalars(q).all()]

    def collection_names(self) -> list[tuple[int, str, str]]:
        """(id, tenant, name) of every collection, for maintenance reports."""
        with self.session() as s:
            return [tuple(r) for r in s.execute(select(Collection.id, Collection.tenant, Collection.name))]

    def face_count(self, cid: int) -> int:
        """How many faces a search of the collection compares the probe with (every face of every subject); kept
        from the change feed, not counted each time (see ``face_counts``)."""
        return self._face_counts(cid)

    def collection_sizes(self) -> list[tuple[int, int, int]]:
        """(collection id, subjects, faces) of every collection: gauges labelled by opaque ids."""
        with self.session() as s:
            faces = dict(s.execute(select(Face.collection_id, func.count()).group_by(Face.collection_id)).all())
            subjects = dict(s.execute(select(Subject.collection_id, func.count())
                                      .group_by(Subject.collection_id)).all())
            return [(cid, subjects.get(cid, 0), faces.get(cid, 0)) for cid in s.scalars(select(Collection.id))]

    def delete_collection(self, tenant: str, name: str) -> tuple[int, list[str], list[int]]:
        """Delete a collection with every subject and face; (collection id, subject ids, face ids)."""
        with self.session() as s:
            c = self._collection(s, name, tenant)
            subjects = list(s.scalars(select(Subject.external_id).where(Subject.collection_id == c.id)).all())
            face_ids = list(s.scalars(select(Face.id).where(Face.collection_id == c.id)).all())
            cid = c.id
            s.execute(delete(Face).where(Face.collection_id == cid))
            s.execute(delete(Subject).where(Subject.collection_id == cid))
            s.delete(c)
            record_changes(s, cid, DROP)
            s.commit()
        return cid, subjects, face_ids

    # ------------------------------------------------------------------ subjects
    def list_subjects(self, cid: int, *, limit: int, offset: int, search: str | None = None) -> list[SubjectInfo]:
        """A page of subjects by id; ``search``: those whose id or display name contains it (case-insensitive)."""
        with self.session() as s:
            q = select(Subject).where(Subject.collection_id == cid)
            if search:
                q = q.where(Subject.external_id.icontains(search, autoescape=True)
                            | Subject.display_name.icontains(search, autoescape=True))
            rows = s.scalars(q.order_by(Subject.external_id).limit(limit).offset(offset)).all()
            return [self._subject_info(s, r, faces=False) for r in rows]

    def get_subject(self, c: CollectionRef, subject_id: str) -> SubjectInfo:
        with self.session() as s:
            return self._subject_info(s, self._subject(s, c, subject_id))

    def stored_consent(self, cid: int, subject_id: str) -> StoredConsent | None:
        """The subject's consent as stored, or None when the subject does not exist."""
        with self.session() as s:
            row = s.execute(select(Subject.consent_basis, Subject.consent_expires_at).where(
                Subject.collection_id == cid, Subject.external_id == subject_id)).first()
            return None if row is None else StoredConsent(row[0], aware(row[1]))

    def create_subject(self, c: CollectionRef, subject_id: str, *, display_name: str | None, metadata: dict | None,
                       consent: Consent | None) -> SubjectInfo:
        with self.session() as s:
            subject = Subject(collection_id=c.id, external_id=subject_id, display_name=display_name,
                              meta=metadata or {}, **_consent_columns(consent))
            s.add(subject)
            try:
                s.commit()
            except IntegrityError:
                raise AlreadyExists(f"subject '{subject_id}' already exists in '{c.name}'",
                                    subject_id=subject_id) from None
            return self._subject_info(s, subject)

    def delete_subject(self, c: CollectionRef, subject_id: str) -> list[int]:
        """Delete a subject and its faces in one transaction; returns the face ids.

        The change feed (and so every gallery count and vector store) gets exactly the faces this call deleted: the
        ids come from the DELETE itself, not from an earlier read, so a face enrolled meanwhile is not left out and a
        concurrent erasure of the same subject is not counted twice (it waits, then finds the subject gone). On
        PostgreSQL the subject's row is locked first, so an enrolment into it waits, then enrols anew; on SQLite the
        write lock is taken before the subject is read (its id could otherwise be another subject's by the DELETE:
        SQLite reuses the highest id)."""
        with self.session() as s:
            write_lock(s, SUBJECTS_LOCK)
            subject = self._subject(s, c, subject_id, lock=True)
            face_ids = list(s.scalars(delete(Face).where(Face.subject_id == subject.id).returning(Face.id)).all())
            s.execute(delete(Subject).where(Subject.id == subject.id))
            record_changes(s, c.id, REMOVE, face_ids)
            s.commit()
        return sorted(face_ids)

    def delete_face(self, c: CollectionRef, subject_id: str, face_id: int) -> None:
        with self.session() as s:
            write_lock(s, SUBJECTS_LOCK)
            subject = self._subject(s, c, subject_id)
            # an id beyond the column's range (32-bit on PostgreSQL) names no face: never ask the database. The
            # DELETE says whether this call erased it (a concurrent erasure of the same face: NotFound, not a second
            # REMOVE in the feed)
            deleted = s.scalars(delete(Face).where(Face.id == face_id, Face.subject_id == subject.id)
                                .returning(Face.id)).all() if 1 <= face_id <= MAX_ROW_ID else []
            if not deleted:
                raise NotFound(f"face {face_id} not found for subject '{subject_id}'", face_id=face_id)
            record_changes(s, c.id, REMOVE, [face_id])
            s.commit()

    # ------------------------------------------------------------------ faces
    def enrolled_hashes(self, cid: int, subject_id: str) -> set[str]:
        with self.session() as s:
            return set(s.scalars(select(Face.image_sha256).join(Subject).where(
                Subject.collection_id == cid, Subject.external_id == subject_id)))

    def write_enrolment(self, c: CollectionRef, subject_id: str, faces: Sequence[NewFace], *, model_id: str,
                        display_name: str | None, metadata: dict | None,
                        consent: Consent | None, check_consent: Callable[[StoredConsent | None], None] | None = None,
                        ) -> tuple[SubjectInfo, list[int], list[np.ndarray]]:
        """Create or update the subject and add its new faces in one transaction.

        ``check_consent`` is called in the transaction with the subject's consent as stored then (None: no such
        subject, it will be created), so a subject erased since the caller's own check is not re-created without
        the consent a new subject needs.

        Returns the subject (with the faces of this call), and the ids and templates of the
        faces actually added, for the vector store.
        """
        new_ids, new_vectors = [], []
        with self.session() as s:
            write_lock(s, None)  # SQLite: the subject read below is still this subject's at the insert
            subject = _find_subject(s, c.id, subject_id)
            if check_consent is not None:
                check_consent(None if subject is None else
                              StoredConsent(subject.consent_basis, aware(subject.consent_expires_at)))
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
            rows = []
            for p in faces:
                row = s.scalar(select(Face).where(Face.subject_id == subject.id, Face.image_sha256 == p.sha))
                if row is None and p.template is None:  # was enrolled when we looked, erased since
                    raise AlreadyExists("the subject changed during this enrolment; send it again")
                if row is None:
                    row = Face(subject_id=subject.id, collection_id=c.id, template=self.cipher.pack(p.template),
                               model_id=model_id, quality=p.quality, image_sha256=p.sha, box=p.box, crop=p.crop,
                               **_face_ids(p), image_size=p.image_size, external_image_id=p.external_image_id)
                    s.add(row)
                    s.flush()  # the database allocates the id (safe across processes)
                    new_ids.append(row.id)
                    new_vectors.append(p.template)
                    rows.append(row)
                elif row not in rows:
                    rows.append(row)
            s.flush()
            # everything that could fail runs before the commit: after it, only the vector add remains
            info = self._subject_info(s, subject, faces=False)
            face_infos = [_face_info(f, f.id in new_ids) for f in rows]
            record_changes(s, c.id, ADD, new_ids)
            if self.vector_writer is not None:
                self.vector_writer(s, c.id, new_ids, new_vectors)
            s.commit()  # acknowledged from here on: durable (WAL, synchronous=FULL)
        return (SubjectInfo(info.subject_id, info.display_name, info.metadata, info.consent, info.created_at,
                            face_infos, info.face_count), new_ids, new_vectors)

    def insert_templates(self, cid: int, subject_ids: Sequence[str], templates: np.ndarray,
                         image_hashes: Sequence[str], *, model_id: str) -> np.ndarray:
        """Bulk rows, one face each, subjects created as needed, in one transaction; returns the new face ids.

        On PostgreSQL nothing serialises this with erasures and enrolments: a subject erased between this
        transaction's read of its subjects and its INSERT of faces (a foreign key violation), or created by another
        call meanwhile (a unique violation), rolls the whole chunk back, and it is tried again from the read (the
        erased subject is created anew, as it would be had the erasure come first). A chunk that still conflicts
        (an image hash repeated for one subject) is refused with ALREADY_EXISTS, nothing written."""
        for _ in range(3):
            try:
                return self._insert_templates(cid, subject_ids, templates, image_hashes, model_id=model_id)
            except IntegrityError as exc:
                conflict = exc
        raise AlreadyExists("these faces conflict with the gallery (an image enrolled twice for one subject, or "
                            "subjects changed by other calls during each try): nothing of them was written "
                            f"({type(conflict.orig).__name__})") from conflict

    def _insert_templates(self, cid: int, subject_ids: Sequence[str], templates: np.ndarray,
                          image_hashes: Sequence[str], *, model_id: str) -> np.ndarray:
        now = utcnow()
        with self.session() as s:
            write_lock(s, None)  # SQLite: the subjects read below are still theirs at the insert
            known = dict(s.execute(select(Subject.external_id, Subject.id).where(
                Subject.collection_id == cid, Subject.external_id.in_(set(subject_ids)))).all())
            new = sorted(set(subject_ids) - set(known))
            if new:
                s.execute(insert(Subject), [{"collection_id": cid, "external_id": e, "meta": {}, "created_at": now}
                                            for e in new])
                known.update(s.execute(select(Subject.external_id, Subject.id).where(
                    Subject.collection_id == cid, Subject.external_id.in_(new))).all())
            rows = [{"subject_id": known[e], "collection_id": cid, "template": self.cipher.pack(v),
                     "model_id": model_id, "quality": {}, "image_sha256": h, "box": [], "enrolled_at": now}
                    for e, v, h in zip(subject_ids, templates, image_hashes)]
            # ids come from the database (RETURNING), never from max(id)+1: safe with several writers
            ids = s.scalars(insert(Face).returning(Face.id, sort_by_parameter_order=True), rows).all()
            record_changes(s, cid, ADD, ids)
            if self.vector_writer is not None:
                self.vector_writer(s, cid, ids, templates)
            s.commit()
        return np.array(ids, np.int64)

    def subject_templates(self, c: CollectionRef, subject_id: str) -> list[np.ndarray]:
        with self.session() as s:
            subject = self._subject(s, c, subject_id)
            return [self.cipher.unpack(t) for t in s.scalars(select(Face.template).where(Face.subject_id == subject.id))]

    def owners(self, cid: int, face_ids: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        """face id -> (subject id, display name) for faces that exist in this collection (the search join)."""
        with self.session() as s:
            return {fid: (ext, name) for fid, ext, name in s.execute(
                select(Face.id, Subject.external_id, Subject.display_name).join(Subject)
                .where(Face.id.in_(list(face_ids)), Face.collection_id == cid))}

    # ------------------------------------------------------------------ TemplateSource
    def collection_ids(self) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Collection.id).order_by(Collection.id)))

    def face_ids(self, collection_id: int) -> np.ndarray:
        with self.db.connect() as conn:  # a million ids at start-up: fetched by the DB-API cursor itself, since
            # SQLAlchemy's per-row processing cost 1.5 s of a 1M-face start-up (an integer column needs none)
            result = conn.execute(select(Face.id).where(Face.collection_id == collection_id))
            rows = result.cursor.fetchall()
            return np.array(rows, np.int64).reshape(-1)

    # ------------------------------------------------------------------ usage counters (rate limits, quotas)
    def count_use(self, name: str, period: int, limit: int) -> bool:
        """Count one use of ``name`` in ``period`` unless ``limit`` is reached (then False, nothing counted).

        One atomic statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE count < limit), so processes that
        share the database count every use once and never pass the limit together.
        """
        if limit <= 0:
            return False
        with self.session() as s:
            dialect = s.get_bind().dialect.name
            upsert = pg_insert if dialect == "postgresql" else sqlite_insert
            statement = (upsert(UsageCounter).values(name=name, period=period, count=1)
                         .on_conflict_do_update(index_elements=[UsageCounter.name, UsageCounter.period],
                                                set_={"count": UsageCounter.count + 1},
                                                where=UsageCounter.count < limit)
                         .returning(UsageCounter.count))
            count = s.scalar(statement)
            if count == 1:  # a new period for this name: forget the kind's periods before the last one
                kind = name.split(":", 1)[0]
                s.execute(delete(UsageCounter).where(UsageCounter.name.startswith(f"{kind}:", autoescape=True),
                                                     UsageCounter.period < period - 1))
            s.commit()
            return count is not None

    def feed_head(self) -> int:
        """The last change feed number committed (0 for none)."""
        with self.session() as s:
            return s.scalar(select(func.max(FaceChange.seq))) or 0

    def changes_since(self, seq: int, limit: int = 10_000) -> list[tuple[int, int, int | None, str]]:
        """(seq, collection id, face id, op) of the feed after ``seq``, in order, at most ``limit``. Asked before
        every search: on a Core connection, not an ORM session (0.05 instead of 0.19 ms when nothing changed)."""
        with self.db.connect() as conn:
            return [tuple(r) for r in conn.execute(
                select(FaceChange.seq, FaceChange.collection_id, FaceChange.face_id, FaceChange.op)
                .where(FaceChange.seq > seq).order_by(FaceChange.seq).limit(limit))]

    def existing_vectors(self, collection_id: int, face_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, templates) of those of ``face_ids`` the collection still holds, read in one query each 5,000: a face
        erased by another process meanwhile is simply not there (never a half answer)."""
        rows = []
        with self.session() as s:
            for start in range(0, len(face_ids), 5000):
                chunk = [int(i) for i in face_ids[start:start + 5000]]
                rows += s.execute(select(Face.id, Face.template).where(
                    Face.collection_id == collection_id, Face.id.in_(chunk)).order_by(Face.id)).all()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        return (np.array([r[0] for r in rows], np.int64),
                np.stack([self.cipher.unpack(r[1]) for r in rows]).astype(np.float32))

    def all_vectors(self, collection_id: int) -> tuple[np.ndarray, np.ndarray]:
        ids, blobs = [], []
        with self.db.connect() as conn:
            result = conn.execution_options(yield_per=50_000).execute(
                select(Face.id, Face.template).where(Face.collection_id == collection_id).order_by(Face.id))
            for fid, blob in result:
                ids.append(fid)
                blobs.append(self.cipher.open(blob))
        matrix = np.frombuffer(b"".join(blobs), np.float32).reshape(len(ids), -1) if blobs else None
        return np.array(ids, np.int64), matrix

    # ------------------------------------------------------------------ tenant policies
    def tenant_policy(self, tenant: str) -> TenantPolicyInfo:
        with self.session() as s:
            p = s.get(TenantPolicy, tenant)
            if p is None:
                return TenantPolicyInfo(tenant, None, None, False)
            return TenantPolicyInfo(tenant, p.identify_per_hour, p.max_faces_per_search, bool(p.human_review))

    def set_tenant_policy(self, tenant: str, **changes) -> TenantPolicyInfo:
        with self.session() as s:
            policy = s.get(TenantPolicy, tenant) or TenantPolicy(tenant=tenant, human_review=False)
            for k, v in changes.items():
                setattr(policy, k, v)
            s.merge(policy)
            s.commit()
        return self.tenant_policy(tenant)

    # ------------------------------------------------------------------ retention
    def retention_due(self, now: dt.datetime) -> list[tuple[str, str, str, str]]:
        """(tenant, collection, subject id, reason) for subjects whose consent expired or retention lapsed."""
        due = []
        with self.session() as s:
            rows = s.execute(select(Collection.tenant, Collection.name, Collection.retention_days, Subject.external_id,
                                    Subject.created_at, Subject.consent_expires_at).join(Subject)).all()
        for tenant, name, days, ext, created, expires in rows:
            if expires is not None and aware(expires) <= now:
                due.append((tenant, name, ext, "consent expired"))
            elif days is not None and aware(created) + dt.timedelta(days=days) <= now:
                due.append((tenant, name, ext, f"retention of {days} days lapsed"))
        return due

    def purge_freed_pages(self, attempts: int = 5) -> list[str]:
        """Leave no copy of erased rows in the WAL file (secure_delete zeroes the main file's pages).

        Returns what is still pending: a checkpoint cannot finish while another connection
        reads from the WAL; it is retried here, and the next erasure or start-up completes it.
        """
        if self.db.dialect.name == "postgresql":
            return self._vacuum()
        if self.db.dialect.name != "sqlite":
            return []
        for attempt in range(attempts):
            with self.db.connect() as conn:
                # a reader blocks a TRUNCATE checkpoint: wait for it briefly, not the 10 s busy timeout of writes
                conn.exec_driver_sql("PRAGMA busy_timeout=200")
                try:
                    busy, _log, _done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not busy:
                return []
            time.sleep(0.05 * (attempt + 1))
        return ["sqlite-wal: another connection was reading; the erased rows leave the write-ahead log at the "
                "next checkpoint (every erasure and every start-up tries again)"]

    def _vacuum(self) -> list[str]:
        """PostgreSQL: rewrite the tables that held the erased rows; returns what still holds them.

        A plain VACUUM only marks a dead row's space free: its bytes stay in the table file until reused
        (measured: an erased template was still in ``faces`` after VACUUM and a checkpoint). ``VACUUM FULL``
        writes the table anew without them, holding an exclusive lock on it meanwhile (searches of pgvector
        wait; with the faiss store they do not read ``faces``). ``face_vectors`` (pgvector) is not rewritten
        here: that rebuilds its index (measured at a million faces: 79 s for IVFFlat, 15 min for HNSW).
        """
        with self.db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            vectors = conn.exec_driver_sql("SELECT to_regclass('face_vectors')").scalar() is not None
            conn.exec_driver_sql("VACUUM FULL faces")
            if vectors:
                conn.exec_driver_sql("VACUUM face_vectors")
        pending = ["postgresql-wal: the erased rows stay in PostgreSQL's write-ahead log until its segments are "
                   "recycled after later checkpoints, and in any WAL archive, backup or replica you keep"]
        if vectors:
            pending.append("pgvector: the erased vectors' bytes stay in the free space of face_vectors and its "
                           "index until reused; `faceledger index rebuild` rewrites both without them")
        return pending

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _collection(s: Session, name: str, tenant: str) -> Collection:
        c = s.scalar(select(Collection).where(Collection.tenant == tenant, Collection.name == name))
        if c is None:
            raise NotFound(f"collection '{name}' not found", collection=name)
        return c

    @staticmethod
    def _subject(s: Session, c: CollectionRef, subject_id: str, *, lock: bool = False) -> Subject:
        subject = _find_subject(s, c.id, subject_id, lock=lock)
        if subject is None:
            raise NotFound(f"subject '{subject_id}' not found in '{c.name}'", subject_id=subject_id)
        return subject

    @staticmethod
    def _collection_info(s: Session, c: Collection) -> CollectionInfo:
        subjects = s.scalar(select(func.count()).select_from(Subject).where(Subject.collection_id == c.id))
        faces = s.scalar(select(func.count()).select_from(Face).where(Face.collection_id == c.id))
        return CollectionInfo(c.name, c.tenant, c.model_id, c.target_fmr, c.target_fpir, c.require_consent,
                              c.store_crops, c.retention_days, iso(c.created_at), subjects or 0, faces or 0,
                              c.consent_attestation)

    @staticmethod
    def _subject_info(s: Session, subject: Subject, faces: bool = True) -> SubjectInfo:
        consent = None
        if subject.consent_basis:
            consent = Consent(subject.consent_basis, subject.consent_reference, subject.consent_given_at,
                              subject.consent_expires_at).to_dict()
        face_infos = []
        if faces:
            rows = s.scalars(select(Face).where(Face.subject_id == subject.id).order_by(Face.id)).all()
            face_infos = [_face_info(f) for f in rows]
            count = len(face_infos)
        else:
            count = s.scalar(select(func.count()).select_from(Face).where(Face.subject_id == subject.id)) or 0
        return SubjectInfo(subject.external_id, subject.display_name, dict(subject.meta or {}), consent,
                           iso(subject.created_at), face_infos, count)


def _ref(c: Collection) -> CollectionRef:
    return CollectionRef(c.id, c.tenant, c.name, c.model_id, c.target_fmr, c.target_fpir, c.require_consent,
                         c.store_crops, c.retention_days, c.consent_attestation)
