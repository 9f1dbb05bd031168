"""One small base for every ONNX model: lazy load under a lock, one session, ``run``."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from faceledger.errors import ModelFileError
from faceledger.models.files import ResolvedModel
from faceledger.models.providers import execution_providers


class OnnxModel:
    """An ONNX Runtime session made on first use from a checked model file."""

    def __init__(self, model: ResolvedModel, *, threads: int = 1, device: str = "cpu") -> None:
        self.model = model
        self.threads = threads
        self.providers = execution_providers(device)
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.model.path

    def prepare(self, raw: bytes) -> bytes:
        """Rewrite the shipped file's bytes before loading (see ``onnx_graph``)."""
        return raw

    @property
    def session(self) -> ort.InferenceSession:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load()
        return self._session

    def _load(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(self.prepare(self.path.read_bytes()), options, providers=self.providers)
        except Exception as exc:  # onnx / onnxruntime raise many types for a bad file
            raise ModelFileError(f"model file {self.path} could not be loaded: {exc}", file=str(self.path)) from None

    def load(self) -> None:
        """Load now (at start-up) instead of on the first request."""
        _ = self.session

    @property
    def active_providers(self) -> list[str]:
        """The providers the loaded session actually uses (ONNX Runtime falls back to the CPU when the GPU's cannot
        start), for ``faceledger models``."""
        return list(self.session.get_providers())

    def run(self, feed: np.ndarray) -> list[np.ndarray]:
        session = self.session
        return session.run(None, {session.get_inputs()[0].name: feed})

    def run_batched(self, feed: np.ndarray, batch: int) -> np.ndarray:
        """The first output for ``feed``, run ``batch`` rows at a time and concatenated."""
        return np.concatenate([self.run(np.ascontiguousarray(feed[i:i + batch]))[0] for i in range(0, len(feed), batch)])
