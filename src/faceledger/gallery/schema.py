"""The SQL schema (SQLAlchemy 2). Alembic migrations in ``migrations/`` create and evolve it."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """A point in time, stored as UTC whatever offset it came with, and read back as aware UTC.

    SQLite keeps datetimes as wall-clock text and drops the offset, so an expiry sent as
    ``...-10:00`` would be read ten hours early; converting on the way in makes every
    stored time UTC on every engine. A naive value is taken as UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        utc = value.astimezone(dt.timezone.utc)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime}


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("tenant", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), default="default")
    name: Mapped[str] = mapped_column(String(128))
    model_id: Mapped[str] = mapped_column(String(512))
    target_fmr: Mapped[float] = mapped_column(Float, default=1e-4)  # 1:1 verify against a claimed subject
    target_fpir: Mapped[float] = mapped_column(Float, default=1e-3)  # 1:N open-set searches
    require_consent: Mapped[bool] = mapped_column(default=True)
    store_crops: Mapped[bool] = mapped_column(default=False)
    retention_days: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # the legal basis an admin attested for enrolments through front ends that carry no consent record
    # (Rekognition's and CompreFace's APIs): {"basis", "reference", "attested_by", "attested_at"}
    consent_attestation: Mapped[dict | None] = mapped_column(JSON, default=None)

    subjects: Mapped[list[Subject]] = relationship(back_populates="collection", cascade="all, delete-orphan",
                                                   passive_deletes=True)


class Subject(Base):
    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("collection_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(256), default=None)
    meta: Mapped[dict] = mapped_column("metadata", JSON, default=dict)
    consent_basis: Mapped[str | None] = mapped_column(String(64), default=None)
    consent_reference: Mapped[str | None] = mapped_column(String(256), default=None)
    consent_given_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    consent_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    collection: Mapped[Collection] = relationship(back_populates="subjects")
    faces: Mapped[list[Face]] = relationship(back_populates="subject", cascade="all, delete-orphan",
                                             passive_deletes=True)


MAX_ROW_ID = 2**31 - 1  # integer primary keys are 32-bit on PostgreSQL: larger ids name no row


class Face(Base):
    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("subject_id", "image_sha256"), Index("ix_faces_collection", "collection_id"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(primary_key=True)  # also the vector id; never reused (receipts name it)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    template: Mapped[bytes] = mapped_column(LargeBinary)
    model_id: Mapped[str] = mapped_column(String(512))
    quality: Mapped[dict] = mapped_column(JSON)
    image_sha256: Mapped[str] = mapped_column(String(64))
    box: Mapped[list] = mapped_column(JSON)
    crop: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # public ids (Rekognition's FaceId and ImageId, CompreFace's image_id): UUIDs, never reused
    uuid: Mapped[str] = mapped_column(String(36), unique=True, index=True, default=lambda: str(uuid.uuid4()))
    image_id: Mapped[str] = mapped_column(String(36), default=lambda: str(uuid.uuid4()))
    external_image_id: Mapped[str | None] = mapped_column(String(255), default=None)
    image_size: Mapped[list | None] = mapped_column(JSON, default=None)  # [width, height] of the enrolled image

    subject: Mapped[Subject] = relationship(back_populates="faces")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # public part (an AWS key's access key id)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    # AWS-style keys (SigV4 needs the secret itself to check a signature): the secret sealed under the
    # credentials key kept outside the database; None for bearer keys
    secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    collection: Mapped[str | None] = mapped_column(String(128), default=None)  # bound to one collection
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    scopes: Mapped[list] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), default=None)


class AuditRecord(Base):
    """One biometric operation. Records are hash-chained: ``hash`` covers the fields and ``prev_hash``."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(40))  # ISO 8601 UTC, as hashed
    tenant: Mapped[str | None] = mapped_column(String(128), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    operation: Mapped[str] = mapped_column(String(32), index=True)
    collection: Mapped[str | None] = mapped_column(String(128))
    subject_ids: Mapped[list] = mapped_column(JSON)
    scores: Mapped[list] = mapped_column(JSON)
    decision: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(64))  # "ok" or the error code of a refusal
    purpose: Mapped[str | None] = mapped_column(String(512))
    reference: Mapped[str | None] = mapped_column(String(256))
    request_id: Mapped[str | None] = mapped_column(String(64))
    client: Mapped[str | None] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """An HMAC seal over the chain up to ``seq``, under a key kept outside the database."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    hmac: Mapped[str] = mapped_column(String(64))
    at: Mapped[str] = mapped_column(String(40))


class Meta(Base):
    """Facts about the database itself (e.g. the template key check value)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024))


class TenantPolicy(Base):
    """Guardrails against bulk surveillance, per tenant."""

    __tablename__ = "tenant_policies"

    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    identify_per_hour: Mapped[int | None] = mapped_column(default=None)  # per key
    max_faces_per_search: Mapped[int | None] = mapped_column(default=None)
    human_review: Mapped[bool] = mapped_column(default=False)  # candidates only, no match decision


class AuditOutbox(Base):
    """An operation whose data change committed, written in the same transaction as that change.

    The audit subscriber turns it into the chained record (and deletes it) right after the
    commit; if the process dies in between, start-up appends it then. So every committed
    change has exactly one audit record, even after a crash or a full disk.
    """

    __tablename__ = "audit_outbox"

    token: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # the record's fields as known before the change (JSON)


class FaceChange(Base):
    """The change feed: every face added or removed, and every collection dropped, in commit order.

    Written in the same transaction as the change itself. Processes that keep a copy of the
    templates in memory (the FAISS store) follow it from the last ``seq`` they applied, so an
    enrolment through one process is searchable through every other, and an erased face
    leaves every copy. ``seq`` is in commit order: on PostgreSQL writers of the feed queue on
    an advisory lock before their rows get a number; on SQLite the write lock serialises them.
    """

    __tablename__ = "face_changes"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column()  # no foreign key: a dropped collection's changes stay
    face_id: Mapped[int | None] = mapped_column(default=None)  # None for "drop"
    op: Mapped[str] = mapped_column(String(8))  # "add", "remove", "drop"
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UsageCounter(Base):
    """Uses of a limited operation per key and clock window (rate limits, hourly quotas), shared by every process."""

    __tablename__ = "usage_counters"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # "minute:<key id>", "hour:<key id>"
    period: Mapped[int] = mapped_column(primary_key=True)  # the minute or hour since the epoch
    count: Mapped[int] = mapped_column()


class Stream(Base):
    """A video source watched for faces (a camera's stream, or an uploaded file analysed in a batch)."""

    __tablename__ = "streams"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # a UUID
    kind: Mapped[str] = mapped_column(String(8))  # "stream" (live or file path) or "video" (an upload)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    collection: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None in detect-only/count-only
    source: Mapped[str] = mapped_column(Text)
    mode: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(Text)
    fps: Mapped[float] = mapped_column(Float)
    identify_per_hour: Mapped[int] = mapped_column()
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # key id
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16))  # running, stopped, ended, failed
    status: Mapped[dict] = mapped_column(JSON, default=dict)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StreamEvent(Base):
    """One track event of a stream, in order (polled with ``after=`` its id)."""

    __tablename__ = "stream_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    stream_id: Mapped[str] = mapped_column(ForeignKey("streams.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict] = mapped_column(JSON)
    __table_args__ = ({"sqlite_autoincrement": True},)


class WebhookDelivery(Base):
    """An event on its way to a stream's webhook: pending (with its next attempt), delivered, or dead (gave up)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("stream_events.id", ondelete="CASCADE"), index=True)
    stream_id: Mapped[str] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)  # pending, delivered, dead
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = ({"sqlite_autoincrement": True},)


class ConsoleSession(Base):
    """A browser signed in to the web console with an API key (the cookie's SHA-256 is the key of the row)."""

    __tablename__ = "console_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
