"""The embedded vector store: one FAISS index per collection, in memory, persisted under HOME.

Exact search below ``ivf_threshold`` faces, IVF above. An index that grows past the threshold
is trained as IVF in a background thread while the exact index keeps serving every search,
enrolment and erasure; the trained index is brought up to date with the exact one (faces added
or erased meanwhile) and swapped in under the lock, so no request waits for training. Each index is persisted atomically (encrypted when the
template cipher has a key, authenticated under the deployment's integrity key otherwise:
see ``persist``) at close, and checked against the SQL store when loaded: faces missing
from it are added, faces no longer in SQL are removed. A persisted index that fails its
integrity check or does not match its metadata is never used: the collection is rebuilt
from the SQL store, with a warning and the reason in the report. An erasure drops
the persisted copy at once, so no erased template stays on disk until the next close.

Several processes (workers of one host, or hosts sharing one PostgreSQL) each hold their own
copy. Each follows the SQL change feed (``face_changes``: faces added and removed, collections
dropped, in commit order) before every search, write and save (at most every
``sync_interval`` seconds; 0, the default, means every time): a face enrolled through one
process is searchable through every other as soon as its enrolment has committed, and an
erased face leaves every copy, persisted ones included, at the next call. A lagging copy never
returns an erased face anyway: every search result is joined with SQL.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager, nullcontext
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
                 probe_fraction: float | None = None, sync_interval: float = 0.0) -> None:
        self.source = source
        self.sync_interval = sync_interval
        self._position: int | None = None  # the last change feed number applied (None: not started)
        self._synced_at = float("-inf")
        self.integrity_key = integrity_key  # authenticates the persisted indexes; never stored beside them
        self.dim = dim
        self.directory = directory
        self.cipher = cipher
        self.ivf_threshold = ivf_threshold
        self.probe_fraction = probe_fraction
        self._indexes: dict[int, FaissIndex] = {}
        self._dirty: set[int] = set()
        self._lock = threading.RLock()
        self._training: dict[int, threading.Thread] = {}  # collections whose IVF index is being trained

    # ------------------------------------------------------------------ lifecycle
    def startup(self) -> dict[int, dict]:
        with self._lock:  # the feed's head is read first: what commits during the loads is applied by sync
            self._start_feed()
            self._synced_at = time.monotonic()
            return {cid: self._load(cid) for cid in self.source.collection_ids()}

    def load(self, collection_id: int) -> None:
        self.sync()
        self._index(collection_id)

    def sync(self, *, force: bool = False) -> int:
        """Apply the change feed since the last call (see the module docstring); returns the changes read."""
        if not force and time.monotonic() - self._synced_at < self.sync_interval:
            return 0
        read = 0
        with self._lock:
            if self._start_feed():
                return 0
            while True:
                changes = self.source.changes_since(self._position)
                if not changes:
                    break
                read += len(changes)
                added: dict[int, list[int]] = {}
                for _seq, cid, face_id, op in changes:
                    if op == "drop":
                        self.drop(cid)
                        added.pop(cid, None)
                    elif op == "remove":  # every copy of an erased template goes, the persisted one too
                        if cid in self._indexes:
                            self._indexes[cid].remove(np.array([face_id], np.int64))
                            self._dirty.add(cid)
                        self._unlink(cid)
                    elif op == "add" and cid in self._indexes:  # a collection not loaded is read from SQL
                        added.setdefault(cid, []).append(face_id)
                for cid, ids in added.items():
                    self._add_new(cid, np.array(ids, np.int64))
                self._position = changes[-1][0]
            self._synced_at = time.monotonic()
        return read

    def _start_feed(self) -> bool:
        """Before the first load: follow the feed from its head (what is loaded later is read from SQL)."""
        if self._position is not None:
            return False
        self._position = self.source.feed_head()
        return True

    def _add_new(self, cid: int, ids: np.ndarray) -> None:
        """Add the faces of ``ids`` the index does not hold yet and SQL still does, their vectors read from SQL."""
        index = self._indexes[cid]
        ids = ids[~np.isin(ids, index.ids())] if len(ids) else ids
        if len(ids):
            ids, vectors = self.source.existing_vectors(cid, ids)  # not erased since
            if len(ids):
                index.add(ids, vectors)
                self._dirty.add(cid)

    def close(self) -> None:
        self.wait_for_training(60)  # an index being swapped in is saved with the others
        self.sync(force=True)  # nothing erased elsewhere is written back to disk
        with self._lock:
            for cid in list(self._dirty):
                if cid in self._indexes:
                    self._save(cid)
            self._dirty.clear()

    def erasure_pending(self) -> list[str]:
        return []  # the persisted copy was dropped at once; memory holds none

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
            ids = np.asarray(ids, np.int64)
            with self._lock:  # the feed may have brought some of them in already
                index = self._index(collection_id)
                new = ~np.isin(ids, index.ids())
                index.add(ids[new], np.asarray(vectors)[new])
                self._dirty.add(collection_id)
            self._maybe_upgrade(collection_id)

    def bulk_load(self) -> AbstractContextManager[None]:
        return nullcontext()  # adding to a flat or IVF index is already cheap; a large one is trained at its rebuild

    def remove(self, collection_id: int, ids: np.ndarray) -> None:
        with self._lock:  # (under the lock: an index swapped in by training takes the erasure too)
            self._index(collection_id).remove(np.asarray(ids, np.int64))
            self._unlink(collection_id)  # the persisted copy still holds the erased vectors: drop it now
            self._dirty.add(collection_id)

    def drop(self, collection_id: int) -> None:
        with self._lock:
            self._indexes.pop(collection_id, None)
            self._dirty.discard(collection_id)
            self._unlink(collection_id)

    # ------------------------------------------------------------------ reads
    def search(self, collection_id: int, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.sync()
        index = self._index(collection_id)
        if not len(index):
            empty = np.zeros((len(vectors), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        return index.search(vectors, k)

    def count(self, collection_id: int) -> int:
        self.sync()
        return len(self._index(collection_id))

    def contains(self, collection_id: int, ids: np.ndarray) -> np.ndarray:
        self.sync()
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
            self._start_feed()
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
            added, removed = reconcile(index, self.source.face_ids(cid),
                                       lambda ids: self.source.existing_vectors(cid, ids))
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
        """An exact index that has grown past ``ivf_threshold`` starts its IVF training in the background."""
        with self._lock:
            index = self._indexes.get(cid)
            if (index is None or index.kind != "flat" or len(index) < self.ivf_threshold
                    or cid in self._training):
                return
            thread = threading.Thread(target=self._train, args=(cid, index), name=f"faiss-ivf-{cid}", daemon=True)
            self._training[cid] = thread
            thread.start()

    def _train(self, cid: int, exact: FaissIndex) -> None:
        """Train and fill an IVF index from SQL outside the lock, then, under it, bring it up to date with the exact
        index that kept serving (faces added or erased meanwhile) and swap it in, unless the collection's index was
        replaced or dropped in the meantime."""
        try:
            trained = self._build(cid)
            with self._lock:
                if self._indexes.get(cid) is not exact or trained.kind != "ivf":
                    return
                live, have = exact.ids(), trained.ids()
                gone = have[~np.isin(have, live)]
                if len(gone):
                    trained.remove(gone)
                missing = live[~np.isin(live, have)]
                if len(missing):
                    ids, vectors = self.source.existing_vectors(cid, missing)
                    if len(ids):
                        trained.add(ids, vectors)
                self._indexes[cid] = trained
                self._dirty.add(cid)
                log.info("collection %s: IVF index trained on %d faces and swapped in", cid, len(trained))
        except Exception:  # the exact index keeps serving; the next enrolment tries again
            log.exception("collection %s: IVF training failed", cid)
        finally:
            with self._lock:
                self._training.pop(cid, None)

    def wait_for_training(self, timeout: float | None = None) -> bool:
        """Wait for every IVF training under way (tests, benchmarks, shutdown); True when none is left."""
        with self._lock:
            threads = list(self._training.values())
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)
