"""One collection's templates in a FAISS index.

Exact inner-product search (an ID-mapped flat index) below ``ivf_threshold`` templates; above
it, an inverted file of 4-bit product-quantised codes scanned with FAISS's fast-scan kernels
(``IVF-PQ-fs``, two dimensions per 4-bit code: 64 bytes for 128-d) proposes ``RERANK``
candidates, and the exact templates (an ID-mapped flat index kept beside it) re-rank them, so
scores are exact cosines. Measured at 1,000,000 templates on 2 cores (benchmarks/bench_gallery.py),
at the same 1/8 of lists as IVF-Flat: recall@1 0.995 both, p99 2.4 ms against 10.9 ms. Both
support removal. An IVF-Flat index persisted by an earlier version still loads and serves
(without re-ranking) until its next rebuild. The index is derived data: the SQL database is the
source of truth, and ``reconcile`` brings an index loaded from disk back in step with it after
any crash.
"""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np

from faceledger.vectors import persist

OMP_THREADS = faiss.omp_get_max_threads()  # OpenMP's default (one per core) for batches of queries
SMALL_BATCH = 8  # up to this many queries a search runs on one OpenMP thread
LAYOUT = 2  # this version's IVF layout: 2·√n lists (1: 16·√n lists, indexes built before 2026-11-27)
PROBE_FRACTION = {2: 0.25, 1: 0.125}  # the share of lists searched unless configured, as measured for each layout:
# recall@1 0.995 at 1M both (README, Speed)
RERANK = 100  # candidates of the compressed index re-ranked exactly (recall@1 0.995 at 1M, as 200 and 400)
_PAIR = b"faceledger-ivfpq-exact-v1\n"  # persisted: this, 8 bytes of the IVF blob's length, the IVF, the exact


def _pq_subquantizers(dim: int) -> int | None:
    """Two dimensions per 4-bit code (64 for 128-d), or None where the dimension does not allow it."""
    return dim // 2 if dim % 2 == 0 and dim >= 2 else None


class FaissIndex:
    """An inner-product FAISS index with int64 ids, safe to search from many threads."""

    def __init__(self, index: faiss.Index, kind: str, probe_fraction: float | None = None,
                 exact: faiss.IndexIDMap2 | None = None, *, layout: int = 1) -> None:
        self.index = index
        self.kind = kind
        self.layout = layout  # saved with the index: which measured share of lists a search visits by default
        self.dim = index.d
        self.exact = exact  # the exact templates that re-rank a compressed IVF's candidates (None: no re-ranking)
        self._lock = threading.RLock()
        if kind == "ivf":
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = max(1, round(ivf.nlist * (probe_fraction or PROBE_FRACTION[layout])))

    @classmethod
    def flat(cls, dim: int) -> FaissIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat")

    @classmethod
    def ivf(cls, vectors: np.ndarray, nlist: int | None = None, probe_fraction: float | None = None) -> FaissIndex:
        """A compressed IVF index (IVF-PQ fast-scan, exact re-ranking) trained on ``vectors`` (the templates it
        will hold, or a sample of them); IVF-Flat where the dimension is odd.

        2·√n lists, codes of the templates themselves (FAISS's default for fast-scan, stated here; residual
        codes measured no better at 2,000 lists), and a search visits ``probe_fraction`` of the lists
        (default 1/4). Measured on a million 128-d templates on the AMD machine, the index alone, one
        thread: 2,000 lists, 1/4 probed: recall@1 0.995 against exact search at p99 2.3 ms, trained in
        9 s; the earlier layout, 16,000 lists, 1/8 probed: the same recall at p99 4.7 ms, 148 s.
        Face templates are spread out, so coarser settings lose the true neighbour far more often
        than on the usual ANN benchmarks (2,000 lists, 1/8 probed: 0.976).
        """
        n, dim = vectors.shape
        nlist = nlist or max(16, int(2 * np.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        m = _pq_subquantizers(dim)
        if m is None:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
            index.by_residual = False
        sample = vectors[np.random.default_rng(0).permutation(n)[: nlist * 20]]
        index.cp.max_points_per_centroid = 20  # train on the sample as given, without FAISS re-sampling
        index.train(np.ascontiguousarray(sample, np.float32))
        exact = None if m is None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        return cls(index, "ivf", probe_fraction, exact, layout=LAYOUT)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, *, ivf_threshold: int,
              probe_fraction: float | None = None) -> FaissIndex:
        index = cls.ivf(vectors, probe_fraction=probe_fraction) if len(ids) >= ivf_threshold else cls.flat(dim)
        index.add(ids, vectors)
        return index

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            vectors, ids = np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64)
            with self._lock:
                self.index.add_with_ids(vectors, ids)
                if self.exact is not None:
                    self.exact.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            ids = np.asarray(ids, np.int64)
            with self._lock:
                self.index.remove_ids(ids)
                if self.exact is not None:
                    self.exact.remove_ids(ids)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, len(self)))
        vectors = np.ascontiguousarray(vectors, np.float32)
        # A request's few queries run on one OpenMP thread: the service already runs one request per core, and
        # FAISS's idle OpenMP threads spin after each parallel region (8 ms of CPU per identify on 2 cores at
        # 10,000 faces, for no gain in latency). Batches (evaluation) use every core. OpenMP keeps the setting
        # per calling thread: it is restored afterwards, so the thread's later adds and trainings use every core.
        faiss.omp_set_num_threads(1 if len(vectors) <= SMALL_BATCH else OMP_THREADS)
        try:
            with self._lock:
                if self.exact is None:
                    return self.index.search(vectors, k)
                _, candidates = self.index.search(vectors, max(k, RERANK))
                return self._rerank(vectors, candidates, k)
        finally:
            faiss.omp_set_num_threads(OMP_THREADS)

    def _rerank(self, vectors: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` of each query's candidates by exact inner product (FAISS's padding: -inf scores, id -1)."""
        scores = np.full((len(vectors), k), -np.inf, np.float32)
        ids = np.full((len(vectors), k), -1, np.int64)
        for row, (query, found) in enumerate(zip(vectors, candidates)):
            found = found[found >= 0]
            if not len(found):
                continue
            exact = self.exact.reconstruct_batch(found) @ query
            top = np.argsort(-exact, kind="stable")[:k]
            scores[row, :len(top)], ids[row, :len(top)] = exact[top], found[top]
        return scores, ids

    def ids(self) -> np.ndarray:
        with self._lock:
            id_mapped = self.index if self.kind == "flat" else self.exact  # an IndexIDMap2 lists its ids
            if id_mapped is not None:
                return faiss.vector_to_array(id_mapped.id_map).astype(np.int64)
            invlists = faiss.extract_index_ivf(self.index).invlists
            parts = [faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
                     for i in range(invlists.nlist) if invlists.list_size(i)]
            return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def save(self, path: Path, meta: dict, cipher=None, key: bytes | None = None) -> None:
        """Write atomically (a crash leaves the old file or the new one), sealed or MACed (see ``persist``)."""
        with self._lock:
            data = faiss.serialize_index(self.index).tobytes()
            if self.exact is not None:
                data = _PAIR + len(data).to_bytes(8, "little") + data + faiss.serialize_index(self.exact).tobytes()
            meta = {**meta, "kind": self.kind, "count": len(self), "dim": self.dim, "layout": self.layout}
        persist.write(path, data, meta, cipher=cipher, key=key)

    @classmethod
    def load(cls, path: Path, probe_fraction: float | None, expect: dict, cipher=None,
             key: bytes | None = None) -> tuple[FaissIndex, dict] | None:
        """The persisted index; None when there is none; ``persist.IndexRejected`` when it must not be used."""
        found = persist.read(path, expect, cipher=cipher, key=key)
        if found is None:
            return None
        data, meta = found
        exact = None
        try:
            view = memoryview(data)
            if data.startswith(_PAIR):
                split = len(_PAIR) + 8 + int.from_bytes(data[len(_PAIR):len(_PAIR) + 8], "little")
                index = _deserialize(view[len(_PAIR) + 8:split])
                exact = _deserialize(view[split:])
            else:
                index = _deserialize(view)
        except RuntimeError:
            raise persist.IndexRejected("index file could not be deserialized") from None
        if exact is not None and (not isinstance(exact, faiss.IndexIDMap2) or exact.ntotal != index.ntotal
                                  or exact.d != index.d):
            raise persist.IndexRejected("index file's exact templates do not match its IVF index")
        ivf = faiss.try_extract_index_ivf(index)
        if meta["kind"] == "flat" and not isinstance(index, faiss.IndexIDMap2) or meta["kind"] == "ivf" and ivf is None:
            raise persist.IndexRejected(f"index file does not hold a {meta['kind']} index")
        if index.d != meta["dim"] or index.ntotal != meta["count"] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise persist.IndexRejected("index file does not match its metadata (dim, count or metric)")
        # the layout is under the file's MAC from format v3 on; a v2 file has none (the earlier layout) or one the MAC
        # does not cover: anything but a known layout number reads as the earlier layout
        layout = meta.get("layout")
        layout = layout if type(layout) is int and layout in PROBE_FRACTION else 1
        return cls(index, meta["kind"], probe_fraction, exact, layout=layout), meta


def _deserialize(view: memoryview) -> faiss.Index:
    """An index from its serialized bytes, read in chunks: ``faiss.deserialize_index`` first copies them all into
    a vector of its own (at 1M faces, 3.2 s of a start-up for both parts of the index; this way 0.44 s)."""
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = view[position:position + n].tobytes()
        position += len(chunk)
        return chunk  # shorter than asked at the end: FAISS raises (a truncated index)

    return faiss.read_index(faiss.PyCallbackIOReader(read))


def reconcile(index: FaissIndex, truth_ids: np.ndarray, fetch) -> tuple[int, int]:
    """Make ``index`` hold exactly ``truth_ids``; ``fetch(ids)`` returns (ids, vectors) of those still held (one
    erased meanwhile is left out). Returns (added, removed)."""
    have = np.sort(index.ids())
    truth_ids = np.sort(np.asarray(truth_ids, np.int64))
    if np.array_equal(have, truth_ids):  # the usual start-up: nothing changed since the save
        return 0, 0
    extra = np.setdiff1d(have, truth_ids, assume_unique=True)  # ids are unique on both sides
    missing = np.setdiff1d(truth_ids, have, assume_unique=True)
    index.remove(extra)
    added = 0
    for start in range(0, len(missing), 50_000):
        ids, vectors = fetch(missing[start : start + 50_000])
        index.add(ids, vectors)
        added += len(ids)
    return added, len(extra)
