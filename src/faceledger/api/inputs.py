"""Request bodies, read only after authentication and within a limit counted as the bytes arrive.

Bodies that carry images arrive as multipart/form-data (files) or JSON (base64 strings): both
are parsed into the same Pydantic body model, whose image fields then hold bytes or base64
text that the engine decodes with its limits. URLs are never fetched. Bodies without images
(collections, subjects) are JSON only, at most ``JSON_BODY_LIMIT`` bytes.
"""

from __future__ import annotations

import copy
import json
from typing import Any, TypeVar

import anyio
from fastapi import Request
from pydantic import BaseModel, ValidationError

from faceledger.api.runtime import JSON_BODY_LIMIT, BodyBudget, declared_length
from faceledger.errors import InvalidImage, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from faceledger.imaging import decode_base64

Body = TypeVar("Body", bound=BaseModel)


def _image_fields(model: type[BaseModel]) -> dict[str, bool]:
    """Image field name -> whether it is a list."""
    out = {}
    for name, field in model.model_fields.items():
        if name.startswith("image"):
            out[name] = getattr(field.annotation, "__origin__", None) is list
    return out


def _inline(schema: dict) -> dict:
    """``schema`` with its ``$defs`` written in place (a requestBody in ``openapi_extra`` cannot refer to them)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                target = walk(copy.deepcopy(defs[ref.removeprefix("#/$defs/")]))
                return {**target, **{k: walk(v) for k, v in node.items() if k != "$ref"}}
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def openapi_body(model: type[BaseModel]) -> dict:
    """requestBody for the OpenAPI document (``openapi_extra``): a body with images as multipart files or
    JSON base64, a body without images as JSON."""
    json_schema = _inline(model.model_json_schema())
    images = _image_fields(model)
    if not images:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": json_schema}}}}
    multipart = copy.deepcopy(json_schema)
    # a form cannot carry null or nested values, so a schema-invalid extra field of that kind cannot be sent as
    # one; the server still refuses every unknown field (422), which the description says
    if multipart.pop("additionalProperties", True) is False:
        multipart["description"] = (multipart.get("description", "") + " Unknown fields are refused.").strip()
    for name, prop in multipart["properties"].items():  # a form field is left out, never sent as null
        options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
        if len(options) == 1 and name not in multipart.get("required", ()):
            del prop["anyOf"]
            prop.update(options[0])
            if prop.get("default", 0) is None:
                del prop["default"]
    for name, is_list in images.items():
        binary = {"type": "string", "format": "binary"}
        multipart["properties"][name] = {"type": "array", "items": binary, "minItems": 1} if is_list else binary
        encoded = {"type": "string", "contentEncoding": "base64", "description": "base64 or a data: URL"}
        json_schema["properties"][name] = ({"type": "array", "items": encoded, "minItems": 1} if is_list
                                           else encoded)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart},
                                                          "application/json": {"schema": json_schema}}}}


def body_limit(model: type[BaseModel], ctype: str, max_bytes: int, max_images: int) -> int:
    """The most bytes a body of ``model`` may have: its images at their limit (as base64 in JSON, with room
    for line breaks and a data: URL prefix) and ``JSON_BODY_LIMIT`` for the rest."""
    images = _image_fields(model)
    count = sum(max_images if is_list else 1 for is_list in images.values())
    per_image = max_bytes if ctype == "multipart/form-data" else max_bytes * 14 // 10 + 1024
    return count * per_image + JSON_BODY_LIMIT


def budget_of(request: Request) -> BodyBudget:
    """The request's body budget (from the ``BodyLimit`` middleware; counted here in an app without it)."""
    budget = BodyBudget.of(request.scope)
    if budget is None:
        budget = BodyBudget(JSON_BODY_LIMIT, declared_length(request.scope))
        request.scope.setdefault("state", {})["body_budget"] = budget
        request._receive = budget.wrap(request._receive)  # the one way in without the middleware
    return budget


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null", parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None


def _decode_all(items: list[str], max_bytes: int, key: str) -> list[bytes]:
    return [decode_base64(v, max_bytes, f"'{key}'", field=key) for v in items]


async def parse_body(request: Request, model: type[Body], max_bytes: int, max_images: int) -> tuple[Body, dict]:
    """(validated body, {image field: bytes or [bytes]}) from a multipart or JSON request, read within the
    limit of ``model`` (``body_limit``): beyond it, PayloadTooLarge as soon as the limit is passed."""
    images = _image_fields(model)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("multipart/form-data", "application/json") or (not images and ctype != "application/json"):
        raise UnsupportedMediaType("send application/json" if not images else
                                   "send multipart/form-data or application/json", content_type=ctype or None)
    budget_of(request).allow(body_limit(model, ctype, max_bytes, max_images))
    payload: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=max_images + 2, max_fields=50)
        except PayloadTooLarge:
            raise
        except Exception as exc:  # malformed multipart: starlette raises several types
            raise InvalidRequest(f"the multipart body could not be read: {exc}") from None
        try:
            for key in form:
                values = form.getlist(key)
                if key in images:
                    blobs = []
                    for v in values:
                        if isinstance(v, str):
                            raise InvalidRequest(f"field '{key}' must be a file upload", field=key)
                        blob = await v.read(max_bytes + 1)
                        if len(blob) > max_bytes:
                            raise PayloadTooLarge(f"'{key}' is over {max_bytes} bytes", limit=max_bytes)
                        blobs.append(blob)
                    data[key] = blobs if images[key] else blobs[0]
                    payload[key] = ["-"] * len(blobs) if images[key] else "-"
                else:
                    payload[key] = values if len(values) > 1 else values[0]
        finally:
            await form.close()  # the spooled uploads
    else:
        raw = await request.body()
        # a body with images is large: parsed and decoded in a worker thread, off the event loop
        payload = _json(raw) if len(raw) <= JSON_BODY_LIMIT else await anyio.to_thread.run_sync(_json, raw)
        if not isinstance(payload, dict):
            raise InvalidRequest("the JSON body must be an object")
        for key, is_list in images.items():
            value = payload.get(key)
            if value is None:
                continue
            items = value if is_list and isinstance(value, list) else [value]
            if not all(isinstance(v, str) for v in items):
                raise InvalidRequest(f"'{key}' must hold base64 text", field=key)
            if any(v.lower().startswith(("http:", "https:", "ftp:", "file:")) for v in items):
                raise InvalidImage("image URLs are never fetched; send the image itself", field=key)
            decoded = await anyio.to_thread.run_sync(_decode_all, items, max_bytes, key)
            data[key] = decoded if is_list else decoded[0]
            payload[key] = ["-"] * len(decoded) if is_list else "-"
    try:
        body = model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest("the request does not match the API schema",
                             errors=[{"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()]) from None
    if any(isinstance(v, list) and len(v) > max_images for v in data.values()):
        raise InvalidRequest(f"at most {max_images} images per request", limit=max_images)
    return body, data
