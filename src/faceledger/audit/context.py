"""One audit record per operation, written whether the operation succeeds or is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from faceledger.audit.log import AuditLog
from faceledger.errors import FaceledgerError


@dataclass(frozen=True)
class Actor:
    """Who asks, and why: from the API key (or the local CLI user) and the request."""

    tenant: str | None = None
    key_id: str | None = None
    purpose: str | None = None
    request_id: str | None = None
    client: str | None = None


@dataclass
class Entry:
    """What the operation found, filled in by the caller before the record is written."""

    tenant: str | None = None
    key_id: str | None = None
    purpose: str | None = None
    collection: str | None = None
    reference: str | None = None
    subject_ids: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    decision: str | None = None
    seq: int | None = None  # set once the record is written
    flush: Callable[[], int | None] = lambda: None  # write the record now (e.g. to put its id in a receipt)


@contextmanager
def audited(log: AuditLog, operation: str, actor: Actor, *, collection: str | None = None,
            reference: str | None = None) -> Iterator[Entry]:
    entry = Entry(actor.tenant, actor.key_id, actor.purpose, collection, reference)

    def write(outcome: str) -> int | None:
        if entry.seq is None and log.enabled:
            entry.seq = log.append(operation, tenant=entry.tenant, key_id=entry.key_id, collection=entry.collection,
                                   subject_ids=entry.subject_ids, scores=entry.scores, decision=entry.decision,
                                   outcome=outcome, purpose=entry.purpose, reference=entry.reference,
                                   request_id=actor.request_id, client=actor.client)
        return entry.seq

    entry.flush = lambda: write("ok")
    outcome = "ok"
    try:
        yield entry
    except FaceledgerError as exc:
        outcome = exc.code
        raise
    except Exception:
        outcome = "INTERNAL"
        raise
    finally:
        write(outcome)
