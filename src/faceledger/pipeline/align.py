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
    if matrix is None:  # degenerate landmarks (all points equal, or not finite): plain least squares
        matrix = _least_squares_similarity(landmarks, template)
    return matrix


def _least_squares_similarity(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[[a, -b, tx], [b, a, ty]] minimising the squared distance of the mapped points to ``target``; all zeros
    (a black crop) when the points say nothing (OpenCV 5 has no plain least-squares method here)."""
    pts = np.nan_to_num(points.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    rows = np.concatenate([np.column_stack([pts[:, 0], -pts[:, 1], np.ones(len(pts)), np.zeros(len(pts))]),
                           np.column_stack([pts[:, 1], pts[:, 0], np.zeros(len(pts)), np.ones(len(pts))])])
    a, b, tx, ty = np.linalg.lstsq(rows, np.concatenate([target[:, 0], target[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]], np.float64)


# A bilinear warp that shrinks by more than 2 skips pixels (aliasing): a face larger than that is first shrunk
# by area averaging, around the face only, to exactly this scale. Measured on one face filmed at 480p, 720p and
# 1080p (scales 0.76, 0.51, 0.34): the 1080p template's cosine to the others rose from 0.969 / 0.985 to 0.991 /
# 0.994. It changes 4 of LFW's 13,233 crops (scales 0.46-0.50), and no LFW figure (re-run 2026-11-28).
MIN_WARP_SCALE = 0.5


def align(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The aligned ``size x size`` BGR crop of one face."""
    matrix = similarity_transform(landmarks, size)
    scale = _scale(matrix)
    if 0 < scale < MIN_WARP_SCALE:
        bgr, matrix = _shrunk_around_crop(bgr, matrix, MIN_WARP_SCALE / scale, size)
    return cv2.warpAffine(bgr, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _shrunk_around_crop(bgr: np.ndarray, matrix: np.ndarray, factor: float, size: int):
    """The part of the image the crop shows, shrunk ``factor`` times by area averaging, and the matrix onto it."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)) - 2, 0).astype(int)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)) + 2, [bgr.shape[1], bgr.shape[0]]).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies outside the image: nothing to shrink
        return bgr, matrix
    region = bgr[y0:y1, x0:x1]
    width, height = max(1, round(region.shape[1] / factor)), max(1, round(region.shape[0] / factor))
    small = cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)
    fx, fy = width / region.shape[1], height / region.shape[0]
    # pixel centres (OpenCV's convention in both calls): shrunk pixel q is image point (q + 0.5) / f - 0.5 + origin
    f = np.array([fx, fy])
    linear = matrix[:, :2] / f
    return small, np.hstack([linear, (matrix[:, :2] @ (np.array([x0, y0]) + 0.5 / f - 0.5) + matrix[:, 2])[:, None]])


def align_all(bgr: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned crops of every face: (N, size, size, 3) BGR uint8."""
    if len(landmarks) == 0:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align(bgr, lm, size) for lm in landmarks])


def crop_scale(landmarks: np.ndarray) -> float:
    """Crop pixels per image pixel of a face's 112x112 alignment (above 1: the crop enlarges the face)."""
    return _scale(similarity_transform(landmarks))


def _scale(matrix: np.ndarray) -> float:
    return float(np.hypot(matrix[0, 0], matrix[1, 0]))
