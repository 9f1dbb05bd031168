"""The same operations through the CLI and through the HTTP API leave the same audit records.

Both front ends only map their inputs to the operations layer, so apart from who asked
(tenant, key, purpose, client, request id) and when, the records must be identical:
operation, collection, subjects, scores, decision, outcome, reference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from faceledger.api.app import create_app
from faceledger.service import Actor, Faceledger
from inprocess import http_client, in_process

ACTOR_FIELDS = {"seq", "at", "tenant", "key_id", "purpose", "client", "request_id", "prev_hash", "hash"}
CONSENT = "explicit-consent"


def cli(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACELEDGER_HOME": str(home), "FACELEDGER_TENANT": "local"}
    return subprocess.run([sys.executable, "-m", "faceledger.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def comparable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ACTOR_FIELDS} for r in records]


def test_cli_and_api_write_identical_audit_records(settings, engine, people, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    amy1, amy3 = people / "bbt" / "amy" / "amy1.png", people / "bbt" / "amy" / "amy3.png"
    blank = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(blank)
    local = settings.model_copy(update={"home": home})
    fl = Faceledger(local, engine)
    key, _ = fl.create_key(Actor.local(), "acme", ["admin"], "parity test")
    fl.create_collection(Actor.local("local"), "staff")
    fl.close()

    # the command line, tenant "local"
    steps = [("enroll", "staff", "amy", str(amy1), "--consent", CONSENT, "--reference", "case-7"),
             ("enroll", "staff", "ghost", str(blank), "--consent", CONSENT, "--reference", "case-7"),
             ("identify", "staff", str(amy3), "--reference", "case-7"),
             ("subjects", "delete", "staff", "amy")]
    for step in steps:
        out = cli(home, *step)
        assert out.returncode == (2 if "ghost" in step else 0), out.stderr[-2000:]

    # the HTTP API, tenant "acme", on the same database
    app = create_app(local)
    auth = {"Authorization": f"Bearer {key}"}
    with in_process(app) as portal, http_client(app, portal) as http:
        assert http.post("/v1/collections", json={"name": "staff"}, headers=auth).status_code == 201
        first = len(fl.audit.query())
        r = http.post("/v1/collections/staff/subjects/amy/faces", headers=auth,
                      files={"images": amy1.read_bytes()},
                      data={"consent_basis": CONSENT, "reference": "case-7"})
        assert r.status_code == 201, r.text
        r = http.post("/v1/collections/staff/subjects/ghost/faces", headers=auth,
                      files={"images": blank.read_bytes()}, data={"consent_basis": CONSENT, "reference": "case-7"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "NO_FACE"
        r = http.post("/v1/collections/staff/identify", headers=auth, files={"image": amy3.read_bytes()},
                      data={"reference": "case-7"})
        assert r.status_code == 200 and r.json()["faces"][0]["subject_id"] == "amy"
        r = http.delete("/v1/collections/staff/subjects/amy", headers=auth)
        assert r.status_code == 200

    records = Faceledger(local, engine).audit.query()
    by_cli = [r for r in records if r["tenant"] == "local" and r["operation"] != "collection.create"]
    by_api = [r for r in records[first:] if r["tenant"] == "acme"]
    assert [r["operation"] for r in by_cli] == ["enroll", "enroll", "identify", "erase"]
    assert [r["outcome"] for r in by_cli] == ["ok", "NO_FACE", "ok", "ok"]
    assert comparable(by_cli) == comparable(by_api), json.dumps([comparable(by_cli), comparable(by_api)], indent=1)
    assert by_cli[2]["decision"] == "match:amy" and by_cli[2]["scores"]
    assert all(r["client"] == "cli" and r["key_id"] is None for r in by_cli)
    assert all(r["key_id"] and r["purpose"] == "parity test" for r in by_api)


@pytest.mark.parametrize("front_end", ["cli", "service"])
def test_a_refused_operation_is_recorded_once(front_end, settings, engine, people, tmp_path):
    """One refusal, one record, whichever front end asked (no second record from the front end)."""
    home = tmp_path / front_end
    local = settings.model_copy(update={"home": home})
    if front_end == "cli":
        out = cli(home, "identify", "missing", str(people / "bbt" / "amy" / "amy3.png"))
        assert out.returncode == 2 and json.loads(out.stdout)["error"]["code"] == "NOT_FOUND"
    else:
        with pytest.raises(Exception):
            Faceledger(local, engine).identify(Actor.local("local"), "missing", people / "bbt" / "amy" / "amy3.png")
    records = Faceledger(local, engine).audit.query()
    assert [(r["operation"], r["outcome"], r["collection"]) for r in records] == [("identify", "NOT_FOUND", "missing")]
