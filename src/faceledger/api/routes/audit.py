"""Oversight (admin): the audit log, its integrity, the accuracy report of the running model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from faceledger.api import schemas as S
from faceledger.api.deps import Token, operation
from faceledger.api.errors import AUTH_ERRORS, responses
from faceledger.gallery.records import iso
from faceledger.service.consent import instant

router = APIRouter(tags=["audit"])
ISO = {"format": "date-time", "examples": ["2027-12-31T23:59:00+01:00"]}


@router.get("/v1/audit", response_model=list[S.AuditRecordOut], responses=AUTH_ERRORS)
async def query_audit(request: Request, token: Token,
                      subject_id: Annotated[str | None, Query(max_length=256)] = None,
                      key_id: Annotated[str | None, Query(max_length=32)] = None,
                      operation_name: Annotated[str | None, Query(alias="operation", max_length=32)] = None,
                      since: Annotated[str | None, Query(max_length=64, json_schema_extra=ISO)] = None,
                      until: Annotated[str | None, Query(max_length=64, json_schema_extra=ISO)] = None,
                      limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
                      offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
    """This tenant's audit records, by subject (a subject-access query), key, operation, time (ISO 8601, from
    `since` up to `until`; without an offset, UTC). Scope: admin."""
    async with operation(request, token, "audit.query", subject_ids=[subject_id] if subject_id else []) as op:
        # times as ISO 8601 text in UTC (INVALID_ARGUMENT otherwise), as the audit log stores them
        since, until = iso(instant(since, "since")), iso(instant(until, "until"))
        return await op.call(op.faceledger.query_audit, op.actor, subject_id=subject_id, key_id=key_id,
                             operation=operation_name, since=since, until=until, limit=limit, offset=offset)


@router.get("/v1/audit/verify", response_model=S.AuditVerification, responses=AUTH_ERRORS)
async def verify_audit(request: Request, token: Token):
    """Check the whole hash chain and its HMAC seals; names the first bad record. Scope: admin."""
    async with operation(request, token, "audit.verify") as op:
        result = await op.call(op.faceledger.verify_audit, op.actor)
    return result.to_dict()


@router.get("/v1/report", response_model=dict[str, Any], responses=AUTH_ERRORS | responses(404))
async def accuracy_report(request: Request, token: Token):
    """The accuracy and fairness report of the running model (from `faceledger report`), for oversight.
    Scope: admin."""
    async with operation(request, token, "report.read") as op:
        return await op.call(op.faceledger.read_report, op.actor)
