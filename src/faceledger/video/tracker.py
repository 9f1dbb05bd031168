"""Face tracks across sampled frames: box overlap plus template similarity, one assignment per frame.

Each sampled frame's faces (boxes and templates, as arrays) are assigned to the live tracks
by the Hungarian method (scipy) on a cost that mixes the overlap of a face's box with the
track's predicted box (constant velocity) and the cosine similarity of its template with
the track's running template. A face may join a track it no longer overlaps (after an
occlusion, or when the sampling rate is low) only when its template is clearly the same
person's; a face whose template is clearly someone else's never joins a track, however
well the boxes overlap (two people crossing). A track is confirmed after ``min_hits``
frames (a single spurious detection never becomes a track) and ends when its face has not been
seen for ``max_gap_s`` seconds (whatever the sampling rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) intersection over union of x1,y1,x2,y2 boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)).astype(np.float32)


@dataclass
class TrackerSettings:
    min_iou: float = 0.2  # boxes overlapping this much may be the same face (with a template not clearly another's)
    same_person: float = 0.7  # cosine at which a template alone says "the same person" (any distance; 0.5 merged
    # different hikers of person_video_02 whose small, blurred faces look alike: 13 tracks where ByteTrack has 18-20)
    other_person: float = 0.25  # cosine below which a template says "someone else" (never joined); 0.15 let a
    # camera cut in the hamilton clip hand one singer's track to another standing where he stood (cosine 0.18)
    min_hits: int = 3  # frames with the face before a track is confirmed
    max_gap_s: float = 1.0  # seconds a track survives without its face (occlusion, a missed detection)
    template_momentum: float = 0.8  # running template: momentum * old + (1 - momentum) * new


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # last seen, x1 y1 x2 y2
    velocity: np.ndarray  # box change per sampled frame
    template: np.ndarray  # running mean of the face's templates, unit length
    first_time: float
    last_time: float
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    best_quality: float = -1.0
    best_time: float = 0.0
    best_template: np.ndarray | None = None
    best_box: np.ndarray | None = None
    best_index: int = -1  # index of the best face in the frame it came from (for the caller to keep its crop)
    boxes: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (time, box) of each frame with a face

    def predicted(self) -> np.ndarray:
        return self.box + self.velocity * (self.misses + 1)


@dataclass
class FrameUpdate:
    """What one frame changed: tracks confirmed, tracks that got a better face, tracks that ended."""

    confirmed: list[Track] = field(default_factory=list)
    improved: list[Track] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)
    assigned: dict[int, int] = field(default_factory=dict)  # face index in the frame -> track id


class FaceTracker:
    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.s = settings or TrackerSettings()
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, time_s: float, boxes: np.ndarray, templates: np.ndarray, quality: np.ndarray, *,
               cut: bool = False) -> FrameUpdate:
        """Assign one sampled frame's faces (boxes (N,4), unit templates (N,D), a quality score each, higher is
        better) to tracks; returns what changed. ``cut``: the picture changed wholesale since the last frame (a
        camera cut): where a box was says nothing now, only a template that is clearly the same person's joins."""
        out = FrameUpdate()
        keep = []  # first end the tracks whose face has been gone too long: none of them may take a face now
        for track in self.tracks:
            if time_s - track.last_time > self.s.max_gap_s:
                if track.confirmed:
                    out.ended.append(track)
            else:
                keep.append(track)
        self.tracks = keep
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        pairs = self._assign(boxes, templates, cut)
        matched_tracks = set()
        for ti, di in pairs:
            track = self.tracks[ti]
            matched_tracks.add(ti)
            track.velocity = 0.5 * track.velocity + 0.5 * (boxes[di] - track.box) / (track.misses + 1)
            track.box = boxes[di]
            m = self.s.template_momentum
            t = m * track.template + (1 - m) * templates[di]
            track.template = t / max(float(np.linalg.norm(t)), 1e-9)
            track.hits += 1
            track.misses = 0
            track.last_time = time_s
            self._observe(track, time_s, boxes[di], templates[di], float(quality[di]), di, out)
            if not track.confirmed and track.hits >= self.s.min_hits:
                track.confirmed = True
                out.confirmed.append(track)
            out.assigned[di] = track.track_id
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.misses += 1
        new_faces = [d for d in range(len(boxes)) if d not in out.assigned]
        for di in new_faces:
            track = Track(self._next_id, boxes[di], np.zeros(4, np.float32), templates[di], time_s, time_s)
            self._next_id += 1
            self._observe(track, time_s, boxes[di], templates[di], float(quality[di]), di, FrameUpdate())
            if self.s.min_hits <= 1:
                track.confirmed = True
                out.confirmed.append(track)
            self.tracks.append(track)
            out.assigned[di] = track.track_id
        return out

    def finish(self) -> list[Track]:
        """End every live track (the source ended); returns the confirmed ones."""
        ended = [t for t in self.tracks if t.confirmed]
        self.tracks = []
        return ended

    def _observe(self, track: Track, time_s: float, box: np.ndarray, template: np.ndarray, quality: float,
                 index: int, out: FrameUpdate) -> None:
        track.boxes.append((time_s, box))
        if quality > track.best_quality:
            track.best_quality, track.best_time = quality, time_s
            track.best_template, track.best_box, track.best_index = template, box, index
            if track.confirmed:
                out.improved.append(track)

    def _assign(self, boxes: np.ndarray, templates: np.ndarray, cut: bool = False) -> list[tuple[int, int]]:
        if not self.tracks or not len(boxes):
            return []
        overlap = iou(np.stack([t.predicted() for t in self.tracks]), boxes)
        similarity = np.stack([t.template for t in self.tracks]) @ np.asarray(templates, np.float32).T
        allowed = (similarity >= self.s.same_person) | ((overlap >= self.s.min_iou) &
                                                        (similarity >= self.s.other_person) & (not cut))
        cost = 2.0 - overlap - np.clip(similarity, 0, 1)
        cost = np.where(allowed, cost, 1e6)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
