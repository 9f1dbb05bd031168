"""Error rates per demographic group (NIST IR 8280 style), from evaluation labels only.

faceledger never infers a demographic attribute from a face: the labels here come from the
evaluation data (LFW's published gender and race lists, UTKFace's annotations).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from faceledger.evaluation.metrics import wilson_interval

MIN_ERRORS = 30  # an FMR is conclusive where the target rate expects at least this many false matches
MIN_GENUINE = 3000  # an FNMR is conclusive with this many genuine pairs (30 errors at an FNMR of 1%)


def lfw_labels(path: Path) -> dict[str, dict[str, str]]:
    """image -> {"gender": M/F, "race": single label}; mixed, conflicting or missing labels are left out."""
    out = {}
    with path.open() as fh:
        for row in csv.DictReader(fh):
            labels = {}
            if row.get("gender_afifi2017") in ("M", "F"):
                labels["gender"] = row["gender_afifi2017"]
            race = (row.get("race_uscsail_multi") or "").strip()
            if race and "," not in race:
                labels["race"] = race
            out[row["image"]] = labels
    return out


def rate(errors: int, trials: int) -> dict:
    lo, hi = wilson_interval(errors, trials)
    return {"rate": errors / trials if trials else None, "errors": int(errors), "trials": int(trials),
            "ci95": [lo, hi] if trials else None}


def group_rates(templates: np.ndarray, identities: list[str], groups: list[str | None],
                thresholds: dict[float, float], sample: int = 200_000, seed: int = 0) -> dict:
    """FMR and FNMR per group at each global threshold, group-calibrated thresholds, impostor score samples.

    Impostor pairs are counted within a group (both images in it) and across groups;
    genuine pairs within a group. Each unordered pair of images is counted once. The
    group-calibrated threshold of a target FMR comes from every within-group impostor pair
    (its highest scores are kept), and only where the target expects ``MIN_ERRORS`` false
    matches among them.
    """
    ids = np.unique(np.array(identities), return_inverse=True)[1]
    names = sorted({g for g in groups if g})
    gidx = np.array([names.index(g) if g else -1 for g in groups])
    k = len(names)
    levels = sorted(thresholds)
    imp_n = np.zeros((k, k), np.int64)
    gen_n = np.zeros(k, np.int64)
    imp_err = {f: np.zeros((k, k), np.int64) for f in levels}
    gen_err = {f: np.zeros(k, np.int64) for f in levels}
    rng = np.random.default_rng(seed)
    within_sample: dict[str, list[np.ndarray]] = defaultdict(list)
    across_sample: list[np.ndarray] = []
    labelled = np.nonzero(gidx >= 0)[0]
    T, I, G = templates[labelled], ids[labelled], gidx[labelled]
    sizes = np.bincount(G, minlength=k)
    # the highest within-group impostor scores: enough for the largest target FMR on every pair of the group
    top = [_Top(int(max(levels, default=0) * s * (s - 1) / 2) + 1) for s in sizes]
    total_pairs = len(labelled) * (len(labelled) - 1) / 2
    keep_p = min(1.0, sample * 4 / max(total_pairs, 1))
    block = 1024
    for start in range(0, len(labelled), block):
        rows = slice(start, min(start + block, len(labelled)))
        sims = T[rows] @ T[start:].T
        upper = np.triu(np.ones(sims.shape, bool), k=1)
        same = I[rows, None] == I[None, start:]
        gi = np.broadcast_to(G[rows, None], sims.shape)
        gj = np.broadcast_to(G[None, start:], sims.shape)
        imp = upper & ~same
        gen = upper & same & (gi == gj)
        pair_code = gi * k + gj
        imp_n += np.bincount(pair_code[imp], minlength=k * k).reshape(k, k)
        gen_n += np.bincount(gi[gen], minlength=k)
        for f in levels:
            t = thresholds[f]
            hit = sims >= t
            imp_err[f] += np.bincount(pair_code[imp & hit], minlength=k * k).reshape(k, k)
            gen_err[f] += np.bincount(gi[gen & ~hit], minlength=k)
        pick = imp & (rng.random(sims.shape) < keep_p)
        within = imp & (gi == gj)
        for g in range(k):
            mine = within & (gi == g)
            within_sample[names[g]].append(sims[pick & mine])
            top[g].add(sims[mine & (sims >= top[g].floor)])
        across_sample.append(sims[pick & (gi != gj)])
    imp_n = imp_n + imp_n.T - np.diag(np.diag(imp_n))  # (a,b) and (b,a) are the same cross-group pairs
    out = {"groups": names, "by_fmr": {}}
    for f in levels:
        e = imp_err[f] + imp_err[f].T - np.diag(np.diag(imp_err[f]))
        per = {}
        for g, name in enumerate(names):
            fmr = rate(e[g, g], imp_n[g, g])
            fnmr = rate(gen_err[f][g], gen_n[g])
            cross_n = imp_n[g].sum() - imp_n[g, g]
            cross_e = e[g].sum() - e[g, g]
            per[name] = {"fmr": {**fmr, "conclusive": bool(imp_n[g, g] * f >= MIN_ERRORS),
                                 "expected_false_matches": float(imp_n[g, g] * f)},
                         "fnmr": {**fnmr, "conclusive": bool(gen_n[g] >= MIN_GENUINE)},
                         "fmr_across_groups": rate(cross_e, cross_n),
                         "group_calibrated_threshold": top[g].threshold(f, int(imp_n[g, g]))}
        out["by_fmr"][f"{f:g}"] = {"threshold": thresholds[f], "groups": per, **ratios(per)}
    out["impostor_samples"] = {**{f"within {g}": np.concatenate(v) for g, v in within_sample.items()},
                               "across groups": np.concatenate(across_sample)}
    return out


class _Top:
    """The ``keep`` highest scores offered so far."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.scores = np.empty(0, np.float64)
        self.floor = -np.inf  # scores below this cannot enter any more

    def add(self, scores: np.ndarray) -> None:
        scores = np.concatenate([self.scores, np.asarray(scores, np.float64)])
        if len(scores) > self.keep:
            scores = scores[np.argpartition(scores, len(scores) - self.keep)[len(scores) - self.keep:]]
            self.floor = float(scores.min())
        self.scores = scores

    def threshold(self, fmr: float, pairs: int) -> float | None:
        """As ``threshold_at_fmr`` on all ``pairs`` scores; None where the target expects < MIN_ERRORS matches."""
        if pairs * fmr < MIN_ERRORS:
            return None
        allowed = int(np.floor(fmr * pairs))
        ranked = np.sort(self.scores)[::-1]
        if allowed >= len(ranked):  # cannot happen while keep >= fmr * pairs + 1
            return None
        return float(np.nextafter(ranked[allowed], np.inf))


def ratios(per: dict) -> dict:
    """max/min of FMR and FNMR across conclusive groups (None when fewer than two, or a zero)."""
    out = {}
    for key in ("fmr", "fnmr"):
        values = [v[key]["rate"] for v in per.values() if v[key]["conclusive"] and v[key]["rate"]]
        out[f"{key}_max_min_ratio"] = (max(values) / min(values)) if len(values) >= 2 else None
    return out
