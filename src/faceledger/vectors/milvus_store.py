"""Templates searched in Milvus (pymilvus), the distributed engine for galleries beyond one machine.

One Milvus collection per deployment and template size (``faceledger_<deployment>_<dim>``): face id
(primary key), faceledger collection id (the partition key, so a search reads only its
collection's partitions and filters on it) and the template (IVF_FLAT, inner product: templates
are unit vectors). SQL stays the source of truth. Its change feed (``face_changes``, written in
the same transaction as every enrolment, erasure and collection deletion) is this store's
outbox: every process replays it into Milvus from the last change it applied (upserts and
deletes are idempotent, so processes replaying the same changes do no harm), before each
search and write and at start-up. The high-water mark of changes Milvus has taken is kept in
SQL, so a process that was killed, or a Milvus that restarted, picks up where it stopped; at
start-up each collection's count in Milvus is checked against SQL (listing every id is
impractical at scale), and a collection that disagrees is written again from SQL.

Consistency: searches use Milvus' Session consistency: a client reads its own writes at once,
without waiting for Strong consistency's global timestamp (measured earlier: 273 ms a query
with Strong, 4.3 ms with Bounded). Because every process replays the feed itself, another
process's enrolment becomes this process's own write at its next sync, so it is searchable
through every process as soon as it has committed and that process has synced (before each
search); the price is that N processes each write every change once. An erased face is never
returned anyway, because every search result is joined with SQL. Templates are plaintext in
Milvus, as with pgvector: refused with a template key unless the operator accepts it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import numpy as np

from faceledger.errors import ConfigurationError, StorageUnavailable

log = logging.getLogger("faceledger.vectors")

NLIST, NPROBE = 128, 64  # measured at 1M: nprobe 16 recall@1 0.906, 32 0.960, 64 0.989 (README)
PARTITIONS = 64
CONSISTENCY = "Session"
HWM_KEY = "milvus_applied_seq"
# seconds a Milvus call may take, retries included (an int: pymilvus ignores a float): an unreachable Milvus fails
# the call instead of hanging it for minutes
TIMEOUT = 10
# seconds start-up waits for Milvus: one that has just restarted may take tens of seconds to load its collection and
# serve a Strong query (measured on 2 cores after kill -9: restarts of 8-54 s, then a load of up to 28 s; a Strong
# count passed 10 s once in CI), and start-up is where waiting for it is right
STARTUP_TIMEOUT = 180


class MilvusVectorStore:
    name = "milvus"

    def __init__(self, source, dim: int, uri: str, deployment: str, *, sync_interval: float = 0.0) -> None:
        try:
            from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility
        except ImportError as exc:
            raise ConfigurationError("the milvus store needs pymilvus: pip install 'faceledger[milvus]'",
                                     store="milvus") from exc
        parsed = urlparse(uri if "//" in uri else f"//{uri}")
        self.alias = f"faceledger-{id(self)}"
        try:
            connections.connect(self.alias, host=parsed.hostname or "127.0.0.1", port=str(parsed.port or 19530),
                                timeout=30)
        except Exception as exc:
            raise StorageUnavailable(f"cannot reach Milvus at {uri}: {exc}") from exc
        self.source = source
        self.dim = dim
        self.sync_interval = sync_interval
        self.name_in_milvus = f"faceledger_{deployment}_{dim}"
        self._lock = threading.RLock()
        self._position: int | None = None
        self._synced_at = float("-inf")
        self.last_index_build_s = 0.0
        self._mine: set[int] = set()  # faces this process wrote itself: the replay skips them once
        if utility.has_collection(self.name_in_milvus, using=self.alias):
            self.collection = Collection(self.name_in_milvus, using=self.alias)
        else:
            fields = [FieldSchema("face_id", DataType.INT64, is_primary=True),
                      FieldSchema("collection_id", DataType.INT64, is_partition_key=True),
                      FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=dim)]
            self.collection = Collection(self.name_in_milvus, CollectionSchema(fields), using=self.alias,
                                         num_partitions=PARTITIONS)
            self.collection.create_index("embedding", {"index_type": "IVF_FLAT", "metric_type": "IP",
                                                       "params": {"nlist": NLIST}})
        self.collection.load(timeout=STARTUP_TIMEOUT)

    # ------------------------------------------------------------------ the outbox: SQL's change feed
    def sync(self, *, force: bool = False, timeout: int = TIMEOUT) -> int:
        """Replay the change feed into Milvus from this process's position; returns the changes applied."""
        if not force and time.monotonic() - self._synced_at < self.sync_interval:
            return 0
        applied = 0
        with self._lock:
            if self._position is None:
                self._position = self.source.get_meta_int(HWM_KEY)
            while True:
                changes = self.source.changes_since(self._position)
                if not changes:
                    break
                added: dict[int, list[int]] = {}
                for _seq, cid, face_id, op in changes:
                    if op == "add":
                        added.setdefault(cid, []).append(face_id)
                    elif op == "remove":
                        self._delete(f"face_id in [{int(face_id)}]", timeout)
                    elif op == "drop":
                        self._delete(f"collection_id == {int(cid)}", timeout)
                for cid, ids in added.items():
                    ids = [i for i in ids if i not in self._mine]
                    self._mine.difference_update(added[cid])
                    if ids:
                        ids, vectors = self.source.existing_vectors(cid, ids)  # not erased since
                        if len(ids):
                            self._upsert(cid, ids, vectors, timeout)
                self._position = changes[-1][0]
                self.source.raise_meta_int(HWM_KEY, self._position)  # Milvus has taken everything up to here
                applied += len(changes)
            self._synced_at = time.monotonic()
        return applied

    def _upsert(self, cid: int, ids: np.ndarray, vectors: np.ndarray, timeout: int = TIMEOUT) -> None:
        """Write faces idempotently: delete, then insert. (Milvus 2.3.5's ``upsert`` put rows where a search
        filtered on the partition key did not find them: measured, 1 of 6 faces found.)"""
        for start in range(0, len(ids), 10_000):
            chunk = [int(i) for i in ids[start:start + 10_000]]
            self._delete(f"face_id in [{', '.join(map(str, chunk))}]", timeout)
            self.collection.insert([chunk, [int(cid)] * len(chunk), np.asarray(vectors[start:start + 10_000],
                                                                                 np.float32)], timeout=timeout)

    def _delete(self, expr: str, timeout: int = TIMEOUT) -> None:
        self.collection.delete(expr, timeout=timeout)

    # ------------------------------------------------------------------ VectorStore
    def startup(self) -> dict[int, dict]:
        self.sync(force=True, timeout=STARTUP_TIMEOUT)
        return {cid: self.check(cid, timeout=STARTUP_TIMEOUT) for cid in self.source.collection_ids()}

    def load(self, collection_id: int) -> None:
        self.sync()

    def add(self, collection_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):  # at once, rather than at the next replay (which then skips them)
            with self._lock:
                self._upsert(collection_id, np.asarray(ids, np.int64), vectors)
                self._mine.update(int(i) for i in ids)

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """At the end of the block, seal what was inserted and wait until Milvus has indexed it (Milvus indexes
        sealed segments in the background; until then it searches them by brute force)."""
        yield
        from pymilvus import utility

        started = time.perf_counter()
        self.collection.flush(timeout=600)
        utility.wait_for_index_building_complete(self.name_in_milvus, using=self.alias, timeout=3600)
        self.last_index_build_s = time.perf_counter() - started

    def remove(self, collection_id: int, ids: np.ndarray) -> None:
        if len(ids):
            self._delete(f"face_id in [{', '.join(str(int(i)) for i in ids)}]")
            self.collection.compact(timeout=TIMEOUT)  # deleted vectors leave Milvus' segments when compaction has run

    def drop(self, collection_id: int, timeout: int = TIMEOUT) -> None:
        self._delete(f"collection_id == {int(collection_id)}", timeout)

    def search(self, collection_id: int, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self.sync()
        if not len(vectors):
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.int64)
        found = self.collection.search(np.asarray(vectors, np.float32), "embedding",
                                       {"metric_type": "IP", "params": {"nprobe": NPROBE}}, limit=int(k),
                                       expr=f"collection_id == {int(collection_id)}", consistency_level=CONSISTENCY,
                                       timeout=TIMEOUT)
        width = max((len(hits) for hits in found), default=0)
        scores = np.full((len(vectors), width), -np.inf, np.float32)
        ids = np.full((len(vectors), width), -1, np.int64)
        for row, hits in enumerate(found):
            for col, hit in enumerate(hits):
                ids[row, col], scores[row, col] = hit.id, hit.distance
        return scores, ids

    def count(self, collection_id: int, consistency: str = CONSISTENCY, timeout: int = TIMEOUT) -> int:
        self.sync(timeout=timeout)
        rows = self.collection.query(f"collection_id == {int(collection_id)}", output_fields=["count(*)"],
                                     consistency_level=consistency, timeout=timeout)
        return int(rows[0]["count(*)"]) if rows else 0

    def contains(self, collection_id: int, ids: np.ndarray) -> np.ndarray:
        self.sync()
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return np.zeros(0, bool)
        rows = self.collection.query(f"face_id in [{', '.join(str(int(i)) for i in ids)}]",
                                     output_fields=["face_id"], consistency_level="Strong", timeout=TIMEOUT)
        held = {int(r["face_id"]) for r in rows}
        return np.array([int(i) in held for i in ids], bool)

    def check(self, collection_id: int, timeout: int = TIMEOUT) -> dict:
        """Compare Milvus' count with SQL's (not every id: impractical at scale); write the collection again if they
        disagree."""
        truth = len(self.source.face_ids(collection_id))
        held = self.count(collection_id, consistency="Strong", timeout=timeout)
        if held == truth:
            return {"source": "milvus", "count": held, "added": 0, "removed": 0}
        log.warning("collection %s: Milvus holds %d faces, SQL %d; writing it again", collection_id, held, truth)
        result = self.rebuild(collection_id, timeout)
        return {"source": "milvus (rewritten)", "count": result["count"], "added": max(truth - held, 0),
                "removed": max(held - truth, 0)}

    def rebuild(self, collection_id: int, timeout: int = TIMEOUT) -> dict:
        self.drop(collection_id, timeout)
        ids, vectors = self.source.all_vectors(collection_id)
        if vectors is not None and len(ids):
            self._upsert(collection_id, ids, vectors, timeout)
        self.collection.compact(timeout=timeout)
        return {"kind": "milvus IVF_FLAT", "count": self.count(collection_id, consistency="Strong", timeout=timeout)}

    def reset(self) -> None:
        pass  # plaintext in Milvus: a new template key changes nothing here

    def kind(self, collection_id: int) -> str:
        return "milvus IVF_FLAT"

    def erasure_pending(self) -> list[str]:
        return ["milvus: deleted vectors stay in Milvus' segments (and its object storage) until the compaction "
                "requested with the erasure has run"]

    def health(self) -> dict:
        return {"store": self.name, "collection": self.name_in_milvus, "entities": int(self.collection.num_entities),
                "consistency": CONSISTENCY}

    def close(self) -> None:
        self.sync(force=True)  # Milvus has taken every change SQL committed (the outbox is drained)
