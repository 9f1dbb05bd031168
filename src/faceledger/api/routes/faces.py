"""Faces in images: detection, and 1:1 comparison of two images."""

from __future__ import annotations

from fastapi import APIRouter, Request

from faceledger.api import schemas as S
from faceledger.api.deps import Token, operation
from faceledger.api.errors import AUTH_ERRORS, responses
from faceledger.api.inputs import openapi_body

router = APIRouter(tags=["faces"])


@router.post("/v1/detect", response_model=S.DetectResponse, responses=AUTH_ERRORS | responses(413, 415),
             openapi_extra=openapi_body(S.DetectBody))
async def detect(request: Request, token: Token):
    """Detect faces: boxes, landmarks, confidence and quality with named reasons. Scope: detect."""
    async with operation(request, token, "detect") as op:
        _, images = await op.body(S.DetectBody)
        analysis = await op.run(op.faceledger.detect, op.actor, images["image"])
    return analysis.to_dict()


@router.post("/v1/compare", response_model=S.CompareResponse, responses=AUTH_ERRORS | responses(409, 413, 415),
             openapi_extra=openapi_body(S.CompareBody))
async def compare_images(request: Request, token: Token):
    """Compare the faces of two images (1:1): similarity, calibrated FMR, decision at `fmr`. An image with several
    faces needs `face_a` / `face_b` to say which (0 = largest). Scope: verify."""
    async with operation(request, token, "compare") as op:
        params, images = await op.body(S.CompareBody)
        result = await op.run(op.faceledger.compare, op.actor, images["image_a"], images["image_b"],
                              target_fmr=params.fmr, face_a=params.face_a, face_b=params.face_b)
    return {"model_id": op.faceledger.engine.model_id, **result.to_dict()}
