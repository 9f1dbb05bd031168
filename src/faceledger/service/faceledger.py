"""The operations layer: every front end (HTTP API, CLI, and those to come) calls these methods.

Each operation takes an ``Actor`` and does, once and in one place: the scope check, tenant
policy and guardrails, consent parsing and checks, the decision, and a domain event that
the audit log and the metrics subscribe to (a refusal is an event too). Front ends only map
their inputs to these calls and the results back to their outputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from faceledger.access import sigv4
from faceledger.access.keys import KeyStore, credentials_key
from faceledger.access.sessions import SessionStore
from faceledger.audit.log import AuditLog, Verification
from faceledger.config import Settings, get_settings
from faceledger.errors import FaceledgerError, Forbidden, InvalidArgument, NotFound
from faceledger.gallery import outbox
from faceledger.gallery.gallery import Gallery
from faceledger.gallery.records import (
    CollectionInfo,
    Consent,
    ErasureReceipt,
    FaceInfo,
    SubjectInfo,
    TenantPolicyInfo,
    iso,
)
from faceledger.gallery.schema import utcnow
from faceledger.gallery.storage import check_writable, storage_error
from faceledger.imaging import ImageInput
from faceledger.matching.compare import Comparison, Template, compare, decide
from faceledger.matching.decisions import IdentifyResult, open_set
from faceledger.matching.openset import check_target_fpir
from faceledger.pipeline.engine import FaceAnalysis, FaceEngine
from faceledger.service import events as ev
from faceledger.service.actor import Actor
from faceledger.service.consent import checked, instant
from faceledger.service.face_level import FaceLevelOperations
from faceledger.service.oversight import OversightOperations
from faceledger.service.guardrails import HourlyQuota, MetadataLimits, RateLimiter
from faceledger.service.subscribers import ServiceMetrics, subscribe_defaults

READ_SCOPES = ("enroll", "identify", "verify")
# the scope each operation needs (any one of them; admin holds all), in one table for every front end
OPERATION_SCOPES: dict[str, tuple[str, ...]] = {
    "detect": ("detect",), "compare": ("verify",), "identify": ("identify",), "verify": ("verify",),
    "enroll": ("enroll",), "erase": ("enroll",), "subject.create": ("enroll",), "subjects.read": ("enroll",),
    "collections.read": READ_SCOPES, "collection.create": ("admin",), "collection.update": ("admin",),
    "collection.delete": ("admin",),
    "key.create": ("admin",), "key.revoke": ("admin",), "keys.read": ("admin",), "audit.query": ("admin",),
    "audit.verify": ("admin",), "audit.export": ("admin",), "report.read": ("admin",), "index": ("admin",),
    "stream.create": ("admin",), "stream.stop": ("admin",), "stream.delete": ("admin",),
    "streams.read": ("admin", "identify", "detect"), "video.create": ("identify", "detect"),
    "webhooks.read": ("admin",), "webhooks.replay": ("admin",),
    "collection.attest": ("admin",), "faces.associate": ("enroll",), "faces.disassociate": ("enroll",),
    "subject.rename": ("enroll",), "review.read": ("admin", "identify"), "review.decide": ("admin", "identify"),
}


class Faceledger(FaceLevelOperations, OversightOperations):
    def __init__(self, settings: Settings | None = None, engine: FaceEngine | None = None, *,
                 metrics: ServiceMetrics | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = engine or FaceEngine(self.settings)
        self.gallery = Gallery(self.settings, self.engine)
        self.keys = KeyStore(self.gallery.store.session,
                             credentials_key(self.settings.credentials_key, self.settings.home))
        self.sessions = SessionStore(self.gallery.store.session, self.keys)
        self.audit = AuditLog.from_settings(self.settings, self.gallery.store.session)
        self.metrics = metrics or ServiceMetrics()
        self.events = ev.EventBus()
        subscribe_defaults(self.events, self.audit, self.metrics)
        self.rate = RateLimiter(self.settings.identify_per_minute, self.gallery.store.count_use)
        self.hourly = HourlyQuota(self.gallery.store.count_use)

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> dict[str, dict]:
        """Load the models, record any change a crash left without its audit record, and check every
        collection's vectors against SQL; returns what was repaired."""
        self.engine.load()
        self.audit.replay_outbox()
        return self.gallery.startup()

    def maintain(self) -> dict:
        """Periodic upkeep (the service runs it every minute): seal the audit chain when records have
        waited too long unsealed, and record changes whose process died before writing their record."""
        return {"sealed": self.audit.seal_if_due(), "recovered": self.audit.replay_outbox(older_than=60)}

    def close(self) -> None:
        """Seal what this process appended to the audit log, persist the vector store, release the database."""
        if self.audit.unsealed:
            self.audit.checkpoint()
        self.gallery.close()

    def authenticate(self, token: str | None, *, request_id: str | None = None, client: str | None = None) -> Actor:
        """The actor of an API key (raises Unauthorized for a missing, unknown or revoked key)."""
        p = self.keys.authenticate(token)
        return Actor(p.tenant, p.key_id, p.purpose, p.scopes, request_id=request_id, client=client,
                     collection=p.collection)

    def authenticate_signed(self, request: sigv4.SignedRequest, service: str, must_sign: tuple[str, ...] = (), *,
                            request_id: str | None = None, client: str | None = None) -> Actor:
        """The actor of an AWS Signature V4 request signed with an AWS-style key, the signature covering
        ``must_sign`` (raises Unauthorized with a ``reason``: missing, malformed, expired, unknown, revoked or
        signature)."""
        p = sigv4.verify(request, service, self.keys.aws_secret, must_sign=("host", "x-amz-date", *must_sign))
        return Actor(p.tenant, p.key_id, p.purpose, p.scopes, request_id=request_id, client=client,
                     collection=p.collection)

    def authorize(self, actor: Actor, operation: str) -> None:
        """Refuse (Forbidden) unless the actor holds a scope the operation needs. Front ends may call it
        before reading a request body, so a key without the scope is told so first."""
        actor.require(*OPERATION_SCOPES[operation])

    def reach(self, actor: Actor, operation: str, collection: str | None) -> None:
        """``authorize``, and refuse a collection outside the key's binding."""
        self.authorize(actor, operation)
        actor.check_collection(collection)

    def refuse(self, operation: str, actor: Actor, exc: Exception, *, collection: str | None = None,
               subject_ids: Sequence[str] = (), decision: str | None = None) -> None:
        """Record a refusal that happened before the operation could start (authentication, a bad body)."""
        if getattr(exc, "audited", False):
            return
        try:
            exc.audited = True  # so that no front end records it a second time
        except AttributeError:
            pass
        full = storage_error(exc)
        code = exc.code if isinstance(exc, FaceledgerError) else full.code if full is not None else "INTERNAL"
        self.events.publish(ev.OperationRefused(actor, collection, tuple(subject_ids), decision=decision,
                                                refused=operation, code=code))

    def check_storage(self) -> None:
        """Refuse (STORAGE_FULL, STORAGE_UNAVAILABLE) unless the database can take a write now (readiness)."""
        check_writable(self.gallery.store.db, self.settings.home)

    @contextmanager
    def _operation(self, name: str, actor: Actor, collection: str | None = None,
                   subject_ids: Sequence[str] = ()) -> Iterator[None]:
        """Run one operation: any change it commits carries its audit intent (so a crash before the
        record is written cannot lose it), and a refusal or failure is recorded once."""
        intent = {"operation": name, "tenant": actor.tenant, "key_id": actor.key_id, "collection": collection,
                  "subject_ids": list(subject_ids), "scores": [], "decision": None, "outcome": "ok",
                  "purpose": actor.purpose, "reference": actor.reference, "request_id": actor.request_id,
                  "client": actor.client}
        with outbox.pending(intent):
            try:
                actor.check_collection(collection)
                yield
            except Exception as exc:
                self.refuse(name, actor, exc, collection=collection, subject_ids=subject_ids)
                raise

    def _done(self, event: ev.Event) -> int | None:
        """Publish a completed operation; returns its audit record's sequence number."""
        return self.events.publish(event).get("audit")

    @property
    def calibration(self):
        return self.gallery.calibration

    # ------------------------------------------------------------------ faces
    def detect(self, actor: Actor, image: ImageInput) -> FaceAnalysis:
        """Boxes, landmarks, confidence and quality of every face (no templates)."""
        with self._operation("detect", actor):
            self.authorize(actor, "detect")
            analysis = self.engine.analyze(image, embed=False)
            self._done(ev.FacesDetected(actor, decision=f"{len(analysis)} faces", faces=len(analysis)))
        return analysis

    def compare(self, actor: Actor, image_a: ImageInput, image_b: ImageInput, *, target_fmr: float | None = 1e-4,
                face_a: int | None = None, face_b: int | None = None) -> Comparison:
        """1:1 between the faces of two images: similarity, calibrated FMR, decision at ``target_fmr``."""
        with self._operation("compare", actor):
            self.authorize(actor, "compare")
            a, i = self.engine.single_face(image_a, face=face_a)
            b, j = self.engine.single_face(image_b, face=face_b)
            result = compare(Template(a.templates[i], a.model_id), Template(b.templates[j], b.model_id),
                             self.calibration, target_fmr)
            self._done(ev.FacesCompared(actor, scores=(result.similarity,), decision=_yes_no(result), faces=2))
        return result

    # ------------------------------------------------------------------ collections
    def create_collection(self, actor: Actor, name: str, *, target_fmr: float = 1e-4, target_fpir: float | None = None,
                          require_consent: bool = True, store_crops: bool = False,
                          retention_days: int | None = None) -> CollectionInfo:
        """A collection: ``target_fpir`` sets its 1:N open-set policy (default: the deployment's), ``target_fmr``
        its 1:1 verification threshold."""
        with self._operation("collection.create", actor, name):
            self.authorize(actor, "collection.create")
            info = self.gallery.create_collection(name, tenant=actor.tenant, target_fmr=target_fmr,
                                                  target_fpir=target_fpir,
                                                  require_consent=require_consent, store_crops=store_crops,
                                                  retention_days=retention_days)
            self._done(ev.CollectionCreated(actor, name))
        return info

    def list_collections(self, actor: Actor) -> list[CollectionInfo]:
        self.authorize(actor, "collections.read")
        return [c for c in self.gallery.list_collections(actor.tenant)
                if actor.collection is None or c.name == actor.collection]

    def get_collection(self, actor: Actor, name: str) -> CollectionInfo:
        self.reach(actor, "collections.read", name)
        return self.gallery.get_collection(name, actor.tenant)

    def update_collection(self, actor: Actor, name: str, *, target_fpir: float | None = None,
                          target_fmr: float | None = None) -> CollectionInfo:
        """Change a collection's policy: its 1:N target FPIR and its 1:1 target FMR (None: unchanged)."""
        with self._operation("collection.update", actor, name):
            self.authorize(actor, "collection.update")
            before = self.gallery.get_collection(name, actor.tenant)
            info = self.gallery.update_collection(name, tenant=actor.tenant, target_fpir=target_fpir,
                                                  target_fmr=target_fmr)
            self._done(ev.CollectionChanged(actor, name, decision=(
                f"target_fpir {before.target_fpir:g} -> {info.target_fpir:g}, "
                f"target_fmr {before.target_fmr:g} -> {info.target_fmr:g}")))
        return info

    def delete_collection(self, actor: Actor, name: str) -> ErasureReceipt:
        """Delete a collection, erasing every subject and template in it."""
        with self._operation("collection.delete", actor, name):
            self.authorize(actor, "collection.delete")
            receipt = self.gallery.delete_collection(name, actor.tenant)
            seq = self._done(ev.CollectionDeleted(actor, name, tuple(receipt.subject_ids),
                                                  decision=f"erased {len(receipt.face_ids)} faces",
                                                  face_ids=tuple(receipt.face_ids)))
        return dataclasses.replace(receipt, audit_seq=seq)

    # ------------------------------------------------------------------ subjects
    def create_subject(self, actor: Actor, collection: str, subject_id: str, *, display_name: str | None = None,
                       metadata: dict | None = None, consent: Consent | None = None) -> SubjectInfo:
        """A subject with metadata and a consent record; faces are enrolled separately."""
        with self._operation("subject.create", actor, collection, [subject_id]):
            self.authorize(actor, "subject.create")
            MetadataLimits.check(metadata)
            consent = checked(consent)
            info = self.gallery.create_subject(collection, subject_id, tenant=actor.tenant,
                                               display_name=display_name, metadata=metadata, consent=consent)
            self._done(ev.SubjectCreated(actor, collection, (subject_id,)))
        return info

    def list_subjects(self, actor: Actor, collection: str, *, limit: int = 100, offset: int = 0,
                      search: str | None = None) -> list[SubjectInfo]:
        self.reach(actor, "subjects.read", collection)
        return self.gallery.list_subjects(collection, tenant=actor.tenant, limit=limit, offset=offset, search=search)

    def get_subject(self, actor: Actor, collection: str, subject_id: str) -> SubjectInfo:
        """A subject with its faces (never templates)."""
        self.reach(actor, "subjects.read", collection)
        return self.gallery.get_subject(collection, subject_id, tenant=actor.tenant)

    def list_faces(self, actor: Actor, collection: str, subject_id: str) -> list[FaceInfo]:
        return self.get_subject(actor, collection, subject_id).faces

    def erase_subject(self, actor: Actor, collection: str, subject_id: str) -> ErasureReceipt:
        """Erase a subject: its templates leave the database and the vector store in this call."""
        with self._operation("erase", actor, collection, [subject_id]):
            self.authorize(actor, "erase")
            receipt = self.gallery.delete_subject(collection, subject_id, tenant=actor.tenant)
            seq = self._done(ev.SubjectErased(actor, collection, (subject_id,),
                                              decision=f"erased {len(receipt.face_ids)} faces",
                                              face_ids=tuple(receipt.face_ids)))
        return dataclasses.replace(receipt, audit_seq=seq)

    def erase_face(self, actor: Actor, collection: str, subject_id: str, face_id: int) -> ErasureReceipt:
        with self._operation("erase", actor, collection, [subject_id]):
            self.authorize(actor, "erase")
            receipt = self.gallery.delete_face(collection, subject_id, face_id, tenant=actor.tenant)
            seq = self._done(ev.SubjectErased(actor, collection, (subject_id,), decision="erased 1 face",
                                              face_ids=(face_id,)))
        return dataclasses.replace(receipt, audit_seq=seq)

    def enroll(self, actor: Actor, collection: str, subject_id: str, images: Sequence[ImageInput], *,
               display_name: str | None = None, metadata: dict | None = None, consent: Consent | None = None,
               face: int | None = None) -> SubjectInfo:
        """Enrol one face per image for a subject (created if new); all or nothing."""
        with self._operation("enroll", actor, collection, [subject_id]):
            self.authorize(actor, "enroll")
            MetadataLimits.check(metadata)
            consent = checked(consent)
            info = self.gallery.enroll(collection, subject_id, images, tenant=actor.tenant,
                                       display_name=display_name, metadata=metadata, consent=consent, face=face)
            created = [f.face_id for f in info.faces if f.created]
            self._done(ev.FacesEnrolled(actor, collection, (subject_id,), decision=f"enrolled {len(created)} faces",
                                        faces=len(info.faces), face_ids=tuple(created)))
        return info

    # ------------------------------------------------------------------ search
    def identify(self, actor: Actor, collection: str, image: ImageInput, *, top_k: int = 5,
                 target_fpir: float | None = None, max_faces: int | None = None) -> IdentifyResult:
        """1:N for every face of the probe (largest first): top-k subjects and an open-set decision.

        The decision follows the collection's target FPIR (or ``target_fpir`` for this search: stricter,
        or looser with the admin scope) at the gallery's current size: match, review or unknown. The tenant's
        guardrails apply: per-key rate and hourly quota, faces searched per image, and human
        review (candidates only, decision "review"). ``max_faces``: search only that many faces, the largest.
        """
        if max_faces is not None and max_faces < 1:
            raise InvalidArgument("max_faces is at least 1")

        def faces():
            analysis = self.engine.analyze(image)
            keep = slice(0, max_faces)
            return (None if analysis.templates is None else analysis.templates[keep],
                    [[round(float(v), 1) for v in b] for b in analysis.detections.boxes][keep],
                    [q.to_dict() for q in analysis.quality][keep],
                    [[[round(float(v), 1) for v in p] for p in pts] for pts in analysis.detections.landmarks][keep])

        return self._identify(actor, collection, top_k, target_fpir, faces)

    def identify_face(self, actor: Actor, collection: str, template, box: Sequence[float], quality: dict, *,
                      top_k: int = 5, count_key_limits: bool = True) -> IdentifyResult:
        """1:N for one face already found and embedded by this engine (a video track's best face): the same
        decision, guardrails and audit record as ``identify``. A stream's identifications are limited by the
        stream's own budget (``count_key_limits=False``), not by its creator key's request rate."""
        face = (np.asarray(template, np.float32)[None], [list(box)], [quality], [None])
        return self._identify(actor, collection, top_k, None, lambda: face, count_key_limits=count_key_limits)

    def _identify(self, actor: Actor, collection: str, top_k: int, target_fpir: float | None, faces, *,
                  count_key_limits: bool = True) -> IdentifyResult:
        """The one 1:N decision: ``faces()`` gives (templates, boxes, quality dicts, landmarks) of the faces to search, called
        after the scope, policy and limit checks so that a refused search does no inference."""
        with self._operation("identify", actor, collection):
            self.authorize(actor, "identify")
            if not 1 <= top_k <= 100:
                raise InvalidArgument("top_k is between 1 and 100")
            if target_fpir is not None:
                check_target_fpir(target_fpir, "fpir")
            c = self.gallery.collection(collection, actor.tenant, for_search=True)
            if target_fpir is not None and target_fpir > c.target_fpir and not actor.has("admin"):
                raise Forbidden(f"a search may be stricter than the collection's policy (target FPIR "
                                f"{c.target_fpir:g}), not looser, without the admin scope", fpir=target_fpir)
            policy = self._search_limits(actor, count_key_limits)
            templates, boxes, qualities, landmarks = faces()
            n = min(len(boxes), policy.max_faces_per_search or self.settings.max_faces)
            found = self.gallery.search_for_decision(c, templates[:n], top_k) if n else []
            # counted after the search: SQL is written first, so every face the search could return is counted
            open_policy = self.gallery.open_set_policy(c, target_fpir)
            faces = [open_set(boxes[i], qualities[i], found[i][0], self.calibration, open_policy,
                              top_k=top_k, unseen_bound=found[i][1], human_review=policy.human_review,
                              landmarks=landmarks[i])
                     for i in range(n)]
            result = IdentifyResult(collection, self.engine.model_id, open_policy, faces, policy.human_review)
            self._done(ev.FaceIdentified(actor, collection,
                                         tuple(c.subject_id for f in faces for c in f.candidates),
                                         tuple(c.similarity for f in faces for c in f.candidates),
                                         decision=result.audit_decision, faces=n))
        return result

    def _search_limits(self, actor: Actor, count_key_limits: bool = True) -> TenantPolicyInfo:
        """The tenant's guardrails for a search, its use counted against the key's rate and hourly quota
        (RATE_LIMITED beyond them); the local operator has no key and no limits."""
        policy = self.gallery.store.tenant_policy(actor.tenant)
        if actor.key_id is not None and count_key_limits:
            self.rate.take(actor.key_id)
            if policy.identify_per_hour:
                self.hourly.take(actor.key_id, policy.identify_per_hour)
        return policy

    def verify(self, actor: Actor, collection: str, subject_id: str, image: ImageInput, *,
               target_fmr: float | None = None, face: int | None = None) -> Comparison:
        """1:1 of the image's face against a claimed subject (its best-matching face), at the collection's
        target FMR for the claim as a whole (best of the subject's k faces: each comparison at about FMR / k)."""
        with self._operation("verify", actor, collection, [subject_id]):
            self.authorize(actor, "verify")
            c = self.gallery.collection(collection, actor.tenant, for_search=True)
            self.gallery.store.get_subject(c, subject_id)  # NOT_FOUND before the slow part
            analysis, i = self.engine.single_face(image, face=face)
            score, k = self.gallery.best_score(c, subject_id, analysis.templates[i])
            result = decide(score, self.calibration, target_fmr or c.target_fmr, k=k)
            self._done(ev.SubjectVerified(actor, collection, (subject_id,), (result.similarity,),
                                          decision=_yes_no(result), faces=1))
        return result

    # ------------------------------------------------------------------ keys and tenants
    def create_key(self, actor: Actor, tenant: str, scopes: Sequence[str], purpose: str, *,
                   collection: str | None = None, aws: bool = False) -> tuple[str, dict]:
        """A new API key (shown once) for ``tenant``; a key's holder may only create keys for its own tenant (and a
        bound key only keys bound to its collection). ``collection`` binds the key to one collection; ``aws`` makes an
        access key id and a secret access key for SigV4 clients (the secret is returned)."""
        with self._operation("key.create", actor):
            self.authorize(actor, "key.create")
            if actor.scopes is not None and tenant != actor.tenant:
                raise Forbidden("a key may only create keys for its own tenant", tenant=tenant)
            if actor.collection is not None and collection != actor.collection:
                raise Forbidden(f"a key bound to collection '{actor.collection}' only creates keys bound to it")
            if collection is not None:
                self.gallery.store.collection(tenant, collection)  # NOT_FOUND for a collection that does not exist
            key, info = self.keys.create(tenant, list(scopes), purpose, collection=collection, aws=aws)
            self._done(ev.KeyCreated(actor, collection, decision=(
                f"{'AWS-style ' if aws else ''}key {info['key_id']} for tenant {tenant}: "
                f"{','.join(info['scopes'])}")))
        return key, info

    def list_keys(self, actor: Actor, tenant: str | None = None) -> list[dict]:
        self.authorize(actor, "keys.read")
        tenant_wide(actor, "the tenant's keys")
        return self.keys.list(actor.tenant if actor.scopes is not None else tenant)

    def revoke_key(self, actor: Actor, key_id: str) -> dict:
        with self._operation("key.revoke", actor):
            self.authorize(actor, "key.revoke")
            tenant_wide(actor, "the tenant's keys")
            if actor.scopes is not None and not any(k["key_id"] == key_id for k in self.keys.list(actor.tenant)):
                raise NotFound(f"key '{key_id}' not found", key_id=key_id)
            info = self.keys.revoke(key_id)
            self._done(ev.KeyRevoked(actor, decision=f"key {key_id} revoked"))
        return info

    def tenant_policy(self, actor: Actor, tenant: str) -> TenantPolicyInfo:
        self.authorize(actor, "index")
        return self.gallery.store.tenant_policy(tenant if actor.scopes is None else actor.tenant)

    def set_tenant_policy(self, actor: Actor, tenant: str, **changes) -> TenantPolicyInfo:
        """Set a tenant's guardrails (changes left out keep their value). Local operator only."""
        actor = dataclasses.replace(actor, tenant=tenant)
        with self._operation("tenant.policy", actor):
            if actor.scopes is not None:
                raise Forbidden("tenant guardrails are set by the operator of the deployment")
            unknown = set(changes) - {"identify_per_hour", "max_faces_per_search", "human_review"}
            if unknown:
                raise InvalidArgument(f"unknown guardrails: {', '.join(sorted(unknown))}")
            info = self.gallery.store.set_tenant_policy(tenant, **changes)
            self._done(ev.TenantPolicyChanged(actor, decision=json.dumps(info.to_dict())))
        return info

    # ------------------------------------------------------------------ audit and oversight
    def query_audit(self, actor: Actor, *, subject_id: str | None = None, key_id: str | None = None,
                    operation: str | None = None, since: str | None = None, until: str | None = None,
                    limit: int = 1000, offset: int = 0) -> list[dict]:
        """This tenant's audit records, by subject (a subject-access query), key, operation, time."""
        with self._operation("audit.query", actor, subject_ids=[subject_id] if subject_id else []):
            self.authorize(actor, "audit.query")
            tenant_wide(actor, "the tenant's audit log")
            rows = self.audit.query(tenant=actor.tenant, subject_id=subject_id, key_id=key_id, operation=operation,
                                    since=iso(instant(since, "since")), until=iso(instant(until, "until")),
                                    limit=limit, offset=offset)
            self._done(ev.AuditQueried(actor, subject_ids=(subject_id,) if subject_id else (),
                                       decision=f"{len(rows)} records"))
        return rows

    def audit_status(self, actor: Actor) -> dict:
        """The chain's last record and last seal (cheap; ``verify_audit`` checks it whole)."""
        self.authorize(actor, "audit.verify")
        return self.audit.status()

    def verify_audit(self, actor: Actor) -> Verification:
        """Check the whole hash chain and its seals; names the first bad record."""
        with self._operation("audit.verify", actor):
            self.authorize(actor, "audit.verify")
            result = self.audit.verify()
            self._done(ev.AuditVerified(actor, decision="intact" if result.ok else f"broken at {result.first_bad_seq}"))
        return result

    def export_audit(self, actor: Actor, fmt: str, *, tenant: str | None = None, subject_id: str | None = None,
                     since: str | None = None, until: str | None = None) -> Iterator[str]:
        """Audit records as jsonl or csv; a key's holder sees its own tenant only."""
        with self._operation("audit.export", actor, subject_ids=[subject_id] if subject_id else []):
            self.authorize(actor, "audit.export")
            tenant_wide(actor, "the tenant's audit log")
            if fmt not in ("jsonl", "csv"):
                raise InvalidArgument("the export format is jsonl or csv")
            tenant = tenant if actor.scopes is None else actor.tenant
            lines = list(self.audit.export(fmt, tenant=tenant, subject_id=subject_id,
                                           since=iso(instant(since, "since")), until=iso(instant(until, "until"))))
            self._done(ev.AuditExported(actor, subject_ids=(subject_id,) if subject_id else (),
                                        decision=f"{len(lines)} lines as {fmt}"))
        return iter(lines)

    def checkpoint_audit(self, actor: Actor) -> dict | None:
        self.authorize(actor, "audit.export")
        return self.audit.checkpoint()

    def read_report(self, actor: Actor) -> dict:
        """The accuracy and fairness report of the running model (from `faceledger report`)."""
        with self._operation("report.read", actor):
            self.authorize(actor, "report.read")
            path = self._report_dir() / "report.json"
            if not path.is_file():
                raise NotFound("no report for the running model yet: run `faceledger report`")
            data = json.loads(path.read_text())
            if data.get("model_id") != self.engine.model_id:
                raise NotFound("the stored report is for another model: run `faceledger report` again")
            self._done(ev.ReportRead(actor))
        return data

    def report_plots(self, actor: Actor) -> list[str]:
        """The file names of the report's plots (ROC and DET curves, per-group error bars, ...)."""
        self.authorize(actor, "report.read")
        folder = self._report_dir()
        return sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []

    def report_plot(self, actor: Actor, name: str) -> bytes:
        """One plot of the report, by its file name (as listed by ``report_plots``)."""
        if name not in self.report_plots(actor):
            raise NotFound(f"the report has no plot {name!r}")
        return (self._report_dir() / name).read_bytes()

    def _report_dir(self):
        return self.settings.home / "reports" / f"report-{self.engine.profile.name}"

    # ------------------------------------------------------------------ upkeep
    def rekey(self, actor: Actor, new_key: bytes | None) -> int:
        """Re-encrypt every template under ``new_key`` (None: in the clear). Local operator only."""
        with self._operation("templates.rekey", actor):
            if actor.scopes is not None:
                raise Forbidden("templates are re-encrypted by the operator of the deployment")
            count = self.gallery.rekey(new_key)
            self._done(ev.TemplatesRekeyed(actor, decision=f"re-encrypted {count} templates"))
        return count

    def check_index(self, actor: Actor, collection: str) -> dict:
        self.reach(actor, "index", collection)
        return self.gallery.check_index(collection, actor.tenant)

    def rebuild_index(self, actor: Actor, collection: str) -> dict:
        self.reach(actor, "index", collection)
        return self.gallery.rebuild_index(collection, actor.tenant)

    def run_retention(self, now: dt.datetime | None = None) -> list[dict]:
        """Erase every subject whose consent expired or whose retention lapsed at ``now``; one audited
        erasure (and receipt) each."""
        receipts = []
        for tenant, collection, subject_id, reason in self.gallery.retention_due(now or utcnow()):
            if not self.gallery.subject_exists(collection, subject_id, tenant=tenant):
                continue  # erased since the list was read (another process's schedule, an erasure request)
            actor = Actor.system(tenant, "retention schedule").with_reference(reason)
            with self._operation("erase", actor, collection, [subject_id]):
                receipt = self.gallery.delete_subject(collection, subject_id, tenant=tenant)
                seq = self._done(ev.SubjectErased(actor, collection, (subject_id,),
                                                  decision=f"erased {len(receipt.face_ids)} faces ({reason})",
                                                  face_ids=tuple(receipt.face_ids)))
            receipts.append({**dataclasses.replace(receipt, audit_seq=seq).to_dict(), "tenant": tenant,
                             "reason": reason})
        return receipts

    def refresh_metrics(self) -> None:
        self.metrics.set_gallery_sizes(self.gallery.store.collection_sizes())


def tenant_wide(actor: Actor, what: str) -> None:
    """Refuse a key bound to one collection what spans its whole tenant (the audit log, the keys)."""
    if actor.collection is not None:
        raise Forbidden(f"a key bound to collection '{actor.collection}' cannot reach {what}", key_id=actor.key_id)


def _yes_no(result: Comparison) -> str:
    return "match" if result.match else "no match"
