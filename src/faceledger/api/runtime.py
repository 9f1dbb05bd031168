"""HTTP runtime: a bounded inference pool, the request context middleware and the HTTP metrics.

The HTTP metrics live on the service's Prometheus registry (``Faceledger.metrics.registry``),
labelled by route template (``/v1/collections/{collection}/identify``), never by tenant or
collection name.
"""

from __future__ import annotations

import time
import uuid
import weakref

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceledger.errors import Overloaded


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


class HttpMetrics:
    """Requests, latency and the inference queue, on a given registry (one set per registry)."""

    _on: weakref.WeakKeyDictionary[CollectorRegistry, HttpMetrics] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("faceledger_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=registry)
        self.latency = Histogram("faceledger_request_seconds", "HTTP request latency", ["route"], registry=registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.queue = Gauge("faceledger_inference_waiting", "Requests waiting for an inference worker",
                           registry=registry)

    @classmethod
    def on(cls, registry: CollectorRegistry) -> HttpMetrics:
        """The HTTP metrics of ``registry``, registered once however many apps share it."""
        if registry not in cls._on:
            cls._on[registry] = cls(registry)
        return cls._on[registry]

    def watch(self, pool: InferencePool) -> None:
        self.queue.set_function(lambda: pool.waiting)


class RequestContext:
    """ASGI middleware: a request id (``X-Request-ID`` in, or a new one) in ``request.state`` and on the
    response, and the request counted and timed under its route template."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = (given or uuid.uuid4().hex)[:64]
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
