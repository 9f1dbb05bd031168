"""HTTP at the edge: the one map from error codes to statuses, the one JSON error shape, the handlers.

Errors below the API carry codes only (``faceledger.errors``); this module alone decides
what HTTP status each code becomes. Every error answer has the shape
``{"error": {"code": ..., "message": ..., "details": {...}}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from faceledger.api import schemas as S
from faceledger.gallery.storage import storage_error
from faceledger.errors import FaceledgerError

log = logging.getLogger("faceledger.api")

STATUS: dict[str, int] = {
    # the input cannot be used
    "INVALID_IMAGE": 422, "EMPTY_IMAGE": 422, "TRUNCATED_IMAGE": 422, "NO_FACE": 422, "MANY_FACES": 422,
    "INCOMPATIBLE_TEMPLATES": 422, "CONSENT_REQUIRED": 422, "ENROLLMENT_REFUSED": 422, "INVALID_ARGUMENT": 422,
    "INVALID_REQUEST": 422,
    "IMAGE_TOO_LARGE": 413, "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    # the gallery
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "NOT_CALIBRATED": 409,
    # access and load
    "UNAUTHORIZED": 401, "FORBIDDEN": 403, "RATE_LIMITED": 429, "OVERLOADED": 503,
    # the deployment
    "MODEL_FILE": 500, "TEMPLATE_KEY": 500, "CONFIGURATION": 500, "DATA_MISSING": 500,
    "STORAGE_FULL": 507, "STORAGE_UNAVAILABLE": 503,
}
UNKNOWN_CODE_STATUS = 400


def status_of(code: str) -> int:
    """The HTTP status of an error code (400 for a code this map does not know)."""
    return STATUS.get(code, UNKNOWN_CODE_STATUS)


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details or {}}}, status_code=status)


def responses(*statuses: int) -> dict[int, dict]:
    """OpenAPI ``responses`` entries for error statuses, all with the one error shape."""
    return {s: {"model": S.ErrorResponse} for s in statuses}


AUTH_ERRORS = responses(401, 403, 422, 429, 503)


# MANY_FACES asks the caller to say which face: how to say it, in each front end
CHOOSE_WITH = {"http": "face (face_a / face_b for compare)", "cli": "--face (--face-a / --face-b for compare)",
               "python": "face= (face_a= / face_b= for compare)"}


def with_hint(code: str, message: str, details: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The message and details of an error answer; MANY_FACES names the field that chooses a face."""
    if code != "MANY_FACES":
        return message, details
    return (f"{message}; choose with the field {CHOOSE_WITH['http']}",
            {**details, "choose_with": details.get("choose_with", CHOOSE_WITH)})


async def faceledger_error(_: Request, exc: FaceledgerError) -> JSONResponse:
    status = status_of(exc.code)
    message, details = with_hint(exc.code, exc.message, exc.details)
    response = error_response(status, exc.code, message, details)
    if status == 429 and "retry_after_s" in exc.details:
        response.headers["Retry-After"] = str(max(1, round(exc.details["retry_after_s"])))
    return response


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "INVALID_REQUEST", "the request does not match the API schema",
                          {"errors": [{"loc": [str(x) for x in e["loc"]], "msg": e["msg"]} for e in exc.errors()]})


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at this request's path (asked of the routes themselves, so
    included routers count however the framework nests them)."""
    routes = request.app.router.routes
    return [method for method in METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)]


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, FaceledgerError):  # FastAPI wraps what failed while it read a body
        return await faceledger_error(request, exc.__cause__)
    if exc.status_code == 400:  # a body FastAPI could not parse: the same answer as any invalid request
        return error_response(422, "INVALID_REQUEST", str(exc.detail))
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    response = error_response(exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:  # the router names one route's methods; another route may share the path
        response.headers["Allow"] = ", ".join(allowed_methods(request))
    return response


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    full = storage_error(exc)
    if full is not None:
        log.error("storage full: %s", exc)
        return await faceledger_error(request, full)
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "INTERNAL", "internal error; see the server log")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` in the one shape."""
    app.add_exception_handler(FaceledgerError, faceledger_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
