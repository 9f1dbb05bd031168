"""Collections: the named galleries of a tenant."""

from __future__ import annotations

from fastapi import APIRouter, Request

from faceledger.api import schemas as S
from faceledger.api.deps import Caller, Service, Token, in_thread, operation
from faceledger.api.errors import AUTH_ERRORS, responses
from faceledger.api.inputs import openapi_body

router = APIRouter(tags=["collections"])


@router.post("/v1/collections", response_model=S.CollectionOut, status_code=201,
             responses=AUTH_ERRORS | responses(409, 413, 415), openapi_extra=openapi_body(S.CollectionCreate))
async def create_collection(request: Request, token: Token):
    """Create a collection (a named gallery of this tenant). Scope: admin."""
    async with operation(request, token, "collection.create") as op:
        spec, _ = await op.body(S.CollectionCreate)
        op.collection = spec.name
        info = await op.call(op.faceledger.create_collection, op.actor, spec.name, target_fmr=spec.target_fmr,
                             target_fpir=spec.target_fpir,
                             require_consent=spec.require_consent, store_crops=spec.store_crops,
                             retention_days=spec.retention_days)
    return info.to_dict()


@router.get("/v1/collections", response_model=list[S.CollectionOut], responses=AUTH_ERRORS)
async def list_collections(caller: Caller, faceledger: Service):
    """This tenant's collections. Scope: enroll, identify, verify or admin."""
    return [c.to_dict() for c in await in_thread(faceledger.list_collections, caller)]


@router.get("/v1/collections/{collection}", response_model=S.CollectionOut, responses=AUTH_ERRORS | responses(404))
async def get_collection(collection: str, caller: Caller, faceledger: Service):
    return (await in_thread(faceledger.get_collection, caller, collection)).to_dict()


@router.patch("/v1/collections/{collection}", response_model=S.CollectionOut,
              responses=AUTH_ERRORS | responses(404, 409, 413, 415), openapi_extra=openapi_body(S.CollectionUpdate))
async def update_collection(collection: str, request: Request, token: Token):
    """Change a collection's policy: `target_fpir` (1:N) and `target_fmr` (1:1); fields left out keep their value.
    The change is audited with both values before and after. Scope: admin."""
    async with operation(request, token, "collection.update", collection=collection) as op:
        spec, _ = await op.body(S.CollectionUpdate)
        info = await op.call(op.faceledger.update_collection, op.actor, collection, target_fpir=spec.target_fpir,
                             target_fmr=spec.target_fmr)
    return info.to_dict()


@router.delete("/v1/collections/{collection}", response_model=S.ErasureReceipt,
               responses=AUTH_ERRORS | responses(404))
async def delete_collection(collection: str, request: Request, token: Token):
    """Delete a collection, erasing every subject and template in it. Scope: admin."""
    async with operation(request, token, "collection.delete", collection=collection) as op:
        receipt = await op.call(op.faceledger.delete_collection, op.actor, collection)
    return receipt.to_dict()
