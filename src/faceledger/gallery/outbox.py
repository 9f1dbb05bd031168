"""The audit outbox: an operation's audit intent, committed in the same transaction as its data change.

The operations layer declares the record it is about to write (``pending``) before it
changes anything. Whatever transaction then commits a change on the database's sessions
also inserts that intent into ``audit_outbox``; the audit log turns it into the chained
record right after and deletes it in the same transaction as the append. A crash or a
full disk between the two leaves the intent, which the next start-up appends. So no
committed change is ever without its audit record.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from faceledger.gallery.records import iso
from faceledger.gallery.schema import AuditOutbox, utcnow


@dataclass
class Intent:
    fields: dict  # the record's fields as known before the change
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    written: bool = False  # committed into audit_outbox with a data change


_pending: ContextVar[Intent | None] = ContextVar("faceledger_audit_intent", default=None)


@contextmanager
def pending(fields: dict) -> Iterator[Intent]:
    """Declare the audit record of the operation that runs in this block (this thread or task only)."""
    intent = Intent(fields)
    reset = _pending.set(intent)
    try:
        yield intent
    finally:
        _pending.reset(reset)


def current() -> Intent | None:
    return _pending.get()


def audit_session(s: Session) -> Session:
    """Mark a session as the audit log's own: its commits never carry an intent."""
    s.info["audit"] = True
    return s


def install(factory: sessionmaker) -> None:
    """Make every data-changing commit on ``factory``'s sessions carry the pending intent, once."""

    @event.listens_for(factory, "do_orm_execute")
    def _dml(state) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            state.session.info["writes"] = True

    @event.listens_for(factory, "before_flush")
    def _flush(s: Session, _context, _instances) -> None:
        if s.new or s.dirty or s.deleted:
            s.info["writes"] = True

    @event.listens_for(factory, "before_commit")
    def _commit(s: Session) -> None:
        intent = _pending.get()
        if s.info.get("audit") or intent is None or intent.written:
            return
        if s.info.get("writes") or s.new or s.dirty or s.deleted:
            s.add(AuditOutbox(token=intent.token, at=iso(utcnow()), payload=json.dumps(intent.fields)))
            s.info["intent"] = intent

    @event.listens_for(factory, "after_commit")
    def _committed(s: Session) -> None:
        intent = s.info.pop("intent", None)
        if intent is not None:
            intent.written = True
        s.info.pop("writes", None)

    @event.listens_for(factory, "after_soft_rollback")
    def _rolled_back(s: Session, _previous) -> None:
        s.info.pop("intent", None)
        s.info.pop("writes", None)
