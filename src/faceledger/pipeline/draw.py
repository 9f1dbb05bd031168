"""Annotated copies of images: boxes, landmarks and quality verdicts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def annotate_file(bgr: np.ndarray, analysis, path: Path) -> Path:
    img = bgr.copy()
    thickness = max(1, round(max(img.shape[:2]) / 400))
    for i in range(len(analysis)):
        x1, y1, x2, y2 = analysis.detections.boxes[i].astype(int)
        ok = analysis.quality[i].passed
        colour = (0, 200, 0) if ok else (0, 140, 255)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness)
        for x, y in analysis.detections.landmarks[i].astype(int):
            cv2.circle(img, (x, y), thickness + 1, (255, 0, 0), -1)
        label = f"{i}: {analysis.detections.scores[i]:.2f}" + ("" if ok else " " + ",".join(
            r.value for r in analysis.quality[i].reasons))
        cv2.putText(img, label, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path
