"""Open-set identification on LFW, through the real gallery (NIST FRTE 1:N metrics).

Gallery: the first image of every person with at least two images. Mated probes: their
other images. Non-mated probes: every image of the people with a single image, who are
not enrolled. FPIR(t) is the share of non-mated probes whose top candidate scores at
least t; FNIR(t) the share of mated probes whose mate is not the top candidate with a
score of at least t. Rank-1 is the closed-set rate on mated probes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.evaluation.calibrate import lfw_images
from faceledger.gallery.gallery import Gallery
from faceledger.pipeline.engine import Components, FaceEngine


def split_lfw(images: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(gallery images, mated probe images, non-mated probe images)."""
    by_person: dict[str, list[str]] = defaultdict(list)
    for rel in images:
        by_person[rel.split("/")[0]].append(rel)
    gallery, mated, nonmated = [], [], []
    for person in sorted(by_person):
        photos = sorted(by_person[person])
        if len(photos) >= 2:
            gallery.append(photos[0])
            mated += photos[1:]
        else:
            nonmated += photos
    return gallery, mated, nonmated


def fnir_at_fpir(mate_top: np.ndarray, mate_score: np.ndarray, nonmated_top: np.ndarray, fpir: float) -> tuple[float, float]:
    """(FNIR, threshold) at the lowest threshold whose FPIR does not exceed ``fpir``."""
    from faceledger.evaluation.metrics import threshold_at_fmr

    t = threshold_at_fmr(nonmated_top, fpir)
    return float(np.mean(~(mate_top & (mate_score >= t)))), t


def fnir_fpir_curve(mate_top, mate_score, nonmated_top) -> tuple[np.ndarray, np.ndarray]:
    thresholds = np.unique(np.concatenate([mate_score, nonmated_top]))
    fpir = 1 - np.searchsorted(np.sort(nonmated_top), thresholds, side="left") / len(nonmated_top)
    hit_scores = np.sort(mate_score[mate_top])
    hits = len(hit_scores) - np.searchsorted(hit_scores, thresholds, side="left")
    return fpir, 1 - hits / len(mate_top)


def evaluate_identification(settings: Settings, profile: str, data_dir: Path, workers: int | None = None,
                            fpirs=(1e-2, 1e-3)) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    lfw = Path(data_dir) / "lfw"
    images = lfw_images(lfw)
    gallery_imgs, mated, nonmated = split_lfw(images)
    engine = FaceEngine(settings, profile)
    embedded = embed_files(lfw, images, engine.profile.components, settings, workers=workers,
                           label=f"LFW identification {profile}")
    templates = Components(embedded.vectors).template(engine.profile.components)
    row = embedded.index()
    home = settings.home / "eval-identify" / profile
    if home.exists():
        import shutil

        shutil.rmtree(home)
    g = Gallery(settings.model_copy(update={"home": home, "database_url": None}), engine)
    try:
        g.create_collection("lfw", require_consent=False)
        start = time.perf_counter()
        g.enroll_templates("lfw", [p.split("/")[0] for p in gallery_imgs],
                           templates[[row[p] for p in gallery_imgs]], gallery_imgs)
        enrol_s = time.perf_counter() - start

        def top1(paths):
            start = time.perf_counter()
            found = g.search_templates("lfw", templates[[row[p] for p in paths]], top_k=1)
            ms = (time.perf_counter() - start) * 1000 / len(paths)
            return [f[0][0] if f else None for f in found], np.array([f[0][2] if f else -1 for f in found]), ms

        mate_ids, mate_score, ms_mated = top1(mated)
        mate_top = np.array([m == p.split("/")[0] for m, p in zip(mate_ids, mated)])
        nonmated_ids, nonmated_top, ms_nonmated = top1(nonmated)
    finally:
        g.close()
    result = {
        "protocol": __doc__.split("\n\n")[1].replace("\n", " "), "profile": profile, "model_id": engine.model_id,
        "gallery_subjects": len(gallery_imgs), "mated_probes": len(mated), "nonmated_probes": len(nonmated),
        "rank1": float(mate_top.mean()),
        "fnir_at_fpir": {}, "enrol_seconds": round(enrol_s, 2),
        "search_ms_per_probe": round((ms_mated * len(mated) + ms_nonmated * len(nonmated)) / (len(mated) + len(nonmated)), 3),
        "detection": embedded.status_counts(),
    }
    for f in fpirs:
        fnir, t = fnir_at_fpir(mate_top, mate_score, nonmated_top, f)
        result["fnir_at_fpir"][f"{f:g}"] = {"fnir": fnir, "threshold": t,
                                             "nonmated_probes_above": int((nonmated_top >= t).sum())}
    # the strongest false positives, to read by eye: in LFW many are one person under two names
    worst = np.argsort(-nonmated_top)[:10]
    result["top_nonmated"] = [{"probe": nonmated[i], "top_candidate": nonmated_ids[i],
                               "similarity": round(float(nonmated_top[i]), 4)} for i in worst]
    return result, fnir_fpir_curve(mate_top, mate_score, nonmated_top)
