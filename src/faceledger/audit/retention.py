"""Retention: erase subjects whose consent expired or whose collection's retention lapsed; audit each."""

from __future__ import annotations

import datetime as dt

from faceledger.audit.context import Actor, audited
from faceledger.audit.log import AuditLog
from faceledger.gallery.service import Gallery

RETENTION_ACTOR = Actor(tenant=None, key_id=None, purpose="retention schedule", client="faceledger")


def run_retention(gallery: Gallery, audit: AuditLog, now: dt.datetime) -> list[dict]:
    """Erase everything due at ``now``; returns one receipt (with its audit record) per subject."""
    receipts = []
    for tenant, collection, subject_id, reason in gallery.retention_due(now):
        actor = Actor(tenant, None, RETENTION_ACTOR.purpose, None, RETENTION_ACTOR.client)
        with audited(audit, "erase", actor, collection=collection, reference=reason) as entry:
            entry.subject_ids = [subject_id]
            receipt = gallery.delete_subject(collection, subject_id, tenant=tenant)
            entry.decision = f"erased {len(receipt.face_ids)} faces ({reason})"
            receipts.append({**receipt.to_dict(), "tenant": tenant, "reason": reason, "audit_seq": entry.flush()})
    return receipts
