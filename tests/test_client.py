"""The Python client (faceledger.client): a method for every route of the API, each called in-process
(tests/inprocess.py's Bridge) against a real Faceledger; typed errors chosen by code; and the MANY_FACES
refusal naming the option that chooses a face in each front end (HTTP, Python, CLI)."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import time
import typing
from pathlib import Path

import httpx
import pytest
from PIL import Image

from faceledger.api.app import create_app
from faceledger.client import (
    ERRORS,
    AlreadyExistsError,
    ApiError,
    Client,
    ConsentRequiredError,
    ForbiddenError,
    InvalidImageError,
    InvalidRequestError,
    ManyFacesError,
    NoFaceError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    error_from,
)
from faceledger.config import Settings
from faceledger.service import Actor, Faceledger
from inprocess import Bridge, in_process
from videos import Walker, render

# every route of the API (method, path template): the client method that wraps it
ROUTES = {
    ("GET", "/v1/health"): "health",
    ("GET", "/v1/ready"): "ready",
    ("GET", "/metrics"): "metrics",
    ("POST", "/v1/detect"): "detect",
    ("POST", "/v1/compare"): "compare",
    ("POST", "/v1/collections"): "create_collection",
    ("GET", "/v1/collections"): "list_collections",
    ("GET", "/v1/collections/{collection}"): "get_collection",
    ("PATCH", "/v1/collections/{collection}"): "update_collection",
    ("DELETE", "/v1/collections/{collection}"): "delete_collection",
    ("POST", "/v1/collections/{collection}/subjects"): "create_subject",
    ("GET", "/v1/collections/{collection}/subjects"): "list_subjects",
    ("GET", "/v1/collections/{collection}/subjects/{subject_id}"): "get_subject",
    ("DELETE", "/v1/collections/{collection}/subjects/{subject_id}"): "delete_subject",
    ("POST", "/v1/collections/{collection}/subjects/{subject_id}/faces"): "enroll",
    ("GET", "/v1/collections/{collection}/subjects/{subject_id}/faces"): "list_faces",
    ("DELETE", "/v1/collections/{collection}/subjects/{subject_id}/faces/{face_id}"): "delete_face",
    ("POST", "/v1/collections/{collection}/identify"): "identify",
    ("POST", "/v1/collections/{collection}/subjects/{subject_id}/verify"): "verify",
    ("GET", "/v1/audit"): "query_audit",
    ("GET", "/v1/audit/verify"): "verify_audit",
    ("GET", "/v1/report"): "report",
    ("POST", "/v1/streams"): "create_stream",
    ("GET", "/v1/streams"): "list_streams",
    ("GET", "/v1/streams/{stream_id}"): "get_stream",
    ("DELETE", "/v1/streams/{stream_id}"): "delete_stream",
    ("GET", "/v1/streams/{stream_id}/events"): "stream_events",
    ("POST", "/v1/videos"): "submit_video",
    ("GET", "/v1/videos/{video_id}"): "video_results",
    ("GET", "/v1/webhooks/deliveries"): "webhook_deliveries",
    ("POST", "/v1/webhooks/replay"): "replay_webhooks",
}
KEYS = {"admin": ("acme", ["admin"]), "app": ("acme", ["detect", "verify", "identify", "enroll"]),
        "detect_only": ("acme", ["detect"]), "burst": ("acme", ["identify"])}
CHOOSE_WITH = {"http": "face (face_a / face_b for compare)", "cli": "--face (--face-a / --face-b for compare)",
               "python": "face= (face_a= / face_b= for compare)"}


class Recording(Bridge):
    """The in-process transport, noting each request's method, path and status."""

    def __init__(self, app, portal, seen: list) -> None:
        super().__init__(app, portal)
        self.seen = seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append((request.method, request.url.path, response.status_code))
        return response


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = tmp_path_factory.mktemp("client")
    settings = Settings(home=home, cache=Path(os.environ["FACELEDGER_CACHE"]), max_image_bytes=3_000_000,
                        identify_per_minute=20, stream_allowed_hosts="127.0.0.1/32")
    fl = Faceledger(settings)
    keys = {name: fl.create_key(Actor.local(tenant), tenant, scopes, "client tests")[0]
            for name, (tenant, scopes) in KEYS.items()}
    app = create_app(settings, fl)
    seen: list = []
    with in_process(app) as portal:
        clients = {name: Client("http://testserver", key, transport=Recording(app, portal, seen))
                   for name, key in keys.items()}
        clients["anonymous"] = Client("http://testserver", transport=Recording(app, portal, seen))
        yield {"asgi": app, "fl": fl, "seen": seen, **clients}


def template_of(method: str, path: str) -> tuple[str, str] | None:
    for m, template in ROUTES:
        if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return m, template
    return None


def test_the_client_has_a_typed_method_for_every_route(api):
    spec = api["asgi"].openapi()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert routes == set(ROUTES), routes ^ set(ROUTES)
    for name in ROUTES.values():
        method = getattr(Client, name)
        hints = typing.get_type_hints(method)
        params = [p for p in inspect.signature(method).parameters if p != "self"]
        assert "return" in hints and all(p in hints for p in params), (name, hints)


def test_every_client_method_in_process(api, people, tmp_path):
    admin, app, seen = api["admin"], api["app"], api["seen"]
    seen.clear()
    bbt, ex = people / "bbt", people / "face_recognition_examples"
    health = admin.health()
    assert health["status"] == "ok" and health["model_id"] == admin.ready()["model_id"]
    assert len(app.detect(ex / "two_people.jpg")["faces"]) == 2
    assert app.compare(ex / "obama.jpg", ex / "obama2.jpg", fmr=1e-4)["match"] is True

    assert admin.create_collection("club", target_fmr=1e-4, retention_days=365)["retention_days"] == 365
    assert [c["name"] for c in admin.list_collections()] == ["club"]
    assert admin.get_collection("club")["subjects"] == 0
    assert admin.update_collection("club", target_fpir=0.01)["target_fpir"] == 0.01
    created = app.create_subject("club", "amy", display_name="Amy", metadata={"team": "a"},
                                 consent={"basis": "explicit-consent", "reference": "form-1"})
    assert created["face_count"] == 0 and created["faces"] == []
    enrolled = app.enroll("club", "penny", [bbt / "penny" / "penny1.png", bbt / "penny" / "penny2.png"],
                          display_name="Penny", consent_basis="explicit-consent", reference="case-7")
    assert enrolled["face_count"] == 2 and len(enrolled["faces"]) == 2
    assert app.enroll("club", "amy", [bbt / "amy" / "amy1.png"])["face_count"] == 1  # the subject's own consent
    face = app.identify("club", bbt / "penny" / "penny4.png", top_k=2)["faces"][0]
    assert face["decision"] == "match" and face["subject_id"] == "penny"
    assert app.verify("club", "penny", bbt / "penny" / "penny5.png", face=0)["match"] is True
    faces = app.list_faces("club", "penny")
    assert [f["face_id"] for f in faces] == [f["face_id"] for f in enrolled["faces"]]
    receipt = app.delete_face("club", "penny", faces[0]["face_id"])
    assert receipt["face_ids"] == [faces[0]["face_id"]]
    penny = app.get_subject("club", "penny")
    assert penny["face_count"] == 1 and len(penny["faces"]) == 1
    listed = {s["subject_id"]: s for s in app.list_subjects("club")}
    assert {k: v["face_count"] for k, v in listed.items()} == {"amy": 1, "penny": 1}
    assert all("faces" not in s for s in listed.values())
    assert app.delete_subject("club", "amy")["subject_ids"] == ["amy"]

    records = admin.query_audit(subject_id="penny", limit=100)
    assert {"enroll", "identify", "verify", "erase"} <= {r["operation"] for r in records}
    assert [r["reference"] for r in admin.query_audit(operation="enroll", limit=10) if r["reference"]] == ["case-7"]
    assert admin.verify_audit()["ok"] is True
    fl = api["fl"]  # a report of the running model, as `faceledger report` leaves it
    folder = fl.settings.home / "reports" / f"report-{fl.engine.profile.name}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps({"model_id": fl.engine.model_id, "quick": True}))
    assert admin.report() == {"model_id": fl.engine.model_id, "quick": True}
    assert "faceledger_requests_total" in admin.metrics()
    # cameras and video: a short count-only video (made here), then a live stream from an allow-listed host that
    # does not answer (it keeps reconnecting), listed, read and deleted
    clip = tmp_path / "clip.mp4"
    render([Walker("penny", bbt / "penny" / "penny1.png", 0.0, 1.5, 40)], clip, seconds=2, width=320, height=240)
    video = app.submit_video(clip, purpose="counting", mode="count-only")
    deadline = time.time() + 60
    while app.get_stream(video["stream_id"])["state"] == "running" and time.time() < deadline:
        time.sleep(0.2)
    assert app.video_results(video["stream_id"])["stream"]["state"] == "ended"
    assert app.stream_events(video["stream_id"])["stream_id"] == video["stream_id"]
    stream = admin.create_stream("rtsp://127.0.0.1:9/none", purpose="lobby", mode="detect-only")
    assert {s["stream_id"] for s in admin.list_streams()} == {video["stream_id"], stream["stream_id"]}
    assert admin.webhook_deliveries() == [] and admin.replay_webhooks() == {"replayed": 0}
    admin.delete_stream(stream["stream_id"])
    assert admin.delete_collection("club")["subject_ids"] == ["penny"]

    called = {template_of(method, path) for method, path, status in seen if status < 400}
    assert called >= set(ROUTES), set(ROUTES) - called


def test_errors_are_typed_by_code(api, people, tmp_path):
    admin, app = api["admin"], api["app"]
    photo = people / "bbt" / "raj" / "raj1.png"
    Image.new("RGB", (160, 160), (90, 90, 90)).save(tmp_path / "grey.png")
    admin.create_collection("typed")

    def raised(cls, call):
        with pytest.raises(cls) as info:
            call()
        assert isinstance(info.value, ApiError) and type(info.value) is cls
        return info.value

    e = raised(UnauthorizedError, lambda: api["anonymous"].list_collections())
    assert (e.status, e.code) == (401, "UNAUTHORIZED")
    e = raised(ForbiddenError, lambda: api["detect_only"].identify("typed", photo))
    assert (e.status, e.code, e.details["scope"]) == (403, "FORBIDDEN", "identify")
    e = raised(NotFoundError, lambda: app.get_subject("typed", "nobody"))
    assert (e.status, e.code) == (404, "NOT_FOUND")
    assert raised(AlreadyExistsError, lambda: admin.create_collection("typed")).status == 409
    assert raised(InvalidRequestError, lambda: admin.create_collection("bad name!")).code == "INVALID_REQUEST"
    assert raised(InvalidImageError, lambda: app.detect(b"not an image")).code == "INVALID_IMAGE"
    assert raised(InvalidImageError, lambda: app.detect(b"")).code == "EMPTY_IMAGE"
    assert raised(PayloadTooLargeError, lambda: app.detect(b"\x00" * 3_100_000)).status == 413
    assert raised(NoFaceError, lambda: app.compare(tmp_path / "grey.png", photo)).code == "NO_FACE"
    e = raised(ConsentRequiredError, lambda: app.enroll("typed", "raj", [photo]))
    assert e.code == "CONSENT_REQUIRED"
    two = people / "face_recognition_examples" / "two_people.jpg"
    e = raised(ManyFacesError, lambda: app.enroll("typed", "raj", [two], consent_basis="explicit-consent"))
    assert e.faces == 2 and len(e.boxes) == 2 and "face_a=" in str(e)
    limited = None
    for _ in range(45):  # the limit is 20 a clock minute: 41 tries reach it even if a minute turns meanwhile
        try:
            api["burst"].identify("typed", tmp_path / "grey.png")
        except RateLimitedError as exc:
            limited = exc
            break
    assert limited is not None and limited.status == 429 and limited.retry_after >= 1
    admin.delete_collection("typed")


def test_error_answers_without_a_known_code():
    def answer(status: int, **kwargs) -> ApiError:
        return error_from(httpx.Response(status, request=httpx.Request("GET", "http://x/"), **kwargs))

    full = answer(507, json={"error": {"code": "STORAGE_FULL", "message": "disk full", "details": {}}})
    assert type(full) is ServerError and full.code == "STORAGE_FULL"
    gateway = answer(502, text="<html>bad gateway</html>")
    assert type(gateway) is ServerError and gateway.code == "HTTP_ERROR" and "bad gateway" in gateway.message
    odd = answer(418, json={"error": {"code": "TEAPOT", "message": "no"}})
    assert type(odd) is ApiError and odd.details == {}
    limited = answer(429, json={"error": {"code": "RATE_LIMITED", "message": "slow down", "details": {}}},
                     headers={"Retry-After": "7"})
    assert isinstance(limited, RateLimitedError) and limited.retry_after == 7
    assert set(ERRORS) <= {"INVALID_REQUEST", "INVALID_ARGUMENT", "INVALID_IMAGE", "EMPTY_IMAGE", "TRUNCATED_IMAGE",
                           "NO_FACE", "MANY_FACES", "ENROLLMENT_REFUSED", "CONSENT_REQUIRED", "PAYLOAD_TOO_LARGE",
                           "IMAGE_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND",
                           "ALREADY_EXISTS", "NOT_CALIBRATED", "RATE_LIMITED", "OVERLOADED"}


def test_many_faces_names_the_option_of_each_front_end_and_the_option_works(api, people, tmp_path):
    admin, app = api["admin"], api["app"]
    ex = people / "face_recognition_examples"
    two, obama, biden = ex / "two_people.jpg", ex / "obama.jpg", ex / "biden.jpg"
    # HTTP: the answer names the fields, its details how each front end chooses
    r = app.http.post("/v1/compare", files={"image_a": two.read_bytes(), "image_b": obama.read_bytes()})
    error = r.json()["error"]
    assert r.status_code == 422 and error["code"] == "MANY_FACES" and "face_a" in error["message"]
    assert error["details"]["choose_with"] == CHOOSE_WITH and error["details"]["faces"] == 2
    # Python: compare with face_a / face_b, verify and enrol with face
    with pytest.raises(ManyFacesError):
        app.compare(two, obama)
    matches = [app.compare(two, obama, face_a=i)["match"] for i in (0, 1)]
    assert sorted(matches) == [False, True]
    which = matches.index(True)
    assert app.compare(obama, two, face_b=which)["match"] is True
    with pytest.raises(ManyFacesError) as info:
        app.compare(two, obama, face_a=5)  # no such face
    assert "5" in info.value.message
    admin.create_collection("leaders", require_consent=False)
    app.enroll("leaders", "obama", [obama])
    app.enroll("leaders", "biden", [two], face=1 - which)
    with pytest.raises(ManyFacesError):
        app.verify("leaders", "obama", two)
    assert app.verify("leaders", "obama", two, face=which)["match"] is True
    assert app.verify("leaders", "biden", biden)["match"] is True
    admin.delete_collection("leaders")
    # CLI: the error names --face-a / --face-b, and they choose
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", "compare", str(two), str(obama)], env=env,
                         capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 2, out.stderr
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "MANY_FACES" and error["details"]["choose_with"] == CHOOSE_WITH
    assert "--face-a" in error["message"] and "--face-a" in out.stderr
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", "compare", str(two), str(obama), "--face-a",
                          str(which)], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["match"] is True
