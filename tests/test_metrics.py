"""Statistics on score sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from faceledger.evaluation import metrics


def test_fmr_fnmr_at_threshold():
    genuine = np.array([0.9, 0.8, 0.7, 0.6, 0.3])
    impostor = np.array([0.1, 0.2, 0.3, 0.4, 0.65, 0.05, 0.0, -0.1, 0.15, 0.25])
    assert metrics.fmr_at(impostor, 0.3) == pytest.approx(0.3)  # 0.3, 0.4, 0.65
    assert metrics.fnmr_at(genuine, 0.65) == pytest.approx(0.4)  # 0.6, 0.3
    assert metrics.fmr_at(impostor, 0.66) == 0.0


def test_threshold_at_fmr_never_exceeds_target():
    rng = np.random.default_rng(0)
    impostor = rng.normal(0, 0.1, 100_000)
    for target in (1e-1, 1e-2, 1e-3, 1e-4):
        t = metrics.threshold_at_fmr(impostor, target)
        assert metrics.fmr_at(impostor, t) <= target
        assert metrics.fmr_at(impostor, np.nextafter(t, -1) - 1e-9) >= target - 1e-12
    # a normal distribution's quantile: FMR 1e-2 at ~2.326 sigma
    assert metrics.threshold_at_fmr(impostor, 1e-2) == pytest.approx(0.2326, abs=0.01)


def test_eer_of_separable_and_symmetric_sets():
    assert metrics.eer(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == 0.0
    rng = np.random.default_rng(1)
    genuine, impostor = rng.normal(1, 1, 200_000), rng.normal(-1, 1, 200_000)
    # two unit normals at +-1: EER = Phi(-1) = 0.1587
    assert metrics.eer(genuine, impostor) == pytest.approx(0.1587, abs=0.003)
    assert metrics.roc_auc(genuine, impostor) == pytest.approx(0.9214, abs=0.003)  # Phi(sqrt(2))


def test_auc_with_ties_and_tmr():
    assert metrics.roc_auc(np.array([1.0, 0.5]), np.array([0.5, 0.0])) == pytest.approx(0.875)
    genuine = np.linspace(0.5, 1.0, 100)
    impostor = np.linspace(0.0, 0.6, 1000)
    t = metrics.threshold_at_fmr(impostor, 1e-2)
    assert metrics.tmr_at_fmr(genuine, impostor, 1e-2) == pytest.approx(1 - metrics.fnmr_at(genuine, t))


def test_best_accuracy_threshold():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    same = np.array([0, 0, 0, 1, 1, 1], bool)
    t = metrics.best_accuracy_threshold(scores, same)
    assert 0.3 < t <= 0.7 and metrics.accuracy(scores, same, t) == 1.0
    noisy = np.array([0, 1, 0, 1, 1, 1], bool)
    assert metrics.accuracy(scores, noisy, metrics.best_accuracy_threshold(scores, noisy)) == pytest.approx(5 / 6)


def test_wilson_interval():
    lo, hi = metrics.wilson_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(0.0370, abs=1e-3)
    lo, hi = metrics.wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
