"""Every error faceledger raises, in one module. Each has a stable ``code``.

Errors carry codes, never transport details: the HTTP status of each code is mapped at the
edge (``faceledger.api.errors``), the CLI prints the code and exits non-zero.
"""

from __future__ import annotations

from typing import Any


class FaceledgerError(Exception):
    code = "ERROR"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.audited = False  # set once an audit record names this refusal (so no front end writes a second)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


# ---------------------------------------------------------------- input
class InvalidImage(FaceledgerError):
    """Not an image we can read: random bytes, a non-image, an unsupported format."""

    code = "INVALID_IMAGE"


class EmptyImage(InvalidImage):
    code = "EMPTY_IMAGE"


class TruncatedImage(InvalidImage):
    code = "TRUNCATED_IMAGE"


class ImageTooLarge(FaceledgerError):
    """Too many pixels (a decompression bomb is refused before it is decoded)."""

    code = "IMAGE_TOO_LARGE"


class PayloadTooLarge(FaceledgerError):
    code = "PAYLOAD_TOO_LARGE"


class InvalidArgument(FaceledgerError):
    code = "INVALID_ARGUMENT"


class InvalidRequest(FaceledgerError):
    """A request body or query that does not match the API's schema."""

    code = "INVALID_REQUEST"


class UnsupportedMediaType(FaceledgerError):
    code = "UNSUPPORTED_MEDIA_TYPE"


# ---------------------------------------------------------------- faces and models
class NoFace(FaceledgerError):
    code = "NO_FACE"


class ManyFaces(FaceledgerError):
    code = "MANY_FACES"


class EnrollmentRefused(FaceledgerError):
    """No face of an image passed the quality limits; ``details`` names the reasons."""

    code = "ENROLLMENT_REFUSED"


class IncompatibleTemplates(FaceledgerError):
    """Templates made by different models are never compared."""

    code = "INCOMPATIBLE_TEMPLATES"


class ModelFileError(FaceledgerError):
    """A model file is missing, corrupt or does not match its recorded checksum."""

    code = "MODEL_FILE"


class NotCalibrated(FaceledgerError):
    code = "NOT_CALIBRATED"


# ---------------------------------------------------------------- gallery
class NotFound(FaceledgerError):
    code = "NOT_FOUND"


class AlreadyExists(FaceledgerError):
    code = "ALREADY_EXISTS"


class ConsentRequired(FaceledgerError):
    code = "CONSENT_REQUIRED"


class TemplateKeyError(FaceledgerError):
    """The template encryption key is missing, wrong or malformed."""

    code = "TEMPLATE_KEY"


class ConfigurationError(FaceledgerError):
    """A setting names something that does not exist or cannot work here."""

    code = "CONFIGURATION"


# ---------------------------------------------------------------- access and load
class Unauthorized(FaceledgerError):
    code = "UNAUTHORIZED"


class Forbidden(FaceledgerError):
    code = "FORBIDDEN"


class RateLimited(FaceledgerError):
    code = "RATE_LIMITED"


class Overloaded(FaceledgerError):
    code = "OVERLOADED"


class DataMissing(FaceledgerError):
    """Evaluation data (LFW, the UTKFace sample, ...) is not where the data setting points."""

    code = "DATA_MISSING"


class StorageFull(FaceledgerError):
    """The disk (or quota) that holds the database or the vectors is full: nothing can be written."""

    code = "STORAGE_FULL"


class StorageUnavailable(FaceledgerError):
    """The database cannot take a write for another reason (read-only, locked past the timeout)."""

    code = "STORAGE_UNAVAILABLE"
