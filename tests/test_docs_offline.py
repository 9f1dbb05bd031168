"""The interactive docs work without internet access: `faceledger serve` serves Swagger UI (/docs) and ReDoc
(/redoc) from an installed package, and headless Chromium, with every address but loopback unreachable,
renders every operation of the API."""

from __future__ import annotations

import re
import subprocess

import httpx
import pytest

from realserver import CHROMIUM_FLAGS, chromium, serving

OPERATIONS = ("/v1/collections/{collection}/identify", "/v1/collections/{collection}/subjects/{subject_id}/verify",
              "/v1/detect", "/v1/compare", "/v1/audit")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("docs")) as (url, _):
        yield url


def offline_dom(url: str, tmp_path) -> str:
    """The DOM of ``url`` as headless Chromium builds it, with every host but 127.0.0.1 unresolvable and every
    proxied connection refused: a page that needs a CDN stays blank."""
    browser = chromium()
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
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
