"""The change feed's writer: the rows every change of faces adds in its own transaction (see ``FaceChange``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert
from sqlalchemy.orm import Session

from faceledger.gallery.db import advisory_xact_lock
from faceledger.gallery.schema import FaceChange, utcnow

ADD, REMOVE, DROP = "add", "remove", "drop"
FEED_LOCK = int.from_bytes(b"fl-feed\0", "big")  # PostgreSQL advisory lock key of the change feed's writers


def record_changes(s: Session, collection_id: int, op: str, face_ids: Sequence[int] = ()) -> None:
    """Add the change feed's rows for a change, in the transaction that makes it (see ``FaceChange``).

    On PostgreSQL the transaction first takes the feed's advisory lock (held to its commit), so feed
    numbers are given in commit order and a follower never skips a change that commits late.
    """
    if op != DROP and not len(face_ids):
        return
    advisory_xact_lock(s, FEED_LOCK)
    now = utcnow()
    rows = ([{"collection_id": collection_id, "face_id": None, "op": DROP, "at": now}] if op == DROP else
            [{"collection_id": collection_id, "face_id": int(f), "op": op, "at": now} for f in face_ids])
    s.execute(insert(FaceChange), rows)
