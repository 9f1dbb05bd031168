"""Domain events: what happened, published once by the operations layer.

Subscribers (the audit log, metrics, later webhooks) react to them; no front end writes an
audit record or counts a face itself. Every event names its operation, its actor and what
the operation found; a refusal is an ``OperationRefused`` naming the refused operation.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from faceledger.service.actor import Actor

log = logging.getLogger("faceledger.events")


@dataclass(frozen=True)
class Event:
    operation: ClassVar[str] = "operation"
    actor: Actor
    collection: str | None = None
    subject_ids: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()
    decision: str | None = None
    faces: int = 0  # faces processed (metrics)

    @property
    def name(self) -> str:
        return self.operation

    @property
    def outcome(self) -> str:
        return "ok"


@dataclass(frozen=True)
class FacesDetected(Event):
    operation: ClassVar[str] = "detect"


@dataclass(frozen=True)
class FacesCompared(Event):
    operation: ClassVar[str] = "compare"


@dataclass(frozen=True)
class CollectionCreated(Event):
    operation: ClassVar[str] = "collection.create"


@dataclass(frozen=True)
class CollectionChanged(Event):
    operation: ClassVar[str] = "collection.update"


@dataclass(frozen=True)
class CollectionDeleted(Event):
    operation: ClassVar[str] = "collection.delete"
    face_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SubjectCreated(Event):
    operation: ClassVar[str] = "subject.create"


@dataclass(frozen=True)
class FacesEnrolled(Event):
    operation: ClassVar[str] = "enroll"
    face_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class FaceIdentified(Event):
    operation: ClassVar[str] = "identify"


@dataclass(frozen=True)
class SubjectVerified(Event):
    operation: ClassVar[str] = "verify"


@dataclass(frozen=True)
class SubjectErased(Event):
    """A subject, or one of its faces, erased (by a caller or by retention)."""

    operation: ClassVar[str] = "erase"
    face_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class KeyCreated(Event):
    operation: ClassVar[str] = "key.create"


@dataclass(frozen=True)
class KeyRevoked(Event):
    operation: ClassVar[str] = "key.revoke"


@dataclass(frozen=True)
class TenantPolicyChanged(Event):
    operation: ClassVar[str] = "tenant.policy"


@dataclass(frozen=True)
class TemplatesRekeyed(Event):
    operation: ClassVar[str] = "templates.rekey"


@dataclass(frozen=True)
class AuditQueried(Event):
    operation: ClassVar[str] = "audit.query"


@dataclass(frozen=True)
class AuditVerified(Event):
    operation: ClassVar[str] = "audit.verify"


@dataclass(frozen=True)
class ReportRead(Event):
    operation: ClassVar[str] = "report.read"


@dataclass(frozen=True)
class StreamRegistered(Event):
    operation: ClassVar[str] = "stream.create"


@dataclass(frozen=True)
class StreamStopped(Event):
    operation: ClassVar[str] = "stream.stop"


@dataclass(frozen=True)
class StreamDeleted(Event):
    operation: ClassVar[str] = "stream.delete"


@dataclass(frozen=True)
class VideoSubmitted(Event):
    operation: ClassVar[str] = "video.create"


@dataclass(frozen=True)
class WebhooksReplayed(Event):
    operation: ClassVar[str] = "webhooks.replay"


@dataclass(frozen=True)
class ConsentAttested(Event):
    operation: ClassVar[str] = "collection.attest"


@dataclass(frozen=True)
class FacesAssociated(Event):
    """Faces given to a subject (a person), or taken from one (``operation`` faces.disassociate)."""

    operation: ClassVar[str] = "faces.associate"
    face_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class FacesDisassociated(FacesAssociated):
    operation: ClassVar[str] = "faces.disassociate"


@dataclass(frozen=True)
class SubjectRenamed(Event):
    operation: ClassVar[str] = "subject.rename"


@dataclass(frozen=True)
class AuditExported(Event):
    operation: ClassVar[str] = "audit.export"


@dataclass(frozen=True)
class SessionOpened(Event):
    operation: ClassVar[str] = "console.sign_in"


@dataclass(frozen=True)
class SessionClosed(Event):
    operation: ClassVar[str] = "console.sign_out"


@dataclass(frozen=True)
class ReviewDecided(Event):
    """A person's verdict on an identification sent to review (the actor's reference names its audit record)."""

    operation: ClassVar[str] = "review.decide"


@dataclass(frozen=True)
class OperationRefused(Event):
    """An operation refused (bad input, no access, no face, ...) or failed: ``code`` says why."""

    refused: str = "operation"
    code: str = "INTERNAL"

    @property
    def name(self) -> str:
        return self.refused

    @property
    def outcome(self) -> str:
        return self.code


Handler = Callable[[Event], Any]


@dataclass
class EventBus:
    """Synchronous publish/subscribe. A subscriber marked ``required`` fails the publisher when it fails
    (the audit log: an operation whose record cannot be written must not look done); others are logged."""

    _subscribers: dict[type, list[tuple[str, Handler, bool]]] = field(default_factory=lambda: defaultdict(list))

    def subscribe(self, name: str, handler: Handler, *, events: tuple[type, ...] = (Event,),
                  required: bool = False) -> None:
        for kind in events:
            self._subscribers[kind].append((name, handler, required))

    def publish(self, event: Event) -> dict[str, Any]:
        """Deliver ``event`` to every subscriber of its type (or a base type); their results by name."""
        results = {}
        for kind in type(event).__mro__:
            for name, handler, required in self._subscribers.get(kind, ()):
                try:
                    results[name] = handler(event)
                except Exception:
                    if required:
                        raise
                    log.exception("event subscriber %s failed on %s", name, event.name)
        return results
