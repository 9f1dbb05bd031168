"""1:1 comparison of templates: cosine similarity, its calibrated FMR, and a decision at a target FMR.

A claim checked against a subject with k enrolled faces takes the best of k comparisons, which
multiplies the chances of a false match (about k x FMR): the threshold is then the one for
``best_of_k_fmr(target, k)``, so the claim's FMR stays at the target whatever k is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceledger.errors import IncompatibleTemplates
from faceledger.matching.calibration import Calibration, NotCalibrated
from faceledger.matching.openset import best_of_k_fmr

UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Template:
    vector: np.ndarray  # unit vector
    model_id: str


def similarity(a: Template, b: Template) -> float:
    if a.model_id != b.model_id:
        raise IncompatibleTemplates("templates from different models cannot be compared",
                                    model_a=a.model_id, model_b=b.model_id)
    if a.vector.shape != b.vector.shape:
        raise IncompatibleTemplates(f"template sizes differ: {a.vector.shape} and {b.vector.shape}")
    return float(np.dot(a.vector, b.vector))


@dataclass(frozen=True)
class Comparison:
    similarity: float
    fmr: float | None  # the false-match rate this score corresponds to
    fmr_is_upper_bound: bool  # the score is above every calibration impostor: FMR is below this bound
    target_fmr: float | None
    threshold: float | None
    match: bool | None
    faces_compared: int = 1  # a claim against a subject: the best of its k faces
    threshold_basis: str | None = None  # "measured", "extrapolated" (impostor tail model) or "unsupported"

    def to_dict(self) -> dict:
        return {"similarity": round(self.similarity, 6), "fmr": self.fmr, "fmr_is_upper_bound": self.fmr_is_upper_bound,
                "target_fmr": self.target_fmr, "threshold": None if self.threshold is None else round(self.threshold, 6),
                "threshold_basis": self.threshold_basis, "faces_compared": self.faces_compared, "match": self.match}


def decide(score: float, calibration: Calibration | None, target_fmr: float | None, *, k: int = 1) -> Comparison:
    """The decision on ``score``, the best of ``k`` comparisons, at ``target_fmr`` for the claim as a whole."""
    if calibration is None:
        if target_fmr is not None:
            raise NotCalibrated("this model has no calibration; run `faceledger eval calibrate` first")
        return Comparison(score, None, False, None, None, None, k)
    fmr, bound = calibration.fmr(score)
    if target_fmr is None:
        return Comparison(score, fmr, bound, None, None, None, k)
    try:
        threshold = calibration.threshold_info(best_of_k_fmr(target_fmr, max(k, 1)))
    except NotCalibrated:
        if k == 1:
            raise
        # a target the collection accepted, split over k faces, falls below what the calibration supports:
        # no decision rather than a pretended one
        return Comparison(score, fmr, bound, target_fmr, None, None, k, UNSUPPORTED)
    return Comparison(score, fmr, bound, target_fmr, threshold.score, bool(score >= threshold.score), k,
                      threshold.basis)


def compare(a: Template, b: Template, calibration: Calibration | None, target_fmr: float | None = None) -> Comparison:
    return decide(similarity(a, b), calibration, target_fmr)
