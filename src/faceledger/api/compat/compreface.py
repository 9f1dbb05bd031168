"""CompreFace's REST API under ``/api/v1/``: CompreFace's SDKs and applications work against faceledger by changing
the server's address and the key.

CompreFace binds a key to one service; here the ``x-api-key`` is a faceledger key, and for the recognition
service it must be bound to one collection (``faceledger keys create --collection NAME``). Detection and
verification take any key with the scope. Images come as multipart files (``file``, ``source_image``,
``target_image``) or base64 JSON fields of the same names, at most 5 MB. Answers and errors have CompreFace's
shapes (``{"message", "code"}``: 28 no face, 31 several faces, 42 subject not found, 44 image not found, ...).
Similarities are faceledger's percent similarity / 100 (see ``faceledger.matching.similarity``). Plugins
that infer age, gender or a mask, or that expose templates (``calculator``), are refused by name.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from faceledger.api.compat.common import FIVE_MIB
from faceledger.api.deps import Operation, in_thread, operation
from faceledger.api.inputs import budget_of
from faceledger.errors import FaceledgerError, InvalidArgument, NoFace, NotFound, PayloadTooLarge, Unauthorized
from faceledger.matching import similarity
from faceledger.service.face_level import is_person

log = logging.getLogger("faceledger.api")
router = APIRouter(prefix="/api/v1")

ALLOWED_PLUGINS = {"landmarks"}
BODY_LIMIT = 2 * (FIVE_MIB * 4 // 3 + 1024) + 64 * 1024
SERVICES = {"recognition": "Recognition", "detection": "Detection", "verification": "Verification"}


class CompreFaceError(FaceledgerError):
    """A refusal with CompreFace's own code."""

    code = "INVALID_ARGUMENT"

    def __init__(self, message: str, number: int, status: int = 400, **details) -> None:
        super().__init__(message, **details)
        self.number, self.status = number, status


# faceledger's error codes -> (HTTP status, CompreFace code)
CODES = {"NO_FACE": (400, 28), "MANY_FACES": (400, 31), "ALREADY_EXISTS": (400, 43), "INVALID_IMAGE": (400, 21),
         "EMPTY_IMAGE": (400, 21), "TRUNCATED_IMAGE": (400, 21), "IMAGE_TOO_LARGE": (400, 26),
         "PAYLOAD_TOO_LARGE": (400, 26), "INVALID_ARGUMENT": (400, 26), "INVALID_REQUEST": (400, 26),
         "ENROLLMENT_REFUSED": (400, 26), "UNSUPPORTED_MEDIA_TYPE": (400, 26), "INCOMPATIBLE_TEMPLATES": (400, 26),
         "FORBIDDEN": (403, 10), "CONSENT_REQUIRED": (403, 10), "RATE_LIMITED": (429, 0), "OVERLOADED": (503, 0)}


def _error(exc: Exception, service: str) -> JSONResponse:
    if isinstance(exc, CompreFaceError):
        status, number = exc.status, exc.number
    elif isinstance(exc, Unauthorized):
        status, number = (400, 20) if exc.details.get("reason") == "missing" else (404, 10)
    elif isinstance(exc, NotFound):
        what = exc.details
        status, number = (404, 42) if "subject_id" in what else (404, 44) if "face_id" in what else (404, 10)
    elif isinstance(exc, FaceledgerError) and exc.code in CODES:
        status, number = CODES[exc.code]
    else:
        log.error("compreface operation failed", exc_info=exc)
        return JSONResponse({"message": "Something went wrong, please try again", "code": 0}, status_code=500)
    message = exc.message
    if number == 31:  # faceledger's message names its own option for choosing a face, which CompreFace lacks
        message = f"More than one face in the image ({exc.details.get('faces', 'several')}): send one face"
    if isinstance(exc, Unauthorized) and number == 10:
        message = f"{SERVICES.get(service, 'Recognition')} service with this API key not found: {exc.message}"
    return JSONResponse({"message": message, "code": number}, status_code=status)


async def _run(request: Request, service: str, name: str, handler, *, collection_needed: bool = False,
               status: int = 200, subject_ids=()) -> JSONResponse:
    """One CompreFace call: authenticate the ``x-api-key``, authorize, run ``handler(op)`` audited, answer."""
    async def authenticate(op: Operation):
        key = request.headers.get("x-api-key")
        if not key:
            raise Unauthorized("Missing header: x-api-key", reason="missing")
        actor = await in_thread(op.faceledger.authenticate, key, request_id=op.actor.request_id,
                                client=op.actor.client)
        if collection_needed and actor.collection is None:
            raise CompreFaceError("Recognition service with this API key not found: a recognition key is bound to "
                                  "one collection (`faceledger keys create --collection NAME ...`)", 10, 404)
        op.collection = actor.collection
        return actor

    try:
        async with operation(request, None, name, subject_ids=subject_ids, via=authenticate) as op:
            result = await handler(op)
    except Exception as exc:
        return _error(exc, service)
    return JSONResponse(result, status_code=status)


# ------------------------------------------------------------------ inputs
async def _images(request: Request, *names: str) -> list[bytes]:
    """The images of a multipart body (files or fields named ``names``) or of a JSON body (base64 strings)."""
    budget_of(request).allow(BODY_LIMIT)
    ctype = request.headers.get("content-type", "")
    found: dict[str, bytes] = {}
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=len(names), max_fields=len(names) + 4)
        for name in names:
            part = form.get(name)
            if part is None:
                continue
            found[name] = await part.read() if hasattr(part, "read") else str(part).encode()
    elif ctype.startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"null")
        except (ValueError, RecursionError):
            raise CompreFaceError("the body is not JSON", 26) from None
        if not isinstance(body, dict):
            raise CompreFaceError("the body is a JSON object with base64 images", 26)
        for name in names:
            if isinstance(body.get(name), str):
                try:
                    found[name] = base64.b64decode(body[name].split(",", 1)[-1], validate=True)
                except (binascii.Error, ValueError):
                    raise CompreFaceError("Provided value is not Base64", 21) from None
    else:
        raise CompreFaceError("send the image as multipart/form-data or as base64 in JSON", 26)
    out = []
    for name in names:
        if name not in found:
            raise CompreFaceError(f"Required part {name} is missing", 34)
        if not found[name]:
            raise CompreFaceError(f"the part {name} is empty", 5)
        if len(found[name]) > FIVE_MIB:
            raise PayloadTooLarge(f"{name} is larger than 5 MB")
        out.append(found[name])
    return out


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except (ValueError, RecursionError):
        raise CompreFaceError("the body is not JSON", 26) from None


def _query(request: Request) -> dict:
    """The query options, checked: limit, prediction_count, det_prob_threshold, face_plugins, status."""
    q = request.query_params

    def number(name: str, default, kind, low=None, high=None):
        raw = q.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise CompreFaceError(f"{name} must be a number", 26) from None
        if not math.isfinite(value):
            raise CompreFaceError(f"{name} must be a finite number", 26)
        if (low is not None and value < low) or (high is not None and value > high):
            raise CompreFaceError(f"{name} should be between {low} and {high}" if high is not None else
                                  f"{name} should be equal or greater than {low}", 26)
        return value

    plugins = [p.strip() for p in q.get("face_plugins", "").split(",") if p.strip()]
    refused = [p for p in plugins if p not in ALLOWED_PLUGINS]
    if refused:
        raise InvalidArgument(
            f"face plugins refused: {', '.join(refused)}. faceledger never infers age, gender or other traits from "
            "a face, detects no masks, and never hands out face templates (calculator); it offers 'landmarks'.",
            refused=refused)
    return {"limit": number("limit", 0, int, 0), "prediction_count": number("prediction_count", 1, int, 1),
            "det_prob_threshold": number("det_prob_threshold", None, float, 0.0, 1.0),
            "landmarks": "landmarks" in plugins, "status": q.get("status", "false").lower() == "true"}


def _recorded(exc: FaceledgerError) -> FaceledgerError:
    """A refusal of this front end after the service already recorded the operation (e.g. a search that found no
    face): answered, not recorded a second time."""
    exc.audited = True
    return exc


def _sim(rate: float) -> float:
    return round(similarity.percent(rate) / 100.0, 5)


def _face(analysis, i: int, options: dict, started: float | None = None) -> dict:
    return _shown(analysis.detections.boxes[i], float(analysis.detections.scores[i]),
                  analysis.detections.landmarks[i], options, started)


def _shown(box, probability: float, landmarks, options: dict, started: float | None) -> dict:
    """A face as CompreFace shows it: its box (pixels) with the detector's probability; the landmarks plugin's
    five points; the time so far with ``status``."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    out: dict[str, Any] = {"box": {"probability": round(probability, 5), "x_max": x2, "y_max": y2, "x_min": x1,
                                   "y_min": y1}}
    if options["landmarks"] and landmarks is not None:
        out["landmarks"] = [[int(round(float(x))), int(round(float(y)))] for x, y in landmarks]
    if options["status"] and started is not None:
        out["execution_time"] = {"total": round((time.perf_counter() - started) * 1000.0, 1)}
    return out


def _kept(analysis, options: dict) -> list[int]:
    """The faces to answer for: above ``det_prob_threshold``, the ``limit`` largest."""
    faces = [i for i in range(len(analysis)) if options["det_prob_threshold"] is None
             or float(analysis.detections.scores[i]) >= options["det_prob_threshold"]]
    return faces[:options["limit"]] if options["limit"] else faces


def _versions(op: Operation, options: dict) -> dict:
    model = op.faceledger.engine.model_id
    return {"plugins_versions": {"detector": f"faceledger:{model}", "calculator": f"faceledger:{model}"}} \
        if options["status"] else {}


def _subject(body: Any) -> str:
    if not isinstance(body, dict) or not isinstance(body.get("subject"), str) or not body["subject"].strip():
        raise CompreFaceError("Subject name is empty", 26)
    return body["subject"]


# ------------------------------------------------------------------ recognition: subjects
@router.post("/recognition/subjects", include_in_schema=False)
async def add_subject(request: Request) -> JSONResponse:
    async def run(op: Operation):
        subject = _subject(await _json(request))
        await op.call(op.faceledger.create_person, op.actor, op.collection, subject)
        return {"subject": subject}
    return await _run(request, "recognition", "subject.create", run, collection_needed=True, status=201)


@router.get("/recognition/subjects", include_in_schema=False)
@router.get("/recognition/subjects/", include_in_schema=False)
async def list_subjects(request: Request) -> JSONResponse:
    async def run(op: Operation):
        names, after = [], ""
        while True:
            page = await op.call(op.faceledger.persons, op.actor, op.collection, after=after, limit=1000)
            names += page
            if len(page) < 1000:
                return {"subjects": names}
            after = page[-1]
    return await _run(request, "recognition", "subjects.read", run, collection_needed=True)


@router.put("/recognition/subjects/{subject}", include_in_schema=False)
async def rename_subject(request: Request, subject: str) -> JSONResponse:
    async def run(op: Operation):
        body = await _json(request)
        new = body.get("subject") if isinstance(body, dict) else None
        if not isinstance(new, str) or not new.strip() or new == subject:
            await op.call(op.faceledger.get_subject, op.actor, op.collection, subject)  # 404 for an unknown one
            return {"updated": False}
        await op.call(op.faceledger.rename_subject, op.actor, op.collection, subject, new)
        return {"updated": True}
    return await _run(request, "recognition", "subject.rename", run, collection_needed=True, subject_ids=[subject])


@router.delete("/recognition/subjects/{subject}", include_in_schema=False)
async def delete_subject(request: Request, subject: str) -> JSONResponse:
    async def run(op: Operation):
        await op.call(op.faceledger.erase_subject, op.actor, op.collection, subject)
        return {"subject": subject}
    return await _run(request, "recognition", "erase", run, collection_needed=True, subject_ids=[subject])


@router.delete("/recognition/subjects", include_in_schema=False)
async def delete_all_subjects(request: Request) -> JSONResponse:
    async def run(op: Operation):
        names = await op.call(op.faceledger.persons, op.actor, op.collection, limit=1_000_000)
        for name in names:  # one erasure (receipt, audit record) per person
            await op.call(op.faceledger.erase_subject, op.actor, op.collection, name)
        return {"deleted": len(names)}
    return await _run(request, "recognition", "erase", run, collection_needed=True)


# ------------------------------------------------------------------ recognition: faces
@router.post("/recognition/faces", include_in_schema=False)
async def add_face(request: Request) -> JSONResponse:
    subject = request.query_params.get("subject")

    async def run(op: Operation):
        if subject is None:
            raise CompreFaceError("Required parameter subject is missing", 33)
        if not subject.strip():
            raise CompreFaceError("Subject name is empty", 26)
        _query(request)
        (image,) = await _images(request, "file")
        row = await op.run(op.faceledger.add_face, op.actor, op.collection, subject, image)
        return {"image_id": row.face.uuid, "subject": subject}
    return await _run(request, "recognition", "enroll", run, collection_needed=True, status=201,
                      subject_ids=[subject] if subject else [])


@router.get("/recognition/faces", include_in_schema=False)
async def list_faces(request: Request) -> JSONResponse:
    async def run(op: Operation):
        try:
            page, size = int(request.query_params.get("page", 0)), int(request.query_params.get("size", 20))
        except ValueError:
            raise CompreFaceError("page and size are integers", 26) from None
        if page < 0 or not 1 <= size <= 1000:
            raise CompreFaceError("page is at least 0, size from 1 to 1000", 26)
        subject = request.query_params.get("subject") or None
        rows = await op.call(op.faceledger.collection_faces, op.actor, op.collection, subject_id=subject,
                             offset=page * size, limit=size, persons_only=True)
        total = await op.call(op.faceledger.count_faces, op.actor, op.collection, subject_id=subject,
                              persons_only=True)
        return {"faces": [{"image_id": r.face.uuid, "subject": r.subject_id} for r in rows], "page_number": page,
                "page_size": size, "total_pages": -(-total // size), "total_elements": total}
    return await _run(request, "recognition", "subjects.read", run, collection_needed=True)


@router.delete("/recognition/faces", include_in_schema=False)
async def delete_faces_of_subject(request: Request) -> JSONResponse:
    subject = request.query_params.get("subject")

    async def run(op: Operation):
        if not subject or not subject.strip():
            raise CompreFaceError("Subject name is empty", 26)
        try:
            receipt = await op.call(op.faceledger.erase_subject, op.actor, op.collection, subject)
        except NotFound as exc:
            if "subject_id" in exc.details:
                return {"deleted": 0}
            raise
        return {"deleted": len(receipt.face_ids)}
    return await _run(request, "recognition", "erase", run, collection_needed=True,
                      subject_ids=[subject] if subject else [])


@router.delete("/recognition/faces/{image_id}", include_in_schema=False)
async def delete_face(request: Request, image_id: str) -> JSONResponse:
    async def run(op: Operation):
        rows = await op.call(op.faceledger.collection_faces, op.actor, op.collection, uuids=[image_id],
                             persons_only=True)
        if not rows:
            raise NotFound(f"Image {image_id} not found", face_id=image_id)
        receipt, _, _ = await op.call(op.faceledger.erase_faces, op.actor, op.collection, [image_id])
        if receipt is None:  # erased by another call in between (that call has its record)
            raise NotFound(f"Image {image_id} not found", face_id=image_id)
        return {"image_id": image_id, "subject": rows[0].subject_id}
    return await _run(request, "recognition", "erase", run, collection_needed=True)


@router.post("/recognition/faces/delete", include_in_schema=False)
async def delete_faces(request: Request) -> JSONResponse:
    async def run(op: Operation):
        ids = await _json(request)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
            raise CompreFaceError("the body is a JSON array of image ids (at most 1000)", 26)
        rows = await op.call(op.faceledger.collection_faces, op.actor, op.collection, uuids=ids, persons_only=True)
        await op.call(op.faceledger.erase_faces, op.actor, op.collection, [r.face.uuid for r in rows])
        return [{"image_id": r.face.uuid, "subject": r.subject_id} for r in rows]
    return await _run(request, "recognition", "erase", run, collection_needed=True)


@router.post("/recognition/faces/{image_id}/verify", include_in_schema=False)
async def verify_face(request: Request, image_id: str) -> JSONResponse:
    async def run(op: Operation):
        options = _query(request)
        started = time.perf_counter()
        (image,) = await _images(request, "file")
        row, a, matches = await op.run(op.faceledger.compare_with_face, op.actor, op.collection, image_id, image)
        result = [{**_face(a, i, options, started), "subject": row.subject_id, "similarity": _sim(matches[i][1])}
                  for i in _kept(a, options)]
        return {"result": result, **_versions(op, options)}
    return await _run(request, "recognition", "verify", run, collection_needed=True)


@router.post("/recognition/recognize", include_in_schema=False)
async def recognize(request: Request) -> JSONResponse:
    async def run(op: Operation):
        options = _query(request)
        started = time.perf_counter()
        (image,) = await _images(request, "file")
        result = await op.run(op.faceledger.identify, op.actor, op.collection, image,
                              top_k=min(100, options["prediction_count"] * 2 + 5),
                              max_faces=options["limit"] or None)
        if not result.faces:
            raise _recorded(NoFace("No face is found in the given image"))
        out = []
        for f in result.faces:
            if options["det_prob_threshold"] is not None and f.quality.get("confidence", 1.0) < \
                    options["det_prob_threshold"]:
                continue
            persons = [c for c in f.candidates if is_person(c.subject_id)][:options["prediction_count"]]
            out.append({**_shown(f.box, float(f.quality.get("confidence", 0.0)), f.landmarks, options, started),
                        "subjects": [{"subject": c.subject_id, "similarity": _sim(c.fpir)} for c in persons]})
        return {"result": out, **_versions(op, options)}
    return await _run(request, "recognition", "identify", run, collection_needed=True)


# ------------------------------------------------------------------ detection and verification
@router.post("/detection/detect", include_in_schema=False)
async def detect(request: Request) -> JSONResponse:
    async def run(op: Operation):
        options = _query(request)
        started = time.perf_counter()
        (image,) = await _images(request, "file")
        a = await op.run(op.faceledger.detect, op.actor, image)
        faces = _kept(a, options)
        if not faces:
            raise _recorded(NoFace("No face is found in the given image"))
        return {"result": [_face(a, i, options, started) for i in faces], **_versions(op, options)}
    return await _run(request, "detection", "detect", run)


@router.post("/verification/verify", include_in_schema=False)
async def verify(request: Request) -> JSONResponse:
    async def run(op: Operation):
        options = _query(request)
        started = time.perf_counter()
        source, target = await _images(request, "source_image", "target_image")
        c = await op.run(op.faceledger.compare_faces, op.actor, source, target, one_source_face=True,
                         target_face_required=True)
        matches = [{**_face(c.target, j, options, started), "similarity": _sim(c.matches[j][1])}
                   for j in _kept(c.target, options)]
        return {"result": [{"source_image_face": _face(c.source, c.source_index, options, started),
                            "face_matches": matches, **_versions(op, options)}]}
    return await _run(request, "verification", "compare", run)
