"""Streams, their track events and webhook deliveries, in SQL (the same database as the gallery).

Events are numbered by the database in the order they were written; a poller reads
``after=`` the last id it saw. A stream with a webhook gets a delivery row for each event
in the same transaction as the event, so no event is ever written without its delivery
(a crash before delivery leaves it pending, delivered after restart).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from faceledger.errors import NotFound

STREAM_ID = re.compile(r"[0-9a-fA-F-]{1,64}")
from faceledger.gallery.records import iso
from faceledger.gallery.schema import Stream, StreamEvent, WebhookDelivery, utcnow


@dataclass(frozen=True)
class StreamInfo:
    stream_id: str
    kind: str
    tenant: str
    collection: str | None
    source: str
    mode: str
    purpose: str
    fps: float
    identify_per_hour: int
    webhook_url: str | None
    created_by: str | None
    created_at: str
    state: str
    status: dict
    stopped_at: str | None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "tenant"}


def _info(row: Stream) -> StreamInfo:
    return StreamInfo(row.id, row.kind, row.tenant, row.collection, row.source, row.mode, row.purpose, row.fps,
                      row.identify_per_hour, row.webhook_url, row.created_by, iso(row.created_at), row.state,
                      dict(row.status or {}), iso(row.stopped_at) if row.stopped_at else None)


class StreamStore:
    def __init__(self, session: sessionmaker) -> None:
        self.session = session

    # ------------------------------------------------------------------ streams
    def create(self, *, stream_id: str, kind: str, tenant: str, collection: str | None, source: str, mode: str,
               purpose: str, fps: float, identify_per_hour: int, webhook_url: str | None,
               webhook_secret: str | None, created_by: str | None) -> StreamInfo:
        with self.session() as s:
            row = Stream(id=stream_id, kind=kind, tenant=tenant, collection=collection, source=source, mode=mode,
                         purpose=purpose, fps=fps, identify_per_hour=identify_per_hour, webhook_url=webhook_url,
                         webhook_secret=webhook_secret, created_by=created_by, created_at=utcnow(), state="running",
                         status={})
            s.add(row)
            s.commit()
            return _info(row)

    def get(self, tenant: str | None, stream_id: str) -> StreamInfo:
        with self.session() as s:
            return _info(self._row(s, tenant, stream_id))

    def secret(self, stream_id: str) -> tuple[str | None, str | None]:
        """(webhook url, signing secret) of a stream."""
        with self.session() as s:
            row = s.get(Stream, stream_id)
            return (row.webhook_url, row.webhook_secret) if row else (None, None)

    def list(self, tenant: str | None, *, kind: str | None = None) -> list[StreamInfo]:
        with self.session() as s:
            q = select(Stream).order_by(Stream.created_at)
            if tenant is not None:
                q = q.where(Stream.tenant == tenant)
            if kind is not None:
                q = q.where(Stream.kind == kind)
            return [_info(r) for r in s.scalars(q)]

    def running(self) -> list[StreamInfo]:
        with self.session() as s:
            return [_info(r) for r in s.scalars(select(Stream).where(Stream.state == "running"))]

    def set_state(self, stream_id: str, state: str, status: dict | None = None) -> None:
        with self.session() as s:
            values: dict = {"state": state}
            if status is not None:
                values["status"] = status
            if state != "running":
                values["stopped_at"] = utcnow()
            s.execute(update(Stream).where(Stream.id == stream_id).values(**values))
            s.commit()

    def set_status(self, stream_id: str, status: dict) -> None:
        with self.session() as s:
            s.execute(update(Stream).where(Stream.id == stream_id).values(status=status))
            s.commit()

    def delete(self, tenant: str | None, stream_id: str) -> None:
        with self.session() as s:
            row = self._row(s, tenant, stream_id)
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.stream_id == stream_id))
            s.execute(delete(StreamEvent).where(StreamEvent.stream_id == stream_id))
            s.delete(row)
            s.commit()

    @staticmethod
    def _row(s, tenant: str | None, stream_id: str) -> Stream:
        if not STREAM_ID.fullmatch(stream_id or ""):  # never sent to the database (NUL bytes, any length)
            raise NotFound(f"no stream '{stream_id[:64]!r}'", stream_id=stream_id[:64])
        row = s.get(Stream, stream_id)
        if row is None or (tenant is not None and row.tenant != tenant):
            raise NotFound(f"no stream '{stream_id}'", stream_id=stream_id)
        return row

    # ------------------------------------------------------------------ events
    def append(self, stream_id: str, events: Sequence[dict], *, deliver: bool) -> list[int]:
        """Write events (and their pending deliveries when the stream has a webhook) in one transaction."""
        if not events:
            return []
        now = utcnow()
        with self.session() as s:
            rows = [StreamEvent(stream_id=stream_id, type=e["type"], at=now, payload=e) for e in events]
            s.add_all(rows)
            s.flush()
            if deliver:
                s.add_all([WebhookDelivery(event_id=r.id, stream_id=stream_id, state="pending", attempts=0,
                                           next_attempt_at=now) for r in rows])
            s.commit()
            return [r.id for r in rows]

    def events(self, stream_id: str, *, after: int = 0, limit: int = 100,
               types: Sequence[str] | None = None) -> list[dict]:
        with self.session() as s:
            q = (select(StreamEvent).where(StreamEvent.stream_id == stream_id, StreamEvent.id > after)
                 .order_by(StreamEvent.id).limit(limit))
            if types:
                q = q.where(StreamEvent.type.in_(list(types)))
            return [{"id": r.id, "at": iso(r.at), **r.payload} for r in s.scalars(q)]

    def count_events(self, stream_id: str, types: Sequence[str] | None = None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(StreamEvent).where(StreamEvent.stream_id == stream_id)
            if types:
                q = q.where(StreamEvent.type.in_(list(types)))
            return int(s.scalar(q))

    # ------------------------------------------------------------------ deliveries
    def due(self, now: dt.datetime, limit: int = 50) -> list[tuple[int, int, str, dict, int]]:
        """(delivery id, event id, stream id, event, attempts) of pending deliveries due now, oldest first."""
        with self.session() as s:
            q = (select(WebhookDelivery, StreamEvent).join(StreamEvent, StreamEvent.id == WebhookDelivery.event_id)
                 .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
                 .order_by(WebhookDelivery.id).limit(limit))
            return [(d.id, e.id, d.stream_id, {"id": e.id, "at": iso(e.at), **e.payload}, d.attempts)
                    for d, e in s.execute(q)]

    def delivered(self, delivery_id: int) -> None:
        with self.session() as s:
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
                state="delivered", attempts=WebhookDelivery.attempts + 1, delivered_at=utcnow(), last_error=None))
            s.commit()

    def failed(self, delivery_id: int, error: str, next_attempt_at: dt.datetime | None) -> None:
        """One failed attempt: try again at ``next_attempt_at``, or give up (dead letter) when it is None."""
        with self.session() as s:
            values = {"attempts": WebhookDelivery.attempts + 1, "last_error": error[:2000]}
            values.update({"state": "dead"} if next_attempt_at is None else {"next_attempt_at": next_attempt_at})
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))
            s.commit()

    def deliveries(self, *, stream_id: str | None = None, state: str | None = None, tenant: str | None = None,
                   limit: int = 100) -> list[dict]:
        with self.session() as s:
            q = select(WebhookDelivery).order_by(WebhookDelivery.id).limit(limit)
            if tenant is not None:
                q = q.where(WebhookDelivery.stream_id.in_(select(Stream.id).where(Stream.tenant == tenant)))
            if stream_id is not None:
                q = q.where(WebhookDelivery.stream_id == stream_id)
            if state is not None:
                q = q.where(WebhookDelivery.state == state)
            return [{"id": d.id, "event_id": d.event_id, "stream_id": d.stream_id, "state": d.state,
                     "attempts": d.attempts, "last_error": d.last_error,
                     "delivered_at": iso(d.delivered_at) if d.delivered_at else None} for d in s.scalars(q)]

    def replay(self, *, stream_id: str | None = None, tenant: str | None = None) -> int:
        """Dead letters back to pending, due now (after the receiver was fixed); returns how many."""
        with self.session() as s:
            q = update(WebhookDelivery).where(WebhookDelivery.state == "dead")
            if tenant is not None:
                q = q.where(WebhookDelivery.stream_id.in_(select(Stream.id).where(Stream.tenant == tenant)))
            if stream_id is not None:
                q = q.where(WebhookDelivery.stream_id == stream_id)
            n = s.execute(q.values(state="pending", attempts=0, next_attempt_at=utcnow())).rowcount
            s.commit()
            return int(n)
