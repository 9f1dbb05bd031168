"""Build a model's calibration from every face in the data folder.

Impostor pairs (different people):

- LFW: every cross-identity pair among all its images;
- across data sets: LFW x UTKFace sample, LFW x named people, UTKFace sample x named people:
  people in different data sets are taken to be different people;
- never UTKFace x UTKFace (no identity labels: two images may show one person), never
  within the named people (too few to matter; group photos make their labels uncertain).

Genuine pairs: LFW same-identity pairs.

Where the data say two "different people" are one, a pair is left out (neither impostor nor
genuine). The face sets overlap (UTKFace's web photos include actors who are in LFW; the
named people include Joe Biden), and LFW has label errors and duplicate identities (an image
filed under Recep_Tayyip_Erdogan that shows Abdullah Gul; Sung_Hong_Choi and Choi_Sung-hong).
These sit exactly in the far tail that calibration is about: left in, a few dozen same-person
pairs set the measured threshold at 3e-7. The rule (:func:`possibly_same_person`), the same for
every image x and LFW person B that x is not filed under: x is taken as possibly showing B
when its median score over B's images reaches the LFW-only FMR ``SCREEN_FMR`` threshold, at
least two of them reach it, and, for an LFW image with other images of its own person, it
scores higher with B than with them (median). Then x's pairs with B's images are left out.
Chance alone, for scores independent, would flag an impostor image against a person with m
images with probability ~C(m, 2) * 1e-10: nothing. Look-alike relatives are kept (Jeb and
George W Bush, Venus and Serena Williams: each image looks more like its own person); twins
whose images are indistinguishable (the Olsens) are not. A single-image LFW person B has no
median to take: x is taken as possibly showing B when it scores at least the median of LFW's
same-person pairs with B's one image (``alias_threshold``: as alike as half of all pairs of
photos of one person) and, for an LFW image with other images of its own, higher than with
them. That catches one photo filed under two names (Carlos_Beltran and Raul_Ibanez, 0.99), a
person under two spellings or a birth name (Noer_Moeis and Noer_Muis, Doc and Glenn Rivers)
among LFW's 4,000 single-image people, where chance would put fewer than one of their 8
million impostor pairs so high (the fast profile's tail puts 0.70 at FMR ~5e-8); twins who
look less alike than that (the Mowrys, 0.68) stay impostors. Left in, about ten such pairs
of people decided the extrapolated tail (each pair of people weighs 1): shape 0.12 instead
of 0.058 for the fast profile, its FMR 1e-8 threshold 0.95 instead of 0.77.

Identity-balanced. LFW's people have from 1 to 530 images, so counted per image pair, a few
people decide the far tail: George W Bush's 530 images against his brother Jeb's 5 are 2,650
pairs, a quarter of all the impostor pairs above FMR 1e-5 for the fast profile, and a gallery
that holds Jeb then "matches" a stranger far more often than one that does not (measured:
FPIR 2.6% against 0.3% for other 1,000-face galleries at one threshold). The question an
FMR answers for a search is "how often does a stranger score this high against an enrolled
person", so each pair weighs 1 / (images of one person x images of the other): every pair of
people counts once, whatever their image counts (an image outside LFW is a person of its own,
weight 1). The FMR at a score is the share of the total weight (about the number of pairs of
people) at or above it, and the rule of 30 counts weight: 30 pairs of people, not 30 pairs of
photos of the same two people.

The top impostor pairs are kept with the images they compare, so that the tail's bootstrap
resamples images rather than pairs (one image can be in hundreds of the top pairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.matching import tail as tail_model
from faceledger.matching.calibration import Calibration
from faceledger.pipeline.engine import Components, FaceEngine
from faceledger.pipeline.profiles import PROFILES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SCREEN_FMR = 1e-5  # the LFW-only FMR whose threshold screens cross-data-set images for LFW people
BLOCK = 1024
KEEP_TOP = 400_000  # top impostor pairs kept with their images: enough for the weighted tail's top pairs
NO_PAIRS = np.empty((0, 2), np.int64)


def impostor_and_genuine(templates: np.ndarray, identities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All pair scores of a template set (each unordered pair once), split into cross- and same-identity."""
    return _within(templates, np.unique(np.array(identities), return_inverse=True)[1], _TopPairs(0))


class _TopPairs:
    """The ``keep`` highest impostor scores seen so far, with the (global) indices of the two images."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.scores = np.empty(0, np.float32)
        self.a = np.empty(0, np.int64)
        self.b = np.empty(0, np.int64)

    def add(self, sims: np.ndarray, mask: np.ndarray | None, row_ids: np.ndarray, col_ids: np.ndarray) -> None:
        """Offer the pairs of a block of scores (``mask``: which count); ``row_ids``/``col_ids``: global images."""
        if not self.keep:
            return
        flat = sims.ravel() if mask is None else np.where(mask, sims, -np.inf).ravel()
        take = min(self.keep, flat.size)
        pick = np.argpartition(flat, flat.size - take)[flat.size - take:]
        pick = pick[np.isfinite(flat[pick])]
        rows, cols = np.unravel_index(pick, sims.shape)
        scores = np.concatenate([self.scores, flat[pick].astype(np.float32)])
        a, b = np.concatenate([self.a, row_ids[rows]]), np.concatenate([self.b, col_ids[cols]])
        if len(scores) > self.keep:
            pick = np.argpartition(scores, len(scores) - self.keep)[len(scores) - self.keep:]
            scores, a, b = scores[pick], a[pick], b[pick]
        self.scores, self.a, self.b = scores, a, b


def _excluded_mask(pairs: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray | None:
    """Mask over a block (global ``rows`` x ``cols``) of the (a, b) pairs in ``pairs`` (either order)."""
    if not len(pairs):
        return None
    mask = np.zeros((len(rows), len(cols)), bool)
    r_at = {int(g): i for i, g in enumerate(rows)}
    c_at = {int(g): j for j, g in enumerate(cols)}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            if x in r_at and y in c_at:
                mask[r_at[x], c_at[y]] = True
    return mask


def _within(templates: np.ndarray, ids: np.ndarray, top: _TopPairs, left_out: np.ndarray = NO_PAIRS,
            image_weights: np.ndarray | None = None, weights_out: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Impostor and genuine scores within one set; ``weights_out`` gets each impostor pair's weight."""
    impostor, genuine = [], []
    index = np.arange(len(ids))
    for start in range(0, len(ids), BLOCK):
        rows = slice(start, min(start + BLOCK, len(ids)))
        sims = templates[rows] @ templates[start:].T  # this block against itself and everything after
        same = ids[rows, None] == ids[None, start:]
        upper = np.triu(np.ones(sims.shape, bool), k=1)  # pairs (i, j) with j > i only
        excluded = _excluded_mask(left_out, index[rows], index[start:])
        if excluded is not None:
            upper &= ~excluded
        impostor.append(sims[upper & ~same].astype(np.float32))
        if weights_out is not None:
            weights_out.append((image_weights[rows, None] * image_weights[None, start:len(ids)])[upper & ~same]
                               .astype(np.float32))
        genuine.append(sims[upper & same].astype(np.float32))
        top.add(sims, upper & ~same, index[rows], index[start:])
    return np.concatenate(impostor), np.concatenate(genuine)


def _across(a: np.ndarray, b: np.ndarray, ids_a: np.ndarray, ids_b: np.ndarray, top: _TopPairs,
            left_out: np.ndarray = NO_PAIRS, image_weights: np.ndarray | None = None,
            weights_out: list | None = None) -> np.ndarray:
    """The scores of ``a`` x ``b`` but the ``left_out`` pairs (``ids_*``: the global index of each template).

    ``weights_out`` gets each pair's weight (``image_weights`` indexed by the global index).
    """
    out = []
    for start in range(0, len(a), BLOCK):
        sims = a[start:start + BLOCK] @ b.T
        excluded = _excluded_mask(left_out, ids_a[start:start + BLOCK], ids_b)
        keep = None if excluded is None else ~excluded
        out.append((sims if keep is None else sims[keep]).astype(np.float32).ravel())
        if weights_out is not None:
            w = image_weights[ids_a[start:start + BLOCK], None] * image_weights[None, ids_b]
            weights_out.append((w if keep is None else w[keep]).astype(np.float32).ravel())
        top.add(sims, keep, ids_a[start:start + BLOCK], ids_b)
    return np.concatenate(out) if out else np.empty(0, np.float32)


@dataclass
class FaceSet:
    name: str
    root: Path
    paths: list[str]  # relative to root
    identities: list[str] | None  # None: no identity labels (no pairs within the set)
    templates: np.ndarray | None = field(default=None, repr=False)


def lfw_images(lfw: Path) -> list[str]:
    """Every LFW image, as NAME/NAME_NNNN.jpg, in people order."""
    return sorted(f"{p.parent.name}/{p.name}" for p in lfw.glob("*/*.jpg"))


def face_sets(data_dir: Path) -> list[FaceSet]:
    """LFW (labelled), then the UTKFace sample and the named people where present (unlabelled here)."""
    data_dir = Path(data_dir)
    lfw = data_dir / "lfw"
    images = lfw_images(lfw)
    sets = [FaceSet("LFW", lfw, images, [p.split("/")[0] for p in images])]
    utk = data_dir / "utkface_sample"
    if (utk / "images").is_dir():
        sets.append(FaceSet("UTKFace sample", utk, sorted(f"images/{p.name}" for p in (utk / "images").glob("*.jpg")),
                            None))
    people = data_dir / "people"
    if people.is_dir():
        sets.append(FaceSet("named people", people, sorted(str(p.relative_to(people)) for p in people.rglob("*")
                                                          if p.suffix.lower() in IMAGE_SUFFIXES), None))
    return [s for s in sets if s.paths]


def alias_threshold(lfw: np.ndarray, lfw_ids: np.ndarray) -> float:
    """The median score of LFW's same-person pairs: the bar for a single-image person (module docstring)."""
    genuine = []
    for members in np.split(np.argsort(lfw_ids, kind="stable"), np.cumsum(np.bincount(lfw_ids))[:-1]):
        if len(members) > 1:
            sims = lfw[members] @ lfw[members].T
            genuine.append(sims[np.triu_indices(len(members), 1)])
    return float(np.median(np.concatenate(genuine))) if genuine else float("inf")


def possibly_same_person(x: np.ndarray, lfw: np.ndarray, lfw_ids: np.ndarray, threshold: float,
                         own_ids: np.ndarray | None = None, single: float = float("inf")) -> list[tuple[int, int]]:
    """(row of ``x``, LFW person) for each template of ``x`` that possibly shows that LFW person.

    See the module docstring: a median score over the person's images >= ``threshold``, two or
    more of them >= ``threshold`` (for a person with one image: a score >= ``single``, the
    :func:`alias_threshold`), and, where ``own_ids`` gives x's own LFW person (LFW images), a
    person other than its own that it scores higher with than with its own other images.
    """
    members = np.split(np.argsort(lfw_ids, kind="stable"), np.cumsum(np.bincount(lfw_ids))[:-1])
    found = []
    for start in range(0, len(x), BLOCK):
        sims = x[start:start + BLOCK] @ lfw.T
        rows, cols = np.nonzero(sims >= min(threshold, single))
        pairs, counts = np.unique(np.stack([rows, lfw_ids[cols]], 1), axis=0, return_counts=True)
        for (r, person), hits in zip(pairs, counts):
            i = start + int(r)
            if own_ids is not None and own_ids[i] == person:
                continue
            if len(members[person]) == 1:
                if sims[r, members[person][0]] < single:
                    continue
            elif hits < 2 or np.median(sims[r, members[person]]) < threshold:
                continue
            if own_ids is not None:
                own = members[own_ids[i]]
                own = own[own != i]
                if len(own) and np.median(sims[r, own]) >= np.median(sims[r, members[person]]):
                    continue
            found.append((i, int(person)))
    return found


@dataclass
class PairScores:
    impostor: np.ndarray
    genuine: np.ndarray
    top_pairs: tuple[np.ndarray, np.ndarray, np.ndarray]  # the highest impostor scores and their two images
    n_images: int
    source: str
    weights: np.ndarray | None = None  # per impostor pair: the product of its images' weights
    image_weights: np.ndarray | None = None  # per image: 1 / the images of its person (1 outside LFW)


def pair_scores(sets: list[FaceSet], keep_top: int = KEEP_TOP) -> PairScores:
    """Impostor and genuine scores over ``sets`` (templates filled in; the first set is LFW, labelled)."""
    lfw, others = sets[0], sets[1:]
    top = _TopPairs(keep_top)
    offsets = np.cumsum([0] + [len(s.paths) for s in sets])
    names, lfw_ids = np.unique(np.array(lfw.identities), return_inverse=True)
    # each image's weight, in the global order: 1 / its LFW person's images; 1 in the unlabelled sets
    iw = np.concatenate([1.0 / np.bincount(lfw_ids)[lfw_ids], np.ones(int(offsets[-1]) - len(lfw_ids))])
    weights: list[np.ndarray] = []
    members = np.split(np.argsort(lfw_ids, kind="stable"), np.cumsum(np.bincount(lfw_ids))[:-1])
    lfw_index = np.arange(len(lfw.paths))
    plain, _ = _within(lfw.templates, lfw_ids, _TopPairs(0))
    rank = int(SCREEN_FMR * len(plain))
    screen = float(-np.partition(-plain, rank)[rank])
    del plain

    def left_out(found, global_index) -> np.ndarray:
        pairs = [(global_index[i], j) for i, person in found for j in members[person]]
        return np.array(pairs, np.int64).reshape(-1, 2)

    def describe(found, paths, what) -> str:
        if not found:
            return f"no {what} image"
        shown = "; ".join(f"{paths[i]} ~ {names[p]}" for i, p in found[:4]) + ("; ..." if len(found) > 4 else "")
        return f"{len(found)} {what} image~person pairings ({shown})"

    single = alias_threshold(lfw.templates, lfw_ids)
    found = possibly_same_person(lfw.templates, lfw.templates, lfw_ids, screen, own_ids=lfw_ids, single=single)
    excluded = left_out(found, lfw_index)
    within, genuine = _within(lfw.templates, lfw_ids, top, excluded, iw, weights)
    parts, counts, notes = [within], [f"{len(within):,} LFW cross-identity"], [describe(found, lfw.paths, "LFW")]
    dropped = len(excluded)
    kept: list[tuple[FaceSet, np.ndarray]] = []  # each other set with the global index of each image
    for s, off in zip(others, offsets[1:]):
        ids = off + np.arange(len(s.paths))
        found = possibly_same_person(s.templates, lfw.templates, lfw_ids, screen, single=single)
        excluded = left_out(found, ids)
        dropped += len(excluded)
        notes.append(describe(found, s.paths, s.name))
        kept.append((s, ids))
        cross = _across(s.templates, lfw.templates, ids, lfw_index, top, excluded, iw, weights)
        parts.append(cross)
        counts.append(f"{len(cross):,} LFW x {s.name}")
    for i, (s, ids) in enumerate(kept):
        for t, ids_t in kept[i + 1:]:
            cross = _across(s.templates, t.templates, ids, ids_t, top, image_weights=iw, weights_out=weights)
            parts.append(cross)
            counts.append(f"{len(cross):,} {s.name} x {t.name}")
    impostor = np.concatenate(parts)
    weight = np.concatenate(weights)
    source = (f"{len(impostor):,} impostor pairs (identity-balanced: a pair weighs 1 / (images of one person x "
              f"images of the other), {float(weight.sum(dtype=np.float64)):,.0f} in all): " + ", ".join(counts) + f"; {len(genuine):,} genuine pairs: LFW "
              f"same-identity. Images: LFW {len(lfw.paths):,} ({len(names):,} people)"
              + "".join(f", {s.name} {len(s.paths):,}" for s in others)
              + ". No pairs within the unlabelled sets. Left out as possibly one person "
              f"({dropped:,} pairs): an image whose median score over an LFW person's images, and at least two of "
              f"them, reach the LFW FMR {SCREEN_FMR:g} threshold ({screen:.4f}) and, for an LFW image, exceed its "
              f"median with its own person, with that person's images (a single-image person: a score of at least "
              f"{single:.4f}, the median of LFW's same-person pairs): " + "; ".join(notes) + ".")
    return PairScores(impostor, genuine, (top.scores, top.a, top.b), int(offsets[-1]), source, weight, iw)


def calibrate_lfw(settings: Settings, profile: str, data_dir: Path, workers: int | None = None,
                  bootstrap: int = tail_model.BOOTSTRAP) -> Calibration:
    """The calibration of ``profile`` from every face in ``data_dir`` (see the module docstring)."""
    sets = face_sets(data_dir)
    components = PROFILES[profile].components
    for s in sets:
        embedded = embed_files(s.root, s.paths, components, settings, workers=workers,
                               label=f"calibration {profile}: {s.name}")
        s.templates = Components(embedded.vectors).template(components).astype(np.float32)
    scores = pair_scores(sets)
    model_id = FaceEngine(settings, profile).model_id
    return Calibration.build(model_id, scores.impostor, scores.genuine, scores.source,
                             top_pairs=scores.top_pairs, n_images=scores.n_images, bootstrap=bootstrap,
                             weights=scores.weights, image_weights=scores.image_weights)
