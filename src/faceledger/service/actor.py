"""Who asks, and why: every operation takes an Actor, whatever front end it came through."""

from __future__ import annotations

import dataclasses
import getpass
from dataclasses import dataclass

from faceledger.errors import Forbidden

SCOPES = ("detect", "verify", "identify", "enroll", "admin")


@dataclass(frozen=True)
class Actor:
    """The caller of one operation: tenant, key, declared purpose, case reference, request.

    ``scopes`` None is the local operator at the command line, who may do everything on the
    machine that holds the database; a key's actor carries the key's scopes.
    """

    tenant: str | None  # None only before authentication (a refused request) and for system-wide work
    key_id: str | None = None
    purpose: str | None = None
    scopes: frozenset[str] | None = None
    reference: str | None = None
    request_id: str | None = None
    client: str | None = None
    collection: str | None = None  # the one collection the key is bound to (None: any of its tenant's)

    @classmethod
    def local(cls, tenant: str | None = "default", *, reference: str | None = None) -> Actor:
        """The command-line user: the OS user as purpose, client "cli"."""
        return cls(tenant=tenant, purpose=f"command line ({getpass.getuser()})", reference=reference, client="cli")

    @classmethod
    def system(cls, tenant: str | None, purpose: str) -> Actor:
        """faceledger itself acting on schedule (retention)."""
        return cls(tenant=tenant, purpose=purpose, client="faceledger")

    def has(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes or "admin" in self.scopes

    def require(self, *scopes: str) -> None:
        """Refuse unless the actor holds one of ``scopes`` (admin holds all)."""
        if not any(self.has(s) for s in scopes):
            raise Forbidden(f"this key lacks the '{scopes[0]}' scope", scope=scopes[0], key_id=self.key_id)

    def may_see(self, collection: str | None) -> bool:
        return self.collection is None or collection == self.collection

    def check_collection(self, collection: str | None) -> None:
        """Refuse a collection other than the one the key is bound to."""
        if self.collection is not None and collection is not None and collection != self.collection:
            raise Forbidden(f"this key is bound to collection '{self.collection}'", collection=collection,
                            key_id=self.key_id)

    def with_reference(self, reference: str | None) -> Actor:
        return dataclasses.replace(self, reference=reference) if reference is not None else self
