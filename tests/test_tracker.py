"""The face tracker on synthetic boxes and templates with known answers (no models, no data)."""

from __future__ import annotations

import numpy as np

from faceledger.video.tracker import FaceTracker, TrackerSettings, iou


def unit(rng, n=1, d=128):
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def noisy(template, rng, cos=0.9):
    """A template of the same person: cosine about ``cos`` with ``template``."""
    noise = unit(rng)[0]
    noise -= noise @ template * template
    noise /= np.linalg.norm(noise)
    v = cos * template + np.sqrt(1 - cos**2) * noise
    return v / np.linalg.norm(v)


def box(x, y, size=100):
    return [x, y, x + size, y + size]


def run(tracker, frames):
    """frames: list of (time, [(box, template), ...]); returns {track id: [time, ...]} and the ended tracks."""
    seen: dict[int, list[float]] = {}
    ended = []
    for t, faces in frames:
        boxes = np.array([b for b, _ in faces], np.float32).reshape(-1, 4)
        templates = np.array([v for _, v in faces], np.float32).reshape(len(faces), 128)
        update = tracker.update(t, boxes, templates, np.ones(len(faces), np.float32))
        for i, track_id in update.assigned.items():
            seen.setdefault(track_id, []).append((t, i))
        ended += update.ended
    return seen, ended + tracker.finish()


def test_iou_known_values():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    assert np.allclose(iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_two_faces_crossing_keep_their_tracks():
    """Two people walking through each other: where the boxes overlap most, the templates decide."""
    rng = np.random.default_rng(0)
    alice, bob = unit(rng, 2)
    frames = []
    for i in range(21):
        t = i * 0.1
        xa, xb = 20 + i * 20, 420 - i * 20  # they meet at i = 10
        frames.append((t, [(box(xa, 100), noisy(alice, rng)), (box(xb, 110), noisy(bob, rng))]))
    seen, ended = run(FaceTracker(), frames)
    assert len(ended) == 2
    # every frame's first face (alice) went to one track, the second (bob) to the other
    for track_id, hits in seen.items():
        assert len({i for _, i in hits}) == 1, f"track {track_id} switched people"


def test_occlusion_within_the_gap_rejoins_the_track():
    rng = np.random.default_rng(1)
    alice = unit(rng)[0]
    frames = [(i * 0.1, [(box(100 + i * 5, 100), noisy(alice, rng))]) for i in range(10)]
    frames += [(1.0 + i * 0.1, []) for i in range(6)]  # hidden for 0.6 s
    frames += [(1.6 + i * 0.1, [(box(180 + i * 5, 100), noisy(alice, rng))]) for i in range(10)]
    seen, ended = run(FaceTracker(TrackerSettings(max_gap_s=1.0)), frames)
    assert len(ended) == 1 and len(seen) == 1
    assert ended[0].hits == 20 and abs(ended[0].last_time - 2.5) < 1e-6


def test_someone_else_in_the_same_place_is_a_new_track():
    """A face clearly of another person never joins a track, however well its box overlaps."""
    rng = np.random.default_rng(2)
    alice, bob = unit(rng, 2)
    frames = [(i * 0.1, [(box(100, 100), noisy(alice, rng))]) for i in range(5)]
    frames += [(0.5 + i * 0.1, [(box(102, 100), noisy(bob, rng))]) for i in range(5)]
    _, ended = run(FaceTracker(), frames)
    assert len(ended) == 2


def test_one_spurious_detection_is_never_a_track_and_a_long_gap_ends_it():
    rng = np.random.default_rng(3)
    alice, ghost = unit(rng, 2)
    frames = [(0.0, [(box(400, 300), ghost)])]
    frames += [(0.1 + i * 0.1, [(box(100, 100), noisy(alice, rng))]) for i in range(5)]
    frames += [(3.0 + i * 0.1, [(box(100, 100), noisy(alice, rng))]) for i in range(5)]  # 2.5 s later
    _, ended = run(FaceTracker(TrackerSettings(max_gap_s=1.0)), frames)
    assert len(ended) == 2  # alice twice (the gap ended her first track); the ghost never confirmed
    assert [round(t.first_time, 1) for t in ended] == [0.1, 3.0]


def test_best_face_is_the_highest_quality():
    rng = np.random.default_rng(4)
    alice = unit(rng)[0]
    tracker = FaceTracker()
    for i, q in enumerate([1.0, 5.0, 3.0]):
        tracker.update(i * 0.1, np.array([box(100 + i, 100)], np.float32), noisy(alice, rng)[None],
                       np.array([q], np.float32))
    (track,) = tracker.finish()
    assert track.best_quality == 5.0 and abs(track.best_time - 0.1) < 1e-9
