"""FastAPI application: versioned routes under /v1, API keys, one JSON error shape.

Thin by design: every route authenticates, checks a scope, parses its body and calls the
same Gallery / FaceEngine functions as the CLI.
"""


import datetime as dt
import json
import logging
from typing import Any
import time
from contextlib import asynccontextmanager
from typing import Annotated

import uuid
from contextlib import asynccontextmanager as _acm

import anyio
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceledger import __version__
from faceledger.access.keys import KeyStore, Principal
from faceledger.api import schemas as S
from faceledger.api.inputs import openapi_body, parse_body
from faceledger.api.runtime import HourlyQuota, InferencePool, Metrics, RateLimiter
from faceledger.audit.context import Actor, audited
from faceledger.audit.log import AuditLog
from faceledger.config import Settings, get_settings
from faceledger.errors import FaceledgerError, NotFound
from faceledger.gallery.records import Consent, iso
from faceledger.gallery.service import Gallery
from faceledger.matching.compare import Template, compare
from faceledger.pipeline.engine import FaceEngine

log = logging.getLogger("faceledger.api")
PathName = Annotated[str, Query(min_length=1, max_length=128)]


def _errors(*statuses: int) -> dict:
    return {s: {"model": S.ErrorResponse} for s in statuses}


AUTH_ERRORS = _errors(401, 403, 422, 429, 503)


def _error(status: int, code: str, message: str, **details) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = FaceEngine(settings)
    gallery = Gallery(settings, engine)
    keys = KeyStore(gallery.session)
    audit = AuditLog.from_settings(settings, gallery.session)
    if not audit.enabled:
        log.warning("THE AUDIT LOG IS OFF (FACELEDGER_AUDIT_ENABLED=false): operations are not recorded")
    pool = InferencePool(settings.workers, settings.max_queue, settings.queue_timeout)
    limiter = RateLimiter(settings.identify_per_minute)
    hourly = HourlyQuota()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.load()  # a missing or corrupt model fails at start-up, naming the file
        report = gallery.startup()  # the index is checked against the database before serving
        log.info("gallery index check: %s", report)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(retention_loop)
            yield
            tasks.cancel_scope.cancel()
        audit.checkpoint()
        gallery.close()

    async def retention_loop() -> None:
        """Erase what is due (expired consent, lapsed retention) at start-up and then on schedule."""
        from faceledger.audit.retention import run_retention
        from faceledger.gallery.schema import utcnow

        while True:
            try:
                erased = await pool.run(lambda: run_retention(gallery, audit, utcnow()))
                if erased:
                    log.info("retention erased %d subjects", len(erased))
            except Exception:  # keep serving; the next round tries again
                log.exception("retention run failed")
            await anyio.sleep(settings.retention_interval)

    app = FastAPI(title="faceledger", version=__version__, lifespan=lifespan,
                  description="Accountable face recognition: detection, 1:1 verification with calibrated FMR, "
                              "1:N open-set identification, gallery management. Authenticate with an API key "
                              "(`Authorization: Bearer fl_...` or `X-API-Key`).")
    app.state.engine, app.state.gallery, app.state.keys, app.state.settings = engine, gallery, keys, settings
    app.state.audit = audit

    # ------------------------------------------------------------------ errors: one shape
    @app.exception_handler(FaceledgerError)
    async def _faceledger_error(_: Request, exc: FaceledgerError) -> JSONResponse:
        response = _error(exc.http_status, exc.code, exc.message, **exc.details)
        if exc.http_status == 429 and "retry_after_s" in exc.details:
            response.headers["Retry-After"] = str(max(1, round(exc.details["retry_after_s"])))
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "INVALID_REQUEST", "the request does not match the API schema",
                      errors=[{"loc": [str(x) for x in e["loc"]], "msg": e["msg"]} for e in exc.errors()])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not parse: the same answer as any invalid request
            return _error(422, "INVALID_REQUEST", str(exc.detail))
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        return _error(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "INTERNAL", "internal error; see the server log")

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        request.state.request_id = (request.headers.get("x-request-id") or uuid.uuid4().hex)[:64]
        response = await call_next(request)
        response.headers["X-Request-ID"] = request.state.request_id
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        metrics.requests.labels(name, request.method, str(response.status_code)).inc()
        metrics.latency.labels(name).observe(time.perf_counter() - start)
        return response

    # ------------------------------------------------------------------ auth
    bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer fl_...`")
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def credentials(token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                          key: Annotated[str | None, Depends(api_key_header)]) -> str | None:
        return token.credentials if token else key

    Token = Annotated[str | None, Depends(credentials)]

    @_acm
    async def operation(request: Request, token: str | None, name: str, collection: str | None = None):
        """Authenticate and audit one operation: exactly one record, whether it succeeds or is refused."""
        actor = Actor(request_id=getattr(request.state, "request_id", None),
                      client=request.client.host if request.client else None)
        with audited(audit, name, actor, collection=collection) as entry:
            caller = keys.authenticate(token)
            entry.tenant, entry.key_id, entry.purpose = caller.tenant, caller.key_id, caller.purpose
            yield caller, entry

    async def body(request: Request, model):
        return await parse_body(request, model, settings.max_image_bytes, settings.max_images_per_request)

    # ------------------------------------------------------------------ service
    service = APIRouter(tags=["service"])

    @service.get("/v1/health", response_model=S.Health)
    async def health() -> S.Health:
        return S.Health(status="ok", version=__version__, profile=engine.profile.name)

    @service.get("/v1/ready", response_model=S.Health, responses=_errors(500))
    async def ready() -> S.Health:
        await pool.run(engine.load)
        return S.Health(status="ready", version=__version__, profile=engine.profile.name, model_id=engine.model_id)

    @service.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def prometheus() -> Response:
        for c in gallery.list_all_collections():
            metrics.gallery_faces.labels(c.tenant, c.name).set(c.faces)
            metrics.gallery_subjects.labels(c.tenant, c.name).set(c.subjects)
        metrics.queue.set(pool.waiting)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ faces
    faces = APIRouter(tags=["faces"])

    @faces.post("/v1/detect", response_model=S.DetectResponse, responses=AUTH_ERRORS | _errors(413, 415),
                openapi_extra=openapi_body(S.DetectBody))
    async def detect(request: Request, token: Token):
        """Detect faces: boxes, landmarks, confidence and quality with named reasons. Scope: detect."""
        async with operation(request, token, "detect") as (caller, entry):
            caller.require("detect")
            params, images = await body(request, S.DetectBody)
            entry.reference = params.reference
            analysis = await pool.run(lambda: engine.analyze(images["image"], embed=False))
            metrics.faces.labels("detect").inc(len(analysis))
            entry.decision = f"{len(analysis)} faces"
            return analysis.to_dict()

    @faces.post("/v1/compare", response_model=S.CompareResponse, responses=AUTH_ERRORS | _errors(409, 413, 415),
                openapi_extra=openapi_body(S.CompareBody))
    async def compare_images(request: Request, token: Token):
        """Compare the faces of two images (1:1): similarity, calibrated FMR, decision at `fmr`. Scope: verify."""
        async with operation(request, token, "compare") as (caller, entry):
            caller.require("verify")
            params, images = await body(request, S.CompareBody)
            entry.reference = params.reference
            fa, i = await pool.run(engine.single_face, images["image_a"])
            fb, j = await pool.run(engine.single_face, images["image_b"])
            metrics.faces.labels("compare").inc(2)
            result = compare(Template(fa.templates[i], fa.model_id), Template(fb.templates[j], fb.model_id),
                             gallery.calibration, params.fmr)
            entry.scores, entry.decision = [result.similarity], "match" if result.match else "no match"
            return {"model_id": engine.model_id, **result.to_dict()}

    # ------------------------------------------------------------------ collections
    cols = APIRouter(tags=["collections"])

    @cols.post("/v1/collections", response_model=S.CollectionOut, status_code=201,
               responses=AUTH_ERRORS | _errors(409))
    async def create_collection(spec: S.CollectionCreate, request: Request, token: Token):
        """Create a collection (a named gallery of this tenant). Scope: admin."""
        async with operation(request, token, "collection.create", spec.name) as (caller, entry):
            caller.require("admin")
            return gallery.create_collection(spec.name, tenant=caller.tenant, target_fmr=spec.target_fmr,
                                             require_consent=spec.require_consent, store_crops=spec.store_crops,
                                             retention_days=spec.retention_days).to_dict()

    @cols.get("/v1/collections", response_model=list[S.CollectionOut], responses=AUTH_ERRORS)
    async def list_collections(token: Token):
        """This tenant's collections. Scope: enroll, identify, verify or admin."""
        caller = keys.authenticate(token)
        _any(caller, "enroll", "identify", "verify")
        return [c.to_dict() for c in gallery.list_collections(caller.tenant)]

    @cols.get("/v1/collections/{collection}", response_model=S.CollectionOut, responses=AUTH_ERRORS | _errors(404))
    async def get_collection(collection: str, token: Token):
        caller = keys.authenticate(token)
        _any(caller, "enroll", "identify", "verify")
        return gallery.get_collection(collection, caller.tenant).to_dict()

    @cols.delete("/v1/collections/{collection}", response_model=S.ErasureReceipt,
                 responses=AUTH_ERRORS | _errors(404))
    async def delete_collection(collection: str, request: Request, token: Token):
        """Delete a collection, erasing every subject and template in it. Scope: admin."""
        async with operation(request, token, "collection.delete", collection) as (caller, entry):
            caller.require("admin")
            receipt = gallery.delete_collection(collection, caller.tenant)
            entry.subject_ids, entry.decision = receipt.subject_ids, f"erased {len(receipt.face_ids)} faces"
            return {**receipt.to_dict(), "audit_seq": entry.flush()}

    # ------------------------------------------------------------------ subjects
    subs = APIRouter(tags=["subjects"])

    @subs.post("/v1/collections/{collection}/subjects", response_model=S.SubjectOut, status_code=201,
               responses=AUTH_ERRORS | _errors(404, 409))
    async def create_subject(collection: str, spec: S.SubjectCreate, request: Request, token: Token):
        """Create a subject with metadata and a consent record (faces are enrolled separately). Scope: enroll."""
        async with operation(request, token, "subject.create", collection) as (caller, entry):
            caller.require("enroll")
            entry.subject_ids = [spec.subject_id]
            consent = Consent(**spec.consent.model_dump()) if spec.consent else None
            return gallery.create_subject(collection, spec.subject_id, tenant=caller.tenant,
                                          display_name=spec.display_name, metadata=spec.metadata,
                                          consent=consent).to_dict()

    @subs.get("/v1/collections/{collection}/subjects", response_model=list[S.SubjectOut],
              responses=AUTH_ERRORS | _errors(404))
    async def list_subjects(collection: str, token: Token, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                            offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        caller = keys.authenticate(token)
        caller.require("enroll")
        return [s.to_dict() for s in gallery.list_subjects(collection, tenant=caller.tenant, limit=limit,
                                                             offset=offset)]

    @subs.get("/v1/collections/{collection}/subjects/{subject_id}", response_model=S.SubjectOut,
              responses=AUTH_ERRORS | _errors(404))
    async def get_subject(collection: str, subject_id: str, token: Token):
        """A subject with its faces (never templates). Scope: enroll."""
        caller = keys.authenticate(token)
        caller.require("enroll")
        return gallery.get_subject(collection, subject_id, tenant=caller.tenant).to_dict()

    @subs.delete("/v1/collections/{collection}/subjects/{subject_id}", response_model=S.ErasureReceipt,
                 responses=AUTH_ERRORS | _errors(404))
    async def delete_subject(collection: str, subject_id: str, request: Request, token: Token):
        """Erase a subject: its templates leave the database and the index in this call. Scope: enroll."""
        async with operation(request, token, "erase", collection) as (caller, entry):
            caller.require("enroll")
            entry.subject_ids = [subject_id]
            receipt = gallery.delete_subject(collection, subject_id, tenant=caller.tenant)
            entry.decision = f"erased {len(receipt.face_ids)} faces"
            return {**receipt.to_dict(), "audit_seq": entry.flush()}

    @subs.post("/v1/collections/{collection}/subjects/{subject_id}/faces", response_model=S.SubjectOut,
               status_code=201, responses=AUTH_ERRORS | _errors(404, 409, 413, 415),
               openapi_extra=openapi_body(S.EnrollBody))
    async def enroll(collection: str, subject_id: str, request: Request, token: Token):
        """Enrol one face per image for a subject (created if new); all or nothing. Scope: enroll."""
        async with operation(request, token, "enroll", collection) as (caller, entry):
            caller.require("enroll")
            entry.subject_ids = [subject_id]
            params, images = await body(request, S.EnrollBody)
            entry.reference = params.reference
            consent = None
            if params.consent_basis:
                expires = params.consent_expires_at
                if expires is not None and expires.tzinfo is None:
                    expires = expires.replace(tzinfo=dt.timezone.utc)
                consent = Consent(params.consent_basis, params.consent_reference, None, expires)
            info = await pool.run(lambda: gallery.enroll(collection, subject_id, images["images"],
                                                         tenant=caller.tenant, display_name=params.display_name,
                                                         consent=consent, face=params.face))
            metrics.faces.labels("enroll").inc(len(info.faces))
            entry.decision = f"enrolled {sum(f.created for f in info.faces)} faces"
            return info.to_dict()

    @subs.get("/v1/collections/{collection}/subjects/{subject_id}/faces", response_model=list[S.EnrolledFace],
              responses=AUTH_ERRORS | _errors(404))
    async def list_faces(collection: str, subject_id: str, token: Token):
        caller = keys.authenticate(token)
        caller.require("enroll")
        return [f.to_dict() for f in gallery.get_subject(collection, subject_id, tenant=caller.tenant).faces]

    @subs.delete("/v1/collections/{collection}/subjects/{subject_id}/faces/{face_id}",
                 response_model=S.ErasureReceipt, responses=AUTH_ERRORS | _errors(404))
    async def delete_face(collection: str, subject_id: str, face_id: Annotated[int, Path(ge=1, le=2**62)],
                          request: Request, token: Token):
        async with operation(request, token, "erase", collection) as (caller, entry):
            caller.require("enroll")
            entry.subject_ids = [subject_id]
            receipt = gallery.delete_face(collection, subject_id, face_id, tenant=caller.tenant)
            entry.decision = "erased 1 face"
            return {**receipt.to_dict(), "audit_seq": entry.flush()}

    # ------------------------------------------------------------------ search
    search = APIRouter(tags=["search"])

    @search.post("/v1/collections/{collection}/identify", response_model=S.IdentifyResponse,
                 responses=AUTH_ERRORS | _errors(404, 409, 413, 415), openapi_extra=openapi_body(S.IdentifyBody))
    async def identify(collection: str, request: Request, token: Token):
        """1:N for every face of the image: top-k candidates and an open-set decision. Scope: identify."""
        async with operation(request, token, "identify", collection) as (caller, entry):
            caller.require("identify")
            limiter.take(caller.key_id)
            policy = gallery.tenant_policy(caller.tenant)
            if policy.identify_per_hour:
                hourly.take(caller.key_id, policy.identify_per_hour)
            params, images = await body(request, S.IdentifyBody)
            entry.reference = params.reference
            result = await pool.run(lambda: gallery.identify(
                collection, images["image"], tenant=caller.tenant, top_k=params.top_k, target_fmr=params.fmr,
                max_faces=policy.max_faces_per_search, human_review=policy.human_review))
            metrics.faces.labels("identify").inc(len(result.faces))
            entry.subject_ids = [c.subject_id for f in result.faces for c in f.candidates]
            entry.scores = [c.similarity for f in result.faces for c in f.candidates]
            entry.decision = ",".join(f"match:{f.subject_id}" if f.subject_id else f.decision for f in result.faces)
            return result.to_dict()

    @search.post("/v1/collections/{collection}/subjects/{subject_id}/verify", response_model=S.VerifyResponse,
                 responses=AUTH_ERRORS | _errors(404, 409, 413, 415), openapi_extra=openapi_body(S.VerifyBody))
    async def verify(collection: str, subject_id: str, request: Request, token: Token):
        """1:1 of the image's face against a claimed subject. Scope: verify."""
        async with operation(request, token, "verify", collection) as (caller, entry):
            caller.require("verify")
            entry.subject_ids = [subject_id]
            params, images = await body(request, S.VerifyBody)
            entry.reference = params.reference
            result = await pool.run(lambda: gallery.verify(collection, subject_id, images["image"],
                                                           tenant=caller.tenant, target_fmr=params.fmr,
                                                           face=params.face))
            metrics.faces.labels("verify").inc(1)
            entry.scores, entry.decision = [result.similarity], "match" if result.match else "no match"
            return {"subject_id": subject_id, **result.to_dict()}

    # ------------------------------------------------------------------ audit (admin)
    audit_routes = APIRouter(tags=["audit"])

    @audit_routes.get("/v1/audit", response_model=list[S.AuditRecordOut], responses=AUTH_ERRORS)
    async def query_audit(request: Request, token: Token,
                          subject_id: Annotated[str | None, Query(max_length=256)] = None,
                          key_id: Annotated[str | None, Query(max_length=32)] = None,
                          operation_name: Annotated[str | None, Query(alias="operation", max_length=32)] = None,
                          since: Annotated[dt.datetime | None, Query()] = None,
                          until: Annotated[dt.datetime | None, Query()] = None,
                          limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
                          offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        """This tenant's audit records, by subject (a subject-access query), key, operation, time. Scope: admin."""
        async with operation(request, token, "audit.query") as (caller, entry):
            caller.require("admin")
            entry.subject_ids = [subject_id] if subject_id else []
            rows = audit.query(tenant=caller.tenant, subject_id=subject_id, key_id=key_id, operation=operation_name,
                               since=iso(since), until=iso(until), limit=limit, offset=offset)
            entry.decision = f"{len(rows)} records"
            return rows

    @audit_routes.get("/v1/audit/verify", response_model=S.AuditVerification, responses=AUTH_ERRORS)
    async def verify_audit(request: Request, token: Token):
        """Check the whole hash chain and its HMAC seals; names the first bad record. Scope: admin."""
        async with operation(request, token, "audit.verify") as (caller, entry):
            caller.require("admin")
            result = await anyio.to_thread.run_sync(audit.verify)
            entry.decision = "intact" if result.ok else f"broken at {result.first_bad_seq}"
            return result.to_dict()

    @audit_routes.get("/v1/report", response_model=dict[str, Any], responses=AUTH_ERRORS | _errors(404))
    async def accuracy_report(request: Request, token: Token):
        """The accuracy and fairness report of the running model (from `faceledger report`), for oversight.
        Scope: admin."""
        async with operation(request, token, "report.read") as (caller, entry):
            caller.require("admin")
            path = settings.home / "reports" / f"report-{engine.profile.name}" / "report.json"
            if not path.is_file():
                raise NotFound("no report for the running model yet: run `faceledger report`")
            data = json.loads(path.read_text())
            if data.get("model_id") != engine.model_id:
                raise NotFound("the stored report is for another model: run `faceledger report` again")
            return data

    for router in (service, faces, cols, subs, search, audit_routes):
        app.include_router(router)
    return app


def _any(caller: Principal, *scopes: str) -> None:
    if not (set(scopes) | {"admin"}) & caller.scopes:
        caller.require(scopes[0])
