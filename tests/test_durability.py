"""Kill -9 in the middle of a bulk enrolment: nothing acknowledged is lost, nothing is half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from sqlalchemy import text

from faceledger.gallery.gallery import Gallery


def people_dir(lfw: Path, dest: Path, n_people: int, per_person: int) -> Path:
    """A folder per LFW person (links to their photos), for people with enough photos."""
    dest.mkdir()
    chosen = [p for p in sorted(lfw.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= per_person]
    for person in chosen[:n_people]:
        (dest / person.name).mkdir()
        for photo in sorted(person.glob("*.jpg"))[:per_person]:
            (dest / person.name / photo.name).symlink_to(photo)
    return dest


def cli(home: Path, backend: dict, *args: str) -> dict:
    """subprocess arguments for ``faceledger ARGS`` with its state under ``home``, on ``backend``."""
    return {"args": [sys.executable, "-m", "faceledger.cli", *args],
            "env": {**os.environ, "FACELEDGER_HOME": str(home), "FACELEDGER_DATABASE_URL": backend["database_url"],
                    "FACELEDGER_VECTOR_STORE": backend["vector_store"]}}


def test_sigkill_during_enroll_dir(data_dir, tmp_path, settings, engine, backend):
    """On each backend: SQLite + FAISS, PostgreSQL + FAISS (a copy under HOME that goes stale), PostgreSQL +
    pgvector (vectors written with their faces)."""
    home = tmp_path / "home"
    first = people_dir(data_dir / "lfw", tmp_path / "first", 4, 2)
    folder = people_dir(data_dir / "lfw", tmp_path / "all", 60, 3)
    subprocess.run(**cli(home, backend, "collections", "create", "bulk"), check=True, capture_output=True)
    # a first run that completes, so a persisted index exists and goes stale with the next run
    done = subprocess.run(**cli(home, backend, "enroll-dir", "bulk", str(first), "--consent", "explicit-consent"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (home / "index").is_dir() == (backend["vector_store"] == "faiss")

    proc = subprocess.Popen(**cli(home, backend, "enroll-dir", "bulk", str(folder), "--consent", "explicit-consent"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    acknowledged = []
    for line in proc.stdout:
        record = json.loads(line)
        if record.get("created"):
            acknowledged.append(record)
        if len(acknowledged) >= 25:
            proc.send_signal(signal.SIGKILL)  # mid-run: more enrolments were on their way
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL and len(acknowledged) >= 25

    g = Gallery(settings.model_copy(update={"home": home, **backend}), engine)
    report = g.startup()["default/bulk"]
    if backend["vector_store"] == "faiss":
        assert report["source"] == "loaded" and report["added"] >= 25  # the stale index was brought in step
    else:  # pgvector: written in the faces' own transactions; Milvus: the outbox replay brought in the rest
        assert report["removed"] == 0
    if backend["vector_store"].startswith("milvus"):  # the outbox (the change feed) is drained
        assert g.store.get_meta_int("milvus_applied_seq") == g.store.feed_head()
    with g.store.db.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT f.id, s.external_id FROM faces f JOIN subjects s ON s.id = f.subject_id")).fetchall())
        faceless = conn.execute(text(
            "SELECT COUNT(*) FROM subjects s WHERE NOT EXISTS (SELECT 1 FROM faces f WHERE f.subject_id = s.id)"
        )).scalar()
    for record in acknowledged:  # every acknowledged enrolment is there, for the right subject
        assert rows.get(record["face_id"]) == record["subject_id"]
    assert faceless == 0  # no half-written subject
    held = np.array(list(rows), np.int64)  # the vector store holds exactly the faces SQL holds
    assert g.vectors.count(1) == len(held) and g.vectors.contains(1, held).all()
    g.close()

    resumed = subprocess.run(**cli(home, backend, "enroll-dir", "bulk", str(folder), "--consent", "explicit-consent"),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])["summary"]
    assert summary["already_enrolled"] >= len(acknowledged)
    assert summary["enrolled"] + summary["already_enrolled"] + summary["refused"] == 180
