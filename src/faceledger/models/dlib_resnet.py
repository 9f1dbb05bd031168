"""dlib's ResNet face recognizer (128-d), fed by dlib's own 5-point landmarks and face chips.

dlib places the five points and cuts the 150x150 chip (its author's pipeline, unchanged); the
network itself runs in ONNX Runtime, converted at load time from the same ``.dat`` weights
(:mod:`faceledger.models.dlib_onnx`: descriptors equal to dlib's to cosine > 0.9999, about 20x
faster than dlib's own CPU forward pass), so templates and model ids are those of dlib's network.
"""

from __future__ import annotations

import threading

import numpy as np

from faceledger.models.base import OnnxModel
from faceledger.models.detections import Detections
from faceledger.models.dlib_onnx import convert_bytes
from faceledger.models.files import ResolvedModel
from faceledger.models.sface import l2_normalize

CHIP_SIZE, CHIP_PADDING = 150, 0.25


class _ResnetGraph(OnnxModel):
    """The ResNet as an ONNX graph: uint8 RGB chips (N,150,150,3) in, dlib's descriptors out."""

    def prepare(self, raw: bytes) -> bytes:
        return convert_bytes(raw, str(self.path))


class DlibResnet:
    """dlib's author's pipeline: 5-point shape on our detector's box, 150x150 chip, ResNet."""

    dim = 128
    # its 150-pixel chip shows a face larger than the 112 template does: eyes 56 px apart (median of 200 LFW faces;
    # 64 at the 95th percentile) against 35.2, so a face needs 1.8x the template's pixels
    face_scale = 1.8

    def __init__(self, resnet: ResolvedModel, shape5: ResolvedModel, *, threads: int = 1, batch: int = 2,
                 device: str = "cpu") -> None:
        self.model = resnet
        self.shape5 = shape5
        self.batch = batch
        self.net = _ResnetGraph(resnet, threads=threads, device=device)
        self._lock = threading.Lock()
        self._loaded: tuple | None = None

    def load(self) -> None:
        _ = self._dlib
        self.net.load()

    @property
    def active_providers(self) -> list[str]:
        return self.net.active_providers

    @property
    def _dlib(self):
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    import dlib

                    self._loaded = (dlib, dlib.shape_predictor(str(self.shape5.path)))
        return self._loaded

    def chips(self, bgr: np.ndarray, detections: Detections) -> np.ndarray:
        dlib, predictor = self._dlib
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        shapes = dlib.full_object_detections()
        for x1, y1, x2, y2 in detections.boxes:
            shapes.append(predictor(rgb, dlib.rectangle(int(x1), int(y1), int(x2), int(y2))))
        if len(shapes) == 0:
            return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        return np.stack(dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N,150,150,3) RGB uint8 chips -> (N,128) unit vectors, ``batch`` chips per run."""
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self.net.run_batched(np.asarray(chips, np.uint8), self.batch))
