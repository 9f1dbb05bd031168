"""Where ONNX Runtime runs the models: the CPU (the default, always there) or a CUDA GPU when the installed
onnxruntime has the CUDA execution provider (``pip install faceledger[gpu]``: the onnxruntime-gpu wheel)."""

from __future__ import annotations

import onnxruntime as ort

from faceledger.errors import ConfigurationError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
DEVICES = ("auto", "cpu", "cuda")


def execution_providers(device: str, available: list[str] | None = None) -> list[str]:
    """The providers to ask for, best first: ``cpu`` the CPU only; ``cuda`` the GPU (an error when this onnxruntime
    has no CUDA provider); ``auto`` the GPU when there is one, else the CPU. The CPU always closes the list, so an
    operator the GPU provider lacks still runs."""
    available = ort.get_available_providers() if available is None else available
    if device not in DEVICES:
        raise ConfigurationError(f"the device is one of {', '.join(DEVICES)}, not {device!r}", device=device)
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ConfigurationError("FACELEDGER_DEVICE=cuda, but this onnxruntime has no CUDA execution provider: "
                                 "install onnxruntime-gpu (pip install faceledger[gpu]) in place of onnxruntime",
                                 available=available)
    return [CPU]
