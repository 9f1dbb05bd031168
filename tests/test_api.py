"""The HTTP service started for real (`faceledger serve`: uvicorn on a free loopback port): start-up,
one end-to-end flow of the Python client, and property-based requests from the OpenAPI document.

The bulk of the API's behaviour (keys, tenants, scopes, limits, errors, audit records) is tested
in-process: tests/test_api_inprocess.py and tests/test_api_errors.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from faceledger.client import ApiError, Client
from faceledger.config import Settings
from faceledger.service import Actor, Faceledger
from backends import BACKENDS, backend_settings
from realserver import serving


def cli(env: dict, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "faceledger.cli", *args], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module", params=list(BACKENDS))
def service(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("srv")
    backend = backend_settings(request.param, home, lambda: request.getfixturevalue("postgres"),
                                    lambda: request.getfixturevalue("milvus"))
    env = {**os.environ, "FACELEDGER_HOME": str(home), "FACELEDGER_DATABASE_URL": backend["database_url"],
           "FACELEDGER_VECTOR_STORE": backend["vector_store"],
           "FACELEDGER_MAX_IMAGE_BYTES": str(3_000_000), "FACELEDGER_IDENTIFY_PER_MINUTE": "100",
           # the schema tests present invalid keys on purpose, more than 20 a minute from one address
           "FACELEDGER_AUTH_FAILURES_PER_MINUTE": "100000"}
    # keys made through the operations layer (fast); the CLI lists them, without secrets
    fl = Faceledger(Settings(home=home, **backend))
    keys = {name: fl.create_key(Actor.local(tenant), tenant, scopes, purpose)
            for name, (tenant, scopes, purpose) in {
                "admin": ("acme", ["admin"], "tests: admin"),
                "app": ("acme", ["detect", "verify", "identify", "enroll"], "building access control"),
                "revoked": ("acme", ["admin"], "old"),
                "fuzz": ("fuzz", ["admin"], "schema tests")}.items()}
    fl.revoke_key(Actor.local("acme"), keys["revoked"][1]["key_id"])
    # something for the schema tests to find: a collection and a subject of their tenant
    fl.create_collection(Actor.local("fuzz"), "gallery", require_consent=False)
    fl.create_subject(Actor.local("fuzz"), "gallery", "alice")
    fl.close()
    listed = cli(env, "keys", "list")
    assert len(listed) == 4 and all("api_key" not in k and "secret" not in json.dumps(k) for k in listed)
    assert not any(secret in json.dumps(listed) for secret, _ in keys.values())
    with serving(home, env) as (url, proc):
        clients = {name: Client(url, secret) for name, (secret, _) in keys.items()}
        clients["anonymous"] = Client(url)
        clients["url"] = url
        clients["home"] = home
        clients["pid"] = proc.pid
        yield clients
    assert "Traceback" not in (home / "server.log").read_text()


def test_serve_starts_and_answers(service):
    http = service["anonymous"].http
    assert http.get("/v1/health").json()["status"] == "ok"
    assert http.get("/v1/ready").json()["status"] == "ready"  # the real process loaded its models
    assert http.get("/openapi.json").status_code == 200 and http.get("/docs").status_code == 200
    assert http.get("/metrics").status_code == 401  # not public
    assert service["app"].http.get("/metrics").status_code == 403
    assert "faceledger_requests_total" in service["admin"].http.get("/metrics").text
    log = (service["home"] / "server.log").read_text()  # faceledger's own log lines reach the server log
    assert "faceledger.api: gallery index check" in log and "fuzz/" in log  # keyed by tenant/collection


def test_end_to_end_client_flow(service, people):
    """The Python client against the real server: a collection, enrolment, search, verification, erasure."""
    admin, app = service["admin"], service["app"]
    admin.create_collection("staff", target_fmr=1e-4)
    for name in ("penny", "sheldon"):
        photos = [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)]
        info = app.enroll("staff", name, photos, display_name=name.title(), consent_basis="explicit-consent",
                          consent_reference=f"form-{name}")
        assert len(info["faces"]) == 2 and all(f["created"] for f in info["faces"])
    face = app.identify("staff", people / "bbt" / "penny" / "penny4.png")["faces"][0]
    assert face["decision"] == "match" and face["subject_id"] == "penny" and face["candidates"][0]["fmr"] < 1e-4
    assert app.identify("staff", people / "bbt" / "raj" / "raj1.png")["faces"][0]["decision"] == "unknown"
    assert app.verify("staff", "penny", people / "bbt" / "penny" / "penny5.png")["match"] is True
    assert app.compare(people / "bbt" / "penny" / "penny3.png", people / "bbt" / "penny" / "penny5.png")["match"]
    assert [c["name"] for c in app.list_collections()] == ["staff"]

    receipt = app.delete_subject("staff", "sheldon")
    assert receipt["subject_ids"] == ["sheldon"] and receipt["faces_deleted"] == 2
    assert isinstance(receipt["audit_seq"], int)
    with pytest.raises(ApiError) as info:
        app.get_subject("staff", "sheldon")
    assert info.value.status == 404 and info.value.code == "NOT_FOUND"
    for client in (service["anonymous"], service["revoked"]):
        with pytest.raises(ApiError) as info:
            client.identify("staff", people / "bbt" / "penny" / "penny4.png")
        assert info.value.status == 401 and info.value.code == "UNAUTHORIZED"

    rows = admin.http.get("/v1/audit", params={"limit": 10000}).json()
    erased = [r for r in rows if r["seq"] == receipt["audit_seq"]]
    assert len(erased) == 1 and erased[0]["operation"] == "erase" and erased[0]["client"] == "127.0.0.1"
    assert [r["operation"] for r in rows if r["outcome"] == "ok"].count("enroll") == 2
    assert admin.http.get("/v1/audit/verify").json()["ok"] is True


def peak_memory_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_oversize_chunked_bodies_cost_the_real_server_no_memory(service):
    """Chunked bodies (no Content-Length) of 1 GB: 413 once the route's limit is passed, never held in memory."""
    key = service["admin"].http.headers["authorization"]

    def body(head: bytes, size: int = 1_000_000_000):
        yield head
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            yield chunk

    before = peak_memory_kb(service["pid"])
    part = b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
    for url, ctype, head in (("/v1/collections/gallery/subjects/a/faces", "multipart/form-data; boundary=xyz", part),
                             ("/v1/detect", "application/json", b'{"image": "'),
                             ("/v1/collections", "application/json", b'{"name": "')):
        r = httpx.post(service["url"] + url, content=body(head), headers={"content-type": ctype, "authorization": key},
                       timeout=60)
        assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE", (url, r.text)
    assert peak_memory_kb(service["pid"]) - before < 100_000  # KiB: far below the 3 GB sent
    assert httpx.get(service["url"] + "/v1/health").status_code == 200


SCHEMATHESIS_CONFIG = r"""
# Schema-valid requests these operations refuse by design, with 422: images without a (single, good) face,
# times outside 1970..9000 UTC, a consent reference without a basis, metadata over 16 KiB in all, a body that is not
# a readable video, an identifying stream or video without a collection.
[[operations]]
include-path-regex = "^/v1/(detect|compare|audit|streams|videos|collections/[^/]+/(identify|subjects(/[^/]+/(faces|verify))?))$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "422", "429"]

# realistic values now and then, so that requests reach past NOT_FOUND
[dictionaries.collections]
values = ["gallery"]

[dictionaries.subjects]
values = ["alice"]

[[operations]]
include-path-regex = "^/v1/collections/\\{collection\\}/"
parameters."path.collection" = { dictionary = "collections", probability = 0.7 }
parameters."path.subject_id" = { dictionary = "subjects", probability = 0.5 }
"""


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(service, tmp_path):
    """Property-based requests from /openapi.json, every check, positive and negative data (schema-invalid
    requests must be refused with a 4xx), 25 examples per operation and stateful sequences, in a tenant of
    their own and bounded in time (about 110 s)."""
    key = service["fuzz"].http.headers["authorization"]
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG)
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
           service["url"] + "/openapi.json", "-H", f"Authorization: {key}", "--checks", "all", "--mode", "all",
           "--max-examples", "25", "--max-time", "110", "--seed", "1", "--report-dir", str(tmp_path / "report")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)  # cache: not here
    assert out.returncode == 0, out.stdout[-8000:]
    selected, tested = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", out.stdout).groups()
    assert selected == tested, out.stdout[-3000:]  # every operation was reached
