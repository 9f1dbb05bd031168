"""Calibration: what false-match rate a similarity score corresponds to, for one model.

Built once from a large impostor distribution (LFW: every cross-identity pair among the
images of ``pairs.txt``) and stored as JSON next to the code, keyed by the model id, so
that callers set thresholds as "FMR 1e-4" rather than as raw scores.

An FMR is only estimated where at least ``MIN_ERRORS`` impostor pairs lie above the
threshold (the "rule of 30"): with ~30 million LFW impostor pairs that is 1e-6. Lower
targets are refused, and scores above that point report the FMR as an upper bound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from faceledger.errors import NotCalibrated
from faceledger.matching import rates

FMR_LEVELS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7, 1e-7)
PACKAGED = "faceledger.matching.calibrations"
MIN_ERRORS = 30


def file_name(model_id: str) -> str:
    return hashlib.sha256(model_id.encode()).hexdigest()[:16] + ".json"


@dataclass(frozen=True)
class Calibration:
    model_id: str
    source: str
    impostor_pairs: int
    genuine_pairs: int
    curve_scores: np.ndarray  # ascending
    curve_fmr: np.ndarray  # FMR at each score (descending)
    thresholds: dict[float, float]  # FMR level -> threshold
    fnmr: dict[float, float]  # FNMR on the genuine pairs at each level's threshold
    created: str

    @property
    def resolution(self) -> float:
        """The smallest FMR this calibration estimates: MIN_ERRORS impostor pairs above the threshold."""
        return MIN_ERRORS / self.impostor_pairs

    @classmethod
    def build(cls, model_id: str, impostor: np.ndarray, genuine: np.ndarray, source: str) -> Calibration:
        impostor = np.sort(np.asarray(impostor, np.float64))[::-1]
        n = len(impostor)
        ranks = np.unique(np.round(np.logspace(0, np.log10(n), 400)).astype(np.int64))
        scores = impostor[ranks - 1]  # rank-th highest impostor score: FMR(score) = rank / n
        fmr = ranks / n
        levels = [f for f in FMR_LEVELS if f * n >= MIN_ERRORS]
        thresholds = {f: rates.threshold_at_fmr(impostor, f) for f in levels}
        return cls(model_id, source, n, len(genuine), scores[::-1].copy(), fmr[::-1].copy(), thresholds,
                   {f: rates.fnmr_at(genuine, t) for f, t in thresholds.items()},
                   dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def fmr(self, score: float) -> tuple[float, bool]:
        """(FMR, is_upper_bound) for a similarity score: the share of impostors scoring at least as high."""
        if score > self._score_at_resolution:
            return self.resolution, True
        if score <= self.curve_scores[0]:
            return float(self.curve_fmr[0]), False
        log_fmr = np.interp(score, self.curve_scores, np.log10(self.curve_fmr))
        return float(10**log_fmr), False

    @property
    def _score_at_resolution(self) -> float:
        return float(np.interp(np.log10(self.resolution), np.log10(self.curve_fmr[::-1]), self.curve_scores[::-1]))

    def threshold(self, fmr: float) -> float:
        """The similarity threshold for a target FMR (interpolated between measured levels)."""
        if fmr < self.resolution:
            raise NotCalibrated(
                f"FMR {fmr:g} is below what the calibration can estimate ({MIN_ERRORS} false matches in "
                f"{self.impostor_pairs:,} impostor pairs: {self.resolution:.1g})",
                lowest_fmr=self.resolution)
        if fmr in self.thresholds:
            return self.thresholds[fmr]
        if fmr >= self.curve_fmr[0]:
            return float(self.curve_scores[0])
        return float(np.interp(np.log10(fmr), np.log10(self.curve_fmr[::-1]), self.curve_scores[::-1]))

    def to_dict(self) -> dict:
        return {
            "model_id": self.model_id, "source": self.source, "created": self.created,
            "impostor_pairs": self.impostor_pairs, "genuine_pairs": self.genuine_pairs,
            "thresholds": {f"{k:g}": round(v, 6) for k, v in self.thresholds.items()},
            "fnmr_at_threshold": {f"{k:g}": round(v, 6) for k, v in self.fnmr.items()},
            "curve": {"score": [round(float(s), 6) for s in self.curve_scores],
                      "fmr": [float(f"{f:.6g}") for f in self.curve_fmr]},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        return cls(d["model_id"], d["source"], int(d["impostor_pairs"]), int(d["genuine_pairs"]),
                   np.array(d["curve"]["score"]), np.array(d["curve"]["fmr"]),
                   {float(k): float(v) for k, v in d["thresholds"].items()},
                   {float(k): float(v) for k, v in d["fnmr_at_threshold"].items()}, d["created"])

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
