"""How many faces each collection holds, for every search's open-set policy, without a count(*) per search.

A search's thresholds depend on the collection's size, so each identify needs it. ``count(*)`` walks the
collection's index: 30-55 ms at 1,000,000 faces on SQLite, more than the vector search itself. Instead each
process counts a collection once, in one statement that also reads the change feed's head (one snapshot), and
then adds up the feed's rows for that collection since that head, in one statement that also reads the new head
(each search reads only the changes since the last: every change of faces writes its rows in its own
transaction, see ``FaceChange``). It counts again every
``REFRESH_S`` seconds, so a change that a writer recorded wrongly in the feed cannot skew the size for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from faceledger.gallery.feed import ADD, DROP, REMOVE
from faceledger.gallery.schema import Face, FaceChange

REFRESH_S = 60.0


@dataclass(frozen=True)
class _Count:
    faces: int
    head: int  # the feed's seq the count includes
    counted_at: float  # monotonic time of the last full count


class FaceCounts:
    def __init__(self, session: Callable[[], Session], clock: Callable[[], float] = time.monotonic) -> None:
        self._session = session
        self._clock = clock
        self._counts: dict[int, _Count] = {}
        self._lock = threading.Lock()

    def __call__(self, cid: int) -> int:
        """The collection's faces as of now (committed changes of every process included)."""
        cached = self._counts.get(cid)
        now = self._clock()
        head = select(func.coalesce(func.max(FaceChange.seq), 0)).scalar_subquery()
        with self._session() as s:
            count = None
            if cached is not None and now - cached.counted_at < REFRESH_S:
                since = (FaceChange.seq > cached.head, FaceChange.collection_id == cid)
                delta = (select(func.coalesce(func.sum(case((FaceChange.op == ADD, 1), (FaceChange.op == REMOVE, -1),
                                                            else_=0)), 0)).where(*since).scalar_subquery())
                drops = select(func.count()).select_from(FaceChange).where(*since, FaceChange.op == DROP).scalar_subquery()
                new_head, added, dropped = s.execute(select(head, delta, drops)).one()  # one statement, one snapshot
                if not dropped:  # (a dropped collection: count again)
                    count = _Count(max(cached.faces + int(added), 0), int(new_head), cached.counted_at)
            if count is None:
                faces = select(func.count()).select_from(Face).where(Face.collection_id == cid).scalar_subquery()
                new_head, n = s.execute(select(head, faces)).one()  # the count and the head agree
                count = _Count(int(n), int(new_head), now)
        with self._lock:  # keep the newest of two threads' answers
            current = self._counts.get(cid)
            if current is None or (count.head, count.counted_at) >= (current.head, current.counted_at):
                self._counts[cid] = count
        return count.faces
