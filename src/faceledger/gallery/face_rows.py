"""Face-level reads and writes of the SQL store: faces by their public UUID, pages of a collection's faces,
faces moved between subjects, subjects renamed, several one-face subjects written at once.

The face-level front ends (Rekognition's and CompreFace's APIs) address faces, not only subjects; these
queries serve them, and every change still goes through one transaction with its change-feed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceledger.errors import AlreadyExists, NotFound
from faceledger.gallery.db import write_lock
from faceledger.gallery.feed import ADD, REMOVE, record_changes
from faceledger.gallery.records import CollectionRef, Consent, FaceInfo, NewFace, iso
from faceledger.gallery.schema import Collection, Face, Subject, utcnow


@dataclass(frozen=True)
class FaceRow:
    """A face with the subject it belongs to."""

    subject_id: str
    display_name: str | None
    face: FaceInfo


# PostgreSQL advisory lock key of the transactions that erase, move or rename subjects' faces: they queue there first,
# so that their row locks (subject, then faces) are never taken in opposite orders (a deadlock, measured); on SQLite
# the same call takes the write lock before the first read (``write_lock``)
SUBJECTS_LOCK = int.from_bytes(b"fl-subj\0", "big")


class FaceRows:
    """Mixed into ``SqlStore`` (uses its ``session``, ``cipher``, ``vector_writer`` and helpers)."""

    def set_attestation(self, cid: int, attestation: dict | None) -> None:
        with self.session() as s:
            s.execute(update(Collection).where(Collection.id == cid).values(consent_attestation=attestation))
            s.commit()

    def faces_by_uuid(self, cid: int, uuids: Sequence[str]) -> dict[str, FaceRow]:
        """uuid -> the face and its subject, for those of ``uuids`` the collection holds."""
        if not uuids:
            return {}
        with self.session() as s:
            rows = s.execute(select(Face, Subject.external_id, Subject.display_name).join(Subject)
                             .where(Face.collection_id == cid, Face.uuid.in_(list(set(uuids))))).all()
            return {f.uuid: FaceRow(ext, name, _face_info(f)) for f, ext, name in rows}

    def face_rows(self, cid: int, face_ids: Sequence[int]) -> dict[int, FaceRow]:
        """face id -> the face and its subject (the face-level search join: erased faces are simply absent)."""
        if not len(face_ids):
            return {}
        with self.session() as s:
            rows = s.execute(select(Face, Subject.external_id, Subject.display_name).join(Subject)
                             .where(Face.collection_id == cid, Face.id.in_([int(i) for i in face_ids]))).all()
            return {f.id: FaceRow(ext, name, _face_info(f)) for f, ext, name in rows}

    def face_page(self, cid: int, *, subject_id: str | None = None, uuids: Sequence[str] | None = None,
                  after: int = 0, offset: int = 0, limit: int = 1000,
                  without_prefix: str | None = None) -> list[FaceRow]:
        """The collection's faces in id order after face id ``after`` (then skipping ``offset``); of one subject, of
        some UUIDs, or of subjects whose id does not start with ``without_prefix``."""
        with self.session() as s:
            q = (select(Face, Subject.external_id, Subject.display_name).join(Subject)
                 .where(Face.collection_id == cid, Face.id > after).order_by(Face.id).offset(offset).limit(limit))
            q = _faces_of(q, subject_id, without_prefix)
            if uuids is not None:
                q = q.where(Face.uuid.in_(list(uuids)))
            return [FaceRow(ext, name, _face_info(f)) for f, ext, name in s.execute(q).all()]

    def count_faces(self, cid: int, *, subject_id: str | None = None, without_prefix: str | None = None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(Face).join(Subject).where(Face.collection_id == cid)
            return s.scalar(_faces_of(q, subject_id, without_prefix)) or 0

    def face_template(self, cid: int, uuid: str) -> tuple[FaceRow, np.ndarray]:
        with self.session() as s:
            row = s.execute(select(Face, Subject.external_id, Subject.display_name).join(Subject)
                            .where(Face.collection_id == cid, Face.uuid == uuid)).first()
            if row is None:
                raise NotFound(f"face {uuid} not found", face_id=uuid)
            f, ext, name = row
            return FaceRow(ext, name, _face_info(f)), self.cipher.unpack(f.template)

    def count_subjects(self, cid: int, *, without_prefix: str | None = None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(Subject).where(Subject.collection_id == cid)
            if without_prefix:
                q = q.where(~Subject.external_id.startswith(without_prefix, autoescape=True))
            return s.scalar(q) or 0

    def subject_page(self, cid: int, *, without_prefix: str | None = None, after: str = "",
                     limit: int = 100) -> list[str]:
        """Subject ids in order after ``after``."""
        with self.session() as s:
            q = (select(Subject.external_id).where(Subject.collection_id == cid, Subject.external_id > after)
                 .order_by(Subject.external_id).limit(limit))
            if without_prefix:
                q = q.where(~Subject.external_id.startswith(without_prefix, autoescape=True))
            return list(s.scalars(q))

    def write_new_subjects(self, c: CollectionRef, items: Sequence[tuple[str, NewFace]], *, model_id: str,
                           consent: Consent | None) -> tuple[list[FaceInfo], list[int], list[np.ndarray]]:
        """One new subject per face, all in one transaction (the faces of one image indexed together)."""
        infos, ids, vectors = [], [], []
        with self.session() as s:
            for subject_id, p in items:
                subject = Subject(collection_id=c.id, external_id=subject_id, meta={}, **_consent_columns(consent))
                s.add(subject)
                s.flush()
                row = Face(subject_id=subject.id, collection_id=c.id, template=self.cipher.pack(p.template),
                           model_id=model_id, quality=p.quality, image_sha256=p.sha, box=p.box, crop=p.crop,
                           image_size=p.image_size, external_image_id=p.external_image_id, **_face_ids(p))
                s.add(row)
                s.flush()
                infos.append(_face_info(row))
                ids.append(row.id)
                vectors.append(p.template)
            record_changes(s, c.id, ADD, ids)
            if self.vector_writer is not None:
                self.vector_writer(s, c.id, ids, vectors)
            s.commit()
        return infos, ids, vectors

    def move_faces(self, c: CollectionRef, moves: dict[int, str], *, owners: dict[int, str],
                   consent: Consent | None = None, drop_empty: Sequence[str] = ()) -> None:
        """Give faces to other subjects (face id -> subject id; a new subject is created with ``consent``), in one
        transaction, provided each still belongs to the subject ``owners`` names (else ALREADY_EXISTS, nothing
        changed: another call moved or erased it since it was read); the subjects named in ``drop_empty`` are
        deleted when this leaves them without a face. The templates do not change, so neither does the vector
        store: searches join faces with their subject in SQL."""
        with self.session() as s:
            write_lock(s, SUBJECTS_LOCK)
            _still_owned(s, c.id, owners)
            for face_id, to_subject in moves.items():
                target = _subject(s, c.id, to_subject)
                if target is None:
                    target = Subject(collection_id=c.id, external_id=to_subject, meta={},
                                     **_consent_columns(consent))
                    s.add(target)
                    s.flush()
                s.execute(update(Face).where(Face.collection_id == c.id, Face.id == int(face_id))
                          .values(subject_id=target.id))
            self._drop_if_empty(s, c.id, drop_empty)
            s.commit()

    def delete_faces(self, c: CollectionRef, face_ids: Sequence[int], *, owners: dict[int, str],
                     drop_empty: Sequence[str] = ()) -> None:
        """Erase faces in one transaction, provided each still belongs to the subject ``owners`` names (else
        ALREADY_EXISTS, nothing erased); the subjects named in ``drop_empty`` go too when left without a face."""
        with self.session() as s:
            write_lock(s, SUBJECTS_LOCK)
            _still_owned(s, c.id, owners)
            wanted = {int(i) for i in face_ids}
            deleted = s.scalars(delete(Face).where(Face.collection_id == c.id, Face.id.in_(wanted))
                                .returning(Face.id)).all()
            if len(deleted) != len(wanted):  # not in this collection (the owners' check covers the rest)
                raise AlreadyExists("the faces changed during this operation (moved or erased by another call): "
                                    "send it again")
            self._drop_if_empty(s, c.id, drop_empty)
            record_changes(s, c.id, REMOVE, sorted(wanted))
            s.commit()

    def rename_subject(self, c: CollectionRef, old: str, new: str) -> bool:
        """Rename a subject; into an existing subject's name, its faces join that subject (merged, the old one
        deleted). Returns whether it merged. The source is locked first (PostgreSQL), so an enrolment into it waits
        rather than have its face deleted with the source unrecorded.

        An enrolment (which takes no subjects lock) may create ``new`` after this call found it free: the rename's
        UPDATE then violates the subjects' unique key (PostgreSQL), and it is tried again from the read, merging into
        the subject the enrolment created, as had it come first. A rename that conflicts on every try (the two
        subjects hold a face of the same image) is refused with ALREADY_EXISTS, nothing changed."""
        for _ in range(3):
            try:
                return self._rename_subject(c, old, new)
            except IntegrityError as exc:
                conflict = exc
        raise AlreadyExists(f"subject '{old}' cannot be renamed '{new}': both hold a face of the same image, or other "
                            f"calls changed them during each try ({type(conflict.orig).__name__}); nothing changed",
                            subject_id=old, new_id=new) from conflict

    def _rename_subject(self, c: CollectionRef, old: str, new: str) -> bool:
        with self.session() as s:
            write_lock(s, SUBJECTS_LOCK)
            source = _subject(s, c.id, old, lock=True)
            if source is None:
                raise NotFound(f"subject '{old}' not found in '{c.name}'", subject_id=old)
            target = _subject(s, c.id, new)
            if target is None:
                source.external_id = new
                s.commit()
                return False
            if target.id == source.id:
                return False
            s.execute(update(Face).where(Face.subject_id == source.id).values(subject_id=target.id))
            s.delete(source)
            s.commit()
            return True

    @staticmethod
    def _drop_if_empty(s: Session, cid: int, subject_ids: Sequence[str]) -> None:
        for ext in subject_ids:
            subject = _subject(s, cid, ext, lock=True)  # an enrolment into it waits (else deleted unrecorded)
            if subject is not None and not s.scalar(select(func.count()).select_from(Face)
                                                    .where(Face.subject_id == subject.id)):
                s.execute(delete(Subject).where(Subject.id == subject.id))


def _faces_of(q, subject_id: str | None, without_prefix: str | None):
    if subject_id is not None:
        q = q.where(Subject.external_id == subject_id)
    if without_prefix:
        q = q.where(~Subject.external_id.startswith(without_prefix, autoescape=True))
    return q


def _still_owned(s: Session, cid: int, owners: dict[int, str]) -> None:
    """Within the writing transaction (rows locked on PostgreSQL; SQLite has one writer): refuse when a face no
    longer belongs to the subject it was read with."""
    if not owners:
        return
    now = dict(s.execute(select(Face.id, Subject.external_id).join(Subject)
                         .where(Face.collection_id == cid, Face.id.in_([int(i) for i in owners]))
                         .with_for_update(of=Face)).all())
    if any(now.get(int(f)) != subject for f, subject in owners.items()):
        raise AlreadyExists("the faces changed during this operation (moved or erased by another call): send it "
                            "again")


def _subject(s: Session, cid: int, external_id: str, *, lock: bool = False) -> Subject | None:
    query = select(Subject).where(Subject.collection_id == cid, Subject.external_id == external_id)
    return s.scalar(query.with_for_update() if lock else query)  # FOR UPDATE: PostgreSQL (SQLite ignores it)


def _consent_columns(consent: Consent | None) -> dict:
    if consent is None:
        return {}
    return {"consent_basis": consent.basis, "consent_reference": consent.reference,
            "consent_given_at": consent.given_at or utcnow(), "consent_expires_at": consent.expires_at}


def _face_ids(p: NewFace) -> dict:
    """The public ids a new face row takes from its ``NewFace`` (the rest come from the column defaults)."""
    return {k: v for k, v in (("uuid", p.uuid), ("image_id", p.image_id)) if v is not None}


def _face_info(f: Face, created: bool = True) -> FaceInfo:
    return FaceInfo(f.id, f.image_sha256, f.box, f.quality, iso(f.enrolled_at), created, f.uuid, f.image_id,
                    f.external_image_id, f.image_size)


__all__ = ["FaceRow", "FaceRows"]
