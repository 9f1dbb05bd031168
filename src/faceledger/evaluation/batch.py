"""Embed many image files on every core, with a progress bar and an on-disk cache.

For evaluation sets where each image shows one subject (LFW): the face nearest the
centre is taken; when the detector finds none, it retries on a 2x upscaled image with
a lower threshold, and when that fails too the face is assumed at the median landmark
position of the set's detected faces (LFW images are roughly aligned). Each image's
``status`` records which of the three happened, so reports can say how often.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from faceledger.config import Settings
from faceledger.models.detections import Detections
from faceledger.pipeline.engine import FaceEngine
from faceledger.pipeline.profiles import Component

DETECTED, RETRIED, FALLBACK = 0, 1, 2
STATUS_NAMES = {DETECTED: "detected", RETRIED: "detected on retry (2x upscale, lower threshold)",
                FALLBACK: "not detected: median landmarks used"}


@dataclass
class EmbeddedSet:
    paths: list[str]  # relative to the root
    status: np.ndarray  # (N,) DETECTED / RETRIED / FALLBACK
    vectors: dict[str, np.ndarray]  # component key ("sface", "sface_flip", "dlib", ...) -> (N, D)

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}

    def status_counts(self) -> dict[str, int]:
        return {STATUS_NAMES[k]: int((self.status == k).sum()) for k in STATUS_NAMES}


_worker_engine: FaceEngine | None = None


def _init_worker(settings: Settings) -> None:
    global _worker_engine
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker_engine = FaceEngine(settings)


def locate_face(engine: FaceEngine, bgr: np.ndarray) -> tuple[Detections, int]:
    h, w = bgr.shape[:2]
    for status, kwargs in ((DETECTED, {}), (RETRIED, {"score_threshold": 0.3, "upscale": 2.0})):
        dets = engine.detect(bgr, **kwargs)
        if len(dets):
            return dets[dets.most_central(w, h)], status
    return Detections.empty(), FALLBACK


def _embed_one(engine: FaceEngine, root: Path, rel: str, wanted: tuple[Component, ...], fallback: np.ndarray | None):
    bgr = engine.decode(root / rel)
    dets, status = locate_face(engine, bgr)
    if status == FALLBACK:
        if fallback is None:
            return status, None, None
        lm = fallback.astype(np.float32)
        box = np.array([[lm[:, 0].min() - 20, lm[:, 1].min() - 30, lm[:, 0].max() + 20, lm[:, 1].max() + 15]], np.float32)
        dets = Detections(box, lm[None], np.zeros(1, np.float32))
    vectors = engine.components(bgr, dets, wanted).vectors
    return status, dets.landmarks[0], {k: v[0] for k, v in vectors.items()}


def _embed_chunk(args):
    root, rels, wanted = args
    return [(rel, *_embed_one(_worker_engine, root, rel, wanted, None)) for rel in rels]


def _keys(wanted: tuple[Component, ...]) -> list[str]:
    return [k for c in wanted for k in ([c.recognizer] + ([c.recognizer + "_flip"] if c.flip else []))]


def _cache_file(settings: Settings, engine: FaceEngine, root: Path, key: str) -> Path:
    comp = Component(key.removesuffix("_flip"), False)
    ident = f"{root.resolve()}|{engine.detector.model.sha256}|{engine.recognizer(comp.recognizer).model.sha256}|{key}"
    return settings.cache_dir / "embeddings" / f"{key}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.npz"


def _load(path: Path) -> dict[str, tuple[int, np.ndarray]]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {p: (int(s), v) for p, s, v in zip(z["paths"].tolist(), z["status"], z["vectors"])}


def _save(path: Path, rows: dict[str, tuple[int, np.ndarray]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    paths = sorted(rows)
    np.savez(tmp, paths=np.array(paths), status=np.array([rows[p][0] for p in paths], np.int8),
             vectors=np.stack([rows[p][1] for p in paths]).astype(np.float32))
    os.replace(tmp, path)


def embed_files(root: Path, paths: Sequence[str], wanted: tuple[Component, ...], settings: Settings,
                *, workers: int | None = None, label: str = "embedding") -> EmbeddedSet:
    """Embed ``paths`` (relative to ``root``) for the ``wanted`` components, using and filling the cache."""
    engine = FaceEngine(settings)
    keys = _keys(wanted)
    files = {k: _cache_file(settings, engine, root, k) for k in keys}
    cached = {k: _load(f) for k, f in files.items()}
    todo = [p for p in dict.fromkeys(paths) if any(p not in cached[k] for k in keys)]
    if todo:
        workers = workers or min(os.cpu_count() or 1, 8)
        chunk = max(4, min(32, len(todo) // (workers * 8) or 4))
        jobs = [(root, todo[i : i + chunk], wanted) for i in range(0, len(todo), chunk)]
        results, missing = [], []
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns) as progress, ProcessPoolExecutor(workers, initializer=_init_worker,
                                                                 initargs=(settings,)) as pool:
            task = progress.add_task(f"{label} ({workers} workers)", total=len(todo))
            for out in pool.map(_embed_chunk, jobs):
                for rel, status, landmarks, vectors in out:
                    (missing if vectors is None else results).append((rel, status, landmarks, vectors))
                progress.advance(task, len(out))
        if missing:  # the median landmarks of this set's detections stand in for undetected faces
            found = [lm for _, _, lm, _ in results] or [_median_landmarks(engine, root, paths[:200])]
            median = np.median(np.stack(found), axis=0)
            for rel, _, _, _ in missing:
                status, lm, vectors = _embed_one(engine, root, rel, wanted, median)
                results.append((rel, status, lm, vectors))
        for rel, status, _, vectors in results:
            for k in keys:
                cached[k][rel] = (status, vectors[k])
        for k in keys:
            _save(files[k], cached[k])
    order = list(paths)
    status = np.array([cached[keys[0]][p][0] for p in order], np.int8)
    return EmbeddedSet(order, status, {k: np.stack([cached[k][p][1] for p in order]) for k in keys})


def _median_landmarks(engine: FaceEngine, root: Path, sample: Sequence[str]) -> np.ndarray:
    """Median landmarks of the faces detected in ``sample`` (when every new image of a run failed)."""
    found = []
    for rel in sample:
        dets, status = locate_face(engine, engine.decode(root / rel))
        if status != FALLBACK:
            found.append(dets.landmarks[0])
    return np.median(np.stack(found), axis=0)
