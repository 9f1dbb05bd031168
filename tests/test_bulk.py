"""Bulk enrolment on several threads: every job once, results in the jobs' order, a fatal error stops the run."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from faceledger.errors import EnrollmentRefused, NotFound
from faceledger.service.bulk import enroll_each

JOBS = [(f"s{i // 3}", Path(f"s{i // 3}/{i % 3}.jpg")) for i in range(30)]  # 10 subjects, 3 images each


def test_every_job_once_in_order_on_several_threads_one_subject_per_thread():
    threads, lock, by_subject = {}, threading.Lock(), {}

    def enroll(subject, path):
        time.sleep(0.01)  # long enough for the threads to overlap
        with lock:
            threads.setdefault(threading.get_ident(), 0)
            threads[threading.get_ident()] += 1
            by_subject.setdefault(subject, set()).add(threading.get_ident())
        if path.name == "1.jpg" and subject == "s4":
            raise EnrollmentRefused("no face passes the quality limits", reasons=["LOW_SHARPNESS"])
        return f"{subject}:{path.name}"

    out = list(enroll_each(enroll, JOBS, workers=3))
    assert [(s, p) for s, p, _ in out] == JOBS  # the jobs' order, every one once
    refused = [(s, p.name) for s, p, r in out if isinstance(r, EnrollmentRefused)]
    assert refused == [("s4", "1.jpg")]  # a refusal is reported and the run goes on (s4's 2.jpg too)
    assert all(r == f"{s}:{p.name}" for s, p, r in out if not isinstance(r, EnrollmentRefused))
    assert len(threads) == 3  # the work was spread
    assert all(len(t) == 1 for t in by_subject.values())  # a subject's images on one thread: never created twice


def test_a_fatal_error_stops_new_work_finishes_what_started_then_raises():
    started = []

    def enroll(subject, path):
        started.append(subject)
        if subject == "s2":
            raise NotFound("collection 'x' not found")
        time.sleep(0.02)
        return "ok"

    seen = []
    with pytest.raises(NotFound):
        for subject, path, result in enroll_each(enroll, JOBS, workers=2, stop_on={"NOT_FOUND"}):
            seen.append((subject, path.name, result if isinstance(result, str) else result.code))
    assert ("s2", "0.jpg", "NOT_FOUND") in seen and ("s2", "1.jpg") not in [(s, p) for s, p, _ in seen]
    assert seen[:6] == [(f"s{i // 3}", f"{i % 3}.jpg", "ok") for i in range(6)]  # everything before it, in order
    assert "s9" not in started and len(set(started)) <= 2 * 2 + 2  # queued work did not start


def test_enroll_dir_on_two_threads_enrols_everything_once_and_resumes(data_dir, tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    lfw = data_dir / "lfw"
    folder = tmp_path / "people"
    people = [p for p in sorted(lfw.iterdir()) if len(list(p.glob("*.jpg"))) >= 2][:8]
    for person in people:
        (folder / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:2]:
            (folder / person.name / photo.name).symlink_to(photo)
    Image.new("RGB", (200, 200), (120, 120, 120)).save(folder / people[3].name / "blank.jpg")
    env = {**os.environ, "FACELEDGER_HOME": str(tmp_path / "home")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "faceledger.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300)

    assert cli("collections", "create", "bulk").returncode == 0
    first = cli("enroll-dir", "bulk", str(folder), "--workers", "2", "--consent", "explicit-consent")
    assert first.returncode == 0, first.stderr[-2000:]
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    summary = lines[-1]["summary"]
    assert summary["refusals_by_reason"]["NO_FACE"] == 1, first.stdout[-1500:]  # the blank one
    assert summary["enrolled"] + summary["refused"] == 17 and summary["already_enrolled"] == 0
    enrolled = lines[:-1]
    assert summary["enrolled"] == len(enrolled) >= 15  # LFW photos where one face passes the limits
    assert [(r["subject_id"], Path(r["image"]).name) for r in enrolled] == sorted(
        (r["subject_id"], Path(r["image"]).name) for r in enrolled)  # printed in the folder's order
    assert len({r["face_id"] for r in enrolled}) == len(enrolled)
    listed = json.loads(cli("subjects", "list", "bulk").stdout)
    assert {s["subject_id"] for s in listed} == {r["subject_id"] for r in enrolled}
    again = cli("enroll-dir", "bulk", str(folder), "--workers", "2", "--consent", "explicit-consent")
    assert json.loads(again.stdout.splitlines()[-1])["summary"]["already_enrolled"] == len(enrolled)
