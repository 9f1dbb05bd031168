"""`faceledger report`: accuracy and fairness of the deployed model, as one HTML page and one JSON file.

Sections: verification (LFW protocol), open-set identification (LFW, through the gallery),
demographic differentials at the global thresholds (LFW labels), detection and enrolment
failure per group (UTKFace sample), threshold guidance, model card.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
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
from faceledger.evaluation.lfw import evaluate
from faceledger.evaluation.metrics import fnmr_at
from faceledger.matching.calibration import load_calibration
from faceledger.pipeline.engine import Components, FaceEngine


def age_band(age: int) -> str:
    for hi, label in ((17, "0-17"), (29, "18-29"), (44, "30-44"), (59, "45-59")):
        if age <= hi:
            return label
    return "60+"


def utk_failures(engine: FaceEngine, folder: Path) -> dict:
    """Failure to detect and failure to enrol (no face passing the quality limits) per group."""
    rows = list(csv.DictReader((folder / "labels.csv").open()))
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


def build_report(settings: Settings, profile: str, data_dir: Path, out: Path, fmrs: list[float],
                 workers: int | None = None) -> dict:
    engine = FaceEngine(settings, profile)
    calibration = load_calibration(engine.model_id, settings.home)
    if calibration is None:
        raise RuntimeError(f"no calibration for {engine.model_id}: run `faceledger eval calibrate` first")
    out.mkdir(parents=True, exist_ok=True)
    pngs: dict[str, Path] = {}

    verification, scores, pairs = evaluate(settings, profile, data_dir=data_dir, workers=workers)
    genuine, impostor = scores[pairs.same], scores[~pairs.same]
    verification["fnmr_at_fmr"] = {f"{f:g}": {"threshold": calibration.threshold(f),
                                              "fnmr": fnmr_at(genuine, calibration.threshold(f))} for f in fmrs}
    pngs["roc_det"] = plots.roc_det_png({profile: (genuine, impostor)}, out / "roc_det.png",
                                        f"LFW verification, {profile}")

    identification, (fpir, fnir) = evaluate_identification(settings, profile, data_dir, workers)
    pngs["fnir_fpir"] = plots.fnir_fpir_png({profile: (fpir, fnir)}, out / "fnir_fpir.png",
                                            "LFW open-set identification")

    lfw = Path(data_dir) / "lfw"
    images = lfw_images(lfw)
    embedded = embed_files(lfw, images, engine.profile.components, settings, workers=workers,
                           label="LFW templates for group statistics")
    templates = Components(embedded.vectors).template(engine.profile.components)
    labels = demo.lfw_labels(lfw / "demographics.csv")
    identities = [p.split("/")[0] for p in images]
    thresholds = {f: calibration.threshold(f) for f in fmrs}
    differentials = {}
    for attribute in ("gender", "race"):
        groups = [labels.get(p, {}).get(attribute) for p in images]
        result = demo.group_rates(templates, identities, groups, thresholds)
        samples = result.pop("impostor_samples")
        first = f"{fmrs[0]:g}"
        fmr_rows = {g: {**v["fmr"]} for g, v in result["by_fmr"][first]["groups"].items()}
        fnmr_rows = {g: {**v["fnmr"]} for g, v in result["by_fmr"][first]["groups"].items()}
        pngs[f"{attribute}_fmr"] = plots.group_bars_png(fmr_rows, out / f"{attribute}_fmr.png",
                                                        f"FMR within {attribute} groups at global FMR {first}", "FMR")
        pngs[f"{attribute}_fnmr"] = plots.group_bars_png(fnmr_rows, out / f"{attribute}_fnmr.png",
                                                         f"FNMR per {attribute} group at global FMR {first}", "FNMR")
        pngs[f"{attribute}_impostors"] = plots.score_histograms_png(
            samples, {f"FMR {f:g}": t for f, t in thresholds.items()}, out / f"{attribute}_impostors.png",
            f"Impostor scores within and across {attribute} groups")
        guidance = {}
        for f in fmrs:
            own = demo.per_group_thresholds({k.removeprefix("within "): v for k, v in samples.items()
                                             if k.startswith("within ")}, f)
            guidance[f"{f:g}"] = {
                "global_threshold": thresholds[f],
                "groups": {g: {"fnmr_at_global": v["fnmr"]["rate"], "group_calibrated_threshold": own.get(g),
                               "fmr_at_global": v["fmr"]["rate"]}
                           for g, v in result["by_fmr"][f"{f:g}"]["groups"].items()}}
        result["threshold_guidance"] = guidance
        result["impostor_sample_sizes"] = {k: int(len(v)) for k, v in samples.items()}
        result["impostor_medians"] = {k: float(np.median(v)) if len(v) else None for k, v in samples.items()}
        result["labelled_images"] = int(sum(g is not None for g in groups))
        differentials[attribute] = result

    failures = utk_failures(engine, Path(data_dir) / "utkface_sample")
    for attribute, rows in failures.items():
        pngs[f"utk_{attribute}"] = plots.group_bars_png(
            {g: v["failure_to_enrol"] for g, v in rows.items()}, out / f"utk_{attribute.replace(' ', '_')}.png",
            f"Failure to enrol per {attribute} (UTKFace sample)", "failure-to-enrol rate")

    desc = engine.describe()
    report = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "faceledger_version": __version__, "profile": profile, "model_id": engine.model_id,
        "verification": verification, "identification": identification,
        "demographic_differentials": differentials, "enrolment_failures": failures,
        "model_card": {
            "models": desc["models"], "template_dimensions": int(templates.shape[1]),
            "thresholds": {f"{f:g}": t for f, t in thresholds.items()},
            "calibration": {"source": calibration.source, "impostor_pairs": calibration.impostor_pairs},
            "data": {"verification": "LFW deep-funneled, official pairs.txt (6,000 pairs, 10 folds)",
                     "identification": "LFW: 1,680 enrolled, 7,484 mated and 4,069 non-mated probes",
                     "demographics": "LFW labels: gender (Afifi and Abdelhamed 2017), race (USC SAIL, per identity; "
                                     "mixed labels left out)",
                     "enrolment failures": "UTKFace balanced sample, 2,000 aligned 200x200 crops"},
            "limitations": LIMITATIONS},
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_json) + "\n")
    (out / "index.html").write_text(render_html(report, pngs))
    return report


LIMITATIONS = [
    "LFW is news photography of mostly adult, mostly white, mostly male public figures; error rates on other "
    "populations, cameras and lighting can be higher.",
    "The race labels cover 866 identities and are dominated by 'caucasian'; most race groups are too small to "
    "conclude anything, and the report says so per group.",
    "Thresholds come from LFW impostor pairs, mostly of people who differ in age, sex and origin; impostors of the "
    "same group score higher (see the impostor distributions), so the FMR within a group can exceed the target.",
    "UTKFace crops are pre-aligned: they measure the quality gate and the detector on faces that fill the image, "
    "not detection in scenes.",
    "faceledger never infers race, gender or age from a face: these labels come only from the evaluation data.",
]


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def _fmt(value, pct: bool = True) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.3g}%" if pct else f"{value:.4g}"


def render_html(r: dict, pngs: dict[str, Path]) -> str:
    def img(key: str, alt: str) -> str:
        data = base64.b64encode(pngs[key].read_bytes()).decode()
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    v, i = r["verification"], r["identification"]
    parts = [f"<h1>faceledger accuracy and fairness report</h1><p>Model <code>{html.escape(r['model_id'])}</code> "
             f"(profile {r['profile']}), generated {r['generated_at']}, faceledger {r['faceledger_version']}.</p>",
             "<h2>Verification (LFW protocol)</h2><table><tr><th>accuracy (10-fold)</th><th>EER</th>"
             "<th>TAR @ FAR 1e-3</th><th>ROC AUC</th></tr>"
             f"<tr><td>{_fmt(v['accuracy_mean'])} ± {_fmt(v['accuracy_std'])}</td><td>{_fmt(v['eer'])}</td>"
             f"<td>{_fmt(v['tar_at_far']['0.001'])}</td><td>{v['roc_auc']:.5f}</td></tr></table>",
             "<table><tr><th>target FMR</th><th>threshold</th><th>FNMR on LFW pairs</th></tr>" +
             "".join(f"<tr><td>{f}</td><td>{x['threshold']:.4f}</td><td>{_fmt(x['fnmr'])}</td></tr>"
                     for f, x in v["fnmr_at_fmr"].items()) + "</table>", img("roc_det", "ROC and DET curves"),
             "<h2>Open-set identification (LFW)</h2><table><tr><th>enrolled</th><th>rank-1</th>" +
             "".join(f"<th>FNIR @ FPIR {f}</th>" for f in i["fnir_at_fpir"]) + "</tr>"
             f"<tr><td>{i['gallery_subjects']}</td><td>{_fmt(i['rank1'])}</td>" +
             "".join(f"<td>{_fmt(x['fnir'])}</td>" for x in i["fnir_at_fpir"].values()) + "</tr></table>",
             img("fnir_fpir", "FNIR against FPIR")]
    parts.append("<h2>Demographic differentials (LFW labels, global thresholds)</h2><p>FMR counts impostor pairs "
                 "with both images in the group; FNMR genuine pairs of the group. 95% Wilson intervals. "
                 "<em>not conclusive</em> marks groups with too few pairs to support a conclusion (an FMR needs the "
                 f"target to expect {demo.MIN_ERRORS} false matches; an FNMR {demo.MIN_GENUINE} genuine pairs).</p>")
    for attribute, d in r["demographic_differentials"].items():
        parts.append(f"<h3>{attribute.title()}</h3>")
        for f, level in d["by_fmr"].items():
            parts.append(f"<p>At global FMR {f} (threshold {level['threshold']:.4f}): FMR max/min ratio "
                         f"{_fmt(level['fmr_max_min_ratio'], False)}, FNMR max/min ratio "
                         f"{_fmt(level['fnmr_max_min_ratio'], False)} (conclusive groups only).</p>")
            parts.append("<table><tr><th>group</th><th>FMR (within group)</th><th>95% CI</th><th>impostor pairs</th>"
                         "<th>FMR across groups</th><th>FNMR</th><th>95% CI</th><th>genuine pairs</th></tr>")
            for g, x in level["groups"].items():
                note = lambda c: "" if c else " <em>not conclusive</em>"  # noqa: E731
                parts.append(
                    f"<tr><td>{html.escape(g)}</td><td>{_fmt(x['fmr']['rate'])}{note(x['fmr']['conclusive'])}</td>"
                    f"<td>{_ci(x['fmr'])}</td><td>{x['fmr']['trials']:,}</td><td>{_fmt(x['fmr_across_groups']['rate'])}"
                    f"</td><td>{_fmt(x['fnmr']['rate'])}{note(x['fnmr']['conclusive'])}</td><td>{_ci(x['fnmr'])}</td>"
                    f"<td>{x['fnmr']['trials']:,}</td></tr>")
            parts.append("</table>")
        parts += [img(f"{attribute}_fmr", f"FMR per {attribute}"), img(f"{attribute}_fnmr", f"FNMR per {attribute}"),
                  img(f"{attribute}_impostors", f"impostor scores per {attribute}")]
        parts.append("<h4>Threshold guidance</h4><p>One global threshold gives every group the same score bar but not "
                     "the same error rates. Group-calibrated thresholds would equalise the FMR across groups, at the "
                     "cost of treating people differently by a label the service must not infer; faceledger "
                     "therefore shows them for oversight and never uses them by default.</p><table><tr><th>target FMR"
                     "</th><th>group</th><th>global threshold</th><th>FNMR there</th><th>FMR there</th>"
                     "<th>group-calibrated threshold</th></tr>")
        for f, gd in d["threshold_guidance"].items():
            for g, x in gd["groups"].items():
                own = x["group_calibrated_threshold"]
                parts.append(f"<tr><td>{f}</td><td>{html.escape(g)}</td><td>{gd['global_threshold']:.4f}</td>"
                             f"<td>{_fmt(x['fnmr_at_global'])}</td><td>{_fmt(x['fmr_at_global'])}</td>"
                             f"<td>{'too few impostor pairs' if own is None else f'{own:.4f}'}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Detection and enrolment failure (UTKFace sample)</h2>")
    for attribute, rows in r["enrolment_failures"].items():
        parts.append(f"<h3>By {attribute}</h3><table><tr><th>group</th><th>images</th><th>failure to detect</th>"
                     "<th>failure to enrol</th><th>95% CI</th><th>refusal reasons</th></tr>")
        for g, x in rows.items():
            parts.append(f"<tr><td>{html.escape(g)}</td><td>{x['images']}</td><td>{_fmt(x['failure_to_detect']['rate'])}"
                         f"</td><td>{_fmt(x['failure_to_enrol']['rate'])}</td><td>{_ci(x['failure_to_enrol'])}</td>"
                         f"<td>{html.escape(json.dumps(x['refusal_reasons']))}</td></tr>")
        parts.append("</table>" + img(f"utk_{attribute}", f"failure to enrol per {attribute}"))
    card = r["model_card"]
    parts.append("<h2>Model card</h2><table><tr><th>model</th><th>file</th><th>SHA-256</th></tr>" +
                 "".join(f"<tr><td>{k}</td><td>{html.escape(Path(m['file']).name)}</td><td><code>{m['sha256']}</code>"
                         f"</td></tr>" for k, m in card["models"].items()) + "</table>"
                 f"<p>Template: {card['template_dimensions']} dimensions. Calibration: "
                 f"{html.escape(card['calibration']['source'])}.</p><table><tr><th>target FMR</th><th>threshold</th>"
                 "</tr>" + "".join(f"<tr><td>{f}</td><td>{t:.4f}</td></tr>" for f, t in card["thresholds"].items()) +
                 "</table><h3>Data</h3><ul>" + "".join(f"<li>{k}: {html.escape(x)}</li>" for k, x in card["data"].items())
                 + "</ul><h3>Known limitations</h3><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in
                                                                    card["limitations"]) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
             "td:first-child{text-align:left}img{max-width:100%;display:block;margin:1em 0}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>faceledger report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _ci(r: dict) -> str:
    return "n/a" if not r.get("ci95") else f"{100 * r['ci95'][0]:.3g}–{100 * r['ci95'][1]:.3g}%"
