"""Templates searched inside PostgreSQL with pgvector: no copy outside the database.

Table ``face_vectors`` (face id, collection id, ``vector(dim)``) beside ``faces``: its rows are
written in the same transaction as the faces they index (the SQL store calls :meth:`write`
before it commits) and leave with them (``ON DELETE CASCADE``), so there is nothing to
reconcile after a crash and every process sees the same templates at once. A search is one
SQL query filtered by collection and ordered by inner product (``<#>``; templates are unit
vectors, so it is cosine similarity) through the table's index, chosen by measurement at a
million faces (README): IVFFlat by default (``pgvector``, ``pgvector:ivfflat``): 2 sqrt(n)
lists trained when the table reaches ``IVF_MIN_ROWS`` (exact search below), again when it has
grown fourfold, at every rebuild and after a bulk load; 1/8 of the lists probed: recall@1
0.978 at 52 ms. HNSW (``pgvector:hnsw``, m 16, ef_construction 64) took 894 s to build and
reached recall@1 0.789 at ef_search 100 (0.908 at 400): face templates are spread out, which
defeats graph search. Filtering by collection uses pgvector 0.8's iterative index scans, so a
small collection in a large table still gets its k nearest faces.

The vectors are plaintext: pgvector cannot search encrypted templates. With a template key set,
this store refuses to start unless the operator accepts that (``plaintext_vectors_accepted``);
what then protects the templates is the database's own access control and disk encryption.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from faceledger.errors import ConfigurationError

EF_SEARCH = 100
INDEXES = ("hnsw", "ivfflat")
HNSW_INDEX = "CREATE INDEX face_vectors_hnsw ON face_vectors USING hnsw (embedding vector_ip_ops)"  # m 16, ef_c 64
IVF_MIN_ROWS = 50_000  # below this, no IVF index: the planner scans the collection exactly (about 7 ms at 20,000)
PROBE_FRACTION = 0.125  # share of the IVF lists searched unless FACELEDGER_IVF_PROBE_FRACTION says otherwise


def ivf_lists(rows: int) -> int:
    """2 sqrt(rows) lists (2,000 at a million), at most 5,000. pgvector's advice (rows / 1000) gave recall@1 0.94 at
    1/8 of the lists at 60,000 faces (4 sqrt(rows): 0.985): face templates are spread out, and coarse lists miss
    neighbours. Building needs memory for lists x lists (``ivf_build_mb``), hence the cap."""
    return max(10, min(5000, int(2 * rows**0.5)))


def ivf_build_mb(lists: int) -> int:
    """maintenance_work_mem an IVFFlat build asks for: about 201 bytes x lists^2 (measured: 213 MB for 979 lists,
    3,220 MB for 4,000), with a fifth spare."""
    return int(max(64, lists * lists * 201 * 1.2 / 2**20 + 64))


def maintenance_mb(rows: int, dim: int) -> int:
    """Memory for building the HNSW graph of ``rows`` templates in one pass (pgvector slows down sharply once the graph
    outgrows maintenance_work_mem): the vectors plus about 300 bytes of neighbour lists each, with a quarter spare;
    at least 64 MB, at most 8 GB."""
    return int(min(8192, max(64, rows * (4 * dim + 300) * 1.25 / 2**20)))


def _drop_indexes(conn) -> None:
    """Drop the ANN index, whichever kind it is (a bulk load or a rebuild builds it afresh)."""
    conn.exec_driver_sql("DROP INDEX IF EXISTS face_vectors_hnsw")
    conn.exec_driver_sql("DROP INDEX IF EXISTS face_vectors_ivf")


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, np.float32)) + "]"  # 9 digits: exact float32


class PgVectorStore:
    name = "pgvector"

    def __init__(self, source, dim: int, engine: Engine, *, ef_search: int = EF_SEARCH, index: str = "ivfflat",
                 probe_fraction: float | None = None) -> None:
        if engine.dialect.name != "postgresql":
            raise ConfigurationError("the pgvector store needs FACELEDGER_DATABASE_URL to be a PostgreSQL database",
                                     store="pgvector")
        if index not in INDEXES:
            raise ConfigurationError(f"pgvector index is one of {', '.join(INDEXES)}", store=f"pgvector:{index}")
        self.index = index
        self.probe_fraction = probe_fraction or PROBE_FRACTION
        self.lists, self.probes = 0, 1
        self.source = source
        self.dim = dim
        self.engine = engine
        self.ef_search = ef_search
        self.last_index_build_s = 0.0
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            conn.execute(text(
                f"CREATE TABLE IF NOT EXISTS face_vectors (face_id integer PRIMARY KEY REFERENCES faces(id) "
                f"ON DELETE CASCADE, collection_id integer NOT NULL, embedding vector({int(dim)}) NOT NULL)"))
            have = conn.execute(text("SELECT atttypmod FROM pg_attribute WHERE attrelid = 'face_vectors'::regclass "
                                     "AND attname = 'embedding'")).scalar()
            if have != dim:
                raise ConfigurationError(f"face_vectors holds {have}-d templates, this model makes {dim}-d ones: "
                                         "one database serves one model", store="pgvector")
            conn.execute(text("CREATE INDEX IF NOT EXISTS face_vectors_collection ON face_vectors (collection_id)"))
            if index == "hnsw":
                conn.execute(text("DROP INDEX IF EXISTS face_vectors_ivf"))
                conn.execute(text(HNSW_INDEX.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS")))
            else:
                conn.execute(text("DROP INDEX IF EXISTS face_vectors_hnsw"))
        source.vector_writer = self.write  # the SQL store writes our rows inside its own transactions

    # ------------------------------------------------------------------ written with the faces
    def write(self, s: Session, collection_id: int, ids, vectors) -> None:
        """Insert the rows of new faces inside the SQL store's transaction (idempotent)."""
        if len(ids):
            s.execute(text("INSERT INTO face_vectors (face_id, collection_id, embedding) VALUES "
                           "(:f, :c, CAST(:v AS vector)) ON CONFLICT (face_id) DO NOTHING"),
                      [{"f": int(f), "c": int(collection_id), "v": _literal(v)} for f, v in zip(ids, vectors)])

    # ------------------------------------------------------------------ VectorStore
    def startup(self) -> dict[int, dict]:
        report = {cid: self.check(cid) for cid in self.source.collection_ids()}
        if self.index == "ivfflat":
            self._read_lists()
            rows = self.count_all()
            # grown past exact search, or fourfold since the lists were trained: train them for the size now
            if (not self.lists and rows >= IVF_MIN_ROWS) or (self.lists and ivf_lists(rows) >= 2 * self.lists):
                self.build_index()
        return report

    def count_all(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM face_vectors")).scalar())

    def load(self, collection_id: int) -> None:
        pass

    def sync(self, *, force: bool = False) -> int:
        return 0  # every process reads the same table

    def add(self, collection_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        pass  # written already, in the faces' own transaction (``write``); ``check`` adds any that are missing

    def _insert(self, collection_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        with Session(self.engine) as s:
            self.write(s, collection_id, ids, vectors)
            s.commit()

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Load first, index after (pgvector's advice): the index is dropped for the block and built once at its
        end, with memory for the whole of it and parallel workers. Searches meanwhile scan exactly (correct, slow):
        for an initial import or a migration, not a live gallery."""
        with self.engine.begin() as conn:
            _drop_indexes(conn)
        try:
            yield
        finally:
            self.build_index()

    def build_index(self) -> float:
        """(Re)build the index: HNSW, or IVFFlat with lists for the table's current size (none below
        ``IVF_MIN_ROWS``); returns the seconds it took."""
        rows = self.count_all()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            memory = maintenance_mb(rows, self.dim) if self.index == "hnsw" else ivf_build_mb(ivf_lists(rows))
            conn.exec_driver_sql(f"SET maintenance_work_mem = '{memory}MB'")
            conn.exec_driver_sql(f"SET max_parallel_maintenance_workers = {max(1, (os.cpu_count() or 2) - 1)}")
            started = time.perf_counter()
            _drop_indexes(conn)
            if self.index == "hnsw":
                conn.exec_driver_sql(HNSW_INDEX)
            elif rows >= IVF_MIN_ROWS:
                conn.exec_driver_sql(f"CREATE INDEX face_vectors_ivf ON face_vectors USING ivfflat "
                                     f"(embedding vector_ip_ops) WITH (lists = {ivf_lists(rows)})")
            self.last_index_build_s = time.perf_counter() - started
            # fresh statistics: without them the planner guesses a collection holds 100 rows and sorts them all
            # exactly instead of using the index (measured: 7 ms at 20,000 faces, linear in the collection)
            conn.exec_driver_sql("ANALYZE face_vectors")
        self._read_lists()
        return self.last_index_build_s

    def _read_lists(self) -> None:
        """Probes for the IVF index as built: ``PROBE_FRACTION`` of its lists."""
        with self.engine.connect() as conn:
            options = conn.execute(text("SELECT c.reloptions FROM pg_class c WHERE c.relname = 'face_vectors_ivf'"))
            found = options.scalar()
        self.lists = next((int(o.split("=")[1]) for o in (found or []) if o.startswith("lists=")), 0)
        self.probes = max(1, round(self.lists * self.probe_fraction))

    def remove(self, collection_id: int, ids: np.ndarray) -> None:
        with self.engine.begin() as conn:  # normally gone already, with the faces
            conn.execute(text("DELETE FROM face_vectors WHERE face_id = ANY(:ids)"), {"ids": [int(i) for i in ids]})

    def drop(self, collection_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM face_vectors WHERE collection_id = :c"), {"c": int(collection_id)})

    def search(self, collection_id: int, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(vectors), k), -np.inf, np.float32)
        ids = np.full((len(vectors), k), -1, np.int64)
        with self.engine.begin() as conn:
            if self.index == "hnsw":
                conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), k)}"))
                conn.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            else:
                conn.execute(text(f"SET LOCAL ivfflat.probes = {int(self.probes)}"))
                conn.execute(text("SET LOCAL ivfflat.iterative_scan = relaxed_order"))
            for row, v in enumerate(vectors):
                found = conn.execute(text(
                    "SELECT face_id, -(embedding <#> CAST(:v AS vector)) FROM face_vectors WHERE collection_id = :c "
                    "ORDER BY embedding <#> CAST(:v AS vector) LIMIT :k"),
                    {"v": _literal(v), "c": int(collection_id), "k": int(k)}).all()
                found.sort(key=lambda r: -r[1])  # relaxed order (IVF's iterative scan): sorted here
                for col, (fid, score) in enumerate(found):
                    ids[row, col], scores[row, col] = fid, score
        width = int((ids >= 0).sum(axis=1).max()) if len(vectors) else 0
        return scores[:, :width], ids[:, :width]

    def count(self, collection_id: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM face_vectors WHERE collection_id = :c"),
                                    {"c": int(collection_id)}).scalar())

    def contains(self, collection_id: int, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        with self.engine.connect() as conn:
            held = {r[0] for r in conn.execute(text(
                "SELECT face_id FROM face_vectors WHERE collection_id = :c AND face_id = ANY(:ids)"),
                {"c": int(collection_id), "ids": [int(i) for i in ids]})}
        return np.array([int(i) in held for i in ids], bool)

    def check(self, collection_id: int) -> dict:
        """Add the rows of faces that have none (faces enrolled before this store was chosen)."""
        with self.engine.connect() as conn:
            missing = np.array([r[0] for r in conn.execute(text(
                "SELECT f.id FROM faces f LEFT JOIN face_vectors v ON v.face_id = f.id "
                "WHERE f.collection_id = :c AND v.face_id IS NULL ORDER BY f.id"), {"c": int(collection_id)})],
                np.int64)
        for start in range(0, len(missing), 5000):
            chunk = missing[start:start + 5000]
            ids, vectors = self.source.existing_vectors(collection_id, chunk)  # not erased since
            if len(ids):
                self._insert(collection_id, ids, vectors)
        return {"source": "pgvector", "count": self.count(collection_id), "added": len(missing), "removed": 0}

    def rebuild(self, collection_id: int) -> dict:
        """Rewrite the table and its index (``VACUUM FULL``): no erased vector is left in free space; an IVF index is
        trained again for the gallery's current size."""
        self.check(collection_id)
        rows = self.count_all()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if self.index == "ivfflat":  # trained again below: not rebuilt by the rewrite first, with the old lists
                _drop_indexes(conn)
            conn.exec_driver_sql(f"SET maintenance_work_mem = '{maintenance_mb(rows, self.dim)}MB'")
            conn.exec_driver_sql("VACUUM FULL face_vectors")
        if self.index == "ivfflat":
            self.build_index()  # lists trained again for the gallery's size now
        return {"kind": self.index, "count": self.count(collection_id)}

    def reset(self) -> None:
        pass  # the vectors are plaintext: a new template key changes nothing here

    def kind(self, collection_id: int) -> str:
        return self.index

    def erasure_pending(self) -> list[str]:
        return []  # named by the SQL store, which vacuums face_vectors

    def health(self) -> dict:
        n = self.count_all()
        index = "hnsw" if self.index == "hnsw" else f"ivfflat ({self.probes} probes)"
        return {"store": self.name, "vectors": n, "index": f"{index} (vector_ip_ops)"}

    def close(self) -> None:
        pass
