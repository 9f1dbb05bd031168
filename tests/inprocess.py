"""Driving the ASGI app in-process, lifespan included, from synchronous test code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import anyio.from_thread
import httpx
from fastapi import FastAPI


class Bridge(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app (``httpx.ASGITransport``), run on one event loop: the
    blocking portal that also holds the app's lifespan. So the synchronous faceledger ``Client`` drives the
    app in-process, as it drives a server."""

    def __init__(self, app: FastAPI, portal: anyio.from_thread.BlockingPortal) -> None:
        self.asgi = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        self.portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.portal.call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        response = await self.asgi.handle_async_request(request)
        content = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content, request=request)


@contextmanager
def in_process(app: FastAPI, *, lifespan: bool = True) -> Iterator[anyio.from_thread.BlockingPortal]:
    """An event loop for ``app``, its lifespan (start-up, retention loop, shutdown) run around the block."""
    with anyio.from_thread.start_blocking_portal() as portal:
        if lifespan:
            with portal.wrap_async_context_manager(app.router.lifespan_context(app)):
                yield portal
        else:
            yield portal


def http_client(app: FastAPI, portal: anyio.from_thread.BlockingPortal, **kwargs) -> httpx.Client:
    return httpx.Client(base_url="http://testserver", transport=Bridge(app, portal), **kwargs)


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` behind a real HTTP server (uvicorn) on a free local port, in a thread of this process: for clients
    that speak HTTP themselves (boto3, requests), with the app's objects still at hand. Yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
