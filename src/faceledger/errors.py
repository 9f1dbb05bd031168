"""Typed errors. Each has a stable ``code`` that the CLI and the API report as is."""

from __future__ import annotations

from typing import Any


class FaceledgerError(Exception):
    code = "ERROR"
    http_status = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidImage(FaceledgerError):
    """Not an image we can read: random bytes, a non-image, an unsupported format."""

    code = "INVALID_IMAGE"
    http_status = 422


class EmptyImage(InvalidImage):
    code = "EMPTY_IMAGE"


class TruncatedImage(InvalidImage):
    code = "TRUNCATED_IMAGE"


class ImageTooLarge(FaceledgerError):
    """Too many pixels (a decompression bomb is refused before it is decoded)."""

    code = "IMAGE_TOO_LARGE"
    http_status = 413


class PayloadTooLarge(FaceledgerError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class ModelFileError(FaceledgerError):
    """A model file is missing, corrupt or does not match its recorded checksum."""

    code = "MODEL_FILE"
    http_status = 500


class NoFace(FaceledgerError):
    code = "NO_FACE"
    http_status = 422


class ManyFaces(FaceledgerError):
    code = "MANY_FACES"
    http_status = 422


class IncompatibleTemplates(FaceledgerError):
    """Templates made by different models are never compared."""

    code = "INCOMPATIBLE_TEMPLATES"
    http_status = 422


class NotFound(FaceledgerError):
    code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(FaceledgerError):
    code = "ALREADY_EXISTS"
    http_status = 409


class ConsentRequired(FaceledgerError):
    code = "CONSENT_REQUIRED"
    http_status = 422


class EnrollmentRefused(FaceledgerError):
    """No face of an image passed the quality limits; ``details`` names the reasons."""

    code = "ENROLLMENT_REFUSED"
    http_status = 422


class InvalidArgument(FaceledgerError):
    code = "INVALID_ARGUMENT"
    http_status = 422
