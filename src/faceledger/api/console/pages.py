"""The console's pages: every action is one call of the operations layer with the signed-in key's actor, so it leaves
the same audit record as the API (client "console")."""

from __future__ import annotations

import base64
import io
import json

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps

from faceledger.api.console.web import (COOKIE, HERE, Console, page, redirect, same_origin, secure, set_session,
                                        templates)
from faceledger.api.deps import Operation, auth_guard, get_faceledger, in_thread
from faceledger.api.errors import status_of
from faceledger.errors import FaceledgerError, Forbidden, InvalidArgument, Unauthorized
from faceledger.service.consent import consent_record

router = APIRouter(prefix="/console", include_in_schema=False)
static = StaticFiles(directory=str(HERE / "static"))


def _number(value: str, what: str, kind=float):
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(f"{what} must be a number") from None


def _data_url(image: bytes) -> str:
    kind = "png" if image[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(image).decode()}"


# ------------------------------------------------------------------ signing in and out
@router.get("/sign-in")
async def sign_in_form(request: Request) -> Response:
    return secure(templates.TemplateResponse(request, "sign_in.html", {"request": request, "actor": None, "nav": [],
                                                                         "error": None, "csrf": ""}))


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    """Sign in with an API key. Only from the console's own page (a browser says where a form came from: a form
    on another site could otherwise sign a visitor in to someone else's tenant); refusals are recorded and
    throttled per address like any refused key."""
    console = Console(request)
    op = Operation(request, "console.sign_in", None, ())
    try:
        if not same_origin(request):
            raise Forbidden("sign in from the console's own page")
        form = await request.form(max_files=0, max_fields=5)
        key = form.get("api_key")
        try:
            cookie, _, signed = await in_thread(console.faceledger.open_session,
                                                key if isinstance(key, str) else None, **console.who)
        except Unauthorized:
            auth_guard(request).failed(op.actor.client)  # RATE_LIMITED beyond the address's limit
            raise
    except FaceledgerError as exc:
        await op.refused(exc)
        return secure(templates.TemplateResponse(request, "sign_in.html", {"request": request, "actor": None,
                                                                           "nav": [], "csrf": "", "error": exc},
                                                 status_code=status_of(exc.code)))
    lifetime = int(console.faceledger.sessions.lifetime.total_seconds())
    return set_session(redirect("/console/"), request, cookie, lifetime)


@router.post("/sign-out")
@page
async def sign_out(c: Console) -> Response:
    await c.call(c.faceledger.close_session, c.actor, c.request.cookies.get(COOKIE))
    response = redirect("/console/sign-in")
    response.delete_cookie(COOKIE, path="/console")
    return response


# ------------------------------------------------------------------ overview
@router.get("/")
@page
async def overview(c: Console) -> Response:
    collections = await c.call(c.faceledger.list_collections, c.actor)
    recent = chain = None
    if c.actor.has("admin") and c.actor.collection is None:
        recent = await c.call(c.faceledger.recent_operations, c.actor, 15)
        chain = await c.call(c.faceledger.audit_status, c.actor)
    return c.render("overview.html", collections=collections, recent=recent, chain=chain)


# ------------------------------------------------------------------ collections
@router.get("/collections")
@page
async def collections(c: Console) -> Response:
    return c.render("collections.html", collections=await c.call(c.faceledger.list_collections, c.actor))


@router.post("/collections")
@page
async def create_collection(c: Console) -> Response:
    name = await c.field("name")
    await c.call(c.faceledger.create_collection, c.actor, name,
                 target_fpir=_number(await c.field("target_fpir"), "target FPIR"),
                 target_fmr=_number(await c.field("target_fmr"), "target FMR") or 1e-4,
                 require_consent=await c.field("require_consent") == "on",
                 retention_days=_number(await c.field("retention_days"), "retention days", int))
    return redirect(f"/console/collections/{name}")


@router.get("/collections/{collection}")
@page
async def collection(c: Console, collection: str) -> Response:
    search = c.request.query_params.get("q", "").strip() or None
    info = await c.call(c.faceledger.get_collection, c.actor, collection)
    subjects = await c.call(c.faceledger.list_subjects, c.actor, collection, limit=200, search=search)
    policy = await c.call(c.faceledger.gallery.open_set_policy,
                          await c.call(c.faceledger.gallery.collection, collection, c.actor.tenant))
    if c.request.headers.get("hx-request") and c.request.headers.get("hx-target") == "subjects":
        return c.render("_subjects.html", info=info, subjects=subjects)
    return c.render("collection.html", info=info, subjects=subjects, search=search or "", policy=policy)


@router.post("/collections/{collection}/delete")
@page
async def delete_collection(c: Console, collection: str) -> Response:
    if await c.field("confirm") != collection:
        raise InvalidArgument("type the collection's name to confirm its deletion")
    receipt = await c.call(c.faceledger.delete_collection, c.actor, collection)
    return c.render("receipt.html", receipt=receipt, what=f"collection {collection}")


@router.post("/collections/{collection}/attest")
@page
async def attest(c: Console, collection: str) -> Response:
    await c.call(c.faceledger.attest_consent, c.actor, collection, await c.field("basis"),
                 await c.field("reference") or None)
    return redirect(f"/console/collections/{collection}")


# ------------------------------------------------------------------ subjects
@router.post("/collections/{collection}/subjects")
@page
async def enroll(c: Console, collection: str) -> Response:
    subject_id = await c.field("subject_id")
    images = await c.files("images")
    if not images:
        raise InvalidArgument("choose at least one photo (or take one with the webcam)")
    basis = await c.field("consent_basis")
    consent = consent_record(basis, await c.field("consent_reference") or None,
                             await c.field("consent_expires_at") or None) if basis else None
    await c.infer(c.faceledger.enroll, c.actor, collection, subject_id, images,
                  display_name=await c.field("display_name") or None, consent=consent)
    return redirect(f"/console/collections/{collection}/subjects/{subject_id}")


@router.get("/collections/{collection}/subjects/{subject_id}")
@page
async def subject(c: Console, collection: str, subject_id: str) -> Response:
    info = await c.call(c.faceledger.get_subject, c.actor, collection, subject_id)
    return c.render("subject.html", collection=collection, subject=info)


@router.post("/collections/{collection}/subjects/{subject_id}/erase")
@page
async def erase(c: Console, collection: str, subject_id: str) -> Response:
    receipt = await c.call(c.faceledger.erase_subject, c.actor, collection, subject_id)
    return c.render("receipt.html", receipt=receipt, what=f"subject {subject_id}")


# ------------------------------------------------------------------ try it
@router.get("/try")
@page
async def try_it(c: Console) -> Response:
    return c.render("try.html", collections=await c.call(c.faceledger.list_collections, c.actor), result=None)


@router.post("/try")
@page
async def try_run(c: Console) -> Response:
    action = await c.field("action")
    images = await c.files("image")
    collections = await c.call(c.faceledger.list_collections, c.actor)
    if not images:
        raise InvalidArgument("choose a photo")
    result: dict = {"action": action, "image": _data_url(images[0])}
    if action == "detect":
        analysis = await c.infer(c.faceledger.detect, c.actor, images[0])
        result["analysis"] = analysis.to_dict()
    elif action == "identify":
        name = await c.field("collection")
        found = await c.infer(c.faceledger.identify, c.actor, name, images[0])
        identified = found.to_dict()
        for face, probe in zip(identified["faces"], found.faces):
            face["landmarks"] = probe.landmarks  # drawn with the box
        result.update(identified=identified, collection=name)
    elif action == "compare":
        second = await c.files("image_b")
        if not second:
            raise InvalidArgument("a comparison needs a second photo")
        result["compared"] = (await c.infer(c.faceledger.compare, c.actor, images[0], second[0])).to_dict()
        result["image_b"] = _data_url(second[0])
    else:
        raise InvalidArgument("choose detect, identify or compare")
    with Image.open(io.BytesIO(images[0])) as im:
        result["size"] = ImageOps.exif_transpose(im).size  # as the engine saw it
    return c.render("try.html", collections=collections, result=result)


# ------------------------------------------------------------------ review queue
@router.get("/reviews")
@page
async def reviews(c: Console) -> Response:
    return c.render("reviews.html", items=await c.call(c.faceledger.pending_reviews, c.actor))


@router.post("/reviews/{seq}")
@page
async def review(c: Console, seq: int) -> Response:
    verdict = await c.field("verdict")
    subject_id = await c.field("subject_id") or None
    await c.call(c.faceledger.decide_review, c.actor, seq, accept=verdict == "accept", subject_id=subject_id)
    return redirect("/console/reviews")


# ------------------------------------------------------------------ keys
@router.get("/keys")
@page
async def keys(c: Console) -> Response:
    return c.render("keys.html", keys=await c.call(c.faceledger.list_keys, c.actor), created=None)


@router.post("/keys")
@page
async def create_key(c: Console) -> Response:
    scopes = [s for s in (await c.form()).getlist("scopes") if isinstance(s, str)]
    key, info = await c.call(c.faceledger.create_key, c.actor, c.actor.tenant, scopes, await c.field("purpose"),
                             collection=await c.field("collection") or None)
    return c.render("keys.html", keys=await c.call(c.faceledger.list_keys, c.actor), created={"key": key, **info})


@router.post("/keys/{key_id}/revoke")
@page
async def revoke_key(c: Console, key_id: str) -> Response:
    await c.call(c.faceledger.revoke_key, c.actor, key_id)
    return redirect("/console/keys")


# ------------------------------------------------------------------ audit
@router.get("/audit")
@page
async def audit(c: Console) -> Response:
    q = c.request.query_params
    filters = {k: (q.get(k) or None) for k in ("subject_id", "key_id", "operation", "since", "until")}
    rows = await c.call(c.faceledger.query_audit, c.actor, limit=200, **filters)
    return c.render("audit.html", rows=rows, filters={k: v or "" for k, v in filters.items()}, verification=None)


@router.post("/audit/verify")
@page
async def audit_verify(c: Console) -> Response:
    verification = await c.call(c.faceledger.verify_audit, c.actor)
    return c.render("audit.html", rows=[], filters={}, verification=verification)


@router.get("/audit/export")
@page
async def audit_export(c: Console) -> Response:
    fmt = c.request.query_params.get("format", "jsonl")
    lines = await c.call(lambda: list(c.faceledger.export_audit(c.actor, fmt)))
    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return secure(StreamingResponse(iter(lines), media_type=media,
                                    headers={"Content-Disposition": f'attachment; filename="audit.{fmt}"'}))


# ------------------------------------------------------------------ report and streams
@router.get("/report")
@page
async def report(c: Console) -> Response:
    try:
        data = await c.call(c.faceledger.read_report, c.actor)
    except FaceledgerError as exc:
        return c.render("report.html", report=None, error=exc, plots=[])
    plots = await c.call(c.faceledger.report_plots, c.actor)
    return c.render("report.html", report=data, error=None, plots=plots, pretty=json.dumps(data, indent=1)[:20000])


@router.get("/report/plots/{name}")
@page
async def report_plot(c: Console, name: str) -> Response:
    return secure(Response(await c.call(c.faceledger.report_plot, c.actor, name), media_type="image/png"))


@router.get("/streams")
@page
async def streams(c: Console) -> Response:
    service = c.request.app.state.streams
    c.faceledger.authorize(c.actor, "streams.read")
    listed = [s for s in await c.call(service.list, c.actor) if c.actor.may_see(s.collection)]
    events = {s.stream_id: await c.call(service.events, c.actor, s.stream_id, limit=20) for s in listed[:20]}
    return c.render("streams.html", streams=listed, events=events)


__all__ = ["get_faceledger", "router", "static"]
