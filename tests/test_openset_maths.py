"""FPIR maths: the formula, its stable computation, and brute-force simulations of searches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from faceledger.errors import NotCalibrated
from faceledger.matching.calibration import Calibration
from faceledger.matching.openset import (
    best_of_k_fmr,
    equivalent_fpir,
    fmr_for_fpir,
    fpir_at,
    fpir_at_score,
    fpir_threshold,
)


def test_small_cases_by_hand():
    assert fpir_at(0.5, 1) == 0.5
    assert fpir_at(0.5, 2) == pytest.approx(0.75)
    assert fpir_at(1e-3, 0) == 0.0 and fpir_at(0.0, 10**6) == 0.0 and fpir_at(1.0, 3) == 1.0
    assert fmr_for_fpir(0.75, 2) == pytest.approx(0.5)
    assert fmr_for_fpir(0.01, 1) == 0.01 and fmr_for_fpir(0.01, 0) == 0.01
    with pytest.raises(ValueError):
        fpir_at(1.5, 10)
    with pytest.raises(ValueError):
        fmr_for_fpir(0.01, -1)


@pytest.mark.parametrize("fpir", [1e-1, 1e-2, 1e-3, 1e-6])
@pytest.mark.parametrize("n", [1, 10, 10_000, 1_000_000, 10**9])
def test_round_trip(fpir, n):
    fmr = fmr_for_fpir(fpir, n)
    assert fpir_at(fmr, n) == pytest.approx(fpir, rel=1e-9)
    assert fpir / n * (1 - 1e-12) <= fmr <= fpir / n * (1 + fpir)  # (1 - F)^(1/n) <= 1 - F/n: a little above
    assert fmr == pytest.approx(fpir / n, rel=fpir)  # ~ FPIR / N while FPIR is small


def test_a_million_faces_at_fpir_1e3_needs_fmr_1e9():
    assert fmr_for_fpir(1e-3, 1_000_000) == pytest.approx(1.0005e-9, rel=1e-4)
    # stable where the naive forms are not: 1 - (1 - 1e-12) ** 1e9 loses most digits in float64
    assert fpir_at(1e-12, 10**9) == pytest.approx(1e-3 - 5e-7, rel=1e-6)
    assert fmr_for_fpir(1e-9, 10**9) == pytest.approx(1e-18, rel=1e-6)


def test_fpir_grows_with_the_gallery_at_a_fixed_fmr():
    fpirs = [equivalent_fpir(1e-6, n) for n in (1_000, 10_000, 100_000, 1_000_000, 10_000_000)]
    assert fpirs == sorted(fpirs)
    assert fpirs[0] == pytest.approx(1e-3, rel=1e-3) and fpirs[-1] == pytest.approx(1 - math.exp(-10), rel=1e-3)


@pytest.mark.parametrize("fmr, n", [(1e-3, 500), (1e-4, 3_000), (2e-2, 20)])
def test_formula_against_brute_force_searches(fmr, n):
    # strangers' probes against a gallery of n faces, impostor scores iid N(0, 1): the share of
    # searches with any score above the FMR's threshold
    rng = np.random.default_rng(0)
    t = norm.isf(fmr)
    probes = 4_000
    hits = 0
    for _ in range(probes // 200):
        hits += int((rng.standard_normal((200, n)) >= t).any(axis=1).sum())
    measured, expected = hits / probes, fpir_at(fmr, n)
    assert measured == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / probes))


def test_best_of_k_against_brute_force():
    # a claim against a subject with k faces takes the best of k comparisons
    target, k = 1e-2, 8
    per_comparison = best_of_k_fmr(target, k)
    assert per_comparison == pytest.approx(1 - 0.99 ** (1 / 8)) and per_comparison < target / k * 1.01
    rng = np.random.default_rng(1)
    best = rng.standard_normal((200_000, k)).max(axis=1)
    assert np.mean(best >= norm.isf(per_comparison)) == pytest.approx(target, rel=0.06)  # 4.5 sigma: 2,000 hits
    # with positively correlated scores (one person's photos look alike) the claim's FMR is lower: safe side
    shared = rng.standard_normal((200_000, 1))
    correlated = (np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.standard_normal((200_000, k))).max(axis=1)
    assert np.mean(correlated >= norm.isf(per_comparison)) < target
    assert best_of_k_fmr(target, 1) == target


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    return Calibration.build("test-model", rng.normal(0.0, 0.1, 2_000_000), rng.normal(0.7, 0.1, 10_000),
                             "synthetic normal scores", bootstrap=100)


def test_fpir_threshold_small_gallery_is_measured(calibration):
    th = fpir_threshold(calibration, 1e-2, 100)  # per-comparison 1e-4
    assert th.basis == "measured" and th.fmr == pytest.approx(1.005e-4, rel=1e-3)
    assert th.score == pytest.approx(0.1 * norm.isf(1e-4), abs=0.006)
    fpir, upper, basis = fpir_at_score(calibration, th.score, 100)
    assert basis == "measured" and fpir == pytest.approx(1e-2, rel=0.1) and upper == fpir


def test_fpir_threshold_large_gallery_is_extrapolated_and_conservative(calibration):
    # 2M impostor pairs measure FMR down to 1.5e-5; a 10,000-face gallery at FPIR 1e-2 needs 1e-6
    th = fpir_threshold(calibration, 1e-2, 10_000)
    assert th.basis == "extrapolated" and th.confidence == 0.95
    assert th.fmr < th.fmr_upper <= th.target == pytest.approx(1.005e-6, rel=1e-3)
    assert th.score >= 0.1 * norm.isf(th.target)  # conservative against the true distribution
    assert fpir_at(norm.sf(th.score / 0.1), 10_000) <= 1e-2  # the true FPIR at it meets the target
    # a gallery grows: the threshold rises with it
    scores = [fpir_threshold(calibration, 1e-2, n).score for n in (10, 1_000, 10_000, 30_000)]
    assert scores == sorted(scores)


def test_fpir_threshold_refuses_a_gallery_too_large(calibration):
    with pytest.raises(NotCalibrated) as info:
        fpir_threshold(calibration, 1e-3, 10**12)
    assert info.value.details["lowest_fmr"] == calibration.lowest_fmr


def test_fpir_threshold_by_simulated_searches(calibration):
    # the threshold for FPIR 5% at N = 2,000 faces, checked by searching: 4,000 strangers' probes
    n, target = 2_000, 0.05
    th = fpir_threshold(calibration, target, n)
    rng = np.random.default_rng(3)
    hits = sum(int((rng.normal(0.0, 0.1, (250, n)) >= th.score).any(axis=1).sum()) for _ in range(16))
    measured = hits / 4_000
    assert measured <= target + 4 * math.sqrt(target * (1 - target) / 4_000)
    assert measured == pytest.approx(fpir_at(norm.sf(th.score / 0.1), n), abs=0.015)
