"""kill -9 of the real server during mixed writes: after a restart every acknowledged change is there,
each with exactly one audit record, nothing committed is left without one, and the chain verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

from faceledger.config import Settings
from faceledger.service import Actor, Faceledger
from realserver import free_port

pytestmark = pytest.mark.slow


def start(home, port: int) -> subprocess.Popen:
    env = {**os.environ, "FACELEDGER_HOME": str(home), "FACELEDGER_PORT": str(port)}
    log = open(home / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "faceledger.cli", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail("server did not start")


def test_sigkill_during_mixed_writes(data_dir, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    settings = Settings(home=home)
    fl = Faceledger(settings)
    key, _ = fl.create_key(Actor.local("acme"), "acme", ["admin"], "fault test")
    fl.create_collection(Actor.local("acme"), "door", require_consent=False)
    fl.close()
    photos = sorted((data_dir / "lfw").glob("*/*_0001.jpg"))[:400]
    port = free_port()
    proc = start(home, port)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {key}"}
    enrolled: list[str] = []  # acknowledged enrolments (one subject each)
    erased: list[str] = []  # acknowledged erasures
    lock = threading.Lock()
    stop = threading.Event()

    def enrol(worker: int) -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
            for i, path in enumerate(photos[worker::2]):
                if stop.is_set():
                    return
                sid = f"w{worker}-{i}"
                try:
                    r = http.post(f"/v1/collections/door/subjects/{sid}/faces", files={"images": path.read_bytes()})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    with lock:
                        enrolled.append(sid)

    def erase() -> None:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
            while not stop.is_set():
                with lock:
                    victim = next((s for s in enrolled if s not in erased and s.endswith("0")), None)
                if victim is None:
                    time.sleep(0.05)
                    continue
                try:
                    r = http.delete(f"/v1/collections/door/subjects/{victim}")
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        erased.append(victim)

    threads = [threading.Thread(target=enrol, args=(w,)) for w in (0, 1)] + [threading.Thread(target=erase)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while len(enrolled) < 30 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # requests are in flight
    proc.wait(30)
    stop.set()
    for t in threads:
        t.join(60)
    assert len(enrolled) >= 30 and erased, (len(enrolled), len(erased))

    restarted = start(home, port)  # start-up records what the kill left without a record
    restarted.terminate()
    restarted.wait(60)
    fl = Faceledger(settings)
    acme = Actor.local("acme")
    present = {s.subject_id for s in fl.list_subjects(acme, "door", limit=1000)}
    records = fl.audit.query(tenant="acme")
    ok_enrols = Counter(r["subject_ids"][0] for r in records if r["operation"] == "enroll" and r["outcome"] == "ok")
    ok_erasures = Counter(r["subject_ids"][0] for r in records if r["operation"] == "erase" and r["outcome"] == "ok")
    for sid in enrolled:
        assert sid in present or sid in erased, f"acknowledged enrolment of {sid} lost"
        assert ok_enrols[sid] == 1, f"{sid}: {ok_enrols[sid]} enrolment records"
    for sid in erased:
        assert sid not in present and ok_erasures[sid] == 1
    for sid in present:  # an enrolment that committed as the server died (never acknowledged) has its record too
        assert ok_enrols[sid] == 1
    assert fl.audit.pending_intents() == []
    assert fl.audit.verify().ok
    print(f"acknowledged: {len(enrolled)} enrolments, {len(erased)} erasures; present after restart {len(present)}; "
          f"recovered at start-up {sum('interruption' in (r['decision'] or '') for r in records)}")
    fl.close()
