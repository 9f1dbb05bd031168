"""dlib's ResNet converted to ONNX from its own .dat file gives dlib's descriptors on real faces."""

from __future__ import annotations

import time
from pathlib import Path

import dlib
import numpy as np
import onnxruntime as ort
import pytest

from faceledger.errors import ModelFileError
from faceledger.models import dlib_onnx
from faceledger.models.files import resolve

PEOPLE = 12  # LFW people, one image each, spread over the alphabet


@pytest.fixture(scope="module")
def onnx_model() -> bytes:
    started = time.perf_counter()
    model = dlib_onnx.convert(resolve("dlib_resnet").path)
    assert time.perf_counter() - started < 10, "the conversion must take seconds at most"
    return model


@pytest.fixture(scope="module")
def lfw_chips(data_dir: Path) -> np.ndarray:
    """150x150 RGB chips the way faceledger.models.dlib_resnet makes them: 5-point shape, get_face_chips."""
    people = sorted(p for p in (data_dir / "lfw").iterdir() if p.is_dir())
    assert len(people) >= PEOPLE, f"LFW at {data_dir / 'lfw'} holds {len(people)} people"
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(resolve("dlib_shape5").path))
    chips = []
    for person in people[:: len(people) // PEOPLE][:PEOPLE]:
        rgb = dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0]))
        boxes = detector(rgb, 1)  # LFW: 250x250 with the face in the centre; the box nearest the centre
        box = min(boxes, key=lambda b: abs(b.center().x - 125) + abs(b.center().y - 125)) if len(boxes) else \
            dlib.rectangle(75, 75, 175, 175)
        shapes = dlib.full_object_detections()
        shapes.append(predictor(rgb, box))
        chips.append(dlib.get_face_chips(rgb, shapes, size=150, padding=0.25)[0])
    return np.stack(chips)


def test_onnx_equals_dlib_on_real_face_chips(onnx_model, lfw_chips):
    net = dlib.face_recognition_model_v1(str(resolve("dlib_resnet").path))
    expected = np.array([np.asarray(v) for v in net.compute_face_descriptor(list(lfw_chips))], np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("chips", "tensor(uint8)", [150, 150, 3])
    assert (out.name, out.shape[1:]) == ("descriptors", [128])

    got = session.run(None, {"chips": lfw_chips})[0]
    one = session.run(None, {"chips": lfw_chips[:1]})[0]
    assert got.shape == expected.shape == (len(lfw_chips), 128) and got.dtype == np.float32
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.9999, f"cosine per chip: {np.round(cosine, 6)}"
    assert np.abs(got - expected).max() < 1e-4  # not normalised: dlib's own scale
    assert np.allclose(one[0], got[0], atol=1e-5)  # batch size does not change a descriptor


def test_the_accurate_profile_embeds_with_the_converted_graph(lfw_chips):
    """The engine's dlib recognizer runs the ONNX graph and still gives dlib's templates (same model id)."""
    from faceledger.config import Settings
    from faceledger.pipeline.engine import FaceEngine

    engine = FaceEngine(Settings(), "accurate")
    recognizer = engine.recognizer("dlib")
    net = dlib.face_recognition_model_v1(str(resolve("dlib_resnet").path))
    expected = np.array([np.asarray(v) for v in net.compute_face_descriptor(list(lfw_chips))], np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = recognizer.embed_chips(lfw_chips)
    assert got.shape == (len(lfw_chips), 128)
    assert (got * expected).sum(1).min() > 0.9999
    assert recognizer.active_providers == ["CPUExecutionProvider"]
    assert "dlib_face_recognition_resnet_model_v1@" in engine.model_id  # templates stay comparable


def test_cut_or_foreign_files_are_refused_with_their_name(tmp_path):
    data = resolve("dlib_resnet").path.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.dat"):
        dlib_onnx.convert(cut)
    other = tmp_path / "shape5.dat"
    other.write_bytes(resolve("dlib_shape5").path.read_bytes())
    with pytest.raises(ModelFileError, match="shape5.dat"):
        dlib_onnx.convert(other)
    assert not list(tmp_path.glob("*.onnx"))
