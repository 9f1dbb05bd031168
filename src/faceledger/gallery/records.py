"""Plain values the gallery returns to the layers above (no ORM objects leak out)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import numpy as np


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; faceledger stores UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Consent:
    """The record that makes an enrolment lawful: its basis (e.g. explicit-consent), reference, validity."""

    basis: str
    reference: str | None = None
    given_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None

    def to_dict(self) -> dict:
        return {"basis": self.basis, "reference": self.reference, "given_at": iso(self.given_at),
                "expires_at": iso(self.expires_at)}


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    tenant: str
    model_id: str
    target_fmr: float  # 1:1: verify against a claimed subject
    target_fpir: float  # 1:N: the chance that a search for someone not enrolled returns a match
    require_consent: bool
    store_crops: bool
    retention_days: int | None
    created_at: str | None
    subjects: int = 0
    faces: int = 0
    consent_attestation: dict | None = None  # the legal basis attested for enrolments without a consent record

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FaceInfo:
    face_id: int
    image_sha256: str
    box: list[float]
    quality: dict
    enrolled_at: str | None
    created: bool = True  # False when the same image was already enrolled for the subject
    uuid: str | None = None  # the face's public id (Rekognition's FaceId, CompreFace's image_id)
    image_id: str | None = None  # the public id of the image it was enrolled from
    external_image_id: str | None = None
    image_size: list[int] | None = None  # [width, height] of that image

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SubjectInfo:
    subject_id: str
    display_name: str | None
    metadata: dict
    consent: dict | None
    created_at: str | None
    faces: list[FaceInfo] = field(default_factory=list)  # the faces, on request (a subject's details)
    face_count: int = 0  # how many faces the subject has enrolled (always filled)

    def to_dict(self, *, summary: bool = False) -> dict:
        """The subject; ``summary`` leaves the faces out (listings), keeping their count."""
        d = asdict(self)
        if summary:
            del d["faces"]
        else:
            d["faces"] = [f.to_dict() for f in self.faces]
        return d


@dataclass(frozen=True)
class ErasureReceipt:
    """What an erasure removed, and when: templates from the database and the search index."""

    collection: str
    subject_ids: list[str]
    face_ids: list[int]
    erased_at: str
    audit_seq: int | None = None  # the audit record of the erasure, once written
    pending: list[str] = field(default_factory=list)  # copies not yet gone (e.g. the SQLite WAL), and why

    def to_dict(self) -> dict:
        return {**asdict(self), "faces_deleted": len(self.face_ids)}


@dataclass(frozen=True)
class CollectionRef:
    """A collection as the layers above need it for one operation."""

    id: int
    tenant: str
    name: str
    model_id: str
    target_fmr: float
    target_fpir: float
    require_consent: bool
    store_crops: bool
    retention_days: int | None
    consent_attestation: dict | None = None


@dataclass(frozen=True)
class StoredConsent:
    """What the database holds of a subject's consent (None basis: no record)."""

    basis: str | None
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class NewFace:
    """One analysed face, ready to be written with its subject."""

    sha: str
    template: np.ndarray | None = None  # None: the image was already enrolled for this subject
    quality: dict | None = None
    box: list | None = None
    crop: bytes | None = None
    image_size: list[int] | None = None  # [width, height]
    external_image_id: str | None = None
    uuid: str | None = None  # chosen by the caller (the face is its own subject, named after it); else generated
    image_id: str | None = None  # shared by the faces of one image indexed together


@dataclass(frozen=True)
class TenantPolicyInfo:
    tenant: str
    identify_per_hour: int | None
    max_faces_per_search: int | None
    human_review: bool

    def to_dict(self) -> dict:
        return {"tenant": self.tenant, "identify_per_hour": self.identify_per_hour,
                "max_faces_per_search": self.max_faces_per_search, "human_review": self.human_review}
