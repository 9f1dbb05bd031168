"""Quality checks: each poor-face condition is named, good faces pass."""

from __future__ import annotations

import cv2
import numpy as np

from faceledger.pipeline.quality import QualityReason


def reasons(engine, bgr):
    analysis = engine.analyze(bgr, embed=False)
    assert len(analysis) >= 1
    return analysis.quality[0]


def test_good_portrait_passes(engine, people):
    q = engine.analyze(people / "face_recognition_examples" / "obama.jpg", embed=False).quality[0]
    assert q.passed, q.reasons
    assert q.face_px > 150 and q.confidence > 0.9 and abs(q.yaw) < 20


def test_blur_small_dark_bright(engine, people):
    bgr = engine.decode(people / "face_recognition_examples" / "obama-480p.jpg")
    assert reasons(engine, bgr).passed
    blurred = cv2.GaussianBlur(bgr, (0, 0), 6)
    assert QualityReason.LOW_SHARPNESS in reasons(engine, blurred).reasons
    small = cv2.resize(bgr, None, fx=0.18, fy=0.18, interpolation=cv2.INTER_AREA)
    assert QualityReason.SMALL_FACE in reasons(engine, small).reasons
    dark = (bgr.astype(np.float32) * 0.15).astype(np.uint8)
    assert QualityReason.LOW_BRIGHTNESS in reasons(engine, dark).reasons
    bright = np.clip(bgr.astype(np.float32) * 0.3 + 200, 0, 255).astype(np.uint8)
    assert {QualityReason.HIGH_BRIGHTNESS, QualityReason.LOW_CONTRAST} & set(reasons(engine, bright).reasons)


def test_limits_are_configurable(people, settings):
    from faceledger.pipeline.engine import FaceEngine

    strict = FaceEngine(settings.model_copy(update={"min_face_px": 10_000}), "fast")
    q = strict.analyze(people / "face_recognition_examples" / "obama.jpg", embed=False).quality[0]
    assert q.reasons == (QualityReason.SMALL_FACE,)


def test_profile_face_is_extreme_pose(engine, people):
    """A nose tip out beyond one eye means a face turned far to the side."""
    bgr = engine.decode(people / "face_recognition_examples" / "obama.jpg")
    frontal = reasons(engine, bgr)
    d = engine.detect(bgr)
    lm = d.landmarks.copy()
    lm[0, 2, 0] = lm[0, 1, 0] + 0.2 * (lm[0, 1, 0] - lm[0, 0, 0])  # nose pushed past the right eye
    from faceledger.pipeline.quality import pose_from_landmarks

    yaw, _ = pose_from_landmarks(lm)
    assert abs(frontal.yaw) < 15 and abs(yaw[0]) > 45


def test_tilted_face_reports_extreme_pose(engine, people, settings):
    """EXTREME_POSE is reported past the roll limit, and not for the same face upright."""
    from faceledger.pipeline.engine import FaceEngine

    strict = FaceEngine(settings.model_copy(update={"max_roll": 10.0}), "fast")
    bgr = strict.decode(people / "face_recognition_examples" / "obama.jpg")
    frontal = reasons(strict, bgr)
    assert abs(frontal.roll) < 5 and QualityReason.EXTREME_POSE not in frontal.reasons, frontal
    h, w = bgr.shape[:2]
    # the detector's eye line follows a 40 degree tilt only part of the way (about 18 degrees here)
    tilted = cv2.warpAffine(bgr, cv2.getRotationMatrix2D((w / 2, h / 2), 40, 1.0), (w, h),
                            borderMode=cv2.BORDER_REPLICATE)
    q = reasons(strict, tilted)
    assert abs(q.roll) > 10 and QualityReason.EXTREME_POSE in q.reasons, q
    assert QualityReason.EXTREME_POSE not in reasons(engine, tilted).reasons  # within the default 45 degrees
