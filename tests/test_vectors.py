"""The persisted FAISS index is authenticated: a tampered, corrupted or malformed index file is
never searched; the collection is rebuilt from the database and the report says so."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from faceledger.gallery.crypto import TemplateCipher
from faceledger.vectors import open_vector_store

DIM = 64
KEY = os.urandom(32)
REBUILT = "rebuilt from database"


class FakeSource:
    """A TemplateSource over random unit vectors: collection id -> (face ids, vectors)."""

    def __init__(self, sizes: dict[int, int], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.data, start = {}, 100
        for cid, n in sizes.items():
            v = rng.normal(size=(n, DIM)).astype(np.float32)
            self.data[cid] = (np.arange(start, start + n, dtype=np.int64), v / np.linalg.norm(v, axis=1, keepdims=True))
            start += 1000

    def collection_ids(self) -> list[int]:
        return list(self.data)

    def face_ids(self, collection_id: int) -> np.ndarray:
        return self.all_vectors(collection_id)[0]

    def vectors(self, face_ids: np.ndarray) -> np.ndarray:
        ids = np.concatenate([i for i, _ in self.data.values()])
        vecs = np.concatenate([v for _, v in self.data.values()])
        pos = {int(f): n for n, f in enumerate(ids)}
        return vecs[[pos[int(f)] for f in face_ids]]

    def all_vectors(self, collection_id: int) -> tuple[np.ndarray, np.ndarray]:
        return self.data.get(collection_id, (np.zeros(0, np.int64), np.zeros((0, DIM), np.float32)))

    # the change feed, as the SQL store keeps it: (seq, collection id, face id, op)
    def feed_head(self) -> int:
        return self.feed[-1][0] if self.feed else 0

    def changes_since(self, seq: int, limit: int = 10_000) -> list[tuple]:
        return [c for c in self.feed if c[0] > seq][:limit]

    def existing_vectors(self, collection_id: int, face_ids) -> tuple[np.ndarray, np.ndarray]:
        held = self.data.get(collection_id, (np.zeros(0, np.int64),))[0]
        ids = np.intersect1d(held, np.asarray(face_ids, np.int64))
        return ids, self.vectors(ids) if len(ids) else np.zeros((0, DIM), np.float32)

    feed: list = []

    def commit_add(self, collection_id: int, vector: np.ndarray) -> int:
        """Another process enrols a face: the row and its feed entry."""
        ids, vecs = self.data[collection_id]
        fid = int(max(int(i.max()) for i, _ in self.data.values() if len(i)) + 1)
        self.data[collection_id] = (np.append(ids, fid), np.vstack([vecs, vector[None]]))
        self.feed = [*self.feed, (self.feed_head() + 1, collection_id, fid, "add")]
        return fid

    def commit_remove(self, collection_id: int, fid: int) -> None:
        ids, vecs = self.data[collection_id]
        keep = ids != fid
        self.data[collection_id] = (ids[keep], vecs[keep])
        self.feed = [*self.feed, (self.feed_head() + 1, collection_id, fid, "remove")]


def make(tmp_path, source, cipher=None, key=KEY, **kw):
    return open_vector_store("faiss", source=source, dim=DIM, directory=tmp_path / "index", cipher=cipher,
                             integrity_key=key, **kw)


def persisted(tmp_path, source, cipher=None):
    """A store that has built, persisted and closed every collection; then a clean restart loads it."""
    store = make(tmp_path, source, cipher)
    assert all(r["source"] == REBUILT and r["reason"] == "no index file" for r in store.startup().values())
    store.close()
    again = make(tmp_path, source, cipher)
    assert all(r["source"] == "loaded" for r in again.startup().values())  # no false alarm
    again.close()
    return tmp_path / "index" / "collection-1.faiss"


def restart(tmp_path, source, caplog, cipher=None, key=KEY):
    """Restart on the (tampered) files: the report of collection 1, a warning logged, a correct index."""
    caplog.clear()
    store = make(tmp_path, source, cipher, key)
    with caplog.at_level(logging.WARNING, logger="faceledger.vectors"):
        report = store.startup()[1]
    assert report["source"] == REBUILT and report["reason"], report
    assert any(r.name == "faceledger.vectors" and r.levelno == logging.WARNING for r in caplog.records)
    ids, vecs = source.data[1]
    scores, found = store.search(1, vecs, 1)
    np.testing.assert_array_equal(found[:, 0], ids)  # every face finds itself, nobody else
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert store.check(1)["source"] == "loaded"  # the rebuilt index replaced the bad file
    store.close()
    return report


def test_overwritten_vector_is_detected(tmp_path, caplog):
    source = FakeSource({1: 20})
    path = persisted(tmp_path, source)
    ids, vecs = source.data[1]
    data = path.read_bytes()
    victim, other = vecs[0].tobytes(), vecs[5].tobytes()
    assert data.count(victim) == 1  # the clear vector is in the file: overwrite it with another person's
    path.write_bytes(data.replace(victim, other))
    report = restart(tmp_path, source, caplog)
    assert "integrity" in report["reason"]
    store = make(tmp_path, source)
    scores, found = store.search(1, vecs[5:6], 3)
    assert not (found[0] == ids[0]).any() or scores[0][found[0] == ids[0]].max() < 0.99


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bit_flips_are_detected(tmp_path, caplog, seed):
    source = FakeSource({1: 30})
    path = persisted(tmp_path, source)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    tail = len(data) - 30 * DIM * 4 - 30 * 8 - 64  # flips among the stored vectors and ids (most of the file)
    for pos in rng.integers(max(0, tail), len(data), 4):
        data[pos] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))
    assert "integrity" in restart(tmp_path, source, caplog)["reason"]


def test_encrypted_index_tampering_is_detected(tmp_path, caplog):
    cipher = TemplateCipher(os.urandom(32))
    source = FakeSource({1: 20})
    path = persisted(tmp_path, source, cipher)
    assert source.data[1][1][0].tobytes() not in path.read_bytes()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    assert "integrity" in restart(tmp_path, source, caplog, cipher)["reason"]
    path.write_bytes(path.read_bytes()[:8])  # truncated below the nonce
    assert "integrity" in restart(tmp_path, source, caplog, cipher)["reason"]


@pytest.mark.parametrize("encrypted", [False, True])
def test_another_collections_file_is_refused(tmp_path, caplog, encrypted):
    cipher = TemplateCipher(os.urandom(32) if encrypted else None)
    source = FakeSource({1: 20, 2: 20})
    path = persisted(tmp_path, source, cipher)
    for suffix in (".faiss", ".json"):
        shutil.copy(tmp_path / "index" / f"collection-2{suffix}", path.with_suffix(suffix))
    assert "collection_id" in restart(tmp_path, source, caplog, cipher)["reason"]
    for suffix in (".faiss", ".json"):  # the same, its metadata relabelled: the seal or MAC binds the collection id
        shutil.copy(tmp_path / "index" / f"collection-2{suffix}", path.with_suffix(suffix))
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "collection_id": 1}))
    assert "integrity" in restart(tmp_path, source, caplog, cipher)["reason"]


@pytest.mark.parametrize("field,value", [("count", 19), ("dim", 32), ("kind", "ivf"), ("collection_id", 2),
                                         ("layout", 2), ("format", ["faceledger-index-v3"]), ("format", {}),
                                         ("format", "faceledger-index-v2")])
def test_edited_metadata_is_detected(tmp_path, caplog, field, value):
    source = FakeSource({1: 20})
    meta_path = persisted(tmp_path, source).with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    restart(tmp_path, source, caplog)


def test_without_the_integrity_key_the_file_is_not_trusted(tmp_path, caplog):
    source = FakeSource({1: 20})
    persisted(tmp_path, source)
    restart(tmp_path, source, caplog, key=os.urandom(32))  # another deployment's key: the MAC fails


@pytest.mark.parametrize("content", [b"[]", b"{}", b'{"kind": "bogus", "count": 20, "dim": 64, "collection_id": 1}',
                                     b"\xff\x00 not json", b'"flat"', b"null"])
def test_bad_metadata_file_rebuilds(tmp_path, caplog, content):
    source = FakeSource({1: 20})
    persisted(tmp_path, source).with_suffix(".json").write_bytes(content)
    restart(tmp_path, source, caplog)


def test_unknown_kind_with_valid_fields_rebuilds(tmp_path, caplog):
    source = FakeSource({1: 20})
    meta_path = persisted(tmp_path, source).with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "kind": "hnsw"}))
    restart(tmp_path, source, caplog)


@pytest.mark.parametrize("missing", [".faiss", ".json"])
def test_half_missing_files_rebuild(tmp_path, caplog, missing):
    source = FakeSource({1: 20})
    persisted(tmp_path, source).with_suffix(missing).unlink()
    restart(tmp_path, source, caplog)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    source = FakeSource({1: 20})
    persisted(tmp_path, source)
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["collection-1.faiss", "collection-1.json"]


def test_ivf_index_round_trip_and_tampering(tmp_path, caplog):
    source = FakeSource({1: 1200})
    store = make(tmp_path, source, ivf_threshold=1000)
    store.startup()
    assert store.kind(1) == "ivf"
    store.close()
    again = make(tmp_path, source, ivf_threshold=1000)
    assert again.startup()[1]["source"] == "loaded" and again.kind(1) == "ivf"
    path = tmp_path / "index" / "collection-1.faiss"
    ids, vecs = source.data[1]
    data = path.read_bytes()
    assert data.count(vecs[0].tobytes()) == 1
    path.write_bytes(data.replace(vecs[0].tobytes(), vecs[1].tobytes()))
    caplog.clear()
    store = make(tmp_path, source, ivf_threshold=1000)
    with caplog.at_level(logging.WARNING, logger="faceledger.vectors"):
        report = store.startup()[1]
    assert report["source"] == REBUILT and "integrity" in report["reason"] and store.kind(1) == "ivf"
    assert store.search(1, vecs[:1], 1)[1][0, 0] == ids[0]


def test_tampered_index_through_the_service(settings, engine, people, tmp_path, caplog):
    from faceledger.gallery.records import Consent
    from faceledger.service import Actor, Faceledger

    me, home = Actor.local(), tmp_path / "home"
    g = Faceledger(settings.model_copy(update={"home": home}), engine)
    g.create_collection(me, "bbt")
    for name in ("amy", "penny"):
        g.enroll(me, "bbt", name, [people / "bbt" / name / f"{name}{i}.png" for i in (1, 2)],
                 consent=Consent("explicit-consent"))
    cid = g.gallery.collection("bbt", "default").id
    faces = np.sort(g.gallery.store.face_ids(cid))
    vecs = g.gallery.store.existing_vectors(cid, faces)[1]
    g.close()
    path = home / "index" / f"collection-{cid}.faiss"
    data = path.read_bytes()
    for i in range(2):  # amy's two faces (enrolled first) now hold penny's first template
        data = data.replace(vecs[i].tobytes(), vecs[2].tobytes())
    path.write_bytes(data)

    again = Faceledger(settings.model_copy(update={"home": home}), engine)
    with caplog.at_level(logging.WARNING, logger="faceledger.vectors"):
        report = again.gallery.startup()["default/bbt"]
    assert report["source"] == REBUILT and "integrity" in report["reason"]
    scores, found = again.gallery.vectors.search(cid, vecs[2:3], 4)
    assert set(found[0][scores[0] > 0.999].tolist()) == {int(faces[2])}  # only penny's own face at 1.0
    assert again.identify(me, "bbt", people / "bbt" / "amy" / "amy3.png").faces[0].subject_id == "amy"
    again.close()


# ------------------------------------------------------------------ several processes: the change feed
def test_a_second_process_follows_enrolments_and_erasures_through_the_feed(tmp_path):
    source = FakeSource({1: 20})
    a, b = make(tmp_path / "a", source), make(tmp_path / "b", source)
    a.startup(), b.startup()
    v = np.random.default_rng(7).normal(size=DIM).astype(np.float32)
    v /= np.linalg.norm(v)
    fid = source.commit_add(1, v)  # enrolled through A: A adds it itself, B only sees the feed
    a.add(1, np.array([fid]), v[None])
    scores, ids = b.search(1, v[None], 1)
    assert ids[0, 0] == fid and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert a.count(1) == 21  # A's own add and the feed's did not add it twice
    b.close()  # B persists its copy with the face
    source.commit_remove(1, fid)  # erased through A
    a.remove(1, np.array([fid]))
    assert not b.contains(1, np.array([fid])).any()
    assert fid not in b.search(1, v[None], 5)[1]
    b.close()
    again = make(tmp_path / "b", source)  # B's file on disk no longer holds the erased template
    assert again.startup()[1]["removed"] == 0 and not again.contains(1, np.array([fid])).any()


def test_a_dropped_collection_leaves_every_copy(tmp_path):
    source = FakeSource({1: 20, 2: 5})
    a, b = make(tmp_path / "a", source), make(tmp_path / "b", source)
    a.startup(), b.startup()
    b.close()
    assert (tmp_path / "b" / "index" / "collection-2.faiss").exists()
    del source.data[2]
    source.feed = [*source.feed, (source.feed_head() + 1, 2, None, "drop")]
    b.sync()
    assert not (tmp_path / "b" / "index" / "collection-2.faiss").exists()
    assert b.count(2) == 0


def test_ivf_training_runs_beside_the_exact_index_and_misses_no_change(tmp_path, monkeypatch):
    """Crossing ivf_threshold starts training in the background: the exact index serves searches, enrolments and
    erasures meanwhile, and the IVF index swapped in holds exactly the faces that exist then."""
    import threading

    from faceledger.vectors.faiss_index import FaissIndex

    source = FakeSource({1: 990})
    store = make(tmp_path, source, ivf_threshold=1000)
    store.startup()
    assert store.kind(1) == "flat"
    gate, training = threading.Event(), threading.Event()
    ivf = FaissIndex.ivf.__func__

    def slow_ivf(cls, *args, **kwargs):
        training.set()
        assert gate.wait(30)
        return ivf(cls, *args, **kwargs)

    monkeypatch.setattr(FaissIndex, "ivf", classmethod(slow_ivf))
    rng = np.random.default_rng(7)

    def grow(n: int) -> tuple[np.ndarray, np.ndarray]:
        ids, vecs = source.data[1]
        new_ids = np.arange(ids.max() + 1, ids.max() + 1 + n, dtype=np.int64)
        new = rng.normal(size=(n, DIM)).astype(np.float32)
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        source.data[1] = (np.concatenate([ids, new_ids]), np.concatenate([vecs, new]))
        store.add(1, new_ids, new)
        return new_ids, new

    grow(20)  # past the threshold: training starts, and the add returns at once
    assert training.wait(10) and store.kind(1) == "flat"
    ids, vecs = source.data[1]
    assert store.search(1, vecs[:1], 1)[1][0, 0] == ids[0]  # served by the exact index meanwhile
    erased = ids[5:15]
    keep = ~np.isin(ids, erased)
    source.data[1] = (ids[keep], vecs[keep])
    store.remove(1, erased)
    added_ids, added = grow(5)
    gate.set()
    assert store.wait_for_training(30)
    assert store.kind(1) == "ivf"
    held = np.sort(store._index(1).ids())
    assert np.array_equal(held, np.sort(source.data[1][0]))
    assert not np.isin(erased, held).any()
    assert store.search(1, added[:1], 1)[1][0, 0] == added_ids[0]
    store.close()


def test_compressed_ivf_reranks_exactly_and_forgets_erased_faces(tmp_path):
    """Above the threshold the index proposes candidates from 4-bit PQ codes and re-ranks them on the exact
    templates: every score is the exact cosine, each stored face finds itself, an erased face is gone from both
    parts, and all of it survives a save and a load."""
    import faiss

    from faceledger.vectors.faiss_index import FaissIndex

    source = FakeSource({1: 3000})
    ids, vecs = source.data[1]
    index = FaissIndex.build(ids, vecs, DIM, ivf_threshold=1000, probe_fraction=0.125)
    assert index.kind == "ivf" and isinstance(index.index, faiss.IndexIVFPQFastScan)
    assert index.index.code_size < DIM * 4 / 4  # compressed: 4 bits per two dimensions
    queries = vecs[:200] + np.random.default_rng(3).normal(0, 0.02, (200, DIM)).astype(np.float32)
    scores, found = index.search(queries, 5)
    expected = np.take_along_axis(queries @ vecs.T, np.searchsorted(ids, found), axis=1)
    assert np.allclose(scores, expected, atol=1e-5)  # exact cosines, not PQ estimates
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    assert np.mean(found[:, 0] == ids[:200]) >= 0.99
    erased = ids[:50]
    index.remove(erased)
    assert len(index) == 2950 and not np.isin(erased, index.ids()).any()
    assert not np.isin(erased, index.search(vecs[:50], 10)[1]).any()
    path = tmp_path / "c.faiss"
    index.save(path, {"collection_id": 1}, key=KEY)
    loaded, _ = FaissIndex.load(path, 0.125, {"collection_id": 1, "dim": DIM}, key=KEY)
    assert loaded.exact is not None and len(loaded) == 2950
    assert np.array_equal(np.sort(loaded.ids()), np.sort(ids[50:]))
    assert np.array_equal(loaded.search(vecs[50:60], 3)[1], index.search(vecs[50:60], 3)[1])


def test_an_ivf_flat_file_of_an_earlier_version_still_loads(tmp_path):
    import faiss

    from faceledger.vectors.faiss_index import FaissIndex

    source = FakeSource({1: 1500})
    ids, vecs = source.data[1]
    legacy = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 32, faiss.METRIC_INNER_PRODUCT)
    legacy.train(vecs)
    old = FaissIndex(legacy, "ivf", 0.5)
    old.add(ids, vecs)
    old.save(tmp_path / "c.faiss", {"collection_id": 1}, key=KEY)
    loaded, _ = FaissIndex.load(tmp_path / "c.faiss", 0.5, {"collection_id": 1, "dim": DIM}, key=KEY)
    assert loaded.exact is None and isinstance(loaded.index, faiss.IndexIVFFlat)
    assert np.array_equal(np.sort(loaded.ids()), ids)
    assert loaded.search(vecs[:1], 1)[1][0, 0] == ids[0]


def test_a_requests_search_runs_on_one_openmp_thread_and_a_batch_on_every_core():
    """FAISS's idle OpenMP threads spin after each parallel region: a request's one or few queries run on one
    thread (the service runs one request per core; this cost 8 ms of CPU per identify on 2 cores), a batch of
    queries (evaluation) on OpenMP's default; afterwards the thread is back on the default, so its later adds and
    trainings use every core."""
    import threading

    import faiss

    from faceledger.vectors.faiss_index import OMP_THREADS, SMALL_BATCH, FaissIndex

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    index = FaissIndex.flat(16)
    index.add(np.arange(500), vectors)
    during, after = {}, {}

    class Watched:  # OpenMP's setting for the thread's parallel regions while FAISS searches
        def __init__(self, inner):
            self.inner = inner

        def search(self, queries, k):
            during[len(queries)] = faiss.omp_get_max_threads()
            return self.inner.search(queries, k)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    index.index = Watched(index.index)

    def search(n):
        index.search(vectors[:n], 5)
        after[n] = faiss.omp_get_max_threads()

    for n in (1, SMALL_BATCH, 100):
        worker = threading.Thread(target=search, args=(n,))
        worker.start()
        worker.join()
    assert during == {1: 1, SMALL_BATCH: 1, 100: OMP_THREADS}
    assert after == {1: OMP_THREADS, SMALL_BATCH: OMP_THREADS, 100: OMP_THREADS}


def test_ivf_layout_and_the_share_of_lists_a_search_visits(tmp_path):
    """This version's IVF: 2·√n lists coded without residuals, 1/4 of them searched, also once saved and loaded; an
    index of the earlier layout (16·√n lists, a file without a layout) keeps the 1/8 it was measured with;
    FACELEDGER_IVF_PROBE_FRACTION overrides both. The layout is under the file's MAC (format v3); v2 files are read."""
    import faiss

    from faceledger.vectors import persist
    from faceledger.vectors.faiss_index import FaissIndex

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(4000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    new = FaissIndex.ivf(vectors)
    ivf = faiss.extract_index_ivf(new.index)
    assert ivf.nlist == int(2 * np.sqrt(4000)) and not ivf.by_residual and ivf.nprobe == round(ivf.nlist / 4)
    new.add(np.arange(4000), vectors)
    assert (new.search(vectors[:50], 1)[1][:, 0] == np.arange(50)).mean() >= 0.95
    new.save(tmp_path / "c.faiss", {"collection_id": 1})
    loaded, meta = FaissIndex.load(tmp_path / "c.faiss", None, {"collection_id": 1, "dim": 16})
    assert meta["layout"] == 2 and faiss.extract_index_ivf(loaded.index).nprobe == round(ivf.nlist / 4)
    meta_file, saved = tmp_path / "c.json", json.loads((tmp_path / "c.json").read_text())
    for edited in ({k: v for k, v in saved.items() if k != "layout"}, {**saved, "layout": 1}):  # under the MAC
        meta_file.write_text(json.dumps(edited))
        with pytest.raises(persist.IndexRejected):
            FaissIndex.load(tmp_path / "c.faiss", None, {"collection_id": 1, "dim": 16})

    def v2_file(**layout):  # as written before the layout was bound: without one, or with one outside the MAC
        meta = {"collection_id": 1, "kind": "ivf", "count": 4000, "dim": 16, "encrypted": False,
                "format": "faceledger-index-v2", "auth": "sha256"}
        meta["mac"] = persist._mac(None, persist._header(meta), (tmp_path / "c.faiss").read_bytes())
        meta_file.write_text(json.dumps({**meta, **layout}))
        return faiss.extract_index_ivf(FaissIndex.load(tmp_path / "c.faiss", None,
                                                       {"collection_id": 1, "dim": 16})[0].index).nprobe

    assert v2_file() == round(ivf.nlist / 8) and v2_file(layout=2) == round(ivf.nlist / 4)
    for odd in ([2], "2", 7):  # anything unknown in a v2 file reads as the earlier layout
        assert v2_file(layout=odd) == round(ivf.nlist / 8)

    old = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(16), 16, 1000, 8, 4, faiss.METRIC_INNER_PRODUCT)  # 16·√n lists
    old.train(vectors)
    assert faiss.extract_index_ivf(FaissIndex(old, "ivf").index).nprobe == 125
    assert faiss.extract_index_ivf(FaissIndex(old, "ivf", 0.5).index).nprobe == 500
    assert faiss.extract_index_ivf(FaissIndex.ivf(vectors, probe_fraction=0.5).index).nprobe == round(ivf.nlist / 2)
