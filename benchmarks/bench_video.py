"""Video: sampled frames processed per second and event latency, 640x480 and 1080p, on this machine's cores.

A clip is generated with faces from the data folder crossing the picture (tests/videos.py: two enrolled
people, from other photos, and two strangers), at 640x480 and at 1920x1080 (the same scene scaled).
The watcher reads it at 10 sampled frames/s, as a camera stream would be sampled, but as fast as it
can (a file is not paced): frames/s processed is sampled frames over wall time, decoding included
(target: >= 20 at 640x480, twice the sampling rate). Event latency is the time from a sampled frame
being decoded to the events it caused being written (detection, embedding, tracking, the audited
search, SQL), p50 and p99 over the frames that caused events.

    python benchmarks/bench_video.py [--seconds 20] [--fps 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from videos import Walker, render  # noqa: E402

from faceledger.config import Settings  # noqa: E402
from faceledger.service import Actor, Faceledger  # noqa: E402
from faceledger.service.streams import StreamService  # noqa: E402

console = Console(width=140)


def walkers(lfw: Path, scale: float, seconds: float) -> list[Walker]:
    people = [("Colin_Powell", "Colin_Powell_0001.jpg"), ("Tony_Blair", "Tony_Blair_0001.jpg"),
              ("Hugo_Chavez", "Hugo_Chavez_0001.jpg"), ("Gerhard_Schroeder", "Gerhard_Schroeder_0001.jpg")]
    out = []
    for i, (name, photo) in enumerate(people * max(1, int(seconds // 10))):  # a new crossing every 2.5 s
        start = i * 2.5
        out.append(Walker(f"{name}#{i}", lfw / name / photo, start, min(start + 4.5, seconds),
                          int((20 + 150 * (i % 3)) * scale), i % 2 == 0, int(130 * scale)))
    return out


def run(clip: Path, fps: float, home: Path, data: Path) -> dict:
    fl = Faceledger(Settings(home=home))
    fl.startup()
    actor = Actor.local()
    fl.create_collection(actor, "door", require_consent=False)
    fl.enroll(actor, "door", "Colin_Powell", [data / "lfw" / "Colin_Powell" / "Colin_Powell_0005.jpg"])
    fl.enroll(actor, "door", "Tony_Blair", [data / "lfw" / "Tony_Blair" / "Tony_Blair_0007.jpg"])
    streams = StreamService(fl, deliver_webhooks=False)
    runner = streams.watch(actor, str(clip), purpose="benchmark", collection="door", fps=fps)
    latencies, emitted = [], []
    process, emit = runner.watcher.process, runner._emit

    def timed(frame):
        timed.started = time.perf_counter()
        return process(frame)

    def timed_emit(events):
        emit(events)
        if events:
            latencies.append((time.perf_counter() - timed.started) * 1000)
            emitted.extend(events)

    runner.watcher.process, runner._emit = timed, timed_emit
    t = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - t
    status = runner.status()
    fl.close()
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"frames": status["frames_sampled"], "seconds": wall, "frames_per_s": status["frames_sampled"] / wall,
            "faces_seen": status["faces_seen"], "tracks": status["tracks"],
            "identified": sum(e["type"] == "track.identified" for e in emitted),
            "event_latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--data", type=Path, default=Settings().data_dir)
    parser.add_argument("--out", type=Path, default=Path(".faceledger/reports/bench-video.json"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (w, h) in {"640x480": (640, 480), "1920x1080": (1920, 1080)}.items():
            scale = h / 480
            clip = render(walkers(args.data / "lfw", scale, args.seconds), Path(tmp) / f"{label}.mp4",
                          seconds=args.seconds, width=w, height=h)
            results[label] = run(clip, args.fps, Path(tmp) / f"home-{label}", args.data)
    table = Table(title=f"Video: {args.seconds:g} s clips sampled at {args.fps:g} frames/s, as fast as processed")
    for col in ("input", "sampled frames/s processed", "faces seen", "tracks", "identified",
                "event latency p50 / p99 ms"):
        table.add_column(col, justify="right")
    for label, r in results.items():
        table.add_row(label, f"{r['frames_per_s']:.1f}", str(r["faces_seen"]), str(r["tracks"]), str(r["identified"]),
                      f"{r['event_latency_ms']['p50']:.0f} / {r['event_latency_ms']['p99']:.0f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
