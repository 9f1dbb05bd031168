"""The HTTP service started for real (uvicorn on a free loopback port) and driven over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path_factory.mktemp("srv")), "FACELEDGER_PORT": str(port),
           "FACELEDGER_MAX_IMAGE_BYTES": str(3_000_000)}
    proc = subprocess.Popen([sys.executable, "-m", "faceledger.cli", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()}")
    else:
        proc.kill()
        pytest.fail("server did not start within 60 s")
    yield httpx.Client(base_url=url, timeout=60)
    proc.terminate()
    proc.wait(10)


def test_health_ready_and_openapi(server):
    assert server.get("/v1/health").json()["status"] == "ok"
    ready = server.get("/v1/ready").json()
    assert ready["status"] == "ready" and ready["model_id"].startswith("face_recognition_sface")
    spec = server.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/compare", "/v1/health"} <= set(spec["paths"])
    assert server.get("/docs").status_code == 200


def test_detect_two_people(server, people):
    with open(people / "face_recognition_examples" / "two_people.jpg", "rb") as fh:
        r = server.post("/v1/detect", files={"image": fh})
    assert r.status_code == 200
    faces = r.json()["faces"]
    assert len(faces) == 2 and all(f["quality"]["passed"] for f in faces)


def test_compare_decision(server, people):
    ex = people / "face_recognition_examples"
    same = server.post("/v1/compare", files={"image_a": (ex / "obama.jpg").read_bytes(),
                                             "image_b": (ex / "obama2.jpg").read_bytes()}, data={"fmr": "1e-4"})
    diff = server.post("/v1/compare", files={"image_a": (ex / "obama.jpg").read_bytes(),
                                             "image_b": (ex / "biden.jpg").read_bytes()})
    assert same.status_code == 200 and diff.status_code == 200
    assert same.json()["match"] is True and diff.json()["match"] is False


@pytest.mark.parametrize("payload, status, code", [
    (b"", 422, "EMPTY_IMAGE"), (b"not an image at all", 422, "INVALID_IMAGE"), (b"\x00" * 3_100_000, 413, None)])
def test_bad_uploads_get_one_error_shape(server, payload, status, code):
    r = server.post("/v1/detect", files={"image": ("x.jpg", payload)})
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"code", "message", "details"} and (code is None or error["code"] == code)


def test_no_face_and_missing_field(server, tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 200), (90, 90, 90)).save(tmp_path / "grey.png")
    r = server.post("/v1/compare", files={"image_a": (tmp_path / "grey.png").read_bytes(),
                                          "image_b": (tmp_path / "grey.png").read_bytes()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "NO_FACE"
    r = server.post("/v1/detect")
    assert r.status_code == 422 and r.json()["error"]["code"] == "INVALID_REQUEST"
