"""Web console sessions: a browser signs in once with an API key and then carries a random session cookie.

The database keeps the cookie's SHA-256 (a copy of the table signs no one in), the key it stands for, a CSRF token
for the session's state-changing requests, and an expiry. Every request checks the key again, so revoking a key
ends its sessions at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from faceledger.access.keys import KeyStore, Principal
from faceledger.errors import Unauthorized
from faceledger.gallery.schema import ConsoleSession, utcnow

SESSION_HOURS = 8


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    csrf: str
    expires_at: dt.datetime


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class SessionStore:
    def __init__(self, session: sessionmaker[Session], keys: KeyStore, hours: float = SESSION_HOURS) -> None:
        self.session = session
        self.keys = keys
        self.lifetime = dt.timedelta(hours=hours)

    def open(self, api_key: str | None) -> tuple[str, SignedIn]:
        """Sign in with an API key: (the session cookie, shown to the browser only; the session)."""
        principal = self.keys.authenticate(api_key)
        cookie, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), utcnow()
        with self.session() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
            s.add(ConsoleSession(id_sha256=_digest(cookie), key_id=principal.key_id, csrf=csrf, created_at=now,
                                 expires_at=now + self.lifetime))
            s.commit()
        return cookie, SignedIn(principal, csrf, now + self.lifetime)

    def resolve(self, cookie: str | None) -> SignedIn:
        """The session of a cookie; Unauthorized when there is none, it expired, or its key was revoked."""
        if not cookie:
            raise Unauthorized("sign in first", reason="missing")
        with self.session() as s:
            row = s.get(ConsoleSession, _digest(cookie))
            if row is None or row.expires_at <= utcnow():
                raise Unauthorized("the session has ended: sign in again", reason="expired")
            key_id, csrf, expires = row.key_id, row.csrf, row.expires_at
        return SignedIn(self.keys.principal(key_id), csrf, expires)

    def close(self, cookie: str | None) -> None:
        if not cookie:
            return
        with self.session() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.id_sha256 == _digest(cookie)))
            s.commit()
