"""What routes depend on, in one module: the service, the inference pool, the caller.

Audited routes run as ``async with operation(request, token, "identify", collection=...) as op``:
the request becomes an ``Actor`` (``Faceledger.authenticate``) and is authorized before any of
its body is read; then the body is parsed with ``op.body`` (within the body limit of its model)
and the service is called with ``op.run`` (inference pool) or ``op.call`` (a worker thread). A
refusal before the service is reached (no or bad key, a bad body, a full queue) is recorded
once with ``Faceledger.refuse``; once the service is reached it records its own outcome, so the
API never writes a second record. Refused authentications are throttled per client address and
recorded at most once a minute per address (``RefusedAuthentications``). Read-only routes depend
on ``Caller`` (authentication only, not audited) and call the service with ``in_thread``.

Nothing here touches the database on the event loop: authentication, every service call and
every refusal record run in worker threads, so a slow query never stalls other requests.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from faceledger.api.inputs import parse_body
from faceledger.api.runtime import InferencePool
from faceledger.gallery.storage import storage_error
from faceledger.config import Settings
from faceledger.errors import RateLimited, Unauthorized
from faceledger.service import Actor, Faceledger
from faceledger.service.faceledger import OPERATION_SCOPES
from faceledger.service.guardrails import RefusedAuthentications

Body = TypeVar("Body", bound=BaseModel)
T = TypeVar("T")


def get_faceledger(request: Request) -> Faceledger:
    return request.app.state.faceledger


def get_pool(request: Request) -> InferencePool:
    return request.app.state.pool


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def auth_guard(request: Request) -> RefusedAuthentications:
    return request.app.state.auth_guard


Service = Annotated[Faceledger, Depends(get_faceledger)]
Pool = Annotated[InferencePool, Depends(get_pool)]


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (database and file work stays off the event loop); a full
    disk comes out as StorageFull."""
    return await _storage_errors(anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs)))


async def _storage_errors(work: Awaitable[T]) -> T:
    """``await work``, with a full or unavailable disk raised as its typed error."""
    try:
        return await work
    except Exception as exc:
        full = storage_error(exc)
        if full is None:
            raise
        raise full from exc


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


async def authenticate(request: Request, token: str | None,
                       via: Callable[[], Awaitable[Actor]] | None = None) -> Actor:
    """The actor of the presented key (or of ``via``, another front end's authentication: a SigV4 signature, a
    CompreFace ``x-api-key``). A presented credential that is refused counts against the client address: beyond its
    limit, RATE_LIMITED instead of UNAUTHORIZED (a valid key from there still works)."""
    who = anonymous(request)
    try:
        if via is not None:
            return await via()
        return await in_thread(get_faceledger(request).authenticate, token, request_id=who.request_id,
                               client=who.client)
    except Unauthorized as exc:
        if exc.details.get("reason") != "missing":  # something was presented, and refused
            auth_guard(request).failed(who.client)
        raise


async def authenticated(request: Request, token: Token) -> Actor:
    """The caller of a read-only route (authenticated, not audited)."""
    return await authenticate(request, token)


Caller = Annotated[Actor, Depends(authenticated)]


# ------------------------------------------------------------------ refusals
def record_refusal(faceledger: Faceledger, operation: str, actor: Actor, exc: Exception, *,
                   decision: str | None = None, collection: str | None = None,
                   subject_ids: Sequence[str] = ()) -> None:
    """``Faceledger.refuse``; ``decision`` for a record that stands for several refusals."""
    faceledger.refuse(operation, actor, exc, collection=collection, subject_ids=subject_ids, decision=decision)


async def record_pending_refusals(app: FastAPI, *, everything: bool = False) -> int:
    """Record the refused authentications counted but not yet recorded whose minute has passed (all of them
    with ``everything``): one record per address. Returns how many records were written."""
    faceledger: Faceledger = app.state.faceledger
    due = app.state.auth_guard.due(everything=everything)
    for pending in due:
        actor = Actor(tenant=None, client=pending.address)
        await in_thread(record_refusal, faceledger, pending.operation, actor,
                        Unauthorized("refused authentications, recorded together"), decision=pending.decision)
    return len(due)


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
        self.authenticated = False

    async def body(self, model: type[Body]) -> tuple[Body, dict]:
        """The multipart or JSON body: (validated fields, {image field: bytes or [bytes]}), read within the
        body limit of ``model``. The body's ``reference`` (a case number), if any, goes into the actor and so
        into the audit record."""
        settings = settings_of(self.request)
        params, images = await parse_body(self.request, model, settings.max_image_bytes,
                                          settings.max_images_per_request)
        self.actor = self.actor.with_reference(getattr(params, "reference", None))
        return params, images

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the service in the inference pool (503 when it is full)."""
        return await _storage_errors(self.pool.run(functools.partial(fn, *args, **kwargs)))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the service in a worker thread outside the inference pool (database work, slow work that is
        not inference)."""
        return await in_thread(fn, *args, **kwargs)

    async def refused(self, exc: Exception) -> None:
        """Record ``exc`` as this operation's refusal unless the service already recorded it. A refused
        authentication is recorded at most once a minute per client address, the count carried along."""
        if getattr(exc, "audited", False):
            return
        decision = None
        if not self.authenticated and isinstance(exc, (Unauthorized, RateLimited)):
            record = auth_guard(self.request).refused(self.actor.client, self.name)
            if record is None:  # counted: the next record of this address says how many
                exc.audited = True
                return
            decision = record.decision
        await in_thread(record_refusal, self.faceledger, self.name, self.actor, exc, decision=decision,
                        collection=self.collection, subject_ids=self.subject_ids)


@asynccontextmanager
async def operation(request: Request, token: str | None, name: str, *, collection: str | None = None,
                    subject_ids: Sequence[str] = (),
                    via: Callable[[Operation], Awaitable[Actor]] | None = None) -> AsyncIterator[Operation]:
    """Authenticate (the key, or ``via(op)``) and authorize, then run one audited operation: exactly one audit
    record, done or refused (refused authentications: at most one a minute per address). No body is read before
    authorization (except by an authentication that signs the body)."""
    op = Operation(request, name, collection, subject_ids)
    try:
        op.actor = await authenticate(request, token, via=(lambda: via(op)) if via is not None else None)
        op.authenticated = True
        if name in OPERATION_SCOPES:  # an operation a front end does not know is refused there, under its name
            op.faceledger.authorize(op.actor, name)  # a key without the scope is told so before its body is read
        op.actor.check_collection(collection)
        yield op
    except Exception as exc:
        await op.refused(exc)
        raise
