"""Large photos: the engine with reduced JPEG decoding (the default) against decoding every pixel.

A JPEG at least twice the detector's input on its longer side is decoded at 1/2, 1/4 or 1/8 of its size in the
DCT domain, and decoded whole only when a face is too small there for its aligned crop. This prints, per kind of
photo, one thread: ms an image both ways, how often the whole image was still needed, and whether the results
are the same ones: faces found, their boxes, quality verdicts, and the cosine between the two templates of each
face; then LFW pairs scaled up (mated and non-mated, pairs.txt's first fold): how many 1:1 decisions at the
`fast` threshold for FMR 1e-4 change.

Kinds of photo: every JPEG of ../shared/data/people at least 1,280 px on its longer side (real photos, 1-2 MP);
LFW photos scaled up (Lanczos) to 1,600 and 3,000 px, and to 4,000 px in a 6,000 x 4,000 frame (a face filling much
of the frame, as at a kiosk or a phone held at arm's length; scaled-up pixels are smoother than a camera's); and
LFW photos at their own size
in the middle of a 3,000 x 2,000 grey frame (a small face in a large photo: the whole image is needed).

    python benchmarks/bench_decode.py [--images 60] [--pairs 150] [--data ../shared/data] [--out report.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402

from faceledger.config import Settings  # noqa: E402
from faceledger.evaluation.lfw import read_pairs  # noqa: E402
from faceledger.imaging import decode_at_least  # noqa: E402
from faceledger.pipeline.engine import FaceEngine  # noqa: E402

def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def scaled(path: Path, side: int) -> bytes:
    img = Image.open(path).convert("RGB")
    return _jpeg(img.resize((side, side * img.height // img.width), Image.LANCZOS))


def in_frame(path: Path, size=(3000, 2000), side: int | None = None) -> bytes:
    img = Image.open(path).convert("RGB")
    if side:
        img = img.resize((side, side * img.height // img.width), Image.LANCZOS)
    frame = Image.new("RGB", size, (128, 128, 128))
    frame.paste(img, ((size[0] - img.width) // 2, (size[1] - img.height) // 2))
    return _jpeg(frame)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def compare(whole: FaceEngine, reduced: FaceEngine, images: list[bytes], runs: int, label: str) -> dict:
    ms_whole, ms_reduced, cosines, ious = [], [], [], []
    n_whole = n_reduced = quality_same = faces = needed = 0
    for data in track(images, description=label):
        a, b = whole.analyze(data), reduced.analyze(data)
        view = decode_at_least(data, reduced.settings.detect_max_side)
        found = reduced.detect(view.bgr)
        needed += int(view.reduced and (len(found) == 0 or reduced._too_small(found.landmarks)))
        n_whole, n_reduced = n_whole + len(a), n_reduced + len(b)
        for i in range(len(a)):  # each face found whole, with the reduced decode's best-overlapping face
            overlaps = [_iou(a.detections.boxes[i], box) for box in b.detections.boxes]
            j = int(np.argmax(overlaps)) if overlaps else -1
            if j < 0 or overlaps[j] < 0.5:
                continue
            faces += 1
            ious.append(overlaps[j])
            cosines.append(float(a.templates[i] @ b.templates[j]))
            quality_same += int(a.quality[i].passed == b.quality[j].passed)
        ms_whole.append(_ms(lambda: whole.analyze(data), runs))
        ms_reduced.append(_ms(lambda: reduced.analyze(data), runs))
    cos = np.array(cosines) if cosines else np.zeros(1)
    return {
        "images": len(images), "ms_whole": round(statistics.median(ms_whole), 1),
        "ms_reduced": round(statistics.median(ms_reduced), 1),
        "speedup": round(statistics.median(ms_whole) / statistics.median(ms_reduced), 2),
        "whole_image_still_needed": needed, "faces_whole": n_whole, "faces_reduced": n_reduced,
        "faces_matched": faces, "box_iou_median": round(float(np.median(ious)) if ious else 0.0, 3),
        "quality_verdict_same": quality_same, "cosine_mean": round(float(cos.mean()), 4),
        "cosine_min": round(float(cos.min()), 4), "cosine_p1": round(float(np.percentile(cos, 1)), 4),
    }


def pair_decisions(whole: FaceEngine, reduced: FaceEngine, root: Path, n: int, side: int, threshold: float) -> dict:
    all_pairs = read_pairs(root / "lfw" / "pairs.txt")  # fold 1: 300 mated, then 300 non-mated
    chosen = list(range(n // 2)) + list(range(300, 300 + n // 2))
    flips = decided = 0
    diffs = []
    for k in track(chosen, description=f"pairs at {side} px"):
        sims = []
        for engine in (whole, reduced):
            t = []
            for rel in (all_pairs.left[k], all_pairs.right[k]):
                analysis = engine.analyze(scaled(root / "lfw" / rel, side))
                if len(analysis) == 0:
                    break
                centre = analysis.detections.most_central(analysis.width, analysis.height)
                t.append(analysis.templates[centre])
            sims.append(float(t[0] @ t[1]) if len(t) == 2 else None)
        if None in sims:
            continue
        decided += 1
        diffs.append(abs(sims[0] - sims[1]))
        flips += int((sims[0] >= threshold) != (sims[1] >= threshold))
    return {"side": side, "pairs": decided, "threshold": round(threshold, 4), "decisions_changed": flips,
            "similarity_abs_diff_median": round(float(np.median(diffs)), 4),
            "similarity_abs_diff_max": round(float(np.max(diffs)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="LFW photos per scaled kind")
    parser.add_argument("--pairs", type=int, default=150, help="LFW pairs (half mated) scaled up")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per image (median)")
    parser.add_argument("--data", type=Path, default=Settings().data_dir)
    parser.add_argument("--out", type=Path, default=Path(".faceledger/reports/bench-decode.json"))
    args = parser.parse_args()
    root = args.data
    if not (root / "lfw").is_dir():
        raise SystemExit(f"LFW is missing: {root / 'lfw'} (set --data)")

    whole = FaceEngine(Settings(threads=1, reduced_decode=False), "fast")
    reduced = FaceEngine(Settings(threads=1, reduced_decode=True), "fast")
    whole.load()
    reduced.load()
    from faceledger.matching.calibration import load_calibration

    threshold = load_calibration(whole.model_id).threshold(1e-4)

    people = sorted(p for p in (root / "people").rglob("*.jpg")
                    if max(Image.open(p).size) >= 2 * whole.settings.detect_max_side)
    lfw = sorted((root / "lfw").glob("*/*_0001.jpg"))[:: max(1, 5749 // args.images)][: args.images]
    kinds = {
        f"real photos >= {2 * whole.settings.detect_max_side} px ({len(people)})": [p.read_bytes() for p in people],
        "LFW scaled to 1,600 px": [scaled(p, 1600) for p in lfw],
        "LFW scaled to 3,000 px": [scaled(p, 3000) for p in lfw],
        "LFW scaled to 4,000 px in a 6,000 x 4,000 frame": [in_frame(p, (6000, 4000), 4000) for p in lfw],
        "LFW 250 px in a 3,000 x 2,000 frame": [in_frame(p) for p in lfw],
    }
    results = {name: compare(whole, reduced, images, args.runs, name) for name, images in kinds.items()}
    pairs = [pair_decisions(whole, reduced, root, args.pairs, side, threshold) for side in (1600, 4800)]

    console = Console()
    table = Table(title=f"fast, one thread, {platform.processor() or platform.machine()}")
    for col in ("photos", "n", "ms whole", "ms reduced", "speed-up", "whole needed", "faces whole / reduced",
                "quality same", "cosine mean / min"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, str(r["images"]), str(r["ms_whole"]), str(r["ms_reduced"]), f"{r['speedup']}x",
                      str(r["whole_image_still_needed"]), f"{r['faces_whole']} / {r['faces_reduced']}",
                      f"{r['quality_verdict_same']} / {r['faces_matched']}",
                      f"{r['cosine_mean']} / {r['cosine_min']}")
    console.print(table)
    for p in pairs:
        console.print(f"LFW pairs scaled to {p['side']} px: {p['decisions_changed']} of {p['pairs']} decisions at "
                      f"FMR 1e-4 (threshold {p['threshold']}) changed; |similarity difference| median "
                      f"{p['similarity_abs_diff_median']}, max {p['similarity_abs_diff_max']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "kinds": results,
                                    "pairs": pairs}, indent=1))
    console.print(f"written: {args.out}")


if __name__ == "__main__":
    main()
