"""Build a model's calibration from LFW: every cross-identity pair among all its images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.matching.calibration import Calibration
from faceledger.pipeline.engine import Components, FaceEngine
from faceledger.pipeline.profiles import PROFILES


def impostor_and_genuine(templates: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All pair scores of a template set (each unordered pair once), split into cross- and same-identity."""
    ids = np.unique(np.array(identities), return_inverse=True)[1]
    impostor, genuine = [], []
    block = 1024
    for start in range(0, len(ids), block):
        rows = slice(start, min(start + block, len(ids)))
        sims = templates[rows] @ templates[start:].T  # this block against itself and everything after
        same = ids[rows, None] == ids[None, start:]
        upper = np.triu(np.ones(sims.shape, bool), k=1)  # pairs (i, j) with j > i only
        impostor.append(sims[upper & ~same].astype(np.float32))
        genuine.append(sims[upper & same].astype(np.float32))
    return np.concatenate(impostor), np.concatenate(genuine)


def lfw_images(lfw: Path) -> list[str]:
    """Every LFW image, as NAME/NAME_NNNN.jpg, in people order."""
    return sorted(f"{p.parent.name}/{p.name}" for p in lfw.glob("*/*.jpg"))


def calibrate_lfw(settings: Settings, profile: str, data_dir: Path, workers: int | None = None) -> Calibration:
    lfw = Path(data_dir) / "lfw"
    images = lfw_images(lfw)
    components = PROFILES[profile].components
    embedded = embed_files(lfw, images, components, settings, workers=workers, label=f"calibration {profile}")
    templates = Components(embedded.vectors).template(components)
    impostor, genuine = impostor_and_genuine(templates, [p.split("/")[0] for p in images])
    source = (f"LFW: all {len(impostor):,} cross-identity and {len(genuine):,} same-identity pairs among all "
              f"{len(images):,} images ({len(set(p.split('/')[0] for p in images)):,} people)")
    model_id = FaceEngine(settings, profile).model_id
    return Calibration.build(model_id, impostor, genuine, source)
