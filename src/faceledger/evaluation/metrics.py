"""Verification statistics (NIST FRTE vocabulary) on genuine and impostor similarity scores.

A comparison is a match when ``score >= threshold``. FMR is the share of impostor scores
at or above the threshold; FNMR the share of genuine scores below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the threshold maths lives in matching (calibration needs it); re-exported here with the other statistics
from faceledger.matching.rates import fmr_at, fnmr_at, threshold_at_fmr  # noqa: F401


@dataclass(frozen=True)
class Curve:
    """ROC / DET points: at each threshold (descending), FMR and FNMR."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray

    @property
    def tmr(self) -> np.ndarray:
        return 1.0 - self.fnmr


def error_curve(genuine: np.ndarray, impostor: np.ndarray) -> Curve:
    genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    thresholds = np.unique(np.concatenate([genuine, impostor]))[::-1]
    impostor_sorted, genuine_sorted = np.sort(impostor), np.sort(genuine)
    fmr = 1.0 - np.searchsorted(impostor_sorted, thresholds, side="left") / len(impostor)
    fnmr = np.searchsorted(genuine_sorted, thresholds, side="left") / len(genuine)
    thresholds = np.concatenate([[np.inf], thresholds])
    return Curve(thresholds, np.concatenate([[0.0], fmr]), np.concatenate([[1.0], fnmr]))


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate: where FMR and FNMR cross (linear interpolation between points)."""
    c = error_curve(genuine, impostor)
    diff = c.fmr - c.fnmr  # rises from -1 to >= 0 as the threshold falls
    i = int(np.argmax(diff >= 0))
    if i == 0:
        return float(c.fmr[0])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1) if d1 != d0 else 0.0
    return float(c.fmr[i - 1] + w * (c.fmr[i] - c.fmr[i - 1]))


def tmr_at_fmr(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> float:
    """True-match rate (TAR) at the threshold that gives at most ``fmr`` on these impostors."""
    return 1.0 - fnmr_at(genuine, threshold_at_fmr(impostor, fmr))


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine score beats an impostor score (ties count half)."""
    genuine, impostor = np.asarray(genuine, np.float64), np.asarray(impostor, np.float64)
    ranks = _average_ranks(np.concatenate([genuine, impostor]))
    n_g, n_i = len(genuine), len(impostor)
    return float((ranks[:n_g].sum() - n_g * (n_g + 1) / 2) / (n_g * n_i))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x))
    starts = np.r_[0, np.nonzero(np.diff(sorted_x))[0] + 1]
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2  # 1-based average rank of the tie group
    return ranks


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold that maximises verification accuracy on labelled pairs (midpoint between scores)."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    order = np.argsort(scores)
    s, y = scores[order], same[order]
    # threshold just above s[k]: pairs 0..k are rejected; correct = impostors in 0..k + genuines above
    correct = np.cumsum(~y) + (y.sum() - np.cumsum(y))
    k = int(np.argmax(correct))
    best_all_accept = y.sum()  # threshold below everything
    if best_all_accept >= correct[k]:
        return float(s[0] - 1e-6)
    return float((s[k] + s[k + 1]) / 2) if k + 1 < len(s) else float(s[k] + 1e-6)


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((np.asarray(scores) >= threshold) == np.asarray(same, bool)))


def wilson_interval(errors: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for an error rate of ``errors`` out of ``trials``."""
    if trials == 0:
        return (float("nan"), float("nan"))
    p = errors / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))
