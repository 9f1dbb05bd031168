"""Error rates at a score threshold, and the threshold for a target false-match rate.

A comparison is a match when ``score >= threshold``. FMR is the share of impostor scores
at or above the threshold; FNMR the share of genuine scores below it. Matching needs these
for calibration; ``faceledger.evaluation.metrics`` re-exports them with the rest of its
statistics (evaluation may import matching, never the other way round).
"""

from __future__ import annotations

import numpy as np


def fmr_at(impostor: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(impostor) >= threshold)) if len(impostor) else float("nan")


def fnmr_at(genuine: np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(genuine) < threshold)) if len(genuine) else float("nan")


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """The lowest threshold whose FMR does not exceed ``fmr``.

    With n impostor scores, FMRs below 1/n cannot be measured: the threshold is then
    just above the highest impostor score, and the FMR it gives is reported as 0 of n.
    """
    scores = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    allowed = int(np.floor(fmr * len(scores)))  # how many impostors may match
    if allowed >= len(scores):
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.inf))
