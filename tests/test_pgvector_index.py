"""pgvector's two index kinds on a real PostgreSQL: built once after a bulk load, used by the planner (fresh
statistics), and finding the face a query was made from."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from faceledger.config import Settings
from faceledger.gallery.gallery import Gallery
from faceledger.vectors import pgvector_store

N, DIM = 3000, 128


@pytest.mark.parametrize("index", ["hnsw", "ivfflat"])
def test_bulk_load_builds_the_index_the_planner_uses(index, postgres, engine, tmp_path, monkeypatch):
    monkeypatch.setattr(pgvector_store, "IVF_MIN_ROWS", 1000)  # an IVF index from 1,000 rows (50,000 in use)
    g = Gallery(Settings(home=tmp_path, database_url=postgres.new_database(), vector_store=f"pgvector:{index}"),
                engine)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    g.create_collection("bulk", require_consent=False)
    g.enroll_templates("bulk", [f"s{i}" for i in range(N)], vectors, [f"{i:064x}" for i in range(N)], bulk=True)
    cid = g.collection("bulk").id
    with g.store.session() as s:
        names = set(s.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'face_vectors'")))
        assert ("face_vectors_hnsw" in names) == (index == "hnsw") and ("face_vectors_ivf" in names) == (
            index == "ivfflat")
        if index == "ivfflat":
            assert g.vectors.lists == pgvector_store.ivf_lists(N) and g.vectors.probes == round(g.vectors.lists / 8)
            s.execute(text(f"SET LOCAL ivfflat.probes = {g.vectors.probes}"))
        plan = "\n".join(s.scalars(text("EXPLAIN SELECT face_id FROM face_vectors WHERE collection_id = :c ORDER BY "
                                        "embedding <#> CAST(:v AS vector) LIMIT 10"),
                                   {"c": cid, "v": pgvector_store._literal(vectors[0])}))
    assert ("face_vectors_hnsw" if index == "hnsw" else "face_vectors_ivf") in plan, plan
    # a query made from a face (plus a little noise) finds that face first
    picks = rng.choice(N, 50, replace=False)
    noisy = vectors[picks] + rng.normal(0, 0.02, (50, DIM)).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    scores, ids = g.vectors.search(cid, noisy, 5)
    assert (ids[:, 0] == picks + 1).mean() >= 0.96  # faces numbered from 1 in enrolment order
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first (IVF's relaxed order is sorted by the store)
    g.close()
