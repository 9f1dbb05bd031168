"""YuNet face detector (OpenCV model zoo, 2023mar): boxes, 5 landmarks and a score."""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceledger.models.base import OnnxModel
from faceledger.models.detections import Detections
from faceledger.models.onnx_graph import prepare

STRIDES = (8, 16, 32)


class YuNet(OnnxModel):
    def prepare(self, raw: bytes) -> bytes:
        return prepare(raw, free_input_dims=(2, 3))

    def detect(
        self, bgr: np.ndarray, *, score_threshold: float = 0.6, nms_threshold: float = 0.3,
        max_side: int = 640, upscale: float = 1.0, max_faces: int = 50,
    ) -> Detections:
        """Detect faces in a BGR image of any size; coordinates are in that image's pixels."""
        height, width = bgr.shape[:2]
        scale = min(max_side / max(height, width), upscale) if max(height, width) * upscale > max_side else upscale
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = bgr if (new_w, new_h) == (width, height) else cv2.resize(
            bgr, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        pad_w, pad_h = 32 * math.ceil(new_w / 32), 32 * math.ceil(new_h / 32)
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :new_h, :new_w] = resized.transpose(2, 0, 1)
        outputs = dict(zip((o.name for o in self.session.get_outputs()), self.run(blob)))
        boxes, landmarks, scores = self._decode(outputs, pad_w, pad_h, score_threshold)
        if len(scores) == 0:
            return Detections.empty()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold, nms_threshold, top_k=max_faces)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)[:max_faces]
        sx, sy = width / new_w, height / new_h
        boxes = boxes[keep] * np.array([sx, sy, sx, sy], np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        landmarks = landmarks[keep] * np.array([sx, sy], np.float32)
        return Detections(boxes.astype(np.float32), landmarks.astype(np.float32), scores[keep].astype(np.float32))

    @staticmethod
    def _decode(outputs: dict[str, np.ndarray], pad_w: int, pad_h: int, threshold: float):
        all_boxes, all_kps, all_scores = [], [], []
        for stride in STRIDES:
            cols = pad_w // stride
            cls = outputs[f"cls_{stride}"][0, :, 0].clip(0, 1)
            obj = outputs[f"obj_{stride}"][0, :, 0].clip(0, 1)
            score = np.sqrt(cls * obj)
            idx = np.nonzero(score >= threshold)[0]
            if idx.size == 0:
                continue
            grid = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)
            bbox = outputs[f"bbox_{stride}"][0, idx]
            kps = outputs[f"kps_{stride}"][0, idx].reshape(-1, 5, 2)
            centre = (grid + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:]) * stride
            all_boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            all_kps.append((kps + grid[:, None, :]) * stride)
            all_scores.append(score[idx])
        if not all_scores:
            return np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros((0,))
        return np.concatenate(all_boxes), np.concatenate(all_kps), np.concatenate(all_scores)
