"""Amazon Rekognition's JSON protocol at ``POST /``: any AWS SDK (boto3, Java, JS) works against faceledger by
changing its endpoint and credentials.

A request names its operation in ``X-Amz-Target: RekognitionService.<Operation>``, carries a JSON body
(``application/x-amz-json-1.1``) and is signed with AWS Signature V4 by an AWS-style faceledger key
(``faceledger keys create --aws``). Each operation maps onto the operations layer: the same gallery,
guardrails and audit records as the native API. Answers follow botocore's output shapes; refusals come
back as ``{"__type": ..., "Message": ...}`` with HTTP 400 (500 for a failure of the server), which the
SDKs raise as their typed exceptions. What Rekognition does that faceledger refuses by design (face
attributes such as age, gender or emotions; images in S3) is refused by name, never silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from faceledger.access.sigv4 import SignedRequest
from faceledger.api.compat import rekognition_shapes as shape
from faceledger.api.compat.common import FIVE_MIB
from faceledger.api.compat.rekognition_shapes import PATTERNS, RekognitionError
from faceledger.api.deps import Operation, in_thread
from faceledger.api.deps import operation as audited_operation
from faceledger.api.inputs import budget_of
from faceledger.errors import AlreadyExists, InvalidArgument
from faceledger.gallery.face_rows import FaceRow
from faceledger.matching import similarity
from faceledger.service.face_level import is_person

log = logging.getLogger("faceledger.api")
router = APIRouter()

TARGET_PREFIX = "RekognitionService."
SERVICE = "rekognition"
CONTENT_TYPE = "application/x-amz-json-1.1"
SIGNED = ("content-type", "host", "x-amz-date", "x-amz-target")  # what every SDK signs; the operation is among them
BODY_LIMIT = 2 * (FIVE_MIB * 4 // 3 + 4) + 64 * 1024  # two base64 images (CompareFaces) and the rest
ALLOWED_ATTRIBUTES = {"DEFAULT"}
DEFAULT_THRESHOLD = 80.0  # Rekognition's FaceMatchThreshold, SimilarityThreshold and UserMatchThreshold
ASSOCIATE_THRESHOLD = 75.0  # Rekognition's UserMatchThreshold for AssociateFaces

Handler = Callable[[Operation, dict], Awaitable[dict]]
OPERATIONS: dict[str, tuple[str, Handler]] = {}  # Rekognition operation -> (faceledger operation, handler)


def operation(name: str, faceledger_operation: str):
    def register(fn: Handler) -> Handler:
        OPERATIONS[name] = (faceledger_operation, fn)
        return fn
    return register


# ------------------------------------------------------------------ the endpoint
@router.post("/", include_in_schema=False)
async def rekognition(request: Request) -> JSONResponse:
    """Every Rekognition operation: authenticate (SigV4), authorize, run, answer in Rekognition's shapes."""
    targets = request.headers.getlist("x-amz-target")
    target = targets[0] if len(targets) == 1 else ""
    name = target.removeprefix(TARGET_PREFIX) if target.startswith(TARGET_PREFIX) else None
    faceledger_operation, handler = OPERATIONS.get(name or "", ("rekognition", None))
    try:
        if len(targets) > 1 or any(len(request.headers.getlist(h)) > 1 for h in SIGNED):
            raise RekognitionError("InvalidSignatureException", "a signed header appears more than once")
        budget_of(request).allow(BODY_LIMIT)
        body = await request.body()
    except Exception as exc:  # refused before the caller is known: recorded like a refused authentication
        await Operation(request, faceledger_operation, None, ()).refused(exc)
        return _error(exc)
    params: Any = None
    try:
        params = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        pass
    collection = params.get("CollectionId") if isinstance(params, dict) and isinstance(
        params.get("CollectionId"), str) else None
    try:
        async with audited_operation(request, None, faceledger_operation, collection=collection,
                                     via=lambda op: _signed(op, body)) as op:
            if handler is None:
                raise RekognitionError("UnknownOperationException", f"unknown operation {target!r}: faceledger "
                                       f"serves {', '.join(sorted(OPERATIONS))}")
            if not isinstance(params, dict):
                raise RekognitionError("SerializationException", "the body is not a JSON object")
            result = await handler(op, params)
    except Exception as exc:
        return _error(exc)
    return JSONResponse(result, media_type=CONTENT_TYPE)


async def _signed(op: Operation, body: bytes):
    r = op.request
    signed = SignedRequest(r.method, r.scope.get("raw_path", r.url.path.encode()).decode("latin-1"),
                           r.scope.get("query_string", b"").decode("latin-1"),
                           {k.lower(): v for k, v in r.headers.items()}, body)
    return await in_thread(op.faceledger.authenticate_signed, signed, SERVICE, SIGNED, request_id=op.actor.request_id,
                           client=op.actor.client)


def _error(exc: Exception) -> JSONResponse:
    aws_type, status = shape.error_type(exc)
    if status == 500:
        log.error("rekognition operation failed", exc_info=exc)
        message = "faceledger could not complete the request; see its log"
    else:
        message = getattr(exc, "message", str(exc))
    return JSONResponse({"__type": aws_type, "Message": message}, status_code=status, media_type=CONTENT_TYPE,
                        headers={"x-amzn-ErrorType": aws_type})


# ------------------------------------------------------------------ parameters
def _id(params: dict, field: str, *, required: bool = True) -> str | None:
    value = params.get(field)
    if value is None and not required:
        return None
    pattern, says = PATTERNS[field]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgument(f"{field} must be {says}", field=field)
    return value


def _ids(params: dict, field: str, most: int) -> list[str]:
    values = params.get(field)
    if not isinstance(values, list) or not 1 <= len(values) <= most:
        raise InvalidArgument(f"{field} is a list of 1 to {most} face ids", field=field)
    pattern, says = PATTERNS["FaceId"]
    for v in values:
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise InvalidArgument(f"every id in {field} must be {says}", field=field)
    return values


def _int(params: dict, field: str, default: int | None, low: int, high: int | None) -> int | None:
    value = params.get(field, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise InvalidArgument(f"{field} is an integer from {low}" + (f" to {high}" if high else ""), field=field)
    return value


def _percent(params: dict, field: str, default: float) -> float:
    value = params.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise InvalidArgument(f"{field} is a number from 0 to 100", field=field)
    return float(value)


def _image(params: dict, field: str = "Image") -> bytes:
    image = params.get(field)
    if not isinstance(image, dict) or not image:
        raise InvalidArgument(f"{field} is required: {{\"Bytes\": <the image>}}", field=field)
    if "S3Object" in image:
        raise RekognitionError("InvalidS3ObjectException", "faceledger never fetches images (from S3 or anywhere): "
                               f"send the image's bytes in {field}.Bytes", field=field)
    data = image.get("Bytes")
    if not isinstance(data, str) or not data:
        raise InvalidArgument(f"{field}.Bytes is required", field=field)
    if len(data) > (FIVE_MIB + 2) // 3 * 4:
        raise RekognitionError("ImageTooLargeException", "the image is larger than Rekognition's 5 MiB limit",
                               field=field)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{field}.Bytes is not base64", field=field) from None
    if len(raw) > FIVE_MIB:
        raise RekognitionError("ImageTooLargeException", "the image is larger than Rekognition's 5 MiB limit",
                               field=field)
    return raw


def _attributes(params: dict, field: str) -> None:
    """Refuse every attribute beyond DEFAULT, by name: faceledger never infers age, gender, emotions or looks."""
    values = params.get(field) or []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidArgument(f"{field} is a list of attribute names", field=field)
    refused = [v for v in values if v not in ALLOWED_ATTRIBUTES]
    if refused:
        raise InvalidArgument(f"faceledger does not infer face attributes ({', '.join(refused)}): it never estimates "
                              "age, gender, emotions or appearance from a face. Ask for DEFAULT (or nothing).",
                              field=field, refused=refused)


def _quality_filter(params: dict, default: str) -> str:
    value = params.get("QualityFilter", default)
    if value not in ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH"):
        raise InvalidArgument("QualityFilter is one of NONE, AUTO, LOW, MEDIUM, HIGH", field="QualityFilter")
    return value


def _token(params: dict, kind: str = "after") -> str | None:
    """A pagination token given back: where the next page starts (opaque to clients), None for the first page."""
    token = params.get("NextToken")
    if token is None:
        return None
    try:
        value = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, AttributeError, binascii.Error, UnicodeDecodeError):
        value = ""
    if not value.startswith(f"{kind}:"):
        raise RekognitionError("InvalidPaginationTokenException", "NextToken is not one this service gave")
    return value.removeprefix(f"{kind}:")


def _position(params: dict) -> int:
    """A numeric pagination token (an offset or the last face id), 0 for the first page."""
    value = _token(params)
    if value is None:
        return 0
    if not value.isdigit():
        raise RekognitionError("InvalidPaginationTokenException", "NextToken is not one this service gave")
    return int(value)


def _next(position: int | str, kind: str = "after") -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode()


def _model(op: Operation) -> str:
    return op.faceledger.engine.model_id


def _arn(op: Operation, collection: str) -> str:
    return f"aws:rekognition:faceledger:{op.actor.tenant}:collection/{collection}"


# ------------------------------------------------------------------ collections
@operation("CreateCollection", "collection.create")
async def create_collection(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    try:
        await op.call(op.faceledger.create_collection, op.actor, name)
    except AlreadyExists as exc:
        raise AlreadyExists(f"The collection id: {name} already exists", collection=name) from exc
    return {"StatusCode": 200, "CollectionArn": _arn(op, name), "FaceModelVersion": _model(op)}


@operation("DescribeCollection", "collections.read")
async def describe_collection(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    info = await op.call(op.faceledger.get_collection, op.actor, name)
    users = await op.call(op.faceledger.count_persons, op.actor, name)
    return {"FaceCount": info.faces, "UserCount": users, "FaceModelVersion": info.model_id,
            "CollectionARN": _arn(op, name), "CreationTimestamp": shape.epoch(info.created_at)}


@operation("ListCollections", "collections.read")
async def list_collections(op: Operation, p: dict) -> dict:
    limit = _int(p, "MaxResults", 1000, 0, 4096) or 1000
    start = _position(p)
    names = [c for c in await op.call(op.faceledger.list_collections, op.actor)]
    page = names[start:start + limit]
    out = {"CollectionIds": [c.name for c in page], "FaceModelVersions": [c.model_id for c in page]}
    if start + limit < len(names):
        out["NextToken"] = _next(start + limit)
    return out


@operation("DeleteCollection", "collection.delete")
async def delete_collection(op: Operation, p: dict) -> dict:
    await op.call(op.faceledger.delete_collection, op.actor, _id(p, "CollectionId"))
    return {"StatusCode": 200}


# ------------------------------------------------------------------ faces
@operation("IndexFaces", "enroll")
async def index_faces(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    external = _id(p, "ExternalImageId", required=False)
    _attributes(p, "DetectionAttributes")
    max_faces = _int(p, "MaxFaces", None, 1, None)
    _quality_filter(p, "AUTO")  # faceledger's enrolment limits apply whatever the filter (see the README)
    image = _image(p)
    done = await op.run(op.faceledger.index_faces, op.actor, name, image, max_faces=max_faces,
                        external_image_id=external)
    a, model = done.analysis, _model(op)
    records = [{"Face": shape.stored_face(FaceRow(s, None, f), model), "FaceDetail": shape.face_detail(a, i)}
               for i, s, f in done.indexed]
    unindexed = [{"Reasons": sorted({shape.REASONS.get(r, "LOW_FACE_QUALITY") for r in reasons}),
                  "FaceDetail": shape.face_detail(a, i)} for i, reasons in done.skipped]
    return {"FaceRecords": records, "FaceModelVersion": model, "UnindexedFaces": unindexed}


@operation("ListFaces", "subjects.read")
async def list_faces(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    user = _id(p, "UserId", required=False)
    uuids = _ids(p, "FaceIds", 4096) if p.get("FaceIds") is not None else None
    limit = _int(p, "MaxResults", 1000, 0, 4096) or 1000
    rows = await op.call(op.faceledger.collection_faces, op.actor, name, subject_id=user, uuids=uuids,
                         after=_position(p), limit=limit + 1)
    model = _model(op)
    out = {"Faces": [shape.stored_face(r, model) for r in rows[:limit]], "FaceModelVersion": model}
    if len(rows) > limit:
        out["NextToken"] = _next(rows[limit - 1].face.face_id)
    return out


@operation("DeleteFaces", "erase")
async def delete_faces(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    uuids = _ids(p, "FaceIds", 4096)
    receipt, missing, kept = await op.call(op.faceledger.erase_faces, op.actor, name, uuids, person_faces=False)
    failed = [{"FaceId": u, "Reasons": ["FACE_NOT_FOUND"]} for u in missing]
    failed += [{"FaceId": r.face.uuid, "UserId": r.subject_id, "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]}
               for r in kept]
    refused = set(missing) | {r.face.uuid for r in kept}
    deleted = [u for u in dict.fromkeys(uuids) if u not in refused]
    return {**({"DeletedFaces": deleted} if deleted else {}),  # a FaceIdList has at least one id
            "UnsuccessfulFaceDeletions": failed}


# ------------------------------------------------------------------ search
def _matches(search, threshold: float, model: str) -> list[dict]:
    return [{"Similarity": shape.percent(h.rate), "Face": shape.stored_face(h.face, model)}
            for h in search.hits if shape.percent(h.rate) >= threshold]


async def _by_image(op: Operation, p: dict, threshold_field: str, most_field: str, default: int, most: int, *,
                    by_person: bool):
    """A search by the largest face of an image: (the search, the similarity threshold). A QualityFilter other than
    NONE refuses (before searching) a largest face that fails the quality limits."""
    name = _id(p, "CollectionId")
    threshold = _percent(p, threshold_field, DEFAULT_THRESHOLD)
    top = _int(p, most_field, default, 1, most)
    strict = _quality_filter(p, "NONE") != "NONE"
    found = await op.run(op.faceledger.search, op.actor, name, image=_image(p), top_k=top,
                         max_rate=similarity.rate(threshold), by_person=by_person, quality_filter=strict)
    return found, threshold


@operation("SearchFaces", "identify")
async def search_faces(op: Operation, p: dict) -> dict:
    name, face_id = _id(p, "CollectionId"), _id(p, "FaceId")
    threshold = _percent(p, "FaceMatchThreshold", DEFAULT_THRESHOLD)
    top = _int(p, "MaxFaces", 100, 1, 4096)
    found = await op.run(op.faceledger.search, op.actor, name, face_uuid=face_id, top_k=top,
                         max_rate=similarity.rate(threshold))
    return {"SearchedFaceId": face_id, "FaceMatches": _matches(found, threshold, _model(op)),
            "FaceModelVersion": _model(op)}


@operation("SearchFacesByImage", "identify")
async def search_faces_by_image(op: Operation, p: dict) -> dict:
    found, threshold = await _by_image(op, p, "FaceMatchThreshold", "MaxFaces", 100, 4096, by_person=False)
    a, i = found.probe, found.probe_index
    detail = shape.face_detail(a, i)
    return {"SearchedFaceBoundingBox": detail["BoundingBox"], "SearchedFaceConfidence": detail["Confidence"],
            "FaceMatches": _matches(found, threshold, _model(op)), "FaceModelVersion": _model(op)}


@operation("CompareFaces", "compare")
async def compare_faces(op: Operation, p: dict) -> dict:
    threshold = _percent(p, "SimilarityThreshold", DEFAULT_THRESHOLD)
    strict = _quality_filter(p, "NONE") != "NONE"
    source, target = _image(p, "SourceImage"), _image(p, "TargetImage")
    result = await op.run(op.faceledger.compare_faces, op.actor, source, target, quality_filter=strict)
    a, b = result.source, result.target
    matches, unmatched = [], []
    for j, (_, upper, _) in enumerate(result.matches):
        if strict and not b.quality[j].passed:
            continue
        value = shape.percent(upper)
        if value >= threshold:
            matches.append({"Similarity": value, "Face": shape.compared_face(b, j)})
        else:
            unmatched.append(shape.compared_face(b, j))
    matches.sort(key=lambda m: -m["Similarity"])
    src = shape.face_detail(a, result.source_index)
    return {"SourceImageFace": {"BoundingBox": src["BoundingBox"], "Confidence": src["Confidence"]},
            "FaceMatches": matches, "UnmatchedFaces": unmatched}


@operation("DetectFaces", "detect")
async def detect_faces(op: Operation, p: dict) -> dict:
    _attributes(p, "Attributes")
    a = await op.run(op.faceledger.detect, op.actor, _image(p))
    return {"FaceDetails": [shape.face_detail(a, i) for i in range(len(a))]}


# ------------------------------------------------------------------ users
@operation("CreateUser", "subject.create")
async def create_user(op: Operation, p: dict) -> dict:
    name, user = _id(p, "CollectionId"), _id(p, "UserId")
    _id(p, "ClientRequestToken", required=False)
    try:
        await op.call(op.faceledger.create_person, op.actor, name, user)
    except AlreadyExists as exc:
        raise RekognitionError("ConflictException", f"user {user} already exists in {name}") from exc
    return {}


@operation("DeleteUser", "erase")
async def delete_user(op: Operation, p: dict) -> dict:
    name, user = _id(p, "CollectionId"), _id(p, "UserId")
    _id(p, "ClientRequestToken", required=False)
    await op.call(op.faceledger.erase_subject, op.actor, name, user)  # the user's faces are erased with it
    return {}


@operation("ListUsers", "subjects.read")
async def list_users(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    limit = _int(p, "MaxResults", 500, 1, 500)
    users = await op.call(op.faceledger.persons, op.actor, name, after=_token(p, "user") or "", limit=limit + 1)
    out = {"Users": [{"UserId": u, "UserStatus": "ACTIVE"} for u in users[:limit]]}
    if len(users) > limit:
        out["NextToken"] = _next(users[limit - 1], "user")
    return out


@operation("AssociateFaces", "faces.associate")
async def associate_faces(op: Operation, p: dict) -> dict:
    name, user = _id(p, "CollectionId"), _id(p, "UserId")
    uuids = _ids(p, "FaceIds", 100)
    threshold = _percent(p, "UserMatchThreshold", ASSOCIATE_THRESHOLD)
    done, failed = await op.call(op.faceledger.associate_faces, op.actor, name, user, uuids,
                                 max_rate=similarity.rate(threshold))
    return {"AssociatedFaces": [{"FaceId": u} for u in done],
            "UnsuccessfulFaceAssociations": [{"FaceId": u, "UserId": user, "Reasons": [why]}
                                             for u, why in failed.items()],
            "UserStatus": "ACTIVE"}


@operation("DisassociateFaces", "faces.disassociate")
async def disassociate_faces(op: Operation, p: dict) -> dict:
    name, user = _id(p, "CollectionId"), _id(p, "UserId")
    uuids = _ids(p, "FaceIds", 100)
    done, failed = await op.call(op.faceledger.disassociate_faces, op.actor, name, user, uuids)
    return {"DisassociatedFaces": [{"FaceId": u} for u in done],
            "UnsuccessfulFaceDisassociations": [{"FaceId": u, "UserId": user, "Reasons": [why]}
                                                for u, why in failed.items()],
            "UserStatus": "ACTIVE"}


def _user_matches(found, threshold: float) -> list[dict]:
    return [{"Similarity": shape.percent(h.rate), "User": {"UserId": h.subject_id, "UserStatus": "ACTIVE"}}
            for h in found.hits if shape.percent(h.rate) >= threshold and is_person(h.subject_id)]


@operation("SearchUsers", "identify")
async def search_users(op: Operation, p: dict) -> dict:
    name = _id(p, "CollectionId")
    user, face_id = _id(p, "UserId", required=False), _id(p, "FaceId", required=False)
    if (user is None) == (face_id is None):
        raise InvalidArgument("SearchUsers takes a UserId or a FaceId (one of them)")
    threshold = _percent(p, "UserMatchThreshold", DEFAULT_THRESHOLD)
    top = _int(p, "MaxUsers", 10, 1, 500)
    found = await op.run(op.faceledger.search, op.actor, name, face_uuid=face_id, subject_id=user, top_k=top,
                         max_rate=similarity.rate(threshold), by_person=True)
    out = {"UserMatches": _user_matches(found, threshold), "FaceModelVersion": _model(op)}
    out.update({"SearchedUser": {"UserId": user}} if user else {"SearchedFace": {"FaceId": face_id}})
    return out


@operation("SearchUsersByImage", "identify")
async def search_users_by_image(op: Operation, p: dict) -> dict:
    found, threshold = await _by_image(op, p, "UserMatchThreshold", "MaxUsers", 10, 500, by_person=True)
    a, i = found.probe, found.probe_index
    return {"UserMatches": _user_matches(found, threshold), "FaceModelVersion": _model(op),
            "SearchedFace": {"FaceDetail": shape.face_detail(a, i)},
            "UnsearchedFaces": [{"FaceDetails": shape.face_detail(a, j), "Reasons": ["FACE_NOT_LARGEST"]}
                                for j in range(len(a)) if j != i]}


__all__ = ["OPERATIONS", "router"]
