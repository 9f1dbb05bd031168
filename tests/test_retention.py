"""Retention and consent expiry, with a controllable clock: what is due is erased, and audited."""

from __future__ import annotations

import datetime as dt

from faceledger.gallery.records import Consent
from faceledger.service import Actor, Faceledger

ME = Actor.local()
T0 = dt.datetime.now(dt.timezone.utc)


def test_retention_and_consent_expiry(settings, engine, people, tmp_path):
    g = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    audit = g.audit
    g.create_collection(ME, "short", retention_days=30)
    g.create_collection(ME, "long")
    photo = lambda n, i=1: [people / "bbt" / n / f"{n}{i}.png"]  # noqa: E731
    g.enroll(ME, "short", "amy", photo("amy"), consent=Consent("explicit-consent"))
    g.enroll(ME, "long", "howard", photo("howard"), consent=Consent("explicit-consent", expires_at=T0 + dt.timedelta(days=10)))
    g.enroll(ME, "long", "penny", photo("penny"), consent=Consent("explicit-consent"))

    assert g.run_retention(T0 + dt.timedelta(days=5)) == []  # nothing due yet
    day11 = g.run_retention(T0 + dt.timedelta(days=11))
    assert [(r["subject_ids"], r["reason"]) for r in day11] == [(["howard"], "consent expired")]
    day31 = g.run_retention(T0 + dt.timedelta(days=31))
    assert [(r["subject_ids"], r["reason"]) for r in day31] == [(["amy"], "retention of 30 days lapsed")]
    assert g.run_retention(T0 + dt.timedelta(days=400)) == []  # penny: no expiry, no retention period

    assert [s.subject_id for s in g.list_subjects(ME, "long")] == ["penny"] and g.list_subjects(ME, "short") == []
    assert g.identify(ME, "long", people / "bbt" / "howard" / "howard3.png").faces[0].subject_id is None
    erasures = audit.query(operation="erase")
    assert [(r["subject_ids"], r["seq"]) for r in erasures] == [(["howard"], day11[0]["audit_seq"]),
                                                                (["amy"], day31[0]["audit_seq"])]
    assert all(r["purpose"] == "retention schedule" and r["outcome"] == "ok" for r in erasures)
    assert audit.verify().ok
    g.close()


def test_human_review_and_faces_per_search(settings, engine, people, tmp_path):
    g = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    g.create_collection(ME, "c")
    for name in ("amy", "howard", "penny", "sheldon"):
        g.enroll(ME, "c", name, [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)],
                 consent=Consent("explicit-consent"))
    assert g.identify(ME, "c", people / "bbt" / "penny" / "penny3.png").faces[0].decision == "match"
    policy = g.set_tenant_policy(ME, "default", identify_per_hour=100, human_review=True)
    assert policy.to_dict() == {"tenant": "default", "identify_per_hour": 100, "max_faces_per_search": None,
                                "human_review": True}
    review = g.identify(ME, "c", people / "bbt" / "penny" / "penny3.png").faces[0]
    assert review.decision == "review" and review.subject_id is None
    assert review.candidates[0].subject_id == "penny" and review.candidates[0].match is None
    assert len(g.identify(ME, "c", people / "bbt" / "bbt1.jpg").faces) >= 2
    g.set_tenant_policy(ME, "default", max_faces_per_search=1)
    assert len(g.identify(ME, "c", people / "bbt" / "bbt1.jpg").faces) == 1
    other = g.gallery.store.tenant_policy("acme")  # guardrails are per tenant
    assert other.max_faces_per_search is None and other.human_review is False
    g.close()


def test_hourly_identification_quota_per_key():
    import pytest

    from faceledger.errors import RateLimited
    from faceledger.service.guardrails import HourlyQuota

    quota = HourlyQuota()
    for _ in range(3):
        quota.take("key-a", 3)
    with pytest.raises(RateLimited) as info:
        quota.take("key-a", 3)
    assert info.value.details["quota"] == 3
    quota.take("key-b", 3)  # per key
