"""Open-set identification by FPIR: the per-comparison FMR a search needs as the gallery grows.

The model. A search compares a probe with each of the N faces of a gallery and reports a
match when any comparison scores at or above the threshold t. For a probe of someone not
enrolled (a stranger), each gallery face is an independent chance of a false match with
probability FMR(t), so the false-positive identification rate is::

    FPIR(t, N) = 1 - (1 - FMR(t)) ** N              (about N * FMR(t) while that is small)

and the per-comparison FMR that keeps FPIR at a target is ``1 - (1 - FPIR) ** (1 / N)``.
Both are computed as ``-expm1(N * log1p(-FMR))`` and ``-expm1(log1p(-FPIR) / N)``: exact for
FMR ~1e-12 and N ~1e9, where the naive forms round to 0 or 1.

Why this is safe when the independence does not hold. The N scores of one probe share the
probe, so the chance of a false match varies from probe to probe (some faces look like many
others). With a probe-dependent FMR F_p whose mean over probes is FMR, the FPIR is
E[1 - (1 - F_p) ** N], which is at most 1 - (1 - FMR) ** N because x -> 1 - (1 - x) ** N is
concave (Jensen): the formula overestimates the FPIR, it never underestimates it. The same
holds for a subject's k faces compared with one impostor (:func:`best_of_k_fmr`): their
scores are positively dependent (one person's photos look alike), and for positively
associated scores P(all below t) >= the product of the marginals, so the chance that the
best of k is a false match is again at most 1 - (1 - FMR) ** k.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from faceledger.errors import InvalidArgument, NotCalibrated
from faceledger.matching.calibration import Calibration, Threshold


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be a probability in [0, 1], not {value!r}")


def _check_count(name: str, value: int) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, not {value!r}")


def fpir_at(fmr: float, n: int) -> float:
    """FPIR of a search of ``n`` gallery faces at a threshold whose per-comparison FMR is ``fmr``.

    ``1 - (1 - fmr) ** n``, computed stably; 0 for an empty gallery.
    """
    _check_rate("fmr", fmr)
    _check_count("n", n)
    if n == 0 or fmr == 0.0:
        return 0.0
    if fmr == 1.0:
        return 1.0
    return -math.expm1(n * math.log1p(-fmr))


def fmr_for_fpir(target_fpir: float, n: int) -> float:
    """The per-comparison FMR at which a search of ``n`` gallery faces has FPIR ``target_fpir``.

    ``1 - (1 - target_fpir) ** (1 / n)`` (about target_fpir / n), computed stably. For n <= 1 it is
    the target itself (one comparison, or none: any threshold meets the target).
    """
    _check_rate("target_fpir", target_fpir)
    _check_count("n", n)
    if n <= 1 or target_fpir in (0.0, 1.0):
        return target_fpir
    return -math.expm1(math.log1p(-target_fpir) / n)


def fpir_threshold(calibration: Calibration, target_fpir: float, n: int) -> Threshold:
    """The per-comparison threshold that keeps a search of ``n`` gallery faces at FPIR ``target_fpir``.

    The calibration's threshold (:meth:`Calibration.threshold_info`) for ``fmr_for_fpir(target_fpir,
    n)``: measured when that FMR is within the measured range, else extrapolated from the impostor
    tail (conservative: with its confidence, the FMR and so the FPIR are at most the targets).
    Raises ``NotCalibrated`` when the gallery is too large for the calibration at that target.
    An empty gallery is treated as one face (a threshold is still needed for the first search).
    """
    return calibration.threshold_info(fmr_for_fpir(target_fpir, max(n, 1)))


def best_of_k_fmr(target_fmr: float, k: int) -> float:
    """The per-comparison FMR that keeps a claim's FMR at ``target_fmr`` when it takes the best of ``k``.

    A verification against a subject with k enrolled faces matches when any of the k comparisons
    does: its FMR is 1 - (1 - FMR) ** k, so each comparison needs ``1 - (1 - target) ** (1 / k)``.
    """
    return fmr_for_fpir(target_fmr, k)


def equivalent_fpir(target_fmr: float, n: int) -> float:
    """The FPIR that a per-comparison FMR policy ``target_fmr`` amounts to for a gallery of ``n`` faces.

    For migrating a collection whose policy was a per-comparison FMR: keeping its current FPIR
    means choosing ``equivalent_fpir(old_fmr, current_size)`` as its target, after which the
    per-comparison threshold rises as the gallery grows instead of the FPIR.
    """
    return fpir_at(target_fmr, n)


def fpir_at_score(calibration: Calibration, score: float, n: int) -> tuple[float, float, str]:
    """(FPIR, its upper confidence bound, basis) of a search of ``n`` faces at threshold ``score``.

    ``basis`` is the FMR's: "measured", "extrapolated" or "bound" (the FMR, and so the FPIR, is
    at most the value given).
    """
    fmr, upper, basis = calibration.fmr_detail(score)
    return fpir_at(fmr, n), fpir_at(upper, n), basis


# ---------------------------------------------------------------------------- the decision rule
MATCH, REVIEW, UNKNOWN = "match", "review", "unknown"
REVIEW_FACTOR = 10.0  # the review band: scores a stranger reaches in at most 10x the target's searches
MAX_REVIEW_FPIR = 0.5
MAX_TARGET_FPIR = 0.5  # a policy that lets every other stranger be "matched" is no policy
MAX_SCORE = 1.0  # cosine similarity of unit templates
REVIEW_CAP = 0.95  # the review band never starts above this similarity (far above every impostor measured)


def check_target_fpir(value: float, field: str = "target_fpir") -> None:
    """Refuse (InvalidArgument, naming ``field``) a target FPIR outside (0, MAX_TARGET_FPIR]."""
    if not 0 < value <= MAX_TARGET_FPIR:
        raise InvalidArgument(f"{field} is a probability in (0, {MAX_TARGET_FPIR}]", **{field: value})


@dataclass(frozen=True)
class OpenSetPolicy:
    """What a search of a gallery of ``gallery_faces`` faces decides at a target FPIR.

    * "match": the top candidate scores at least ``threshold`` (the per-comparison threshold whose
      FPIR at this gallery size is the target), the second candidate does not, and the top one is
      at least ``margin`` ahead of it. So a candidate list never holds two matches.
    * "review": a possible match for a person to judge: the top candidate scores at least
      ``review_score`` (the threshold of ``REVIEW_FACTOR`` x the target FPIR) without meeting the
      match rule, or the target cannot be supported at this gallery size (``supported`` False:
      the calibration cannot give a threshold for so small an FMR with stated confidence), where
      nothing is ever called a match.
    * "unknown": nothing scores in the review band.
    """

    target_fpir: float
    gallery_faces: int
    threshold: Threshold | None  # None: the target is not supported at this size
    review: Threshold
    margin: float = 0.0

    @property
    def supported(self) -> bool:
        return self.threshold is not None

    @property
    def match_score(self) -> float | None:
        return None if self.threshold is None else self.threshold.score

    @property
    def review_score(self) -> float:
        return self.review.score if self.threshold is None else min(self.review.score, self.threshold.score)

    @property
    def fpir_upper(self) -> float | None:
        """The FPIR at the match threshold, at its upper confidence bound (None when unsupported)."""
        return None if self.threshold is None else fpir_at(self.threshold.fmr_upper, self.gallery_faces)

    @classmethod
    def derive(cls, calibration: Calibration, target_fpir: float, gallery_faces: int, *,
               margin: float = 0.0) -> OpenSetPolicy:
        """The thresholds for ``target_fpir`` at this gallery size, re-derived on every search."""
        _check_rate("target_fpir", target_fpir)
        n = max(gallery_faces, 1)
        try:
            threshold = fpir_threshold(calibration, target_fpir, n)
        except NotCalibrated:
            threshold = None
        if threshold is not None and threshold.score >= MAX_SCORE:  # no similarity could reach it
            threshold = None
        review_fpir = min(target_fpir * REVIEW_FACTOR, MAX_REVIEW_FPIR)
        try:
            review = fpir_threshold(calibration, review_fpir, n)
        except NotCalibrated:  # a gallery too large even for the review band: the strictest threshold known
            review = calibration.threshold_info(calibration.lowest_fmr)
        if review.score >= MAX_SCORE:  # never "unknown" for everyone: near-identical faces still go to review
            review = dataclasses.replace(review, score=REVIEW_CAP)
        return cls(target_fpir, gallery_faces, threshold, review, margin)

    def decide(self, top: float | None, second: float | None = None) -> str:
        """The decision for one probe face from its best and second-best subjects' similarities."""
        if top is None or top < self.review_score:
            return UNKNOWN
        if self.threshold is None or top < self.threshold.score:
            return REVIEW
        if second is not None and (second >= self.threshold.score or top - second < self.margin):
            return REVIEW
        return MATCH

    def decide_many(self, top: np.ndarray, second: np.ndarray) -> np.ndarray:
        """:meth:`decide` over arrays (``second`` NaN where there is no second subject), for evaluation."""
        top, second = np.asarray(top, np.float64), np.asarray(second, np.float64)
        out = np.full(top.shape, UNKNOWN, dtype=object)
        out[top >= self.review_score] = REVIEW
        if self.threshold is not None:
            t = self.threshold.score
            clear = np.isnan(second) | ((second < t) & (top - second >= self.margin))
            out[(top >= t) & clear] = MATCH
        return out

    def to_dict(self) -> dict:
        return {"target_fpir": self.target_fpir, "gallery_faces": self.gallery_faces, "supported": self.supported,
                "threshold": None if self.threshold is None else round(self.threshold.score, 6),
                "threshold_fmr": None if self.threshold is None else self.threshold.fmr,
                "basis": None if self.threshold is None else self.threshold.basis,
                "fpir_upper": self.fpir_upper,
                "confidence": self.review.confidence,
                "review_threshold": round(self.review_score, 6), "margin": self.margin}
