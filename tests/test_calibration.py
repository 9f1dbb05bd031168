"""Calibration: score <-> FMR on a known distribution, and the decision at a target FMR."""

from __future__ import annotations

import numpy as np
import pytest

from faceledger.matching.calibration import Calibration, NotCalibrated, load_calibration
from faceledger.matching.compare import Template, compare


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.0, 0.1, 1_000_000)
    genuine = rng.normal(0.7, 0.1, 10_000)
    return Calibration.build("test-model", impostor, genuine, "synthetic normal scores")


def test_threshold_matches_normal_quantiles(calibration):
    # P(Z >= z): 1e-2 -> 2.326, 1e-3 -> 3.090, 1e-4 -> 3.719 standard deviations
    for fmr, z in ((1e-2, 2.326), (1e-3, 3.090), (1e-4, 3.719)):
        assert calibration.threshold(fmr) == pytest.approx(0.1 * z, abs=0.006)


def test_score_to_fmr_round_trip(calibration):
    for fmr in (3e-2, 1e-3, 2e-4, 5e-5):
        assert calibration.fmr(calibration.threshold(fmr))[0] == pytest.approx(fmr, rel=0.15)
    assert calibration.resolution == pytest.approx(30 / 1_000_000)  # the rule of 30
    assert calibration.fmr(10.0) == (calibration.resolution, True)  # beyond what was measured: a bound
    with pytest.raises(NotCalibrated):
        calibration.threshold(1e-5)


def test_saved_and_loaded(calibration, tmp_path):
    calibration.save(tmp_path / "calibrations")
    loaded = load_calibration("test-model", tmp_path)
    assert loaded is not None and loaded.threshold(1e-3) == pytest.approx(calibration.threshold(1e-3), abs=1e-5)
    assert load_calibration("another-model", tmp_path) is None


def test_decision_at_target_fmr(calibration):
    a = Template(np.array([1.0, 0.0], np.float32), "test-model")
    close = Template(np.array([0.8, 0.6], np.float32), "test-model")  # cosine 0.8
    far = Template(np.array([0.2, 0.98], np.float32), "test-model")  # cosine 0.2
    yes, no = compare(a, close, calibration, 1e-4), compare(a, far, calibration, 1e-4)
    assert yes.match is True and no.match is False
    assert yes.fmr < 1e-4 < no.fmr
    with pytest.raises(NotCalibrated):
        compare(a, close, None, 1e-4)


def test_packaged_calibrations_exist_for_both_profiles(engine, accurate_engine):
    for e in (engine, accurate_engine):
        cal = load_calibration(e.model_id)
        assert cal is not None, f"no packaged calibration for {e.model_id}: run faceledger eval calibrate --install"
        assert cal.impostor_pairs > 1_000_000
        assert 0 < cal.threshold(1e-4) < 1
