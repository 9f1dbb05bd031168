"""FastAPI application: routes under /v1, one JSON error shape, inference off the event loop."""

from __future__ import annotations

import logging
from typing import Annotated

import anyio
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from faceledger import __version__
from faceledger.api.schemas import CompareResponse, DetectResponse, ErrorResponse, Health
from faceledger.config import Settings, get_settings
from faceledger.errors import FaceledgerError, PayloadTooLarge
from faceledger.matching.calibration import load_calibration
from faceledger.matching.compare import Template, compare
from faceledger.pipeline.engine import FaceEngine

log = logging.getLogger("faceledger.api")
ERRORS = {status: {"model": ErrorResponse} for status in (413, 422, 500)}


def _error(status: int, code: str, message: str, **details) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = FaceEngine(settings)
    limiter = anyio.CapacityLimiter(max(1, settings.workers))
    app = FastAPI(title="faceledger", version=__version__,
                  description="Accountable face recognition: detection, 1:1 verification with calibrated FMR.")
    app.state.engine = engine

    @app.exception_handler(FaceledgerError)
    async def _faceledger_error(_: Request, exc: FaceledgerError) -> JSONResponse:
        return _error(exc.http_status, exc.code, exc.message, **exc.details)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "INVALID_REQUEST", "the request does not match the API schema",
                      errors=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()])

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "INTERNAL", "internal error; see the server log")

    async def read(upload: UploadFile) -> bytes:
        data = await upload.read(settings.max_image_bytes + 1)
        if len(data) > settings.max_image_bytes:
            raise PayloadTooLarge(f"upload is over {settings.max_image_bytes} bytes", limit=settings.max_image_bytes)
        return data

    async def infer(fn, *args):
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    @app.get("/v1/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        return Health(status="ok", version=__version__, profile=engine.profile.name)

    @app.get("/v1/ready", response_model=Health, responses=ERRORS, tags=["service"])
    async def ready() -> Health:
        await infer(engine.load)
        return Health(status="ready", version=__version__, profile=engine.profile.name, model_id=engine.model_id)

    @app.post("/v1/detect", response_model=DetectResponse, responses=ERRORS, tags=["faces"])
    async def detect(image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP or TIFF.")]):
        analysis = await infer(lambda data: engine.analyze(data, embed=False), await read(image))
        return analysis.to_dict()

    @app.post("/v1/compare", response_model=CompareResponse, responses=ERRORS, tags=["faces"])
    async def compare_images(
        image_a: Annotated[UploadFile, File()], image_b: Annotated[UploadFile, File()],
        fmr: Annotated[float, Form(gt=0, lt=1, description="Target false-match rate of the decision.")] = 1e-4,
    ):
        a, b = await read(image_a), await read(image_b)
        (fa, i), (fb, j) = await infer(engine.single_face, a), await infer(engine.single_face, b)
        result = compare(Template(fa.templates[i], fa.model_id), Template(fb.templates[j], fb.model_id),
                         load_calibration(engine.model_id, settings.home), fmr)
        return {"model_id": engine.model_id, **result.to_dict()}

    return app
