"""Service routes: liveness, readiness (models loaded, database writable), Prometheus metrics (admin key or
the metrics token)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from faceledger import __version__
from faceledger.api import schemas as S
from faceledger.api.deps import Pool, Service, Token, authenticate, in_thread, settings_of
from faceledger.api.errors import responses
from faceledger.errors import FaceledgerError

if TYPE_CHECKING:
    from faceledger.pipeline.engine import FaceEngine

router = APIRouter(tags=["service"])


def model_id_or_none(engine: FaceEngine) -> str | None:
    """The engine's model id, from the model files' hashes (cached by file and mtime): no model is loaded. None
    when a model file cannot be read (readiness names the file)."""
    try:
        return engine.model_id
    except FaceledgerError:
        return None


@router.get("/v1/health", response_model=S.Health)
async def health(faceledger: Service) -> S.Health:
    """Alive: the version, the model profile and its model id (no model is loaded to tell it). Needs no key."""
    model_id = await in_thread(model_id_or_none, faceledger.engine)
    return S.Health(status="ok", version=__version__, profile=faceledger.engine.profile.name, model_id=model_id)


@router.get("/v1/ready", response_model=S.Health, responses=responses(500, 503, 507))
async def ready(faceledger: Service, pool: Pool) -> S.Health:
    """Ready to serve: the database takes writes (507 STORAGE_FULL when the disk is full, 503 otherwise) and
    the models are loaded."""
    await in_thread(faceledger.check_storage)
    engine = faceledger.engine
    await pool.run(engine.load)
    return S.Health(status="ready", version=__version__, profile=engine.profile.name, model_id=engine.model_id)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}} | responses(401, 403, 429))
async def prometheus(request: Request, faceledger: Service, token: Token) -> Response:
    """Prometheus metrics. Gallery sizes are labelled by opaque collection ids, requests by route template.
    Needs an admin key, or `Authorization: Bearer <FACELEDGER_METRICS_TOKEN>` when that is set."""
    expected = settings_of(request).metrics_token
    if not (token and expected and hmac.compare_digest(token.encode(), expected.encode())):
        (await authenticate(request, token)).require("admin")
    await in_thread(faceledger.refresh_metrics)
    return Response(generate_latest(faceledger.metrics.registry), media_type=CONTENT_TYPE_LATEST)
