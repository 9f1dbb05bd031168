"""The interactive docs work without internet access: `faceledger serve` serves Swagger UI (/docs) and ReDoc
(/redoc) from an installed package, and headless Chromium, with every address but loopback unreachable,
renders every operation of the API."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

OPERATIONS = ("/v1/collections/{collection}/identify", "/v1/collections/{collection}/subjects/{subject_id}/verify",
              "/v1/detect", "/v1/compare", "/v1/audit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("docs")
    port = free_port()
    env = {**os.environ, "FACELEDGER_HOME": str(home), "FACELEDGER_PORT": str(port)}
    log = open(home / "server.log", "w")
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
    yield url
    proc.terminate()
    proc.wait(20)
    log.close()


def offline_dom(url: str, tmp_path) -> str:
    """The DOM of ``url`` as headless Chromium builds it, with every host but 127.0.0.1 unresolvable and every
    proxied connection refused: a page that needs a CDN stays blank."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("FACELEDGER_REQUIRE_DATA", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is missing although .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=127.0.0.1",
             "--virtual-time-budget=10000"]
    out = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=False)
    return out.stdout


def test_docs_pages_name_no_external_url(server):
    for page in ("/docs", "/redoc"):
        html = httpx.get(server + page).text
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), html
        for asset in re.findall(r"""(?:src|href)="(/[^"]+)\"""", html):
            r = httpx.get(server + asset)
            assert r.status_code == 200 and len(r.content) > 0, asset
    assert "/docs" not in httpx.get(server + "/openapi.json").json()["paths"]  # the pages are not API operations


def test_swagger_ui_renders_every_operation_offline(server, tmp_path):
    dom = offline_dom(server + "/docs", tmp_path)
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert set(OPERATIONS) <= paths, dom[-2000:]
    spec = httpx.get(server + "/openapi.json").json()
    assert paths == set(spec["paths"])  # every path of the API, rendered from the package's Swagger UI
    assert "operations-search-identify_v1_collections__collection__identify_post" in dom


def test_redoc_renders_offline(server, tmp_path):
    dom = offline_dom(server + "/redoc", tmp_path)
    for path in OPERATIONS:
        assert path in dom, path
