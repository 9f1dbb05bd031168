"""From sampled frames to track events: detect, embed, track, and identify once per track.

``TrackWatcher`` turns each sampled frame into face tracks (``FaceTracker``) and asks its
``identify`` callback (the operations layer's search, audited there) about a track once: when
the track is confirmed, with its best face so far (best by size, detector confidence and
sharpness; faces meeting the enrolment quality limits rank far above any that do not). It
asks again only when the track later shows a markedly better face (``reidentify_gain`` times
the quality used) and the answer so far was not a match, at most ``max_identifications``
times. A track whose faces are all smaller than half the enrolment minimum is never searched:
it ends "unknown" with that reason. ``count-only`` and ``detect-only`` watchers never identify at all.

Events (dicts, JSON-ready): ``track.started``, ``track.identified`` (decision match / review
with the candidate), ``track.unknown``, ``track.ended`` (duration, best frame time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from faceledger.pipeline.align import align_all
from faceledger.pipeline.quality import Quality, assess
from faceledger.video.sources import Frame
from faceledger.video.tracker import FaceTracker, Track, TrackerSettings

MODES = ("identify", "detect-only", "count-only")
CUT_DISTANCE = 0.3  # histogram distance of a camera cut (see TrackWatcher._cut)

# identify(template, box, quality dict) -> {"decision": "match" | "review" | "unknown", "subject_id": ..., ...}
Identify = Callable[[np.ndarray, list[float], dict], dict]


def quality_score(q: Quality) -> float:
    """Higher is a better face to search with: size times detector confidence, sharpness counted, faces that fail
    the quality limits far below any that pass."""
    score = q.face_px * q.confidence * (0.5 + 0.5 * min(1.0, q.sharpness / 200.0))
    return score if q.passed else score * 1e-3


@dataclass
class TrackState:
    identifications: int = 0
    used_quality: float = 0.0
    decision: str | None = None
    subject_id: str | None = None
    similarity: float | None = None
    reason: str | None = None


class TrackWatcher:
    def __init__(self, engine, *, mode: str = "identify", identify: Identify | None = None,
                 tracker: TrackerSettings | None = None, reidentify_gain: float = 1.5,
                 max_identifications: int = 3) -> None:
        if mode not in MODES:
            raise ValueError(f"mode is one of {MODES}")
        if mode == "identify" and identify is None:
            raise ValueError("an identifying watcher needs an identify callback")
        self.engine = engine
        self.mode = mode
        self.identify = identify
        self.tracker = FaceTracker(tracker)
        self.reidentify_gain = reidentify_gain
        self.max_identifications = max_identifications
        # a track is searched with its best face once that face is at least half the enrolment minimum (faces that
        # fail the enrolment limits are still searched, as a still image would be, and rank far below any that pass)
        self.min_search_px = 0.5 * engine.limits.min_face_px
        self.states: dict[int, TrackState] = {}
        self.faces_seen = 0
        self.tracks_started = 0
        self._hist: np.ndarray | None = None
        self._best: dict[int, Quality] = {}

    def _cut(self, bgr: np.ndarray) -> bool:
        """Whether the picture changed wholesale since the last sampled frame (a camera cut): the Bhattacharyya
        distance of the frames' hue-saturation histograms above ``CUT_DISTANCE``. Measured on the shared clips:
        the hamilton clip's three cuts 0.40-0.56, every other pair of frames (walking, panning) at most 0.20."""
        small = cv2.resize(bgr, (64, 48), interpolation=cv2.INTER_AREA)
        hist = cv2.calcHist([cv2.cvtColor(small, cv2.COLOR_BGR2HSV)], [0, 1], None, [16, 8], [0, 180, 0, 256])
        hist = cv2.normalize(hist, hist).flatten()
        previous, self._hist = self._hist, hist
        return previous is not None and cv2.compareHist(previous, hist, cv2.HISTCMP_BHATTACHARYYA) > CUT_DISTANCE

    @property
    def live_tracks(self) -> int:
        return sum(1 for t in self.tracker.tracks if t.confirmed)

    def process(self, frame: Frame) -> list[dict]:
        """One sampled frame in, the events it caused out."""
        bgr = frame.bgr
        detections = self.engine.detect(bgr)
        n = len(detections)
        self.faces_seen += n
        crops = align_all(bgr, detections.landmarks) if n else None
        quality = assess(detections, crops, self.engine.limits) if n else []
        templates = self.engine.embed(bgr, detections, crops) if n else np.zeros((0, 1), np.float32)
        update = self.tracker.update(frame.time_s, detections.boxes, templates,
                                     np.array([quality_score(q) for q in quality], np.float32),
                                     cut=self._cut(bgr))
        live = {t.track_id: t for t in self.tracker.tracks}
        for i in range(n):  # the quality record of each track's best face
            track = live.get(update.assigned[i])
            if track is not None and track.best_time == frame.time_s and track.best_index == i:
                self._best[track.track_id] = quality[i]
        events: list[dict] = []
        for track in update.confirmed:
            self.tracks_started += 1
            self.states[track.track_id] = TrackState()
            events.append(self._event("track.started", track, frame.time_s, box=_box(track.box)))
        for track in {t.track_id: t for t in update.confirmed + update.improved}.values():
            if track.confirmed:
                events += self._maybe_identify(track, frame.time_s)
        for track in update.ended:
            events += self._end(track)
        return events

    def finish(self) -> list[dict]:
        """The source ended: end every live track."""
        events: list[dict] = []
        for track in self.tracker.finish():
            events += self._end(track)
        return events

    # ------------------------------------------------------------------ per track
    def _maybe_identify(self, track: Track, time_s: float) -> list[dict]:
        state = self.states[track.track_id]
        if self.mode != "identify" or state.decision == "match" or state.identifications >= self.max_identifications:
            return []
        quality = self._best.get(track.track_id)
        if quality is None or quality.face_px < self.min_search_px:
            return []  # the track's best face so far, and only one big enough
        if state.identifications and track.best_quality < state.used_quality * self.reidentify_gain:
            return []
        answer = self.identify(track.best_template, _box(track.best_box), quality.to_dict())
        state.identifications += 1
        state.used_quality = track.best_quality
        state.decision, state.subject_id = answer.get("decision"), answer.get("subject_id")
        state.similarity = answer.get("similarity")
        kind = "track.unknown" if state.decision == "unknown" else "track.identified"
        return [self._event(kind, track, time_s, frame_time=track.best_time, attempt=state.identifications,
                            **answer)]

    def _end(self, track: Track) -> list[dict]:
        state = self.states.pop(track.track_id, TrackState())
        self._best.pop(track.track_id, None)
        events = []
        if self.mode == "identify" and state.identifications == 0:
            state.decision = "unknown"
            state.reason = f"no face of this track was {self.min_search_px:.0f} px or larger: not searched"
            events.append(self._event("track.unknown", track, track.last_time, decision="unknown",
                                      reason=state.reason, searched=False))
        events.append(self._event(
            "track.ended", track, track.last_time, started=round(track.first_time, 3),
            ended=round(track.last_time, 3), duration=round(track.last_time - track.first_time, 3),
            frames=track.hits, best_frame_time=round(track.best_time, 3), decision=state.decision,
            subject_id=state.subject_id, similarity=state.similarity))
        return events

    @staticmethod
    def _event(kind: str, track: Track, time_s: float, **fields) -> dict:
        return {"type": kind, "track_id": track.track_id, "time": round(float(time_s), 3), **fields}


def _box(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]
