"""Guardrails against bulk searching: per-key rate limits and hourly quotas (in this process's memory)."""

from __future__ import annotations

import threading
import time

from faceledger.errors import RateLimited


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1:
                retry = (1 - tokens) / self.rate
                self._buckets[key] = (tokens, now)
                raise RateLimited(f"identification rate limit of {self.capacity:g} per minute reached",
                                  retry_after_s=round(retry, 2))
            self._buckets[key] = (tokens - 1, now)


class HourlyQuota:
    """At most N identifications per key in any clock hour (a tenant guardrail against bulk searching)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_hour: int) -> None:
        hour = int(time.time() // 3600)
        with self._lock:
            used = self._counts.get((key, hour), 0)
            if used >= per_hour:
                raise RateLimited(f"this key's quota of {per_hour} identifications per hour is used up",
                                  retry_after_s=3600 - time.time() % 3600, quota=per_hour)
            self._counts = {k: v for k, v in self._counts.items() if k[1] == hour}
            self._counts[(key, hour)] = used + 1
