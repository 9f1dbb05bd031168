"""What every command module shares: the console, JSON output, errors, settings, the operations layer.

Commands map their arguments to ``Faceledger`` calls and print the results; the service checks,
decides and audits. Heavy modules (models, database) are imported inside the functions, so
``faceledger --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer
from rich.console import Console

from faceledger.config import Settings, get_settings
from faceledger.errors import ConfigurationError, FaceledgerError

if TYPE_CHECKING:
    from faceledger.service import Actor, Faceledger

console = Console(stderr=True)

ProfileOpt = Annotated[Optional[str], typer.Option("--profile", "-p", help="fast or accurate (default: setting).")]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Data folder (default: FACELEDGER_DATA_DIR).")]
TenantOpt = Annotated[str, typer.Option(
    "--tenant", envvar="FACELEDGER_TENANT",
    help="The tenant whose collections the command works on (the same ones an API key of that tenant sees).")]
ReferenceOpt = Annotated[Optional[str], typer.Option(help="Case or reference number for the audit log.")]


def load_settings(**overrides) -> Settings:
    """The deployment's settings (environment, .env), with the given non-None overrides; a bad setting fails."""
    from pydantic import ValidationError

    try:
        base = get_settings()
    except ValidationError as exc:
        fail(ConfigurationError("invalid settings", errors=[f"FACELEDGER_{'_'.join(map(str, e['loc'])).upper()}: "
                                                            f"{e['msg']}" for e in exc.errors()]))
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def out(data) -> None:
    """One JSON document on stdout."""
    print(json.dumps(data, indent=1, default=str))


def fail(exc: FaceledgerError) -> NoReturn:
    """A refusal or failure: its JSON on stdout, a red line on stderr, exit code 2. MANY_FACES names the
    option that chooses a face."""
    error = exc.to_dict()
    if exc.code == "MANY_FACES":
        choose_with = {"http": "face (face_a / face_b for compare)", "cli": "--face (--face-a / --face-b for compare)",
                       "python": "face= (face_a= / face_b= for compare)"}
        error["message"] = f"{exc.message}; choose with {choose_with['cli']}"
        error["details"] = {**exc.details, "choose_with": exc.details.get("choose_with", choose_with)}
    print(json.dumps({"error": error}, indent=1), file=sys.stdout)
    console.print(f"[red]error[/red] {exc.code}: {error['message']}")
    raise typer.Exit(2)


def local_actor(tenant: str | None = None, reference: str | None = None) -> Actor:
    """The command-line user (every scope) acting on ``tenant``; without one, the operator of the whole
    deployment (audit records with no tenant: no tenant's admin key reads them)."""
    from faceledger.service import Actor

    return Actor.local(tenant, reference=reference)


@contextmanager
def open_service(profile: str | None = None) -> Iterator[Faceledger]:
    """The operations layer for one command, closed at its end; a FaceledgerError becomes ``fail``."""
    from faceledger.pipeline.engine import FaceEngine
    from faceledger.service import Faceledger

    service = None
    try:
        settings = load_settings()
        service = Faceledger(settings, FaceEngine(settings, profile))
        yield service
    except FaceledgerError as exc:
        fail(exc)
    finally:
        if service is not None:
            service.close()


@contextmanager
def refusing(service: Faceledger, operation: str, actor: Actor, *, collection: str | None = None,
             subject_ids: Sequence[str] = ()) -> Iterator[None]:
    """Arguments read before an operation starts (consent, metadata, a key): a bad one is a refusal of
    ``operation``, recorded by the service like any other."""
    try:
        yield
    except FaceledgerError as exc:
        service.refuse(operation, actor, exc, collection=collection, subject_ids=subject_ids)
        raise
