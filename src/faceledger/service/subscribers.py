"""The subscribers faceledger always runs: the audit log (required) and the service metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from faceledger.audit.log import AuditLog
from faceledger.gallery import outbox
from faceledger.service.events import Event, EventBus


def audit_writer(log: AuditLog):
    """One audit record per event: who (actor), what (operation, collection, subjects), result, outcome."""

    def write(event: Event) -> int | None:
        if not log.enabled:
            return None
        a = event.actor
        intent = outbox.current()  # the operation's change committed with an outbox intent: complete it
        token = intent.token if intent is not None and intent.written else None
        return log.append(event.name, tenant=a.tenant, key_id=a.key_id, collection=event.collection,
                          subject_ids=event.subject_ids, scores=event.scores, decision=event.decision,
                          outcome=event.outcome, purpose=a.purpose, reference=a.reference,
                          request_id=a.request_id, client=a.client, outbox_token=token)

    return write


class ServiceMetrics:
    """Prometheus metrics of the operations layer. Gallery gauges are labelled by opaque collection ids:
    tenant and collection names never appear in metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.faces = Counter("faceledger_faces_processed_total", "Faces processed by operations", ["operation"],
                             registry=self.registry)
        self.operations = Counter("faceledger_operations_total", "Operations by outcome", ["operation", "outcome"],
                                  registry=self.registry)
        self.gallery_faces = Gauge("faceledger_gallery_faces", "Enrolled faces", ["collection_id"],
                                   registry=self.registry)
        self.gallery_subjects = Gauge("faceledger_gallery_subjects", "Enrolled subjects", ["collection_id"],
                                      registry=self.registry)

    def count(self, event: Event) -> None:
        self.operations.labels(event.name, event.outcome).inc()
        if event.faces:
            self.faces.labels(event.name).inc(event.faces)

    def set_gallery_sizes(self, sizes: list[tuple[int, int, int]]) -> None:
        self.gallery_faces.clear()  # a deleted collection's series disappear
        self.gallery_subjects.clear()
        for cid, subjects, faces in sizes:
            self.gallery_subjects.labels(str(cid)).set(subjects)
            self.gallery_faces.labels(str(cid)).set(faces)


def subscribe_defaults(bus: EventBus, log: AuditLog, metrics: ServiceMetrics) -> None:
    bus.subscribe("audit", audit_writer(log), required=True)
    bus.subscribe("metrics", metrics.count)
