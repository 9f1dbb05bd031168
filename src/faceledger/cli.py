"""The ``faceledger`` command line: a thin layer over the engine, matching and evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from faceledger.config import Settings, get_settings
from faceledger.errors import FaceledgerError

app = typer.Typer(help="faceledger: accountable face recognition.", no_args_is_help=True, pretty_exceptions_enable=False)
eval_app = typer.Typer(help="Measure accuracy on benchmarks; build calibrations.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
console = Console(stderr=True)

ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="fast or accurate (default: setting).")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Data folder (default: FACELEDGER_DATA_DIR).")]


def _settings(**overrides) -> Settings:
    base = get_settings()
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _fail(exc: FaceledgerError) -> None:
    print(json.dumps({"error": exc.to_dict()}, indent=1), file=sys.stdout)
    console.print(f"[red]error[/red] {exc.code}: {exc.message}")
    raise typer.Exit(2)


def _engine(profile: str | None):
    from faceledger.pipeline.engine import FaceEngine

    return FaceEngine(_settings(), profile)


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    profile: ProfileOpt = None,
    annotate: Annotated[Optional[Path], typer.Option(help="Write annotated copies into this folder.")] = None,
    templates: Annotated[bool, typer.Option(help="Include face templates in the output.")] = False,
) -> None:
    """Detect faces: boxes, landmarks, confidence and quality (JSON on stdout)."""
    from faceledger.audit.context import audited
    from faceledger.cli_gallery import audit_log, cli_actor

    engine = _engine(profile)
    audit = audit_log(_settings())
    results, failed = [], 0
    for path in images:
        try:
            with audited(audit, "detect", cli_actor()) as entry:
                analysis = engine.analyze(path, embed=templates)
                entry.decision = f"{len(analysis)} faces"
            results.append({"image": str(path), **analysis.to_dict(include_templates=templates)})
            if annotate:
                from faceledger.pipeline.draw import annotate_file

                annotate_file(engine.decode(path), analysis, annotate / f"{path.stem}.faces.jpg")
        except FaceledgerError as exc:
            failed += 1
            results.append({"image": str(path), "error": exc.to_dict()})
    print(json.dumps(results if len(results) > 1 else results[0], indent=1))
    if failed:
        raise typer.Exit(2)


@app.command()
def compare(
    image_a: Path, image_b: Path, profile: ProfileOpt = None,
    fmr: Annotated[float, typer.Option(help="Decide 'match' at this target false-match rate.")] = 1e-4,
    face_a: Annotated[Optional[int], typer.Option(help="Which face of A when it has several (0 = largest).")] = None,
    face_b: Annotated[Optional[int], typer.Option(help="Which face of B when it has several.")] = None,
) -> None:
    """Compare the faces of two images (1:1): similarity, calibrated FMR, decision at --fmr."""
    from faceledger.matching.calibration import load_calibration
    from faceledger.matching.compare import Template, compare as compare_templates

    from faceledger.audit.context import audited
    from faceledger.cli_gallery import audit_log, cli_actor

    engine = _engine(profile)
    try:
        with audited(audit_log(_settings()), "compare", cli_actor()) as entry:
            (a, i), (b, j) = engine.single_face(image_a, face=face_a), engine.single_face(image_b, face=face_b)
            result = compare_templates(Template(a.templates[i], a.model_id), Template(b.templates[j], b.model_id),
                                       load_calibration(engine.model_id, engine.settings.home), fmr)
            entry.scores, entry.decision = [result.similarity], "match" if result.match else "no match"
    except FaceledgerError as exc:
        _fail(exc)
    print(json.dumps({"model_id": engine.model_id, **result.to_dict()}, indent=1))


@app.command()
def models(profile: ProfileOpt = None) -> None:
    """Show the profile's model files, check their SHA-256 and load them."""
    engine = _engine(profile)
    try:
        engine.load()
    except FaceledgerError as exc:
        _fail(exc)
    from faceledger.matching.calibration import load_calibration

    info = engine.describe()
    cal = load_calibration(engine.model_id, engine.settings.home)
    info["calibration"] = None if cal is None else {"source": cal.source, "thresholds": cal.to_dict()["thresholds"]}
    print(json.dumps(info, indent=1, default=str))


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Listen address (default: setting, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: setting, 8080).")] = None,
) -> None:
    """Start the HTTP API on the embedded defaults (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn

    from faceledger.api.app import create_app

    settings = _settings()
    try:
        app_ = create_app(settings)
        app_.state.engine.load()  # a missing or corrupt model fails here, at start-up, naming the file
    except FaceledgerError as exc:
        _fail(exc)
    uvicorn.run(app_, host=host or settings.host, port=port or settings.port, log_level="info")


keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _keys_and_audit():
    """The key store and the audit log, on one open database."""
    from faceledger.access.keys import KeyStore
    from faceledger.cli_gallery import audit_log
    from faceledger.gallery.db import open_database

    settings = _settings()
    session = open_database(settings.db_url)[1]
    return KeyStore(session), audit_log(settings, session)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant whose collections the key reaches.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: detect,verify,identify,enroll,admin.")],
    purpose: Annotated[str, typer.Option(help="The declared purpose, e.g. 'building access control'.")],
) -> None:
    """Create an API key. The key is printed once; only its hash is stored."""
    from faceledger.audit.context import audited
    from faceledger.cli_gallery import cli_actor

    store, audit = _keys_and_audit()
    try:
        with audited(audit, "key.create", cli_actor()) as entry:
            key, info = store.create(tenant, [s.strip() for s in scopes.split(",") if s.strip()], purpose)
            entry.decision = f"key {info['key_id']} for tenant {tenant}: {','.join(info['scopes'])}"
    except FaceledgerError as exc:
        _fail(exc)
    print(json.dumps({"api_key": key, **info}, indent=1))
    console.print("[yellow]store this key now: it cannot be shown again[/yellow]")


@keys_app.command("list")
def keys_list(tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's keys.")] = None) -> None:
    """List keys (never their secrets)."""
    print(json.dumps(_keys_and_audit()[0].list(tenant), indent=1))


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    from faceledger.audit.context import audited
    from faceledger.cli_gallery import cli_actor

    store, audit = _keys_and_audit()
    try:
        with audited(audit, "key.revoke", cli_actor()) as entry:
            entry.decision = f"key {key_id} revoked"
            print(json.dumps(store.revoke(key_id), indent=1))
    except FaceledgerError as exc:
        _fail(exc)


@eval_app.command("lfw")
def eval_lfw(
    profile: ProfileOpt = None, data: DataOpt = None,
    folds: Annotated[Optional[str], typer.Option(help="Only these folds, e.g. 1,2 (default: all 10).")] = None,
    ablation: Annotated[bool, typer.Option(help="Also measure each recognizer, flip and fusion variant.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the JSON and PNG (default: HOME/reports).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: one per core).")] = None,
) -> None:
    """LFW 10-fold verification: accuracy, EER, TAR@FAR, ROC AUC; writes JSON and ROC/DET plot."""
    from faceledger.evaluation.lfw import evaluate
    from faceledger.evaluation.plots import roc_det_png

    settings = _settings()
    profile = profile or settings.profile
    data_dir = data or settings.data_dir
    if not (data_dir / "lfw" / "pairs.txt").is_file():
        console.print(f"[red]LFW not found[/red]: {data_dir / 'lfw' / 'pairs.txt'} (set --data or FACELEDGER_DATA_DIR)")
        raise typer.Exit(2)
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
def eval_lfw_identify(
    profile: ProfileOpt = None, data: DataOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the JSON and PNG (default: HOME/reports).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: one per core).")] = None,
) -> None:
    """Open-set 1:N on LFW through the gallery: rank-1, FNIR at FPIR 1% and 0.1%; writes JSON and a plot."""
    from faceledger.evaluation.identify import evaluate_identification
    from faceledger.evaluation.plots import fnir_fpir_png

    settings = _settings()
    profile = profile or settings.profile
    result, (fpir, fnir) = evaluate_identification(settings, profile, data or settings.data_dir, workers)
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


@app.command()
def report(
    profile: ProfileOpt = None, data: DataOpt = None,
    fmr: Annotated[str, typer.Option(help="Target FMRs, comma-separated.")] = "1e-3,1e-4",
    out: Annotated[Optional[Path], typer.Option(help="Folder for index.html and report.json.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: one per core).")] = None,
) -> None:
    """Accuracy and fairness report: verification, identification, per-group error rates, model card."""
    from faceledger.evaluation.report import build_report

    settings = _settings()
    profile = profile or settings.profile
    out = out or settings.home / "reports" / f"report-{profile}"
    result = build_report(settings, profile, data or settings.data_dir, out,
                          [float(f) for f in fmr.split(",")], workers)
    gender = result["demographic_differentials"]["gender"]["by_fmr"]
    first = next(iter(gender))
    console.print(f"LFW accuracy {100 * result['verification']['accuracy_mean']:.2f}%, TAR@FAR1e-3 "
                  f"{100 * result['verification']['tar_at_far']['0.001']:.2f}%, gender FMR max/min ratio at FMR "
                  f"{first}: {gender[first]['fmr_max_min_ratio']}")
    console.print(f"wrote {out / 'index.html'} and {out / 'report.json'}")


@eval_app.command("calibrate")
def eval_calibrate(
    profile: ProfileOpt = None, data: DataOpt = None,
    install: Annotated[bool, typer.Option(help="Write into the package (for release) instead of HOME.")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Processes (default: one per core).")] = None,
) -> None:
    """Build the score-to-FMR calibration of a profile from LFW's impostor pairs."""
    from faceledger.evaluation.calibrate import calibrate_lfw
    from faceledger.matching.calibration import packaged_dir

    settings = _settings()
    profile = profile or settings.profile
    cal = calibrate_lfw(settings, profile, data or settings.data_dir, workers=workers)
    path = cal.save(packaged_dir() if install else settings.home / "calibrations")
    table = Table(title=f"Calibration of {profile}: {cal.source}")
    for col in ("target FMR", "threshold", "FNMR (LFW genuine pairs)"):
        table.add_column(col, justify="right")
    for f, t in cal.thresholds.items():
        table.add_row(f"{f:g}", f"{t:.4f}", f"{100 * cal.fnmr[f]:.2f}%")
    Console().print(table)
    console.print(f"wrote {path}")


from faceledger.cli_gallery import register  # noqa: E402

register(app)

if __name__ == "__main__":
    app()
