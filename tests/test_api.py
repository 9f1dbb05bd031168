"""The HTTP service started for real (uvicorn on a free loopback port) and driven over HTTP
with real faces: keys, tenants, scopes, enrolment, identification, erasure, limits."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from faceledger.client import ApiError, Client

CAST = ("amy", "howard", "leonard", "penny", "sheldon")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", *args], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    home = tmp_path_factory.mktemp("srv")
    port = free_port()
    env = {**os.environ, "FACELEDGER_HOME": str(home), "FACELEDGER_PORT": str(port),
           "FACELEDGER_MAX_IMAGE_BYTES": str(3_000_000), "FACELEDGER_IDENTIFY_PER_MINUTE": "100"}
    keys = {
        "admin": cli(env, "keys", "create", "--tenant", "acme", "--scopes", "admin", "--purpose", "tests: admin"),
        "app": cli(env, "keys", "create", "--tenant", "acme", "--scopes", "detect,verify,identify,enroll",
                   "--purpose", "building access control"),
        "detect_only": cli(env, "keys", "create", "--tenant", "acme", "--scopes", "detect", "--purpose", "kiosk"),
        "other": cli(env, "keys", "create", "--tenant", "globex", "--scopes", "admin", "--purpose", "other tenant"),
        "revoked": cli(env, "keys", "create", "--tenant", "acme", "--scopes", "admin", "--purpose", "old"),
        "burst": cli(env, "keys", "create", "--tenant", "acme", "--scopes", "identify", "--purpose", "rate test"),
        "fuzz": cli(env, "keys", "create", "--tenant", "fuzz", "--scopes", "admin", "--purpose", "schema tests"),
    }
    cli(env, "keys", "revoke", keys["revoked"]["key_id"])
    listed = cli(env, "keys", "list")
    assert all("api_key" not in k and "secret" not in json.dumps(k) for k in listed)
    log = open(home / "server.log", "w")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([sys.executable, "-m", "faceledger.cli", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"server exited: {(home / 'server.log').read_text()[-3000:]}")
    else:
        proc.kill()
        pytest.fail("server did not start within 90 s")
    clients = {name: Client(url, k["api_key"]) for name, k in keys.items()}
    clients["anonymous"] = Client(url)
    clients["url"] = url
    clients["home"] = home
    yield clients
    proc.terminate()
    proc.wait(20)
    log.close()
    assert "Traceback" not in (home / "server.log").read_text()


@pytest.fixture(scope="module")
def cast(service, people):
    admin, app = service["admin"], service["app"]
    admin.create_collection("staff", target_fmr=1e-4)
    for name in CAST:
        photos = [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)]
        info = app.enroll("staff", name, photos, display_name=name.title(), consent_basis="explicit-consent",
                          consent_reference=f"form-{name}")
        assert len(info["faces"]) == 2 and all(f["created"] for f in info["faces"])
    return service


def test_health_ready_openapi_docs_metrics(service):
    http = service["anonymous"].http
    assert http.get("/v1/health").json()["status"] == "ok"
    ready = http.get("/v1/ready").json()
    assert ready["status"] == "ready" and ready["model_id"].startswith("face_recognition_sface")
    spec = http.get("/openapi.json").json()
    assert "/v1/collections/{collection}/identify" in spec["paths"]
    body = spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert http.get("/docs").status_code == 200
    assert "faceledger_requests_total" in http.get("/metrics").text


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
    after = app.identify("staff", probe)["faces"][0]
    assert "stuart" not in [c["subject_id"] for c in after["candidates"]] and after["decision"] == "unknown"
    with pytest.raises(ApiError) as info:
        app.get_subject("staff", "stuart")
    assert info.value.status == 404


def test_detect_and_compare_over_json(cast, people):
    app = cast["app"]
    ex = people / "face_recognition_examples"
    r = app.http.post("/v1/detect", json={"image": base64.b64encode((ex / "two_people.jpg").read_bytes()).decode()})
    assert r.status_code == 200 and len(r.json()["faces"]) == 2
    same = app.compare(ex / "obama.jpg", ex / "obama2.jpg")
    assert same["match"] is True and same["fmr"] < 1e-4


def snapshot(client: Client) -> list:
    return [(c["name"], c["subjects"], c["faces"]) for c in client.list_collections()]


def test_keys_scopes_and_tenants(cast, people):
    admin, app, other = cast["admin"], cast["app"], cast["other"]
    before = snapshot(admin)
    photo = people / "bbt" / "amy" / "amy3.png"
    # no key, a wrong key, a revoked key: 401
    for client in (cast["anonymous"], Client(cast["url"], "fl_000000000000_notakey"), cast["revoked"]):
        with pytest.raises(ApiError) as info:
            client.identify("staff", photo)
        assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"
    # a key without the scope: 403
    with pytest.raises(ApiError) as info:
        cast["detect_only"].identify("staff", photo)
    assert info.value.status == 403 and info.value.details["scope"] == "identify"
    with pytest.raises(ApiError) as info:
        app.delete_collection("staff")  # deleting a collection needs admin
    assert info.value.status == 403
    assert cast["detect_only"].detect(photo)["faces"]
    # another tenant: cannot list, read, search, enrol into or delete acme's collection, whatever it guesses
    assert other.list_collections() == []
    for call in (lambda: other.get_collection("staff"), lambda: other.identify("staff", photo),
                 lambda: other.get_subject("staff", "amy"), lambda: other.delete_subject("staff", "amy"),
                 lambda: other.delete_collection("staff"),
                 lambda: other.enroll("staff", "mallory", [photo], consent_basis="explicit-consent")):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status == 404 and info.value.code == "NOT_FOUND"
    # its own collection of the same name is a different gallery
    other.create_collection("staff")
    assert other.identify("staff", photo)["faces"][0]["candidates"] == []
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
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    with pytest.raises(ApiError) as info:
        app.enroll("staff", "ghost", [tmp_path / "grey.png"], consent_basis="explicit-consent")
    assert info.value.code == "NO_FACE"
    with pytest.raises(ApiError) as info:
        app.enroll("staff", "newbie", [people / "bbt" / "raj" / "raj2.png"])  # no consent record
    assert info.value.code == "CONSENT_REQUIRED"
    with pytest.raises(ApiError) as info:
        app.enroll("staff", "obama", [people / "face_recognition_examples" / "two_people.jpg"],
                   consent_basis="explicit-consent")
    assert info.value.code == "MANY_FACES"
    with pytest.raises(ApiError) as info:
        app.create_subject("staff", "amy")
    assert info.value.status == 409
    with pytest.raises(ApiError) as info:
        app.identify("nowhere", people / "bbt" / "raj" / "raj2.png")
    assert info.value.status == 404
    r = http.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    assert snapshot(cast["admin"]) == before


def test_identify_rate_limit_per_key(cast, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 120, 120)).save(tmp_path / "small.png")
    burst, seen = cast["burst"], []
    for _ in range(110):
        r = burst.http.post("/v1/collections/staff/identify", files={"image": (tmp_path / "small.png").read_bytes()})
        seen.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "RATE_LIMITED" and int(r.headers["retry-after"]) >= 1
            break
    assert seen[-1] == 429 and 95 <= len(seen) <= 105
    # the limit is per key: the application's own key still works
    assert cast["app"].http.post("/v1/collections/staff/identify",
                                 files={"image": (tmp_path / "small.png").read_bytes()}).status_code == 200


def test_schemathesis_finds_no_server_error_and_no_schema_violation(service, tmp_path):
    """Property-based requests from /openapi.json (bounded in examples and time), in a tenant of their own."""
    key = service["fuzz"].http.headers["authorization"]
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", service["url"] + "/openapi.json", "-H",
           f"Authorization: {key}", "--max-examples", "10", "--max-time", "90", "--seed", "1",
           "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance,"
                       "content_type_conformance", "--report-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-6000:]
    assert "API Operations" in out.stdout


def audit_rows(service, **params) -> list[dict]:
    r = service["admin"].http.get("/v1/audit", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_operation_writes_exactly_one_audit_record(cast, people, tmp_path):
    app, photo = cast["app"], people / "bbt" / "penny" / "penny3.png"
    app_key = cast["app"].http.headers["authorization"].split()[1].split("_")[1]
    start = audit_rows(cast, limit=10000)[-1]["seq"]

    from faceledger.audit.log import AuditLog, load_or_create_key
    from faceledger.gallery.db import default_url, open_database

    whole_log = AuditLog(open_database(default_url(cast["home"]))[1], load_or_create_key(None, cast["home"]))

    def call(expected_op, outcome, fn):  # read the whole log: refusals before authentication have no tenant
        before = whole_log.query(limit=10**6)[-1]["seq"]
        try:
            fn()
        except ApiError:
            pass
        rows = whole_log.query(limit=10**6)
        rows = [r for r in rows if r["seq"] > before]
        assert [(r["operation"], r["outcome"]) for r in rows] == [(expected_op, outcome)]
        return rows[0]

    r = app.http.post("/v1/collections/staff/identify", files={"image": photo.read_bytes()},
                      data={"reference": "case-42"}, headers={"X-Request-ID": "req-identify-1"})
    assert r.status_code == 200
    rows = [x for x in audit_rows(cast, limit=10000) if x["request_id"] == "req-identify-1"]
    assert len(rows) == 1
    rec = rows[0]
    assert rec["operation"] == "identify" and rec["outcome"] == "ok" and rec["reference"] == "case-42"
    assert rec["key_id"] == app_key and rec["purpose"] == "building access control" and rec["tenant"] == "acme"
    assert rec["client"] == "127.0.0.1" and rec["collection"] == "staff"
    assert rec["subject_ids"][0] == "penny" and rec["decision"] == "match:penny" and len(rec["scores"]) >= 1

    call("detect", "ok", lambda: app.detect(photo))
    call("compare", "ok", lambda: app.compare(photo, people / "bbt" / "penny" / "penny4.png"))
    call("verify", "ok", lambda: app.verify("staff", "penny", photo))
    call("identify", "FORBIDDEN", lambda: cast["detect_only"].identify("staff", photo))
    call("identify", "UNAUTHORIZED", lambda: cast["anonymous"].identify("staff", photo))
    call("identify", "NOT_FOUND", lambda: cast["other"].identify("no-such-collection", photo))
    from PIL import Image

    Image.new("RGB", (120, 120), (50, 50, 50)).save(tmp_path / "blank.png")
    refused = call("enroll", "NO_FACE", lambda: app.enroll("staff", "ghost", [tmp_path / "blank.png"],
                                                            consent_basis="explicit-consent"))
    assert refused["subject_ids"] == ["ghost"]
    app.enroll("staff", "temp", [people / "bbt" / "raj" / "raj1.png"], consent_basis="explicit-consent")
    erased = call("erase", "ok", lambda: app.delete_subject("staff", "temp"))
    assert erased["subject_ids"] == ["temp"] and erased["decision"] == "erased 1 faces"

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
    verified = cast["admin"].http.get("/v1/audit/verify").json()
    assert verified["ok"] is True and verified["records"] > 20
    # the other tenant sees none of acme's records
    other_rows = cast["other"].http.get("/v1/audit", params={"subject_id": "penny"}).json()
    assert other_rows == []
    missing = cast["admin"].http.get("/v1/report")  # no report generated in this home yet
    assert missing.status_code == 404 and "faceledger report" in missing.json()["error"]["message"]
    assert cast["app"].http.get("/v1/report").status_code == 403
