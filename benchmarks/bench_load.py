"""Load on the real service: 16 concurrent clients identify and verify for 60 s against 10,000 subjects.

The gallery holds the 1,680 LFW people with two or more photos (enrolled from their first
photo, real templates) plus synthetic subjects up to 10,000, bulk-loaded before the server
starts. Clients send real LFW photos of enrolled people: 70% identify, 30% verify against
the true identity. Prints requests/s, p50/p99 latency, errors by status, and the server's
memory (RSS sampled every second: start, peak, end).

    python benchmarks/bench_load.py [--clients 16] [--seconds 60] [--subjects 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.evaluation.calibrate import lfw_images
from faceledger.evaluation.identify import split_lfw
from faceledger.gallery.gallery import Gallery
from faceledger.pipeline.engine import Components, FaceEngine

console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of the server: the process and its children (the worker processes of ``--workers``)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total or float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the server has used: the process and its children, as ``rss_mb``."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def build_gallery(home: Path, data: Path, subjects: int) -> list[str]:
    """Fill HOME with a 'load' collection; returns the mated probe images (relative to lfw/)."""
    settings = Settings(home=home)
    engine = FaceEngine(settings)
    lfw = data / "lfw"
    images = lfw_images(lfw)
    gallery_imgs, mated, _ = split_lfw(images)
    emb = embed_files(lfw, gallery_imgs, engine.profile.components, Settings(), label="gallery templates")
    real = Components(emb.vectors).template(engine.profile.components)
    rng = np.random.default_rng(0)
    n_syn = max(0, subjects - len(real))
    syn = rng.multivariate_normal(real.mean(0), np.cov(real, rowvar=False), size=n_syn).astype(np.float32)
    syn /= np.linalg.norm(syn, axis=1, keepdims=True)
    g = Gallery(settings, engine)
    g.create_collection("load", require_consent=False)
    ids = [p.split("/")[0] for p in gallery_imgs] + [f"synthetic-{i}" for i in range(n_syn)]
    g.enroll_templates("load", ids, np.concatenate([real, syn]), [f"{i:064x}" for i in range(len(ids))])
    g.close()
    return mated


_engine: FaceEngine | None = None


def _init_engine() -> None:
    global _engine
    _engine = FaceEngine(Settings(threads=1))
    _engine.load()


def _analyze(images: list[bytes]) -> int:
    return sum(len(_engine.analyze(raw)) for raw in images)


def engine_rate(images: list[bytes], workers: int, rounds: int = 3) -> float:
    """The engine's own images/s on the probes (decode, detect, align, embed; no HTTP, search or audit), with one
    process per core as ``bench_engine.py`` runs it: what the service is compared with."""
    work = images * rounds
    chunks = [work[i::workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(workers, initializer=_init_engine) as pool:
        list(pool.map(_analyze, [images[:5]] * workers))  # warm up every worker
        start = time.perf_counter()
        sum(pool.map(_analyze, chunks))
        return len(work) / (time.perf_counter() - start)


async def client_loop(http: httpx.AsyncClient, probes: list[tuple[str, bytes]], until: float, out: list, rng):
    while time.monotonic() < until:
        person, image = rng.choice(probes)
        if rng.random() < 0.7:
            url = "/v1/collections/load/identify"
        else:
            url = f"/v1/collections/load/subjects/{person}/verify"
        start = time.perf_counter()
        try:
            r = await http.post(url, files={"image": image})
            status = r.status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        out.append((url.rsplit("/", 1)[-1], status, (time.perf_counter() - start) * 1000))


async def drive(url: str, key: str, probes, clients: int, seconds: float, pid: int):
    rng = random.Random(0)
    results: list = []
    memory: list[float] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30,
                                 limits=limits) as http:
        until = time.monotonic() + seconds

        async def sample():
            while time.monotonic() < until:
                memory.append(rss_mb(pid))
                await asyncio.sleep(1)

        start, server_cpu, client_cpu = time.perf_counter(), cpu_s(pid), time.process_time()
        await asyncio.gather(sample(), *(client_loop(http, probes, until, results, rng) for _ in range(clients)))
        elapsed = time.perf_counter() - start
        cpu = {"server": cpu_s(pid) - server_cpu, "clients": time.process_time() - client_cpu}
    return results, memory, elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--data", type=Path, default=Settings().data_dir)
    parser.add_argument("--work", type=Path, default=Path(".faceledger/bench-load"))
    parser.add_argument("--out", type=Path, default=Path(".faceledger/reports/bench-load.json"))
    parser.add_argument("--server-workers", type=int, default=1,
                        help="Worker processes of the server (`faceledger serve --workers N`).")
    parser.add_argument("--no-audit", action="store_true",
                        help="Run the server with the audit log off, only to measure what the log costs.")
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    mated = build_gallery(args.work, args.data, args.subjects)
    # a door camera sends one face: keep photos where the detector finds exactly one (LFW has many crowd shots)
    engine = FaceEngine(Settings())
    probes = []
    for p in random.Random(1).sample(mated, 800):
        raw = (args.data / "lfw" / p).read_bytes()
        if len(engine.detect(engine.decode(raw))) == 1:
            probes.append((p.split("/")[0], raw))
    probes = probes[:500]
    raw_rate = engine_rate([raw for _, raw in probes], len(os.sched_getaffinity(0)))
    port = free_port()
    env = {**os.environ, "FACELEDGER_HOME": str(args.work), "FACELEDGER_PORT": str(port),
           "FACELEDGER_IDENTIFY_PER_MINUTE": "1000000", "FACELEDGER_AUDIT_ENABLED": str(not args.no_audit).lower()}
    key = json.loads(subprocess.run([sys.executable, "-m", "faceledger.cli", "keys", "create", "--tenant", "default",
                                     "--scopes", "identify,verify", "--purpose", "load benchmark"], env=env,
                                    capture_output=True, text=True, check=True).stdout)["api_key"]
    log = open(args.work / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "faceledger.cli", "serve", "--workers", str(args.server_workers)],
                              env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/v1/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        asyncio.run(drive(url, key, probes, args.clients, 5, server.pid))  # warm-up, not counted
        results, memory, elapsed, cpu = asyncio.run(drive(url, key, probes, args.clients, args.seconds, server.pid))
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    report(results, memory, elapsed, cpu, args, raw_rate)


def report(results, memory, elapsed, cpu, args, raw_rate: float) -> None:
    ok = [r for r in results if r[1] == 200]
    errors = Counter(str(r[1]) for r in results if r[1] != 200)
    lat = np.array([r[2] for r in ok]) if ok else np.array([float("nan")])
    summary = {
        "audit": not args.no_audit, "server_workers": args.server_workers, "clients": args.clients, "seconds": round(elapsed, 1), "subjects": args.subjects, "requests": len(results),
        "requests_per_s": len(results) / elapsed, "engine_images_per_s": raw_rate,
        "service_vs_engine": len(results) / elapsed / raw_rate, "errors": dict(errors),
        # CPU per request: the server's (all its processes) and the load generator's, on the same cores; the
        # engine alone needs about cores / engine_images_per_s
        "cpu_ms_per_request": {k: 1000 * v / max(len(results), 1) for k, v in cpu.items()},
        "engine_cpu_ms_per_image": 1000 * len(os.sched_getaffinity(0)) / raw_rate,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))},
        "by_operation": {op: {"requests": sum(1 for r in ok if r[0] == op),
                              "p50_ms": float(np.percentile([r[2] for r in ok if r[0] == op] or [np.nan], 50)),
                              "p99_ms": float(np.percentile([r[2] for r in ok if r[0] == op] or [np.nan], 99))}
                         for op in ("identify", "verify")},
        "server_rss_mb": {"start": memory[0] if memory else None, "peak": max(memory) if memory else None,
                          "end": memory[-1] if memory else None},
    }
    t = Table(title=f"{args.clients} clients for {elapsed:.0f} s against {args.subjects:,} subjects, "
                    f"audit log {'off' if args.no_audit else 'on'}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("requests/s", f"{summary['requests_per_s']:.1f}")
    t.add_row("engine alone on the same probes", f"{raw_rate:.1f} images/s (service: "
              f"{100 * summary['service_vs_engine']:.0f}%)")
    c = summary["cpu_ms_per_request"]
    t.add_row("CPU per request: server / load generator", f"{c['server']:.1f} / {c['clients']:.1f} ms "
              f"(engine alone: {summary['engine_cpu_ms_per_image']:.1f} ms an image)")
    t.add_row("latency p50 / p99", f"{summary['latency_ms']['p50']:.0f} / {summary['latency_ms']['p99']:.0f} ms")
    for op, row in summary["by_operation"].items():
        t.add_row(f"  {op}", f"{row['requests']} ok, p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms")
    t.add_row("errors", json.dumps(summary["errors"]) if errors else "0")
    m = summary["server_rss_mb"]
    t.add_row("server RSS start / peak / end", f"{m['start']:.0f} / {m['peak']:.0f} / {m['end']:.0f} MB")
    console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
