"""Helpers for tests that start the real things: `faceledger serve` as a process, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(home: Path, env: dict[str, str] | None = None,
            args: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """`faceledger serve` on a free port with state in ``home``: (its URL, the process), once it answers
    /v1/health; its output goes to ``home/server.log`` (a file, not a pipe: a full pipe would stall the server).
    Stopped with SIGTERM at the end."""
    port = free_port()
    env = {**os.environ, **(env or {}), "FACELEDGER_HOME": str(home), "FACELEDGER_PORT": str(port)}
    with open(home / "server.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "faceledger.cli", "serve", *args], env=env, stdout=log,
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
        try:
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(20)


def chromium() -> str:
    """Debian's chromium; a test that needs it skips without it, or fails where .ci/run installs it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("FACELEDGER_REQUIRE_DATA", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is missing although .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return browser
