"""A collection crossing IVF_THRESHOLD: does any request wait for the IVF index's training?

The gallery (SQLite + the FAISS store, as the service runs them) holds ``--size`` templates just below the
threshold; one enrolment takes it across, and a client keeps searching (and enrolling one face at a time) while
the IVF index trains in the background. Printed: the training time (what the crossing request used to wait for,
the synchronous rebuild measured here too), and the latency of every search and enrolment during training:
p50, p99 and max. The templates are synthetic unit vectors (latency, not recall, is measured here; recall is
bench_gallery.py's).

    python benchmarks/bench_ivf_swap.py [--size 200000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from faceledger.config import Settings
from faceledger.gallery.gallery import Gallery
from faceledger.pipeline.engine import FaceEngine
from faceledger.vectors.faiss_index import FaissIndex

console = Console()


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="the IVF threshold (templates before crossing)")
    parser.add_argument("--out", type=Path, default=Path(".faceledger/reports/bench-ivf-swap.json"))
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="faceledger-ivf-swap-"))
    settings = Settings(home=home, ivf_threshold=args.size)
    engine = FaceEngine(settings, "fast")
    g = Gallery(settings, engine)
    g.create_collection("crossing", require_consent=False)
    rng = np.random.default_rng(0)
    dim = g.dim
    n = args.size - 1
    with console.status(f"enrolling {n:,} templates (exact index)"):
        g.enroll_templates("crossing", [f"s{i}" for i in range(n)], unit(rng, n, dim),
                           [f"{i:064x}" for i in range(n)], chunk=50_000)
    c = g.collection("crossing")
    store = g.vectors
    assert store.kind(c.id) == "flat"

    # the synchronous rebuild the crossing request used to wait for, measured on the same data
    t = time.perf_counter()
    ids, vectors = g.store.all_vectors(c.id)
    rebuilt = FaissIndex.build(ids, vectors, dim, ivf_threshold=1, probe_fraction=settings.ivf_probe_fraction)
    rebuild_s = time.perf_counter() - t
    assert rebuilt.kind == "ivf"
    del rebuilt, ids, vectors

    queries = unit(rng, 2000, dim)
    search_ms, enrol_ms = [], []
    t0 = time.perf_counter()
    g.enroll_templates("crossing", ["crosser"], unit(rng, 1, dim), ["f" * 64])  # the crossing enrolment
    crossing_ms = (time.perf_counter() - t0) * 1000
    i = 0
    with console.status("searching and enrolling while the IVF index trains"):
        while store.kind(c.id) == "flat" and time.perf_counter() - t0 < 600:
            t = time.perf_counter()
            store.search(c.id, queries[i % len(queries)][None], 10)
            search_ms.append((time.perf_counter() - t) * 1000)
            if i % 10 == 0:
                t = time.perf_counter()
                g.enroll_templates("crossing", [f"late{i}"], unit(rng, 1, dim), [f"{i + 10**9:064x}"])
                enrol_ms.append((time.perf_counter() - t) * 1000)
            i += 1
    trained_s = time.perf_counter() - t0
    store.wait_for_training()
    t = time.perf_counter()
    for q in queries[:500]:
        store.search(c.id, q[None], 10)
    ivf_ms = (time.perf_counter() - t) * 1000 / 500
    held = len(store._index(c.id).ids())
    expected = len(g.store.face_ids(c.id))

    def stats(values):
        a = np.array(values)
        return {"count": len(a), "p50": round(float(np.percentile(a, 50)), 2),
                "p99": round(float(np.percentile(a, 99)), 2), "max": round(float(a.max()), 2)}

    result = {"threshold": args.size, "synchronous_rebuild_s": round(rebuild_s, 1),
              "crossing_enrolment_ms": round(crossing_ms, 1), "background_training_s": round(trained_s, 1),
              "search_ms_during_training": stats(search_ms), "enrolment_ms_during_training": stats(enrol_ms),
              "ivf_search_ms_after_swap": round(ivf_ms, 2), "faces_in_ivf_after_swap": held,
              "faces_in_sql": expected}
    console.print_json(json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    g.close()


if __name__ == "__main__":
    main()
