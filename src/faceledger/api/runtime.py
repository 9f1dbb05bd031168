"""Service runtime: a bounded inference pool, per-key rate limits, Prometheus metrics."""

from __future__ import annotations

import threading
import time

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from faceledger.errors import FaceledgerError


class Overloaded(FaceledgerError):
    code = "OVERLOADED"
    http_status = 503


class RateLimited(FaceledgerError):
    code = "RATE_LIMITED"
    http_status = 429


class InferencePool:
    """At most ``workers`` inferences at once, at most ``max_queue`` waiting; beyond that, 503.

    Model inference runs in threads (ONNX Runtime and dlib release the GIL), so the event
    loop keeps serving while faces are processed.
    """

    def __init__(self, workers: int, max_queue: int, queue_timeout: float) -> None:
        self.limiter = anyio.CapacityLimiter(workers)
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.waiting = 0

    async def run(self, fn, *args):
        if self.waiting >= self.max_queue:
            raise Overloaded("the service is at capacity; retry shortly", queue=self.waiting)
        self.waiting += 1
        try:
            with anyio.fail_after(self.queue_timeout):
                await self.limiter.acquire()
        except TimeoutError:
            raise Overloaded(f"no worker became free within {self.queue_timeout:g} s; retry shortly") from None
        finally:
            self.waiting -= 1
        try:
            return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.limiter.release()


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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("faceledger_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("faceledger_request_seconds", "HTTP request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.faces = Counter("faceledger_faces_processed_total", "Faces detected in requests", ["operation"],
                             registry=self.registry)
        self.gallery_faces = Gauge("faceledger_gallery_faces", "Enrolled faces", ["tenant", "collection"],
                                   registry=self.registry)
        self.gallery_subjects = Gauge("faceledger_gallery_subjects", "Enrolled subjects", ["tenant", "collection"],
                                      registry=self.registry)
        self.queue = Gauge("faceledger_inference_waiting", "Requests waiting for an inference worker",
                           registry=self.registry)
