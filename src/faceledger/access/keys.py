"""API keys: created by the CLI, shown once, stored as a SHA-256 of the secret, revocable.

A key reads ``fl_<id>_<secret>``; ``id`` is public (it names the key in lists and the
audit log), the secret has 256 bits of entropy, so a plain SHA-256 is a sound verifier.

An AWS-style key (``--aws``: an access key id and a secret access key, for clients that sign
with AWS Signature V4) cannot be checked against a digest: the server recomputes each
signature from the secret. Its secret is therefore kept sealed (AES-256-GCM) under the
credentials key, which lives outside the database (a setting or a key file), so a copy of the
database alone gives no usable credential. A key may be bound to one collection (CompreFace's
clients bind a key to one service): it then reaches no other collection through any front end.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from faceledger.errors import ConfigurationError, Forbidden, InvalidArgument, NotFound, Unauthorized
from faceledger.gallery.crypto import TemplateCipher, parse_key
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
    collection: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this key lacks the '{scope}' scope", scope=scope, key_id=self.key_id)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def credentials_key(configured: str | None, home: Path) -> Callable[[], bytes]:
    """The key sealing AWS-style secrets, read when first needed: the setting, else ``home/credentials.key``
    (created with the first AWS-style key). A missing file under existing AWS-style keys is an error."""
    def load(create: bool = False) -> bytes:
        if configured:
            return parse_key(configured)
        path = home / "credentials.key"
        if not path.is_file():
            if not create:
                raise ConfigurationError(f"the credentials key file {path} is missing: restore it (or set "
                                         "FACELEDGER_CREDENTIALS_KEY); AWS-style keys cannot be checked without it")
            home.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".credentials.key.{secrets.token_hex(4)}")
            with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(temporary, path)  # the first process to create it wins; the others read its key
            except FileExistsError:
                pass
            finally:
                temporary.unlink()
        return bytes.fromhex(path.read_text().strip())

    return load


class KeyStore:
    def __init__(self, session: sessionmaker[Session], sealing_key: Callable[..., bytes] | None = None) -> None:
        self.session = session
        self.sealing_key = sealing_key

    def _cipher(self, create: bool = False) -> TemplateCipher:
        if self.sealing_key is None:
            raise ConfigurationError("this key store has no credentials key for AWS-style keys")
        return TemplateCipher(self.sealing_key(create))

    def create(self, tenant: str, scopes: list[str], purpose: str, *, collection: str | None = None,
               aws: bool = False) -> tuple[str, dict]:
        """A new key; returns (the full key, shown this once; its description). ``aws``: an access key id (the
        description's ``key_id``) and a secret access key (returned) for SigV4 clients."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InvalidArgument(f"scopes are some of {', '.join(SCOPES)}", unknown=sorted(unknown))
        if not tenant or not purpose.strip():
            raise InvalidArgument("a key needs a tenant and a declared purpose")
        if aws:  # the shape of AWS's own: 20 upper-case characters, a 40-character secret
            key_id = "FLAK" + base64.b32encode(secrets.token_bytes(10)).decode()[:16]
            secret = secrets.token_urlsafe(30)
            sealed = self._cipher(create=True).seal(secret.encode(), _aad(key_id))
        else:
            key_id, secret, sealed = secrets.token_hex(6), secrets.token_urlsafe(32), None
        with self.session() as s:
            row = ApiKey(id=key_id, secret_sha256=_digest(secret), tenant=tenant, scopes=sorted(set(scopes)),
                         purpose=purpose.strip(), secret_sealed=sealed, collection=collection)
            s.add(row)
            s.commit()
            return (secret if aws else f"fl_{key_id}_{secret}"), self._describe(row)

    def principal(self, key_id: str) -> Principal:
        """The principal of a key by its id (a console session re-checks its key on every request)."""
        with self.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                raise Unauthorized("the key of this session was revoked", key_id=key_id, reason="revoked")
            return self._principal(row)

    def aws_secret(self, access_key_id: str) -> tuple[Principal, str]:
        """The principal of an AWS-style key and its secret (to check a signature with). Unauthorized for an
        unknown, revoked or bearer key."""
        with self.session() as s:
            row = s.get(ApiKey, access_key_id) if access_key_id else None
            if row is None or row.secret_sealed is None:
                raise Unauthorized("the access key id is not a faceledger AWS-style key", reason="unknown")
            if row.revoked_at is not None:
                raise Unauthorized("this access key has been revoked", key_id=row.id, reason="revoked")
            secret = self._cipher().open(row.secret_sealed, _aad(row.id)).decode()
            return self._principal(row), secret

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
            raise Unauthorized("an API key is required (header 'Authorization: Bearer fl_...' or 'X-API-Key')",
                               reason="missing")
        parts = presented.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != "fl":
            raise Unauthorized("malformed API key", reason="malformed")
        with self.session() as s:
            row = s.get(ApiKey, parts[1])
            if row is None or not hmac.compare_digest(row.secret_sha256, _digest(parts[2])):
                raise Unauthorized("unknown API key", reason="unknown")
            if row.revoked_at is not None:
                raise Unauthorized("this API key has been revoked", key_id=row.id, reason="revoked")
            if row.secret_sealed is not None:
                raise Unauthorized("an AWS-style key signs its requests (SigV4); it is not a bearer key",
                                   reason="aws")
            return self._principal(row)

    @staticmethod
    def _principal(row: ApiKey) -> Principal:
        return Principal(row.id, row.tenant, frozenset(row.scopes), row.purpose, row.collection)

    @staticmethod
    def _describe(row: ApiKey) -> dict:
        return {"key_id": row.id, "tenant": row.tenant, "scopes": list(row.scopes), "purpose": row.purpose,
                "kind": "aws" if row.secret_sealed is not None else "bearer", "collection": row.collection,
                "created_at": iso(row.created_at), "revoked_at": iso(row.revoked_at)}


def _aad(key_id: str) -> bytes:
    return b"faceledger-aws-secret:" + key_id.encode()
