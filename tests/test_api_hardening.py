"""The HTTP edge under abuse, without faces: streaming body limits, authentication before any body is read,
throttled and aggregated refused authentications, database work off the event loop, bounded metadata,
a full disk, the Allow header, request ids and ISO 8601 times only."""

from __future__ import annotations

import datetime as dt
import errno
import json
import sqlite3
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
import sqlalchemy.exc

from faceledger.api.app import create_app
from faceledger.config import Settings
from faceledger.service import Actor, Faceledger

MB = 1_000_000
CHUNK = 64 * 1024
HERE = "127.0.0.1"


class Body:
    """A chunked request body of ``total`` bytes (after ``head``) that counts what the server pulled from it."""

    def __init__(self, total: int, head: bytes = b"", fill: bytes = b"A") -> None:
        self.total, self.head, self.fill, self.sent = total, head, fill, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            self.sent += len(self.head)
            yield self.head
        chunk = self.fill * (CHUNK // len(self.fill))
        while self.sent < self.total:
            self.sent += len(chunk)
            yield chunk


async def send(app, method: str, url: str, *, client: str = HERE, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(client, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
        return await http.request(method, url, **kwargs)


def request(app, method: str, url: str, **kwargs) -> httpx.Response:
    return anyio.run(lambda: send(app, method, url, **kwargs))


@pytest.fixture
def edge(tmp_path, backend):
    """An app over a fresh Faceledger (no lifespan, no models), images up to 1 MB, 4 per request; on each backend."""
    fl = Faceledger(Settings(home=tmp_path, **backend, max_image_bytes=MB, max_images_per_request=4))
    keys = {}
    for name, scopes in {"admin": ["admin"], "detect": ["detect"], "enroll": ["enroll"]}.items():
        secret, _ = fl.create_key(Actor.local("acme"), "acme", scopes, f"hardening tests: {name}")
        keys[name] = {"Authorization": f"Bearer {secret}"}
    app = create_app(faceledger=fl)
    yield app, fl, keys
    fl.close()


def records(fl: Faceledger, since: int = 0) -> list[dict]:
    return [r for r in fl.audit.query(limit=10**6) if r["seq"] > since and r["operation"] != "key.create"]


def last_seq(fl: Faceledger) -> int:
    rows = fl.audit.query(limit=10**6)
    return rows[-1]["seq"] if rows else 0


# ------------------------------------------------------------------ 7: streaming body limits, auth first
def test_a_chunked_oversize_json_body_is_refused_without_being_read(edge):
    app, fl, keys = edge
    body = Body(400 * MB)  # no Content-Length: only counting what arrives can stop it
    r = request(app, "POST", "/v1/detect", content=body, headers={**keys["detect"], "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body.sent < 2 * MB  # one image of 1 MB as base64, and a little
    assert [(x["operation"], x["outcome"]) for x in records(fl)] == [("detect", "PAYLOAD_TOO_LARGE")]


def test_a_chunked_oversize_multipart_body_is_refused_without_being_spooled(edge):
    app, fl, keys = edge
    head = b'--xyz\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n\r\n'
    body = Body(600 * MB, head=head)
    r = request(app, "POST", "/v1/collections/c/subjects/s/faces", content=body,
                headers={**keys["enroll"], "content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body.sent < 5 * MB  # 4 images of 1 MB, and a little
    assert [(x["operation"], x["outcome"]) for x in records(fl)] == [("enroll", "PAYLOAD_TOO_LARGE")]


@pytest.mark.parametrize("url", ["/v1/collections", "/v1/collections/c/subjects"])
def test_a_json_only_route_reads_at_most_a_small_body(edge, url):
    app, _, keys = edge
    body = Body(300 * MB, head=b'{"name": "x", "subject_id": "', fill=b"x")
    r = request(app, "POST", url, content=body, headers={**keys["admin"], "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert body.sent <= 64 * 1024 + 2 * CHUNK
    r = request(app, "POST", url, content=b"{" + b" " * 100_000 + b"}",  # declared too large: not read at all
                headers={**keys["admin"], "content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("url, operation", [("/v1/collections", "collection.create"),
                                            ("/v1/collections/c/subjects", "subject.create")])
def test_create_routes_authenticate_before_reading_the_body(edge, url, operation):
    app, fl, keys = edge
    body = Body(300 * MB)
    r = request(app, "POST", url, content=body, headers={"content-type": "application/json"}, client="10.0.0.1")
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    assert body.sent <= CHUNK  # nothing (or the first chunk in flight) was read
    rows = records(fl)
    assert [(x["operation"], x["outcome"], x["tenant"], x["client"]) for x in rows] == [
        (operation, "UNAUTHORIZED", None, "10.0.0.1")]
    for i, content in enumerate((b"{not json", json.dumps({"name": "bad name!"}).encode(), b"[]")):
        r = request(app, "POST", url, content=content, headers={"content-type": "application/json"},
                    client=f"10.0.1.{i}")
        assert r.status_code == 401, r.text
    assert [(x["operation"], x["outcome"]) for x in records(fl)[1:]] == [(operation, "UNAUTHORIZED")] * 3
    # a key without the scope is told so before its body is read
    body = Body(300 * MB)
    r = request(app, "POST", url, content=body, headers={**keys["detect"], "content-type": "application/json"})
    assert r.status_code == 403 and body.sent <= CHUNK


def test_create_routes_keep_their_request_schema_and_want_json(edge):
    app, fl, keys = edge
    spec = request(app, "GET", "/openapi.json").json()
    text = json.dumps(spec)
    assert '"#/$defs/' not in text  # nested models are inlined or in components, never dangling refs
    collection = spec["paths"]["/v1/collections"]["post"]["requestBody"]
    assert collection["required"] is True
    schema = collection["content"]["application/json"]["schema"]
    assert {"name", "target_fmr", "retention_days"} <= set(schema["properties"]) and schema["required"] == ["name"]
    subject = spec["paths"]["/v1/collections/{collection}/subjects"]["post"]["requestBody"]["content"]
    schema = subject["application/json"]["schema"]
    assert {"subject_id", "metadata", "consent"} <= set(schema["properties"])
    assert schema["properties"]["metadata"]["maxProperties"] == 64
    r = request(app, "POST", "/v1/collections", content=b"name=x",
                headers={**keys["admin"], "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    r = request(app, "POST", "/v1/collections", json={"name": "bad name!"}, headers=keys["admin"])
    assert r.status_code == 422 and r.json()["error"]["details"]["errors"][0]["loc"] == ["body", "name"]
    r = request(app, "POST", "/v1/collections", json={"name": "fine", "retention_days": 30}, headers=keys["admin"])
    assert r.status_code == 201 and r.json()["retention_days"] == 30
    assert [(x["operation"], x["outcome"], x["collection"]) for x in records(fl)] == [
        ("collection.create", "UNSUPPORTED_MEDIA_TYPE", None), ("collection.create", "INVALID_REQUEST", None),
        ("collection.create", "ok", "fine")]


# ------------------------------------------------------------------ 14: refused authentications
def test_failed_authentication_is_throttled_per_address(edge):
    app, _, keys = edge
    bad = {"Authorization": "Bearer fl_000000000000_notakey"}
    for _ in range(20):
        assert request(app, "GET", "/v1/collections", headers=bad, client="10.1.0.1").status_code == 401
    r = request(app, "POST", "/v1/detect", json={}, headers=bad, client="10.1.0.1")
    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert request(app, "GET", "/v1/collections", headers={"X-API-Key": "fl_x_y"}, client="10.1.0.1").status_code == 429
    # a valid key from the same address still works; another address is not throttled
    assert request(app, "GET", "/v1/collections", headers=keys["enroll"], client="10.1.0.1").status_code == 200
    assert request(app, "POST", "/v1/detect", json={}, headers=keys["detect"], client="10.1.0.1").status_code == 422
    assert request(app, "GET", "/v1/collections", headers=bad, client="10.1.0.2").status_code == 401
    assert request(app, "GET", "/v1/collections", client="10.1.0.1").status_code == 401  # no key is not a guess
    # once the window has passed, bad keys are answered 401 again
    guard = app.state.auth_guard
    start = time.monotonic()
    guard.clock = lambda: start + 61
    assert request(app, "GET", "/v1/collections", headers=bad, client="10.1.0.1").status_code == 401


def test_refused_authentications_are_recorded_once_a_minute_per_address(edge):
    app, fl, _ = edge
    guard = app.state.auth_guard
    for i in range(30):
        r = request(app, "POST", "/v1/detect" if i % 2 else "/v1/collections", json={}, client="10.2.0.1",
                    headers={"Authorization": "Bearer fl_000000000000_notakey"} if i % 3 else {})
        assert r.status_code in (401, 429)
    rows = records(fl)
    assert [(x["outcome"], x["client"], x["decision"]) for x in rows] == [("UNAUTHORIZED", "10.2.0.1", None)]
    request(app, "POST", "/v1/detect", json={}, client="10.2.0.2")  # another address has its own record
    assert [x["client"] for x in records(fl)] == ["10.2.0.1", "10.2.0.2"]
    start = time.monotonic()
    guard.clock = lambda: start + 61  # a minute later: the next refusal carries the count since the first record
    r = request(app, "POST", "/v1/collections", json={}, client="10.2.0.1")
    assert r.status_code == 401
    rows = records(fl)
    assert len(rows) == 3 and rows[2]["client"] == "10.2.0.1" and rows[2]["operation"] == "collection.create"
    count, since = rows[2]["decision"].split(" refused authentications since ")
    assert count == "30"
    first = dt.datetime.fromisoformat(rows[0]["at"])
    assert abs((dt.datetime.fromisoformat(since) - first).total_seconds()) <= 2


def test_refusals_left_unrecorded_are_flushed_after_the_window(edge):
    from faceledger.api.deps import record_pending_refusals

    app, fl, _ = edge
    guard = app.state.auth_guard
    for _ in range(5):
        request(app, "POST", "/v1/detect", json={}, client="10.3.0.1")
    assert len(records(fl)) == 1
    anyio.run(record_pending_refusals, app)
    assert len(records(fl)) == 1  # the minute has not passed
    start = time.monotonic()
    guard.clock = lambda: start + 61
    anyio.run(record_pending_refusals, app)
    rows = records(fl)
    assert len(rows) == 2 and rows[1]["outcome"] == "UNAUTHORIZED" and rows[1]["client"] == "10.3.0.1"
    assert rows[1]["decision"].startswith("4 refused authentications since ")
    anyio.run(record_pending_refusals, app)
    assert len(records(fl)) == 2


# ------------------------------------------------------------------ 15: the event loop stays free
def slow(fn):
    def wrapper(*args, **kwargs):
        time.sleep(1.0)
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("method, call", [
    ("list_collections", ("GET", "/v1/collections", "enroll")),
    ("get_collection", ("GET", "/v1/collections/nope", "enroll")),
    ("list_subjects", ("GET", "/v1/collections/nope/subjects", "enroll")),
    ("authenticate", ("GET", "/v1/collections", "enroll")),
    ("authenticate", ("DELETE", "/v1/collections/nope", "admin")),
    ("query_audit", ("GET", "/v1/audit", "admin")),
    ("create_collection", ("POST", "/v1/collections", "admin")),
    ("refresh_metrics", ("GET", "/metrics", "admin")),
])
def test_database_work_never_blocks_the_event_loop(edge, monkeypatch, method, call):
    app, fl, keys = edge
    monkeypatch.setattr(fl, method, slow(getattr(fl, method)))
    verb, url, key = call
    timings = {}

    async def main() -> None:
        async def slow_call() -> None:
            r = await send(app, verb, url, headers=keys[key], json={"name": "x"} if verb == "POST" else None)
            timings["slow"] = r.status_code

        async with anyio.create_task_group() as tasks:
            start = time.perf_counter()
            tasks.start_soon(slow_call)
            await anyio.sleep(0.1)  # the slow call is in its service method now (blocking the loop, or not)
            r = await send(app, "GET", "/v1/health")
            timings["health"] = time.perf_counter() - start - 0.1
            timings["health_done_first"] = "slow" not in timings
            assert r.status_code == 200

    anyio.run(main)
    # the slow call holds its thread for 1 s: a blocked loop answers health after ~0.9 s, a free one at once (0.6 s
    # leaves room for a loaded 2-core machine with database servers running)
    assert timings["health"] < 0.6 and timings["health_done_first"], timings
    assert timings["slow"] < 500


# ------------------------------------------------------------------ 15: bounded metadata
@pytest.mark.parametrize("metadata", [
    {f"k{i}": i for i in range(65)},  # more than 64 keys
    {"k" * 65: 1},  # a key longer than 64 characters
    {"note": "x" * 1025},  # a value over 1 KiB
    {"nested": {"a": 1}}, {"list": [1, 2]},  # values are scalars
    {f"k{i}": "x" * 1000 for i in range(17)},  # over 16 KiB in all
    {"huge": 10**30},  # integers fit 64 bits
])
def test_subject_metadata_is_bounded(edge, metadata):
    app, _, keys = edge
    assert request(app, "POST", "/v1/collections", json={"name": "c"}, headers=keys["admin"]).status_code == 201
    r = request(app, "POST", "/v1/collections/c/subjects", headers=keys["admin"],
                json={"subject_id": "s", "metadata": metadata, "consent": {"basis": "contract"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST", r.text
    assert r.json()["error"]["details"]["errors"][0]["loc"][:2] == ["body", "metadata"]


def test_subject_metadata_within_bounds_and_non_finite_numbers(edge):
    app, _, keys = edge
    assert request(app, "POST", "/v1/collections", json={"name": "c"}, headers=keys["admin"]).status_code == 201
    metadata = {**{f"k{i}": "x" * 200 for i in range(60)}, "n": 1.5, "i": -(2**63), "b": True, "none": None}
    r = request(app, "POST", "/v1/collections/c/subjects", headers=keys["admin"],
                json={"subject_id": "s", "metadata": metadata, "consent": {"basis": "contract"}})
    assert r.status_code == 201, r.text
    assert r.json()["metadata"] == metadata
    for raw in (b'{"subject_id": "t", "metadata": {"x": NaN}}', b'{"subject_id": "t", "metadata": {"x": 1e999}}'):
        r = request(app, "POST", "/v1/collections/c/subjects", content=raw,
                    headers={**keys["admin"], "content-type": "application/json"})
        assert r.status_code == 422, r.text


# ------------------------------------------------------------------ 17: a full disk
def disk_full() -> Exception:
    """A fresh error each time: the service marks an error it has recorded, so one instance is recorded once."""
    return sqlalchemy.exc.OperationalError("INSERT INTO collections", {},
                                           sqlite3.OperationalError("database or disk is full"))


def test_a_full_disk_is_answered_507_storage_full(edge, monkeypatch):
    app, fl, keys = edge

    def full(*args, **kwargs):
        raise disk_full()

    monkeypatch.setattr(fl.gallery, "create_collection", full)
    before = last_seq(fl)
    r = request(app, "POST", "/v1/collections", json={"name": "c"}, headers=keys["admin"])
    assert r.status_code == 507 and r.json()["error"]["code"] == "STORAGE_FULL", r.text
    assert len([x for x in records(fl, before) if x["operation"] == "collection.create"]) == 1  # once

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fl.gallery, "list_collections", no_space)
    r = request(app, "GET", "/v1/collections", headers=keys["enroll"])
    assert r.status_code == 507 and r.json()["error"]["code"] == "STORAGE_FULL"


def test_ready_checks_that_the_database_is_writable(edge, monkeypatch):
    from faceledger.gallery import storage

    app, fl, _ = edge

    class FullEngine:
        dialect = fl.gallery.store.db.dialect
        url = fl.gallery.store.db.url

        def connect(self):
            raise disk_full()

    monkeypatch.setattr(fl.gallery.store, "db", FullEngine())
    r = request(app, "GET", "/v1/ready")
    assert r.status_code == 507 and r.json()["error"]["code"] == "STORAGE_FULL"
    monkeypatch.undo()

    class Usage:
        total, used, free = 10**12, 10**12 - 1000, 1000

    monkeypatch.setattr(storage.shutil, "disk_usage", lambda path: Usage())
    r = request(app, "GET", "/v1/ready")
    assert r.status_code == 507 and r.json()["error"]["code"] == "STORAGE_FULL"
    monkeypatch.undo()
    fl.check_storage()  # a real BEGIN IMMEDIATE on the real database: writable


# ------------------------------------------------------------------ 18: HTTP details
def test_405_names_the_allowed_methods(edge):
    app, _, _ = edge
    r = request(app, "PUT", "/v1/detect")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    r = request(app, "PATCH", "/v1/collections")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "POST"}
    r = request(app, "DELETE", "/v1/health")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = request(app, "POST", "/v1/collections/c/subjects/s")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "DELETE"}


@pytest.mark.parametrize("given, kept", [("req-1.2:3_x", True), ("a" * 64, True), ("a" * 65, False),
                                         ("two words", False), ("<script>", False), ("", False),
                                         ("caf\u00e9".encode(), False)])
def test_request_ids_are_filtered(edge, given, kept):
    app, fl, _ = edge
    r = request(app, "GET", "/v1/health", headers={"X-Request-ID": given})
    if kept:
        assert r.headers["x-request-id"] == given
    elif isinstance(given, bytes):
        assert len(r.headers["x-request-id"]) == 32
    else:
        assert len(r.headers["x-request-id"]) == 32 and r.headers["x-request-id"] != given
    r = request(app, "POST", "/v1/detect", json={}, headers={"X-Request-ID": given}, client=f"10.4.{len(given)}.1")
    assert records(fl)[-1]["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("params", [{"since": "0.5"}, {"until": "0.5"}, {"since": "1700000000"},
                                    {"since": "yesterday"}, {"since": "0001-01-01T00:00:00+05:00"},
                                    {"until": "9999-12-31T23:59:59-05:00"}, {"until": "0001-01-01"}])
def test_audit_times_are_iso_8601_and_in_range(edge, params):
    app, _, keys = edge
    r = request(app, "GET", "/v1/audit", params=params, headers=keys["admin"])
    assert r.status_code == 422 and r.json()["error"]["code"] in ("INVALID_ARGUMENT", "INVALID_REQUEST"), r.text


def test_audit_times_with_offsets_select_by_utc(edge):
    app, _, keys = edge
    request(app, "POST", "/v1/detect", json={}, headers=keys["detect"])
    now = dt.datetime.now(dt.UTC)
    later = (now + dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=5))).isoformat()
    earlier = (now - dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat()
    rows = request(app, "GET", "/v1/audit", params={"since": earlier, "until": later}, headers=keys["admin"]).json()
    assert "detect" in [x["operation"] for x in rows]
    rows = request(app, "GET", "/v1/audit", params={"since": later}, headers=keys["admin"]).json()
    assert rows == []


@pytest.mark.parametrize("consent", [{"basis": "contract", "expires_at": "0001-01-01T00:00:00+05:00"},
                                     {"basis": "contract", "given_at": "9999-12-31T23:59:59-05:00"},
                                     {"basis": "contract", "expires_at": 0.5},
                                     {"basis": "contract", "expires_at": "1700000000"}])
def test_consent_times_are_iso_8601_and_in_range(edge, consent):
    app, _, keys = edge
    assert request(app, "POST", "/v1/collections", json={"name": "c"}, headers=keys["admin"]).status_code == 201
    r = request(app, "POST", "/v1/collections/c/subjects", json={"subject_id": "s", "consent": consent},
                headers=keys["admin"])
    assert r.status_code == 422, r.text
    r = request(app, "POST", "/v1/collections/c/subjects/s/faces", headers=keys["admin"],
                json={"images": ["aGVsbG8="], "consent_basis": "contract",
                      "consent_expires_at": consent.get("expires_at", consent.get("given_at"))})
    assert r.status_code == 422, r.text
