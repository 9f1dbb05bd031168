"""faceledger's values in Rekognition's shapes (botocore's ``rekognition`` service model): boxes and landmarks as
fractions of the image, percent confidences and similarities, faces with their UUIDs, and its error types."""

from __future__ import annotations

import datetime as dt
import re

from faceledger.errors import FaceledgerError
from faceledger.gallery.face_rows import FaceRow
from faceledger.matching import similarity
from faceledger.pipeline.engine import FaceAnalysis
from faceledger.service.face_level import is_person

# the five points faceledger detects, in Rekognition's names (its eyeLeft is the image's left eye)
LANDMARKS = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")
SHARPNESS_HALF = 40.0  # the enrolment limit on the Laplacian variance reads as 50 on Rekognition's 0-100 scale

# our quality codes -> Rekognition's reasons for a face left unindexed
REASONS = {"SMALL_FACE": "SMALL_BOUNDING_BOX", "LOW_CONFIDENCE": "LOW_CONFIDENCE", "LOW_SHARPNESS": "LOW_SHARPNESS",
           "LOW_BRIGHTNESS": "LOW_BRIGHTNESS", "HIGH_BRIGHTNESS": "LOW_FACE_QUALITY",
           "LOW_CONTRAST": "LOW_FACE_QUALITY", "EXTREME_POSE": "EXTREME_POSE", "EXCEEDS_MAX_FACES": "EXCEEDS_MAX_FACES"}

# Rekognition's id patterns (botocore does not check them; faceledger does)
PATTERNS = {
    "CollectionId": (re.compile(r"[a-zA-Z0-9_.\-]{1,255}"), "1 to 255 of [a-zA-Z0-9_.-]"),
    "UserId": (re.compile(r"[a-zA-Z0-9_.\-:]{1,128}"), "1 to 128 of [a-zA-Z0-9_.-:]"),
    "FaceId": (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "a lower-case UUID"),
    "ExternalImageId": (re.compile(r"[a-zA-Z0-9_.\-:]{1,255}"), "1 to 255 of [a-zA-Z0-9_.-:]"),
    "ClientRequestToken": (re.compile(r"[a-zA-Z0-9\-_]{1,64}"), "1 to 64 of [a-zA-Z0-9-_]"),
}

# faceledger's error codes -> Rekognition's error types
TYPES = {
    "NOT_FOUND": "ResourceNotFoundException", "ALREADY_EXISTS": "ResourceAlreadyExistsException",
    "INVALID_ARGUMENT": "InvalidParameterException", "INVALID_REQUEST": "InvalidParameterException",
    "NO_FACE": "InvalidParameterException", "MANY_FACES": "InvalidParameterException",
    "ENROLLMENT_REFUSED": "InvalidParameterException", "INCOMPATIBLE_TEMPLATES": "InvalidParameterException",
    "IMAGE_TOO_LARGE": "ImageTooLargeException", "PAYLOAD_TOO_LARGE": "ImageTooLargeException",
    "INVALID_IMAGE": "InvalidImageFormatException", "EMPTY_IMAGE": "InvalidImageFormatException",
    "TRUNCATED_IMAGE": "InvalidImageFormatException", "UNSUPPORTED_MEDIA_TYPE": "InvalidParameterException",
    "FORBIDDEN": "AccessDeniedException", "CONSENT_REQUIRED": "AccessDeniedException",
    "RATE_LIMITED": "ProvisionedThroughputExceededException", "OVERLOADED": "ThrottlingException",
}
AUTH_TYPES = {"missing": "MissingAuthenticationTokenException", "unknown": "UnrecognizedClientException",
              "revoked": "UnrecognizedClientException"}
SERVER_ERROR = "InternalServerError"


class RekognitionError(FaceledgerError):
    """A refusal of this front end that has its own Rekognition type (InvalidS3ObjectException, ...)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, aws_type: str, message: str, **details) -> None:
        super().__init__(message, **details)
        self.aws_type = aws_type


def error_type(exc: Exception) -> tuple[str, int]:
    """(Rekognition error type, HTTP status) of an exception."""
    if isinstance(exc, RekognitionError):
        return exc.aws_type, 400
    if isinstance(exc, FaceledgerError):
        if exc.code == "UNAUTHORIZED":
            return AUTH_TYPES.get(exc.details.get("reason"), "InvalidSignatureException"), 400
        if exc.code in TYPES:
            return TYPES[exc.code], 400
    return SERVER_ERROR, 500


def box(b, width: int, height: int) -> dict:
    x1, y1, x2, y2 = (float(v) for v in b)
    return {"Width": (x2 - x1) / width, "Height": (y2 - y1) / height, "Left": x1 / width, "Top": y1 / height}


def face_detail(a: FaceAnalysis, i: int) -> dict:
    """Rekognition's FaceDetail of face ``i`` (DEFAULT attributes: box, confidence, landmarks, pose, quality). Pose
    has no Pitch: faceledger's five points do not measure it."""
    q = a.quality[i]
    points = a.detections.landmarks[i]
    return {"BoundingBox": box(a.detections.boxes[i], a.width, a.height),
            "Landmarks": [{"Type": t, "X": float(x) / a.width, "Y": float(y) / a.height}
                          for t, (x, y) in zip(LANDMARKS, points)],
            "Pose": {"Roll": float(q.roll), "Yaw": float(q.yaw)},
            "Quality": {"Brightness": 100.0 * float(q.brightness) / 255.0,
                        "Sharpness": 100.0 * float(q.sharpness) / (float(q.sharpness) + SHARPNESS_HALF)},
            "Confidence": 100.0 * float(a.detections.scores[i])}


def compared_face(a: FaceAnalysis, i: int) -> dict:
    d = face_detail(a, i)
    return {k: d[k] for k in ("BoundingBox", "Confidence", "Landmarks", "Pose", "Quality")}


def stored_face(row: FaceRow, model: str) -> dict:
    """Rekognition's Face of an enrolled face."""
    f = row.face
    out = {"FaceId": f.uuid, "ImageId": f.image_id,
           "Confidence": 100.0 * float((f.quality or {}).get("confidence", 0.0)),
           "IndexFacesModelVersion": model}
    if f.image_size and f.box:
        out["BoundingBox"] = box(f.box, *f.image_size)
    if f.external_image_id:
        out["ExternalImageId"] = f.external_image_id
    if is_person(row.subject_id):
        out["UserId"] = row.subject_id
    return out


def percent(rate: float) -> float:
    return round(similarity.percent(rate), 5)


def epoch(iso_time: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso_time).timestamp() if iso_time else None
