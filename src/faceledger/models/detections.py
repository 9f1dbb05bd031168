"""``Detections``: the detector's typed output, every face of one image as arrays, not a list of little dicts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """N faces: ``boxes`` (N,4) x1,y1,x2,y2; ``landmarks`` (N,5,2); ``scores`` (N,).

    Landmarks are, in image terms: left eye, right eye, nose tip, left mouth corner,
    right mouth corner (the subject's right eye is the image's left eye).
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: int | slice | np.ndarray) -> Detections:
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        return Detections(self.boxes[index], self.landmarks[index], self.scores[index])

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    @property
    def areas(self) -> np.ndarray:
        return self.widths * self.heights

    @property
    def centers(self) -> np.ndarray:
        return (self.boxes[:, :2] + self.boxes[:, 2:]) / 2

    def mapped(self, scale: float, offset: tuple[float, float], size: tuple[int, int]) -> Detections:
        """The same faces in another image: ``x * scale + offset`` (a reduced decode's whole), boxes clipped to
        that image's ``size``."""
        shift = np.asarray(offset, np.float32)
        boxes = self.boxes * np.float32(scale) + np.concatenate([shift, shift])
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, size[0])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, size[1])
        return Detections(boxes, self.landmarks * np.float32(scale) + shift, self.scores)

    def order_by_area(self) -> Detections:
        return self[np.argsort(-self.areas, kind="stable")]

    def most_central(self, width: int, height: int) -> int:
        """Index of the face nearest the image centre, relative to its size (for one-face photos)."""
        distance = np.linalg.norm(self.centers - np.array([width / 2, height / 2]), axis=1)
        return int(np.argmin(distance / np.sqrt(np.maximum(self.areas, 1.0))))
