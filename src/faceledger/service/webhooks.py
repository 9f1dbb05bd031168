"""Stream events to partners' receivers: signed per Standard Webhooks, retried with backoff, dead letters kept.

Each delivery is one HTTP POST of the event as JSON with the ``webhook-id`` (``evt_<event
id>``, the same on every retry: receivers deduplicate on it), ``webhook-timestamp`` and
``webhook-signature`` headers made by the ``standardwebhooks`` package with the stream's
secret (``whsec_...``, shown once when the stream is registered). A 2xx answer delivers it;
anything else (an error status, a refused connection, no answer within the timeout) is a
failed attempt, retried after the configured delays; after the last one the delivery is a
dead letter, listed and replayed with ``faceledger webhooks`` or the API. Receivers must be
on hosts the operator allow-listed (checked when the stream is registered and again before
each attempt); redirects are not followed.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import secrets
import threading
from urllib.parse import urlparse

import httpx
from standardwebhooks.webhooks import Webhook

from faceledger.errors import Forbidden, InvalidArgument
from faceledger.gallery.streams import StreamStore
from faceledger.gallery.schema import utcnow

log = logging.getLogger("faceledger.webhooks")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class HostAllowList:
    """Hosts (exact names) and networks (CIDR) the operator lets streams and webhooks reach."""

    def __init__(self, spec: str) -> None:
        self.names: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in (x.strip() for x in spec.split(",")):
            if not item:
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.names.add(item.lower())

    def allows(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return host.lower() in self.names
        return any(address in n for n in self.networks)

    def check(self, url: str, what: str) -> str:
        try:
            parsed = urlparse(url)
            host = parsed.hostname
        except ValueError as exc:  # e.g. "Invalid IPv6 URL"
            raise InvalidArgument(f"the {what} URL cannot be read: {exc}", url=url[:200]) from exc
        if what == "webhook" and parsed.scheme not in ("http", "https"):
            raise InvalidArgument("a webhook URL is http:// or https://", url=url)
        if not self.allows(host):
            raise Forbidden(f"the {what} host '{host}' is not on the operator's allow-list "
                            "(FACELEDGER_STREAM_ALLOWED_HOSTS)", host=host)
        return url


class WebhookSender:
    def __init__(self, streams: StreamStore, allowed: HostAllowList, *, delays: str = "1,5,30,120,600,1800",
                 timeout: float = 5.0) -> None:
        self.streams = streams
        self.allowed = allowed
        self.delays = [float(x) for x in delays.split(",") if x.strip()]
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="faceledger-webhooks", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # the database may be briefly unavailable: try again on the next round
                log.exception("webhook delivery round failed")
            self._wake.wait(0.5)
            self._wake.clear()

    def deliver_due(self, now: dt.datetime | None = None) -> int:
        """One round: attempt every delivery that is due; returns how many were delivered."""
        delivered = 0
        for delivery_id, event_id, stream_id, event, attempts in self.streams.due(now or utcnow()):
            url, secret = self.streams.secret(stream_id)
            error = self._post(url, secret, event_id, event)
            if error is None:
                self.streams.delivered(delivery_id)
                delivered += 1
                continue
            retry = attempts < len(self.delays)
            when = utcnow() + dt.timedelta(seconds=self.delays[attempts]) if retry else None
            self.streams.failed(delivery_id, error, when)
            if not retry:
                log.warning("webhook delivery %s of stream %s is a dead letter: %s", delivery_id, stream_id, error)
        return delivered

    def _post(self, url: str | None, secret: str | None, event_id: int, event: dict) -> str | None:
        if not url or not secret:
            return "the stream has no webhook"
        try:
            self.allowed.check(url, "webhook")
        except (Forbidden, InvalidArgument) as exc:
            return str(exc)
        body = json.dumps(event, separators=(",", ":"))
        msg_id = f"evt_{event_id}"
        now = dt.datetime.now(dt.timezone.utc)
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(int(now.timestamp())),
                   "webhook-signature": Webhook(secret).sign(msg_id, now, body)}
        try:
            answer = self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
