"""Face engine throughput on LFW images: the whole path (decode, detect, align, embed).

Prints images/s for each profile with 1 and 2 worker processes (one ONNX thread each),
per-stage single-thread medians, batch-vs-single embedding speed, and the same images
through the `face_recognition` library's usual path (face_locations + face_encodings)
as the peer users know, with the ratio.

    python benchmarks/bench_engine.py [--images 400] [--data ../shared/data] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from faceledger.config import Settings  # noqa: E402
from faceledger.evaluation.lfw import read_pairs  # noqa: E402
from faceledger.pipeline.align import align_all  # noqa: E402
from faceledger.pipeline.engine import FaceEngine  # noqa: E402

_engine: FaceEngine | None = None
_peer = None


def _init(profile: str | None) -> None:
    global _engine, _peer
    if profile == "face_recognition":
        import face_recognition

        _peer = face_recognition
        _peer.face_encodings(np.zeros((100, 100, 3), np.uint8))  # load its models now
    else:
        _engine = FaceEngine(Settings(), profile)
        _engine.load()


def _work(paths: list[str]) -> int:
    faces = 0
    for p in paths:
        if _peer is not None:
            img = _peer.load_image_file(p)
            faces += len(_peer.face_encodings(img, _peer.face_locations(img)))
        else:
            faces += len(_engine.analyze(Path(p).read_bytes()))
    return faces


def throughput(profile: str, paths: list[str], workers: int) -> dict:
    chunks = [paths[i::workers * 4] for i in range(workers * 4)]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(profile,)) as pool:
        list(pool.map(_work, [[paths[0]]] * workers))  # warm up every worker
        start = time.perf_counter()
        faces = sum(pool.map(_work, chunks))
        elapsed = time.perf_counter() - start
    return {"images_per_s": len(paths) / elapsed, "faces": faces, "seconds": elapsed}


def stage_medians(paths: list[str]) -> dict:
    engine = FaceEngine(Settings(), "accurate")
    engine.load()
    times: dict[str, list[float]] = {"decode": [], "detect": [], "align": [], "sface_per_face": [],
                                     "dlib_per_face": []}
    sface, dlib = engine.recognizer("sface"), engine.recognizer("dlib")
    for p in paths[:100]:
        raw = Path(p).read_bytes()
        t0 = time.perf_counter()
        bgr = engine.decode(raw)
        t1 = time.perf_counter()
        dets = engine.detect(bgr)[:1]
        t2 = time.perf_counter()
        crops = align_all(bgr, dets.landmarks)
        t3 = time.perf_counter()
        sface.embed(crops)
        t4 = time.perf_counter()
        dlib.embed_chips(dlib.chips(bgr, dets))
        t5 = time.perf_counter()
        for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[k].append(v * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def batch_speed(paths: list[str]) -> dict:
    engine = FaceEngine(Settings(), "fast")
    crops = []
    for p in paths[:64]:
        bgr = engine.decode(p)
        crops.append(align_all(bgr, engine.detect(bgr).landmarks[:1]))
    crops = np.concatenate(crops)
    rec = engine.recognizer("sface")
    out = {}
    for batch in (1, 2, 4, 8, 16, 32):
        rec.batch = batch
        rec.embed(crops[:batch])
        start = time.perf_counter()
        rec.embed(crops)
        out[batch] = (time.perf_counter() - start) * 1000 / len(crops)
    return out


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--data", type=Path, default=Settings().data_dir)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip-peer", action="store_true", help="Skip the face_recognition comparison.")
    args = parser.parse_args()
    lfw = args.data / "lfw"
    paths = [str(lfw / p) for p in read_pairs(lfw / "pairs.txt").images[: args.images]]
    console = Console()
    console.print(f"{len(paths)} LFW images (250x250) on {machine()}")
    result = {"machine": machine(), "images": len(paths), "throughput": {}}
    table = Table(title="Whole path: decode, detect, align, embed (images/s)")
    for col in ("pipeline", "1 worker", "2 workers"):
        table.add_column(col, justify="right")
    runs = ["fast", "accurate"] + ([] if args.skip_peer else ["face_recognition"])
    for name in runs:
        row = {w: throughput(name, paths, w) for w in (1, 2)}
        result["throughput"][name] = {f"{w}_workers": r for w, r in row.items()}
        table.add_row(name, *(f"{row[w]['images_per_s']:.1f}" for w in (1, 2)))
    console.print(table)
    if not args.skip_peer:
        peer = result["throughput"]["face_recognition"]["2_workers"]["images_per_s"]
        ratios = {n: result["throughput"][n]["2_workers"]["images_per_s"] / peer for n in ("fast", "accurate")}
        result["ratio_vs_face_recognition"] = ratios
        console.print("vs face_recognition (2 workers): " + ", ".join(f"{n} {r:.1f}x" for n, r in ratios.items()))
    result["stage_ms_single_thread"] = stage_medians(paths)
    console.print("single-thread medians (ms): " +
                  ", ".join(f"{k} {v:.1f}" for k, v in result["stage_ms_single_thread"].items()))
    result["sface_ms_per_face_by_batch"] = batch_speed(paths)
    console.print("SFace ms/face by batch size: " +
                  ", ".join(f"{b}: {v:.1f}" for b, v in result["sface_ms_per_face_by_batch"].items()))
    out = args.out or Settings().home / "reports" / "bench-engine.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
