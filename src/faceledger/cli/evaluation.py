"""Evaluation commands: LFW verification and identification, calibration, the accuracy and fairness report.

They call faceledger.evaluation directly: benchmarks, not operations on anyone's data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from faceledger.cli.common import DataOpt, ProfileOpt, console, load_settings

eval_app = typer.Typer(help="Measure accuracy on benchmarks; build calibrations.", no_args_is_help=True)
OutOpt = Annotated[Optional[Path], typer.Option(help="Folder for the JSON and PNG (default: HOME/reports).")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Processes (default: one per core).")]


def data_folder(data: Optional[Path], settings, command: str) -> Path:
    """The data folder, checked for what ``command`` needs: one line and exit 2 when something is missing."""
    from faceledger.errors import DataMissing
    from faceledger.evaluation.data import require

    folder = data or settings.data_dir
    try:
        require(folder, command)
    except DataMissing as exc:
        console.print(f"[red]missing data[/red]: {exc.message}", soft_wrap=True)
        raise typer.Exit(2) from None
    return folder


@eval_app.command("lfw")
def eval_lfw(
    profile: ProfileOpt = None, data: DataOpt = None,
    folds: Annotated[Optional[str], typer.Option(help="Only these folds, e.g. 1,2 (default: all 10).")] = None,
    ablation: Annotated[bool, typer.Option(help="Also measure each recognizer, flip and fusion variant.")] = False,
    out: OutOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """LFW 10-fold verification: accuracy, EER, TAR@FAR, ROC AUC; writes JSON and ROC/DET plot."""
    from faceledger.evaluation.lfw import evaluate
    from faceledger.evaluation.plots import roc_det_png

    settings = load_settings()
    profile = profile or settings.profile
    data_dir = data_folder(data, settings, "eval lfw")
    fold_list = [int(f) for f in folds.split(",")] if folds else None
    result, scores, pairs = evaluate(settings, profile, data_dir=data_dir, folds=fold_list, ablation=ablation,
                                     workers=workers)
    out = out or settings.home / "reports"
    stem = f"lfw-{profile}" + (f"-folds{folds.replace(',', '_')}" if folds else "")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    roc_det_png({profile: (scores[pairs.same], scores[~pairs.same])}, out / f"{stem}.png",
                f"LFW verification, {profile} profile ({len(pairs)} pairs)")
    _print_lfw(result)
    console.print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")


def _print_lfw(r: dict) -> None:
    table = Table(title=f"LFW, profile {r['profile']} ({r['pairs']} pairs, {len(r['folds'])} folds)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("accuracy (10-fold)", f"{100 * r['accuracy_mean']:.2f}% ± {100 * r['accuracy_std']:.2f}")
    table.add_row("EER", f"{100 * r['eer']:.2f}%")
    for far, tar in r["tar_at_far"].items():
        table.add_row(f"TAR @ FAR {far}", f"{100 * tar:.2f}%")
    table.add_row("ROC AUC", f"{r['roc_auc']:.5f}")
    for what, n in r["detection"].items():
        table.add_row(f"images {what}", str(n))
    Console().print(table)
    if "ablation" in r:
        ab = Table(title="What moves the figure (same pairs, same detections)")
        ab.add_column("variant")
        ab.add_column("accuracy", justify="right")
        ab.add_column("TAR @ FAR 1e-3", justify="right")
        for name, row in r["ablation"].items():
            tar = row.get("tar_at_far_1e-3")
            ab.add_row(name, f"{100 * row['accuracy_mean']:.2f}% ± {100 * row['accuracy_std']:.2f}",
                       "" if tar is None else f"{100 * tar:.2f}%")
        Console().print(ab)


@eval_app.command("lfw-identify")
def eval_lfw_identify(profile: ProfileOpt = None, data: DataOpt = None, out: OutOpt = None,
                      workers: WorkersOpt = None) -> None:
    """Open-set 1:N on LFW through the gallery: rank-1, FNIR at FPIR 1% and 0.1%; writes JSON and a plot."""
    from faceledger.evaluation.identify import evaluate_identification
    from faceledger.evaluation.plots import fnir_fpir_png

    settings = load_settings()
    profile = profile or settings.profile
    result, (fpir, fnir) = evaluate_identification(settings, profile, data_folder(data, settings, "eval lfw-identify"),
                                                   workers)
    out = out or settings.home / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"lfw-identify-{profile}.json").write_text(json.dumps(result, indent=1) + "\n")
    fnir_fpir_png({profile: (fpir, fnir)}, out / f"lfw-identify-{profile}.png",
                  f"LFW open-set identification, {profile} ({result['gallery_subjects']} enrolled)")
    table = Table(title=f"LFW open-set identification, profile {profile}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("enrolled subjects", str(result["gallery_subjects"]))
    table.add_row("mated / non-mated probes", f"{result['mated_probes']} / {result['nonmated_probes']}")
    table.add_row("rank-1 identification rate", f"{100 * result['rank1']:.2f}%")
    for f, r in result["fnir_at_fpir"].items():
        table.add_row(f"FNIR @ FPIR {f}", f"{100 * r['fnir']:.2f}% (threshold {r['threshold']:.3f})")
    table.add_row("search time per probe", f"{result['search_ms_per_probe']:.2f} ms")
    Console().print(table)
    console.print(f"wrote {out / f'lfw-identify-{profile}.json'} and .png")


@eval_app.command("open-set")
def eval_open_set(
    profile: Annotated[str, typer.Option("--profile", "-p", help="fast, accurate or both.")] = "both",
    data: Annotated[Optional[Path], typer.Option(
        "--data-dir", "--data", help="Data folder (default: FACELEDGER_DATA_DIR).")] = None,
    targets: Annotated[str, typer.Option(help="Target FPIRs, comma-separated.")] = "0.01,0.001",
    margins: Annotated[str, typer.Option(help="Margins (top subject ahead of the second), comma-separated.")]
    = "0,0.02,0.05,0.1",
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for the JSON and PNG (default: HOME/reports/open-set).")] = None,
    workers: WorkersOpt = None,
) -> None:
    """Open-set 1:N by FPIR on real galleries of 1k, 5k, 10k and all usable LFW faces: measured FPIR against the
    target, FNIR, wrong-person matches and review share per margin, FPIR per group; writes JSON and a plot."""
    from rich.progress import track

    from faceledger.evaluation.openset import evaluate_open_set
    from faceledger.evaluation.plots import open_set_png

    settings = load_settings()
    profiles = ["fast", "accurate"] if profile == "both" else [profile]
    if any(p not in ("fast", "accurate") for p in profiles):
        console.print(f"[red]unknown profile[/red] {profile!r}: fast, accurate or both")
        raise typer.Exit(2)
    data_dir = data_folder(data, settings, "eval open-set")
    target_list = tuple(float(f) for f in targets.split(","))
    margin_list = tuple(float(m) for m in margins.split(","))
    out = out or settings.home / "reports" / "open-set"
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for p in profiles:
        result = evaluate_open_set(settings, p, data_dir, targets=target_list, margins=margin_list, workers=workers,
                                   progress=lambda items, what, p=p: track(items, description=f"{p}: {what}",
                                                                           console=console))
        results[p] = result
        (out / f"open-set-{p}.json").write_text(json.dumps(result, indent=1) + "\n")
        _print_open_set(result)
    stem = "open-set-" + "-".join(profiles)
    open_set_png(results, out / f"{stem}.png", "Open-set identification by FPIR on real galleries ("
                 + ", ".join(profiles) + ")")
    console.print(f"wrote {', '.join(str(out / f'open-set-{p}.json') for p in profiles)} and {out / (stem + '.png')}")


def _rate_text(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    return "0" if x == 0 else f"{100 * x:.2g}%"


def _print_open_set(r: dict) -> None:
    import sys

    wide = Console(width=None if sys.stdout.isatty() else 180)  # a file or a pipe gets the whole table
    advice = r["recommended_margin"]
    margin = advice["margin"] if advice["margin"] is not None else 0.0
    table = Table(title=f"Open-set identification, profile {r['profile']}, margin {margin:g}"
                        f"{' (recommended)' if advice['margin'] is not None else ' (no margin met the rule)'}")
    for col in ("gallery (faces)", "target FPIR", "measured FPIR (95% CI)", "events / strangers", "conclusive?",
                "FNIR", "wrong-person", "review mated / non-mated", "basis (threshold)"):
        table.add_column(col, justify="right")
    for g in r["galleries"]:
        for x in g["results"]:
            if x["policy"]["margin"] != margin:
                continue
            f, p, w = x["fpir"], x["policy"], x["wrong_person"]
            ci_note = {"above": "; CI above target", "below": "; CI below target"}.get(f["interval_vs_target"], "")
            conclusive = ("yes" + ("" if f["within_factor_2"] else " [red](not within 2x)[/red]") if f["conclusive"]
                          else f"no ({f['expected_events']:.3g} expected{ci_note})")
            table.add_row(f"{g['name']} ({g['faces']:,})", f"{p['target_fpir']:g}",
                          f"{_rate_text(f['rate'])} ({_rate_text(f['ci95'][0])}-{_rate_text(f['ci95'][1])})",
                          f"{f['events']} / {f['trials']:,}", conclusive, _rate_text(x["fnir"]["rate"]),
                          f"{w['errors']} ({_rate_text(w['rate'])})",
                          f"{_rate_text(x['review']['mated']['rate'])} / {_rate_text(x['review']['nonmated']['rate'])}",
                          f"{p['basis']}" + (f" ({p['threshold']:.4f})" if p["threshold"] is not None else ""))
    wide.print(table)
    margins = Table(title=f"Margins, profile {r['profile']}: wrong-person matches and FNIR (mated probes)")
    margins.add_column("gallery (faces)")
    margins.add_column("target FPIR", justify="right")
    for m in r["margins"]:
        margins.add_column(f"margin {m:g}: wrong-person / FNIR", justify="right")
    for g in r["galleries"]:
        for f in r["targets"]:
            cells = []
            for m in r["margins"]:
                (x,) = [x for x in g["results"] if x["policy"]["target_fpir"] == f and x["policy"]["margin"] == m]
                cells.append(f"{x['wrong_person']['errors']} / {_rate_text(x['fnir']['rate'])}")
            margins.add_row(f"{g['name']} ({g['faces']:,})", f"{f:g}", *cells)
    wide.print(margins)
    if r.get("seed_spread"):
        seeds = max(x["seeds"] for by_target in r["seed_spread"].values() for x in by_target.values())
        spread = Table(title=f"The same sizes drawn with {seeds} seeds (margin {min(r['margins']):g}): "
                             "min / median / max")
        for col in ("gallery", "target FPIR", "FPIR of one gallery", "within 2x of target"):
            spread.add_column(col, justify="right")
        for name, by_target in r["seed_spread"].items():
            for f, x in by_target.items():
                spread.add_row(name, f, " / ".join(_rate_text(x["fpir"][q]) for q in ("min", "median", "max")),
                               f"{x['share_within_factor_2']:.0%} of galleries")
        wide.print(spread)
    largest = r["galleries"][-1] if r["galleries"] else None
    if largest:
        by_target = largest["groups"]["by_target"]
        groups = Table(title=f"FPIR per group, gallery {largest['name']} ({largest['faces']:,} faces), margin "
                             f"{largest['groups']['margin']:g}: rate (events / non-mated probes)")
        groups.add_column("attribute")
        groups.add_column("group")
        for f in by_target:
            groups.add_column(f"target {f}", justify="right")
        rows = dict.fromkeys((a, n) for d in by_target.values() for a, x in d.items() for n in x["groups"])
        for a, n in rows:
            cells = []
            for d in by_target.values():
                x = d.get(a, {}).get("groups", {}).get(n)
                cells.append("n/a" if x is None else f"{_rate_text(x['rate'])} ({x['events']} / {x['trials']:,})"
                             + ("" if x["conclusive"] else " nc"))
            groups.add_row(a, n, *cells)
        wide.print(groups)
        console.print("nc: not conclusive (the target expects fewer than 30 events among the group's probes)")
    console.print(f"recommended margin: {advice['margin'] if advice['margin'] is not None else 'none'} "
                  f"({advice['rule']})", soft_wrap=True)
    acc = r["acceptance"]
    console.print("acceptance: " + ("[green]passed[/green]" if acc["passed"] else
                                    "[red]failed[/red]: " + ", ".join(acc["failed"])), soft_wrap=True)
    console.print(f"screened out as possibly another LFW person: {r['data']['screen']['left_out']} faces; "
                  f"time {r['timing']['total_seconds']:.0f} s", soft_wrap=True)


@eval_app.command("calibrate")
def eval_calibrate(
    profile: ProfileOpt = None, data: DataOpt = None,
    install: Annotated[bool, typer.Option(help="Write into the package (for release) instead of HOME.")] = False,
    workers: WorkersOpt = None,
) -> None:
    """Build the score-to-FMR calibration of a profile from LFW's impostor pairs."""
    from faceledger.evaluation.calibrate import calibrate_lfw
    from faceledger.matching.calibration import packaged_dir

    settings = load_settings()
    profile = profile or settings.profile
    cal = calibrate_lfw(settings, profile, data_folder(data, settings, "eval calibrate"), workers=workers)
    path = cal.save(packaged_dir() if install else settings.home / "calibrations")
    table = Table(title=f"Calibration of {profile}: {cal.source}")
    for col in ("target FMR", "threshold", "FNMR (LFW genuine pairs)"):
        table.add_column(col, justify="right")
    for f, t in cal.thresholds.items():
        table.add_row(f"{f:g}", f"{t:.4f}", f"{100 * cal.fnmr[f]:.2f}%")
    Console().print(table)
    console.print(f"wrote {path}")


def report(
    profile: ProfileOpt = None, data: DataOpt = None,
    fmr: Annotated[str, typer.Option(help="Target FMRs, comma-separated.")] = "1e-3,1e-4",
    out: Annotated[Optional[Path], typer.Option(
        help="Folder for index.html and report.json (default: HOME/reports/report-PROFILE, -quick added).")] = None,
    workers: WorkersOpt = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="A first look in a few minutes: the people of LFW folds 1-3 and 40 UTKFace crops per "
                        "race x gender cell, labelled QUICK SUBSET in the HTML and JSON (\"quick\": true).")] = False,
) -> None:
    """Accuracy and fairness report: plain-language summary, verification, identification, per-group error rates."""
    from faceledger.evaluation.report import QUICK_BANNER, build_report

    settings = load_settings()
    profile = profile or settings.profile
    data_dir = data_folder(data, settings, "report")
    # a quick report never replaces the full one (the service serves HOME/reports/report-PROFILE/report.json)
    out = out or settings.home / "reports" / (f"report-{profile}" + ("-quick" if quick else ""))
    result = build_report(settings, profile, data_dir, out, [float(f) for f in fmr.split(",")], workers, quick=quick)
    if quick:
        console.print(f"[bold yellow]{QUICK_BANNER}[/bold yellow]")
    for sentence in result["summary"]["sentences"]:
        if sentence["topic"] != "quick" and "not conclusive" not in sentence["topic"]:
            console.print(sentence["text"], soft_wrap=True)
    console.print(f"wrote {out / 'index.html'} and {out / 'report.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
    app.command()(report)
