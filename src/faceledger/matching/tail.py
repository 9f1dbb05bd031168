"""The impostor score tail beyond what was measured: a generalized Pareto fit (peaks over threshold).

An empirical FMR needs about 30 impostor pairs above the threshold (the "rule of 30"), so
~100 million impostor pairs measure FMRs down to ~3e-7. Open-set search of a large gallery
needs far lower per-comparison FMRs (a million faces at FPIR 1e-3 needs ~1e-9). Extreme
value theory says that, for almost any continuous score distribution, the excesses over a
high score ``u`` follow a generalized Pareto distribution (GPD), so above ``u``::

    FMR(s) = p_u * (1 + xi * (s - u) / sigma) ** (-1 / xi)        (exp(-(s - u) / sigma) when xi = 0)

where ``p_u`` is the share of impostor pairs above ``u``. Cosine scores are bounded, so in
the limit ``xi`` would be negative (a finite end point ``u - sigma / xi``); over the range
that the data reach, the impostor tail of a face set is a mixture of many people's tails
(and of the odd same-person pair under two names) and fits with ``xi`` slightly positive:
extrapolation is then steep, and the thresholds it gives are conservative. A threshold
above 1 (the highest cosine) means that no comparison reaches that FMR with confidence.

The rule for ``u`` (:func:`default_k`): the ``k`` highest impostor scores are the tail, with
``k`` = 0.025% of the impostor pairs, at least 1,000 and at most 50,000 (and at most a
tenth of the pairs). With ~100M pairs that is the top ~25,000: far enough out that the GPD
applies (checked by ``gof_max_log10_error``), enough exceedances for a tight fit.

Uncertainty comes from a bootstrap of the exceedances (the number above ``u`` drawn as
binomial, the excesses resampled, the GPD refitted). ``fmr_upper(s)`` is the bootstrap's
``confidence`` quantile of FMR(s); ``threshold(f)`` is the conservative threshold: the
``confidence`` quantile of the bootstrap thresholds at ``f`` (equivalently the lowest score
whose ``fmr_upper`` is at most ``f``). The bootstrap measures sampling error only, not
whether the GPD holds several decades beyond the data, so extrapolation is bounded: below
``floor`` :meth:`TailModel.threshold` raises :class:`NotCalibrated`. The floor is the FMR
below which the conservative threshold's point-estimate FMR falls more than ``MAX_RATIO``
(a decade) below its upper bound, i.e. the threshold is set by the fit's uncertainty rather
than by the data, and it is never below ``ABSOLUTE_FLOOR`` (1e-12: a billion-face gallery
at FPIR 1e-3). The bootstrap's lower bound is not used for this: cosine tails are bounded
(xi < 0), so some replicates end below a high score and the lower bound drops to 0 soon
after the data end, which would allow no extrapolation at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import genpareto

from faceledger.errors import NotCalibrated

CONFIDENCE = 0.95
MAX_RATIO = 10.0  # upper bound / point estimate of the FMR at a threshold: beyond a decade, not supported
ABSOLUTE_FLOOR = 1e-12  # 1e-9 serves a million-face gallery at FPIR 1e-3; 1e-12 a billion-face one
MIN_ERRORS = 30  # empirical FMRs from fewer exceedances are too noisy to judge the fit with
BOOTSTRAP = 200
K_SHARE, K_MIN, K_MAX = 2.5e-4, 1_000, 50_000


def default_k(n: float) -> int:
    """The number of top impostor scores that make the tail: 0.025% of ``n``, in [1,000, 50,000], <= n/10."""
    return int(min(max(round(K_SHARE * n), K_MIN), K_MAX, n // 10))


def _sf(y: np.ndarray, xi, sigma) -> np.ndarray:
    """GPD survival function of excesses ``y`` (1 for y <= 0); broadcasts over parameter arrays."""
    return genpareto.sf(np.maximum(y, 0.0), xi, scale=sigma)


def _isf(q: np.ndarray, xi, sigma) -> np.ndarray:
    return genpareto.isf(q, xi, scale=sigma)


@dataclass(frozen=True, eq=False)
class TailModel:
    """A GPD fit of the impostor scores above ``u``, with bootstrap replicates for confidence bounds."""

    u: float  # the score where the tail starts (the (k+1)-th highest impostor score)
    p_u: float  # share of impostor pairs above u: k / n
    xi: float  # GPD shape
    sigma: float  # GPD scale
    n: float  # impostor pairs (weighted: their total weight)
    k: int  # exceedances of u (top scores)
    boot_p_u: np.ndarray  # bootstrap replicates of (p_u, xi, sigma)
    boot_xi: np.ndarray
    boot_sigma: np.ndarray
    gof_max_log10_error: float  # max |log10 empirical FMR - log10 model FMR| over ranks MIN_ERRORS..k
    floor: float  # the lowest FMR whose threshold this model supports
    confidence: float = CONFIDENCE
    bootstrap_method: str = "exceedances"  # or "images": images resampled, not pairs
    gof_max_z: float = float("nan")  # the same errors in units of their Poisson noise (see gof_max_z)
    weighted: bool = False  # n, p_u and the counts are weights of pairs (an identity-balanced FMR)

    # -------------------------------------------------------------- score -> FMR
    def fmr(self, score: float) -> float:
        """Point estimate of the FMR at ``score`` (for scores at or below ``u``: ``p_u``, the model's start)."""
        return float(self.p_u * _sf(np.float64(score) - self.u, self.xi, self.sigma))

    def _boot_fmr(self, score: float) -> np.ndarray:
        return self.boot_p_u * _sf(np.float64(score) - self.u, self.boot_xi, self.boot_sigma)

    def fmr_upper(self, score: float) -> float:
        """Upper ``confidence`` bound of the FMR at ``score`` (bootstrap quantile)."""
        return float(np.quantile(self._boot_fmr(score), self.confidence, method="higher"))

    def fmr_lower(self, score: float) -> float:
        """Lower ``confidence`` bound of the FMR at ``score``."""
        return float(np.quantile(self._boot_fmr(score), 1 - self.confidence, method="lower"))

    # -------------------------------------------------------------- FMR -> score
    def threshold_point(self, fmr: float) -> float:
        """The point-estimate threshold for ``fmr`` (not conservative)."""
        self._check_in_tail(fmr)
        return float(self.u + _isf(fmr / self.p_u, self.xi, self.sigma))

    def _boot_thresholds(self, fmr: float) -> np.ndarray:
        q = np.minimum(fmr / self.boot_p_u, 1.0)  # a replicate with fewer exceedances than fmr * n: u itself
        return self.u + _isf(q, self.boot_xi, self.boot_sigma)

    def threshold_unchecked(self, fmr: float) -> float:
        """The conservative threshold for ``fmr`` without the floor check (for diagnostics)."""
        self._check_in_tail(fmr)
        return float(np.quantile(self._boot_thresholds(fmr), self.confidence, method="higher"))

    def threshold(self, fmr: float) -> float:
        """The conservative threshold for ``fmr``: with ``confidence``, the FMR at it is at most ``fmr``.

        Raises :class:`NotCalibrated` below ``floor``.
        """
        if fmr < self.floor:
            why = (f"below it the threshold's {self.confidence:.0%} upper bound on the FMR is more than "
                   f"{MAX_RATIO:g}x its point estimate" if self.floor > ABSOLUTE_FLOOR else
                   f"no threshold is extrapolated below {ABSOLUTE_FLOOR:g}")
            raise NotCalibrated(
                f"FMR {fmr:g} is below what the impostor tail model supports ({self.floor:.2g}: {why}; "
                f"the tail was fitted to the top {self.k:,} of {self._pairs_text} impostor pairs)",
                lowest_fmr=self.floor)
        return self.threshold_unchecked(fmr)

    @property
    def _pairs_text(self) -> str:
        return f"{self.n:,.0f} identity-weighted" if self.weighted else f"{int(self.n):,}"

    def bound_ratio(self, fmr: float) -> float:
        """Upper bound / point estimate of the FMR at the conservative threshold for ``fmr`` (inf if the point is 0)."""
        s = self.threshold_unchecked(fmr)
        point = self.fmr(s)
        return float(self.fmr_upper(s) / point) if point > 0 else float("inf")

    def _check_in_tail(self, fmr: float) -> None:
        if not 0 < fmr < self.p_u:
            raise ValueError(f"FMR {fmr:g} is outside the tail model (0, {self.p_u:g}); use the empirical curve")

    # -------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        def r(a):
            return [float(f"{x:.7g}") for x in np.asarray(a, np.float64)]

        return {
            "u": self.u, "p_u": self.p_u, "xi": self.xi, "sigma": self.sigma, "n": self.n, "k": self.k,
            "confidence": self.confidence, "floor": self.floor, "gof_max_log10_error": round(self.gof_max_log10_error, 4),
            "gof_max_z": round(self.gof_max_z, 3), "weighted": self.weighted,
            "rule": (f"generalized Pareto (MLE, scipy.stats.genpareto) on the excesses of the top k impostor "
                     f"scores, k = {K_SHARE:g} n in [{K_MIN:,}, {K_MAX:,}]; goodness of fit over ranks "
                     f"{MIN_ERRORS}..k; floor where the FMR's upper bound at the conservative threshold exceeds "
                     f"{MAX_RATIO:g}x its point estimate, "
                     f"never below {ABSOLUTE_FLOOR:g}"),
            "bootstrap": {"method": self.bootstrap_method, "replicates": len(self.boot_xi),
                          "p_u": r(self.boot_p_u), "xi": r(self.boot_xi), "sigma": r(self.boot_sigma)},
        }

    @classmethod
    def from_dict(cls, d: dict) -> TailModel:
        b = d["bootstrap"]
        n = float(d["n"]) if d.get("weighted") else int(d["n"])
        return cls(float(d["u"]), float(d["p_u"]), float(d["xi"]), float(d["sigma"]), n, int(d["k"]),
                   np.array(b["p_u"], np.float64), np.array(b["xi"], np.float64), np.array(b["sigma"], np.float64),
                   float(d["gof_max_log10_error"]), float(d["floor"]), float(d.get("confidence", CONFIDENCE)),
                   b.get("method", "exceedances"), float(d.get("gof_max_z", "nan")), bool(d.get("weighted", False)))


def _profile_nll(theta: float, y: np.ndarray, w: np.ndarray) -> float:
    """Negative GPD log-likelihood profiled over sigma, at theta = xi / sigma (Grimshaw 1993), per unit weight.

    ``w``: each excess's weight, summing to 1 (equal weights: the ordinary likelihood per excess).
    """
    mean = float(w @ y)
    if abs(theta) < 1e-12 / max(mean, 1e-300):
        return float(np.log(mean) + 1.0)  # the exponential limit
    xi = float(w @ np.log1p(theta * y))
    return float(np.log(xi / theta) + xi + 1.0)


def _fit(excesses: np.ndarray, start: tuple[float, float] | None = None,
         weights: np.ndarray | None = None) -> tuple[float, float]:
    """Maximum-likelihood (xi, sigma) of the GPD for ``excesses`` (location 0), optionally weighted.

    The same estimate as ``scipy.stats.genpareto.fit(excesses, floc=0)``, found ~100x faster by
    maximizing the likelihood profiled over theta = xi / sigma (one dimension: a grid, then
    Brent's method), which matters for the bootstrap's hundreds of refits. ``weights``: each
    excess counts that much in the log-likelihood (an excess of weight 2 as two equal excesses).
    """
    y = np.asarray(excesses, np.float64)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
    positive = (y > 0) & (w > 0)
    y, w = (y[positive], w[positive]) if positive.any() else (y + 1e-12, w + 1.0)
    w = w / w.sum()
    top, mean = float(y.max()), float(w @ y)
    lo, hi = -1.0 / top * (1 - 1e-9), 10.0 / mean  # 1 + theta * y > 0; xi up to ~10
    grid = np.sort(np.concatenate([lo * (1 - np.logspace(-9, 0, 60)[:-1]), np.linspace(0, hi, 41)]))  # dense near lo
    with np.errstate(divide="ignore", invalid="ignore"):
        xis = np.log1p(np.multiply.outer(grid, y)) @ w
        values = np.where(np.abs(grid) * mean < 1e-12, np.log(mean) + 1.0, np.log(xis / grid) + xis + 1.0)
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    theta = minimize_scalar(_profile_nll, bounds=(a, b), args=(y, w), method="bounded",
                            options={"xatol": abs(b - a) * 1e-8 + 1e-15}).x
    if abs(theta) < 1e-12 / mean:
        return 0.0, mean
    xi = float(w @ np.log1p(theta * y))
    return xi, xi / float(theta)


def gof_max_log10_error(top_desc: np.ndarray, n: float, u: float, p_u: float, xi: float, sigma: float,
                        cum: np.ndarray | None = None) -> float:
    """Max |log10 empirical FMR - log10 model FMR| at each of the top scores from rank MIN_ERRORS to k.

    ``top_desc`` are the k highest scores, descending: the r-th has empirical FMR r / n (weighted:
    ``cum[r - 1] / n``, ``cum`` the running total of their weights). Ranks whose running total is
    below MIN_ERRORS are left out: their empirical FMR is itself too uncertain (Poisson).
    """
    return float(np.max(_log10_errors(top_desc, n, u, p_u, xi, sigma, cum)[1]))


def gof_max_z(top_desc: np.ndarray, n: float, u: float, p_u: float, xi: float, sigma: float,
              cum: np.ndarray | None = None) -> float:
    """The same errors in units of their Poisson noise: max |ln empirical - ln model| * sqrt(rank).

    An error at rank r is noise of about 1/sqrt(r) in ln FMR; so this stays around 2-3 for a
    tail that fits, whatever the ranks, while the log10 error is ~0.08 at rank 30 by chance alone.
    """
    ranks, err = _log10_errors(top_desc, n, u, p_u, xi, sigma, cum)
    return float(np.max(err * np.log(10) * np.sqrt(ranks)))


def _log10_errors(top_desc, n, u, p_u, xi, sigma, cum=None) -> tuple[np.ndarray, np.ndarray]:
    ranks = np.arange(1, len(top_desc) + 1, dtype=np.float64) if cum is None else np.asarray(cum, np.float64)
    keep = ranks >= min(MIN_ERRORS, ranks[-1])
    model = p_u * _sf(top_desc[keep] - u, xi, sigma)
    with np.errstate(divide="ignore"):
        return ranks[keep], np.abs(np.log10(ranks[keep] / n) - np.log10(model))


def _floor(model: TailModel) -> float:
    """The lowest FMR on a 20-per-decade grid, from the resolution down, before bound_ratio exceeds MAX_RATIO."""
    start = min(MIN_ERRORS / model.n, model.p_u / 2)
    grid = 10 ** np.arange(np.log10(start), np.log10(ABSOLUTE_FLOOR), -0.05)
    grid = np.append(grid[grid > ABSOLUTE_FLOOR], ABSOLUTE_FLOOR)
    floor = float(grid[0])
    for f in grid:
        if model.bound_ratio(f) > MAX_RATIO:
            break
        floor = float(f)
    return max(floor, ABSOLUTE_FLOOR)


def _top(scores: np.ndarray, k: float | None, weights: np.ndarray | None
         ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(the top scores descending, their weights, u, total weight) of the tail of ``scores``.

    Unweighted: the ``k`` highest scores (default :func:`default_k`), ``u`` the next one. Weighted:
    the fewest highest scores whose weights reach ``k`` (default ``default_k`` of the total weight).
    """
    n_pairs = len(scores)
    if weights is None:
        k = default_k(n_pairs) if k is None else int(k)
        if k < 100 or k >= n_pairs:
            raise ValueError(f"a tail fit needs 100 <= k < n (k={k}, n={n_pairs})")
        part = np.partition(scores, n_pairs - k - 1)
        top = np.sort(part[n_pairs - k:].astype(np.float64))[::-1]
        return top, np.ones(k), float(part[n_pairs - k - 1]), float(n_pairs)
    weights = np.asarray(weights)
    if weights.shape != scores.shape or np.any(weights < 0):
        raise ValueError("weights must be one non-negative number per score")
    total = float(weights.sum(dtype=np.float64))
    want = default_k(total) if k is None else float(k)
    if want < 100 or want >= total:
        raise ValueError(f"a tail fit needs 100 <= k < n (k={want:g}, total weight n={total:g})")
    m = min(n_pairs - 1, max(4 * int(want), 10_000))
    while True:
        idx = np.argpartition(scores, n_pairs - m - 1)[n_pairs - m - 1:]
        order = idx[np.argsort(-scores[idx].astype(np.float64), kind="stable")]
        cum = np.cumsum(weights[order], dtype=np.float64)
        count = int(np.searchsorted(cum, want)) + 1  # the fewest top scores whose weight reaches want
        if count < len(order):
            break
        if m == n_pairs - 1:
            raise ValueError("the scores' weights never reach the tail's share")
        m = min(n_pairs - 1, 4 * m)
    return (scores[order[:count]].astype(np.float64), weights[order[:count]].astype(np.float64),
            float(scores[order[count]]), total)


def fit_tail(scores: np.ndarray, k: float | None = None, bootstrap: int = BOOTSTRAP, seed: int = 0,
             confidence: float = CONFIDENCE, top_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
             n_images: int | None = None, weights: np.ndarray | None = None,
             image_weights: np.ndarray | None = None) -> TailModel:
    """Fit the GPD to the excesses of the ``k`` highest of the impostor ``scores`` (default :func:`default_k`).

    ``weights`` (one per score, with ``image_weights``, one per image, when ``top_pairs`` are
    given: a pair's weight is the product of its images'): a weighted FMR, the share of the total
    weight above a score rather than of the pairs (identity-balanced calibration, see
    ``evaluation.calibrate``). Then ``n`` is the total weight, ``k`` the weight of the tail (the
    fewest top scores that reach it), and every count below (the rule of 30, the goodness of
    fit, the bootstrap's exceedances) is a weight.

    Bootstrap (``bootstrap`` replicates, deterministic for a ``seed``), when the scores are
    independent: the number of exceedances drawn from Binomial(n, k/n), the excesses resampled
    with replacement, the GPD refitted. When the scores are pairs of ``n_images`` images and
    ``top_pairs`` = (scores, image a, image b) holds at least the top k of them: the images are
    resampled instead (each gets a Poisson(1) weight, a pair the product of its two), so that an
    image in many top pairs (a look-alike, a mislabelled photo) moves them all together.
    """
    scores = np.asarray(scores)
    top_desc, top_w, u, n = _top(scores, k, weights)
    count = len(top_desc)
    cum = np.cumsum(top_w)
    excesses = top_desc - u
    p_u = float(cum[-1] / n)
    weighted = weights is not None
    xi, sigma = _fit(excesses, weights=top_w if weighted else None)
    gof = gof_max_log10_error(top_desc, n, u, p_u, xi, sigma, cum)
    gof_z = gof_max_z(top_desc, n, u, p_u, xi, sigma, cum)
    rng = np.random.default_rng(seed)
    boot = np.empty((bootstrap, 3))
    if top_pairs is None:
        method = "exceedances"
        for b in range(bootstrap):
            k_b = max(int(rng.binomial(len(scores), count / len(scores))), 2)
            pick = rng.integers(0, count, k_b)
            boot[b] = (float(top_w[pick].sum()) / n,
                       *_fit(excesses[pick], (xi, sigma), top_w[pick] if weighted else None))
    else:
        method = "images"
        top_scores, img_a, img_b = (np.asarray(x) for x in top_pairs)
        order = np.argsort(-top_scores.astype(np.float64), kind="stable")[:count]
        if len(order) < count or not np.allclose(np.sort(top_scores[order].astype(np.float64))[::-1], top_desc):
            raise ValueError("top_pairs must hold the k highest of the scores")
        ex, a, bb = top_scores[order].astype(np.float64) - u, img_a[order], img_b[order]
        if weighted:
            if image_weights is None:
                raise ValueError("weighted scores with top_pairs need image_weights")
            iw = np.asarray(image_weights, np.float64)
            pair_w = iw[a] * iw[bb]
            if not np.isclose(pair_w.sum(), top_w.sum(), rtol=1e-3):  # tied scores may come in another order
                raise ValueError("image_weights do not give the weights of the top pairs")
        else:
            pair_w = np.ones(count)
        for b in range(bootstrap):
            w = rng.poisson(1.0, n_images)
            pw = w[a] * w[bb] * pair_w
            k_b = max(float(pw.sum()), 2.0 * float(pair_w.min()))
            boot[b] = (k_b / (n * w.mean() ** 2), *_fit(ex, (xi, sigma), np.where(pw > 0, pw, 0.0)))
    model = TailModel(u, p_u, xi, sigma, n, count, boot[:, 0].copy(), boot[:, 1].copy(), boot[:, 2].copy(), gof,
                      ABSOLUTE_FLOOR, confidence, method, gof_z, weighted)
    return TailModel(**{**model.__dict__, "floor": _floor(model)})
