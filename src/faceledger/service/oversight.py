"""Oversight operations, for people rather than programs (the web console): sessions signed in with an API key, the
recent operations of a tenant, and the review queue.

The review queue needs no store of its own: an identification the policy sent to human review is in the audit log
(operation ``identify``, decision ``review``, its candidates and scores); a reviewer's verdict is another audited
operation (``review.decide``) whose reference names that record (``audit:<seq>``). The queue is the first without
the second, so it survives restarts and every verdict is on the chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from faceledger.access.sessions import SignedIn
from faceledger.errors import AlreadyExists, InvalidArgument, NotFound
from faceledger.service import events as ev
from faceledger.service.actor import Actor

REVIEW_REFERENCE = "audit:"


@dataclass(frozen=True)
class ReviewItem:
    seq: int
    at: str
    collection: str | None
    candidates: list[tuple[str, float]]  # (subject id, similarity), best first
    purpose: str | None
    key_id: str | None


class OversightOperations:
    """Mixed into ``Faceledger``: uses its keys, audit log, ``_operation``, ``_done`` and ``authorize``."""

    # ------------------------------------------------------------------ console sessions
    def open_session(self, api_key: str | None, *, request_id: str | None = None,
                     client: str | None = None) -> tuple[str, Actor, SignedIn]:
        """Sign a browser in with an API key: (the session cookie, the actor, the session). Audited."""
        cookie, signed = self.sessions.open(api_key)
        actor = self._session_actor(signed, request_id, client)
        with self._operation("console.sign_in", actor):
            self._done(ev.SessionOpened(actor, decision=f"session until {signed.expires_at.isoformat()}"))
        return cookie, actor, signed

    def session_actor(self, cookie: str | None, *, request_id: str | None = None,
                      client: str | None = None) -> tuple[Actor, SignedIn]:
        """The actor of a console session (Unauthorized when it ended or its key was revoked)."""
        signed = self.sessions.resolve(cookie)
        return self._session_actor(signed, request_id, client), signed

    def close_session(self, actor: Actor, cookie: str | None) -> None:
        with self._operation("console.sign_out", actor):
            self.sessions.close(cookie)
            self._done(ev.SessionClosed(actor))

    @staticmethod
    def _session_actor(signed: SignedIn, request_id: str | None, client: str | None) -> Actor:
        p = signed.principal
        return Actor(p.tenant, p.key_id, p.purpose, p.scopes, request_id=request_id, client=client,
                     collection=p.collection)

    # ------------------------------------------------------------------ what happened
    def recent_operations(self, actor: Actor, limit: int = 20) -> list[dict]:
        """The tenant's latest audit records, newest first (not itself audited: an overview, not a query)."""
        self.authorize(actor, "audit.query")
        if actor.collection is not None:
            return []  # a key bound to one collection does not see the tenant's log
        return self.audit.query(tenant=actor.tenant, limit=limit, newest_first=True)

    # ------------------------------------------------------------------ the review queue
    def pending_reviews(self, actor: Actor, limit: int = 100) -> list[ReviewItem]:
        """Identifications of this tenant that the policy sent to human review and nobody has decided yet."""
        self.authorize(actor, "review.read")
        decided = {r["reference"] for r in self.audit.query(tenant=actor.tenant, operation="review.decide",
                                                            limit=10**6)}
        items = []
        for r in self.audit.query(tenant=actor.tenant, operation="identify", limit=5000, newest_first=True):
            if _awaits_review(r) and f"{REVIEW_REFERENCE}{r['seq']}" not in decided and actor.may_see(r["collection"]):
                items.append(_item(r))
                if len(items) >= limit:
                    break
        return items

    def decide_review(self, actor: Actor, seq: int, *, accept: bool, subject_id: str | None = None) -> int | None:
        """A reviewer's verdict on an identification in the queue: accepted as ``subject_id`` (one of its
        candidates) or rejected. Audited with a reference to the identification's record; returns the verdict's."""
        reference = f"{REVIEW_REFERENCE}{seq}"
        actor = actor.with_reference(reference)
        with self._operation("review.decide", actor, subject_ids=[subject_id] if subject_id else []):
            self.authorize(actor, "review.decide")
            (record,) = self.audit.query(tenant=actor.tenant, operation="identify", seq=seq) or [None]
            if record is None or not _awaits_review(record):
                raise NotFound(f"no identification {seq} waits for review", seq=seq)
            actor.check_collection(record["collection"])
            if self.audit.query(tenant=actor.tenant, operation="review.decide", limit=1, reference=reference):
                raise AlreadyExists(f"identification {seq} was reviewed already", seq=seq)
            item = _item(record)
            if accept and subject_id not in [c for c, _ in item.candidates]:
                raise InvalidArgument("an accepted identification names one of its candidates", seq=seq)
            return self._done(ev.ReviewDecided(actor, item.collection, (subject_id,) if accept else (),
                                               decision=f"accepted: {subject_id}" if accept else "rejected"))


def _awaits_review(record: dict) -> bool:
    """An identification whose decision (for some face) was "review"."""
    return record["outcome"] == "ok" and "review" in (record["decision"] or "").split(",")


def _item(record: dict) -> ReviewItem:
    return ReviewItem(record["seq"], record["at"], record["collection"],
                      list(zip(record["subject_ids"], record["scores"])), record["purpose"], record["key_id"])
