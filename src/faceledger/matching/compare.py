"""1:1 comparison of templates: cosine similarity, its calibrated FMR, and a decision at a target FMR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceledger.errors import IncompatibleTemplates
from faceledger.matching.calibration import Calibration, NotCalibrated


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

    def to_dict(self) -> dict:
        return {"similarity": round(self.similarity, 6), "fmr": self.fmr, "fmr_is_upper_bound": self.fmr_is_upper_bound,
                "target_fmr": self.target_fmr, "threshold": None if self.threshold is None else round(self.threshold, 6),
                "match": self.match}


def decide(score: float, calibration: Calibration | None, target_fmr: float | None) -> Comparison:
    if calibration is None:
        if target_fmr is not None:
            raise NotCalibrated("this model has no calibration; run `faceledger eval calibrate` first")
        return Comparison(score, None, False, None, None, None)
    fmr, bound = calibration.fmr(score)
    if target_fmr is None:
        return Comparison(score, fmr, bound, None, None, None)
    threshold = calibration.threshold(target_fmr)
    return Comparison(score, fmr, bound, target_fmr, threshold, bool(score >= threshold))


def compare(a: Template, b: Template, calibration: Calibration | None, target_fmr: float | None = None) -> Comparison:
    return decide(similarity(a, b), calibration, target_fmr)
