"""The HTTP edge without faces: the code -> status map, the one error shape, refusals recorded once
before the service is reached (and never twice after), routers added from outside the app."""

from __future__ import annotations

import inspect
from typing import Annotated

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query

from faceledger import errors as E
from faceledger.api import errors
from faceledger.api.app import create_app
from faceledger.api.deps import Caller
from faceledger.config import Settings
from faceledger.service import Actor, Faceledger

EXPECTED = {
    422: ["INVALID_IMAGE", "EMPTY_IMAGE", "TRUNCATED_IMAGE", "NO_FACE", "MANY_FACES", "INCOMPATIBLE_TEMPLATES",
          "CONSENT_REQUIRED", "ENROLLMENT_REFUSED", "INVALID_ARGUMENT", "INVALID_REQUEST"],
    413: ["IMAGE_TOO_LARGE", "PAYLOAD_TOO_LARGE"], 415: ["UNSUPPORTED_MEDIA_TYPE"], 404: ["NOT_FOUND"],
    409: ["ALREADY_EXISTS", "NOT_CALIBRATED"], 401: ["UNAUTHORIZED"], 403: ["FORBIDDEN"], 429: ["RATE_LIMITED"],
    503: ["OVERLOADED", "STORAGE_UNAVAILABLE"], 500: ["MODEL_FILE", "TEMPLATE_KEY", "CONFIGURATION"],
    507: ["STORAGE_FULL"],
}


def request(app: FastAPI, method: str, url: str, **kwargs) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            return await http.request(method, url, **kwargs)

    return anyio.run(go)


def test_every_error_code_has_its_status():
    for status, codes in EXPECTED.items():
        for code in codes:
            assert errors.status_of(code) == status, code
    defined = {cls.code for _, cls in inspect.getmembers(E, inspect.isclass)
               if issubclass(cls, E.FaceledgerError) and cls is not E.FaceledgerError}
    assert defined <= set(errors.STATUS), f"codes without an HTTP status: {defined - set(errors.STATUS)}"
    assert errors.status_of("SOMETHING_NEW") == 400 and errors.status_of(E.FaceledgerError.code) == 400


class Teapot(E.FaceledgerError):
    code = "TEAPOT"


def test_handlers_answer_every_error_in_one_shape():
    app = FastAPI()
    errors.install(app)
    raised = {"not-found": E.NotFound("no such thing", thing="x"), "overloaded": E.Overloaded("busy"),
              "slow-down": E.RateLimited("wait", retry_after_s=2.6), "soon": E.RateLimited("wait", retry_after_s=0.2),
              "model": E.ModelFileError("missing model"), "teapot": Teapot("short and stout"),
              "bug": RuntimeError("a bug")}

    @app.get("/raise/{what}")
    async def boom(what: str, n: Annotated[int, Query(ge=1)] = 1):
        raise raised[what]

    def error(r: httpx.Response) -> dict:
        body = r.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
        return body["error"]

    r = request(app, "GET", "/raise/not-found")
    assert r.status_code == 404 and error(r) == {"code": "NOT_FOUND", "message": "no such thing",
                                                 "details": {"thing": "x"}}
    r = request(app, "GET", "/raise/slow-down")
    assert r.status_code == 429 and r.headers["retry-after"] == "3" and error(r)["details"]["retry_after_s"] == 2.6
    assert request(app, "GET", "/raise/soon").headers["retry-after"] == "1"
    assert request(app, "GET", "/raise/overloaded").status_code == 503
    assert request(app, "GET", "/raise/model").status_code == 500
    r = request(app, "GET", "/raise/teapot")
    assert r.status_code == 400 and error(r)["code"] == "TEAPOT"
    r = request(app, "GET", "/raise/bug")
    assert r.status_code == 500 and error(r) == {"code": "INTERNAL", "message": "internal error; see the server log",
                                                 "details": {}}
    r = request(app, "GET", "/raise/teapot", params={"n": 0})
    assert r.status_code == 422 and error(r)["code"] == "INVALID_REQUEST"
    assert error(r)["details"]["errors"][0]["loc"] == ["query", "n"]
    r = request(app, "GET", "/nowhere")
    assert r.status_code == 404 and error(r)["code"] == "NOT_FOUND"
    r = request(app, "POST", "/raise/teapot")
    assert r.status_code == 405 and error(r)["code"] == "METHOD_NOT_ALLOWED"


@pytest.fixture
def bare(tmp_path, backend):
    """An app over a fresh Faceledger, without its lifespan (no models: nothing here reaches inference); each backend."""
    fl = Faceledger(Settings(home=tmp_path, **backend))
    key, _ = fl.create_key(Actor.local("acme"), "acme", ["detect"], "edge tests")
    app = create_app(faceledger=fl)
    yield app, fl, {"Authorization": f"Bearer {key}"}
    fl.close()


def records(fl: Faceledger) -> list[tuple]:
    return [(r["operation"], r["outcome"], r["tenant"]) for r in fl.audit.query(limit=10**6)
            if r["operation"] != "key.create"]


def test_refusals_before_the_service_are_recorded_once(bare):
    app, fl, auth = bare
    r = request(app, "POST", "/v1/detect", json={"image": "aGVsbG8="})
    assert r.status_code == 401 and records(fl) == [("detect", "UNAUTHORIZED", None)]
    r = request(app, "POST", "/v1/detect", content=b"x", headers={**auth, "content-type": "text/plain"})
    assert r.status_code == 415 and records(fl)[1:] == [("detect", "UNSUPPORTED_MEDIA_TYPE", "acme")]

    class FullPool:
        waiting = 0

        async def run(self, fn, *args):
            raise E.Overloaded("the service is at capacity; retry shortly")

    pool, app.state.pool = app.state.pool, FullPool()
    try:
        r = request(app, "POST", "/v1/detect", json={"image": "aGVsbG8="}, headers=auth)
    finally:
        app.state.pool = pool
    assert r.status_code == 503 and records(fl)[2:] == [("detect", "OVERLOADED", "acme")]
    r = request(app, "POST", "/v1/compare", json={"image_a": "aGVsbG8=", "image_b": "aGVsbG8="}, headers=auth)
    assert r.status_code == 403 and records(fl)[3:] == [("compare", "FORBIDDEN", "acme")]  # by the service


def test_an_unexpected_error_in_the_service_is_recorded_once(bare, monkeypatch):
    app, fl, auth = bare

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(fl.engine, "analyze", broken)
    r = request(app, "POST", "/v1/detect", json={"image": "aGVsbG8="}, headers=auth)
    assert r.status_code == 500 and r.json()["error"]["code"] == "INTERNAL"
    assert records(fl) == [("detect", "INTERNAL", "acme")]


def test_a_router_added_from_outside_shares_auth_errors_and_metrics(bare):
    app, fl, auth = bare
    extra = APIRouter(tags=["extra"])

    @extra.get("/v1/whoami")
    async def whoami(caller: Caller) -> dict:
        return {"tenant": caller.tenant, "purpose": caller.purpose, "request_id": caller.request_id}

    @extra.get("/v1/depends-on-service")
    async def needs_admin(caller: Caller) -> dict:
        caller.require("admin")
        return {}

    app.include_router(extra)
    r = request(app, "GET", "/v1/whoami")
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    r = request(app, "GET", "/v1/whoami", headers={**auth, "X-Request-ID": "who-1"})
    assert r.status_code == 200 and r.json() == {"tenant": "acme", "purpose": "edge tests", "request_id": "who-1"}
    assert r.headers["x-request-id"] == "who-1"
    r = request(app, "GET", "/v1/depends-on-service", headers=auth)
    assert r.status_code == 403 and r.json()["error"]["details"]["scope"] == "admin"
    assert "/v1/whoami" in request(app, "GET", "/openapi.json").json()["paths"]
    assert request(app, "GET", "/metrics", headers={"Authorization": "Bearer t0ken"}).status_code == 401  # unset
    scraped = create_app(Settings(home=fl.settings.home, metrics_token="t0ken"), fl)
    text = request(scraped, "GET", "/metrics", headers={"Authorization": "Bearer t0ken"}).text
    assert 'faceledger_requests_total{method="GET",route="/v1/whoami",status="200"} 1.0' in text
    assert 'route="/v1/depends-on-service",status="403"' in text


def test_the_lifespan_starts_runs_retention_on_schedule_and_closes(tmp_path):
    fl = Faceledger(Settings(home=tmp_path, retention_interval=0.01))
    calls = []
    fl.startup = lambda: calls.append("startup") or {}

    def retention(now=None):
        calls.append("retention")
        if calls.count("retention") == 2:
            raise RuntimeError("one failed run does not stop the schedule")
        return []

    fl.run_retention = retention
    close = fl.close
    fl.close = lambda: (calls.append("close"), close())
    app = create_app(faceledger=fl)

    async def serve() -> None:
        async with app.router.lifespan_context(app):
            assert calls[0] == "startup"
            with anyio.fail_after(10):
                while calls.count("retention") < 4:
                    await anyio.sleep(0.01)
            assert "close" not in calls

    anyio.run(serve)
    assert calls[-1] == "close" and calls.count("close") == 1


def test_a_face_id_beyond_the_id_column_is_refused_cleanly(bare):
    """Face ids are 32-bit integers on PostgreSQL: a larger one (the schema fuzzer sent 13,249,769,315,868) is a
    422 at the API and "not found" in the service, never a database error, on every backend."""
    app, fl, _ = bare
    key, _ = fl.create_key(Actor.local("acme"), "acme", ["admin"], "edge tests")
    auth = {"Authorization": f"Bearer {key}"}
    assert request(app, "POST", "/v1/collections", json={"name": "gallery", "require_consent": False},
                   headers=auth).status_code in (200, 201)
    fl.gallery.create_subject("gallery", "ann", tenant="acme")
    r = request(app, "DELETE", "/v1/collections/gallery/subjects/ann/faces/13249769315868", headers=auth)
    assert r.status_code == 422, r.text
    with pytest.raises(E.NotFound):
        fl.gallery.delete_face("gallery", "ann", 2**31, tenant="acme")
    r = request(app, "DELETE", f"/v1/collections/gallery/subjects/ann/faces/{2**31 - 1}", headers=auth)
    assert r.status_code == 404, r.text
    assert fl.audit.query(seq=2**40) == [] and fl.audit.query(seq=0) == []  # the console's review route asks so
    with pytest.raises(E.NotFound):
        fl.decide_review(Actor.local("acme"), 2**40, accept=False)
