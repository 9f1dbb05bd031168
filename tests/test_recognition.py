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


# ---------------------------------------------------------------- large photos: reduced JPEG decoding


def _jpeg(img: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def _framed(face: Image.Image, face_height: int, frame=(3000, 2000)) -> bytes:
    """The photo scaled to ``face_height`` px tall, in the middle of a grey frame."""
    img = face.resize((face.width * face_height // face.height, face_height), Image.LANCZOS)
    canvas = Image.new("RGB", frame, (128, 128, 128))
    canvas.paste(img, ((frame[0] - img.width) // 2, (frame[1] - img.height) // 2))
    return _jpeg(canvas)


@pytest.fixture(scope="module")
def obama(people) -> Image.Image:
    return Image.open(people / "face_recognition_examples" / "obama.jpg").convert("RGB")


def _engines(settings, profile):
    from faceledger.pipeline.engine import FaceEngine

    return (FaceEngine(settings.model_copy(update={"reduced_decode": on}), profile) for on in (True, False))


def _whole_decodes(monkeypatch) -> list:
    from faceledger.imaging import Decoded

    calls, original = [], Decoded.whole
    monkeypatch.setattr(Decoded, "whole", lambda self: calls.append(self.bgr.shape) or original(self))
    return calls


def test_a_large_photo_is_analysed_reduced_with_whole_image_coordinates(settings, obama, monkeypatch):
    """A 3000 x 2000 photo whose face fills much of it (a kiosk, a phone at arm's length) is decoded at 1/4: the
    same face, at the same place in the whole image's pixels, with nearly the same template (0.991 measured)."""
    reduced, whole = _engines(settings, "fast")
    data = _framed(obama, 1900)
    calls = _whole_decodes(monkeypatch)
    a = reduced.analyze(data)
    assert calls == []  # never decoded whole
    b = whole.analyze(data)
    assert (a.width, a.height) == (b.width, b.height) == (3000, 2000) and len(a) == len(b) == 1
    assert np.abs(a.detections.boxes - b.detections.boxes).max() < 0.02 * b.detections.widths[0]
    assert np.abs(a.detections.landmarks - b.detections.landmarks).max() < 0.02 * b.detections.widths[0]
    assert float(a.templates[0] @ b.templates[0]) > 0.98
    assert a.quality[0].passed == b.quality[0].passed and abs(a.quality[0].face_px - b.quality[0].face_px) < 20


def test_a_small_face_in_a_large_photo_is_analysed_exactly_as_if_decoded_whole(settings, obama, monkeypatch):
    reduced, whole = _engines(settings, "fast")
    data = _framed(obama, 300)  # the face ~35 px between the eyes at 1/4: enlarged into the 112 crop
    calls = _whole_decodes(monkeypatch)
    a, b = reduced.analyze(data), whole.analyze(data)
    assert calls == [(500, 750, 3)]  # found at 1/4, then decoded whole
    assert len(a) == len(b) >= 1 and np.array_equal(a.detections.boxes, b.detections.boxes)
    assert np.array_equal(a.templates, b.templates) and a.quality == b.quality


def test_a_large_photo_without_a_face_is_looked_at_whole_too(settings, monkeypatch):
    reduced, whole = _engines(settings, "fast")
    data = _jpeg(Image.new("RGB", (3000, 2000), (90, 120, 150)))
    calls = _whole_decodes(monkeypatch)
    assert len(reduced.analyze(data)) == len(whole.analyze(data)) == 0 and calls == [(500, 750, 3)]


def test_the_profiles_crops_decide_when_the_whole_image_is_needed(settings, obama, monkeypatch):
    """dlib's chip shows the face 1.8x larger than SFace's 112 crop: a face large enough at 1/4 for `fast` needs
    the whole image for `accurate`."""
    from faceledger.pipeline.align import crop_scale

    fast, _ = _engines(settings, "fast")
    accurate, _ = _engines(settings, "accurate")
    data = _framed(obama, 1900)
    from faceledger.imaging import decode_at_least

    view = decode_at_least(data, settings.detect_max_side)
    scale = crop_scale(fast.detect(view.bgr).landmarks[0])
    assert view.reduced and 1 / 1.8 < scale < 1, scale  # the case this test is about
    calls = _whole_decodes(monkeypatch)
    assert len(fast.analyze(data)) == 1 and calls == []
    assert len(accurate.analyze(data)) == 1 and len(calls) == 1


# ---------------------------------------------------------------- alignment of large faces


def test_alignment_of_faces_up_to_twice_the_crop_is_the_plain_warp(engine, data_dir):
    """Faces up to twice the crop's size (all but 4 of LFW's 13,233) are aligned exactly as before: one bilinear
    warp."""
    from faceledger.pipeline.align import align, crop_scale, similarity_transform

    for path in sorted((data_dir / "lfw").glob("A*/*_0001.jpg"))[:20]:
        bgr = engine.decode(path)
        for lm in engine.detect(bgr).landmarks:
            assert crop_scale(lm) >= 0.5
            plain = cv2.warpAffine(bgr, similarity_transform(lm), (112, 112), flags=cv2.INTER_LINEAR)
            assert np.array_equal(align(bgr, lm), plain)


def test_a_large_face_is_aligned_without_aliasing_whatever_the_resolution(engine, people):
    """The same face filmed at 480p, 720p and 1080p gives nearly the same template: a face more than twice the
    crop's size is shrunk by area averaging before the warp (a plain bilinear warp skips pixels: 0.969 between
    the 1080p and 480p templates before, measured)."""
    from faceledger.pipeline.align import align, crop_scale, similarity_transform

    templates, scales = {}, {}
    for r in ("480p", "720p", "1080p"):
        bgr = engine.decode(people / "face_recognition_examples" / f"obama-{r}.jpg")
        lm = engine.detect(bgr).landmarks[0]
        scales[r] = crop_scale(lm)
        templates[r] = engine.embed(bgr, engine.detect(bgr)[0])[0]
    assert scales["1080p"] < 0.5 < scales["720p"]  # the 1080p face is the one shrunk first
    assert templates["1080p"] @ templates["480p"] > 0.985 and templates["1080p"] @ templates["720p"] > 0.985
    # the crop is the one of the image shrunk by area averaging first, computed around the face only
    bgr = engine.decode(people / "face_recognition_examples" / "obama-1080p.jpg")
    lm = engine.detect(bgr).landmarks[0]
    f = 2 * crop_scale(lm)
    small = cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
    # pixel centres: point p of the image is (p + 0.5) * f - 0.5 in the shrunk one
    lm_small = (lm + 0.5) * np.array([small.shape[1] / bgr.shape[1], small.shape[0] / bgr.shape[0]], np.float32) - 0.5
    reference = cv2.warpAffine(small, similarity_transform(lm_small), (112, 112), flags=cv2.INTER_LINEAR)
    assert np.abs(align(bgr, lm).astype(int) - reference).mean() < 1.8  # 2.1 with the half-pixel shift of edges
    # a face partly outside the picture: what lies outside is black, as with the plain warp
    cut = bgr[:, int(lm[:, 0].mean()):]
    padded = np.zeros_like(bgr)
    padded[:, bgr.shape[1] - cut.shape[1]:] = cut
    shift = np.array([bgr.shape[1] - cut.shape[1], 0], np.float32)
    half = align(np.ascontiguousarray(cut), lm - shift)
    assert half.shape == (112, 112, 3) and np.abs(half.astype(int) - align(padded, lm)).mean() < 2.5
    assert half[:, :40].max() == 0  # the left half of the face is outside: black


def test_degenerate_landmarks_give_a_crop_not_an_error():
    """All five points equal, or not finite: no transform can be estimated; the crop is still made (OpenCV 5
    refused the plain least-squares fallback with an untyped error)."""
    from faceledger.pipeline.align import align

    image = np.full((300, 300, 3), 100, np.uint8)
    for landmarks in (np.full((5, 2), 50, np.float32), np.full((5, 2), np.nan, np.float32)):
        crop = align(image, landmarks)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
