"""The audit log: append-only, hash-chained, sealed by HMAC checkpoints.

Each record carries the SHA-256 of its own fields and of the previous record's hash, so
editing a field, deleting a record or swapping two breaks the chain at that record. Every
``checkpoint_every`` records (and on demand) the chain head is sealed with an HMAC under a
key that is not in the database (``FACELEDGER_AUDIT_KEY``, or a key file under HOME), so
rewriting the whole chain, or cutting records that a seal covers, is detected too.
Records hold ids, scores and decisions: never templates or images.

Several appenders (threads, processes, hosts on one PostgreSQL): on PostgreSQL each append holds
a transaction-level advisory lock while it reads the chain head and writes the next record, so
the chain order is the order appenders took the lock; on SQLite the write lock does the same.
A unique sequence number backs both: a lost race is retried, never a fork in the chain.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Text, cast, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from faceledger.gallery.db import write_lock
from faceledger.gallery.outbox import audit_session
from faceledger.errors import ConfigurationError
from faceledger.gallery.records import iso
from faceledger.gallery.schema import MAX_ROW_ID, AuditCheckpoint, AuditOutbox, AuditRecord, utcnow

GENESIS = "0" * 64
APPEND_LOCK = int.from_bytes(b"fl-audit", "big")  # PostgreSQL advisory lock key of the appenders
FIELDS = ("seq", "at", "tenant", "key_id", "operation", "collection", "subject_ids", "scores", "decision",
          "outcome", "purpose", "reference", "request_id", "client", "prev_hash")


def record_hash(fields: dict) -> str:
    canonical = json.dumps({k: fields.get(k) for k in FIELDS}, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _seal(key: bytes, seq: int, head: str) -> str:
    return hmac.new(key, f"{seq}:{head}".encode(), hashlib.sha256).hexdigest()


def load_or_create_key(configured: str | None, home: Path, *, may_create: bool = True) -> bytes:
    """The HMAC key: the setting if given, else a key file beside (not inside) the database.

    The file is created only for a log that has no seal yet (``may_create``): a missing key
    file under a sealed log is an error, never silently replaced by a new key.
    """
    if configured:
        return configured.encode()
    path = home / "audit-hmac.key"
    if not path.is_file():
        if not may_create:
            raise ConfigurationError(
                f"the audit log is sealed but its key file {path} is missing: restore it (or set "
                "FACELEDGER_AUDIT_KEY); a new key could never vouch for the existing seals", path=str(path))
        home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip().encode()


@dataclass(frozen=True)
class Verification:
    ok: bool
    records: int
    checkpoints: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict:
        return {"ok": self.ok, "records": self.records, "checkpoints": self.checkpoints,
                "first_bad_seq": self.first_bad_seq, "reason": self.reason}


class AuditLog:
    def __init__(self, session: sessionmaker[Session], key: bytes, *, checkpoint_every: int = 100,
                 seal_interval: float | None = None, clock: Callable = utcnow) -> None:
        self._factory = session
        self.key = key
        self.checkpoint_every = checkpoint_every
        self.seal_interval = seal_interval  # seconds: a record older than this is never left unsealed by append
        self.clock = clock
        self.enabled = True
        self.unsealed = False  # records appended by this instance since its last seal
        self._lock = threading.Lock()

    def session(self) -> Session:
        """A session of the log's own (its commits carry no operation's outbox intent)."""
        return audit_session(self._factory())

    @classmethod
    def from_settings(cls, settings, session: sessionmaker[Session]) -> AuditLog:
        """The log of a deployment: its seal key (setting or key file) and sealing interval.

        Refuses to open a sealed log with a missing or wrong key: every later verification
        would report tampering that never happened, and new seals could not be trusted.
        """
        with audit_session(session()) as s:
            last_seal = s.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)).first()
        key = load_or_create_key(settings.audit_key, settings.home, may_create=last_seal is None)
        if last_seal is not None and not hmac.compare_digest(last_seal.hmac, _seal(key, last_seal.seq, last_seal.hash)):
            raise ConfigurationError("the audit key does not match the log's seals (FACELEDGER_AUDIT_KEY or "
                                     f"{settings.home / 'audit-hmac.key'}): start with the key that sealed it")
        log = cls(session, key, checkpoint_every=settings.audit_checkpoint_every,
                  seal_interval=settings.audit_seal_interval)
        log.enabled = settings.audit_enabled
        return log

    def append(self, operation: str, *, tenant: str | None = None, key_id: str | None = None,
               collection: str | None = None, subject_ids: Sequence[str] = (), scores: Sequence[float] = (),
               decision: str | None = None, outcome: str = "ok", purpose: str | None = None,
               reference: str | None = None, request_id: str | None = None, client: str | None = None,
               outbox_token: str | None = None) -> int | None:
        """Write one record; returns its sequence number. Safe across threads and processes.

        With ``outbox_token`` the record completes an outbox intent: the intent is deleted in
        the same transaction, and if another process already recorded it, nothing is written.
        """
        fields = {"at": iso(self.clock()), "tenant": tenant, "key_id": key_id, "operation": operation,
                  "collection": collection, "subject_ids": [str(s) for s in subject_ids],
                  "scores": [round(float(x), 6) for x in scores], "decision": decision, "outcome": outcome,
                  "purpose": purpose, "reference": reference, "request_id": request_id, "client": client}
        with self._lock:
            for _ in range(50):  # another process may take the same sequence number first: read again
                with self.session() as s:
                    try:
                        # appenders of every process and host queue here: the chain order is the order they take
                        # this lock in (the database's write lock on SQLite, an advisory lock on PostgreSQL)
                        write_lock(s, APPEND_LOCK)
                        last = s.execute(select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc())
                                         .limit(1)).first()
                        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                        seal = seq % self.checkpoint_every == 0 or self._seal_due(s)
                        if outbox_token is not None and not s.execute(
                                delete(AuditOutbox).where(AuditOutbox.token == outbox_token)).rowcount:
                            return None  # recorded already (by the start-up replay of another process)
                        row = {**fields, "seq": seq, "prev_hash": prev}
                        digest = record_hash(row)
                        s.add(AuditRecord(**row, hash=digest))
                        if seal:
                            s.add(AuditCheckpoint(seq=seq, hash=digest, hmac=_seal(self.key, seq, digest),
                                                  at=fields["at"]))
                        s.commit()
                        self.unsealed = not seal
                        return seq
                    except IntegrityError:  # (a database without such a lock) another appender took ``seq``
                        s.rollback()
            raise RuntimeError("could not append to the audit log: too much contention")

    def _seal_due(self, s: Session) -> bool:
        """Whether the oldest unsealed record is older than ``seal_interval``."""
        if not self.seal_interval:
            return False
        last = s.scalar(select(func.max(AuditCheckpoint.seq))) or 0
        oldest = s.scalar(select(AuditRecord.at).where(AuditRecord.seq == last + 1))
        if oldest is None:
            return False
        age = self.clock() - dt.datetime.fromisoformat(oldest)
        return age.total_seconds() >= self.seal_interval

    def seal_if_due(self) -> dict | None:
        """Seal the head when records have waited ``seal_interval`` unsealed (the service's timer calls this)."""
        with self.session() as s:
            due = self._seal_due(s)
        return self.checkpoint() if due else None

    def pending_intents(self, older_than: float = 0.0) -> list[tuple[str, dict]]:
        """Outbox intents not yet recorded, at least ``older_than`` seconds old: (token, fields)."""
        cutoff = iso(self.clock() - dt.timedelta(seconds=older_than))
        with self.session() as s:
            rows = s.execute(select(AuditOutbox.token, AuditOutbox.payload).where(AuditOutbox.at <= cutoff)
                             .order_by(AuditOutbox.at)).all()
        return [(token, json.loads(payload)) for token, payload in rows]

    def replay_outbox(self, older_than: float = 0.0) -> int:
        """Append the record of every change that committed without one (after a crash or a full disk)."""
        done = 0
        for token, fields in self.pending_intents(older_than):
            decision = fields.get("decision")
            fields["decision"] = ((decision + "; " if decision else "") + "recorded after an interruption")[:64]
            done += self.append(**fields, outbox_token=token) is not None
        return done

    def checkpoint(self) -> dict | None:
        """Seal the chain head now (e.g. before a backup or at shutdown)."""
        with self._lock, self.session() as s:
            write_lock(s, APPEND_LOCK)  # another process may be sealing or appending to the same head
            last = s.execute(select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)).first()
            if last is None or s.get(AuditCheckpoint, last[0]) is not None:
                return None
            s.add(AuditCheckpoint(seq=last[0], hash=last[1], hmac=_seal(self.key, last[0], last[1]),
                                  at=iso(self.clock())))
            s.commit()
            self.unsealed = False
            return {"seq": last[0], "hash": last[1]}

    def verify(self) -> Verification:
        """Check the whole chain and every seal; name the first record that is wrong."""
        hashes: dict[int, str] = {}
        count = 0
        expected, prev = 1, GENESIS
        with self.session() as s:
            for r in s.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars():
                count += 1
                fields = {k: getattr(r, k) for k in FIELDS}
                if r.seq != expected:
                    return Verification(False, count, 0, expected, f"record {expected} is missing")
                if r.prev_hash != prev:
                    return Verification(False, count, 0, r.seq, f"record {r.seq} does not follow record {r.seq - 1}")
                if record_hash(fields) != r.hash:
                    return Verification(False, count, 0, r.seq, f"record {r.seq} was altered")
                hashes[r.seq] = r.hash
                prev, expected = r.hash, expected + 1
            seals = s.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.seq)).scalars().all()
        for c in seals:
            if not hmac.compare_digest(c.hmac, _seal(self.key, c.seq, c.hash)):
                return Verification(False, count, len(seals), c.seq, f"the seal at record {c.seq} is not valid")
            if c.seq not in hashes:
                return Verification(False, count, len(seals), expected,
                                    f"records {expected}..{c.seq} are missing (sealed at {c.at})")
            if hashes[c.seq] != c.hash:
                return Verification(False, count, len(seals), c.seq, f"record {c.seq} differs from its seal")
        return Verification(True, count, len(seals))

    def status(self) -> dict:
        """Where the chain stands, without verifying it: its last record and its last seal."""
        with self.session() as s:
            last = s.execute(select(AuditRecord.seq, AuditRecord.at).order_by(AuditRecord.seq.desc()).limit(1)).first()
            seal = s.execute(select(AuditCheckpoint.seq, AuditCheckpoint.at)
                             .order_by(AuditCheckpoint.seq.desc()).limit(1)).first()
        return {"records": last[0] if last else 0, "last_record_at": last[1] if last else None,
                "sealed_through": seal[0] if seal else 0, "sealed_at": seal[1] if seal else None}

    def query(self, *, tenant: str | None = None, subject_id: str | None = None, key_id: str | None = None,
              operation: str | None = None, since: str | None = None, until: str | None = None,
              limit: int = 1000, offset: int = 0, newest_first: bool = False,
              reference: str | None = None, seq: int | None = None) -> list[dict]:
        q = select(AuditRecord).order_by(AuditRecord.seq.desc() if newest_first else AuditRecord.seq)
        if seq is not None:
            if not 1 <= seq <= MAX_ROW_ID:  # beyond the column (32-bit on PostgreSQL): no such record
                return []
            q = q.where(AuditRecord.seq == seq)
        for column, value in ((AuditRecord.tenant, tenant), (AuditRecord.key_id, key_id),
                              (AuditRecord.operation, operation), (AuditRecord.reference, reference)):
            if value is not None:
                q = q.where(column == value)
        if subject_id is not None and subject_id.isascii():  # narrowed in SQL (the JSON text holds the
            quoted = json.dumps(subject_id)  # quoted id; non-ASCII is escaped differently by engines), exact below
            q = q.where(cast(AuditRecord.subject_ids, Text).contains(quoted, autoescape=True))
        if since:
            q = q.where(AuditRecord.at >= since)
        if until:
            q = q.where(AuditRecord.at < until)
        out = []
        with self.session() as s:
            for r in s.execute(q).scalars():
                if subject_id is not None and subject_id not in r.subject_ids:
                    continue
                if offset:
                    offset -= 1
                    continue
                out.append({k: getattr(r, k) for k in (*FIELDS, "hash")})
                if len(out) >= limit:
                    break
        return out

    def export(self, fmt: str, **filters) -> Iterator[str]:
        rows = self.query(limit=10**9, **filters)
        if fmt == "jsonl":
            for r in rows:
                yield json.dumps(r, ensure_ascii=False) + "\n"
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[*FIELDS, "hash"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "subject_ids": ";".join(r["subject_ids"]),
                             "scores": ";".join(str(x) for x in r["scores"])})
        yield buf.getvalue()
