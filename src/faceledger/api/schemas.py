"""Request and response models of the HTTP API (they mirror the gallery's records)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from faceledger.errors import InvalidArgument
from faceledger.service.consent import instant
from faceledger.service.guardrails import MetadataLimits


class ErrorBody(BaseModel):
    code: str = Field(examples=["NO_FACE"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody


class QualityOut(BaseModel):
    face_px: float
    confidence: float
    sharpness: float
    brightness: float
    contrast: float
    yaw: float
    roll: float
    passed: bool
    reasons: list[str] = Field(description="Named reasons the face fails the enrolment quality limits.")


class FaceOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels.")
    landmarks: list[list[float]] = Field(description="Eyes, nose tip, mouth corners (image left to right).")
    confidence: float
    quality: QualityOut


class DetectResponse(BaseModel):
    width: int
    height: int
    model_id: str
    faces: list[FaceOut]


class Decision(BaseModel):
    similarity: float = Field(description="Cosine similarity of the two templates.")
    fmr: float | None = Field(description="False-match rate of one comparison at this similarity (calibrated). A "
                              "claim against a subject with k faces compares k times: its threshold is set for "
                              "the claim's FMR (target_fmr), so compare `match`, not `fmr` with `target_fmr`.")
    fmr_is_upper_bound: bool
    target_fmr: float | None
    threshold: float | None
    threshold_basis: Literal["measured", "extrapolated", "unsupported"] | None = Field(
        None, description="Whether the threshold's FMR is measured on impostor pairs or extrapolated from their tail; "
        "unsupported: the target, split over the subject's faces, is below what the calibration supports, and no "
        "decision is made (match null).")
    faces_compared: int = Field(1, description="Comparisons behind the decision: a claim takes the best of the "
                                "subject's faces, and its threshold is set so that the claim's FMR is the target.")
    match: bool | None


class CompareResponse(Decision):
    model_id: str


class VerifyResponse(Decision):
    subject_id: str


class Health(BaseModel):
    status: str
    version: str
    profile: str
    model_id: str | None = Field(None, description="The id of the templates the running model makes (from the "
                                 "model files' hashes; null only when a model file cannot be read).")


# ---------------------------------------------------------------- inputs
def _instant(value: Any) -> Any:
    """ISO 8601 text only (a number is not a Unix timestamp in disguise), 1970..9000 UTC once offset."""
    if not isinstance(value, (str, dt.datetime)):
        raise ValueError("an ISO 8601 date-time is text, e.g. 2027-12-31T23:59:00+01:00")  # noqa: TRY004 (pydantic)
    try:
        return instant(value, "the time")
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None


Instant = Annotated[dt.datetime, BeforeValidator(_instant)]


def _scalar(value: Any) -> Any:
    if type(value) is int and not -(2**63) <= value < 2**63:  # not turned into a float
        raise ValueError("integers fit 64 bits")
    return value


def _bounded(metadata: dict) -> dict:
    if MetadataLimits.size(metadata) > MetadataLimits.max_total_bytes:
        raise ValueError(f"metadata is at most {MetadataLimits.max_total_bytes} bytes as JSON")
    return metadata


MetadataValue = Annotated[Annotated[str, Strict(), Field(max_length=MetadataLimits.max_value_chars)]
                          | Annotated[bool, Strict()] | Annotated[int, Strict(), Field(ge=-(2**63), lt=2**63)]
                          | Annotated[float, Strict(), Field(allow_inf_nan=False)] | None,
                          BeforeValidator(_scalar)]
Metadata = Annotated[dict[Annotated[str, Field(max_length=MetadataLimits.max_key_chars)], MetadataValue],
                     Field(max_length=MetadataLimits.max_keys,
                           description=f"At most {MetadataLimits.max_keys} keys of at most "
                                       f"{MetadataLimits.max_key_chars} characters; values text (at most "
                                       f"{MetadataLimits.max_value_chars} characters), numbers, true/false or "
                                       f"null; at most {MetadataLimits.max_total_bytes} bytes as JSON."),
                     AfterValidator(_bounded)]


# ---------------------------------------------------------------- gallery
class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    basis: str = Field(min_length=1, max_length=64, examples=["explicit-consent"])
    reference: str | None = Field(None, max_length=256)
    given_at: Instant | None = None
    expires_at: Instant | None = None


class ConsentOut(BaseModel):
    basis: str
    reference: str | None
    given_at: str | None
    expires_at: str | None


class CollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    target_fmr: float = Field(1e-4, gt=0, lt=1, description="1:1 verification against a claimed subject: the "
                              "false-match rate of a claim.")
    target_fpir: float | None = Field(None, gt=0, le=0.5, description="1:N searches: the chance that a search for "
                                      "someone not enrolled returns a match, kept at any gallery size (default: "
                                      "the deployment's, 0.001).")
    require_consent: bool = True
    store_crops: bool = False
    retention_days: int | None = Field(None, ge=1, le=36500)


class CollectionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target_fpir: float | None = Field(None, gt=0, le=0.5, description="1:N searches: the new target FPIR.")
    target_fmr: float | None = Field(None, gt=0, lt=1, description="1:1 claims: the new target FMR.")


class CollectionOut(BaseModel):
    name: str
    tenant: str
    model_id: str
    target_fmr: float
    target_fpir: float
    require_consent: bool
    store_crops: bool
    retention_days: int | None
    created_at: str | None
    subjects: int
    faces: int
    consent_attestation: dict[str, Any] | None = Field(
        None, description="The legal basis an admin attested for enrolments through APIs without consent records "
                          "(Rekognition's, CompreFace's): basis, reference, attested_at, attested_by.")


class EnrolledFace(BaseModel):
    face_id: int
    image_sha256: str
    box: list[float]
    quality: dict[str, Any]
    enrolled_at: str | None
    created: bool
    uuid: str | None = Field(None, description="The face's public id (Rekognition's FaceId, CompreFace's image_id).")


class SubjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject_id: str = Field(min_length=1, max_length=256, pattern=r"^\S(.*\S)?$")
    display_name: str | None = Field(None, max_length=256)
    metadata: Metadata = Field(default_factory=dict)
    consent: ConsentIn | None = None


class SubjectSummary(BaseModel):
    """A subject in a listing: its faces are counted, not listed (``GET .../subjects/{subject_id}`` lists them)."""

    subject_id: str
    display_name: str | None
    metadata: dict[str, Any]
    consent: ConsentOut | None
    created_at: str | None
    face_count: int = Field(description="How many faces the subject has enrolled.")


class SubjectOut(SubjectSummary):
    """A subject's details: its faces (never templates)."""

    faces: list[EnrolledFace]


class ErasureReceipt(BaseModel):
    collection: str
    subject_ids: list[str]
    face_ids: list[int]
    faces_deleted: int
    erased_at: str
    audit_seq: int | None = Field(None, description="The audit record of this erasure.")
    pending: list[str] = Field(default_factory=list, description="Copies not gone yet, and when they will be "
                               "(e.g. the SQLite write-ahead log while another connection reads it).")


class CandidateOut(BaseModel):
    subject_id: str
    display_name: str | None
    similarity: float
    fmr: float = Field(description="Per comparison: the share of impostor pairs scoring at least this high.")
    fmr_basis: Literal["measured", "extrapolated", "bound"] = Field(
        description="measured on impostor pairs, extrapolated from their tail, or a bound (at most).")
    fmr_is_upper_bound: bool
    fpir: float = Field(description="For this gallery's size: the share of searches for someone not enrolled in "
                        "which somebody scores at least this high (at most, with the calibration's confidence).")
    match: bool | None = Field(description="The matched subject (only the top candidate of a match); null when the "
                               "tenant requires human review.")


class ProbeOut(BaseModel):
    box: list[float]
    quality: QualityOut
    decision: Literal["match", "unknown", "review"]
    subject_id: str | None
    candidates: list[CandidateOut]


class IdentifyResponse(BaseModel):
    collection: str
    model_id: str
    target_fpir: float = Field(description="The open-set policy: chance that a search for someone not enrolled "
                               "returns a match.")
    gallery_faces: int = Field(description="Faces searched (every face of every subject); thresholds follow it.")
    supported: bool = Field(description="False when the calibration cannot support the target at this gallery size "
                            "with stated confidence: then nothing is called a match (review at most).")
    threshold: float | None = Field(description="Match threshold (similarity) for the target at this size.")
    threshold_fmr: float | None = Field(description="Per-comparison FMR at the threshold.")
    basis: Literal["measured", "extrapolated"] | None = Field(
        description="Whether the threshold's FMR is measured on impostor pairs or extrapolated from their tail.")
    fpir_upper: float | None = Field(description="FPIR at the threshold for this size, upper confidence bound.")
    confidence: float
    review_threshold: float = Field(description="Scores from here up to the match rule are a possible match: review.")
    margin: float = Field(description="A match is at least this far ahead of the second subject.")
    human_review: bool = Field(description="The tenant requires a person to decide: every decision is review.")
    faces: list[ProbeOut]


# ------------------------------------------------- bodies that carry images (multipart or JSON base64)
# no control characters: the reference is written to the audit record, and PostgreSQL's text refuses NUL bytes
REFERENCE = Field(None, max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$",
                  description="Case or reference number, written to the audit record.")


class DetectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str = Field(description="The image: a file in multipart, base64 (or a data: URL) in JSON.")
    reference: str | None = REFERENCE


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_a: str
    image_b: str
    fmr: float = Field(1e-4, gt=0, lt=1, description="Target false-match rate of the decision.")
    face_a: int | None = Field(None, ge=0, description="Which face of image_a when it has several (0 = largest).")
    face_b: int | None = Field(None, ge=0, description="Which face of image_b when it has several (0 = largest).")
    reference: str | None = REFERENCE


class EnrollBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, description="One face is enrolled per image.")
    face: int | None = Field(None, ge=0, description="Which face when an image has several (0 = largest).")
    display_name: str | None = Field(None, max_length=256)
    consent_basis: str | None = Field(None, min_length=1, max_length=64)
    consent_reference: str | None = Field(None, max_length=256)
    consent_expires_at: Instant | None = None
    reference: str | None = REFERENCE


class IdentifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str
    top_k: int = Field(5, ge=1, le=100)
    fpir: float | None = Field(None, gt=0, le=0.5, description="Target FPIR of this search (default: the "
                               "collection's).")
    reference: str | None = REFERENCE


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: str
    fmr: float | None = Field(None, gt=0, lt=1, description="Target FMR of the claim (default: the collection's).")
    face: int | None = Field(None, ge=0, description="Which face when the image has several (0 = largest).")
    reference: str | None = REFERENCE


class AuditRecordOut(BaseModel):
    seq: int
    at: str
    tenant: str | None
    key_id: str | None
    operation: str
    collection: str | None
    subject_ids: list[str]
    scores: list[float]
    decision: str | None
    outcome: str
    purpose: str | None
    reference: str | None
    request_id: str | None
    client: str | None
    prev_hash: str
    hash: str


class AuditVerification(BaseModel):
    ok: bool
    records: int
    checkpoints: int
    first_bad_seq: int | None
    reason: str | None


# ------------------------------------------------------------------ cameras and video
STREAM_MODES = Literal["identify", "detect-only", "count-only"]
WEBHOOK_URL = r"^https?://[^\s/?#]+\S*$"


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=2048, pattern=r"^(rtsps?|https?)://[^\s/?#]+\S*$",
                        description="A live URL: rtsp://, rtsps://, http(s):// (MJPEG, HLS). Its host must be on the "
                        "operator's allow-list.")
    purpose: str = Field(min_length=1, max_length=512, description="Why these faces are watched (audited).")
    collection: str | None = Field(None, min_length=1, max_length=128,
                                   description="The collection searched (identify mode: required).")
    mode: STREAM_MODES = "identify"
    fps: float = Field(10.0, gt=0, le=30, description="Frames sampled per second.")
    identify_per_hour: int | None = Field(None, ge=0, le=10**6, description="This stream's identification budget "
                                          "per hour (default: the operator's).")
    webhook_url: str | None = Field(None, max_length=2048, pattern=WEBHOOK_URL, description="Where events are "
                                    "POSTed, signed per Standard Webhooks (host on the allow-list).")


class StreamOut(BaseModel):
    stream_id: str
    kind: str
    collection: str | None
    source: str
    mode: str
    purpose: str
    fps: float
    identify_per_hour: int
    webhook_url: str | None
    created_by: str | None
    created_at: str
    state: str = Field(description="running, stopped, ended or failed")
    status: dict[str, Any] = Field(description="The source's state (connecting, live, reconnecting, ...), frames, "
                                   "tracks, identifications, last error.")
    stopped_at: str | None


class StreamCreated(StreamOut):
    webhook_secret: str | None = Field(description="The webhook signing secret (whsec_...), shown only now.")


class StreamEventsOut(BaseModel):
    stream_id: str
    events: list[dict[str, Any]]
    next_after: int = Field(description="Pass as `after` to read the events that follow.")


class VideoResultsOut(BaseModel):
    stream: StreamOut
    total: int
    offset: int
    limit: int
    persons: list[dict[str, Any]]


class DeliveryOut(BaseModel):
    id: int
    event_id: int
    stream_id: str
    state: str
    attempts: int
    last_error: str | None
    delivered_at: str | None
