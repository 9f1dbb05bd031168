"""SFace (OpenCV model zoo, 2021dec) and other ArcFace-style 112x112 ONNX recognizers."""

from __future__ import annotations

import numpy as np

from faceledger.models.base import OnnxModel
from faceledger.models.files import ResolvedModel
from faceledger.models.onnx_graph import prepare


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class OnnxRecognizer(OnnxModel):
    """Aligned 112x112 crops in, one L2-normalised vector per crop out.

    SFace normalises its input inside the graph (RGB, 0..255), so its mean is 0 and its
    std 1; ArcFace-style files usually want mean 127.5 and std 127.5.
    """

    input_size = 112
    face_scale = 1.0  # source pixels a face needs per pixel of the 112 template to be seen in full (1: the crop's own)

    def __init__(self, model: ResolvedModel, *, threads: int = 1, batch: int = 2,
                 mean: float = 0.0, std: float = 1.0, rewrite_prelu: bool = True, device: str = "cpu") -> None:
        super().__init__(model, threads=threads, device=device)
        self.batch = batch
        self.mean, self.std = mean, std
        self.rewrite_prelu = rewrite_prelu

    def prepare(self, raw: bytes) -> bytes:
        return prepare(raw, free_input_dims=(0,), rewrite_prelu=self.rewrite_prelu)

    @property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N,112,112,3) BGR uint8 crops -> (N,D) float32 unit vectors, ``batch`` faces per run."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        blob = crops[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
        if self.mean or self.std != 1.0:
            blob = (blob - self.mean) / self.std
        return l2_normalize(self.run_batched(blob, self.batch).reshape(len(crops), -1))
