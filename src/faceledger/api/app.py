"""FastAPI application: versioned routes under /v1, API keys, one JSON error shape.

Only wiring: the operations layer (``Faceledger``), its start-up, retention schedule and
shutdown, the request middleware (request context, body limit), the guard on refused
authentications and the schedule that records their counts, the error handlers and the
routers. Routes live in ``faceledger.api.routes``; another front end or extension adds its
own with ``app.include_router``.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from faceledger import __version__
from faceledger.api import docs, errors
from faceledger.api import console
from faceledger.api.compat import compreface, rekognition
from faceledger.api.deps import record_pending_refusals
from faceledger.api.routes import ROUTERS
from faceledger.api.runtime import BodyLimit, HttpMetrics, InferencePool, RequestContext
from faceledger.config import Settings, get_settings
from faceledger.service import Faceledger
from faceledger.service.guardrails import RefusedAuthentications
from faceledger.service.streams import StreamService

log = logging.getLogger("faceledger.api")

DESCRIPTION = ("Accountable face recognition: detection, 1:1 verification with calibrated FMR, "
               "1:N open-set identification, gallery management. Authenticate with an API key "
               "(`Authorization: Bearer fl_...` or `X-API-Key`).")


async def retention_loop(faceledger: Faceledger, pool: InferencePool, interval: float) -> None:
    """Erase what is due (expired consent, lapsed retention) at start-up and then every ``interval`` s."""
    while True:
        try:
            erased = await pool.run(faceledger.run_retention)
            if erased:
                log.info("retention erased %d subjects", len(erased))
        except Exception:  # keep serving; the next round tries again
            log.exception("retention run failed")
        await anyio.sleep(interval)


async def refusals_loop(app: FastAPI, interval: float) -> None:
    """Every ``interval``: record the counts of refused authentications whose minute has passed, seal the
    audit chain when records have waited unsealed, and record changes a dead process left without one."""
    faceledger: Faceledger = app.state.faceledger
    while True:
        await anyio.sleep(interval)
        try:
            await record_pending_refusals(app)
            await anyio.to_thread.run_sync(faceledger.maintain)
        except Exception:  # keep serving; the next round tries again
            log.exception("periodic upkeep failed")


def create_app(settings: Settings | None = None, faceledger: Faceledger | None = None) -> FastAPI:
    """The HTTP API over ``faceledger`` (built from ``settings`` when not given)."""
    if faceledger is None:
        faceledger = Faceledger(settings or get_settings())
    settings = settings or faceledger.settings
    if not faceledger.audit.enabled:
        log.warning("THE AUDIT LOG IS OFF (FACELEDGER_AUDIT_ENABLED=false): operations are not recorded")
    pool = InferencePool(settings.workers, settings.max_queue, settings.queue_timeout)
    http_metrics = HttpMetrics.on(faceledger.metrics.registry)
    http_metrics.watch(pool)
    guard = RefusedAuthentications(settings.auth_failures_per_minute)
    streams = StreamService(faceledger)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        report = faceledger.startup()  # models load, vectors are checked against the database, before serving
        log.info("gallery index check: %s", report)
        streams.start()  # webhook deliveries, and the live streams this server was watching
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(retention_loop, faceledger, pool, settings.retention_interval)
                tasks.start_soon(refusals_loop, app, guard.window_s)
                yield
                tasks.cancel_scope.cancel()
        finally:
            try:
                await record_pending_refusals(app, everything=True)
            except Exception:
                log.exception("recording refused authentications failed")
            streams.close()
            faceledger.close()

    # docs_url/redoc_url off: FastAPI's own pages load Swagger UI and ReDoc from a CDN; ``docs`` serves them offline
    app = FastAPI(title="faceledger", version=__version__, lifespan=lifespan, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    app.state.faceledger, app.state.pool, app.state.settings = faceledger, pool, settings
    app.state.auth_guard = guard
    app.state.streams = streams
    app.state.engine = faceledger.engine  # `faceledger serve` loads it before listening
    app.add_middleware(BodyLimit)  # every body counted as it arrives (routes with images allow more)
    app.add_middleware(RequestContext, metrics=http_metrics)
    errors.install(app)
    docs.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(rekognition.router)  # POST /: Rekognition's JSON protocol
    app.include_router(compreface.router)  # /api/v1/...: CompreFace's REST API
    app.mount("/console/static", console.static, name="console-static")  # htmx, the stylesheet, the webcam script
    app.include_router(console.router)  # /console: the web console
    return app
