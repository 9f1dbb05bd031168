"""Build a model's calibration from LFW: every cross-identity pair of the protocol's images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.evaluation.lfw import read_pairs
from faceledger.matching.calibration import Calibration
from faceledger.pipeline.engine import Components, FaceEngine
from faceledger.pipeline.profiles import PROFILES


def impostor_and_genuine(templates: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All pair scores of a template set, split into cross-identity and same-identity pairs."""
    ids = np.unique(np.array(identities), return_inverse=True)[1]
    sims = templates @ templates.T
    upper = np.triu_indices(len(ids), k=1)
    same = ids[upper[0]] == ids[upper[1]]
    scores = sims[upper]
    return scores[~same].astype(np.float32), scores[same].astype(np.float32)


def calibrate_lfw(settings: Settings, profile: str, data_dir: Path, workers: int | None = None) -> Calibration:
    lfw = Path(data_dir) / "lfw"
    images = read_pairs(lfw / "pairs.txt").images
    components = PROFILES[profile].components
    embedded = embed_files(lfw, images, components, settings, workers=workers, label=f"calibration {profile}")
    templates = Components(embedded.vectors).template(components)
    impostor, genuine = impostor_and_genuine(templates, [p.split("/")[0] for p in images])
    source = (f"LFW: all {len(impostor):,} cross-identity and {len(genuine):,} same-identity pairs among the "
              f"{len(images):,} images of pairs.txt ({len(set(p.split('/')[0] for p in images)):,} people)")
    model_id = FaceEngine(settings, profile).model_id
    return Calibration.build(model_id, impostor, genuine, source)
