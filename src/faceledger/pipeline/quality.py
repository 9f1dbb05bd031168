"""Quality of each detected face, with named reasons that callers use to refuse enrolments."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from faceledger.models.detections import Detections


class QualityReason(str, Enum):
    SMALL_FACE = "SMALL_FACE"
    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    LOW_SHARPNESS = "LOW_SHARPNESS"
    LOW_BRIGHTNESS = "LOW_BRIGHTNESS"
    HIGH_BRIGHTNESS = "HIGH_BRIGHTNESS"
    LOW_CONTRAST = "LOW_CONTRAST"
    EXTREME_POSE = "EXTREME_POSE"


@dataclass(frozen=True)
class QualityLimits:
    min_face_px: float = 48.0
    min_confidence: float = 0.8
    min_sharpness: float = 40.0
    min_brightness: float = 40.0
    max_brightness: float = 220.0
    min_contrast: float = 20.0
    max_yaw: float = 45.0
    max_roll: float = 45.0

    @classmethod
    def from_settings(cls, settings) -> QualityLimits:
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Quality:
    """Figures for one face and the reasons it fails the limits (empty when it passes)."""

    face_px: float
    confidence: float
    sharpness: float
    brightness: float
    contrast: float
    yaw: float
    roll: float
    reasons: tuple[QualityReason, ...]

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {
            "face_px": round(self.face_px, 1), "confidence": round(self.confidence, 4),
            "sharpness": round(self.sharpness, 1), "brightness": round(self.brightness, 1),
            "contrast": round(self.contrast, 1), "yaw": round(self.yaw, 1), "roll": round(self.roll, 1),
            "passed": self.passed, "reasons": [r.value for r in self.reasons],
        }


NOSE_DEPTH = 0.55  # nose tip to eye/mouth plane, in interocular distances (adult anthropometry, rough)


def pose_from_landmarks(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rough (yaw, roll) in degrees for (N,5,2) landmarks.

    Roll is the angle of the eye line. Yaw comes from how far the nose tip sits from the
    midline of the eyes and mouth corners, after undoing the roll. With the nose tip
    standing ``NOSE_DEPTH`` interocular distances in front of that midline, a head turned
    by yaw shifts it by ``depth * sin(yaw)`` while the eyes' distance shrinks by ``cos(yaw)``,
    so the measured ratio is ``depth * tan(yaw)``.
    """
    eyes_vec = landmarks[:, 1] - landmarks[:, 0]
    roll = np.degrees(np.arctan2(eyes_vec[:, 1], eyes_vec[:, 0]))
    cos, sin = np.cos(np.radians(-roll)), np.sin(np.radians(-roll))
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # (N,2,2)
    pts = np.einsum("nij,nkj->nki", rotate, landmarks - landmarks[:, 2:3])  # nose at origin
    midline = (pts[:, 0, 0] + pts[:, 1, 0] + pts[:, 3, 0] + pts[:, 4, 0]) / 4
    eye_distance = np.maximum(np.abs(pts[:, 1, 0] - pts[:, 0, 0]), 1e-6)
    yaw = np.degrees(np.arctan(-midline / eye_distance / NOSE_DEPTH))
    return yaw, roll


def crop_statistics(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sharpness (variance of the Laplacian), brightness and contrast of aligned BGR crops."""
    sharp, bright, contrast = [], [], []
    for crop in crops:
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        inner = grey[16:-16, 16:-16]  # skip the black border that alignment may add
        sharp.append(cv2.Laplacian(inner, cv2.CV_64F).var())
        bright.append(float(inner.mean()))
        contrast.append(float(inner.std()))
    return np.array(sharp), np.array(bright), np.array(contrast)


def assess(detections: Detections, crops: np.ndarray, limits: QualityLimits) -> list[Quality]:
    sizes = np.minimum(detections.widths, detections.heights)
    yaw, roll = pose_from_landmarks(detections.landmarks)
    sharp, bright, contrast = crop_statistics(crops)
    out = []
    for i in range(len(detections)):
        reasons = []
        if sizes[i] < limits.min_face_px:
            reasons.append(QualityReason.SMALL_FACE)
        if detections.scores[i] < limits.min_confidence:
            reasons.append(QualityReason.LOW_CONFIDENCE)
        if sharp[i] < limits.min_sharpness:
            reasons.append(QualityReason.LOW_SHARPNESS)
        if bright[i] < limits.min_brightness:
            reasons.append(QualityReason.LOW_BRIGHTNESS)
        if bright[i] > limits.max_brightness:
            reasons.append(QualityReason.HIGH_BRIGHTNESS)
        if contrast[i] < limits.min_contrast:
            reasons.append(QualityReason.LOW_CONTRAST)
        if abs(yaw[i]) > limits.max_yaw or abs(roll[i]) > limits.max_roll:
            reasons.append(QualityReason.EXTREME_POSE)
        out.append(Quality(float(sizes[i]), float(detections.scores[i]), float(sharp[i]), float(bright[i]),
                           float(contrast[i]), float(yaw[i]), float(roll[i]), tuple(reasons)))
    return out
