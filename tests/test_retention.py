"""Retention and consent expiry, with a controllable clock: what is due is erased, and audited."""

from __future__ import annotations

import datetime as dt

from faceledger.audit.log import AuditLog
from faceledger.audit.retention import run_retention
from faceledger.gallery.records import Consent
from faceledger.gallery.service import Gallery

T0 = dt.datetime.now(dt.timezone.utc)


def test_retention_and_consent_expiry(settings, engine, people, tmp_path):
    g = Gallery(settings.model_copy(update={"home": tmp_path}), engine)
    audit = AuditLog(g.session, b"k" * 32)
    g.create_collection("short", retention_days=30)
    g.create_collection("long")
    photo = lambda n, i=1: [people / "bbt" / n / f"{n}{i}.png"]  # noqa: E731
    g.enroll("short", "amy", photo("amy"), consent=Consent("explicit-consent"))
    g.enroll("long", "howard", photo("howard"), consent=Consent("explicit-consent", expires_at=T0 + dt.timedelta(days=10)))
    g.enroll("long", "penny", photo("penny"), consent=Consent("explicit-consent"))

    assert run_retention(g, audit, T0 + dt.timedelta(days=5)) == []  # nothing due yet
    day11 = run_retention(g, audit, T0 + dt.timedelta(days=11))
    assert [(r["subject_ids"], r["reason"]) for r in day11] == [(["howard"], "consent expired")]
    day31 = run_retention(g, audit, T0 + dt.timedelta(days=31))
    assert [(r["subject_ids"], r["reason"]) for r in day31] == [(["amy"], "retention of 30 days lapsed")]
    assert run_retention(g, audit, T0 + dt.timedelta(days=400)) == []  # penny: no expiry, no retention period

    assert [s.subject_id for s in g.list_subjects("long")] == ["penny"] and g.list_subjects("short") == []
    assert g.identify("long", people / "bbt" / "howard" / "howard3.png").faces[0].subject_id is None
    erasures = audit.query(operation="erase")
    assert [(r["subject_ids"], r["seq"]) for r in erasures] == [(["howard"], day11[0]["audit_seq"]),
                                                                (["amy"], day31[0]["audit_seq"])]
    assert all(r["purpose"] == "retention schedule" and r["outcome"] == "ok" for r in erasures)
    assert audit.verify().ok
    g.close()


def test_human_review_and_faces_per_search(settings, engine, people, tmp_path):
    g = Gallery(settings.model_copy(update={"home": tmp_path}), engine)
    g.create_collection("c")
    for name in ("amy", "howard", "penny", "sheldon"):
        g.enroll("c", name, [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)],
                 consent=Consent("explicit-consent"))
    review = g.identify("c", people / "bbt" / "penny" / "penny3.png", human_review=True).faces[0]
    assert review.decision == "review" and review.subject_id is None
    assert review.candidates[0].subject_id == "penny" and review.candidates[0].match is None
    assert len(g.identify("c", people / "bbt" / "bbt1.jpg", max_faces=1).faces) == 1
    policy = g.set_tenant_policy("default", identify_per_hour=100, human_review=True)
    assert policy == {"tenant": "default", "identify_per_hour": 100, "max_faces_per_search": None,
                      "human_review": True}
    g.close()


def test_hourly_identification_quota_per_key():
    import pytest

    from faceledger.api.runtime import HourlyQuota, RateLimited

    quota = HourlyQuota()
    for _ in range(3):
        quota.take("key-a", 3)
    with pytest.raises(RateLimited) as info:
        quota.take("key-a", 3)
    assert info.value.details["quota"] == 3
    quota.take("key-b", 3)  # per key
