"""Regression tests for the defects of the adversarial pass that live below the HTTP layer:
dates, audit atomicity and keys, the command line's audit identity, erasure purge, ids."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from faceledger.errors import ConfigurationError, InvalidArgument
from faceledger.gallery.records import Consent
from faceledger.service import Actor, Faceledger

ME = Actor.local()
UTC = dt.timezone.utc


@pytest.fixture()
def fl(settings, engine, tmp_path):
    service = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    service.create_collection(ME, "door")
    yield service
    service.close()


def photo(people, name: str, i: int = 1):
    return [people / "bbt" / name / f"{name}{i}.png"]


def counts(fl: Faceledger) -> tuple[int, int]:
    c = fl.get_collection(ME, "door")
    return c.subjects, c.faces


# ---------------------------------------------------------------- 2. extreme dates
@pytest.mark.parametrize("field,value", [
    ("expires_at", "9999-12-31T23:00:00-05:00"),
    ("given_at", "9999-06-01T00:00:00+00:00"),
    ("expires_at", "0001-01-01T00:30:00+01:00"),
])
def test_extreme_consent_dates_are_refused_before_anything_is_written(fl, people, field, value):
    consent = Consent("explicit-consent", **{field: dt.datetime.fromisoformat(value)})
    with pytest.raises(InvalidArgument):
        fl.enroll(ME, "door", "amy", photo(people, "amy"), consent=consent)
    assert counts(fl) == (0, 0)
    record = fl.audit.query(operation="enroll")[-1]
    assert record["outcome"] == "INVALID_ARGUMENT"  # never INTERNAL after a commit


@pytest.mark.parametrize("since", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:59:59-05:00", "0.5", "yesterday"])
def test_audit_time_filters_are_checked(fl, since):
    admin = Actor("default", "k1", "oversight", frozenset({"admin"}))
    with pytest.raises(InvalidArgument):
        fl.query_audit(admin, since=since)


# ---------------------------------------------------------------- 3. offsets kept (UTC stored)
def test_consent_expiry_offsets_are_honoured_both_ways(fl, people):
    now = dt.datetime.now(UTC)
    minus10 = dt.timezone(dt.timedelta(hours=-10))
    plus10 = dt.timezone(dt.timedelta(hours=10))
    valid_two_hours = (now + dt.timedelta(hours=2)).astimezone(minus10)  # wall clock 10 hours "earlier"
    fl.enroll(ME, "door", "amy", photo(people, "amy"), consent=Consent("explicit-consent", expires_at=valid_two_hours))
    stored = fl.get_subject(ME, "door", "amy").consent["expires_at"]
    assert dt.datetime.fromisoformat(stored) == valid_two_hours.replace(microsecond=0)
    assert fl.run_retention(now) == []  # still valid for two hours
    expired_hour_ago = (now - dt.timedelta(hours=1)).astimezone(plus10)  # wall clock 9 hours "later"
    with pytest.raises(Exception) as refused:
        fl.enroll(ME, "door", "penny", photo(people, "penny"),
                  consent=Consent("explicit-consent", expires_at=expired_hour_ago))
    assert refused.value.code == "CONSENT_REQUIRED"
    erased = fl.run_retention(now + dt.timedelta(hours=3))
    assert [r["subject_ids"] for r in erased] == [["amy"]]


# ---------------------------------------------------------------- 4. audit in the same transaction
def test_a_change_committed_without_its_record_is_recorded_at_start_up(settings, engine, people, tmp_path,
                                                                       monkeypatch):
    local = settings.model_copy(update={"home": tmp_path})
    fl = Faceledger(local, engine)
    fl.create_collection(ME, "door", require_consent=False)
    real_append = type(fl.audit).append

    def disk_full(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(type(fl.audit), "append", disk_full)
    with pytest.raises(sqlite3.OperationalError):
        fl.enroll(ME, "door", "amy", photo(people, "amy"))
    monkeypatch.setattr(type(fl.audit), "append", real_append)
    assert fl.get_collection(ME, "door").faces == 1  # the enrolment committed, its record did not
    fl.close()

    again = Faceledger(local, engine)
    again.startup()
    enrols = again.audit.query(operation="enroll")
    assert len(enrols) == 1 and enrols[0]["subject_ids"] == ["amy"]
    assert "recorded after an interruption" in enrols[0]["decision"]
    assert again.audit.verify().ok
    again.startup()  # replayed once, never twice
    assert len(again.audit.query(operation="enroll")) == 1
    again.close()


def test_every_record_of_a_normal_operation_leaves_no_outbox_intent(fl, people):
    fl.enroll(ME, "door", "amy", photo(people, "amy"), consent=Consent("explicit-consent"))
    fl.erase_subject(ME, "door", "amy")
    assert fl.audit.pending_intents() == []
    assert [r["operation"] for r in fl.audit.query()][-2:] == ["enroll", "erase"]


def test_the_chain_is_sealed_on_a_timer(settings, engine, tmp_path):
    local = settings.model_copy(update={"home": tmp_path, "audit_seal_interval": 30.0})
    fl = Faceledger(local, engine)
    fl.create_collection(ME, "c")
    assert fl.maintain()["sealed"] is None  # the record is fresh
    fl.audit.clock = lambda: dt.datetime.now(UTC) + dt.timedelta(seconds=31)
    sealed = fl.maintain()["sealed"]
    assert sealed is not None and sealed["seq"] == fl.audit.verify().records
    fl.close()


# ---------------------------------------------------------------- 5. audit key
def test_a_sealed_log_refuses_a_missing_or_wrong_key(settings, engine, tmp_path):
    local = settings.model_copy(update={"home": tmp_path})
    fl = Faceledger(local, engine)
    fl.create_collection(ME, "c")
    fl.close()  # seals what it wrote
    key_file = tmp_path / "audit-hmac.key"
    key = key_file.read_text()
    key_file.unlink()
    with pytest.raises(ConfigurationError, match="missing"):
        Faceledger(local, engine)
    assert not key_file.exists()  # not silently replaced
    key_file.write_text("0" * 64)
    with pytest.raises(ConfigurationError, match="does not match"):
        Faceledger(local, engine)
    key_file.write_text(key)
    assert Faceledger(local, engine).audit.verify().ok


# ---------------------------------------------------------------- 10. the command line's audit identity
def test_command_line_records_belong_to_the_tenant_they_act_for(settings, engine, tmp_path):
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "faceledger.cli", *a], env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    assert run("keys", "create", "--tenant", "acme", "--scopes", "admin", "--purpose", "p").returncode == 0
    assert run("collections", "create", "staff", "--tenant", "acme").returncode == 0
    assert run("index", "check", "staff", "--tenant", "acme").returncode == 0
    assert run("audit", "verify").returncode == 0
    fl = Faceledger(settings.model_copy(update={"home": tmp_path}), engine)
    default_admin = Actor("default", "k0", "oversight", frozenset({"admin"}))
    acme_admin = Actor("acme", "k1", "oversight", frozenset({"admin"}))
    assert [r["operation"] for r in fl.query_audit(default_admin)] == []
    acme = [r["operation"] for r in fl.query_audit(acme_admin)]
    assert acme[:2] == ["key.create", "collection.create"]
    everything = fl.audit.query()
    verify = [r for r in everything if r["operation"] == "audit.verify"][0]
    assert verify["tenant"] is None and verify["client"] == "cli"
    fl.close()


# ---------------------------------------------------------------- 11. erasure purge checked
def test_erasure_reports_a_pending_wal_purge_and_start_up_completes_it(settings, engine, people, tmp_path):
    local = settings.model_copy(update={"home": tmp_path})
    fl = Faceledger(local, engine)
    fl.create_collection(ME, "door", require_consent=False)
    fl.enroll(ME, "door", "amy", photo(people, "amy"))
    reader = sqlite3.connect(tmp_path / "faceledger.db")
    reader.execute("BEGIN")
    reader.execute("SELECT COUNT(*) FROM faces").fetchone()  # holds a read snapshot of the WAL
    receipt = fl.erase_subject(ME, "door", "amy")
    assert receipt.pending and "write-ahead log" in receipt.pending[0]
    reader.rollback()
    reader.close()
    fl.close()
    again = Faceledger(local, engine)
    again.gallery.startup()
    wal = tmp_path / "faceledger.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    again.close()


# ---------------------------------------------------------------- 12. ids usable in a URL
@pytest.mark.parametrize("subject_id", ["a/b", "x?y", "50%", "tab\tin", ".."])
def test_subject_ids_that_no_url_could_reach_are_refused(fl, people, subject_id):
    with pytest.raises(InvalidArgument):
        fl.create_subject(ME, "door", subject_id, consent=Consent("explicit-consent"))
    assert counts(fl) == (0, 0)


# ---------------------------------------------------------------- 13. face ids never reused
def test_face_ids_are_never_reused(fl, people):
    first = fl.enroll(ME, "door", "amy", photo(people, "amy"), consent=Consent("explicit-consent")).faces[0].face_id
    fl.erase_subject(ME, "door", "amy")
    second = fl.enroll(ME, "door", "penny", photo(people, "penny"),
                       consent=Consent("explicit-consent")).faces[0].face_id
    assert second > first


# ---------------------------------------------------------------- 18. the database is private
def test_database_file_is_readable_by_its_owner_only(fl, tmp_path):
    assert stat.S_IMODE((tmp_path / "faceledger.db").stat().st_mode) == 0o600
    assert json.dumps(fl.gallery.startup())  # the repair report is keyed by tenant/collection
    assert "default/door" in fl.gallery.startup()
