"""One collection's templates in a FAISS index.

Exact inner-product search (an ID-mapped flat index) below ``ivf_threshold`` templates,
an inverted-file index (IVF-Flat, which supports removal) above it. The index is
derived data: the SQL database is the source of truth, and ``reconcile`` brings an index
loaded from disk back in step with it after any crash.
"""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np

from faceledger.vectors import persist


class FaissIndex:
    """An inner-product FAISS index with int64 ids, safe to search from many threads."""

    def __init__(self, index: faiss.Index, kind: str, probe_fraction: float = 0.125) -> None:
        self.index = index
        self.kind = kind
        self.dim = index.d
        self._lock = threading.RLock()
        if kind == "ivf":
            ivf = faiss.extract_index_ivf(index)
            ivf.nprobe = max(1, round(ivf.nlist * probe_fraction))

    @classmethod
    def flat(cls, dim: int) -> FaissIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat")

    @classmethod
    def ivf(cls, vectors: np.ndarray, nlist: int | None = None, probe_fraction: float = 0.125) -> FaissIndex:
        """An IVF-Flat index trained on ``vectors`` (a sample of the templates it will hold).

        16·√n lists, and a search visits ``probe_fraction`` of them: measured on a
        million 128-d templates (benchmarks/bench_gallery.py), 1/8 gives recall@1 ≥ 0.99
        against exact search; face templates are spread out, so coarser settings lose
        the true neighbour far more often than on the usual ANN benchmarks.
        """
        n, dim = vectors.shape
        nlist = nlist or max(16, int(16 * np.sqrt(n)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = vectors[np.random.default_rng(0).permutation(n)[: nlist * 20]]
        index.cp.max_points_per_centroid = 20  # train on the sample as given, without FAISS re-sampling
        index.train(np.ascontiguousarray(sample, np.float32))
        return cls(index, "ivf", probe_fraction)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, *, ivf_threshold: int,
              probe_fraction: float) -> FaissIndex:
        index = cls.ivf(vectors, probe_fraction=probe_fraction) if len(ids) >= ivf_threshold else cls.flat(dim)
        index.add(ids, vectors)
        return index

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            with self._lock:
                self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.asarray(ids, np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            with self._lock:
                self.index.remove_ids(np.asarray(ids, np.int64))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, len(self)))
        with self._lock:
            return self.index.search(np.ascontiguousarray(vectors, np.float32), k)

    def ids(self) -> np.ndarray:
        with self._lock:
            if self.kind == "flat":
                return faiss.vector_to_array(self.index.id_map).astype(np.int64)
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
            meta = {**meta, "kind": self.kind, "count": len(self), "dim": self.dim}
        persist.write(path, data, meta, cipher=cipher, key=key)

    @classmethod
    def load(cls, path: Path, probe_fraction: float, expect: dict, cipher=None,
             key: bytes | None = None) -> tuple[FaissIndex, dict] | None:
        """The persisted index; None when there is none; ``persist.IndexRejected`` when it must not be used."""
        found = persist.read(path, expect, cipher=cipher, key=key)
        if found is None:
            return None
        data, meta = found
        try:
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except RuntimeError:
            raise persist.IndexRejected("index file could not be deserialized") from None
        ivf = faiss.try_extract_index_ivf(index)
        if meta["kind"] == "flat" and not isinstance(index, faiss.IndexIDMap2) or meta["kind"] == "ivf" and ivf is None:
            raise persist.IndexRejected(f"index file does not hold a {meta['kind']} index")
        if index.d != meta["dim"] or index.ntotal != meta["count"] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise persist.IndexRejected("index file does not match its metadata (dim, count or metric)")
        return cls(index, meta["kind"], probe_fraction), meta


def reconcile(index: FaissIndex, truth_ids: np.ndarray, fetch) -> tuple[int, int]:
    """Make ``index`` hold exactly ``truth_ids``; ``fetch(ids)`` returns (ids, vectors) of those still held (one
    erased meanwhile is left out). Returns (added, removed)."""
    have = index.ids()
    extra = np.setdiff1d(have, truth_ids, assume_unique=False)
    missing = np.setdiff1d(truth_ids, have, assume_unique=False)
    index.remove(extra)
    added = 0
    for start in range(0, len(missing), 50_000):
        ids, vectors = fetch(missing[start : start + 50_000])
        index.add(ids, vectors)
        added += len(ids)
    return added, len(extra)
