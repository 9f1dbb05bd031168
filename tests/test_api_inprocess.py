"""The HTTP API in-process (httpx's ASGI transport, lifespan included) over a real Faceledger with real faces:
keys, tenants, scopes, enrolment, identification, erasure, limits, one audit record per operation, metrics."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio.from_thread
import httpx
import pytest
from fastapi import FastAPI

from faceledger.api.app import create_app
from faceledger.client import ApiError, Client
from faceledger.config import Settings
from faceledger.service import Actor, Faceledger
from faceledger.service.guardrails import RateLimiter
from backends import BACKENDS, backend_settings
from inprocess import Bridge, in_process

CAST = ("amy", "howard", "leonard", "penny", "sheldon")
KEYS = {  # name: (tenant, scopes, purpose)
    "admin": ("acme", ["admin"], "tests: admin"),
    "app": ("acme", ["detect", "verify", "identify", "enroll"], "building access control"),
    "detect_only": ("acme", ["detect"], "kiosk"),
    "other": ("globex", ["admin"], "other tenant"),
    "revoked": ("acme", ["admin"], "old"),
    "burst": ("acme", ["identify"], "rate test"),
}


def client(app: FastAPI, portal: anyio.from_thread.BlockingPortal, key: str | None = None) -> Client:
    return Client("http://testserver", key, transport=Bridge(app, portal))


@dataclass
class Api:
    """One app in-process: the Faceledger under it, a faceledger Client per key, ``http`` without a key."""

    app: FastAPI
    portal: anyio.from_thread.BlockingPortal
    faceledger: Faceledger
    settings: Settings
    keys: dict[str, str]
    key_ids: dict[str, str]
    clients: dict[str, Client] = field(default_factory=dict)

    def client(self, key: str | None = None, *, address: str | None = None) -> Client:
        """A client with ``key``; from ``address`` instead of 127.0.0.1 when given (refused authentications are
        recorded once a minute per address)."""
        if address is None:
            return client(self.app, self.portal, key)
        bridge = Bridge(self.app, self.portal)
        bridge.asgi = httpx.ASGITransport(app=self.app, client=(address, 50000))
        return Client("http://testserver", key, transport=bridge)

    @property
    def http(self) -> httpx.Client:
        return self.clients["anonymous"].http

    def __getitem__(self, name: str) -> Client:
        return self.clients[name]


@pytest.fixture(scope="module", params=list(BACKENDS))
def api(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("api")
    settings = Settings(home=home, **backend_settings(request.param, home, lambda: request.getfixturevalue("postgres"),
                                    lambda: request.getfixturevalue("milvus")),
                        cache=Path(os.environ["FACELEDGER_CACHE"]), max_image_bytes=3_000_000,
                        identify_per_minute=100)
    fl = Faceledger(settings)
    keys, key_ids = {}, {}
    for name, (tenant, scopes, purpose) in KEYS.items():
        keys[name], info = fl.create_key(Actor.local(tenant), tenant, scopes, purpose)
        key_ids[name] = info["key_id"]
    fl.revoke_key(Actor.local("acme"), key_ids["revoked"])
    app = create_app(settings, fl)
    with in_process(app) as portal:  # the lifespan runs: models load, retention starts; closes at the end
        api = Api(app, portal, fl, settings, keys, key_ids)
        api.clients = {name: api.client(key) for name, key in keys.items()}
        api.clients["anonymous"] = api.client()
        yield api


@pytest.fixture(scope="module")
def cast(api, people):
    admin, app = api["admin"], api["app"]
    admin.create_collection("staff", target_fmr=1e-4)
    for name in CAST:
        photos = [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)]
        info = app.enroll("staff", name, photos, display_name=name.title(), consent_basis="explicit-consent",
                          consent_reference=f"form-{name}")
        assert len(info["faces"]) == 2 and all(f["created"] for f in info["faces"])
    return api


def snapshot(client: Client) -> list:
    return [(c["name"], c["subjects"], c["faces"]) for c in client.list_collections()]


def test_health_ready_openapi_docs_request_id(api):
    http = api.http
    assert http.get("/v1/health").json()["status"] == "ok"
    ready = http.get("/v1/ready").json()
    assert ready["status"] == "ready" and ready["model_id"].startswith("face_recognition_sface")
    spec = http.get("/openapi.json").json()
    assert "/v1/collections/{collection}/identify" in spec["paths"]
    body = spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert {"HTTPBearer", "APIKeyHeader"} == set(spec["components"]["securitySchemes"])
    assert http.get("/docs").status_code == 200
    r = http.get("/v1/health", headers={"X-Request-ID": "req-given"})
    assert r.headers["x-request-id"] == "req-given"
    assert len(http.get("/v1/health").headers["x-request-id"]) == 32


def test_health_names_the_model_without_loading_it(tmp_path, monkeypatch):
    from faceledger.models.base import OnnxModel

    fl = Faceledger(Settings(home=tmp_path, cache=Path(os.environ["FACELEDGER_CACHE"])))
    app = create_app(fl.settings, fl)
    fl.engine.recognizer("sface")._session = None  # (the gallery asked it for its dimension)
    monkeypatch.setattr(OnnxModel, "_load", lambda self: pytest.fail(f"health loaded {self.path.name}"))
    with in_process(app, lifespan=False) as portal:  # no start-up: the models stay unloaded
        health = client(app, portal).health()
    assert health["status"] == "ok" and health["model_id"] == fl.engine.model_id
    assert health["model_id"].startswith("face_recognition_sface")
    assert fl.engine.detector._session is None and fl.engine.recognizer("sface")._session is None
    fl.close()


def test_subject_listings_count_faces_and_details_list_them(cast):
    app = cast["app"]
    listed = app.list_subjects("staff")
    assert listed and all(set(s) == {"subject_id", "display_name", "metadata", "consent", "created_at",
                                      "face_count"} for s in listed)
    counts = {s["subject_id"]: s["face_count"] for s in listed}
    for name in CAST:
        subject = app.get_subject("staff", name)
        assert subject["face_count"] == len(subject["faces"]) == counts[name] == 2
    spec = app.http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    listing = spec["paths"]["/v1/collections/{collection}/subjects"]["get"]["responses"]["200"]
    assert listing["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/SubjectSummary")
    assert "faces" not in schemas["SubjectSummary"]["properties"]
    assert {"faces", "face_count"} <= set(schemas["SubjectOut"]["properties"])


def test_metrics_need_an_admin_key_or_the_metrics_token(cast):
    http = cast.http
    r = http.get("/metrics")
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    assert http.get("/metrics", headers={"Authorization": "Bearer fl_000000000000_notakey"}).status_code == 401
    r = http.get("/metrics", headers={"Authorization": f"Bearer {cast.keys['app']}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    r = http.get("/metrics", headers={"X-API-Key": cast.keys["admin"]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("faceledger_requests_total", "faceledger_request_seconds", "faceledger_inference_waiting",
                 "faceledger_faces_processed_total", "faceledger_operations_total", "faceledger_gallery_faces"):
        assert name in text, name
    # gallery sizes by opaque collection id, requests by route template: no tenant or collection name
    assert 'faceledger_gallery_faces{collection_id="' in text
    assert 'route="/v1/collections/{collection}/subjects/{subject_id}/faces"' in text
    lowered = text.lower()
    for name in ("acme", "globex", "staff", *CAST, "tenant="):
        assert name not in lowered, name

    # with FACELEDGER_METRICS_TOKEN set, a scraper holding it needs no key (no lifespan: the same Faceledger)
    scraper = client(create_app(cast.settings.model_copy(update={"metrics_token": "scrape-secret"}), cast.faceledger),
                     cast.portal).http
    assert scraper.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200
    assert scraper.get("/metrics", headers={"Authorization": "Bearer scrape-secreT"}).status_code == 401
    assert scraper.get("/metrics").status_code == 401
    assert scraper.get("/metrics", headers={"Authorization": f"Bearer {cast.keys['admin']}"}).status_code == 200


def test_enrol_identify_unknown_erase(cast, people):
    app = cast["app"]
    for name in CAST:
        face = app.identify("staff", people / "bbt" / name / f"{name}4.png")["faces"][0]
        assert face["decision"] == "match" and face["subject_id"] == name, face
        assert face["candidates"][0]["fmr"] < 1e-4
    stranger = app.identify("staff", people / "bbt" / "raj" / "raj1.png")["faces"][0]
    assert stranger["decision"] == "unknown" and stranger["subject_id"] is None
    assert app.verify("staff", "penny", people / "bbt" / "penny" / "penny5.png")["match"] is True
    assert app.verify("staff", "amy", people / "bbt" / "penny" / "penny5.png")["match"] is False
    subject = app.get_subject("staff", "penny")
    assert subject["consent"]["basis"] == "explicit-consent" and subject["consent"]["reference"] == "form-penny"
    assert [f["face_id"] for f in subject["faces"]] == [f["face_id"] for f in
                                                        app._call("GET", "/v1/collections/staff/subjects/penny/faces")]
    assert {s["subject_id"] for s in app.list_subjects("staff")} == set(CAST)
    page = [s["subject_id"] for s in app.list_subjects("staff", limit=2, offset=1)]
    assert len(page) == 2 and set(page) <= set(CAST)

    # enrol over JSON with base64 too, then erase and never find again
    b64 = base64.b64encode((people / "bbt" / "stuart" / "stuart1.png").read_bytes()).decode()
    r = app.http.post("/v1/collections/staff/subjects/stuart/faces",
                      json={"images": [b64], "consent_basis": "explicit-consent"})
    assert r.status_code == 201, r.text
    probe = people / "bbt" / "stuart" / "stuart2.png"
    assert app.identify("staff", probe)["faces"][0]["subject_id"] == "stuart"
    receipt = app.delete_subject("staff", "stuart")
    assert receipt["subject_ids"] == ["stuart"] and receipt["faces_deleted"] == 1
    assert isinstance(receipt["audit_seq"], int)  # the receipt names its audit record
    record = [r for r in cast.faceledger.audit.query(limit=10**6) if r["seq"] == receipt["audit_seq"]][0]
    assert record["operation"] == "erase" and record["subject_ids"] == ["stuart"]
    after = app.identify("staff", probe)["faces"][0]
    assert "stuart" not in [c["subject_id"] for c in after["candidates"]] and after["decision"] == "unknown"
    with pytest.raises(ApiError) as info:
        app.get_subject("staff", "stuart")
    assert info.value.status == 404

    # one face of a subject erased on its own
    info = app.enroll("staff", "kripke", [people / "bbt" / "raj" / "raj2.png", people / "bbt" / "raj" / "raj3.png"],
                      consent_basis="explicit-consent")
    face_id = info["faces"][0]["face_id"]
    receipt = app.delete_face("staff", "kripke", face_id)
    assert receipt["face_ids"] == [face_id] and isinstance(receipt["audit_seq"], int)
    assert [f["face_id"] for f in app.get_subject("staff", "kripke")["faces"]] == [info["faces"][1]["face_id"]]
    with pytest.raises(ApiError) as err:
        app.delete_face("staff", "kripke", face_id)
    assert err.value.status == 404
    app.delete_subject("staff", "kripke")


def test_detect_and_compare_over_json(cast, people):
    app = cast["app"]
    ex = people / "face_recognition_examples"
    r = app.http.post("/v1/detect", json={"image": base64.b64encode((ex / "two_people.jpg").read_bytes()).decode()})
    assert r.status_code == 200 and len(r.json()["faces"]) == 2
    same = app.compare(ex / "obama.jpg", ex / "obama2.jpg")
    assert same["match"] is True and same["fmr"] < 1e-4 and same["model_id"].startswith("face_recognition_sface")
    # an image with several faces: say which with face_a / face_b (multipart fields or JSON)
    b64 = {name: base64.b64encode((ex / name).read_bytes()).decode() for name in ("two_people.jpg", "obama.jpg")}
    r = app.http.post("/v1/compare", json={"image_a": b64["obama.jpg"], "image_b": b64["two_people.jpg"]})
    assert r.status_code == 422 and r.json()["error"]["details"]["choose_with"]["http"].startswith("face")
    chosen = [app.http.post("/v1/compare", json={"image_a": b64["obama.jpg"], "image_b": b64["two_people.jpg"],
                                                 "face_b": i}).json()["match"] for i in (0, 1)]
    assert sorted(chosen) == [False, True]
    r = app.http.post("/v1/compare", json={"image_a": b64["obama.jpg"], "image_b": b64["obama.jpg"], "face_a": -1})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST"


def test_keys_scopes_and_tenants(cast, people):
    admin, app, other = cast["admin"], cast["app"], cast["other"]
    before = snapshot(admin)
    photo = people / "bbt" / "amy" / "amy3.png"
    # no key, a wrong key, a revoked key: 401
    for client in (cast["anonymous"], cast.client("fl_000000000000_notakey"), cast["revoked"]):
        with pytest.raises(ApiError) as info:
            client.identify("staff", photo)
        assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"
        with pytest.raises(ApiError) as info:
            client.list_collections()  # read-only routes authenticate too
        assert info.value.status == 401
    # X-API-Key works like the bearer token
    r = cast.http.get("/v1/collections", headers={"X-API-Key": cast.keys["app"]})
    assert r.status_code == 200 and [c["name"] for c in r.json()] == ["staff"]
    # a key without the scope: 403
    with pytest.raises(ApiError) as info:
        cast["detect_only"].identify("staff", photo)
    assert info.value.status == 403 and info.value.details["scope"] == "identify"
    with pytest.raises(ApiError) as info:
        cast["detect_only"].list_collections()
    assert info.value.status == 403
    with pytest.raises(ApiError) as info:
        cast["detect_only"].get_subject("staff", "amy")
    assert info.value.status == 403
    with pytest.raises(ApiError) as info:
        app.delete_collection("staff")  # deleting a collection needs admin
    assert info.value.status == 403
    with pytest.raises(ApiError) as info:
        app.create_collection("mine")  # and creating one
    assert info.value.status == 403
    assert cast["detect_only"].detect(photo)["faces"]
    # another tenant: cannot list, read, search, enrol into or delete acme's collection, whatever it guesses
    assert other.list_collections() == []
    for call in (lambda: other.get_collection("staff"), lambda: other.identify("staff", photo),
                 lambda: other.get_subject("staff", "amy"), lambda: other.delete_subject("staff", "amy"),
                 lambda: other.list_subjects("staff"), lambda: other.verify("staff", "amy", photo),
                 lambda: other.delete_collection("staff"),
                 lambda: other.enroll("staff", "mallory", [photo], consent_basis="explicit-consent")):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 404 and info.value.code == "NOT_FOUND"
    # its own collection of the same name is a different gallery
    other.create_collection("staff")
    assert other.identify("staff", photo)["faces"][0]["candidates"] == []
    with pytest.raises(ApiError) as info:
        other.create_collection("staff")
    assert info.value.status == 409 and info.value.code == "ALREADY_EXISTS"
    assert snapshot(admin) == before


@pytest.mark.parametrize("payload, status, code", [
    (b"", 422, "EMPTY_IMAGE"), (b"not an image at all", 422, "INVALID_IMAGE"),
    (b"\x00" * 3_100_000, 413, "PAYLOAD_TOO_LARGE")])
def test_bad_uploads_get_one_error_shape(cast, payload, status, code):
    r = cast["app"].http.post("/v1/detect", files={"image": ("x.jpg", payload)})
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"code", "message", "details"} and error["code"] == code


def test_bad_requests_change_nothing(cast, people, tmp_path):
    app, http = cast["app"], cast["app"].http
    before = snapshot(cast["admin"])
    r = http.post("/v1/detect", content=b"raw", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    r = http.post("/v1/detect", json={"image": "https://example.com/face.jpg"})
    assert r.status_code == 422 and "never fetched" in r.json()["error"]["message"]
    r = http.post("/v1/detect", json={"image": "/etc/passwd"})
    assert r.status_code == 422  # a JSON string is base64, never a server path
    r = http.post("/v1/detect", json={})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST"
    r = http.post("/v1/detect", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST"
    r = cast["admin"].http.post("/v1/collections", json={"name": "bad name!"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST"
    assert r.json()["error"]["details"]["errors"][0]["loc"] == ["body", "name"]
    r = http.get("/v1/collections/staff/subjects", params={"limit": 0})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST"
    r = http.delete("/v1/collections/staff/subjects/amy/faces/0")
    assert r.status_code == 422
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    with pytest.raises(ApiError) as info:
        app.enroll("staff", "ghost", [tmp_path / "grey.png"], consent_basis="explicit-consent")
    assert info.value.code == "NO_FACE" and info.value.status == 422
    with pytest.raises(ApiError) as info:
        app.enroll("staff", "newbie", [people / "bbt" / "raj" / "raj2.png"])  # no consent record
    assert info.value.code == "CONSENT_REQUIRED" and info.value.status == 422
    with pytest.raises(ApiError) as info:
        app.enroll("staff", "obama", [people / "face_recognition_examples" / "two_people.jpg"],
                   consent_basis="explicit-consent")
    assert info.value.code == "MANY_FACES" and info.value.status == 422
    with pytest.raises(ApiError) as info:
        app.create_subject("staff", "amy")
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        app.identify("nowhere", people / "bbt" / "raj" / "raj2.png")
    assert info.value.status == 404
    r = http.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    r = http.put("/v1/detect")
    assert r.status_code == 405 and r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert snapshot(cast["admin"]) == before


def test_identify_rate_limit_per_key(cast, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 120, 120)).save(tmp_path / "small.png")
    burst, seen = cast["burst"], []
    fl, saved = cast.faceledger, cast.faceledger.rate
    frozen = time.time()  # one clock minute for the whole check: a minute turning mid-test would reset the window
    fl.rate = RateLimiter(saved.capacity, fl.gallery.store.count_use, clock=lambda: frozen)
    try:
        for _ in range(110):
            r = burst.http.post("/v1/collections/staff/identify",
                                files={"image": (tmp_path / "small.png").read_bytes()})
            seen.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "RATE_LIMITED" and int(r.headers["retry-after"]) >= 1
                break
        assert seen[-1] == 429 and 95 <= len(seen) <= 105
        # the limit is per key: the application's own key still works
        assert cast["app"].http.post("/v1/collections/staff/identify",
                                     files={"image": (tmp_path / "small.png").read_bytes()}).status_code == 200
    finally:
        fl.rate = saved


def audit_rows(api, **params) -> list[dict]:
    r = api["admin"].http.get("/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_operation_writes_exactly_one_audit_record(cast, people, tmp_path):
    app, photo = cast["app"], people / "bbt" / "penny" / "penny3.png"
    start = audit_rows(cast, limit=10000)[-1]["seq"]
    whole_log = cast.faceledger.audit  # the whole log: refusals before authentication have no tenant

    def call(expected_op, outcome, fn):
        before = whole_log.query(limit=10**6)[-1]["seq"]
        try:
            fn()
        except ApiError:
            pass
        rows = [r for r in whole_log.query(limit=10**6) if r["seq"] > before]
        assert [(r["operation"], r["outcome"]) for r in rows] == [(expected_op, outcome)]
        return rows[0]

    r = app.http.post("/v1/collections/staff/identify", files={"image": photo.read_bytes()},
                      data={"reference": "case-42"}, headers={"X-Request-ID": "req-identify-1"})
    assert r.status_code == 200
    rows = [x for x in audit_rows(cast, limit=10000) if x["request_id"] == "req-identify-1"]
    assert len(rows) == 1
    rec = rows[0]
    assert rec["operation"] == "identify" and rec["outcome"] == "ok" and rec["reference"] == "case-42"
    assert rec["key_id"] == cast.key_ids["app"] and rec["purpose"] == "building access control"
    assert rec["tenant"] == "acme" and rec["client"] == "127.0.0.1" and rec["collection"] == "staff"
    assert rec["subject_ids"][0] == "penny" and rec["decision"] == "match:penny" and len(rec["scores"]) >= 1

    call("detect", "ok", lambda: app.detect(photo))
    call("compare", "ok", lambda: app.compare(photo, people / "bbt" / "penny" / "penny4.png"))
    call("verify", "ok", lambda: app.verify("staff", "penny", photo))
    call("identify", "FORBIDDEN", lambda: cast["detect_only"].identify("staff", photo))
    # (refused authentications: one record per address and minute, so each from an address of its own)
    unauthorized = call("identify", "UNAUTHORIZED",
                        lambda: cast.client(address="10.9.0.1").identify("staff", photo))
    assert unauthorized["tenant"] is None and unauthorized["key_id"] is None and unauthorized["collection"] == "staff"
    assert unauthorized["client"] == "10.9.0.1"
    call("identify", "NOT_FOUND", lambda: cast["other"].identify("no-such-collection", photo))
    # refusals before the service is reached: a bad body, a missing key with a bad body
    bad = call("identify", "UNSUPPORTED_MEDIA_TYPE",
               lambda: app.http.post("/v1/collections/staff/identify", content=b"x",
                                     headers={"content-type": "text/plain"}))
    assert bad["key_id"] == cast.key_ids["app"] and bad["tenant"] == "acme"
    call("detect", "INVALID_REQUEST", lambda: app.http.post("/v1/detect", json={}))
    call("enroll", "PAYLOAD_TOO_LARGE", lambda: app.http.post("/v1/collections/staff/subjects/x/faces",
                                                              files={"images": b"\x00" * 3_100_000}))
    call("detect", "UNAUTHORIZED", lambda: cast.client(address="10.9.0.2").http.post("/v1/detect", json={}))
    call("enroll", "INVALID_ARGUMENT",  # a consent reference without a basis
         lambda: app.enroll("staff", "y", [photo], consent_reference="form-without-basis"))
    call("audit.verify", "FORBIDDEN", lambda: app.http.get("/v1/audit/verify"))
    from PIL import Image

    Image.new("RGB", (120, 120), (50, 50, 50)).save(tmp_path / "blank.png")
    refused = call("enroll", "NO_FACE", lambda: app.enroll("staff", "ghost", [tmp_path / "blank.png"],
                                                            consent_basis="explicit-consent"))
    assert refused["subject_ids"] == ["ghost"]
    enrolled = call("enroll", "ok", lambda: app.enroll("staff", "temp", [people / "bbt" / "raj" / "raj1.png"],
                                                       consent_basis="explicit-consent"))
    assert enrolled["subject_ids"] == ["temp"] and enrolled["decision"] == "enrolled 1 faces"
    erased = call("erase", "ok", lambda: app.delete_subject("staff", "temp"))
    assert erased["subject_ids"] == ["temp"] and erased["decision"] == "erased 1 faces"
    call("subject.create", "ok", lambda: app.create_subject("staff", "paper", consent={"basis": "contract"}))
    call("erase", "ok", lambda: app.delete_subject("staff", "paper"))
    call("collection.create", "ok", lambda: cast["admin"].create_collection("scratch"))
    call("collection.create", "ALREADY_EXISTS", lambda: cast["admin"].create_collection("scratch"))
    deleted = call("collection.delete", "ok", lambda: cast["admin"].delete_collection("scratch"))
    assert deleted["collection"] == "scratch"
    # reads are not audited
    call("detect", "ok", lambda: (app.list_collections(), app.get_collection("staff"), app.list_subjects("staff"),
                                  app.get_subject("staff", "penny"), app.detect(photo)))

    # a subject-access query: every operation that involved penny
    penny = audit_rows(cast, subject_id="penny", limit=10000)
    assert {"identify", "verify"} <= {r["operation"] for r in penny}
    # records hold ids, scores and decisions, never templates or images
    for row in audit_rows(cast, limit=10000):
        assert set(row) == {"seq", "at", "tenant", "key_id", "operation", "collection", "subject_ids", "scores",
                            "decision", "outcome", "purpose", "reference", "request_id", "client", "prev_hash",
                            "hash"}
        assert all(len(str(v)) < 600 for v in row.values())
        assert len(row["scores"]) <= 100
    assert audit_rows(cast, limit=10000)[-1]["seq"] > start
    erasures = audit_rows(cast, operation="erase", limit=10000)
    assert erasures and all(r["operation"] == "erase" for r in erasures)
    verified = cast["admin"].http.get("/v1/audit/verify").json()
    assert verified["ok"] is True and verified["records"] > 20
    # the other tenant sees none of acme's records
    other_rows = cast["other"].http.get("/v1/audit", params={"subject_id": "penny"}).json()
    assert other_rows == []
    missing = cast["admin"].http.get("/v1/report")  # no report generated in this home yet
    assert missing.status_code == 404 and "faceledger report" in missing.json()["error"]["message"]
    assert cast["app"].http.get("/v1/report").status_code == 403


def test_unknown_form_fields_are_refused(api, people):
    """The multipart schema cannot say "no other fields" in a way a form can violate with nulls, so the server
    says it: an unknown field is a 422 naming it, as in JSON."""
    photo = (people / "bbt" / "amy" / "amy1.png").read_bytes()
    r = api["app"].http.post("/v1/detect", files={"image": photo}, data={"colour": "blue"})
    assert r.status_code == 422 and "colour" in r.text
    r = api["app"].http.post("/v1/detect", json={"image": base64.b64encode(photo).decode(), "colour": "blue"})
    assert r.status_code == 422 and "colour" in r.text
