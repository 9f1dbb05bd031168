"""Open-set identification measured by FPIR, on real galleries of increasing size.

Every usable face of the data folder (LFW, the UTKFace sample, the named people) is embedded for
the profile. Galleries of 1,000, 5,000 and 10,000 faces and the largest possible (every usable LFW
face, about 13,200) are built from LFW alone: the people with two or more usable images, all of
their images enrolled as one subject, take the same share of each gallery as in all of LFW (about
69%), chosen in a seeded random order (a person who would overshoot that share is passed over);
single-image people, in a seeded random order, fill the rest as one-face distractor subjects.
Every face is then searched against each gallery, leaving its own face out of that search
(leave-one-out): an enrolled image of a person with several images is a mated probe (the subject
keeps the person's other faces); an enrolled distractor is a non-mated probe (its only face left
out, that person is not in the gallery searched); every face not enrolled in the gallery (LFW
single-image people not used as distractors, people with several images left out of a smaller
gallery, the UTKFace sample and the named people) is a non-mated probe. A search compares the probe
with every face by matrix product; a subject's score is the best of its faces; the decision
(match, review, unknown) comes from the best and second-best subjects through
:class:`~faceledger.matching.openset.OpenSetPolicy`, derived for the gallery's size.

Usable: a face the detector found (directly or on its retry); a face placed at the median landmarks
is left out. Before the split, faces the data suggest show an LFW person other than the one they
are filed under (or, outside LFW, an LFW person: UTKFace's web photos include actors, the named
people include Joe Biden) are left out, by the calibration's own rule
(:func:`faceledger.evaluation.calibrate.possibly_same_person` at the calibration's FMR 1e-5
threshold): the calibration does not count their pairs as impostors, so the evaluation does not
count them as strangers either. The same evaluation without this screen is reported beside it.

Figures: FPIR over strangers: each person with non-mated probes (an LFW person, or one photo
outside LFW) counts once, as the share of their photos decided "match" (so George W. Bush's 530
photos are one stranger, not 530), with its Wilson 95% interval over the strangers and the
events, conclusive only where the target expects at least 30 events among them; the share of
non-mated photos matched is reported beside it (``fpir_images``). FNIR, the share of mated probes
not decided "match" to their own subject; wrong-person matches, mated probes decided "match" to
another subject; the share of probes sent to review; per demographic group (LFW's labels,
UTKFace's labels), the FPIR of that group's strangers. Each size smaller than the largest is
drawn ``DRAWS`` times with other seeds and the draws pooled (their mean FPIR, each draw's kept,
``seed_spread`` their spread): which people a gallery holds moves its FPIR more than its Wilson
interval says; the errors listed are the first draw's. Caveats: the calibration was built from
these same faces (the thresholds are in-sample); the draws search the same strangers, so the
interval counts the strangers of one draw; and labels are taken as they are. The screen needs two
images of the other person, so a pair of single-image LFW people showing one person (one photo
filed under two names, a name spelled two ways, a birth name) and a UTKFace photo of a
single-image LFW celebrity count as false matches; at high thresholds they are most of the events.
Every error that is a "match" is listed (``match_errors``) to be read by eye.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceledger.config import Settings
from faceledger.evaluation import demographics as demo
from faceledger.evaluation.batch import FALLBACK, embed_files
from faceledger.evaluation.calibrate import SCREEN_FMR, alias_threshold, face_sets, possibly_same_person
from faceledger.evaluation.metrics import wilson_interval
from faceledger.matching.calibration import Calibration, load_calibration
from faceledger.matching.openset import MATCH, REVIEW, OpenSetPolicy
from faceledger.pipeline.engine import Components, FaceEngine
from faceledger.pipeline.profiles import PROFILES

SIZES: tuple[int | None, ...] = (1000, 5000, 10000, None)  # None: the largest gallery the data allow
TARGETS = (1e-2, 1e-3)
MARGINS = (0.0, 0.02, 0.05, 0.1)
DEFAULT_TARGET = 1e-3  # the default open-set policy (Settings.default_target_fpir)
MIN_EVENTS = demo.MIN_ERRORS  # a measured FPIR is conclusive where the target expects this many events
MAX_WRONG_PERSON = 1e-3  # the margin recommendation: wrong-person matches at most 0.1% of mated probes
SEED = 0
DRAWS = 8  # galleries drawn per size below the largest: who a gallery holds moves its FPIR
CHUNK = 1024
LFW, UTK, PEOPLE = "LFW", "UTKFace sample", "named people"
PROTOCOL = __doc__.split("\n\n")[1].replace("\n", " ")

PolicyFor = Callable[[float, int, float], OpenSetPolicy]  # (target FPIR, gallery faces, margin) -> policy


@dataclass
class FaceTemplates:
    """Templates of every face with what is known about it.

    ``person``: the LFW person's name, None outside LFW; ``groups``: attribute -> label per face
    (None: unlabelled), e.g. "LFW gender" -> "F".
    """

    paths: list[str]  # "<set>:<path relative to the set's folder>"
    source: np.ndarray  # LFW / UTK / PEOPLE per face (object array)
    person: np.ndarray  # object array: LFW name or None
    vectors: np.ndarray  # (N, D) float32, L2-normalised
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    unusable: dict[str, int] = field(default_factory=dict)  # set -> faces left out (not detected)

    def __len__(self) -> int:
        return len(self.paths)

    def people(self) -> np.ndarray:
        """A person number per face: its LFW person; a face outside LFW is a person of its own (no labels)."""
        keys = np.array([f"{LFW}:{p}" if s == LFW and p is not None else f"face:{path}"
                         for s, p, path in zip(self.source, self.person, self.paths)], dtype=str)
        return np.unique(keys, return_inverse=True)[1] if len(keys) else np.empty(0, np.int64)

    def subset(self, keep: np.ndarray) -> FaceTemplates:
        keep = np.asarray(keep)
        return FaceTemplates([self.paths[i] for i in np.nonzero(keep)[0]] if keep.dtype == bool else
                             [self.paths[i] for i in keep], self.source[keep], self.person[keep],
                             self.vectors[keep], {k: v[keep] for k, v in self.groups.items()}, dict(self.unusable))


# ---------------------------------------------------------------------------------------------- templates


def utk_labels(folder: Path) -> dict[str, dict[str, str]]:
    """UTKFace sample image ("images/<file>") -> {"gender", "race"} from its labels.csv."""
    path = Path(folder) / "labels.csv"
    if not path.is_file():
        return {}
    with path.open() as fh:
        return {f"images/{row['file']}": {"gender": row["gender"], "race": row["race"]} for row in csv.DictReader(fh)}


def load_templates(settings: Settings, profile: str, data_dir: Path, workers: int | None = None,
                   lfw: tuple[Path, list[str], np.ndarray, np.ndarray] | None = None,
                   utk_per_cell: int | None = None) -> FaceTemplates:
    """Every usable face of ``data_dir`` for ``profile`` (embeddings cached under the settings' cache).

    ``lfw``: (folder, image paths, templates, detection status) already computed by the caller (the
    report), used instead of embedding LFW again; ``utk_per_cell``: only the first so many UTKFace
    images of each race x gender cell (the report's quick subset).
    """
    components = PROFILES[profile].components
    parts, unusable = [], {}
    data_dir = Path(data_dir)
    for s in face_sets(data_dir):
        paths = s.paths
        if s.name == LFW and lfw is not None:
            root, paths, vectors, status = lfw
        else:
            if s.name == UTK and utk_per_cell:
                paths = _per_cell(paths, utk_labels(s.root), utk_per_cell)
            root = s.root
            embedded = embed_files(root, paths, components, settings, workers=workers,
                                   label=f"open-set templates {profile}: {s.name}")
            vectors = Components(embedded.vectors).template(components).astype(np.float32)
            status = embedded.status
        ok = np.asarray(status) != FALLBACK
        unusable[s.name] = int((~ok).sum())
        parts.append((s.name, Path(root), [p for p, k in zip(paths, ok) if k], np.asarray(vectors, np.float32)[ok]))
    lfw_demo = next((root / "demographics.csv" for name, root, _, _ in parts if name == LFW), None)
    lfw_lab = demo.lfw_labels(lfw_demo) if lfw_demo is not None and lfw_demo.is_file() else {}
    utk_lab = utk_labels(data_dir / "utkface_sample")
    paths, source, person = [], [], []
    groups: dict[str, list] = {"LFW gender": [], "LFW race": [], "UTKFace gender": [], "UTKFace race": []}
    for name, _, rels, _ in parts:
        for rel in rels:
            paths.append(f"{name}:{rel}")
            source.append(name)
            person.append(rel.split("/")[0] if name == LFW else None)
            lab_l = lfw_lab.get(rel, {}) if name == LFW else {}
            lab_u = utk_lab.get(rel, {}) if name == UTK else {}
            groups["LFW gender"].append(lab_l.get("gender"))
            groups["LFW race"].append(lab_l.get("race"))
            groups["UTKFace gender"].append(lab_u.get("gender"))
            groups["UTKFace race"].append(lab_u.get("race"))
    vectors = np.concatenate([v for *_, v in parts]) if parts else np.empty((0, 1), np.float32)
    return FaceTemplates(paths, np.array(source, object), np.array(person, object), vectors,
                         {k: np.array(v, object) for k, v in groups.items()}, unusable)


def _per_cell(paths: list[str], labels: dict[str, dict[str, str]], per_cell: int) -> list[str]:
    seen: dict[tuple, int] = {}
    out = []
    for p in paths:
        cell = (labels.get(p, {}).get("race"), labels.get(p, {}).get("gender"))
        seen[cell] = seen.get(cell, 0) + 1
        if seen[cell] <= per_cell:
            out.append(p)
    return out


def screen(t: FaceTemplates, threshold: float) -> tuple[np.ndarray, list[dict]]:
    """(keep mask, what was left out): faces that possibly show an LFW person they are not filed under.

    The calibration's rule (``possibly_same_person``) at ``threshold``: for an LFW face, another
    LFW person it scores higher with than with its own other images; for a face outside LFW, any
    LFW person (median over the person's images and two of them at least ``threshold``); a
    single-image LFW person, at the median of LFW's same-person pairs (both faces of such a pair go).
    """
    is_lfw = t.source == LFW
    keep = np.ones(len(t), bool)
    if not is_lfw.any():
        return keep, []
    names, ids = np.unique(t.person[is_lfw].astype(str), return_inverse=True)
    lfw_rows = np.nonzero(is_lfw)[0]
    lfw_vec = t.vectors[is_lfw]
    single = alias_threshold(lfw_vec, ids)
    found = [(lfw_rows[i], p) for i, p in possibly_same_person(lfw_vec, lfw_vec, ids, threshold, own_ids=ids,
                                                               single=single)]
    others = np.nonzero(~is_lfw)[0]
    if len(others):
        found += [(others[i], p) for i, p in possibly_same_person(t.vectors[others], lfw_vec, ids, threshold,
                                                                  single=single)]
    left = []
    for row, p in sorted(found):
        if keep[row]:
            left.append({"face": t.paths[row], "possibly": str(names[p])})
        keep[row] = False
    return keep, left


# ---------------------------------------------------------------------------------------------- galleries


@dataclass
class GallerySplit:
    """One gallery: its faces (rows of the templates, grouped by subject) and each face's subject."""

    name: str  # "1k", "5k", "largest"
    faces: np.ndarray  # template rows, subject-contiguous
    subject_of_face: np.ndarray  # subject index per gallery face
    subjects: list[str]
    enrolled_people: int  # people with several faces
    distractors: int  # one-face subjects

    @property
    def size(self) -> int:
        return len(self.faces)

    @property
    def starts(self) -> np.ndarray:
        return np.flatnonzero(np.r_[True, self.subject_of_face[1:] != self.subject_of_face[:-1]])


def size_name(size: int | None) -> str:
    return "largest" if size is None else (f"{size // 1000}k" if size % 1000 == 0 else str(size))


def split_galleries(t: FaceTemplates, sizes: Sequence[int | None] = SIZES, seed: int = SEED) -> list[GallerySplit]:
    """The galleries of the module docstring (deterministic for a seed); sizes beyond the data are skipped."""
    lfw_rows = np.nonzero(t.source == LFW)[0]
    by_person: dict[str, list[int]] = {}
    for r in lfw_rows:
        by_person.setdefault(str(t.person[r]), []).append(int(r))
    multi = sorted(p for p, rows in by_person.items() if len(rows) >= 2)
    single = sorted(p for p, rows in by_person.items() if len(rows) == 1)
    rng = np.random.default_rng(seed)
    multi = [multi[i] for i in rng.permutation(len(multi))]
    single = [single[i] for i in rng.permutation(len(single))]
    multi_faces = sum(len(by_person[p]) for p in multi)
    total = multi_faces + len(single)
    share = multi_faces / total if total else 0.0
    out, seen = [], set()
    for size in sizes:
        n = total if size is None else int(size)
        if n > total or n <= 0 or n in seen:
            continue
        seen.add(n)
        budget = min(round(share * n), multi_faces)
        chosen, used = [], 0
        for p in multi:
            if used + len(by_person[p]) <= budget:
                chosen.append(p)
                used += len(by_person[p])
        for p in multi:  # too few single-image people to fill the rest: more people with several images
            if n - used <= len(single):
                break
            if p not in chosen:
                chosen.append(p)
                used += len(by_person[p])
        fill = max(n - used, 0)
        subjects = sorted(chosen) + sorted(single[:fill])
        faces = np.array([r for s in subjects for r in by_person[s]], np.int64)
        subject_of_face = np.array([i for i, s in enumerate(subjects) for _ in by_person[s]], np.int64)
        name = "largest" if size is None or n == total else size_name(size)
        out.append(GallerySplit(name, faces, subject_of_face, subjects, len(chosen), fill))
    return out


@dataclass
class Searched:
    """Per template (every face is a probe): the best and second-best subjects of its search."""

    top: np.ndarray  # similarity of the best subject (-inf: nothing to compare with)
    second: np.ndarray  # of the second-best subject, NaN where there is none
    top_subject: np.ndarray  # subject index of the best
    own_subject: np.ndarray  # the probe's own subject in this gallery, -1 if not enrolled
    enrolled: np.ndarray  # bool: the probe's face is in the gallery (left out of its own search)


def search(t: FaceTemplates, g: GallerySplit, chunk: int = CHUNK) -> Searched:
    """Exact search of every template against ``g``, each leaving its own face out (leave-one-out)."""
    gallery = np.ascontiguousarray(t.vectors[g.faces])
    starts = g.starts
    column = np.full(len(t), -1, np.int64)
    column[g.faces] = np.arange(len(g.faces))
    n = len(t)
    top = np.full(n, -np.inf)
    second = np.full(n, np.nan)
    top_subject = np.full(n, -1, np.int64)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        sims = t.vectors[rows] @ gallery.T
        own = column[rows]
        hit = own >= 0
        sims[np.nonzero(hit)[0], own[hit]] = -np.inf
        per_subject = np.maximum.reduceat(sims, starts, axis=1) if len(starts) else np.empty((len(rows), 0))
        if per_subject.shape[1] == 0:
            continue
        if per_subject.shape[1] == 1:
            best = np.zeros(len(rows), np.int64)
            top[rows] = per_subject[:, 0]
        else:
            two = np.argpartition(-per_subject, 1, axis=1)[:, :2]
            vals = np.take_along_axis(per_subject, two, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            two, vals = np.take_along_axis(two, order, axis=1), np.take_along_axis(vals, order, axis=1)
            best = two[:, 0]
            top[rows] = vals[:, 0]
            second[rows] = np.where(np.isfinite(vals[:, 1]), vals[:, 1], np.nan)
        top_subject[rows] = np.where(np.isfinite(top[rows]), best, -1)
    own_subject = np.full(n, -1, np.int64)
    own_subject[g.faces] = g.subject_of_face
    enrolled = column >= 0
    # a face enrolled as a one-face subject is a stranger to the gallery searched without it
    sizes = np.diff(np.r_[starts, len(g.faces)])
    alone = enrolled & (sizes[np.maximum(own_subject, 0)] == 1)
    own_subject[alone] = -1
    return Searched(top, second, top_subject, own_subject, enrolled)


# ---------------------------------------------------------------------------------------------- counting


def rate(errors: int, trials: int) -> dict:
    """As demographics.rate: {"rate", "errors", "trials", "ci95"} (Wilson 95%)."""
    return demo.rate(int(errors), int(trials))


def strangers(matched: np.ndarray, nonmated: np.ndarray, people: np.ndarray) -> tuple[float, int]:
    """(events, strangers): each person with non-mated probes counts once, as the share of their probes matched."""
    ids = people[nonmated]
    if not len(ids):
        return 0.0, 0
    photos = np.bincount(ids)
    hits = np.bincount(ids, weights=matched[nonmated].astype(float), minlength=len(photos))
    present = photos > 0
    return float((hits[present] / photos[present]).sum()), int(present.sum())


def fpir_figure(events: float, probes: int, target: float, draws: int = 1) -> dict:
    """An FPIR of ``events`` (a person counts as the share of their photos matched) among ``probes`` strangers.

    ``draws``: galleries of one size pooled (the same strangers searched against each): the rate is
    their mean, and the interval and the conclusive rule count the strangers of one draw.
    """
    per_draw = probes / max(draws, 1)
    expected = target * per_draw
    value = events / probes if probes else None
    lo, hi = wilson_interval(value * per_draw, per_draw) if probes else (None, None)
    conclusive = bool(expected >= MIN_EVENTS)
    within = None if value is None else bool(target / 2 <= value <= 2 * target)
    where = None if lo is None else "above" if lo > target else "below" if hi < target else "inside"
    return {"rate": value, "errors": round(events, 3), "trials": int(round(per_draw)),
            "ci95": None if lo is None else [lo, hi], "events": round(events / max(draws, 1), 3),
            "expected_events": expected, "conclusive": conclusive, "draws": draws,
            "interval_vs_target": where,  # "above": the whole 95% interval lies above the target
            "verdict": ("within a factor of 2 of the target" if within else "NOT within a factor of 2 of the target")
            if conclusive else f"not conclusive: the target expects {expected:.3g} events among {per_draw:,.0f} "
                               f"strangers, fewer than {MIN_EVENTS}",
            "within_factor_2": within, "at_most_target": None if value is None else bool(value <= target)}


def decide(policy: OpenSetPolicy, s: Searched) -> np.ndarray:
    """The policy's decision per probe, checked: a "match" never has a second subject at the threshold."""
    decisions = policy.decide_many(s.top, s.second)
    if policy.threshold is not None:
        matched = decisions == MATCH
        two = matched & ~np.isnan(s.second) & (s.second >= policy.threshold.score)
        assert not two.any(), f"{int(two.sum())} probes decided 'match' with two subjects above the threshold"
        assert not (matched & (s.top < policy.threshold.score)).any()
    else:
        assert not (decisions == MATCH).any(), "an unsupported policy decided 'match'"
    return decisions


def count(policy: OpenSetPolicy, s: Searched, probes: np.ndarray | None = None,
          people: np.ndarray | None = None) -> dict:
    """The figures of one policy on one gallery's searches (``probes``: which templates count).

    FPIR counts strangers (``people``: a person number per template; default each template its own
    person), each as the share of their photos decided "match"; ``fpir_images`` counts photos.
    """
    probes = np.ones(len(s.top), bool) if probes is None else probes
    people = np.arange(len(s.top)) if people is None else people
    decisions = decide(policy, s)
    mated = probes & (s.own_subject >= 0)
    nonmated = probes & (s.own_subject < 0)
    match = decisions == MATCH
    right = match & (s.top_subject == s.own_subject)
    wrong = mated & match & (s.top_subject != s.own_subject)
    if policy.threshold is None:
        two_above = np.zeros(len(s.top), bool)
    else:  # the decision rule sends these to review: a search never holds two matches
        two_above = probes & ~np.isnan(s.second) & (s.second >= policy.threshold.score)
    n_m, n_n = int(mated.sum()), int(nonmated.sum())
    return {
        "policy": {**policy.to_dict(), "basis": policy.threshold.basis if policy.threshold else "unsupported"},
        "fpir": fpir_figure(*strangers(match, nonmated, people), policy.target_fpir),
        "fpir_images": rate(int((nonmated & match).sum()), n_n),
        "fnir": rate(n_m - int((mated & right).sum()), n_m),
        "wrong_person": {**rate(int(wrong.sum()), n_m),
                         "at_most_0.1%": bool(n_m and wrong.sum() <= MAX_WRONG_PERSON * n_m)},
        "review": {"mated": rate(int((mated & (decisions == REVIEW)).sum()), n_m),
                   "nonmated": rate(int((nonmated & (decisions == REVIEW)).sum()), n_n)},
        "two_subjects_above_threshold": int(two_above.sum()),
        "two_matches_for_one_probe": 0,  # asserted in decide()
    }


def audit(policy: OpenSetPolicy, s: Searched, t: FaceTemplates, g: GallerySplit, limit: int = 200) -> list[dict]:
    """Every error that is a "match": non-mated probes matched, mated probes matched to the wrong subject.

    Highest similarity first, for reading by eye: on LFW many are one person filed under two names, or
    the same photo under two names (errors of the labels rather than of the model).
    """
    decisions = decide(policy, s)
    match = decisions == MATCH
    nonmated = match & (s.own_subject < 0)
    wrong = match & (s.own_subject >= 0) & (s.top_subject != s.own_subject)
    rows = np.nonzero(nonmated | wrong)[0]
    rows = rows[np.argsort(-s.top[rows], kind="stable")][:limit]
    return [{"kind": "non-mated" if nonmated[i] else "wrong-person", "probe": t.paths[i],
             "own_subject": None if s.own_subject[i] < 0 else g.subjects[s.own_subject[i]],
             "matched": g.subjects[s.top_subject[i]], "similarity": round(float(s.top[i]), 4),
             "second": None if np.isnan(s.second[i]) else round(float(s.second[i]), 4)} for i in rows]


def group_fpir(policy: OpenSetPolicy, s: Searched, groups: dict[str, np.ndarray],
               probes: np.ndarray | None = None, people: np.ndarray | None = None) -> dict:
    """FPIR per group of each attribute, over the strangers whose non-mated probes carry that attribute's label."""
    probes = np.ones(len(s.top), bool) if probes is None else probes
    people = np.arange(len(s.top)) if people is None else people
    decisions = decide(policy, s)
    nonmated = probes & (s.own_subject < 0)
    match = decisions == MATCH
    out = {}
    for attribute, labels in groups.items():
        names = sorted({g for g in labels[nonmated] if g is not None})
        if not names:
            continue
        out[attribute] = {}
        for name in names:
            mine = nonmated & (labels == name)
            out[attribute][name] = fpir_figure(*strangers(match, mine, people), policy.target_fpir)
        values = [v["rate"] for v in out[attribute].values() if v["conclusive"] and v["rate"]]
        out[attribute] = {"groups": out[attribute],
                          "max_min_ratio": max(values) / min(values) if len(values) >= 2 else None}
    return out


def recommend_margin(galleries: list[dict], margins: Sequence[float], targets: Sequence[float]) -> dict:
    """The smallest margin whose wrong-person matches are at most 0.1% of mated probes at every size, at the default
    policy's target (the issue's acceptance); the worst rate at every target is reported beside it."""
    considered = [DEFAULT_TARGET] if DEFAULT_TARGET in targets else list(targets)

    def rows(m):
        return [r for g in galleries for r in g["results"]
                if r["policy"]["margin"] == m and r["policy"]["target_fpir"] in considered]

    chosen = next((m for m in sorted(margins)
                   if all(r["wrong_person"]["errors"] <= MAX_WRONG_PERSON * r["wrong_person"]["trials"]
                          for r in rows(m))), None)
    base = min(margins)
    cost = {}
    if chosen is not None:
        for g in galleries:
            for f in considered:
                at = {r["policy"]["margin"]: r for r in g["results"] if r["policy"]["target_fpir"] == f}
                cost[f"{g['name']} @ {f:g}"] = {
                    "fnir": at[chosen]["fnir"]["rate"], "fnir_at_margin_0": at[base]["fnir"]["rate"],
                    "fnir_cost": (at[chosen]["fnir"]["rate"] or 0) - (at[base]["fnir"]["rate"] or 0)}
    worst = {f"{m:g}": max((r["wrong_person"]["rate"] or 0 for r in rows(m)), default=None) for m in margins}
    worst_any = {f"{m:g}": max((r["wrong_person"]["rate"] or 0 for g in galleries for r in g["results"]
                                if r["policy"]["margin"] == m), default=None) for m in margins}
    return {"margin": chosen,
            "rule": f"the smallest margin whose wrong-person matches are at most {MAX_WRONG_PERSON:.1%} of mated "
                    f"probes at every gallery size and at target FPIR {', '.join(f'{f:g}' for f in considered)}",
            "why_none": None if chosen is not None else "no margin in the list meets the rule",
            "worst_wrong_person_rate_by_margin": worst, "worst_wrong_person_rate_by_margin_any_target": worst_any,
            "fnir_cost": cost}


def pool(rows: list[dict]) -> dict:
    """One policy's figures over several galleries of one size (the same probes searched against each).

    FPIR: the strangers' events summed over the draws (their mean rate), with each draw's rate; the
    others: errors and trials summed.
    """
    first = rows[0]
    if len(rows) == 1:
        return {**first, "fpir": {**first["fpir"], "per_draw": [first["fpir"]["rate"]]}}
    target = first["policy"]["target_fpir"]

    def summed(key: str, sub: str | None = None) -> dict:
        parts = [r[key][sub] if sub else r[key] for r in rows]
        return rate(sum(x["errors"] for x in parts), sum(x["trials"] for x in parts))

    events = sum(r["fpir"]["errors"] for r in rows)
    people = sum(r["fpir"]["trials"] for r in rows)
    wrong = summed("wrong_person")
    return {**first,
            "fpir": {**fpir_figure(events, people, target, draws=len(rows)),
                     "per_draw": [round(r["fpir"]["rate"], 6) if r["fpir"]["rate"] is not None else None
                                  for r in rows]},
            "fpir_images": summed("fpir_images"), "fnir": summed("fnir"),
            "wrong_person": {**wrong, "at_most_0.1%": bool(wrong["trials"] and
                                                           wrong["errors"] <= MAX_WRONG_PERSON * wrong["trials"])},
            "review": {"mated": summed("review", "mated"), "nonmated": summed("review", "nonmated")},
            "two_subjects_above_threshold": sum(r["two_subjects_above_threshold"] for r in rows),
            "two_matches_for_one_probe": sum(r["two_matches_for_one_probe"] for r in rows)}


def pool_groups(per_draw: list[dict], target: float) -> dict:
    """group_fpir over several draws: each group's events and strangers summed over the draws that hold it."""
    out = {}
    for attribute in dict.fromkeys(a for d in per_draw for a in d):
        held = [d[attribute]["groups"] for d in per_draw if attribute in d]
        figures = {}
        for name in dict.fromkeys(n for groups in held for n in groups):
            mine = [groups[name] for groups in held if name in groups]
            figures[name] = fpir_figure(sum(x["errors"] for x in mine), sum(x["trials"] for x in mine), target,
                                        draws=len(mine))
        values = [v["rate"] for v in figures.values() if v["conclusive"] and v["rate"]]
        out[attribute] = {"groups": figures, "max_min_ratio": max(values) / min(values) if len(values) >= 2 else None}
    return out


def evaluate_templates(t: FaceTemplates, policy_for: PolicyFor, *, sizes: Sequence[int | None] = SIZES,
                       targets: Sequence[float] = TARGETS, margins: Sequence[float] = MARGINS,
                       group_targets: Sequence[float] = (DEFAULT_TARGET, 1e-2), group_margin: float = 0.0,
                       seed: int = SEED, draws: int = DRAWS, progress: Callable | None = None) -> dict:
    """The evaluation of the module docstring on ``t`` (already screened): galleries, figures, margin advice.

    Each size smaller than the largest is drawn ``draws`` times (seeds ``seed`` ...); its figures pool
    the draws (see :func:`pool`), and the first draw's gallery is described (its errors listed).
    """
    people = t.people()
    jobs = [(size, seed + d) for size in sizes for d in range(1 if size is None else max(draws, 1))]
    by_size: dict = {}
    for size, s_seed in (progress(jobs, f"searching {len(jobs)} galleries") if progress else jobs):
        splits = split_galleries(t, (size,), s_seed)
        if not splits or (size is not None and splits[0].name == "largest" and s_seed != seed):
            continue
        g = splits[0]
        start = time.perf_counter()
        s = search(t, g)
        search_s = time.perf_counter() - start
        entry = by_size.setdefault(g.name, {"draws": []})
        entry["draws"].append({
            "results": [count(policy_for(f, g.size, m), s, people=people) for f in targets for m in margins],
            "groups": {f"{f:g}": group_fpir(policy_for(f, g.size, group_margin), s, t.groups, people=people)
                       for f in group_targets}})
        if len(entry["draws"]) > 1:
            continue
        mated = int((s.own_subject >= 0).sum())
        entry["gallery"] = {
            "name": g.name, "faces": g.size, "subjects": len(g.subjects), "enrolled_people": g.enrolled_people,
            "distractors": g.distractors, "mated_probes": mated, "nonmated_probes": len(t) - mated,
            "strangers": int(len(np.unique(people[s.own_subject < 0]))),
            "nonmated_by_source": {str(k): int(((s.own_subject < 0) & (t.source == k)).sum())
                                   for k in (LFW, UTK, PEOPLE)},
            "search_seconds": round(search_s, 3),
            "match_errors": {"margin": min(margins), "draw": 0, "by_target": {
                f"{f:g}": audit(policy_for(f, g.size, min(margins)), s, t, g) for f in targets}}}
    galleries = []
    for entry in by_size.values():
        n = len(entry["draws"])
        results = [pool([d["results"][i] for d in entry["draws"]]) for i in range(len(entry["draws"][0]["results"]))]
        groups = {f: pool_groups([d["groups"][f] for d in entry["draws"]], float(f)) for f in entry["draws"][0]["groups"]}
        galleries.append({**entry["gallery"], "draws": n, "results": results,
                          "groups": {"margin": group_margin, "by_target": groups}})
    return {"galleries": galleries, "recommended_margin": recommend_margin(galleries, margins, targets),
            "seed_spread": spread(galleries, min(margins))}


def spread(galleries: list[dict], margin: float) -> dict:
    """Per size drawn more than once and target: the draws' FPIR (min / median / max) at ``margin``."""
    out: dict = {}
    for g in galleries:
        if g["draws"] < 2:
            continue
        for r in g["results"]:
            if r["policy"]["margin"] != margin:
                continue
            target = r["policy"]["target_fpir"]
            values = np.array([v for v in r["fpir"]["per_draw"] if v is not None], float)
            out.setdefault(g["name"], {})[f"{target:g}"] = {
                "seeds": len(values), "margin": margin,
                "fpir": {"min": float(values.min()), "median": float(np.median(values)), "max": float(values.max()),
                         "values": [round(float(x), 6) for x in values]},
                "share_within_factor_2": float(np.mean((values >= target / 2) & (values <= 2 * target))),
                "share_at_most_target": float(np.mean(values <= target))}
    return out


def calibration_policies(calibration: Calibration) -> PolicyFor:
    cache: dict = {}

    def policy_for(target: float, n: int, margin: float) -> OpenSetPolicy:
        key = (target, n, margin)
        if key not in cache:
            cache[key] = OpenSetPolicy.derive(calibration, target, n, margin=margin)
        return cache[key]

    return policy_for


def acceptance(result: dict, default_target: float = DEFAULT_TARGET) -> dict:
    """The issue's acceptance, checked on a result: each item with the figures behind it."""
    fpir_rows, fail = [], []
    margin = result["recommended_margin"]["margin"]
    for g in result["galleries"]:
        for r in g["results"]:
            f = r["fpir"]
            if f["conclusive"]:
                fpir_rows.append({"gallery": g["name"], "target": r["policy"]["target_fpir"],
                                  "margin": r["policy"]["margin"], "fpir": f["rate"], "ok": f["within_factor_2"]})
    default_rows = [(g, r) for g in result["galleries"] for r in g["results"]
                    if r["policy"]["target_fpir"] == default_target
                    and r["policy"]["margin"] == (margin if margin is not None else 0.0)]
    wrong = [{"gallery": g["name"], "errors": r["wrong_person"]["errors"], "mated": r["wrong_person"]["trials"],
              "rate": r["wrong_person"]["rate"], "ok": r["wrong_person"]["at_most_0.1%"]} for g, r in default_rows]
    low = [{"gallery": g["name"], "fpir": r["fpir"]["rate"], "events": r["fpir"]["events"],
            "probes": r["fpir"]["trials"], "ok": (r["fpir"]["rate"] or 0) <= 0.01} for g, r in default_rows]
    checks = {
        "fpir_within_factor_2_where_conclusive": {"ok": all(x["ok"] for x in fpir_rows), "rows": fpir_rows},
        "wrong_person_at_most_0.1%_at_default_policy": {"ok": bool(wrong) and all(x["ok"] for x in wrong),
                                                        "margin": margin, "rows": wrong},
        "default_policy_fpir_at_most_1%": {"ok": all(x["ok"] for x in low), "rows": low},
        "never_two_matches_for_one_probe": {
            "ok": all(r["two_matches_for_one_probe"] == 0 for g in result["galleries"] for r in g["results"]),
            "how": "asserted for every probe of every gallery, target and margin"},
    }
    for name, c in checks.items():
        if not c["ok"]:
            fail.append(name)
    return {"passed": not fail, "failed": fail, "checks": checks}


# ---------------------------------------------------------------------------------------------- the evaluation


def evaluate_open_set(settings: Settings, profile: str, data_dir: Path, sizes: Sequence[int | None] = SIZES,
                      targets: Sequence[float] = TARGETS, margins: Sequence[float] = MARGINS, *,
                      workers: int | None = None, seed: int = SEED, quick: bool = False,
                      templates: FaceTemplates | None = None, unscreened: bool = True, draws: int = DRAWS,
                      progress: Callable | None = None) -> dict:
    """FPIR, FNIR, wrong-person matches and review share of the open-set policy on real galleries.

    See the module docstring for the protocol. ``templates``: already loaded (else every usable face
    of ``data_dir`` is embedded, cached); ``unscreened``: also report the figures without the
    possibly-same-person screen; ``draws``: galleries drawn per size below the largest (pooled, see
    :func:`evaluate_templates`); ``quick`` only labels the result (the caller chose a subset).
    """
    started = time.perf_counter()
    engine = FaceEngine(settings, profile)
    calibration = load_calibration(engine.model_id, settings.home)
    if calibration is None:
        raise RuntimeError(f"no calibration for {engine.model_id}: run `faceledger eval calibrate` first")
    all_faces = templates if templates is not None else load_templates(settings, profile, data_dir, workers)
    embedded_s = time.perf_counter() - started
    screen_threshold = calibration.threshold(SCREEN_FMR)
    keep, left_out = screen(all_faces, screen_threshold)
    screened = all_faces.subset(keep)
    policy_for = calibration_policies(calibration)
    kwargs = {"sizes": sizes, "targets": targets, "margins": margins, "seed": seed,
              "group_margin": settings.match_margin,
              "group_targets": tuple(dict.fromkeys((DEFAULT_TARGET, settings.default_target_fpir, 1e-2))),
              "draws": draws}
    result = evaluate_templates(screened, policy_for, progress=progress, **kwargs)
    raw = evaluate_templates(all_faces, policy_for, **kwargs) if unscreened else None
    out = {
        "quick": quick, "protocol": PROTOCOL, "profile": profile, "model_id": engine.model_id, "seed": seed,
        "targets": list(targets), "margins": list(margins), "default_target_fpir": DEFAULT_TARGET,
        "conclusive_rule": f"an FPIR is conclusive where target x non-mated probes >= {MIN_EVENTS}",
        "data": {
            "faces": {k: int((all_faces.source == k).sum()) for k in (LFW, UTK, PEOPLE)},
            "not_detected_left_out": all_faces.unusable,
            "screen": {"rule": "calibrate.possibly_same_person at the calibration's FMR "
                               f"{SCREEN_FMR:g} threshold", "threshold": screen_threshold,
                       "left_out": len(left_out), "faces": left_out},
            "lfw_people": len(set(all_faces.person[all_faces.source == LFW])),
        },
        "calibration": {"source": calibration.source, "impostor_pairs": calibration.impostor_pairs,
                        "resolution": calibration.resolution, "lowest_fmr": calibration.lowest_fmr},
        **result,
        "unscreened": None if raw is None else {"galleries": [_brief(g) for g in raw["galleries"]],
                                                "recommended_margin": raw["recommended_margin"]["margin"]},
    }
    out["acceptance"] = acceptance(out)
    out["timing"] = {"templates_seconds": round(embedded_s, 1),
                     "total_seconds": round(time.perf_counter() - started, 1)}
    return out


def _brief(g: dict) -> dict:
    """A gallery's figures without the groups and the list of errors, for the unscreened comparison."""
    return {k: v for k, v in g.items() if k not in ("groups", "match_errors")}


def report_section(settings: Settings, profile: str, data_dir: Path, lfw: tuple, *, quick: bool = False,
                   utk_per_cell: int | None = None, workers: int | None = None,
                   targets: Sequence[float] = (DEFAULT_TARGET, 1e-2)) -> dict:
    """For the fairness report: FPIR overall and per group at the default policy, on the largest gallery only.

    The deployment's default target FPIR (and 1e-2) at its configured margin. ``lfw``: the report's
    LFW (folder, images, templates, detection status), reused; the other sets come from the cache.
    """
    started = time.perf_counter()
    targets = tuple(dict.fromkeys([settings.default_target_fpir, *targets]))
    faces = load_templates(settings, profile, data_dir, workers, lfw=lfw, utk_per_cell=utk_per_cell)
    result = evaluate_open_set(settings, profile, data_dir, sizes=(None,), targets=targets,
                               margins=(settings.match_margin,), quick=quick, templates=faces, unscreened=False,
                               draws=1)
    return section_from_result(result, settings.match_margin, settings.default_target_fpir,
                               seconds=round(time.perf_counter() - started, 1))


def section_from_result(result: dict, margin: float, default_target: float, seconds: float | None = None) -> dict:
    """The report's open-set section from an evaluation of the largest gallery alone (its last gallery)."""
    g = result["galleries"][-1]
    return {
        "protocol": result["protocol"], "quick": bool(result.get("quick")), "margin": margin,
        "default_target_fpir": default_target,
        "gallery": {k: g[k] for k in ("faces", "subjects", "enrolled_people", "distractors", "mated_probes",
                                      "nonmated_probes", "nonmated_by_source")},
        "screened_out": result.get("data", {}).get("screen", {}).get("left_out", 0),
        "overall": {f"{r['policy']['target_fpir']:g}": {"policy": r["policy"], "fpir": r["fpir"], "fnir": r["fnir"],
                                                        "wrong_person": r["wrong_person"]}
                    for r in g["results"] if r["policy"]["margin"] == margin},
        "groups": g["groups"]["by_target"], "seconds": seconds,
    }
