"""Search: 1:N identification in a collection, 1:1 verification against a claimed subject."""

from __future__ import annotations

from fastapi import APIRouter, Request

from faceledger.api import schemas as S
from faceledger.api.deps import Token, operation
from faceledger.api.errors import AUTH_ERRORS, responses
from faceledger.api.inputs import openapi_body

router = APIRouter(tags=["search"])


@router.post("/v1/collections/{collection}/identify", response_model=S.IdentifyResponse,
             responses=AUTH_ERRORS | responses(404, 409, 413, 415), openapi_extra=openapi_body(S.IdentifyBody))
async def identify(collection: str, request: Request, token: Token):
    """1:N for every face of the image: top-k candidates and an open-set decision (match, review or unknown) at
    the collection's target FPIR for its current size. Scope: identify."""
    async with operation(request, token, "identify", collection=collection) as op:
        params, images = await op.body(S.IdentifyBody)
        result = await op.run(op.faceledger.identify, op.actor, collection, images["image"], top_k=params.top_k,
                              target_fpir=params.fpir)
    return result.to_dict()


@router.post("/v1/collections/{collection}/subjects/{subject_id}/verify", response_model=S.VerifyResponse,
             responses=AUTH_ERRORS | responses(404, 409, 413, 415), openapi_extra=openapi_body(S.VerifyBody))
async def verify(collection: str, subject_id: str, request: Request, token: Token):
    """1:1 of the image's face against a claimed subject. Scope: verify."""
    async with operation(request, token, "verify", collection=collection, subject_ids=[subject_id]) as op:
        params, images = await op.body(S.VerifyBody)
        result = await op.run(op.faceledger.verify, op.actor, collection, subject_id, images["image"],
                              target_fmr=params.fmr, face=params.face)
    return {"subject_id": subject_id, **result.to_dict()}
