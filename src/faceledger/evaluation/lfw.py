"""LFW's official verification protocol: 6,000 pairs in 10 folds, threshold chosen on the other nine."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceledger.config import Settings
from faceledger.evaluation import metrics
from faceledger.evaluation.batch import EmbeddedSet, embed_files
from faceledger.pipeline.engine import Components
from faceledger.pipeline.profiles import PROFILES, Component


@dataclass(frozen=True)
class Pairs:
    left: list[str]
    right: list[str]
    same: np.ndarray  # (P,) bool
    fold: np.ndarray  # (P,) 0..9

    def __len__(self) -> int:
        return len(self.same)

    def select(self, folds: list[int]) -> Pairs:
        keep = np.isin(self.fold, folds)
        idx = np.nonzero(keep)[0]
        return Pairs([self.left[i] for i in idx], [self.right[i] for i in idx], self.same[keep], self.fold[keep])

    @property
    def images(self) -> list[str]:
        return list(dict.fromkeys(self.left + self.right))


def image_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> Pairs:
    """Parse ``pairs.txt``: a header "folds n", then per fold n matched and n mismatched pairs."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    folds, per_fold = int(lines[0][0]), int(lines[0][1])
    left, right, same, fold = [], [], [], []
    for i, f in enumerate(lines[1:]):
        if len(f) == 3:
            left.append(image_path(f[0], int(f[1])))
            right.append(image_path(f[0], int(f[2])))
            same.append(True)
        elif len(f) == 4:
            left.append(image_path(f[0], int(f[1])))
            right.append(image_path(f[2], int(f[3])))
            same.append(False)
        else:
            raise ValueError(f"{path}: line {i + 2} is not a pair: {' '.join(f)}")
        fold.append(i // (2 * per_fold))
    if len(same) != folds * 2 * per_fold:
        raise ValueError(f"{path}: expected {folds * 2 * per_fold} pairs, found {len(same)}")
    return Pairs(left, right, np.array(same), np.array(fold))


def pair_scores(embedded: EmbeddedSet, pairs: Pairs, components: tuple[Component, ...]) -> np.ndarray:
    templates = Components(embedded.vectors).template(components)
    index = embedded.index()
    a = templates[[index[p] for p in pairs.left]]
    b = templates[[index[p] for p in pairs.right]]
    return np.einsum("ij,ij->i", a, b)


def ten_fold(scores: np.ndarray, pairs: Pairs) -> dict:
    """Accuracy per held-out fold with the threshold chosen on the remaining folds."""
    folds = sorted(set(pairs.fold.tolist()))
    accs, thresholds = [], []
    for k in folds:
        test = pairs.fold == k
        train = ~test if len(folds) > 1 else test
        t = metrics.best_accuracy_threshold(scores[train], pairs.same[train])
        accs.append(metrics.accuracy(scores[test], pairs.same[test], t))
        thresholds.append(t)
    return {"folds": folds, "accuracy_per_fold": accs, "thresholds": thresholds,
            "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs))}


def fused_ten_fold(score_a: np.ndarray, score_b: np.ndarray, pairs: Pairs) -> dict:
    """Score fusion ``w*a + (1-w)*b`` with ``w`` and the threshold both chosen on the training folds only."""
    weights = np.round(np.linspace(0.2, 0.8, 25), 3)
    folds = sorted(set(pairs.fold.tolist()))
    accs, chosen = [], []
    for k in folds:
        test = pairs.fold == k
        train = ~test if len(folds) > 1 else test
        best = max(weights, key=lambda w: _train_accuracy(w * score_a + (1 - w) * score_b, pairs.same, train))
        fused = best * score_a + (1 - best) * score_b
        t = metrics.best_accuracy_threshold(fused[train], pairs.same[train])
        accs.append(metrics.accuracy(fused[test], pairs.same[test], t))
        chosen.append(float(best))
    return {"accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "weights": chosen}


def _train_accuracy(scores: np.ndarray, same: np.ndarray, train: np.ndarray) -> float:
    t = metrics.best_accuracy_threshold(scores[train], same[train])
    return metrics.accuracy(scores[train], same[train], t)


def summarize(scores: np.ndarray, pairs: Pairs) -> dict:
    genuine, impostor = scores[pairs.same], scores[~pairs.same]
    out = ten_fold(scores, pairs)
    out.update({
        "pairs": len(pairs), "eer": metrics.eer(genuine, impostor), "roc_auc": metrics.roc_auc(genuine, impostor),
        "tar_at_far": {f"{far:g}": metrics.tmr_at_fmr(genuine, impostor, far) for far in (1e-2, 1e-3)},
    })
    return out


ABLATION = {
    "sface": (Component("sface", False),),
    "sface+flip": (Component("sface", True),),
    "dlib": (Component("dlib", False),),
    "dlib+flip": (Component("dlib", True),),
    "sface+dlib": (Component("sface", False), Component("dlib", False)),
    "sface+dlib, both flipped": (Component("sface", True), Component("dlib", True)),
    "sface+flip, dlib": (Component("sface", True), Component("dlib", False)),
}


def evaluate(settings: Settings, profile: str, *, data_dir: Path, folds: list[int] | None = None,
             ablation: bool = False, workers: int | None = None) -> tuple[dict, np.ndarray, Pairs]:
    """Run the protocol; returns the result dict, the pair scores and the pairs."""
    lfw = Path(data_dir) / "lfw"
    pairs = read_pairs(lfw / "pairs.txt")
    if folds:
        pairs = pairs.select([f - 1 for f in folds])
    components = PROFILES[profile].components
    wanted = tuple(ABLATION["sface+dlib, both flipped"]) if ablation else components
    start = time.perf_counter()
    embedded = embed_files(lfw, pairs.images, wanted, settings, workers=workers, label=f"LFW {profile}")
    elapsed = time.perf_counter() - start
    scores = pair_scores(embedded, pairs, components)
    result = {"protocol": "LFW pairs.txt, 10-fold, threshold chosen on the other folds", "profile": profile,
              "images": len(pairs.images), "embedding_seconds": round(elapsed, 1),
              "detection": embedded.status_counts(), **summarize(scores, pairs)}
    if ablation:
        rows = {}
        for name, comps in ABLATION.items():
            s = pair_scores(embedded, pairs, comps)
            r = ten_fold(s, pairs)
            rows[name] = {"accuracy_mean": r["accuracy_mean"], "accuracy_std": r["accuracy_std"],
                          "tar_at_far_1e-3": metrics.tmr_at_fmr(s[pairs.same], s[~pairs.same], 1e-3)}
        a = pair_scores(embedded, pairs, (Component("sface", True),))
        b = pair_scores(embedded, pairs, (Component("dlib", True),))
        rows["score fusion, weight chosen on training folds (both flipped)"] = fused_ten_fold(a, b, pairs)
        result["ablation"] = rows
    return result, scores, pairs
