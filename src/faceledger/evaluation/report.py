"""`faceledger report`: accuracy and fairness of the deployed model, as one HTML page and one JSON file.

Sections: a summary in plain words (generated from the numbers) and a glossary, verification
(LFW protocol), open-set identification (LFW, through the gallery), FPIR per group at the default
open-set policy (the largest real gallery, :mod:`faceledger.evaluation.openset`), demographic
differentials at the global thresholds (LFW labels), detection and enrolment failure per group
(UTKFace sample), threshold guidance, model card.

``quick=True`` runs the same sections on a labelled subset (the people of LFW's protocol folds
1-3, 40 UTKFace crops per race x gender cell) for a first look in a few minutes.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import inspect
import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.progress import track

from faceledger import __version__
from faceledger.config import Settings
from faceledger.evaluation import demographics as demo
from faceledger.evaluation import plots
from faceledger.evaluation.batch import embed_files
from faceledger.evaluation.calibrate import lfw_images
from faceledger.evaluation.identify import evaluate_identification
from faceledger.evaluation.lfw import evaluate, read_pairs
from faceledger.evaluation.openset import report_section
from faceledger.gallery.gallery import Gallery
from faceledger.matching.calibration import load_calibration
from faceledger.pipeline.engine import Components, FaceEngine
from faceledger.pipeline.quality import QualityLimits

# the summary speaks of the threshold a new collection gets
DEFAULT_FMR: float = inspect.signature(Gallery.create_collection).parameters["target_fmr"].default
QUICK_FOLDS = (1, 2, 3)  # LFW's folds are identity-disjoint: their people form a self-contained subset
QUICK_UTK_PER_CELL = 40
QUICK_BANNER = "QUICK SUBSET — not the full evaluation"


def age_band(age: int) -> str:
    for hi, label in ((17, "0-17"), (29, "18-29"), (44, "30-44"), (59, "45-59")):
        if age <= hi:
            return label
    return "60+"


def utk_failures(engine: FaceEngine, folder: Path, per_cell: int | None = None) -> dict:
    """Failure to detect and failure to enrol (no face passing the quality limits) per group.

    ``per_cell``: only the first so many images of each race x gender cell (the quick subset).
    """
    rows = list(csv.DictReader((folder / "labels.csv").open()))
    if per_cell:
        seen: dict = defaultdict(int)
        kept = []
        for row in rows:
            seen[row["race"], row["gender"]] += 1
            if seen[row["race"], row["gender"]] <= per_cell:
                kept.append(row)
        rows = kept
    outcome = []
    for row in track(rows, description="UTKFace detection and enrolment"):
        analysis = engine.analyze(folder / "images" / row["file"], embed=False)
        detected = len(analysis) > 0
        enrolable = any(q.passed for q in analysis.quality)
        reasons = sorted({r.value for q in analysis.quality for r in q.reasons}) if detected and not enrolable else []
        outcome.append((row, detected, enrolable, reasons))
    out = {}
    for attribute, key in (("race", lambda r: r["race"]), ("gender", lambda r: r["gender"]),
                           ("age band", lambda r: age_band(int(r["age"])))):
        groups = defaultdict(list)
        for row, detected, enrolable, reasons in outcome:
            groups[key(row)].append((detected, enrolable, reasons))
        out[attribute] = {g: {"images": len(v), "failure_to_detect": demo.rate(sum(not d for d, _, _ in v), len(v)),
                              "failure_to_enrol": demo.rate(sum(not e for _, e, _ in v), len(v)),
                              "refusal_reasons": dict(sorted(_count(r for _, _, rs in v for r in rs).items()))}
                          for g, v in sorted(groups.items())}
    return out


def _count(items) -> dict:
    c: dict = defaultdict(int)
    for i in items:
        c[i] += 1
    return c


def quick_subset(data_dir: Path, home: Path) -> Path:
    """A data folder holding only the people of LFW's protocol folds ``QUICK_FOLDS`` (links, not copies).

    It lives at a fixed place under HOME so that the embedding cache (keyed by folder) serves later quick runs.
    """
    lfw = Path(data_dir).resolve() / "lfw"
    pairs = read_pairs(lfw / "pairs.txt").select([f - 1 for f in QUICK_FOLDS])
    people = sorted({p.split("/")[0] for p in pairs.images})
    root = Path(home).resolve() / "quick-data"
    if root.exists():
        shutil.rmtree(root)
    (root / "lfw").mkdir(parents=True)
    for name in people:
        (root / "lfw" / name).symlink_to(lfw / name, target_is_directory=True)
    for name in ("pairs.txt", "people.txt", "demographics.csv"):
        if (lfw / name).is_file():
            (root / "lfw" / name).symlink_to(lfw / name)
    return root


def same_person_scores(templates: np.ndarray, identities: list[str]) -> np.ndarray:
    """The scores of every pair of two images of one person (each unordered pair once)."""
    by_person: dict[str, list[int]] = defaultdict(list)
    for i, who in enumerate(identities):
        by_person[who].append(i)
    out = [np.empty(0, templates.dtype)]
    for rows in by_person.values():
        if len(rows) > 1:
            t = templates[rows]
            out.append((t @ t.T)[np.triu_indices(len(rows), k=1)])
    return np.concatenate(out)


def build_report(settings: Settings, profile: str, data_dir: Path, out: Path, fmrs: list[float],
                 workers: int | None = None, quick: bool = False) -> dict:
    engine = FaceEngine(settings, profile)
    calibration = load_calibration(engine.model_id, settings.home)
    if calibration is None:
        raise RuntimeError(f"no calibration for {engine.model_id}: run `faceledger eval calibrate` first")
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, Path] = {}
    lfw_dir = quick_subset(data_dir, settings.home) if quick else Path(data_dir)
    if DEFAULT_FMR not in fmrs:  # the summary speaks of the threshold a new collection gets
        fmrs = [*fmrs, DEFAULT_FMR]
    default = DEFAULT_FMR
    level = f"{default:g}"

    verification, scores, pairs = evaluate(settings, profile, data_dir=lfw_dir, workers=workers,
                                           folds=list(QUICK_FOLDS) if quick else None)
    genuine, impostor = scores[pairs.same], scores[~pairs.same]
    pngs["roc_det"] = plots.roc_det_png({profile: (genuine, impostor)}, out / "roc_det.png",
                                        f"LFW verification, {profile}" + (" (quick subset)" if quick else ""))

    identification, (fpir, fnir) = evaluate_identification(settings, profile, lfw_dir, workers)
    pngs["fnir_fpir"] = plots.fnir_fpir_png({profile: (fpir, fnir)}, out / "fnir_fpir.png",
                                            "LFW open-set identification" + (" (quick subset)" if quick else ""))

    lfw = lfw_dir / "lfw"
    images = lfw_images(lfw)
    embedded = embed_files(lfw, images, engine.profile.components, settings, workers=workers,
                           label="LFW templates for group statistics")
    templates = Components(embedded.vectors).template(engine.profile.components)
    identities = [p.split("/")[0] for p in images]
    all_genuine = same_person_scores(templates, identities)
    thresholds = {f: calibration.threshold(f) for f in fmrs}
    verification["fnmr_at_fmr"] = {
        f"{f:g}": {"threshold": t,
                   "lfw_protocol_pairs": demo.rate(int((genuine < t).sum()), len(genuine)),
                   "all_same_person_pairs": demo.rate(int((all_genuine < t).sum()), len(all_genuine))}
        for f, t in thresholds.items()}

    # FPIR per group at the default open-set policy: the LFW templates above, the other sets from the cache
    open_set = report_section(settings, profile, Path(data_dir), (lfw, images, templates, embedded.status),
                              quick=quick, utk_per_cell=QUICK_UTK_PER_CELL if quick else None, workers=workers)
    default_fpir = f"{open_set['default_target_fpir']:g}"
    for attribute, d in open_set["groups"].get(default_fpir, {}).items():
        pngs[f"open_set_{attribute}"] = plots.open_set_groups_png(
            d["groups"], out / f"open_set_{attribute.replace(' ', '_')}.png",
            f"FPIR per {attribute} group at the default open-set policy (target FPIR {default_fpir}, gallery of "
            f"{open_set['gallery']['faces']:,} faces)", open_set["default_target_fpir"])

    labels = demo.lfw_labels(lfw / "demographics.csv")
    differentials = {}
    for attribute in ("gender", "race"):
        groups = [labels.get(p, {}).get(attribute) for p in images]
        result = demo.group_rates(templates, identities, groups, thresholds)
        samples = result.pop("impostor_samples")
        at = result["by_fmr"][level]["groups"]
        pngs[f"{attribute}_fmr"] = plots.group_bars_png(
            {g: v["fmr"] for g, v in at.items()}, out / f"{attribute}_fmr.png",
            f"False match rate within {attribute} groups at the default threshold (FMR {level})",
            "FMR (different-person pairs)", unit="sci", count="pairs", target=default)
        pngs[f"{attribute}_fnmr"] = plots.group_bars_png(
            {g: v["fnmr"] for g, v in at.items()}, out / f"{attribute}_fnmr.png",
            f"False non-match rate per {attribute} group at the default threshold (FMR {level})",
            "FNMR (same-person pairs)", unit="%", count="pairs")
        pngs[f"{attribute}_impostors"] = plots.score_histograms_png(
            samples, {f"FMR {f:g}": t for f, t in thresholds.items()}, out / f"{attribute}_impostors.png",
            f"Impostor scores within and across {attribute} groups")
        result["threshold_guidance"] = {
            f"{f:g}": {"global_threshold": thresholds[f],
                       "groups": {g: {"fnmr_at_global": v["fnmr"]["rate"], "fmr_at_global": v["fmr"]["rate"],
                                      "group_calibrated_threshold": v["group_calibrated_threshold"],
                                      "within_group_impostor_pairs": v["fmr"]["trials"],
                                      "why_none": None if v["group_calibrated_threshold"] is not None else
                                      _too_few_impostors(v["fmr"]["trials"], f)}
                                  for g, v in result["by_fmr"][f"{f:g}"]["groups"].items()}}
            for f in fmrs}
        result["impostor_sample_sizes"] = {k: len(v) for k, v in samples.items()}
        result["impostor_medians"] = {k: float(np.median(v)) if len(v) else None for k, v in samples.items()}
        result["labelled_images"] = int(sum(g is not None for g in groups))
        differentials[attribute] = result

    failures = utk_failures(engine, Path(data_dir) / "utkface_sample", QUICK_UTK_PER_CELL if quick else None)
    for attribute, rows in failures.items():
        pngs[f"utk_{attribute}"] = plots.group_bars_png(
            {g: {**v["failure_to_enrol"], "conclusive": True} for g, v in rows.items()},
            out / f"utk_{attribute.replace(' ', '_')}.png",
            f"Failure to enrol per {attribute} (UTKFace sample{', quick subset' if quick else ''})",
            "failure-to-enrol rate", unit="%", count="photos")

    desc = engine.describe()
    utk_images = sum(x["images"] for x in failures["race"].values())
    subset = None
    if quick:
        subset = (f"LFW: the {len(set(identities)):,} people of protocol folds "
                  f"{', '.join(map(str, QUICK_FOLDS))} ({len(images):,} images; {len(pairs):,} protocol pairs); "
                  f"UTKFace: the first {QUICK_UTK_PER_CELL} crops of each race x gender cell ({utk_images:,} images). "
                  "Group sizes are a fraction of the full run's, so fewer groups are conclusive and intervals are "
                  "wider; run `faceledger report` without --quick for the figures to quote.")
    report = {
        "notice": QUICK_BANNER if quick else None, "quick": quick, "subset": subset,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "faceledger_version": __version__, "profile": profile, "model_id": engine.model_id, "default_fmr": level,
        "verification": verification, "identification": identification, "open_set": open_set,
        "demographic_differentials": differentials, "enrolment_failures": failures,
        "refusal_reason_words": reason_words(QualityLimits.from_settings(settings)),
        "glossary": GLOSSARY,
        "model_card": {
            "models": desc["models"], "template_dimensions": int(templates.shape[1]),
            "thresholds": {f"{f:g}": t for f, t in thresholds.items()},
            "calibration": {"source": calibration.source, "impostor_pairs": calibration.impostor_pairs},
            "data": {
                "verification": (f"LFW deep-funneled, official pairs.txt, folds {', '.join(map(str, QUICK_FOLDS))} "
                                 f"only ({len(pairs):,} pairs)" if quick else
                                 "LFW deep-funneled, official pairs.txt (6,000 pairs, 10 folds)"),
                "identification": (f"LFW: {identification['gallery_subjects']:,} enrolled, "
                                   f"{identification['mated_probes']:,} mated and "
                                   f"{identification['nonmated_probes']:,} non-mated probes"
                                   + (" (quick subset)" if quick else "")),
                "open-set FPIR per group": (
                    f"every usable LFW face enrolled ({open_set['gallery']['faces']:,} faces, "
                    f"{open_set['gallery']['subjects']:,} subjects); {open_set['gallery']['nonmated_probes']:,} "
                    "searches by people not enrolled (each LFW single-image person with their own face left out, "
                    "the UTKFace sample, the named people)" + (" (quick subset)" if quick else "")),
                "demographics": (f"LFW labels on {len(images):,} images"
                                 + (" (quick subset)" if quick else "") +
                                 ": gender (Afifi and Abdelhamed 2017), race (USC SAIL, per identity; mixed labels "
                                 "left out); FNMR over every same-person pair of a group"),
                "enrolment failures": f"UTKFace balanced sample, {utk_images:,} aligned 200x200 crops"
                                      + (" (quick subset)" if quick else "")},
            "limitations": ([f"{QUICK_BANNER}: {subset}"] if quick else []) + LIMITATIONS},
    }
    report["summary"] = plain_summary(report)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_json) + "\n")
    (out / "index.html").write_text(render_html(report, pngs))
    return report


LIMITATIONS = [
    ("LFW is news photography of mostly adult, mostly white, mostly male public figures; error rates on other "
     "populations, cameras and lighting can be higher."),
    ("The race labels cover 866 identities and are dominated by 'caucasian'; most race groups are too small to "
     "conclude anything, and the report says so per group."),
    ("Thresholds come from LFW impostor pairs, mostly of people who differ in age, sex and origin; impostors of the "
     "same group score higher (see the impostor distributions), so the FMR within a group can exceed the target."),
    ("UTKFace crops are pre-aligned: they measure the quality gate and the detector on faces that fill the image, "
     "not detection in scenes."),
    "faceledger never infers race, gender or age from a face: these labels come only from the evaluation data.",
]

GLOSSARY = {
    "FMR": {"name": "false match rate (also FAR, false accept rate)",
            "meaning": "how often a comparison of photos of two different people is wrongly declared a match (1:1).",
            "example": "FMR 1 in 10,000: of 10,000 comparisons between two different people, one is wrongly "
                       "declared a match."},
    "FNMR": {"name": "false non-match rate",
             "meaning": "how often a comparison of two photos of the same person is wrongly declared a non-match.",
             "example": "FNMR 2%: of 100 comparisons of two photos of the same person, 2 fail to match."},
    "TAR": {"name": "true accept rate (1 - FNMR)",
            "meaning": "how often two photos of the same person are correctly matched, at a stated FMR (FAR).",
            "example": "TAR 98.7% at FAR 1e-3: with the threshold letting through 1 in 1,000 different-person "
                       "comparisons, 987 of 1,000 same-person comparisons match."},
    "EER": {"name": "equal error rate",
            "meaning": "the error rate at the threshold where FMR and FNMR are equal: one number to compare "
                       "models, not a setting to use.",
            "example": "EER 0.7%: at that threshold, 7 in 1,000 different-person comparisons match and 7 in 1,000 "
                       "same-person comparisons do not."},
    "FNIR": {"name": "false negative identification rate",
             "meaning": "in a search of a gallery (1:N), how often an enrolled person is not found: not the top "
                        "candidate, or below the threshold.",
             "example": "FNIR 5%: of 100 searches with a new photo of someone enrolled, 5 do not return them."},
    "FPIR": {"name": "false positive identification rate",
             "meaning": "in a search of a gallery, how often a person who is not enrolled is returned as someone "
                        "who is.",
             "example": "FPIR 1%: of 100 searches with photos of people who are not in the gallery, one returns "
                        "somebody anyway."},
    "rank-1": {"name": "rank-1 identification rate",
               "meaning": "how often the right person is the top candidate of a gallery search, with no threshold.",
               "example": "rank-1 98.6%: 986 of 1,000 searches for enrolled people list them first."},
    "threshold": {"name": "decision threshold",
                  "meaning": "the similarity a comparison must reach to count as a match; faceledger derives it "
                             "from a target FMR.",
                  "example": "FMR 1e-4 threshold 0.42: pairs scoring 0.42 or more are declared the same person."},
    "95% interval": {"name": "95% confidence interval (Wilson)",
                     "meaning": "the range the true rate very likely lies in, given how many comparisons were "
                                "measured; few comparisons give a wide range.",
                     "example": "FNMR 5.0% (95% interval 4.6% to 5.4%)."},
    "not conclusive": {"name": "too little data to conclude",
                       "meaning": f"an FMR needs enough different-person pairs to expect {demo.MIN_ERRORS} false "
                                  f"matches at the target; an FNMR needs {demo.MIN_GENUINE:,} same-person pairs.",
                       "example": f"a group with 50,000 different-person pairs at FMR 1e-4 expects 5 false matches, "
                                  f"fewer than {demo.MIN_ERRORS}: its FMR is not conclusive."},
    "failure to enrol": {"name": "failure-to-enrol rate (FTE)",
                         "meaning": "how often a photo cannot be enrolled: no face found, or the face fails a quality "
                                    "check (too small, blurred, dark, turned away...).",
                         "example": "FTE 0.5%: 1 photo in 200 is refused."},
}


def reason_words(limits: QualityLimits) -> dict[str, str]:
    """Each enrolment refusal reason in words, with the limit it failed."""
    return {
        "SMALL_FACE": f"face too small (shorter side under {limits.min_face_px:g} pixels)",
        "LOW_CONFIDENCE": f"detector unsure it is a face (confidence under {limits.min_confidence:g})",
        "LOW_SHARPNESS": f"photo too blurred (sharpness under {limits.min_sharpness:g})",
        "LOW_BRIGHTNESS": f"face too dark (brightness under {limits.min_brightness:g} of 255)",
        "HIGH_BRIGHTNESS": f"face too bright (brightness over {limits.max_brightness:g} of 255)",
        "LOW_CONTRAST": f"too little contrast (under {limits.min_contrast:g})",
        "EXTREME_POSE": f"head turned or tilted too far (over {limits.max_yaw:g}° or {limits.max_roll:g}°)",
    }


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


# ---------------------------------------------------------------------------------------------- numbers in words


def sig(x: float, digits: int = 2) -> str:
    """``x`` to ``digits`` significant digits, without exponent: 4.96 -> '5.0', 0.5213 -> '0.52', 2.4138 -> '2.4'."""
    if abs(x) < 1e-12:  # 0, or a Wilson bound of 0 off by rounding
        return "0"
    e = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - e)
    rounded = round(x, decimals)
    if rounded and math.floor(math.log10(abs(rounded))) > e:  # 9.96 -> 10: one digit fewer after the point
        decimals = max(0, decimals - 1)
        rounded = round(x, decimals)
    return f"{rounded:,.{decimals}f}"


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{sig(100 * x, digits)}%"


def denominator(*values: float | None) -> int:
    """A power of ten for 'N in D' wording: the smallest non-zero value reads between 1 and 10."""
    positive = [v for v in values if v]
    return 10 ** max(2, math.ceil(-math.log10(min(positive)) - 1e-9)) if positive else 100


def in_n(x: float | None, d: int) -> str:
    return "n/a" if x is None else f"{sig(x * d)} in {d:,}"


def count(n: int) -> str:
    return f"{n:,}"


def one_in(f: float) -> str:
    return f"1 in {round(1 / f):,}"


def times(ratio: float) -> str:
    """'2.4 times as often as' (two significant digits), 'about as often as' when the gap rounds away."""
    return "about as often as" if ratio < 1.05 else f"{sig(ratio)} times as often as"


def ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{sig(ratio)}×"


RACE_WORDS = {"caucasian": "white", "african": "Black", "eastasian": "East Asian", "asianindian": "South Asian",
              "latino": "Latino", "nativeamerican": "Native American", "pacificislander": "Pacific Islander",
              "other": "other"}


def group_words(attribute: str, group: str) -> str:
    if attribute == "gender":
        return {"F": "women", "M": "men"}.get(group, f"people labelled {group}")
    if attribute == "age band":
        return f"people aged {group}"
    return f"people labelled {RACE_WORDS.get(group, group)}"


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'s' * (n != 1)}"


def _too_few_impostors(pairs: int, f: float) -> str:
    if pairs == 0:
        return "no different-person pairs (fewer than two people in the group)"
    verb = "expects" if pairs == 1 else "expect"
    return (f"{plural(pairs, 'different-person pair')} {verb} {sig(pairs * f)} false matches at FMR {one_in(f)}, "
            f"fewer than the {demo.MIN_ERRORS} needed")


def _too_few_genuine(pairs: int) -> str:
    if pairs == 0:
        return "no same-person pairs (nobody in the group has two labelled photos)"
    return f"only {plural(pairs, 'same-person pair')}, fewer than the {demo.MIN_GENUINE:,} needed"


def why_not_conclusive(measure: str, x: dict, f: float) -> str:
    """What is too few for this group's FMR or FNMR (never 'too few pairs' beside millions of pairs)."""
    return _too_few_impostors(x["trials"], f) if measure == "fmr" else _too_few_genuine(x["trials"])


# ---------------------------------------------------------------------------------------------- the summary


class _Sentence:
    """A sentence and the figures in it, each with the JSON path it comes from (checked by the tests)."""

    def __init__(self, report: dict, topic: str) -> None:
        self.report, self.topic, self.figures = report, topic, []

    def fig(self, path: list, shown: str) -> str:
        self.figures.append({"path": path, "value": lookup(self.report, path), "shown": shown})
        return shown

    def ratio(self, hi: list, lo: list, path: list | None, shown_fn) -> str:
        value = lookup(self.report, hi) / lookup(self.report, lo)
        shown = shown_fn(value)
        self.figures.append({"ratio_of": [hi, lo], "path": path, "value": value, "shown": sig(value)})
        return shown

    def done(self, text: str) -> dict:
        return {"topic": self.topic, "text": text, "figures": self.figures}


def lookup(report: dict, path: list):
    value = report
    for key in path:
        value = value[key]
    return value


def plain_summary(r: dict) -> dict:
    """The report's findings in plain sentences, generated from its numbers (none is typed in here)."""
    level = r["default_fmr"]
    f = float(level)
    out: list[dict] = []
    if r.get("quick"):
        out.append({"topic": "quick", "figures": [],
                    "text": f"{QUICK_BANNER}: these figures come from a subset, for a first look. {r['subset']}"})

    v = r["verification"]
    s = _Sentence(r, "verification")
    protocol = ["verification", "fnmr_at_fmr", level, "lfw_protocol_pairs"]
    everyone = ["verification", "fnmr_at_fmr", level, "all_same_person_pairs"]
    out.append(s.done(
        f"On {s.fig(['verification', 'pairs'], count(v['pairs']))} test pairs of the LFW protocol "
        f"(half of them two photos of one person, half of two different people) the model decides correctly "
        f"{s.fig(['verification', 'accuracy_mean'], pct(v['accuracy_mean'], 3))} of the time, with a threshold "
        f"tuned on the other folds."))
    s = _Sentence(r, "default threshold")
    threshold = v["fnmr_at_fmr"][level]["threshold"]
    p, e = lookup(r, protocol), lookup(r, everyone)
    out.append(s.done(
        f"The default threshold (similarity {s.fig(protocol[:3] + ['threshold'], f'{threshold:.4f}')}) "
        f"is set so that {one_in(f)} comparisons of two different people is wrongly declared a match (FMR {level}). "
        f"At it the model fails to recognise "
        f"{s.fig(protocol + ['rate'], pct(p['rate']))} of the protocol's "
        f"{s.fig(protocol + ['trials'], count(p['trials']))} same-person pairs (pairs.txt) and "
        f"{s.fig(everyone + ['rate'], pct(e['rate']))} of all "
        f"{s.fig(everyone + ['trials'], count(e['trials']))} same-person pairs of "
        f"{'the subset' if r.get('quick') else 'LFW'} (FNMR). The {'first' if p['rate'] > e['rate'] else 'second'} "
        f"is higher: all same-person pairs are dominated by a few much-photographed people, while the protocol "
        f"spreads its pairs over many people. The FNMR of each group below is over all of its same-person pairs."))

    for attribute, d in r["demographic_differentials"].items():
        out += _group_sentences(r, attribute, d, level)

    i = r["identification"]
    if i.get("fnir_at_fpir"):
        key = "0.01" if "0.01" in i["fnir_at_fpir"] else next(iter(i["fnir_at_fpir"]))
        s = _Sentence(r, "identification")
        fnir = i["fnir_at_fpir"][key]["fnir"]
        out.append(s.done(
            f"Searching a gallery of {s.fig(['identification', 'gallery_subjects'], count(i['gallery_subjects']))} "
            f"enrolled people with other photos of them, the right person comes first "
            f"{s.fig(['identification', 'rank1'], pct(i['rank1'], 3))} of the time. With a threshold that lets "
            f"{one_in(float(key))} searches for people who are not enrolled return someone (FPIR {key}), "
            f"{s.fig(['identification', 'fnir_at_fpir', key, 'fnir'], pct(fnir))} of searches for enrolled people "
            f"do not find them (FNIR)."))

    out += _open_set_sentences(r)

    failures = r["enrolment_failures"]
    if not any(x["failure_to_enrol"]["errors"] for rows in failures.values() for x in rows.values()):
        photos = sum(x["images"] for x in next(iter(failures.values()), {}).values())
        out.append(_Sentence(r, "enrolment").done(
            f"On the UTKFace sample ({plural(photos, 'photo')}), no photo was refused for enrolment."))
    else:
        for attribute, rows in failures.items():
            out += _enrolment_sentences(r, attribute, rows)
    return {"default_fmr": level, "sentences": out}


def _open_set_sentences(r: dict) -> list[dict]:
    """The default open-set policy's measured FPIR on the largest gallery, and whether it is conclusive."""
    o = r.get("open_set")
    key = f"{o['default_target_fpir']:g}" if o else None
    if not o or key not in o["overall"]:
        return []
    s = _Sentence(r, "open-set policy")
    f = o["overall"][key]["fpir"]
    base = ["open_set", "overall", key, "fpir"]
    text = (f"With the default open-set policy (FPIR {key}: at most {one_in(float(key))} searches for someone who is "
            f"not enrolled should return a match), searching a gallery of "
            f"{s.fig(['open_set', 'gallery', 'faces'], count(o['gallery']['faces']))} faces with "
            f"photos of {s.fig(base + ['trials'], count(f['trials']))} people who are not enrolled returned a match "
            f"for {s.fig(base + ['events'], sig(f['events']))} of them ({s.fig(base + ['rate'], pct(f['rate']))}; "
            "a person counts as the share of their photos matched). ")
    lo, hi = f["ci95"] or (0.0, 0.0)
    if f["conclusive"]:
        text += f"With this many searches the figure is conclusive (95% interval {pct(lo)} to {pct(hi)})."
    else:
        text += (f"The target expects only {sig(f['expected_events'])} such matches among them, fewer than the "
                 f"{demo.MIN_ERRORS} needed to conclude: the true rate could be anywhere from {pct(lo)} to {pct(hi)}.")
    if f.get("interval_vs_target") == "above":
        text += (" That whole range lies above the target. `faceledger eval open-set` lists every such match, to be "
                 "checked by eye: some are one person filed under two names in the evaluation data.")
    return [s.done(text)]


class _Wording:
    """How one measure's rates read: an FMR as 'N in D' (D from the target FMR, the same throughout a
    level), an FNMR as a percentage."""

    def __init__(self, measure: str, f: float) -> None:
        self.measure, self.d = measure, denominator(f)

    def _as_pct(self, x: float | None) -> bool:
        return self.measure != "fmr" or (x or 0) * self.d >= 1000  # '2,775 in 10,000' reads better as 28%

    def __call__(self, x: float | None) -> str:
        return pct(x) if self._as_pct(x) else in_n(x, self.d)

    def span(self, lo: float, hi: float) -> str:
        if self._as_pct(hi):
            return f"{pct(lo)} to {pct(hi)}"
        return f"{sig(lo * self.d)} to {in_n(hi, self.d)}"


def _group_sentences(r: dict, attribute: str, d: dict, level: str) -> list[dict]:
    f = float(level)
    groups = d["by_fmr"][level]["groups"]
    base = ["demographic_differentials", attribute, "by_fmr", level]
    label = {"gender": "gender groups", "race": "LFW's race groups"}.get(attribute, f"{attribute} groups")
    pairs_word = {"fmr": "different-person pairs", "fnmr": "same-person pairs"}
    out = []
    s = _Sentence(r, f"{attribute} differentials")
    clauses, uncertain = [], []
    for measure in ("fmr", "fnmr"):
        w = _Wording(measure, f)
        usable = [g for g, x in groups.items() if x[measure]["conclusive"] and x[measure]["rate"] is not None]
        if len(usable) < 2:
            only = " and ".join(group_words(attribute, g) for g in usable) or "no group"
            uncertain.append(f"Between {label}, the {measure.upper()} cannot be compared: only {only} "
                             f"have enough {pairs_word[measure]} for a conclusive figure.")
            continue
        hi = max(usable, key=lambda g: groups[g][measure]["rate"])
        lo = min(usable, key=lambda g: groups[g][measure]["rate"])
        hx, lx = groups[hi][measure], groups[lo][measure]
        hp, lp = base + ["groups", hi, measure], base + ["groups", lo, measure]
        verb = "falsely matches" if measure == "fmr" else "fails to recognise"
        if lx["rate"] == 0:
            gap = f"{verb} {group_words(attribute, hi)}, and {group_words(attribute, lo)} never in these data"
            numbers = f"{s.fig(hp + ['rate'], w(hx['rate']))} vs 0 of {lx['trials']:,}"
        else:
            gap = (f"{verb} {group_words(attribute, hi)} "
                   f"{s.ratio(hp + ['rate'], lp + ['rate'], base + [f'{measure}_max_min_ratio'], times)} "
                   f"{group_words(attribute, lo)}")
            numbers = f"{s.fig(hp + ['rate'], w(hx['rate']))} vs {s.fig(lp + ['rate'], w(lx['rate']))}"
        what = "comparisons of different people" if measure == "fmr" else \
            "of comparisons of two photos of the same person"
        clauses.append(f"{gap} ({measure.upper()} {numbers} {what})")
        # the uncertainty, in words
        ci = (f"{group_words(attribute, hi)} {w.span(*hx['ci95'])}, "
              f"{group_words(attribute, lo)} {w.span(*lx['ci95'])}")
        if hx["ci95"][0] > lx["ci95"][1]:
            uncertain.append(f"The {measure.upper()} gap is larger than chance: the 95% intervals do not overlap "
                             f"({ci}).")
        else:
            uncertain.append(f"The {measure.upper()} gap could be chance: the 95% intervals overlap ({ci}).")
        for g, x in ((hi, hx), (lo, lx)):
            lo_ci, hi_ci = x["ci95"]
            if lo_ci == 0 or hi_ci / lo_ci > 1.5:
                uncertain.append(f"With {x['trials']:,} {pairs_word[measure]}, the {measure.upper()} of "
                                 f"{group_words(attribute, g)} is uncertain: it could be anywhere from "
                                 f"{w.span(lo_ci, hi_ci)}.")
    if clauses:
        lead = f"Among {label}, at the default threshold," if attribute == "race" else "At the default threshold,"
        out.append(s.done(f"{lead} this model " + ", and ".join(clauses) + ". " + " ".join(uncertain)))
    else:
        out.append(s.done(" ".join(uncertain)))
    empty = [g for g, x in groups.items() if x["fmr"]["trials"] == 0 and x["fnmr"]["trials"] == 0]
    if empty:
        names = [group_words(attribute, g) for g in empty]
        listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
        out.append(_Sentence(r, f"{attribute} not conclusive").done(
            f"Not measured ({label}): {listed} have no pairs at all to compare (too few labelled photos)."))
    for g, x in groups.items():
        missing = [m for m in ("fmr", "fnmr") if not x[m]["conclusive"]]
        if not missing or g in empty:
            continue
        s = _Sentence(r, f"{attribute} not conclusive")
        parts = []
        for m in missing:
            y, w = x[m], _Wording(m, f)
            why = why_not_conclusive(m, y, f)
            if y["rate"] is None:
                parts.append(f"{m.upper()}: {why}")
                continue
            s.fig(base + ["groups", g, m, "trials"], f"{y['trials']:,}")
            parts.append(f"{m.upper()}: {why}; its measured {s.fig(base + ['groups', g, m, 'rate'], w(y['rate']))} "
                         f"could really be anywhere from {w.span(*y['ci95'])}")
        out.append(s.done(f"Not conclusive for {group_words(attribute, g)} ({label}): " + "; ".join(parts) + "."))
    return out


def _enrolment_sentences(r: dict, attribute: str, rows: dict) -> list[dict]:
    s = _Sentence(r, f"enrolment by {attribute}")
    base = ["enrolment_failures", attribute]
    if not rows:
        return []
    hi = max(rows, key=lambda g: rows[g]["failure_to_enrol"]["rate"] or 0)
    lo = min(rows, key=lambda g: rows[g]["failure_to_enrol"]["rate"] or 0)
    hx, lx = rows[hi]["failure_to_enrol"], rows[lo]["failure_to_enrol"]
    if not hx["errors"]:
        return [s.done(f"On the UTKFace sample, no photo was refused for enrolment in any {attribute} group.")]
    text = (f"On the UTKFace sample, by {attribute}, photos of {group_words(attribute, hi)} are refused for enrolment "
            f"most often ({s.fig(base + [hi, 'failure_to_enrol', 'rate'], pct(hx['rate']))}, "
            f"{s.fig(base + [hi, 'failure_to_enrol', 'errors'], str(hx['errors']))} of "
            f"{s.fig(base + [hi, 'images'], count(rows[hi]['images']))}) and photos of {group_words(attribute, lo)} "
            f"least often ({s.fig(base + [lo, 'failure_to_enrol', 'rate'], pct(lx['rate']))}); ")
    overlap = hx["ci95"][0] <= lx["ci95"][1]
    text += ("the 95% intervals overlap, so with this many photos the difference could be chance."
             if overlap else "the 95% intervals do not overlap, so the difference is larger than chance.")
    if attribute == "race":  # each photo once: the reasons over all photos
        words = r.get("refusal_reason_words", {})
        totals: dict[str, int] = defaultdict(int)
        for x in rows.values():
            for reason, n in x["refusal_reasons"].items():
                totals[reason] += n
        if totals:
            ranked = sorted(totals.items(), key=lambda kv: -kv[1])
            named = []
            for reason, n in ranked[:3]:
                s.figures.append({"sum_of": [base + [g, "refusal_reasons", reason] for g in rows
                                             if reason in rows[g]["refusal_reasons"]], "value": n, "shown": str(n)})
                named.append(f"{words.get(reason, reason.replace('_', ' ').lower())} ({plural(n, 'photo')})")
            text += " The most common reasons: " + ", ".join(named) + "."
    return [s.done(text)]


# ---------------------------------------------------------------------------------------------- HTML


def _fmt(value, pct_: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.3g}%" if pct_ else f"{value:.4g}"


def _ci(r: dict, fmt=None) -> str:
    if not r.get("ci95"):
        return "n/a"
    fmt = fmt or (lambda x: f"{sig(100 * x)}%")
    return f"{fmt(r['ci95'][0])} to {fmt(r['ci95'][1])}"


def _open_set_html(o: dict, img) -> str:
    """The section "FPIR per group at the default open-set policy"."""
    e = html.escape
    g = o["gallery"]
    default = f"{o['default_target_fpir']:g}"

    def fpir_cells(x: dict) -> str:
        span = _ci(x, lambda v: pct(v)) if x.get("ci95") else "n/a"
        verdict = "yes" if x["conclusive"] else f"no: {sig(x['expected_events'])} expected events, fewer than " \
                                                   f"{demo.MIN_ERRORS}"
        cls = "" if x["conclusive"] else ' class="nc"'
        return (f"<td><span{cls}>{pct(x['rate'])}</span></td><td>{span}</td><td>{sig(x['events'])} / "
                f"{x['trials']:,}</td><td class='note'>{e(verdict)}</td>")

    parts = [
        "<h2>FPIR per group at the default open-set policy</h2>"
        f"<p>FPIR (false positive identification rate): the share of searches by people who are not enrolled that "
        f"return a match. A gallery of every usable LFW face ({g['faces']:,} faces, {g['subjects']:,} subjects) is "
        f"searched with {g['nonmated_probes']:,} photos of people not in it; the policy's thresholds are derived "
        f"for that gallery size (margin {o['margin']:g}). Each person not enrolled counts once, as the share of "
        f"their photos matched (events); each group's FPIR counts its own such people; "
        f"<em>not conclusive</em> where the target expects fewer than {demo.MIN_ERRORS} false matches among them. "
        "Labels come from the evaluation data only (LFW's gender and race lists, UTKFace's annotations).</p>",
        "<table><tr><th>target FPIR</th><th>threshold</th><th>measured FPIR</th><th>95% interval</th>"
        "<th>events / people</th><th>conclusive?</th><th>FNIR</th><th>wrong-person matches</th></tr>"]
    for f, x in o["overall"].items():
        p = x["policy"]
        threshold = "unsupported" if p["threshold"] is None else f"{p['threshold']:.4f} ({e(p['basis'])})"
        parts.append(f"<tr><td>{e(f)}{' (default)' if f == default else ''}</td><td>{threshold}</td>"
                     f"{fpir_cells(x['fpir'])}<td>{pct(x['fnir']['rate'])}</td>"
                     f"<td>{x['wrong_person']['errors']:,} of {x['wrong_person']['trials']:,}</td></tr>")
    parts.append("</table>")
    targets = list(o["groups"])
    attributes = list(dict.fromkeys(a for t in targets for a in o["groups"][t]))
    for attribute in attributes:
        parts.append(f"<h3>{e(attribute)}</h3><table><tr><th>group</th>" + "".join(
            f"<th>FPIR @ {e(t)}</th><th>95% interval</th><th>events / people</th><th>conclusive?</th>"
            for t in targets) + "</tr>")
        names = list(dict.fromkeys(n for t in targets for n in o["groups"][t].get(attribute, {}).get("groups", {})))
        for n in names:
            cells = "".join(fpir_cells(o["groups"][t][attribute]["groups"][n]) if n in
                            o["groups"][t].get(attribute, {}).get("groups", {}) else "<td colspan=4>n/a</td>"
                            for t in targets)
            parts.append(f"<tr><td>{e(n)}</td>{cells}</tr>")
        parts.append("</table>" + img(f"open_set_{attribute}", f"FPIR per {attribute} group"))
    return "".join(parts)


def render_html(r: dict, pngs: dict[str, Path] | None = None) -> str:
    """The report as one page; ``pngs`` (plot name -> file) are embedded, missing ones left out."""
    pngs = pngs or {}
    e = html.escape

    def img(key: str, alt: str) -> str:
        if key not in pngs:
            return ""
        data = base64.b64encode(pngs[key].read_bytes()).decode()
        return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'

    summary = r.get("summary") or plain_summary(r)
    level = r["default_fmr"]
    v, i = r["verification"], r["identification"]
    parts = []
    if r.get("quick"):
        parts.append(f'<div id="quick-banner" class="quick"><strong>{e(QUICK_BANNER)}</strong><br>'
                     f'{e(r.get("subset") or "")}</div>')
    parts.append(f"<h1>faceledger accuracy and fairness report{' (quick subset)' if r.get('quick') else ''}</h1>"
                 f"<p>Model <code>{e(r['model_id'])}</code> (profile {e(r['profile'])}), generated "
                 f"{e(r['generated_at'])}, faceledger {e(r['faceledger_version'])}.</p>")
    findings = [x for x in summary["sentences"] if not x["topic"].endswith("not conclusive")]
    loose = [x for x in summary["sentences"] if x["topic"].endswith("not conclusive")]
    parts.append('<section id="summary"><h2>Summary in plain words</h2>' +
                 "".join(f'<p class="s-{e(x["topic"].replace(" ", "-"))}">{e(x["text"])}</p>' for x in findings) +
                 ("<h3>Groups with too little data to conclude</h3><ul>" +
                  "".join(f"<li>{e(x['text'])}</li>" for x in loose) + "</ul>" if loose else "") + "</section>")
    parts.append('<section id="glossary"><h2>Glossary</h2><dl>' +
                 "".join(f"<dt>{e(term)}: {e(g['name'])}</dt><dd>{e(g['meaning'])}<br><em>Example:</em> "
                         f"{e(g['example'])}</dd>" for term, g in r.get("glossary", GLOSSARY).items()) +
                 "</dl></section>")
    parts.append(
        "<h2>Verification (LFW protocol)</h2><table><tr><th>pairs</th><th>accuracy (10-fold)</th><th>EER</th>"
        "<th>TAR @ FAR 1e-3</th><th>ROC AUC</th></tr>"
        f"<tr><td>{v['pairs']:,}</td><td>{_fmt(v['accuracy_mean'])} ± {_fmt(v['accuracy_std'])}</td>"
        f"<td>{_fmt(v['eer'])}</td><td>{_fmt(v['tar_at_far'].get('0.001'))}</td><td>{v['roc_auc']:.5f}</td></tr>"
        "</table>"
        "<p>FNMR at the calibrated thresholds, on two bases: the protocol's genuine pairs (pairs.txt) and every pair "
        "of two photos of one person (the basis of the README's calibration table).</p>"
        "<table><tr><th>target FMR</th><th>threshold</th><th>FNMR, LFW protocol's genuine pairs</th><th>pairs</th>"
        "<th>FNMR, all same-person pairs</th><th>pairs</th></tr>" +
        "".join(f"<tr><td>{e(f)}{' (default)' if f == level else ''}</td><td>{x['threshold']:.4f}</td>"
                f"<td>{pct(x['lfw_protocol_pairs']['rate'])}</td><td>{x['lfw_protocol_pairs']['trials']:,}</td>"
                f"<td>{pct(x['all_same_person_pairs']['rate'])}</td><td>{x['all_same_person_pairs']['trials']:,}</td>"
                "</tr>" for f, x in v["fnmr_at_fmr"].items()) + "</table>" + img("roc_det", "ROC and DET curves"))
    parts.append(
        "<h2>Open-set identification (LFW)</h2><table><tr><th>enrolled</th><th>rank-1</th>" +
        "".join(f"<th>FNIR @ FPIR {e(f)}</th>" for f in i["fnir_at_fpir"]) + "</tr>"
        f"<tr><td>{i['gallery_subjects']:,}</td><td>{_fmt(i['rank1'])}</td>" +
        "".join(f"<td>{_fmt(x['fnir'])}</td>" for x in i["fnir_at_fpir"].values()) + "</tr></table>" +
        img("fnir_fpir", "FNIR against FPIR"))
    if r.get("open_set"):
        parts.append(_open_set_html(r["open_set"], img))
    parts.append(
        "<h2>Demographic differentials (LFW labels, global thresholds)</h2><p>FMR counts the different-person pairs "
        "with both images in the group; FNMR every same-person pair of the group (all of LFW's, not only the "
        "protocol's). 95% Wilson intervals. <em>not conclusive</em> marks a figure with too little data behind it: "
        f"an FMR needs enough different-person pairs to expect {demo.MIN_ERRORS} false matches at the target; an "
        f"FNMR needs {demo.MIN_GENUINE:,} same-person pairs. Ratios are highest over lowest among conclusive "
        "groups.</p>")
    for attribute, d in r["demographic_differentials"].items():
        parts.append(f"<h3>{e(attribute.title())}</h3>")
        for f, lv in d["by_fmr"].items():
            fv = float(f)
            fmr_w, fnmr_w = _Wording("fmr", fv), _Wording("fnmr", fv)
            parts.append(f"<p>At FMR {e(f)}{' (the default)' if f == level else ''}, threshold {lv['threshold']:.4f}: "
                         f"FMR ratio {ratio_text(lv['fmr_max_min_ratio'])}, FNMR ratio "
                         f"{ratio_text(lv['fnmr_max_min_ratio'])}.</p>")
            parts.append('<table class="groups"><tr><th>group</th><th>FMR within group</th><th>95% interval</th>'
                         "<th>different-person pairs</th><th>FMR across groups</th><th>FNMR</th><th>95% interval</th>"
                         "<th>same-person pairs</th><th>too little data?</th></tr>")
            for g, x in lv["groups"].items():
                def cell(m: str, w: _Wording, x=x) -> str:
                    """The rate and its interval (two cells), grey where not conclusive."""
                    y = x[m]
                    rate, ci = w(y["rate"]), w.span(*y["ci95"]) if y["ci95"] else "n/a"
                    if y["conclusive"]:
                        return f"{rate}</td><td>{ci}"
                    return f'<span class="nc">{rate}</span></td><td><span class="nc">{ci}</span>'
                notes = [f"{m.upper()} not conclusive: {why_not_conclusive(m, x[m], fv)}" for m in ("fmr", "fnmr")
                         if not x[m]["conclusive"]]
                parts.append(
                    f"<tr><td>{e(g)}</td><td>{cell('fmr', fmr_w)}</td><td>{x['fmr']['trials']:,}</td>"
                    f"<td>{fmr_w(x['fmr_across_groups']['rate'])}</td><td>{cell('fnmr', fnmr_w)}</td>"
                    f"<td>{x['fnmr']['trials']:,}</td><td class='note'>{e('; '.join(notes)) or 'no'}</td></tr>")
            parts.append("</table>")
        parts += [img(f"{attribute}_fmr", f"FMR per {attribute}"), img(f"{attribute}_fnmr", f"FNMR per {attribute}"),
                  img(f"{attribute}_impostors", f"impostor scores per {attribute}")]
        parts.append("<h4>Threshold guidance</h4><p>One global threshold gives every group the same score bar but not "
                     "the same error rates. Group-calibrated thresholds would equalise the FMR across groups, at the "
                     "cost of treating people differently by a label the service must not infer; faceledger "
                     "therefore shows them for oversight and never uses them by default. A group-calibrated threshold "
                     "is computed from every different-person pair within the group, where the target expects at "
                     f"least {demo.MIN_ERRORS} false matches among them.</p><table><tr><th>target FMR"
                     "</th><th>group</th><th>global threshold</th><th>FNMR there</th><th>FMR there</th>"
                     "<th>group-calibrated threshold</th></tr>")
        for f, gd in d["threshold_guidance"].items():
            w = _Wording("fmr", float(f))
            for g, x in gd["groups"].items():
                own = x["group_calibrated_threshold"]
                why = x.get("why_none") or "not available"
                parts.append(f"<tr><td>{e(f)}</td><td>{e(g)}</td><td>{gd['global_threshold']:.4f}</td>"
                             f"<td>{pct(x['fnmr_at_global'])}</td><td>{w(x['fmr_at_global'])}</td>"
                             f"<td class='note'>{f'{own:.4f}' if own is not None else f'none: {e(why)}'}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Detection and enrolment failure (UTKFace sample)</h2><p>Failure to enrol counts the photos "
                 "that cannot be enrolled: no face found, or every face found fails a quality check. The tables of "
                 "reasons count the photos refused for each reason (one photo can fail several checks).</p>")
    words = r.get("refusal_reason_words", {})
    for attribute, rows in r["enrolment_failures"].items():
        parts.append(f"<h3>By {e(attribute)}</h3><table><tr><th>group</th><th>photos</th><th>failure to detect</th>"
                     "<th>failure to enrol</th><th>95% interval</th></tr>")
        for g, x in rows.items():
            parts.append(f"<tr><td>{e(g)}</td><td>{x['images']:,}</td><td>{pct(x['failure_to_detect']['rate'])} "
                         f"({x['failure_to_detect']['errors']})</td><td>{pct(x['failure_to_enrol']['rate'])} "
                         f"({x['failure_to_enrol']['errors']})</td><td>{_ci(x['failure_to_enrol'])}</td></tr>")
        parts.append("</table>")
        reasons = sorted({k for x in rows.values() for k in x.get("refusal_reasons", {})})
        if reasons:
            parts.append(f'<table class="reasons"><caption>Why photos were refused, by {e(attribute)} (photos)'
                         "</caption><tr><th>reason</th>" + "".join(f"<th>{e(g)}</th>" for g in rows) + "</tr>" +
                         "".join(f"<tr><td>{e(words.get(k, k.replace('_', ' ').lower()))} <code>{e(k)}</code></td>" +
                                 "".join(f"<td>{x.get('refusal_reasons', {}).get(k, 0)}</td>" for x in rows.values())
                                 + "</tr>" for k in reasons) +
                         "<tr><td>no face found</td>" + "".join(f"<td>{x['failure_to_detect']['errors']}</td>"
                                                                for x in rows.values()) + "</tr></table>")
        else:
            parts.append(f"<p>No photo was refused for a quality reason in any {e(attribute)} group.</p>")
        parts.append(img(f"utk_{attribute}", f"failure to enrol per {attribute}"))
    card = r["model_card"]
    parts.append("<h2>Model card</h2><table><tr><th>model</th><th>file</th><th>SHA-256</th></tr>" +
                 "".join(f"<tr><td>{e(k)}</td><td>{e(Path(m['file']).name)}</td><td><code>{e(m['sha256'])}</code>"
                         f"</td></tr>" for k, m in card["models"].items()) + "</table>"
                 f"<p>Template: {card['template_dimensions']} dimensions. Calibration: "
                 f"{e(card['calibration']['source'])}.</p><table><tr><th>target FMR</th><th>threshold</th>"
                 "</tr>" + "".join(f"<tr><td>{e(f)}</td><td>{t:.4f}</td></tr>" for f, t in card["thresholds"].items()) +
                 "</table><h3>Data</h3><ul>" + "".join(f"<li>{e(k)}: {e(x)}</li>" for k, x in card["data"].items())
                 + "</ul><h3>Known limitations</h3><ul>" + "".join(f"<li>{e(x)}</li>" for x in card["limitations"])
                 + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}caption{text-align:left;"
             "font-weight:bold;padding:4px 0}img{max-width:100%;display:block;margin:1em 0}"
             "#summary{background:#f5f8ff;border-left:4px solid #3a6ee8;padding:.5em 1em}"
             "dt{font-weight:bold;margin-top:.6em}dd{margin-left:1.5em}.nc{color:#888}td.note{text-align:left;"
             "font-size:85%;color:#555;max-width:22em}"
             ".quick{background:#fff3cd;border:2px solid #d39e00;padding:1em;font-size:110%;margin-bottom:1em}")
    title = "faceledger report" + (f" — {QUICK_BANNER}" if r.get("quick") else "")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
