"""Detection on real photos: counts, orientation, any input size, arrays not dicts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceledger.models.detections import Detections
from faceledger.models.files import resolve


def test_two_person_photo_gives_two_faces(engine, people):
    analysis = engine.analyze(people / "face_recognition_examples" / "two_people.jpg", embed=False)
    d = analysis.detections
    assert isinstance(d, Detections) and len(d) == 2
    assert d.boxes.shape == (2, 4) and d.landmarks.shape == (2, 5, 2) and d.scores.shape == (2,)
    assert (d.scores > 0.8).all()
    # the two people stand side by side: their boxes do not overlap
    left, right = sorted(d.boxes.tolist(), key=lambda b: b[0])
    assert left[2] < right[0]


def test_group_still_finds_several_faces(engine, people):
    d = engine.analyze(people / "bbt" / "bbt1.jpg", embed=False).detections
    assert len(d) >= 3
    assert np.all(np.diff(d.areas) <= 0)  # ordered largest first


def test_exif_rotated_mugshot_is_upright(engine, people):
    upright = engine.analyze(people / "meds" / "face_meds-aa-S001-01-exif-rotation.jpg", embed=False)
    assert len(upright) == 1
    lm = upright.detections.landmarks[0]
    eyes_y, mouth_y = lm[:2, 1].mean(), lm[3:, 1].mean()
    assert eyes_y < lm[2, 1] < mouth_y  # eyes above nose above mouth: the face is upright
    assert abs(upright.quality[0].roll) < 15


def test_rotated_40_degrees_reports_roll(engine, people):
    """The MEDS sample shows one man twice: upright, and rotated by 40 degrees."""
    analysis = engine.analyze(people / "meds" / "face_meds-af-S419-01_40deg.jpg")
    assert len(analysis) == 2
    rolls = sorted(abs(q.roll) for q in analysis.quality)
    assert rolls[0] < 10 and rolls[1] > 15  # the tilted face is seen as tilted
    assert float(analysis.templates[0] @ analysis.templates[1]) > 0.6  # and alignment undoes the tilt


def test_same_face_at_any_resolution(engine, people):
    boxes = {}
    for name in ("obama-240p.jpg", "obama-480p.jpg", "obama-720p.jpg", "obama-1080p.jpg"):
        a = engine.analyze(people / "face_recognition_examples" / name, embed=False)
        assert len(a) == 1, name
        boxes[name] = a.detections.boxes[0] / np.array([a.width, a.height, a.width, a.height])
    ref = boxes["obama-240p.jpg"]
    for name, b in boxes.items():  # the box maps back to the same place relative to the image
        assert np.abs(b - ref).max() < 0.03, name


def test_no_face_in_blank_or_noise(engine):
    assert len(engine.detect(np.full((480, 640, 3), 128, np.uint8))) == 0
    noise = np.random.default_rng(1).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    assert len(engine.detect(noise)) == 0
    assert len(engine.detect(np.zeros((5, 7, 3), np.uint8))) == 0  # tiny images do not crash


def test_detections_agree_with_opencv_reference(engine, people):
    """Our ONNX Runtime YuNet (decoded in numpy) finds what OpenCV's own FaceDetectorYN finds."""
    bgr = engine.decode(people / "face_recognition_examples" / "two_people.jpg")
    ours = engine.detect(bgr)
    path = str(resolve("yunet").path)
    try:
        reference = cv2.FaceDetectorYN.create(path, "", (bgr.shape[1], bgr.shape[0]), 0.6, 0.3, 5000)
        _, faces = reference.detect(bgr)
    except cv2.error as exc:
        pytest.skip(f"OpenCV cannot run the reference detector here: {exc}")
    assert faces is not None and len(faces) == len(ours)
    ref_boxes = np.array(sorted(faces[:, :4].tolist()))
    our_boxes = np.array(sorted((np.c_[ours.boxes[:, :2], ours.boxes[:, 2:] - ours.boxes[:, :2]]).tolist()))
    assert np.abs(ref_boxes - our_boxes).max() < 0.02 * bgr.shape[1]
