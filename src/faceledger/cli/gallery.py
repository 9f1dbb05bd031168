"""Gallery commands: collections, subjects, enrol (one subject or a folder), identify, verify, index upkeep.

Every command acts as the local operator on ``--tenant`` (FACELEDGER_TENANT, default "default"),
so it sees the same collections as an API key of that tenant.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from faceledger.cli.common import ReferenceOpt, TenantOpt, console, local_actor, open_service, out, refusing
from faceledger.errors import FaceledgerError, InvalidArgument

collections_app = typer.Typer(help="Create, list and delete collections (named galleries).", no_args_is_help=True)
subjects_app = typer.Typer(help="List, show and erase subjects.", no_args_is_help=True)
index_app = typer.Typer(help="Check or rebuild a collection's search index from the database.", no_args_is_help=True)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
# enroll-dir stops on these (they would refuse every image alike); other refusals are counted and skipped
FATAL_FOR_ALL = {"NOT_FOUND", "INCOMPATIBLE_TEMPLATES", "NOT_CALIBRATED", "MODEL_FILE", "TEMPLATE_KEY",
                 "CONFIGURATION", "FORBIDDEN"}

ConsentBasis = Annotated[Optional[str], typer.Option(
    "--consent", help="Legal basis of the consent record, e.g. explicit-consent, contract, legal-obligation.")]
ConsentRef = Annotated[Optional[str], typer.Option("--consent-ref", help="Reference of the signed consent.")]
ConsentExpires = Annotated[Optional[dt.datetime], typer.Option("--consent-expires", help="When the consent ends.")]
TargetFmr = Annotated[Optional[float], typer.Option("--fmr", help="Target FMR of the claim (default: the collection's).")]
TargetFpir = Annotated[Optional[float], typer.Option(
    "--fpir", help="Target FPIR of this search (default: the collection's).")]


# ---------------------------------------------------------------- collections
@collections_app.command("create")
def collections_create(
    name: str,
    target_fpir: Annotated[Optional[float], typer.Option(
        help="1:N policy: the chance that a search for someone not enrolled returns a match, kept at any gallery "
             "size (default: the deployment's, 0.001).")] = None,
    target_fmr: Annotated[float, typer.Option(help="1:1 verification: the false-match rate of a claim.")] = 1e-4,
    no_consent: Annotated[bool, typer.Option("--no-consent-required", help="Allow enrolment without consent.")] = False,
    store_crops: Annotated[bool, typer.Option(help="Keep aligned face crops (off: no images stored).")] = False,
    retention_days: Annotated[Optional[int], typer.Option(help="Erase subjects this many days after enrolment.")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Model profile of the collection.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Create a collection."""
    with open_service(profile) as service:
        out(service.create_collection(local_actor(tenant), name, target_fmr=target_fmr, target_fpir=target_fpir,
                                      require_consent=not no_consent,
                                      store_crops=store_crops, retention_days=retention_days).to_dict())


@collections_app.command("list")
def collections_list(tenant: TenantOpt = "default") -> None:
    """List collections with their sizes."""
    with open_service() as service:
        out([c.to_dict() for c in service.list_collections(local_actor(tenant))])


@collections_app.command("set")
def collections_set(
    name: str,
    target_fpir: Annotated[Optional[float], typer.Option(help="New 1:N target FPIR.")] = None,
    target_fmr: Annotated[Optional[float], typer.Option(help="New 1:1 target FMR.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Change a collection's policy (audited with the values before and after)."""
    with open_service() as service:
        out(service.update_collection(local_actor(tenant), name, target_fpir=target_fpir,
                                      target_fmr=target_fmr).to_dict())


@collections_app.command("attest")
def collections_attest(
    name: str,
    basis: Annotated[str, typer.Option(help="The legal basis of enrolments, e.g. 'explicit-consent' or 'contract'.")],
    reference: Annotated[Optional[str], typer.Option(
        help="Where it is documented: the consent forms' register, a DPIA, a contract.")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Attest the legal basis of enrolments made through APIs that carry no consent record (Rekognition's and
    CompreFace's): each subject they enrol carries this basis and reference. Audited."""
    with open_service() as service:
        out(service.attest_consent(local_actor(tenant), name, basis, reference).to_dict())


@collections_app.command("delete")
def collections_delete(name: str, yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                       tenant: TenantOpt = "default") -> None:
    """Delete a collection and erase every subject and template in it. Prints the receipt."""
    if not yes:
        typer.confirm(f"Erase collection '{name}' and all its subjects?", abort=True)
    with open_service() as service:
        out(service.delete_collection(local_actor(tenant), name).to_dict())


# ---------------------------------------------------------------- subjects
@subjects_app.command("list")
def subjects_list(collection: str, limit: int = 100, offset: int = 0, tenant: TenantOpt = "default") -> None:
    """List a collection's subjects."""
    with open_service() as service:
        out([s.to_dict(summary=True) for s in service.list_subjects(local_actor(tenant), collection, limit=limit,
                                                                    offset=offset)])


@subjects_app.command("show")
def subjects_show(collection: str, subject: str, tenant: TenantOpt = "default") -> None:
    """Show a subject: metadata, consent, faces (never templates)."""
    with open_service() as service:
        out(service.get_subject(local_actor(tenant), collection, subject).to_dict())


@subjects_app.command("delete")
def subjects_delete(collection: str, subject: str, tenant: TenantOpt = "default") -> None:
    """Erase a subject: every template leaves the database and the index. Prints the receipt."""
    with open_service() as service:
        out(service.erase_subject(local_actor(tenant), collection, subject).to_dict())


# ---------------------------------------------------------------- enrolment and search
def enroll(
    collection: str, subject: str, images: list[Path],
    name: Annotated[Optional[str], typer.Option(help="Display name.")] = None,
    consent: ConsentBasis = None, consent_ref: ConsentRef = None, consent_expires: ConsentExpires = None,
    face: Annotated[Optional[int], typer.Option(help="Which face when an image has several (0 = largest).")] = None,
    meta: Annotated[Optional[list[str]], typer.Option(help="Metadata as key=value (repeatable).")] = None,
    reference: ReferenceOpt = None,
    tenant: TenantOpt = "default",
) -> None:
    """Enrol a subject's face from one or more images (created if new)."""
    from faceledger.service.consent import consent_record

    actor = local_actor(tenant, reference)
    with open_service() as service:
        with refusing(service, "enroll", actor, collection=collection, subject_ids=[subject]):
            record = consent_record(consent, consent_ref, consent_expires)
            metadata = _metadata(meta)
        out(service.enroll(actor, collection, subject, images, display_name=name, metadata=metadata,
                           consent=record, face=face).to_dict())


def _metadata(items: list[str] | None) -> dict | None:
    if not items:
        return None
    if not all("=" in m for m in items):
        raise InvalidArgument("--meta takes key=value", meta=[m for m in items if "=" not in m])
    return dict(m.split("=", 1) for m in items)


def identify(
    collection: str, image: Path,
    top_k: Annotated[int, typer.Option(help="Candidates per face.")] = 5,
    fpir: TargetFpir = None,
    reference: ReferenceOpt = None,
    tenant: TenantOpt = "default",
) -> None:
    """Identify every face of an image in a collection (1:N, open-set): match, review or unknown per face."""
    with open_service() as service:
        out(service.identify(local_actor(tenant, reference), collection, image, top_k=top_k,
                             target_fpir=fpir).to_dict())


def verify(
    collection: str, subject: str, image: Path,
    fmr: TargetFmr = None,
    face: Annotated[Optional[int], typer.Option(help="Which face when the image has several (0 = largest).")] = None,
    reference: ReferenceOpt = None,
    tenant: TenantOpt = "default",
) -> None:
    """Verify an image against a claimed subject (1:1)."""
    with open_service() as service:
        result = service.verify(local_actor(tenant, reference), collection, subject, image, target_fmr=fmr, face=face)
        out({"subject_id": subject, **result.to_dict()})


def enroll_dir(
    collection: str, directory: Path,
    consent: ConsentBasis = None, consent_ref: ConsentRef = None, consent_expires: ConsentExpires = None,
    per_subject: Annotated[Optional[int], typer.Option(help="At most this many images per subject.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        help="Subjects enrolled at once (default: FACELEDGER_WORKERS, one per core).")] = None,
    tenant: TenantOpt = "default",
) -> None:
    """Bulk enrolment: one folder per subject (its name is the subject id). Resumable: done images are skipped.

    Each acknowledged enrolment is printed as a JSON line on stdout as soon as it is durable.
    """
    from faceledger.service.bulk import enroll_each
    from faceledger.service.consent import consent_record

    if not directory.is_dir():
        console.print(f"[red]not a folder[/red]: {directory}")
        raise typer.Exit(2)
    jobs = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        jobs += [(folder.name, f) for f in files[:per_subject]]
    refused: Counter[str] = Counter()
    enrolled = skipped = 0
    actor = local_actor(tenant)
    with open_service() as service:
        with refusing(service, "enroll", actor, collection=collection):
            record = consent_record(consent, consent_ref, consent_expires)
        service.get_collection(actor, collection)  # NOT_FOUND before the progress bar
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(f"enrolling into {collection}", total=len(jobs))
            outcomes = enroll_each(  # one enrolment, one audit record (written by the service), success or refusal
                lambda subject, path: service.enroll(actor, collection, subject, [path], consent=record), jobs,
                workers=min(workers or service.settings.workers, len(jobs) or 1), stop_on=FATAL_FOR_ALL)
            for subject, path, result in outcomes:
                if isinstance(result, FaceledgerError):
                    if result.code not in FATAL_FOR_ALL:
                        reasons = result.details.get("reasons") or [result.code]
                        refused.update(reasons if result.code == "ENROLLMENT_REFUSED" else [result.code])
                else:
                    created = result.faces[0].created
                    enrolled += created
                    skipped += not created
                    print(json.dumps({"subject_id": subject, "image": str(path),
                                      "face_id": result.faces[0].face_id, "created": created}), flush=True)
                progress.advance(task)
    console.print(f"enrolled {enrolled}, already there {skipped}, refused {len(jobs) - enrolled - skipped}")
    for reason, n in refused.most_common():
        console.print(f"  refused {reason}: {n}")
    print(json.dumps({"summary": {"enrolled": enrolled, "already_enrolled": skipped,
                                  "refused": len(jobs) - enrolled - skipped, "refusals_by_reason": dict(refused)}}),
          file=sys.stdout, flush=True)


# ---------------------------------------------------------------- index upkeep
@index_app.command("check")
def index_check(collection: str, tenant: TenantOpt = "default") -> None:
    """Load the persisted index and bring it in step with the database."""
    with open_service() as service:
        out(service.check_index(local_actor(tenant), collection))


@index_app.command("rebuild")
def index_rebuild(collection: str, tenant: TenantOpt = "default") -> None:
    """Rebuild a collection's index from the database (the source of truth)."""
    with open_service() as service:
        out(service.rebuild_index(local_actor(tenant), collection))


def register(app: typer.Typer) -> None:
    app.add_typer(collections_app, name="collections")
    app.add_typer(subjects_app, name="subjects")
    app.add_typer(index_app, name="index")
    app.command()(enroll)
    app.command("enroll-dir")(enroll_dir)
    app.command()(identify)
    app.command()(verify)
