"""What both compatible front ends share: an audited operation whose caller is authenticated some other way than
faceledger's own key header, and image bytes checked against the limits those services document."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import Request

from faceledger.api.deps import Operation, auth_guard
from faceledger.errors import Unauthorized
from faceledger.service import Actor
from faceledger.service.faceledger import OPERATION_SCOPES

FIVE_MIB = 5 * 1024 * 1024  # both services refuse images above 5 MiB


@asynccontextmanager
async def audited(request: Request, name: str, authenticate: Callable[[Operation], Awaitable[Actor]], *,
                  collection: str | None = None, subject_ids: Sequence[str] = ()) -> AsyncIterator[Operation]:
    """``deps.operation`` with another authentication: exactly one audit record, done or refused (refused
    authentications: at most one a minute per address, counted, and throttled per address)."""
    op = Operation(request, name, collection, subject_ids)
    try:
        try:
            op.actor = await authenticate(op)
        except Unauthorized as exc:
            if exc.details.get("reason") != "missing":  # a presented credential was refused: counted per address
                auth_guard(request).failed(op.actor.client)
            raise
        op.authenticated = True
        if name in OPERATION_SCOPES:  # an unknown operation is refused by its front end, recorded under its name
            op.faceledger.authorize(op.actor, name)
        op.actor.check_collection(collection)
        yield op
    except Exception as exc:
        await op.refused(exc)
        raise
