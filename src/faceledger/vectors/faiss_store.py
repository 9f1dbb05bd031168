"""The embedded vector store: one FAISS index per collection, in memory, persisted under HOME.

Exact search below ``ivf_threshold`` faces, IVF above (an index that grows past the
threshold is rebuilt as IVF). Each index is persisted atomically (encrypted when the
template cipher has a key, authenticated under the deployment's integrity key otherwise:
see ``persist``) at close, and checked against the SQL store when loaded: faces missing
from it are added, faces no longer in SQL are removed. A persisted index that fails its
integrity check or does not match its metadata is never used: the collection is rebuilt
from the SQL store, with a warning and the reason in the report. An erasure drops
the persisted copy at once, so no erased template stays on disk until the next close.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from faceledger.vectors.base import TemplateSource
from faceledger.vectors.faiss_index import FaissIndex, reconcile
from faceledger.vectors.persist import IndexRejected

log = logging.getLogger("faceledger.vectors")


class FaissVectorStore:
    name = "faiss"

    def __init__(self, source: TemplateSource, dim: int, directory: Path, *, cipher=None,
                 integrity_key: bytes | None = None, ivf_threshold: int = 200_000,
                 probe_fraction: float = 0.125) -> None:
        self.source = source
        self.integrity_key = integrity_key  # authenticates the persisted indexes; never stored beside them
        self.dim = dim
        self.directory = directory
        self.cipher = cipher
        self.ivf_threshold = ivf_threshold
        self.probe_fraction = probe_fraction
        self._indexes: dict[int, FaissIndex] = {}
        self._dirty: set[int] = set()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> dict[int, dict]:
        return {cid: self._load(cid) for cid in self.source.collection_ids()}

    def load(self, collection_id: int) -> None:
        self._index(collection_id)

    def close(self) -> None:
        with self._lock:
            for cid in list(self._dirty):
                if cid in self._indexes:
                    self._save(cid)
            self._dirty.clear()

    def health(self) -> dict:
        with self._lock:
            return {"store": self.name, "collections_loaded": len(self._indexes),
                    "vectors": sum(len(i) for i in self._indexes.values())}

    def reset(self) -> None:
        with self._lock:
            for path in self.directory.glob("collection-*"):
                path.unlink()
            self._indexes.clear()
            self._dirty.clear()

    # ------------------------------------------------------------------ writes
    def add(self, collection_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index(collection_id).add(np.asarray(ids, np.int64), vectors)
            with self._lock:
                self._dirty.add(collection_id)
            self._maybe_upgrade(collection_id)

    def remove(self, collection_id: int, ids: np.ndarray) -> None:
        self._index(collection_id).remove(np.asarray(ids, np.int64))
        with self._lock:  # the persisted copy still holds the erased vectors: drop it now, rewrite at close
            self._unlink(collection_id)
            self._dirty.add(collection_id)

    def drop(self, collection_id: int) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)
            self._dirty.discard(collection_id)
            self._unlink(collection_id)

    # ------------------------------------------------------------------ reads
    def search(self, collection_id: int, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(collection_id)
        if not len(index):
            empty = np.zeros((len(vectors), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        return index.search(vectors, k)

    def count(self, collection_id: int) -> int:
        return len(self._index(collection_id))

    def contains(self, collection_id: int, ids: np.ndarray) -> np.ndarray:
        return np.isin(np.asarray(ids, np.int64), self._index(collection_id).ids())

    def kind(self, collection_id: int) -> str:
        return self._index(collection_id).kind

    # ------------------------------------------------------------------ upkeep
    def check(self, collection_id: int) -> dict:
        with self._lock:
            self._indexes.pop(collection_id, None)
        return self._load(collection_id)

    def rebuild(self, collection_id: int) -> dict:
        with self._lock:
            index = self._build(collection_id)
            self._indexes[collection_id] = index
            self._save(collection_id)
            self._dirty.discard(collection_id)
            return {"kind": index.kind, "count": len(index)}

    def _path(self, cid: int) -> Path:
        return self.directory / f"collection-{cid}.faiss"

    def _save(self, cid: int) -> None:
        self._indexes[cid].save(self._path(cid), {"collection_id": cid}, self.cipher, self.integrity_key)

    def _unlink(self, cid: int) -> None:
        for suffix in (".faiss", ".json", ".faiss.tmp", ".json.tmp"):
            path = self._path(cid).with_suffix(suffix)
            path.unlink(missing_ok=True)

    def _index(self, cid: int) -> FaissIndex:
        with self._lock:
            if cid not in self._indexes:
                self._load(cid)
            return self._indexes[cid]

    def _load(self, cid: int) -> dict:
        """Load the persisted index (or build one) and reconcile it with the source of truth."""
        with self._lock:
            try:
                loaded = FaissIndex.load(self._path(cid), self.probe_fraction, {"collection_id": cid, "dim": self.dim},
                                         self.cipher, self.integrity_key)
                reason = "no index file"
            except IndexRejected as e:
                loaded, reason = None, e.reason
                log.warning("collection %s: %s; rebuilding its index from the database", cid, reason)
            if loaded is None:
                self._indexes[cid] = self._build(cid)
                if reason == "no index file":
                    self._dirty.add(cid)
                else:  # replace the bad file now: it is never left for a later load to trust
                    self._save(cid)
                    self._dirty.discard(cid)
                return {"source": "rebuilt from database", "reason": reason, "count": len(self._indexes[cid]),
                        "added": 0, "removed": 0}
            index = loaded[0]
            added, removed = reconcile(index, self.source.face_ids(cid), self.source.vectors)
            self._indexes[cid] = index
            if added or removed:
                self._dirty.add(cid)
            self._maybe_upgrade(cid)
            return {"source": "loaded", "count": len(index), "added": added, "removed": removed}

    def _build(self, cid: int) -> FaissIndex:
        ids, vectors = self.source.all_vectors(cid)
        if vectors is None:
            vectors = np.zeros((0, self.dim), np.float32)
        return FaissIndex.build(ids, vectors, self.dim, ivf_threshold=self.ivf_threshold,
                                probe_fraction=self.probe_fraction)

    def _maybe_upgrade(self, cid: int) -> None:
        """An exact index that has grown past ``ivf_threshold`` is rebuilt as IVF."""
        with self._lock:
            index = self._indexes.get(cid)
            if index is not None and index.kind == "flat" and len(index) >= self.ivf_threshold:
                self._indexes[cid] = self._build(cid)
                self._dirty.add(cid)
