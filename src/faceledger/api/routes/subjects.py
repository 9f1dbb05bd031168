"""Subjects of a collection and their faces: create, read, enrol, erase."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from faceledger.api import schemas as S
from faceledger.api.deps import Caller, Service, Token, in_thread, operation
from faceledger.api.errors import AUTH_ERRORS, responses
from faceledger.api.inputs import openapi_body
from faceledger.gallery.schema import MAX_ROW_ID
from faceledger.service.consent import consent_record

router = APIRouter(tags=["subjects"])


@router.post("/v1/collections/{collection}/subjects", response_model=S.SubjectOut, status_code=201,
             responses=AUTH_ERRORS | responses(404, 409, 413, 415), openapi_extra=openapi_body(S.SubjectCreate))
async def create_subject(collection: str, request: Request, token: Token):
    """Create a subject with metadata and a consent record (faces are enrolled separately). Scope: enroll."""
    async with operation(request, token, "subject.create", collection=collection) as op:
        spec, _ = await op.body(S.SubjectCreate)
        op.subject_ids = [spec.subject_id]
        c = spec.consent
        consent = consent_record(c.basis, c.reference, c.expires_at, c.given_at) if c else None
        info = await op.call(op.faceledger.create_subject, op.actor, collection, spec.subject_id,
                             display_name=spec.display_name, metadata=spec.metadata, consent=consent)
    return info.to_dict()


@router.get("/v1/collections/{collection}/subjects", response_model=list[S.SubjectSummary],
            responses=AUTH_ERRORS | responses(404))
async def list_subjects(collection: str, caller: Caller, faceledger: Service,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
    """A page of the collection's subjects with how many faces each has (their faces: one subject's details).
    Scope: enroll."""
    subjects = await in_thread(faceledger.list_subjects, caller, collection, limit=limit, offset=offset)
    return [s.to_dict(summary=True) for s in subjects]


@router.get("/v1/collections/{collection}/subjects/{subject_id}", response_model=S.SubjectOut,
            responses=AUTH_ERRORS | responses(404))
async def get_subject(collection: str, subject_id: str, caller: Caller, faceledger: Service):
    """A subject with its faces (never templates). Scope: enroll."""
    return (await in_thread(faceledger.get_subject, caller, collection, subject_id)).to_dict()


@router.delete("/v1/collections/{collection}/subjects/{subject_id}", response_model=S.ErasureReceipt,
               responses=AUTH_ERRORS | responses(404))
async def delete_subject(collection: str, subject_id: str, request: Request, token: Token):
    """Erase a subject: its templates leave the database and the index in this call. Scope: enroll."""
    async with operation(request, token, "erase", collection=collection, subject_ids=[subject_id]) as op:
        receipt = await op.call(op.faceledger.erase_subject, op.actor, collection, subject_id)
    return receipt.to_dict()


@router.post("/v1/collections/{collection}/subjects/{subject_id}/faces", response_model=S.SubjectOut,
             status_code=201, responses=AUTH_ERRORS | responses(404, 409, 413, 415),
             openapi_extra=openapi_body(S.EnrollBody))
async def enroll(collection: str, subject_id: str, request: Request, token: Token):
    """Enrol one face per image for a subject (created if new); all or nothing. Scope: enroll."""
    async with operation(request, token, "enroll", collection=collection, subject_ids=[subject_id]) as op:
        params, images = await op.body(S.EnrollBody)
        consent = consent_record(params.consent_basis, params.consent_reference, params.consent_expires_at)
        info = await op.run(op.faceledger.enroll, op.actor, collection, subject_id, images["images"],
                            display_name=params.display_name, consent=consent, face=params.face)
    return info.to_dict()


@router.get("/v1/collections/{collection}/subjects/{subject_id}/faces", response_model=list[S.EnrolledFace],
            responses=AUTH_ERRORS | responses(404))
async def list_faces(collection: str, subject_id: str, caller: Caller, faceledger: Service):
    return [f.to_dict() for f in await in_thread(faceledger.list_faces, caller, collection, subject_id)]


@router.delete("/v1/collections/{collection}/subjects/{subject_id}/faces/{face_id}",
               response_model=S.ErasureReceipt, responses=AUTH_ERRORS | responses(404))
async def delete_face(collection: str, subject_id: str, face_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)],
                      request: Request, token: Token):
    async with operation(request, token, "erase", collection=collection, subject_ids=[subject_id]) as op:
        receipt = await op.call(op.faceledger.erase_face, op.actor, collection, subject_id, face_id)
    return receipt.to_dict()
