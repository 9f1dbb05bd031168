"""The impostor tail model: a GPD fit with bootstrap bounds, on score distributions with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import expon, genpareto, norm

from faceledger.errors import NotCalibrated
from faceledger.matching.tail import ABSOLUTE_FLOOR, MAX_RATIO, TailModel, _fit, _floor, default_k, fit_tail


def test_default_k_rule():
    assert default_k(100_000_000) == 25_000  # 0.025% of the impostor pairs
    assert default_k(1_000_000) == 1_000  # at least 1,000
    assert default_k(1_000_000_000) == 50_000  # at most 50,000
    assert default_k(5_000) == 500  # at most a tenth


@pytest.mark.parametrize("xi", [-0.25, 0.0, 0.15])
def test_gpd_samples_give_back_their_parameters(xi):
    # above any threshold u, GPD(xi, sigma) excesses are GPD(xi, sigma + xi * u) (threshold stability)
    sigma = 0.05
    scores = genpareto.rvs(xi, scale=sigma, size=200_000, random_state=np.random.default_rng(1))
    model = fit_tail(scores, k=20_000, bootstrap=50)
    assert model.xi == pytest.approx(xi, abs=0.03)  # standard error ~ (1 + xi) / sqrt(k) = 0.007
    assert model.sigma == pytest.approx(sigma + xi * model.u, rel=0.05)
    assert model.p_u == pytest.approx(0.1)
    assert model.gof_max_log10_error < 0.2 and model.gof_max_z < 4  # noise: ~0.08 at rank 30
    # the fitted FMR at a score matches the true survival function
    s = float(genpareto.isf(1e-6, xi, scale=sigma))
    assert model.fmr(s) == pytest.approx(1e-6, rel=0.35)
    assert model.fmr_lower(s) <= model.fmr(s) <= model.fmr_upper(s)


@pytest.mark.parametrize("xi", [-0.4, -0.1, 0.0, 0.3])
def test_fit_is_scipys_maximum_likelihood(xi):
    y = genpareto.rvs(xi, scale=0.03, size=3_000, random_state=np.random.default_rng(2))
    ours = _fit(y)
    c, _, scale = genpareto.fit(y, floc=0)
    # as likely as scipy's own fit (or more): the same maximum
    assert genpareto.nnlf((ours[0], 0, ours[1]), y) <= genpareto.nnlf((c, 0, scale), y) + 1e-6
    assert ours == pytest.approx((c, scale), abs=2e-3)


def _exponential(n, seed):
    return np.random.default_rng(seed).exponential(0.1, n)


def test_threshold_at_1e9_close_to_the_truth_and_conservative():
    # 10 million exponential impostor scores: the rule of 30 measures down to 3e-6, the tail goes on
    model = fit_tail(_exponential(10_000_000, 3), bootstrap=100, seed=3)
    true = 0.1 * expon.isf(1e-9)  # 2.072
    point, conservative = model.threshold_point(1e-9), model.threshold_unchecked(1e-9)
    assert point == pytest.approx(true, rel=0.15)
    assert true <= conservative <= true * 1.4
    assert model.fmr_upper(conservative) <= 1e-9 * 1.0001  # the bound is met at the threshold it gives
    assert model.fmr(conservative) < 1e-9


def _coverage(sample, true_quantile, target, seeds, k=None):
    """Share of seeds whose conservative threshold is at or above the true quantile."""
    hits = []
    for seed in seeds:
        model = fit_tail(sample(seed), k=k, bootstrap=100, seed=seed)
        hits.append(model.threshold_unchecked(target) >= true_quantile)
    return float(np.mean(hits))


def test_coverage_exponential_tail():
    # a million scores, extrapolated 2.5 decades below the resolution (3e-5 -> 1e-7), as LFW's ~1e8
    # pairs are to 1e-9. The GPD holds exactly here (xi = 0): nominal 95%, 20 seeds.
    coverage = _coverage(lambda s: _exponential(1_000_000, s), 0.1 * expon.isf(1e-7), 1e-7, range(20))
    assert coverage >= 0.85


def test_coverage_normal_tail():
    # a normal tail is lighter than any GPD at finite u: the fit is slightly anti-conservative far out
    # (observed ~90% at nominal 95% over 40 seeds of 4 million); here 20 seeds of a million, 1e-7
    coverage = _coverage(lambda s: np.random.default_rng(s).normal(0.0, 0.1, 1_000_000), 0.1 * norm.isf(1e-7),
                         1e-7, range(20))
    assert coverage >= 0.8


def test_refuses_below_the_floor():
    model = fit_tail(_exponential(1_000_000, 0), bootstrap=100)
    assert ABSOLUTE_FLOOR <= model.floor < 30 / 1_000_000  # extrapolates below the resolution, not without end
    assert model.bound_ratio(model.floor) <= MAX_RATIO
    model.threshold(model.floor)  # supported
    with pytest.raises(NotCalibrated) as info:
        model.threshold(model.floor / 3)
    assert "upper bound" in info.value.message and info.value.details["lowest_fmr"] == model.floor
    with pytest.raises(ValueError):
        model.threshold(0.5)  # above the tail's start: the empirical curve answers that


def test_absolute_floor():
    # a tail known without uncertainty (every bootstrap replicate equal) is still not extrapolated below 1e-12
    same = np.ones(50)
    exact = TailModel(0.5, 1e-3, 0.0, 0.05, 10**9, 10**6, 1e-3 * same, 0.0 * same, 0.05 * same, 0.0, ABSOLUTE_FLOOR)
    assert _floor(exact) == ABSOLUTE_FLOOR
    exact.threshold(ABSOLUTE_FLOOR)
    with pytest.raises(NotCalibrated) as info:
        exact.threshold(1e-13)
    assert "1e-12" in info.value.message


def test_thresholds_fall_as_fmr_rises():
    model = fit_tail(_exponential(1_000_000, 2), bootstrap=100)
    fmrs = np.logspace(np.log10(model.floor), np.log10(model.p_u) - 0.01, 30)
    thresholds = [model.threshold(f) for f in fmrs]
    assert thresholds == sorted(thresholds, reverse=True)
    assert all(model.threshold(f) >= model.threshold_point(f) for f in fmrs)


def test_round_trip_through_dict():
    model = fit_tail(_exponential(1_000_000, 4), bootstrap=60)
    again = TailModel.from_dict(model.to_dict())
    for f in (1e-6, model.floor):
        assert again.threshold(f) == pytest.approx(model.threshold(f), rel=1e-5)
    assert again.floor == pytest.approx(model.floor, rel=1e-3) and again.k == model.k and again.n == model.n


def test_image_bootstrap_is_wider_when_one_image_dominates():
    # scores of pairs: one "look-alike" image takes part in a quarter of the top pairs
    rng = np.random.default_rng(7)
    n_images, n = 20_000, 2_000_000
    a, b = rng.integers(0, n_images, n), rng.integers(0, n_images, n)
    scores = rng.exponential(0.1, n)
    top = np.argsort(scores)[::-1][:2_001]
    a[top[::4]] = 0  # image 0 in every fourth top pair
    pairs = (scores[top], a[top], b[top])
    by_pairs = fit_tail(scores, k=2_000, bootstrap=100)
    by_images = fit_tail(scores, k=2_000, bootstrap=100, top_pairs=pairs, n_images=n_images)
    assert by_images.bootstrap_method == "images" and by_images.xi == by_pairs.xi
    spread = lambda m: np.quantile(m.boot_p_u, 0.95) / np.quantile(m.boot_p_u, 0.05)
    assert spread(by_images) > 1.5 * spread(by_pairs)


def test_a_pair_repeated_m_times_at_weight_1_over_m_is_one_pair():
    # identity balance: m photo pairs of the same two people, each weighing 1/m, count as one pair
    rng = np.random.default_rng(11)
    scores = rng.exponential(0.1, 200_000)
    repeats = rng.integers(1, 6, len(scores))
    model = fit_tail(scores, k=2_000, bootstrap=20)
    weighted = fit_tail(np.repeat(scores, repeats), k=2_000, bootstrap=20, weights=1.0 / np.repeat(repeats, repeats))
    assert weighted.weighted and weighted.n == pytest.approx(len(scores))
    assert weighted.u == model.u and weighted.p_u == pytest.approx(model.p_u)
    assert (weighted.xi, weighted.sigma) == pytest.approx((model.xi, model.sigma), rel=1e-4)
    assert weighted.threshold_point(1e-7) == pytest.approx(model.threshold_point(1e-7), rel=1e-4)


def test_a_family_of_many_photos_does_not_set_the_weighted_tail():
    # 200 x 200 photo pairs of two look-alike people score high; counted per photo pair they are 40,000
    # of the top scores, counted per pair of people one
    rng = np.random.default_rng(12)
    base = rng.exponential(0.1, 2_000_000)
    family = rng.normal(0.9, 0.05, 40_000)
    scores = np.concatenate([base, family])
    weights = np.concatenate([np.ones(len(base)), np.full(len(family), 1 / 40_000)])
    clean = fit_tail(base, k=2_000, bootstrap=20)
    per_photo = fit_tail(scores, k=2_000, bootstrap=20)
    per_person = fit_tail(scores, k=2_000, bootstrap=20, weights=weights)
    assert per_photo.u > 0.8 > clean.u  # the family is the whole unweighted tail
    assert per_person.u == pytest.approx(clean.u, abs=0.01)
    assert per_person.threshold_point(1e-7) == pytest.approx(clean.threshold_point(1e-7), abs=0.02)


def test_weighted_image_bootstrap_needs_consistent_image_weights():
    rng = np.random.default_rng(13)
    n_images, n = 5_000, 500_000
    a, b = rng.integers(0, n_images, n), rng.integers(0, n_images, n)
    iw = rng.choice([1.0, 0.5, 0.25], n_images)
    scores = rng.exponential(0.1, n)
    top = np.argsort(scores)[::-1][:20_000]
    pairs = (scores[top], a[top], b[top])
    model = fit_tail(scores, k=1_000, bootstrap=30, top_pairs=pairs, n_images=n_images, weights=iw[a] * iw[b],
                     image_weights=iw)
    assert model.bootstrap_method == "images" and model.weighted
    assert model.p_u * model.n == pytest.approx(1_000, rel=0.01)  # the tail holds k of weight
    assert model.fmr_lower(0.9) <= model.fmr(0.9) <= model.fmr_upper(0.9)
    with pytest.raises(ValueError, match="image_weights"):
        fit_tail(scores, k=1_000, bootstrap=5, top_pairs=pairs, n_images=n_images, weights=iw[a] * iw[b],
                 image_weights=np.ones(n_images))
    again = TailModel.from_dict(model.to_dict())
    assert again.weighted and again.n == pytest.approx(model.n) and again.threshold(model.floor) == pytest.approx(
        model.threshold(model.floor), rel=1e-5)
