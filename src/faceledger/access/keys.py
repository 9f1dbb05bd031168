"""API keys: created by the CLI, shown once, stored as a SHA-256 of the secret, revocable.

A key reads ``fl_<id>_<secret>``; ``id`` is public (it names the key in lists and the
audit log), the secret has 256 bits of entropy, so a plain SHA-256 is a sound verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from faceledger.errors import Forbidden, InvalidArgument, NotFound, Unauthorized
from faceledger.gallery.records import iso
from faceledger.gallery.schema import ApiKey, utcnow

SCOPES = ("detect", "verify", "identify", "enroll", "admin")


@dataclass(frozen=True)
class Principal:
    """The caller of a request, as its key describes it."""

    key_id: str
    tenant: str
    scopes: frozenset[str]
    purpose: str

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this key lacks the '{scope}' scope", scope=scope, key_id=self.key_id)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, session: sessionmaker[Session]) -> None:
        self.session = session

    def create(self, tenant: str, scopes: list[str], purpose: str) -> tuple[str, dict]:
        """A new key; returns (the full key, shown this once; its description)."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InvalidArgument(f"scopes are some of {', '.join(SCOPES)}", unknown=sorted(unknown))
        if not tenant or not purpose.strip():
            raise InvalidArgument("a key needs a tenant and a declared purpose")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self.session() as s:
            row = ApiKey(id=key_id, secret_sha256=_digest(secret), tenant=tenant, scopes=sorted(set(scopes)),
                         purpose=purpose.strip())
            s.add(row)
            s.commit()
            return f"fl_{key_id}_{secret}", self._describe(row)

    def list(self, tenant: str | None = None) -> list[dict]:
        with self.session() as s:
            query = select(ApiKey).order_by(ApiKey.created_at)
            if tenant:
                query = query.where(ApiKey.tenant == tenant)
            return [self._describe(k) for k in s.scalars(query)]

    def revoke(self, key_id: str) -> dict:
        with self.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"key '{key_id}' not found", key_id=key_id)
            row.revoked_at = row.revoked_at or utcnow()
            s.commit()
            return self._describe(row)

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise Unauthorized("an API key is required (header 'Authorization: Bearer fl_...' or 'X-API-Key')")
        parts = presented.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != "fl":
            raise Unauthorized("malformed API key")
        with self.session() as s:
            row = s.get(ApiKey, parts[1])
            if row is None or not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
                raise Unauthorized("unknown API key")
            if row.revoked_at is not None:
                raise Unauthorized("this API key has been revoked", key_id=row.id)
            return Principal(row.id, row.tenant, frozenset(row.scopes), row.purpose)

    @staticmethod
    def _describe(row: ApiKey) -> dict:
        return {"key_id": row.id, "tenant": row.tenant, "scopes": list(row.scopes), "purpose": row.purpose,
                "created_at": iso(row.created_at), "revoked_at": iso(row.revoked_at)}
