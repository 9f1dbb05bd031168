"""Guardrails: per-key rate limits and hourly quotas against bulk searching (counted in the database, so once
across every process and host that shares it), per-address throttling and aggregated audit records of refused
authentications (in this process's memory), bounds on metadata."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from faceledger.errors import InvalidArgument, RateLimited


class Counter(Protocol):
    """Counts uses per (name, window) up to a limit, atomically: the SQL store's ``count_use`` (shared by every
    process on the database) or :class:`MemoryCounter`."""

    def __call__(self, name: str, window: int, limit: int) -> bool:
        """Count one use and return True, or return False (counting nothing) when ``limit`` is reached."""


class MemoryCounter:
    """Counters in this process's memory (one process only; the service uses the SQL store's)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, window: int, limit: int) -> bool:
        with self._lock:
            used = self._counts.get((name, window), 0)
            if used >= limit:
                return False
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= window - 1}
            self._counts[(name, window)] = used + 1
            return True


class RateLimiter:
    """At most ``per_minute`` requests per key in each clock minute, counted once across every process that shares
    the counter (a fixed window: the count starts again at each minute)."""

    def __init__(self, per_minute: int, counter: Counter | None = None, clock: Callable[[], float] = time.time) -> None:
        self.capacity = per_minute
        self.counter = counter or MemoryCounter()
        self.clock = clock

    def take(self, key: str) -> None:
        now = self.clock()
        if not self.counter(f"minute:{key}", int(now // 60), self.capacity):
            raise RateLimited(f"identification rate limit of {self.capacity:g} per minute reached",
                              retry_after_s=round(60 - now % 60, 2))


class HourlyQuota:
    """At most N identifications per key in any clock hour (a tenant guardrail against bulk searching), counted
    once across every process that shares the counter."""

    def __init__(self, counter: Counter | None = None, clock: Callable[[], float] = time.time) -> None:
        self.counter = counter or MemoryCounter()
        self.clock = clock

    def take(self, key: str, per_hour: int) -> None:
        now = self.clock()
        if not self.counter(f"hour:{key}", int(now // 3600), per_hour):
            raise RateLimited(f"this key's quota of {per_hour} identifications per hour is used up",
                              retry_after_s=3600 - now % 3600, quota=per_hour)


@dataclass(frozen=True)
class RefusalRecord:
    """One audit record standing for ``count`` refused authentications from ``address`` (``since``: the time of
    the address's previous record, None when there is none or nothing was left unrecorded)."""

    address: str | None
    operation: str
    count: int
    since: str | None

    @property
    def decision(self) -> str | None:
        return None if self.since is None else f"{self.count} refused authentications since {self.since}"


class RefusedAuthentications:
    """Refused authentications per client address, whatever the front end.

    * Guessing keys is throttled: after ``per_minute`` refused keys from one address within a window of
      ``window_s`` seconds, further refused keys from it get RATE_LIMITED until the window has passed. Only
      refusals are counted (``failed``), so a valid key from the same address keeps working.
    * Refusals are recorded in the audit log at most once per address per window (``refused``): the next
      record says how many were refused since the previous one; ``due`` hands out counts whose window has
      passed with no further refusal, so that none is lost.

    At most ``max_addresses`` addresses are tracked one by one; beyond that, new addresses share one entry
    (address ``"*"``) until stale ones are dropped.
    """

    OTHERS = "*"

    def __init__(self, per_minute: int = 20, window_s: float = 60.0, *, max_addresses: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: dict[str | None, list[float]] = {}  # address -> [window start, refused keys]
        self._records: dict[str | None, _Recorded] = {}
        self._lock = threading.Lock()

    def failed(self, address: str | None) -> None:
        """Count a presented key that was refused; RateLimited once the address is over its limit."""
        now = self.clock()
        with self._lock:
            address = self._slot(self._failures, address, now)
            start, count = self._failures.get(address, (now, 0))
            if now - start >= self.window_s:
                start, count = now, 0
            self._failures[address] = [start, count + 1]
            if count >= self.per_minute:
                raise RateLimited(f"too many refused API keys from this address (limit {self.per_minute} a "
                                  f"minute); retry later", retry_after_s=round(self.window_s - (now - start), 2),
                                  limit=self.per_minute)

    def refused(self, address: str | None, operation: str) -> RefusalRecord | None:
        """A refused authentication: the record to write now, or None when the address already has a record
        in this window (then it is counted, and the next record of the address carries it)."""
        now = self.clock()
        with self._lock:
            address = self._slot(self._records, address, now)
            seen = self._records.get(address)
            if seen is not None and now - seen.at < self.window_s:
                seen.pending += 1
                seen.operation = operation
                return None
            pending = seen.pending if seen is not None else 0
            since = seen.wall if pending else None
            self._records[address] = _Recorded(now, _now_iso(), 0, operation)
            return RefusalRecord(address, operation, pending + 1, since)

    def due(self, *, everything: bool = False) -> list[RefusalRecord]:
        """Counts left unrecorded whose window has passed (all of them with ``everything``, e.g. at shutdown):
        the records to write now."""
        now = self.clock()
        out = []
        with self._lock:
            for address, seen in self._records.items():
                if seen.pending and (everything or now - seen.at >= self.window_s):
                    out.append(RefusalRecord(address, seen.operation, seen.pending, seen.wall))
                    seen.at, seen.wall, seen.pending = now, _now_iso(), 0
        return out

    def _slot(self, table: dict, address: str | None, now: float) -> str | None:
        """The entry ``address`` is counted under (dropping stale entries when the table is full)."""
        if address in table or len(table) < self.max_addresses:
            return address
        if table is self._failures:
            stale = [a for a, (start, _) in table.items() if now - start >= self.window_s]
        else:
            stale = [a for a, seen in table.items() if not seen.pending and now - seen.at >= self.window_s]
        for a in stale:
            del table[a]
        return address if len(table) < self.max_addresses else self.OTHERS


@dataclass
class _Recorded:
    at: float  # clock() of the address's last record
    wall: str  # and its time of day
    pending: int  # refusals since, not yet recorded
    operation: str  # the last refused operation


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class MetadataLimits:
    """Bounds on a subject's metadata, for every front end: at most ``max_keys`` keys of at most
    ``max_key_chars`` characters; values are strings (at most ``max_value_chars`` characters), 64-bit
    integers, finite numbers, booleans or null; at most ``max_total_bytes`` bytes as compact UTF-8 JSON."""

    max_keys = 64
    max_key_chars = 64
    max_value_chars = 1024
    max_total_bytes = 16 * 1024

    @classmethod
    def check(cls, metadata: dict | None) -> None:
        """Refuse (InvalidArgument) metadata outside the bounds."""
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            raise InvalidArgument("metadata is an object of keys and values", field="metadata")
        if len(metadata) > cls.max_keys:
            raise InvalidArgument(f"metadata has at most {cls.max_keys} keys", field="metadata")
        for key, value in metadata.items():
            if not isinstance(key, str) or len(key) > cls.max_key_chars:
                raise InvalidArgument(f"metadata keys are text of at most {cls.max_key_chars} characters",
                                      field="metadata")
            cls.check_value(key, value)
        if cls.size(metadata) > cls.max_total_bytes:
            raise InvalidArgument(f"metadata is at most {cls.max_total_bytes} bytes as JSON", field="metadata")

    @classmethod
    def check_value(cls, key: str, value: object) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, str):
            if len(value) > cls.max_value_chars:
                raise InvalidArgument(f"metadata '{key}' is over {cls.max_value_chars} characters", field="metadata")
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise InvalidArgument(f"metadata '{key}' does not fit 64 bits", field="metadata")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidArgument(f"metadata '{key}' is not a finite number", field="metadata")
        else:
            raise InvalidArgument(f"metadata '{key}' must be text, a number, true/false or null", field="metadata")

    @staticmethod
    def size(metadata: dict) -> int:
        return len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode())
