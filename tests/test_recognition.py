"""Templates on real faces: same person scores higher than different people."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from PIL import Image

from faceledger.errors import IncompatibleTemplates, ManyFaces, NoFace
from faceledger.matching.compare import Template, similarity
from faceledger.models.files import resolve
from faceledger.pipeline.align import align_all


def template(engine, path: Path) -> np.ndarray:
    analysis, i = engine.single_face(path)
    return analysis.templates[i]


def test_same_person_beats_different_people(engine, people):
    ex = people / "face_recognition_examples"
    obama1, obama2, biden = (template(engine, ex / n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    assert obama1.shape == (128,) and abs(np.linalg.norm(obama1) - 1) < 1e-5
    assert obama1 @ obama2 > obama1 @ biden + 0.2


def test_named_people_identified_from_other_photos(engine, people):
    """Every bbt character's photos are closer to their own other photos than to anyone else's."""
    root = people / "bbt"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    templates, labels = [], []
    for name in names:
        for f in sorted((root / name).iterdir()):
            analysis = engine.analyze(f)
            if len(analysis) == 0:
                continue
            templates.append(analysis.templates[analysis.detections.most_central(analysis.width, analysis.height)])
            labels.append(name)
    t, labels = np.stack(templates), np.array(labels)
    sims = t @ t.T
    np.fill_diagonal(sims, -2)
    nearest = labels[np.argmax(sims, axis=1)]
    assert len(labels) >= 30
    assert (nearest == labels).mean() >= 0.9


def test_grey_and_rgba_images_embed_like_colour(engine, people, tmp_path):
    path = people / "face_recognition_examples" / "obama.jpg"
    colour = template(engine, path)
    grey = tmp_path / "grey.png"
    Image.open(path).convert("L").save(grey)
    rgba = tmp_path / "rgba.png"
    Image.open(path).convert("RGBA").save(rgba)
    assert template(engine, grey) @ colour > 0.8
    assert template(engine, rgba) @ colour > 0.99


def test_batched_embedding_equals_single(engine, people):
    bgr = engine.decode(people / "bbt" / "bbt1.jpg")
    d = engine.detect(bgr)
    crops = align_all(bgr, d.landmarks)
    rec = engine.recognizer("sface")
    batched = rec.embed(crops)
    single = np.concatenate([rec.embed(crops[i : i + 1]) for i in range(len(crops))])
    assert np.allclose(batched, single, atol=1e-5)


def test_onnx_runtime_sface_matches_opencv_reference(engine, people):
    """The load-time rewrite (fp32 weights, PRelu as BatchNormalizations) keeps SFace's output."""
    bgr = engine.decode(people / "face_recognition_examples" / "obama.jpg")
    crop = align_all(bgr, engine.detect(bgr).landmarks[:1])
    ours = engine.recognizer("sface").embed(crop)[0]
    try:
        net = cv2.dnn.readNetFromONNX(str(resolve("sface").path), engine=cv2.dnn.ENGINE_CLASSIC)
    except (cv2.error, TypeError) as exc:
        pytest.skip(f"OpenCV cannot load the reference SFace here: {exc}")
    net.setInput(cv2.dnn.blobFromImage(crop[0], 1.0, (112, 112), (0, 0, 0), True, False))
    reference = net.forward().ravel()
    assert float(ours @ (reference / np.linalg.norm(reference))) > 0.9999


def test_prelu_rewrite_is_exact_on_real_faces(engine, people):
    """SFace with PRelu rewritten (a*x + (1-a)*Relu(x) as BatchNormalizations) equals ORT's own PRelu."""
    from faceledger.models.sface import OnnxRecognizer

    crops = []
    for path in sorted((people / "face_recognition_examples").glob("*.jpg"))[:8]:
        bgr = engine.decode(path)
        crops.append(align_all(bgr, engine.detect(bgr).landmarks))
    crops = np.concatenate(crops)
    assert len(crops) >= 5
    plain = OnnxRecognizer(resolve("sface"), rewrite_prelu=False)
    rewritten = engine.recognizer("sface").prepare(resolve("sface").path.read_bytes())
    ops = {n.op_type for n in onnx.load_from_string(rewritten).graph.node}
    assert "PRelu" not in ops and "BatchNormalization" in ops
    ours, reference = engine.recognizer("sface").embed(crops), plain.embed(crops)
    assert np.abs(ours - reference).max() < 1e-5


def test_accurate_profile_is_256d_and_separates(accurate_engine, people):
    ex = people / "face_recognition_examples"
    o1, o2, b = (template(accurate_engine, ex / n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    assert o1.shape == (256,)
    assert o1 @ o2 > o1 @ b + 0.2
    assert "dlib" in accurate_engine.model_id and "+flip" not in accurate_engine.model_id


def test_templates_of_different_models_are_never_compared(engine, accurate_engine):
    a = Template(np.ones(128, np.float32) / np.sqrt(128), engine.model_id)
    b = Template(np.ones(256, np.float32) / 16, accurate_engine.model_id)
    with pytest.raises(IncompatibleTemplates):
        similarity(a, b)


def test_single_face_refuses_none_and_many(engine, people, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), (200, 200, 200)).save(blank)
    with pytest.raises(NoFace):
        engine.single_face(blank)
    with pytest.raises(ManyFaces) as info:
        engine.single_face(people / "face_recognition_examples" / "two_people.jpg")
    assert info.value.details["faces"] == 2
    analysis, i = engine.single_face(people / "face_recognition_examples" / "two_people.jpg", face=1)
    assert i == 1 and analysis.templates.shape == (2, 128)
