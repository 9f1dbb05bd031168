"""Alignment: the 5-point similarity transform onto the standard 112x112 template, once."""

from __future__ import annotations

import cv2
import numpy as np

# ArcFace / SFace reference points for a 112x112 crop, in Detections landmark order.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """2x3 matrix mapping image points onto the template (least squares, no shear)."""
    template = TEMPLATE_112 * (size / 112.0)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:  # degenerate landmarks (all points equal); fall back to plain least squares
        matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template, method=0)
    return matrix


def align(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned ``size x size`` BGR crop of one face."""
    return cv2.warpAffine(bgr, similarity_transform(landmarks, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_all(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned crops of every face: (N, size, size, 3) BGR uint8."""
    if len(landmarks) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align(bgr, lm, size) for lm in landmarks])
