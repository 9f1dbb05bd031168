"""Gallery commands: collections, subjects, enrol, identify, verify, erase, index upkeep."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from faceledger.errors import FaceledgerError

console = Console(stderr=True)
collections_app = typer.Typer(help="Create, list and delete collections (named galleries).", no_args_is_help=True)
subjects_app = typer.Typer(help="List, show and erase subjects.", no_args_is_help=True)
index_app = typer.Typer(help="Check or rebuild a collection's search index from the database.", no_args_is_help=True)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}

ConsentBasis = Annotated[Optional[str], typer.Option(
    "--consent", help="Legal basis of the consent record, e.g. explicit-consent, contract, legal-obligation.")]
ConsentRef = Annotated[Optional[str], typer.Option("--consent-ref", help="Reference of the signed consent.")]
ConsentExpires = Annotated[Optional[dt.datetime], typer.Option("--consent-expires", help="When the consent ends.")]


def out(data) -> None:
    print(json.dumps(data, indent=1, default=str))


@contextmanager
def gallery(profile: str | None = None):
    """A gallery for one command; its errors become a JSON error and exit code 2."""
    from faceledger.cli import _fail, _settings
    from faceledger.gallery.service import Gallery
    from faceledger.pipeline.engine import FaceEngine

    g = None
    try:
        settings = _settings()
        g = Gallery(settings, FaceEngine(settings, profile))
        yield g
    except FaceledgerError as exc:
        _fail(exc)
    finally:
        if g is not None:
            g.close()


def consent_record(basis, reference, expires):
    from faceledger.gallery.records import Consent

    if basis is None:
        if reference or expires:
            console.print("[red]--consent-ref and --consent-expires need --consent BASIS[/red]")
            raise typer.Exit(2)
        return None
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=dt.timezone.utc)
    return Consent(basis, reference, None, expires)


@collections_app.command("create")
def collections_create(
    name: str,
    target_fmr: Annotated[float, typer.Option(help="Open-set match threshold, as a false-match rate.")] = 1e-4,
    no_consent: Annotated[bool, typer.Option("--no-consent-required", help="Allow enrolment without consent.")] = False,
    store_crops: Annotated[bool, typer.Option(help="Keep aligned face crops (off: no images stored).")] = False,
    retention_days: Annotated[Optional[int], typer.Option(help="Erase subjects this many days after enrolment.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile of the collection.")] = None,
) -> None:
    """Create a collection."""
    with gallery(profile) as g:
        out(g.create_collection(name, target_fmr=target_fmr, require_consent=not no_consent, store_crops=store_crops,
                                retention_days=retention_days).to_dict())


@collections_app.command("list")
def collections_list() -> None:
    """List collections with their sizes."""
    with gallery() as g:
        out([c.to_dict() for c in g.list_collections()])


@collections_app.command("delete")
def collections_delete(name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Delete a collection and erase every subject and template in it."""
    if not yes:
        typer.confirm(f"Erase collection '{name}' and all its subjects?", abort=True)
    with gallery() as g:
        out(g.delete_collection(name).to_dict())


@subjects_app.command("list")
def subjects_list(collection: str, limit: int = 100, offset: int = 0) -> None:
    """List a collection's subjects."""
    with gallery() as g:
        out([s.to_dict() for s in g.list_subjects(collection, limit=limit, offset=offset)])


@subjects_app.command("show")
def subjects_show(collection: str, subject: str) -> None:
    """Show a subject: metadata, consent, faces (never templates)."""
    with gallery() as g:
        out(g.get_subject(collection, subject).to_dict())


@subjects_app.command("delete")
def subjects_delete(collection: str, subject: str) -> None:
    """Erase a subject: every template leaves the database and the index. Prints the receipt."""
    with gallery() as g:
        out(g.delete_subject(collection, subject).to_dict())


def enroll(
    collection: str, subject: str, images: list[Path],
    name: Annotated[Optional[str], typer.Option(help="Display name.")] = None,
    consent: ConsentBasis = None, consent_ref: ConsentRef = None, consent_expires: ConsentExpires = None,
    face: Annotated[Optional[int], typer.Option(help="Which face when an image has several (0 = largest).")] = None,
    meta: Annotated[Optional[list[str]], typer.Option(help="Metadata as key=value (repeatable).")] = None,
) -> None:
    """Enrol a subject's face from one or more images (created if new)."""
    metadata = dict(m.split("=", 1) for m in meta) if meta else None
    with gallery() as g:
        out(g.enroll(collection, subject, images, display_name=name, metadata=metadata,
                     consent=consent_record(consent, consent_ref, consent_expires), face=face).to_dict())


def identify(
    collection: str, image: Path,
    top_k: Annotated[int, typer.Option(help="Candidates per face.")] = 5,
    fmr: Annotated[Optional[float], typer.Option(help="Target FMR (default: the collection's).")] = None,
) -> None:
    """Identify every face of an image in a collection (1:N, open-set)."""
    with gallery() as g:
        out(g.identify(collection, image, top_k=top_k, target_fmr=fmr).to_dict())


def verify(collection: str, subject: str, image: Path,
           fmr: Annotated[Optional[float], typer.Option(help="Target FMR (default: the collection's).")] = None) -> None:
    """Verify an image against a claimed subject (1:1)."""
    with gallery() as g:
        out({"subject_id": subject, **g.verify(collection, subject, image, target_fmr=fmr).to_dict()})


def enroll_dir(
    collection: str, directory: Path,
    consent: ConsentBasis = None, consent_ref: ConsentRef = None, consent_expires: ConsentExpires = None,
    per_subject: Annotated[Optional[int], typer.Option(help="At most this many images per subject.")] = None,
) -> None:
    """Bulk enrolment: one folder per subject (its name is the subject id). Resumable: done images are skipped.

    Each acknowledged enrolment is printed as a JSON line on stdout as soon as it is durable.
    """
    if not directory.is_dir():
        console.print(f"[red]not a folder[/red]: {directory}")
        raise typer.Exit(2)
    record = consent_record(consent, consent_ref, consent_expires)
    jobs = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        jobs += [(folder.name, f) for f in files[:per_subject]]
    refused: Counter[str] = Counter()
    enrolled = skipped = 0
    with gallery() as g:
        g.get_collection(collection)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"enrolling into {collection}", total=len(jobs))
            for subject, path in jobs:
                try:
                    info = g.enroll(collection, subject, [path], consent=record)
                    created = info.faces[0].created
                    enrolled += created
                    skipped += not created
                    print(json.dumps({"subject_id": subject, "image": str(path), "face_id": info.faces[0].face_id,
                                      "created": created}), flush=True)
                except FaceledgerError as exc:
                    if exc.code in ("NOT_FOUND", "INCOMPATIBLE_TEMPLATES", "NOT_CALIBRATED"):
                        raise
                    reasons = exc.details.get("reasons") or [exc.code]
                    refused.update(reasons if exc.code == "ENROLLMENT_REFUSED" else [exc.code])
                progress.advance(task)
    console.print(f"enrolled {enrolled}, already there {skipped}, refused {len(jobs) - enrolled - skipped}")
    for reason, n in refused.most_common():
        console.print(f"  refused {reason}: {n}")
    print(json.dumps({"summary": {"enrolled": enrolled, "already_enrolled": skipped,
                                  "refused": len(jobs) - enrolled - skipped, "refusals_by_reason": dict(refused)}}),
          file=sys.stdout, flush=True)


@index_app.command("check")
def index_check(collection: str) -> None:
    """Load the persisted index and bring it in step with the database."""
    with gallery() as g:
        out(g.check_index(collection))


@index_app.command("rebuild")
def index_rebuild(collection: str) -> None:
    """Rebuild a collection's index from the database (the source of truth)."""
    with gallery() as g:
        out(g.rebuild_index(collection))


def register(app: typer.Typer) -> None:
    app.add_typer(collections_app, name="collections")
    app.add_typer(subjects_app, name="subjects")
    app.add_typer(index_app, name="index")
    app.command()(enroll)
    app.command()(identify)
    app.command()(verify)
    app.command("enroll-dir")(enroll_dir)
