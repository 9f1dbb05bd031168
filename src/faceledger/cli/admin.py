"""Operator commands: API keys, tenant guardrails, template key rotation, retention, the audit log."""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Annotated, Optional

import typer

from faceledger.cli.common import console, local_actor, open_service, out, refusing

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
tenants_app = typer.Typer(help="Per-tenant guardrails against bulk surveillance.", no_args_is_help=True)
templates_app = typer.Typer(help="Templates at rest: encryption key rotation.", no_args_is_help=True)
retention_app = typer.Typer(help="Erase what is due: expired consent, lapsed retention.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and export the tamper-evident audit log.", no_args_is_help=True)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------- keys
@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant whose collections the key reaches.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: detect,verify,identify,enroll,admin.")],
    purpose: Annotated[str, typer.Option(help="The declared purpose, e.g. 'building access control'.")],
    collection: Annotated[Optional[str], typer.Option(
        help="Bind the key to this one collection (CompreFace's clients: a key per recognition service).")] = None,
    aws: Annotated[bool, typer.Option(
        "--aws", help="An access key id and secret access key for AWS SDKs (Rekognition's API, SigV4).")] = False,
) -> None:
    """Create an API key. The key is printed once; only its hash is stored (an AWS-style key's secret is kept
    sealed under the credentials key, since SigV4 needs it to check signatures)."""
    with open_service() as service:
        key, info = service.create_key(local_actor(tenant), tenant,
                                       [s.strip() for s in scopes.split(",") if s.strip()], purpose,
                                       collection=collection, aws=aws)
        if aws:
            out({"aws_access_key_id": info["key_id"], "aws_secret_access_key": key, **info})
        else:
            out({"api_key": key, **info})
    console.print("[yellow]store this key now: it cannot be shown again[/yellow]")


@keys_app.command("list")
def keys_list(tenant: Annotated[Optional[str], typer.Option(help="Only this tenant's keys.")] = None) -> None:
    """List keys (never their secrets)."""
    with open_service() as service:
        out(service.list_keys(local_actor(), tenant))


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    with open_service() as service:
        out(service.revoke_key(local_actor(), key_id))


# ---------------------------------------------------------------- tenants
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
    with open_service() as service:
        out(service.set_tenant_policy(local_actor(tenant), tenant, **changes).to_dict())


@tenants_app.command("show")
def tenants_show(tenant: str) -> None:
    """Show a tenant's guardrails."""
    with open_service() as service:
        out(service.tenant_policy(local_actor(tenant), tenant).to_dict())


# ---------------------------------------------------------------- templates at rest
@templates_app.command("rekey")
def templates_rekey() -> None:
    """Re-encrypt every template from FACELEDGER_TEMPLATE_KEY (empty: clear) to FACELEDGER_NEW_TEMPLATE_KEY.

    With no new key set, templates are decrypted and stored in the clear. Afterwards, start
    faceledger with FACELEDGER_TEMPLATE_KEY set to the new key.
    """
    from faceledger.gallery.crypto import parse_key

    actor = local_actor()
    with open_service() as service:
        with refusing(service, "templates.rekey", actor):
            new_key = parse_key(os.environ.get("FACELEDGER_NEW_TEMPLATE_KEY"))
        count = service.rekey(actor, new_key)
        out({"templates": count, "encrypted": service.gallery.cipher.enabled})


# ---------------------------------------------------------------- retention
@retention_app.command("run")
def retention_run(
    now: Annotated[Optional[dt.datetime], typer.Option(help="Act as if it were this time (UTC); default: now.")] = None,
) -> None:
    """Erase subjects whose consent has expired or whose collection's retention has lapsed (each audited)."""
    with open_service() as service:
        receipts = service.run_retention(_utc(now))
        out(receipts)
    console.print(f"erased {len(receipts)} subjects")


# ---------------------------------------------------------------- audit log
@audit_app.command("verify")
def audit_verify() -> None:
    """Check the whole hash chain and its HMAC seals; names the first bad record (exit 1 when broken)."""
    with open_service() as service:
        result = service.verify_audit(local_actor())
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
    from faceledger.gallery.records import iso

    with open_service() as service:
        for chunk in service.export_audit(local_actor(), fmt, tenant=tenant, subject_id=subject, since=iso(since),
                                          until=iso(until)):
            sys.stdout.write(chunk)


@audit_app.command("checkpoint")
def audit_checkpoint() -> None:
    """Seal the chain head now (e.g. before a backup)."""
    with open_service() as service:
        out(service.checkpoint_audit(local_actor()))


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")
    app.add_typer(templates_app, name="templates")
    app.add_typer(retention_app, name="retention")
    app.add_typer(audit_app, name="audit")
