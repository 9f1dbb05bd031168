"""What routes depend on, in one module: the service, the inference pool, the caller.

Audited routes run as ``async with operation(request, token, "identify", collection=...) as op``:
the request becomes an ``Actor`` (``Faceledger.authenticate``), the body is parsed with
``op.body``, and the service is called with ``op.run`` (inference pool), ``op.thread`` or
``op.call``. A refusal before the service is reached (no or bad key, a bad body, a full
queue) is recorded once with ``Faceledger.refuse``; once the service is reached it records
its own outcome, so the API never writes a second record. Read-only routes depend on
``Caller`` (authentication only, not audited).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from faceledger.api.inputs import parse_body
from faceledger.api.runtime import InferencePool
from faceledger.config import Settings
from faceledger.service import Actor, Faceledger

Body = TypeVar("Body", bound=BaseModel)
T = TypeVar("T")


def get_faceledger(request: Request) -> Faceledger:
    return request.app.state.faceledger


def get_pool(request: Request) -> InferencePool:
    return request.app.state.pool


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


Service = Annotated[Faceledger, Depends(get_faceledger)]
Pool = Annotated[InferencePool, Depends(get_pool)]

# ------------------------------------------------------------------ credentials
bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer fl_...`")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def credentials(token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                      key: Annotated[str | None, Depends(api_key_header)]) -> str | None:
    """The presented key: ``Authorization: Bearer ...`` or ``X-API-Key``."""
    return token.credentials if token else key


Token = Annotated[str | None, Depends(credentials)]


def anonymous(request: Request) -> Actor:
    """The caller before authentication: no tenant, no key; the request's id and address."""
    return Actor(tenant=None, request_id=getattr(request.state, "request_id", None),
                 client=request.client.host if request.client else None)


async def authenticated(request: Request, token: Token) -> Actor:
    """The caller of a read-only route (authenticated, not audited)."""
    who = anonymous(request)
    return get_faceledger(request).authenticate(token, request_id=who.request_id, client=who.client)


Caller = Annotated[Actor, Depends(authenticated)]


# ------------------------------------------------------------------ audited operations
class Operation:
    """One audited request on its way to the service."""

    def __init__(self, request: Request, name: str, collection: str | None, subject_ids: Sequence[str]) -> None:
        self.request = request
        self.name = name
        self.collection = collection
        self.subject_ids = list(subject_ids)
        self.faceledger = get_faceledger(request)
        self.pool = get_pool(request)
        self.actor = anonymous(request)

    async def body(self, model: type[Body]) -> tuple[Body, dict]:
        """The multipart or JSON body: (validated fields, {image field: bytes or [bytes]}). The body's
        ``reference`` (a case number), if any, goes into the actor and so into the audit record."""
        settings = settings_of(self.request)
        params, images = await parse_body(self.request, model, settings.max_image_bytes,
                                          settings.max_images_per_request)
        self.actor = self.actor.with_reference(getattr(params, "reference", None))
        return params, images

    def _reach(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> Callable[[], T]:
        def call() -> T:
            return fn(*args, **kwargs)

        return call

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the service in the inference pool (503 when it is full)."""
        return await self.pool.run(self._reach(fn, args, kwargs))

    async def thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the service in a worker thread outside the inference pool (slow work that is not inference)."""
        return await anyio.to_thread.run_sync(self._reach(fn, args, kwargs))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the service here (quick database work)."""
        return self._reach(fn, args, kwargs)()

    def refused(self, exc: Exception) -> None:
        """Record ``exc`` as this operation's refusal unless the service already recorded it."""
        if getattr(exc, "audited", False):
            return
        self.faceledger.refuse(self.name, self.actor, exc, collection=self.collection, subject_ids=self.subject_ids)


@asynccontextmanager
async def operation(request: Request, token: str | None, name: str, *, collection: str | None = None,
                    subject_ids: Sequence[str] = ()) -> AsyncIterator[Operation]:
    """Authenticate and run one audited operation: exactly one audit record, done or refused."""
    op = Operation(request, name, collection, subject_ids)
    try:
        op.actor = op.faceledger.authenticate(token, request_id=op.actor.request_id, client=op.actor.client)
        op.faceledger.authorize(op.actor, name)  # a key without the scope is told so before its body is read
        yield op
    except Exception as exc:
        op.refused(exc)
        raise
