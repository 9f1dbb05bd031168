"""Request and response models of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(examples=["NO_FACE"])
    message: str
    details: dict = Field(default_factory=dict)


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


class CompareResponse(BaseModel):
    model_id: str
    similarity: float = Field(description="Cosine similarity of the two templates.")
    fmr: float | None = Field(description="False-match rate this similarity corresponds to (calibrated).")
    fmr_is_upper_bound: bool
    target_fmr: float | None
    threshold: float | None
    match: bool | None


class Health(BaseModel):
    status: str
    version: str
    profile: str
    model_id: str | None = None
