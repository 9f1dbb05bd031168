"""The audit log detects every kind of tampering and names the first bad record."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import text

from faceledger.audit.log import AuditLog
from faceledger.errors import NoFace
from faceledger.gallery.db import open_database
from faceledger.gallery.records import Consent
from faceledger.service import Actor, Faceledger

KEY = b"k" * 32


@pytest.fixture()
def log(database_url):
    engine, session = open_database(database_url)
    audit = AuditLog(session, KEY, checkpoint_every=100)
    for i in range(250):
        audit.append("identify", tenant="acme", key_id="abc123", collection="staff", subject_ids=[f"s{i % 7}"],
                     scores=[0.5 + i / 1000], decision="unknown", purpose="door", reference=f"case-{i}",
                     request_id=f"r{i}", client="127.0.0.1")
    audit.engine, audit.url = engine, database_url
    return audit


def sql(log, statement: str) -> None:
    with log.engine.begin() as conn:
        conn.execute(text(statement))


def test_untouched_log_verifies(log):
    result = log.verify()
    assert result.ok and result.records == 250 and result.checkpoints == 2


def test_edited_field_is_named(log):
    sql(log, "UPDATE audit_records SET decision = 'match:s3' WHERE seq = 57")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 57 and "altered" in result.reason


def test_deleted_record_is_named(log):
    sql(log, "DELETE FROM audit_records WHERE seq = 120")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 120 and "missing" in result.reason


def test_swapped_records_are_named(log):
    columns = "at, subject_ids, scores, reference, request_id, prev_hash, hash"
    sql(log, "CREATE TEMP TABLE a AS SELECT * FROM audit_records WHERE seq = 30")
    sql(log, "UPDATE audit_records SET (" + columns + ") = (SELECT " + columns +
        " FROM audit_records b WHERE b.seq = 31) WHERE seq = 30")
    sql(log, "UPDATE audit_records SET (" + columns + ") = (SELECT " + columns + " FROM a) WHERE seq = 31")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 30


def test_truncated_tail_after_a_seal_is_named(log):
    sql(log, "DELETE FROM audit_records WHERE seq >= 190")
    result = log.verify()  # the seal at 200 covers records that are gone
    assert not result.ok and result.first_bad_seq == 190 and "missing" in result.reason


def test_rewritten_chain_breaks_the_seal(log):
    """An attacker who edits record 10 and recomputes every hash after it still cannot forge the seal."""
    from faceledger.audit.log import FIELDS, record_hash
    from faceledger.gallery.schema import AuditRecord

    with log.session() as s:
        rows = s.query(AuditRecord).order_by(AuditRecord.seq).all()
        prev = "0" * 64
        for r in rows:
            if r.seq == 10:
                r.decision = "match:s1"
            r.prev_hash = prev
            r.hash = record_hash({k: getattr(r, k) for k in FIELDS})
            prev = r.hash
        s.commit()
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 100 and "seal" in result.reason


def test_wrong_key_cannot_vouch_for_the_seals(log):
    impostor = AuditLog(log.session, b"x" * 32)
    result = impostor.verify()
    assert not result.ok and "seal" in result.reason


def test_refusals_are_recorded_once(log, tmp_path, settings, engine):
    """An operation refused by the service (here: no face in the image) writes one audit record, with its code."""
    import cv2
    import numpy as np

    service = Faceledger(settings.model_copy(update={"home": tmp_path, "audit_key": KEY.decode(),
                                                     "database_url": log.url}), engine)
    service.create_collection(Actor.local("acme"), "staff")
    before = log.verify().records
    blank = cv2.imencode(".png", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
    actor = Actor("acme", "abc123", "door", frozenset({"enroll"}), request_id="req-1", client="10.0.0.9")
    with pytest.raises(NoFace):
        service.enroll(actor, "staff", "alice", [blank], consent=Consent("explicit-consent"))
    service.close()
    rows = log.query(subject_id="alice")
    assert len(rows) == 1 and rows[0]["outcome"] == "NO_FACE" and rows[0]["request_id"] == "req-1"
    assert log.verify().records == before + 1


def test_cli_audit_verify_and_export(log, tmp_path):
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path), "FACELEDGER_AUDIT_KEY": KEY.decode(),
           "FACELEDGER_DATABASE_URL": log.url}
    ok = subprocess.run([sys.executable, "-m", "faceledger.cli", "audit", "verify"], env=env, capture_output=True,
                        text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    export = subprocess.run([sys.executable, "-m", "faceledger.cli", "audit", "export", "--format", "jsonl",
                             "--subject", "s3"], env=env, capture_output=True, text=True)
    lines = [json.loads(x) for x in export.stdout.splitlines()]
    assert lines and all("s3" in x["subject_ids"] for x in lines)
    csv_out = subprocess.run([sys.executable, "-m", "faceledger.cli", "audit", "export", "--format", "csv"],
                             env=env, capture_output=True, text=True)
    assert csv_out.stdout.count("\n") == 1 + 250 + 2  # header, the log's records, the audited verify and export
    sql(log, "UPDATE audit_records SET purpose = 'something else' WHERE seq = 7")
    bad = subprocess.run([sys.executable, "-m", "faceledger.cli", "audit", "verify"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 1 and json.loads(bad.stdout)["first_bad_seq"] == 7


def test_a_long_decision_is_recorded_on_every_engine(database_url):
    """Decisions name policies, keys and tenants: any length is recorded (PostgreSQL enforces column lengths)."""
    engine, session = open_database(database_url)
    audit = AuditLog(session, KEY)
    decision = "target_fpir 0.111994 -> 0.111994, target_fmr 0.458913 -> 0.458913; " + "x" * 300
    seq = audit.append("collection.update", tenant="t" * 128, collection="c" * 128, decision=decision)
    assert audit.query()[-1]["decision"] == decision and audit.verify().ok and seq == 1
