"""Templates searched inside PostgreSQL with pgvector: no copy outside the database.

Table ``face_vectors`` (face id, collection id, ``vector(dim)``) beside ``faces``: its rows are
written in the same transaction as the faces they index (the SQL store calls :meth:`write`
before it commits) and leave with them (``ON DELETE CASCADE``), so there is nothing to
reconcile after a crash and every process sees the same templates at once. A search is one
SQL query filtered by collection and ordered by inner product (``<#>``; templates are unit
vectors, so it is cosine similarity) through an HNSW index. HNSW, not IVFFlat, by
measurement: IVFFlat's lists are fixed when the index is built (an index built on a small or
empty table never learns a growing gallery's layout), HNSW takes inserts one by one (about
1.6 ms each at 100,000 x 128-d) and gave recall 0.98 at ef_search 100 in 4.1 ms
(../shared/notes/measured-facts.md). Filtering by collection uses pgvector 0.8's iterative
index scans, so a small collection in a large table still gets its k nearest faces.

The vectors are plaintext: pgvector cannot search encrypted templates. With a template key set,
this store refuses to start unless the operator accepts that (``plaintext_vectors_accepted``);
what then protects the templates is the database's own access control and disk encryption.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from faceledger.errors import ConfigurationError

EF_SEARCH = 100


def _literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.9g}" for x in np.asarray(vector, np.float32)) + "]"  # 9 digits: exact float32


class PgVectorStore:
    name = "pgvector"

    def __init__(self, source, dim: int, engine: Engine, *, ef_search: int = EF_SEARCH) -> None:
        if engine.dialect.name != "postgresql":
            raise ConfigurationError("the pgvector store needs FACELEDGER_DATABASE_URL to be a PostgreSQL database",
                                     store="pgvector")
        self.source = source
        self.dim = dim
        self.engine = engine
        self.ef_search = ef_search
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
            conn.execute(text("CREATE INDEX IF NOT EXISTS face_vectors_hnsw ON face_vectors "
                              "USING hnsw (embedding vector_ip_ops)"))
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
        return {cid: self.check(cid) for cid in self.source.collection_ids()}

    def load(self, collection_id: int) -> None:
        pass

    def sync(self, *, force: bool = False) -> int:
        return 0  # every process reads the same table

    def add(self, collection_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        with Session(self.engine) as s:  # normally written already, with the faces
            self.write(s, collection_id, ids, vectors)
            s.commit()

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
            conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), k)}"))
            conn.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            for row, v in enumerate(vectors):
                found = conn.execute(text(
                    "SELECT face_id, -(embedding <#> CAST(:v AS vector)) FROM face_vectors WHERE collection_id = :c "
                    "ORDER BY embedding <#> CAST(:v AS vector) LIMIT :k"),
                    {"v": _literal(v), "c": int(collection_id), "k": int(k)}).all()
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
                self.add(collection_id, ids, vectors)
        return {"source": "pgvector", "count": self.count(collection_id), "added": len(missing), "removed": 0}

    def rebuild(self, collection_id: int) -> dict:
        """Rewrite the table and its HNSW index (``VACUUM FULL``): no erased vector is left in free space."""
        self.check(collection_id)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM FULL face_vectors")
        return {"kind": "hnsw", "count": self.count(collection_id)}

    def reset(self) -> None:
        pass  # the vectors are plaintext: a new template key changes nothing here

    def kind(self, collection_id: int) -> str:
        return "hnsw"

    def erasure_pending(self) -> list[str]:
        return []  # named by the SQL store, which vacuums face_vectors

    def health(self) -> dict:
        with self.engine.connect() as conn:
            n = int(conn.execute(text("SELECT count(*) FROM face_vectors")).scalar())
        return {"store": self.name, "vectors": n, "index": "hnsw (vector_ip_ops)"}

    def close(self) -> None:
        pass
