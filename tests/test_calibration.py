"""Calibration: score <-> FMR on a known distribution, and the decision at a target FMR.

Measured down to the rule of 30, extrapolated from the impostor tail below it (with bounds),
and refused below the tail's floor; an old calibration without a tail behaves as before.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from faceledger.matching.calibration import Calibration, NotCalibrated, Threshold, file_name, load_calibration
from faceledger.matching.compare import Template, compare


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.0, 0.1, 1_000_000)
    genuine = rng.normal(0.7, 0.1, 10_000)
    return Calibration.build("test-model", impostor, genuine, "synthetic normal scores", bootstrap=100)


@pytest.fixture(scope="module")
def old_calibration(calibration):
    """The same calibration as an older release wrote it: no tail in the JSON."""
    d = calibration.to_dict()
    del d["tail"]
    return Calibration.from_dict(json.loads(json.dumps(d)))


def test_threshold_matches_normal_quantiles(calibration):
    # P(Z >= z): 1e-2 -> 2.326, 1e-3 -> 3.090, 1e-4 -> 3.719 standard deviations
    for fmr, z in ((1e-2, 2.326), (1e-3, 3.090), (1e-4, 3.719)):
        assert calibration.threshold(fmr) == pytest.approx(0.1 * z, abs=0.006)


def test_score_to_fmr_round_trip(calibration):
    for fmr in (3e-2, 1e-3, 2e-4, 5e-5):
        assert calibration.fmr(calibration.threshold(fmr))[0] == pytest.approx(fmr, rel=0.15)
    assert calibration.resolution == pytest.approx(30 / 1_000_000)  # the rule of 30


def test_measured_thresholds_say_so(calibration):
    th = calibration.threshold_info(1e-4)
    assert th == Threshold(calibration.threshold(1e-4), 1e-4, "measured", 1e-4, 0.95, 1e-4)
    assert calibration.fmr_info(th.score) == (pytest.approx(1e-4, rel=0.05), "measured")


def test_below_the_resolution_the_tail_extrapolates_conservatively(calibration):
    # 1e6 N(0, 0.1) impostors measure down to 3e-5; the true 1e-6 threshold is 0.475
    for fmr in (1e-5, 3e-6, 1e-6):
        th = calibration.threshold_info(fmr)
        assert th.basis == "extrapolated" and th.target == fmr and th.confidence == 0.95
        assert th.fmr < th.fmr_upper <= fmr  # the point estimate is below the target, the bound meets it
        assert th.score == calibration.threshold(fmr)
        assert 0.1 * norm.isf(fmr) <= th.score <= 0.1 * norm.isf(fmr) + 0.04  # conservative, not absurdly so
        value, basis = calibration.fmr_info(th.score)
        assert basis == "extrapolated" and value == pytest.approx(th.fmr)
        assert calibration.fmr(th.score) == (pytest.approx(th.fmr), False)  # the tail's estimate, not a bound
    scores = [calibration.threshold(f) for f in (1e-4, 3e-5, 2.9e-5, 1e-5, 1e-6, calibration.lowest_fmr)]
    assert scores == sorted(scores)  # no step down where the measured range ends


def test_refused_below_the_floor(calibration):
    assert 1e-9 < calibration.lowest_fmr < 1e-6
    calibration.threshold(calibration.lowest_fmr)
    with pytest.raises(NotCalibrated) as info:
        calibration.threshold(calibration.lowest_fmr / 2)
    assert info.value.details["lowest_fmr"] == calibration.lowest_fmr
    # far beyond every impostor: the FMR is at most the floor, said as a bound
    assert calibration.fmr(10.0) == (calibration.lowest_fmr, True)
    assert calibration.fmr_info(10.0) == (calibration.lowest_fmr, "bound")


def test_old_calibration_without_tail_behaves_as_before(calibration, old_calibration):
    old = old_calibration
    assert old.tail is None and old.lowest_fmr == old.resolution
    for fmr in (1e-2, 1e-3, 1e-4, 3e-5):
        assert old.threshold(fmr) == pytest.approx(calibration.threshold(fmr), abs=1e-6)
        assert old.threshold_info(fmr).basis == "measured"
    assert old.fmr(10.0) == (old.resolution, True)  # beyond what was measured: a bound
    assert old.fmr_info(10.0) == (old.resolution, "bound")
    assert old.fmr(0.3)[0] == pytest.approx(calibration.fmr(0.3)[0], rel=1e-4)  # (rounded in the JSON)
    with pytest.raises(NotCalibrated):
        old.threshold(1e-5)


def test_old_json_file_loads(old_calibration, tmp_path):
    folder = tmp_path / "calibrations"
    folder.mkdir()
    (folder / file_name("test-model")).write_text(json.dumps(old_calibration.to_dict()))
    loaded = load_calibration("test-model", tmp_path)
    assert loaded is not None and loaded.tail is None and "tail" not in loaded.to_dict()
    assert loaded.threshold(1e-3) == pytest.approx(old_calibration.threshold(1e-3), abs=1e-5)


def test_saved_and_loaded(calibration, tmp_path):
    calibration.save(tmp_path / "calibrations")
    loaded = load_calibration("test-model", tmp_path)
    assert loaded is not None and loaded.threshold(1e-3) == pytest.approx(calibration.threshold(1e-3), abs=1e-5)
    assert loaded.tail is not None and loaded.lowest_fmr == pytest.approx(calibration.lowest_fmr)
    for fmr in (1e-5, 1e-6):
        assert loaded.threshold_info(fmr).score == pytest.approx(calibration.threshold(fmr), abs=1e-5)
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
        assert cal.impostor_pairs > 100_000_000  # LFW's and the cross-data-set pairs
        assert 0 < cal.threshold(1e-4) < 1
        assert cal.tail is not None and cal.tail.bootstrap_method == "images"
        # identity-balanced: the FMRs are shares of ~28.7 million pairs of people
        assert cal.tail.weighted and 25e6 < cal.weight < 35e6
        # weighted counts are noisier than Poisson (one image's pairs move together, and the top pairs of
        # people include photos filed under two names): the fit is checked more loosely than unweighted
        assert cal.tail.gof_max_log10_error < 0.4 and cal.tail.gof_max_z < 5  # measured 0.35 and 4.7 (fast)
        # the tail carries the calibration at least two decades below what the rule of 30 measures
        assert cal.resolution < 1.1e-6 and cal.lowest_fmr <= 1e-8
        th = cal.threshold_info(1e-8)
        assert th.basis == "extrapolated" and th.fmr < th.fmr_upper <= 1e-8 and cal.threshold(3e-7) < th.score < 1
        with pytest.raises(NotCalibrated):
            cal.threshold(cal.lowest_fmr / 2)


def test_weighted_calibration_counts_pairs_of_people():
    # every impostor score twice at weight 1/2 is the same calibration as each once
    rng = np.random.default_rng(5)
    impostor = rng.normal(0.0, 0.1, 400_000)
    genuine = rng.normal(0.7, 0.1, 5_000)
    once = Calibration.build("m", impostor, genuine, "once", bootstrap=20)
    twice = Calibration.build("m", np.repeat(impostor, 2), genuine, "twice", bootstrap=20,
                              weights=np.full(2 * len(impostor), 0.5))
    assert twice.impostor_pairs == 2 * once.impostor_pairs and twice.weight == pytest.approx(once.weight)
    assert twice.resolution == pytest.approx(once.resolution)  # the rule of 30 counts weight
    for f in (1e-2, 1e-3, 1e-4):
        assert twice.threshold(f) == pytest.approx(once.threshold(f), abs=1e-6)
    assert twice.tail.threshold_point(1e-6) == pytest.approx(once.tail.threshold_point(1e-6), abs=1e-4)
    assert twice.threshold(1e-6) == pytest.approx(once.threshold(1e-6), abs=0.03)  # bootstraps draw differently
    again = Calibration.from_dict(json.loads(json.dumps(twice.to_dict())))
    assert again.weight == pytest.approx(twice.weight) and again.threshold(1e-6) == pytest.approx(
        twice.threshold(1e-6), rel=1e-5)
