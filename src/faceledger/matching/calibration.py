"""Calibration: what false-match rate a similarity score corresponds to, for one model.

Built once from a large impostor distribution (LFW: every cross-identity pair among the
images of ``pairs.txt``) and stored as JSON next to the code, keyed by the model id, so
that callers set thresholds as "FMR 1e-4" rather than as raw scores. Pairs may carry weights
(the packaged calibrations are identity-balanced, see ``evaluation.calibrate``): an FMR is then
the share of the total weight, and every count below is a weight.

An FMR is *measured* where at least ``MIN_ERRORS`` impostor pairs lie above the threshold
(the "rule of 30"): with ~100 million impostor pairs that is ~3e-7. Below that, a calibration
with a ``tail`` (:mod:`faceledger.matching.tail`: a generalized Pareto fit of the top impostor
scores, with bootstrap bounds) *extrapolates*: thresholds are conservative (with 95%
confidence the FMR at them is at most the target), down to the tail's ``floor``; lower
targets are refused with :class:`NotCalibrated`. A calibration without a tail (older JSON)
refuses every target below the resolution, and reports scores above it as an upper bound.
Every threshold says which it is: :meth:`Calibration.threshold_info`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from faceledger.errors import NotCalibrated
from faceledger.matching import rates
from faceledger.matching.tail import TailModel, fit_tail

FMR_LEVELS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7)
PACKAGED = "faceledger.matching.calibrations"
MIN_ERRORS = 30
MEASURED, EXTRAPOLATED, BOUND = "measured", "extrapolated", "bound"


def file_name(model_id: str) -> str:
    return hashlib.sha256(model_id.encode()).hexdigest()[:16] + ".json"


@dataclass(frozen=True)
class Threshold:
    """A similarity threshold for a target FMR, and how well its FMR is known.

    ``fmr`` is the FMR at ``score`` (measured, or the tail's point estimate); ``fmr_upper`` its
    upper ``confidence`` bound (equal to ``fmr`` where measured). Either way ``fmr_upper`` is at
    most ``target``: an extrapolated threshold is the conservative one.
    """

    score: float
    fmr: float
    basis: str  # "measured" | "extrapolated"
    fmr_upper: float
    confidence: float = 0.95
    target: float | None = None

    def to_dict(self) -> dict:
        return {"score": self.score, "fmr": self.fmr, "basis": self.basis, "fmr_upper": self.fmr_upper,
                "confidence": self.confidence, "target": self.target}


@dataclass(frozen=True)
class Calibration:
    model_id: str
    source: str
    impostor_pairs: int
    genuine_pairs: int
    curve_scores: np.ndarray  # ascending
    curve_fmr: np.ndarray  # FMR at each score (descending)
    thresholds: dict[float, float]  # FMR level -> threshold (measured levels only)
    fnmr: dict[float, float]  # FNMR on the genuine pairs at each level's threshold
    created: str
    tail: TailModel | None = field(default=None, compare=False)
    impostor_weight: float = 0.0  # total weight of the impostor pairs (identity-balanced); 0: unweighted

    @property
    def weight(self) -> float:
        """What FMRs are shares of: the impostor pairs, or (weighted) their total weight, ~ the identity pairs."""
        return self.impostor_weight or float(self.impostor_pairs)

    @property
    def resolution(self) -> float:
        """The smallest FMR this calibration measures: MIN_ERRORS impostor pairs (or weight) above the threshold."""
        return MIN_ERRORS / self.weight

    @property
    def lowest_fmr(self) -> float:
        """The smallest FMR a threshold can be given for: the tail's floor, or the resolution without a tail."""
        return self.tail.floor if self.tail is not None else self.resolution

    @classmethod
    def build(cls, model_id: str, impostor: np.ndarray, genuine: np.ndarray, source: str, *, tail: bool = True,
              k: float | None = None, bootstrap: int | None = None, seed: int = 0,
              top_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
              n_images: int | None = None, weights: np.ndarray | None = None,
              image_weights: np.ndarray | None = None) -> Calibration:
        """The empirical curve and measured thresholds, and (``tail``) the tail fit (see ``fit_tail``).

        ``weights``: one per impostor score (``image_weights``: one per image, a pair's weight the
        product of its two): the FMR at a score is then the share of the total weight at or above
        it, and the rule of 30 counts weight (see ``evaluation.calibrate``: identity-balanced).
        """
        impostor = np.asarray(impostor, np.float32)
        n = len(impostor)
        order = np.argsort(impostor)[::-1]
        impostor = impostor[order]
        if weights is not None:
            weights = np.asarray(weights, np.float32)[order]
            cum = np.cumsum(weights, dtype=np.float64)  # weight of the top i + 1 scores
        else:
            cum = np.arange(1, n + 1, dtype=np.float64)
        del order
        total = float(cum[-1])
        # the curve: 400 FMRs spaced evenly in log from the top score's to 1; FMR(score of the i-th) = cum / total
        wanted = np.logspace(np.log10(cum[0] / total), 0, 400) * total
        idx = np.unique(np.minimum(np.searchsorted(cum, wanted * (1 - 1e-12)), n - 1))
        scores = impostor[idx].astype(np.float64)
        fmr = cum[idx] / total
        levels = [f for f in FMR_LEVELS if f * total >= MIN_ERRORS]
        # as rates.threshold_at_fmr: just above the highest score that the scores above it do not outweigh f
        thresholds = {}
        for f in levels:
            above = int(np.searchsorted(cum, f * total * (1 + 1e-12), side="right"))  # scores whose cum <= f total
            thresholds[f] = float(np.nextafter(np.float64(impostor[min(above, n - 1)]), np.inf))
        del cum
        model = None
        if tail:
            kwargs = {} if bootstrap is None else {"bootstrap": bootstrap}
            model = fit_tail(impostor, k, seed=seed, top_pairs=top_pairs, n_images=n_images, weights=weights,
                             image_weights=image_weights, **kwargs)
        return cls(model_id, source, n, len(genuine), scores[::-1].copy(), fmr[::-1].copy(), thresholds,
                   {f: rates.fnmr_at(genuine, t) for f, t in thresholds.items()},
                   dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), model,
                   0.0 if weights is None else total)

    # ------------------------------------------------------------------ score -> FMR
    def fmr(self, score: float) -> tuple[float, bool]:
        """(FMR, is_upper_bound) for a similarity score: the share of impostors scoring at least as high.

        Measured up to the resolution; beyond it the tail's point estimate (not a bound), and
        beyond the score of the tail's floor (or, without a tail, beyond the resolution) the
        lowest supported FMR as an upper bound.
        """
        value, basis = self.fmr_info(score)
        return value, basis == BOUND

    def fmr_info(self, score: float) -> tuple[float, str]:
        """(FMR, basis): basis "measured", "extrapolated" (the tail's point estimate) or "bound" (at most)."""
        value, _, basis = self.fmr_detail(score)
        return value, basis

    def fmr_detail(self, score: float) -> tuple[float, float, str]:
        """(FMR, its upper confidence bound, basis) at ``score``; the bound equals the FMR unless extrapolated."""
        if score <= self._score_at_resolution:
            if score <= self.curve_scores[0]:
                value = float(self.curve_fmr[0])
            else:
                value = float(10 ** np.interp(score, self.curve_scores, np.log10(self.curve_fmr)))
            return value, value, MEASURED
        if self.tail is None:
            return self.resolution, self.resolution, BOUND
        if score >= self._score_at_floor:
            return self.tail.floor, self.tail.floor, BOUND
        value = min(max(self.tail.fmr(score), self.tail.floor), self.resolution)
        return value, max(self.tail.fmr_upper(score), value), EXTRAPOLATED

    @functools.cached_property
    def _score_at_resolution(self) -> float:
        return float(np.interp(np.log10(self.resolution), np.log10(self.curve_fmr[::-1]), self.curve_scores[::-1]))

    @functools.cached_property
    def _score_at_floor(self) -> float:
        """The conservative threshold at the tail's floor: above it the FMR is at most the floor."""
        return max(self.tail.threshold_unchecked(self.tail.floor), self._score_at_resolution)

    # ------------------------------------------------------------------ FMR -> score
    def threshold(self, fmr: float) -> float:
        """The similarity threshold for a target FMR: measured where it can be, else the conservative tail one.

        Raises :class:`NotCalibrated` below :attr:`lowest_fmr`.
        """
        return self.threshold_info(fmr).score

    def threshold_info(self, fmr: float) -> Threshold:
        """The threshold for a target FMR, with its basis ("measured" or "extrapolated") and FMR bound."""
        if fmr >= self.resolution:
            score = self._measured_threshold(fmr)
            return Threshold(score, fmr, MEASURED, fmr, self.tail.confidence if self.tail else 0.95, fmr)
        if self.tail is None:
            raise NotCalibrated(
                f"FMR {fmr:g} is below what the calibration can estimate ({MIN_ERRORS} false matches in "
                f"{self.weight:,.0f} impostor pairs{' (identity-weighted)' if self.impostor_weight else ''}: "
                f"{self.resolution:.1g}), and it has no tail model to "
                f"extrapolate with", lowest_fmr=self.resolution)
        known = self._extrapolated.get(fmr)
        if known is not None:
            return known
        score = max(self.tail.threshold(fmr), self._score_at_resolution)  # raises below the tail's floor
        point = min(self.tail.fmr(score), self.resolution)
        found = Threshold(score, point, EXTRAPOLATED, max(min(self.tail.fmr_upper(score), fmr), point),
                          self.tail.confidence, fmr)
        if len(self._extrapolated) >= 4096:
            self._extrapolated.clear()
        self._extrapolated[fmr] = found
        return found

    @functools.cached_property
    def _extrapolated(self) -> dict[float, Threshold]:
        """Extrapolated thresholds already worked out (0.5 ms each from the tail model; every search asks for
        two, for its gallery's size, which changes only when faces are enrolled or erased)."""
        return {}

    def _measured_threshold(self, fmr: float) -> float:
        if fmr in self.thresholds:
            return self.thresholds[fmr]
        if fmr >= self.curve_fmr[0]:
            return float(self.curve_scores[0])
        return float(np.interp(np.log10(fmr), np.log10(self.curve_fmr[::-1]), self.curve_scores[::-1]))

    def to_dict(self) -> dict:
        return {
            "model_id": self.model_id, "source": self.source, "created": self.created,
            "impostor_pairs": self.impostor_pairs, "genuine_pairs": self.genuine_pairs,
            **({"impostor_weight": round(self.impostor_weight, 3)} if self.impostor_weight else {}),
            "thresholds": {f"{k:g}": round(v, 6) for k, v in self.thresholds.items()},
            "fnmr_at_threshold": {f"{k:g}": round(v, 6) for k, v in self.fnmr.items()},
            "curve": {"score": [round(float(s), 6) for s in self.curve_scores],
                      "fmr": [float(f"{f:.6g}") for f in self.curve_fmr]},
            **({"tail": self.tail.to_dict()} if self.tail is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(d["model_id"], d["source"], int(d["impostor_pairs"]), int(d["genuine_pairs"]),
                   np.array(d["curve"]["score"]), np.array(d["curve"]["fmr"]),
                   {float(k): float(v) for k, v in d["thresholds"].items()},
                   {float(k): float(v) for k, v in d["fnmr_at_threshold"].items()}, d["created"],
                   TailModel.from_dict(d["tail"]) if d.get("tail") else None, float(d.get("impostor_weight", 0.0)))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / file_name(self.model_id)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def load_calibration(model_id: str, home: Path | None = None) -> Calibration | None:
    """The calibration for ``model_id``: a local one under ``home/calibrations`` first, then the packaged one."""
    name = file_name(model_id)
    candidates = [home / "calibrations" / name] if home else []
    candidates.append(resources.files(PACKAGED) / name)
    for path in candidates:
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("model_id") == model_id:
                return Calibration.from_dict(data)
    return None


def packaged_dir() -> Path:
    return Path(str(resources.files(PACKAGED)))
