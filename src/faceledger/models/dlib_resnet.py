"""dlib's ResNet face recognizer (128-d), fed by dlib's own 5-point landmarks and face chips."""

from __future__ import annotations

import threading

import numpy as np

from faceledger.models.detections import Detections
from faceledger.models.files import ResolvedModel
from faceledger.models.sface import l2_normalize

CHIP_SIZE, CHIP_PADDING = 150, 0.25


class DlibResnet:
    """dlib's author's pipeline: 5-point shape on our detector's box, 150x150 chip, ResNet."""

    dim = 128

    def __init__(self, resnet: ResolvedModel, shape5: ResolvedModel) -> None:
        self.model = resnet
        self.shape5 = shape5
        self._lock = threading.Lock()
        self._loaded: tuple | None = None

    def load(self) -> None:
        _ = self._models

    @property
    def _models(self):
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    import dlib

                    self._loaded = (
                        dlib,
                        dlib.shape_predictor(str(self.shape5.path)),
                        dlib.face_recognition_model_v1(str(self.model.path)),
                    )
        return self._loaded

    def chips(self, bgr: np.ndarray, detections: Detections) -> np.ndarray:
        dlib, predictor, _ = self._models
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        shapes = dlib.full_object_detections()
        for x1, y1, x2, y2 in detections.boxes:
            shapes.append(predictor(rgb, dlib.rectangle(int(x1), int(y1), int(x2), int(y2))))
        if len(shapes) == 0:
            return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        return np.stack(dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N,150,150,3) RGB chips -> (N,128) unit vectors."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        _, _, net = self._models
        vectors = net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return l2_normalize(np.asarray([np.asarray(v) for v in vectors], np.float32))
