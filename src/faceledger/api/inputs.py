"""Bodies that carry images arrive as multipart/form-data (files) or JSON (base64 strings).

Both are parsed into the same Pydantic body model, whose image fields then hold bytes or
base64 text that the engine decodes with its limits. URLs are never fetched.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

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


def openapi_body(model: type[BaseModel]) -> dict:
    """requestBody for the OpenAPI document: the same fields as multipart files or JSON base64."""
    json_schema = model.model_json_schema()
    multipart = json.loads(json.dumps(json_schema))
    for name, is_list in _image_fields(model).items():
        binary = {"type": "string", "format": "binary"}
        multipart["properties"][name] = {"type": "array", "items": binary, "minItems": 1} if is_list else binary
        encoded = {"type": "string", "contentEncoding": "base64", "description": "base64 or a data: URL"}
        json_schema["properties"][name] = ({"type": "array", "items": encoded, "minItems": 1} if is_list
                                           else encoded)
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart},
                                                          "application/json": {"schema": json_schema}}}}


async def parse_body(request: Request, model: type[Body], max_bytes: int, max_images: int) -> tuple[Body, dict]:
    """(validated body, {image field: bytes or [bytes]}) from a multipart or JSON request."""
    images = _image_fields(model)
    length = request.headers.get("content-length")
    limit = max_bytes * max_images + 64 * 1024
    if length and length.isdigit() and int(length) > limit * 4 // 3 + 1024:
        raise PayloadTooLarge(f"request body is {length} bytes, the limit is {limit}", limit=limit)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    payload: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=max_images + 2, max_fields=50)
        except Exception as exc:  # malformed multipart: starlette raises several types
            raise InvalidRequest(f"the multipart body could not be read: {exc}") from None
        for key in form.keys():
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
    elif ctype == "application/json":
        raw = await request.body()
        try:
            payload = json.loads(raw or b"null")
        except ValueError:
            raise InvalidRequest("the body is not valid JSON") from None
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
            decoded = [decode_base64(v, max_bytes, f"'{key}'", field=key) for v in items]
            data[key] = decoded if is_list else decoded[0]
            payload[key] = ["-"] * len(decoded) if is_list else "-"
    else:
        raise UnsupportedMediaType("send multipart/form-data or application/json", content_type=ctype or None)
    try:
        body = model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidRequest("the request does not match the API schema",
                             errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]) from None
    if any(isinstance(v, list) and len(v) > max_images for v in data.values()):
        raise InvalidRequest(f"at most {max_images} images per request", limit=max_images)
    return body, data
