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


def cli_actor():
    """The audit identity of a command-line user: the local tenant and the OS user as purpose."""
    import getpass

    from faceledger.audit.context import Actor

    return Actor(tenant="default", key_id=None, purpose=f"command line ({getpass.getuser()})", client="cli")


def audit_log(settings, session=None):
    """The deployment's audit log, on ``session`` when the command already has the database open."""
    from faceledger.audit.log import AuditLog
    from faceledger.gallery.db import open_database

    return AuditLog.from_settings(settings, session or open_database(settings.db_url)[1])


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
        g.audit = audit_log(settings, g.session)
        yield g
    except FaceledgerError as exc:
        _fail(exc)
    finally:
        if g is not None:
            g.close()


@contextmanager
def audited_op(g, operation: str, collection: str | None = None, reference: str | None = None):
    from faceledger.audit.context import audited

    with audited(g.audit, operation, cli_actor(), collection=collection, reference=reference) as entry:
        yield entry


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
    with gallery(profile) as g, audited_op(g, "collection.create", name):
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
    with gallery() as g, audited_op(g, "collection.delete", name) as entry:
        receipt = g.delete_collection(name)
        entry.subject_ids, entry.decision = receipt.subject_ids, f"erased {len(receipt.face_ids)} faces"
        out(receipt.to_dict())


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
    with gallery() as g, audited_op(g, "erase", collection) as entry:
        entry.subject_ids = [subject]
        receipt = g.delete_subject(collection, subject)
        entry.decision = f"erased {len(receipt.face_ids)} faces"
        out(receipt.to_dict())


def enroll(
    collection: str, subject: str, images: list[Path],
    name: Annotated[Optional[str], typer.Option(help="Display name.")] = None,
    consent: ConsentBasis = None, consent_ref: ConsentRef = None, consent_expires: ConsentExpires = None,
    face: Annotated[Optional[int], typer.Option(help="Which face when an image has several (0 = largest).")] = None,
    meta: Annotated[Optional[list[str]], typer.Option(help="Metadata as key=value (repeatable).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Case or reference number for the audit log.")] = None,
) -> None:
    """Enrol a subject's face from one or more images (created if new)."""
    metadata = dict(m.split("=", 1) for m in meta) if meta else None
    with gallery() as g, audited_op(g, "enroll", collection, reference) as entry:
        entry.subject_ids = [subject]
        info = g.enroll(collection, subject, images, display_name=name, metadata=metadata,
                        consent=consent_record(consent, consent_ref, consent_expires), face=face)
        entry.decision = f"enrolled {sum(f.created for f in info.faces)} faces"
        out(info.to_dict())


def identify(
    collection: str, image: Path,
    top_k: Annotated[int, typer.Option(help="Candidates per face.")] = 5,
    fmr: Annotated[Optional[float], typer.Option(help="Target FMR (default: the collection's).")] = None,
    reference: Annotated[Optional[str], typer.Option(help="Case or reference number for the audit log.")] = None,
) -> None:
    """Identify every face of an image in a collection (1:N, open-set)."""
    with gallery() as g, audited_op(g, "identify", collection, reference) as entry:
        result = g.identify(collection, image, top_k=top_k, target_fmr=fmr)
        entry.subject_ids = [c.subject_id for f in result.faces for c in f.candidates]
        entry.scores = [c.similarity for f in result.faces for c in f.candidates]
        entry.decision = ",".join(f"match:{f.subject_id}" if f.subject_id else "unknown" for f in result.faces)
        out(result.to_dict())


def verify(collection: str, subject: str, image: Path,
           fmr: Annotated[Optional[float], typer.Option(help="Target FMR (default: the collection's).")] = None,
           reference: Annotated[Optional[str], typer.Option(help="Case or reference for the audit log.")] = None,
           ) -> None:
    """Verify an image against a claimed subject (1:1)."""
    with gallery() as g, audited_op(g, "verify", collection, reference) as entry:
        entry.subject_ids = [subject]
        result = g.verify(collection, subject, image, target_fmr=fmr)
        entry.scores, entry.decision = [result.similarity], "match" if result.match else "no match"
        out({"subject_id": subject, **result.to_dict()})


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
                    with audited_op(g, "enroll", collection) as entry:
                        entry.subject_ids = [subject]
                        info = g.enroll(collection, subject, [path], consent=record)
                        entry.decision = f"enrolled {sum(f.created for f in info.faces)} faces"
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


templates_app = typer.Typer(help="Templates at rest: encryption key rotation.", no_args_is_help=True)


@templates_app.command("rekey")
def templates_rekey() -> None:
    """Re-encrypt every template from FACELEDGER_TEMPLATE_KEY (empty: clear) to FACELEDGER_NEW_TEMPLATE_KEY.

    With no new key set, templates are decrypted and stored in the clear. Afterwards, start
    faceledger with FACELEDGER_TEMPLATE_KEY set to the new key.
    """
    import os

    from faceledger.gallery.crypto import parse_key

    with gallery() as g, audited_op(g, "templates.rekey") as entry:
        count = g.rekey(parse_key(os.environ.get("FACELEDGER_NEW_TEMPLATE_KEY")))
        entry.decision = f"re-encrypted {count} templates"
        out({"templates": count, "encrypted": g.cipher.enabled})


retention_app = typer.Typer(help="Erase what is due: expired consent, lapsed retention.", no_args_is_help=True)
tenants_app = typer.Typer(help="Per-tenant guardrails against bulk surveillance.", no_args_is_help=True)


@retention_app.command("run")
def retention_run(
    now: Annotated[Optional[dt.datetime], typer.Option(help="Act as if it were this time (UTC); default: now.")] = None,
) -> None:
    """Erase subjects whose consent has expired or whose collection's retention has lapsed (each audited)."""
    from faceledger.audit.retention import run_retention
    from faceledger.gallery.schema import utcnow

    when = utcnow() if now is None else (now if now.tzinfo else now.replace(tzinfo=dt.timezone.utc))
    with gallery() as g:
        receipts = run_retention(g, g.audit, when)
        out(receipts)
        console.print(f"erased {len(receipts)} subjects")


@tenants_app.command("set")
def tenants_set(
    tenant: str,
    identify_per_hour: Annotated[Optional[int], typer.Option(help="Identifications per key per hour.")] = None,
    max_faces_per_search: Annotated[Optional[int], typer.Option(help="Faces searched per image.")] = None,
    human_review: Annotated[Optional[bool], typer.Option("--human-review/--no-human-review",
                                                         help="Return candidates without a match decision.")] = None,
) -> None:
    """Set a tenant's guardrails (options left out keep their value)."""
    changes = {k: v for k, v in {"identify_per_hour": identify_per_hour, "max_faces_per_search": max_faces_per_search,
                                 "human_review": human_review}.items() if v is not None}
    with gallery() as g, audited_op(g, "tenant.policy") as entry:
        entry.tenant = tenant
        result = g.set_tenant_policy(tenant, **changes)
        entry.decision = json.dumps(result)
        out(result)


@tenants_app.command("show")
def tenants_show(tenant: str) -> None:
    """Show a tenant's guardrails."""
    with gallery() as g:
        out(g.tenant_policy_dict(tenant))


audit_app = typer.Typer(help="Verify and export the tamper-evident audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain and its HMAC seals; names the first bad record (exit 1 when broken)."""
    from faceledger.cli import _settings

    result = audit_log(_settings()).verify()
    out(result.to_dict())
    if not result.ok:
        console.print(f"[red]audit log broken[/red] at record {result.first_bad_seq}: {result.reason}")
        raise typer.Exit(1)
    console.print(f"audit log intact: {result.records} records, {result.checkpoints} seals")


@audit_app.command("export")
def audit_export(
    since: Annotated[Optional[dt.datetime], typer.Option(help="Only records at or after this time (UTC).")] = None,
    until: Annotated[Optional[dt.datetime], typer.Option(help="Only records before this time (UTC).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    subject: Annotated[Optional[str], typer.Option(help="Only operations that involved this subject.")] = None,
    tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's records.")] = None,
) -> None:
    """Export audit records (a subject-access report with --subject)."""
    from faceledger.cli import _settings

    if fmt not in ("jsonl", "csv"):
        console.print("[red]--format is jsonl or csv[/red]")
        raise typer.Exit(2)

    from faceledger.gallery.records import iso

    for chunk in audit_log(_settings()).export(fmt, tenant=tenant, subject_id=subject, since=iso(since),
                                                until=iso(until)):
        sys.stdout.write(chunk)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Seal the chain head now (e.g. before a backup)."""
    from faceledger.cli import _settings

    out(audit_log(_settings()).checkpoint())


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.add_typer(templates_app, name="templates")
    app.add_typer(retention_app, name="retention")
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(collections_app, name="collections")
    app.add_typer(subjects_app, name="subjects")
    app.add_typer(index_app, name="index")
    app.command()(enroll)
    app.command()(identify)
    app.command()(verify)
    app.command("enroll-dir")(enroll_dir)
