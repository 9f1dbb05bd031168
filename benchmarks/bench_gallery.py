"""A gallery of 1,000,000 templates: enrolment throughput, index build, memory, start-up, search latency, recall.

Real templates come from every face image in the data folder (LFW, UTKFace sample, the
named-person sets). The rest are synthetic: drawn from a Gaussian with the real
templates' mean and covariance, then L2-normalised, so they occupy the same region of
the sphere as real faces; and around 1% of the real identities get five near-duplicates
each (the real template plus Gaussian noise scaled to a cosine of about 0.85), as a
crowded gallery would have. Queries are real LFW templates of people enrolled from
another photo. Recall@1 compares the index's top face with exact search over the same
templates.

    python benchmarks/bench_gallery.py [--size 1000000] [--profile fast] [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.evaluation.calibrate import lfw_images
from faceledger.evaluation.identify import split_lfw
from faceledger.vectors.faiss_index import FaissIndex
from faceledger.gallery.gallery import Gallery
from faceledger.pipeline.engine import Components, FaceEngine

console = Console()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def real_templates(settings: Settings, engine: FaceEngine, data: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(identity per template, templates, image names) for every face image in the data folder."""
    sets = [(data / "lfw", lfw_images(data / "lfw"), lambda p: "lfw:" + p.split("/")[0])]
    utk = data / "utkface_sample" / "images"
    sets.append((utk, sorted(p.name for p in utk.glob("*.jpg")), lambda p: "utk:" + p))
    people = data / "people"
    sets.append((people, sorted(str(p.relative_to(people)) for p in people.rglob("*/*/*.*")
                                if p.suffix.lower() in (".jpg", ".jpeg", ".png")), lambda p: "people:" + p.split("/")[-2]))
    ids, vecs, names = [], [], []
    for root, paths, ident in sets:
        emb = embed_files(root, paths, engine.profile.components, settings, label=f"real templates {root.name}")
        vecs.append(Components(emb.vectors).template(engine.profile.components))
        ids += [ident(p) for p in paths]
        names += [f"{root.name}/{p}" for p in paths]
    return ids, np.concatenate(vecs), names


def synthetic(real: np.ndarray, real_ids: list[str], n: int, rng) -> tuple[list[str], np.ndarray]:
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    dups_for = rng.choice(len(real), size=max(1, len(real) // 100), replace=False)
    noise_scale = np.sqrt((1 - 0.85**2) / 0.85**2 / real.shape[1])  # |noise| such that cos(real, dup) ~ 0.85
    dups = np.repeat(real[dups_for], 5, axis=0)
    dups = dups + rng.normal(0, noise_scale, dups.shape)
    dup_ids = [real_ids[i] + ":dup" for i in np.repeat(dups_for, 5)]
    rest = n - len(dups)
    gauss = rng.multivariate_normal(mean, cov, size=rest, method="cholesky").astype(np.float32)
    vecs = np.concatenate([dups.astype(np.float32), gauss])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return dup_ids + [f"synthetic:{i}" for i in range(rest)], vecs


def latency(index: FaissIndex, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    times, top = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = index.search(q[None], k)
        times.append((time.perf_counter() - t) * 1000)
        top.append(ids[0, 0])
    return np.array(times), np.array(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=Settings().data_dir)
    parser.add_argument("--work", type=Path, default=Path(".faceledger/bench-gallery"))
    parser.add_argument("--out", type=Path, default=Path(".faceledger/reports/bench-gallery.json"))
    parser.add_argument("--ivf-threshold", type=int, default=Settings().ivf_threshold)
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)  # per-query latency on one core; the service runs one query per worker
    settings = Settings(home=args.work, ivf_threshold=args.ivf_threshold)
    if args.startup_only:  # run in a fresh process: how long until a persisted 1M gallery answers
        t = time.perf_counter()
        g = Gallery(settings, FaceEngine(settings, args.profile))
        report = g.startup()
        print(json.dumps({"startup_s": time.perf_counter() - t, "report": report, "rss_mb": rss_mb()}))
        return
    engine = FaceEngine(Settings(), args.profile)
    rng = np.random.default_rng(0)
    ids, real, names = real_templates(Settings(), engine, args.data)
    lfw_names = [n.removeprefix("lfw/") for n in names if n.startswith("lfw/")]
    gallery_imgs, mated, _ = split_lfw(lfw_names)
    row = {n: i for i, n in enumerate(names)}
    query_rows = rng.choice([row["lfw/" + m] for m in mated], size=args.queries, replace=False)
    keep = np.setdiff1d(np.arange(len(real)), query_rows)  # queries are not in the gallery themselves
    syn_ids, syn = synthetic(real, ids, args.size - len(keep), rng)
    all_ids = [ids[i] for i in keep] + syn_ids
    all_vecs = np.concatenate([real[keep], syn])
    console.print(f"{len(keep):,} real + {len(syn):,} synthetic templates ({all_vecs.shape[1]}-d), "
                  f"{args.queries} real queries")

    if args.work.exists():
        shutil.rmtree(args.work)
    g = Gallery(settings.model_copy(update={"ivf_threshold": 10**12}), engine)  # load flat, build IVF below
    g.create_collection("million", require_consent=False)
    t = time.perf_counter()
    g.enroll_templates("million", all_ids, all_vecs, [f"{i:064x}" for i in range(len(all_ids))], chunk=50_000)
    enrol_s = time.perf_counter() - t
    rss_after_load = rss_mb()
    exact = g.vectors._index(1)  # the benchmark times the FAISS index itself, below the store
    exact_ms, exact_top = latency(exact, real[query_rows][: min(200, args.queries)])
    g.vectors.reset()
    g.store.close()

    results = {"templates": len(all_ids), "dim": int(all_vecs.shape[1]), "profile": args.profile,
               "enrol_templates_per_s": len(all_ids) / enrol_s, "enrol_seconds": enrol_s,
               "exact_search_ms": {"p50": float(np.percentile(exact_ms, 50)), "p99": float(np.percentile(exact_ms, 99))}}
    # the truth for recall: exact top-1 for every query
    flat = faiss.IndexFlatIP(all_vecs.shape[1])
    flat.add(all_vecs)
    truth_score, truth = flat.search(real[query_rows], 1)
    from faceledger.matching.calibration import load_calibration

    threshold = load_calibration(engine.model_id).threshold(1e-3)
    decisive = truth_score[:, 0] >= threshold  # queries whose exact top-1 would be a match at FMR 1e-3
    results["queries_matching_at_fmr_1e-3"] = int(decisive.sum())
    del flat

    g = Gallery(settings, engine)  # default threshold: the million-face collection becomes IVF
    t = time.perf_counter()
    build = g.rebuild_index("million")
    results["index_build_seconds"] = time.perf_counter() - t
    results["index"] = build
    index = g.vectors._index(1)
    face_id_of_row = np.arange(1, len(all_ids) + 1)  # enroll_templates numbers faces in order
    sweep = {}
    nlist = faiss.extract_index_ivf(index.index).nlist
    results["ivf_nlist"] = nlist
    for fraction in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4):
        nprobe = max(1, round(nlist * fraction))
        faiss.extract_index_ivf(index.index).nprobe = nprobe
        ms, top = latency(index, real[query_rows])
        hit = top == face_id_of_row[truth[:, 0]]
        sweep[nprobe] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                         "recall_at_1": float(hit.mean()), "recall_at_1_matching": float(hit[decisive].mean())}
    results["ivf_sweep"] = sweep
    results["rss_mb_after_build"] = rss_mb()
    results["rss_mb_after_load"] = rss_after_load
    g.close()
    index_file = args.work / "index" / "collection-1.faiss"
    results["index_file_mb"] = index_file.stat().st_size / 2**20
    startup = subprocess.run([sys.executable, __file__, "--startup-only", "--work", str(args.work), "--profile",
                              args.profile, "--ivf-threshold", str(args.ivf_threshold)], capture_output=True, text=True, check=True)
    results["startup"] = json.loads(startup.stdout.strip().splitlines()[-1])
    print_results(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"wrote {args.out}")


def print_results(r: dict) -> None:
    t = Table(title=f"Gallery of {r['templates']:,} templates ({r['dim']}-d, profile {r['profile']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("enrolment (bulk, SQL + index)", f"{r['enrol_templates_per_s']:,.0f} templates/s")
    t.add_row("exact search, top-10 (p50 / p99)", f"{r['exact_search_ms']['p50']:.1f} / {r['exact_search_ms']['p99']:.1f} ms")
    t.add_row("IVF index build", f"{r['index_build_seconds']:.1f} s ({r['index']['kind']})")
    t.add_row("memory after build (RSS)", f"{r['rss_mb_after_build']:,.0f} MB")
    t.add_row("persisted index file", f"{r['index_file_mb']:,.0f} MB")
    t.add_row("start-up with persisted index", f"{r['startup']['startup_s']:.2f} s")
    console.print(t)
    s = Table(title=f"IVF ({r['ivf_nlist']} lists): nprobe vs latency (top-10, one thread), recall@1 against exact")
    for col in ("nprobe", "p50 ms", "p99 ms", "recall@1 (all queries)",
                f"recall@1 ({r['queries_matching_at_fmr_1e-3']} queries matching at FMR 1e-3)"):
        s.add_column(col, justify="right")
    for nprobe, row in r["ivf_sweep"].items():
        s.add_row(str(nprobe), f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", f"{row['recall_at_1']:.4f}",
                  f"{row['recall_at_1_matching']:.4f}")
    console.print(s)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
