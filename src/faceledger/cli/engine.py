"""Face commands without a gallery: detect, compare, models; and serve (the HTTP API)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from faceledger.cli.common import ProfileOpt, fail, load_settings, local_actor, open_service, out
from faceledger.errors import FaceledgerError


def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    profile: ProfileOpt = None,
    annotate: Annotated[Optional[Path], typer.Option(help="Write annotated copies into this folder.")] = None,
    templates: Annotated[bool, typer.Option(help="Include face templates in the output.")] = False,
) -> None:
    """Detect faces: boxes, landmarks, confidence and quality (JSON on stdout)."""
    results, failed = [], 0
    with open_service(profile) as service:
        actor, engine = local_actor(), service.engine
        for path in images:
            try:
                analysis = service.detect(actor, path)  # audited there, one record per image
                bgr = engine.decode(path) if templates or annotate else None
                if templates and len(analysis):  # the same faces, embedded (the service does not return templates)
                    analysis = dataclasses.replace(analysis, templates=engine.embed(bgr, analysis.detections))
                if annotate:
                    from faceledger.pipeline.draw import annotate_file

                    annotate_file(bgr, analysis, annotate / f"{path.stem}.faces.jpg")
                results.append({"image": str(path), **analysis.to_dict(include_templates=templates)})
            except FaceledgerError as exc:
                failed += 1
                results.append({"image": str(path), "error": exc.to_dict()})
    print(json.dumps(results if len(results) > 1 else results[0], indent=1))
    if failed:
        raise typer.Exit(2)


def compare(
    image_a: Path, image_b: Path, profile: ProfileOpt = None,
    fmr: Annotated[float, typer.Option(help="Decide 'match' at this target false-match rate.")] = 1e-4,
    face_a: Annotated[Optional[int], typer.Option(help="Which face of A when it has several (0 = largest).")] = None,
    face_b: Annotated[Optional[int], typer.Option(help="Which face of B when it has several.")] = None,
) -> None:
    """Compare the faces of two images (1:1): similarity, calibrated FMR, decision at --fmr."""
    with open_service(profile) as service:
        result = service.compare(local_actor(), image_a, image_b, target_fmr=fmr, face_a=face_a, face_b=face_b)
        out({"model_id": service.engine.model_id, **result.to_dict()})


def models(profile: ProfileOpt = None) -> None:
    """Show the profile's model files, check their SHA-256 and load them."""
    from faceledger.matching.calibration import load_calibration
    from faceledger.pipeline.engine import FaceEngine

    try:
        engine = FaceEngine(load_settings(), profile)
        engine.load()
    except FaceledgerError as exc:
        fail(exc)
    info = engine.describe()
    cal = load_calibration(engine.model_id, engine.settings.home)
    info["calibration"] = None if cal is None else {"source": cal.source, "thresholds": cal.to_dict()["thresholds"]}
    out(info)


def serve(
    host: Annotated[Optional[str], typer.Option(help="Listen address (default: setting, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: setting, 8080).")] = None,
    workers: Annotated[int, typer.Option(min=1, help=(
        "Worker processes on this host. Each holds its own copy of the templates and follows the database's "
        "change feed; limits and the audit log are shared through the database."))] = 1,
) -> None:
    """Start the HTTP API on the embedded defaults (OpenAPI at /openapi.json, docs at /docs)."""
    import logging

    import uvicorn

    from faceledger.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    try:
        app = create_app(settings)
        app.state.faceledger.engine.load()  # a missing or corrupt model fails here, naming the file
    except FaceledgerError as exc:
        fail(exc)
    if workers == 1:
        uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="info")
        return
    # checked (models, database schema migrated) once here; each worker then builds its own app from the same
    # settings (the environment), so no two workers race to migrate a fresh database
    app.state.faceledger.close()
    del app
    uvicorn.run("faceledger.api.app:create_app", factory=True, workers=workers, host=host or settings.host,
                port=port or settings.port, log_level="info")


def register(app: typer.Typer) -> None:
    app.command()(detect)
    app.command()(compare)
    app.command()(models)
    app.command()(serve)
