"""HTTP runtime: a bounded inference pool, the request context and body limit middleware, the HTTP metrics.

The HTTP metrics live on the service's Prometheus registry (``Faceledger.metrics.registry``),
labelled by route template (``/v1/collections/{collection}/identify``), never by tenant or
collection name.
"""

from __future__ import annotations

import re
import time
import uuid
import weakref

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceledger.errors import Overloaded, PayloadTooLarge

JSON_BODY_LIMIT = 64 * 1024  # the body of a request whose route does not ask for more (JSON-only bodies)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


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


class BodyBudget:
    """How many bytes of a request's body may arrive: counted as they arrive (chunked or not), refused with
    PayloadTooLarge (413) as soon as the limit is passed, so an oversize body is never read in full.

    The limit is ``JSON_BODY_LIMIT`` unless the route raises it with ``allow`` before reading the body (a
    route that takes images). A declared ``Content-Length`` over the limit is refused before any is read."""

    def __init__(self, limit: int, declared: int | None) -> None:
        self.limit = limit
        self.declared = declared
        self.received = 0

    def allow(self, limit: int) -> None:
        """This request's limit (before its body is read)."""
        self.limit = limit
        self._check_declared()

    def _check_declared(self) -> None:
        if self.declared is not None and self.declared > self.limit:
            raise PayloadTooLarge(f"the request body is {self.declared} bytes, the limit is {self.limit}",
                                  limit=self.limit)

    def wrap(self, receive: Receive) -> Receive:
        async def counted() -> Message:
            if self.received == 0:
                self._check_declared()
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    raise PayloadTooLarge(f"the request body is over {self.limit} bytes", limit=self.limit)
            return message

        return counted

    @classmethod
    def of(cls, scope: Scope) -> BodyBudget | None:
        return scope.get("state", {}).get("body_budget")


def declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    """ASGI middleware: every request body is read through its ``BodyBudget`` (``scope["state"]``)."""

    def __init__(self, app: ASGIApp, default: int = JSON_BODY_LIMIT) -> None:
        self.app = app
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        budget = BodyBudget(self.default, declared_length(scope))
        scope.setdefault("state", {})["body_budget"] = budget
        await self.app(scope, budget.wrap(receive), send)


class RequestContext:
    """ASGI middleware: a request id (``X-Request-ID`` in when it is 1..64 of ``[A-Za-z0-9._:-]``, or a new one)
    in ``request.state`` and on the response, and the request counted and timed under its route template."""

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
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
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
