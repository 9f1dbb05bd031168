"""Cameras and video as operations: register a stream or upload a video, watch it, deliver its events.

Guardrails (the surveillance concern): only admin keys register streams and webhooks, only to
hosts and networks the operator allow-listed (``FACELEDGER_STREAM_ALLOWED_HOSTS``); a key's
stream reads a live URL, never a file on the server (files come from the command line or as
uploads). Every stream states its purpose and has its own identification budget per hour; a
``detect-only`` or ``count-only`` stream never touches a gallery. Every identification is the
operations layer's ``identify_face``, audited with the stream's purpose and ``stream:<id>``
as its reference. No frame is stored: uploaded videos are deleted once analysed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from faceledger.errors import FaceledgerError, Forbidden, InvalidArgument, PayloadTooLarge
from faceledger.gallery.db import ProcessLock
from faceledger.gallery.streams import StreamInfo, StreamStore
from faceledger.service import events as ev
from faceledger.service.actor import Actor
from faceledger.service.faceledger import Faceledger
from faceledger.service.webhooks import HostAllowList, WebhookSender, new_secret
from faceledger.video.sources import VideoSource, is_live, probe
from faceledger.video.watch import MODES, TrackWatcher

log = logging.getLogger("faceledger.streams")

STATUS_EVERY_S = 1.0
RESUME_LOCK = int.from_bytes(b"fl-strm\0", "big")  # PostgreSQL advisory lock of the process that resumes streams


def upload_path(filename: str) -> Path:
    """Where an uploaded video waits while it is analysed: alone in a new temporary folder (the service removes the
    folder once the analysis ends), named by the upload's extension."""
    folder = Path(tempfile.mkdtemp(prefix="faceledger-video-"))
    return folder / ("video" + (Path(filename).suffix.lower()[:8] or ".mp4"))


class StreamRunner:
    """One watched source in its own thread: frames to events, events to SQL (and webhooks)."""

    def __init__(self, service: StreamService, info: StreamInfo, source: str, *,
                 on_events: Callable[[list[dict]], None] | None = None, cleanup: Path | None = None) -> None:
        self.service = service
        self.info = info
        self.source = VideoSource(source, fps=info.fps, reconnect=is_live(source))
        self.on_events = on_events
        self.cleanup = cleanup
        self.actor = Actor(info.tenant, info.created_by, info.purpose, reference=f"stream:{info.stream_id}",
                           client="stream")
        identify = self._identify if info.mode == "identify" else None
        self.watcher = TrackWatcher(service.fl.engine, mode=info.mode, identify=identify)
        self.identifications = 0
        self.thread = threading.Thread(target=self.run, name=f"faceledger-stream-{info.stream_id[:8]}", daemon=True)
        self.error: str | None = None

    def _identify(self, template, box, quality) -> dict:
        hour = int(time.time() // 3600)
        if not self.service.fl.gallery.store.count_use(f"stream:{self.info.stream_id}", hour,
                                                       self.info.identify_per_hour):
            return {"decision": "unknown", "searched": False,
                    "reason": f"the stream's identification budget ({self.info.identify_per_hour} an hour) is spent"}
        try:
            result = self.service.fl.identify_face(self.actor, self.info.collection, template, box, quality,
                                                   top_k=3, count_key_limits=False)
        except FaceledgerError as exc:  # the collection deleted, storage unavailable: the track says why, the
            # stream goes on (the refusal is audited by the operations layer)
            return {"decision": "unknown", "searched": False, "reason": f"{exc.code}: {exc.message}"}
        self.identifications += 1
        face = result.faces[0]
        top = face.candidates[0] if face.candidates else None
        return {"decision": face.decision, "searched": True, "subject_id": face.subject_id,
                "similarity": round(top.similarity, 4) if top else None,
                "candidates": [c.to_dict() for c in face.candidates]}

    def status(self) -> dict:
        return {**self.source.status.to_dict(), "live_tracks": self.watcher.live_tracks,
                "tracks": self.watcher.tracks_started, "faces_seen": self.watcher.faces_seen,
                "identifications": self.identifications, "error": self.error}

    def run(self) -> None:
        store = self.service.store
        last_status = 0.0
        state = "ended"
        try:
            for frame in self.source.frames():
                self._emit(self.watcher.process(frame))
                if time.monotonic() - last_status >= STATUS_EVERY_S:
                    store.set_status(self.info.stream_id, self.status())
                    last_status = time.monotonic()
            self._emit(self.watcher.finish())
            state = "stopped" if self.source.stopped else "ended"
        except Exception as exc:  # an unreadable source, a database error: the stream says so
            log.exception("stream %s failed", self.info.stream_id)
            self.error = f"{type(exc).__name__}: {exc}"
            state = "failed"
        finally:
            store.set_state(self.info.stream_id, state, self.status())
            if self.cleanup is not None:  # an uploaded video: never kept once analysed
                shutil.rmtree(self.cleanup, ignore_errors=True)
            self.service._finished(self.info.stream_id)

    def _emit(self, events: list[dict]) -> None:
        if events:
            self.service.store.append(self.info.stream_id, events, deliver=self.info.webhook_url is not None)
            if self.info.webhook_url is not None and self.service.sender is not None:
                self.service.sender.wake()
            if self.on_events is not None:
                self.on_events(events)


class StreamService:
    def __init__(self, fl: Faceledger, *, deliver_webhooks: bool = True) -> None:
        self.fl = fl
        self.settings = fl.settings
        self.store = StreamStore(fl.gallery.store.session)
        self.allowed = HostAllowList(self.settings.stream_allowed_hosts)
        self.sender = WebhookSender(self.store, self.allowed, delays=self.settings.webhook_retry_delays,
                                    timeout=self.settings.webhook_timeout) if deliver_webhooks else None
        self.runners: dict[str, StreamRunner] = {}
        self._lock = threading.Lock()
        self._resumer = ProcessLock(fl.gallery.store.db, RESUME_LOCK, self.settings.home / "streams.lock")

    def start(self) -> None:
        """Deliver pending webhooks and resume the live streams a previous run of this server was watching. Only the
        process holding the deployment's stream lock resumes them (several workers or hosts never watch one camera
        twice); the others only watch the streams registered through them."""
        if self.sender is not None:
            self.sender.start()
        if not self._resumer.acquire():
            return
        for info in self.store.running():
            if info.kind == "stream" and is_live(info.source):
                self._launch(info, info.source)
            else:  # a file being analysed when the process stopped: its upload is gone
                self.store.set_state(info.stream_id, "failed", {**info.status, "error": "the server stopped "
                                                                "during the analysis; upload the video again"})

    def close(self) -> None:
        for runner in list(self.runners.values()):
            runner.source.stop()
        for runner in list(self.runners.values()):
            runner.thread.join(15)
        if self.sender is not None:
            self.sender.stop()
        self._resumer.release()

    # ------------------------------------------------------------------ operations
    def register(self, actor: Actor, *, source: str, purpose: str, collection: str | None = None,
                 mode: str = "identify", fps: float = 10.0, identify_per_hour: int | None = None,
                 webhook_url: str | None = None) -> tuple[StreamInfo, str | None]:
        """Watch a live source (admin only); returns the stream and its webhook secret (shown once)."""
        def admin_live_only() -> None:
            self.fl.authorize(actor, "stream.create")
            if not is_live(source):
                raise InvalidArgument("a stream's source is a live URL (rtsp://, http(s)://); upload files to "
                                      "/v1/videos", source=source)

        info = self._register(actor, source, purpose, collection, mode, fps, identify_per_hour, webhook_url,
                              admin_live_only, via="")
        self._launch(info, source)
        return info, self.store.secret(info.stream_id)[1]

    def _register(self, actor: Actor, source: str, purpose: str, collection: str | None, mode: str, fps: float,
                  identify_per_hour: int | None, webhook_url: str | None, check, *, via: str) -> StreamInfo:
        """The one way a stream comes to be (API or command line): ``check``, the allow-list for a live source and
        the webhook, the record, and its audit record (``stream.create``)."""
        with self.fl._operation("stream.create", actor, collection):
            check()
            if is_live(source):
                self.allowed.check(source, "stream")
            if webhook_url is not None:
                self.allowed.check(webhook_url, "webhook")
            info = self._create(actor, "stream", source, purpose, collection, mode, fps, identify_per_hour,
                                webhook_url)
            self.fl._done(ev.StreamRegistered(actor, collection, decision=f"stream:{info.stream_id} {mode} "
                                              f"{fps:g} fps budget {info.identify_per_hour}/h{via}"))
        return info

    def analyse_video(self, actor: Actor, video: bytes | Path, *, filename: str, purpose: str,
                      collection: str | None = None, mode: str = "identify", fps: float = 5.0,
                      webhook_url: str | None = None) -> tuple[StreamInfo, str | None]:
        """A video file for batch analysis (identify scope in identify mode, detect otherwise), as bytes or as a
        file alone in a temporary folder that the service then owns; the file is kept only while it is
        analysed."""
        if isinstance(video, Path):
            folder, path = video.parent, video
        else:
            path = upload_path(filename)
            folder = path.parent
            path.write_bytes(video)
        try:
            with self.fl._operation("video.create", actor, collection):
                actor.require("identify" if mode == "identify" else "detect")
                size = path.stat().st_size
                if size > self.settings.max_video_bytes:
                    raise PayloadTooLarge(f"the video is larger than {self.settings.max_video_bytes} bytes",
                                          limit=self.settings.max_video_bytes)
                if not size:
                    raise InvalidArgument("the video is empty")
                probe(path)  # a file that is not a readable video is refused now, not failed later
                if webhook_url is not None:
                    actor.require("admin")
                    self.allowed.check(webhook_url, "webhook")
                info = self._create(actor, "video", filename, purpose, collection, mode, fps, None, webhook_url)
                self._launch(info, str(path), cleanup=folder)
                self.fl._done(ev.VideoSubmitted(actor, collection, decision=f"video:{info.stream_id} {mode} "
                                                f"{size} bytes"))
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return info, self.store.secret(info.stream_id)[1]

    def watch(self, actor: Actor, source: str, *, purpose: str, collection: str | None = None,
              mode: str = "identify", fps: float = 10.0, webhook_url: str | None = None,
              on_events: Callable[[list[dict]], None] | None = None) -> StreamRunner:
        """The command line's watch: a file or a live source, run by the caller (``runner.run()``)."""
        info = self._register(actor, source, purpose, collection, mode, fps, None, webhook_url, lambda: None,
                              via=" (command line)")
        runner = StreamRunner(self, info, source, on_events=on_events)
        with self._lock:
            self.runners[info.stream_id] = runner
        return runner

    def get(self, actor: Actor, stream_id: str) -> StreamInfo:
        return self._live(self.store.get(actor.tenant, stream_id))

    def _live(self, info: StreamInfo) -> StreamInfo:
        """``info`` with the status of its runner in this process, fresher than the last status written."""
        runner = self.runners.get(info.stream_id)
        return StreamInfo(**{**info.__dict__, "status": runner.status()}) if runner is not None else info

    def list(self, actor: Actor, *, kind: str | None = None) -> list[StreamInfo]:
        return self.store.list(actor.tenant, kind=kind)

    def stop(self, actor: Actor, stream_id: str) -> StreamInfo:
        """Stop watching (admin); the stream's events stay readable until it is deleted."""
        with self.fl._operation("stream.stop", actor):
            self.fl.authorize(actor, "stream.stop")
            self._stop(actor, stream_id)
            self.fl._done(ev.StreamStopped(actor, decision=f"stream:{stream_id}"))
        return self.store.get(actor.tenant, stream_id)

    def delete(self, actor: Actor, stream_id: str) -> None:
        """Stop and forget a stream with its events and deliveries (admin)."""
        with self.fl._operation("stream.delete", actor):
            self.fl.authorize(actor, "stream.delete")
            self._stop(actor, stream_id)
            self.store.delete(actor.tenant, stream_id)
            self.fl._done(ev.StreamDeleted(actor, decision=f"stream:{stream_id}"))

    def _stop(self, actor: Actor, stream_id: str) -> None:
        info = self.store.get(actor.tenant, stream_id)  # NOT_FOUND for another tenant's stream
        runner = self.runners.get(stream_id)
        if runner is not None:
            runner.source.stop()
            runner.thread.join(15)
        elif info.state == "running":
            self.store.set_state(stream_id, "stopped")

    def _readable(self, actor: Actor, stream_id: str) -> StreamInfo:
        """A stream's record for a reader: an identifying stream's events name people, so reading them takes the
        identify scope (or admin); detect-only and count-only streams, the detect scope."""
        info = self.store.get(actor.tenant, stream_id)
        actor.require("identify" if info.mode == "identify" else "detect")
        return info

    def events(self, actor: Actor, stream_id: str, *, after: int = 0, limit: int = 100) -> list[dict]:
        self._readable(actor, stream_id)
        if not 1 <= limit <= 1000:
            raise InvalidArgument("limit is between 1 and 1000")
        return self.store.events(stream_id, after=after, limit=limit)

    def persons(self, actor: Actor, stream_id: str, *, offset: int = 0, limit: int = 50) -> dict:
        """A video's results: one entry per person-track (from its ended event), paginated."""
        info = self._live(self._readable(actor, stream_id))
        ended = self.store.events(stream_id, after=0, limit=1_000_000, types=["track.ended"])
        found = {e["track_id"]: e for e in self.store.events(stream_id, after=0, limit=1_000_000,
                                                             types=["track.identified"])}
        persons = [{"track_id": e["track_id"], "start": e["started"], "end": e["ended"],
                    "best_frame_time": e["best_frame_time"], "decision": e["decision"],
                    "subject_id": e["subject_id"], "similarity": e["similarity"],
                    "candidates": found.get(e["track_id"], {}).get("candidates", [])} for e in ended]
        return {"stream": info.to_dict(), "total": len(persons), "offset": offset, "limit": limit,
                "persons": persons[offset: offset + limit]}

    def deliveries(self, actor: Actor, *, stream_id: str | None = None, state: str | None = None) -> list[dict]:
        self.fl.authorize(actor, "webhooks.read")
        if stream_id is not None:
            self.store.get(actor.tenant, stream_id)
        return self.store.deliveries(stream_id=stream_id, state=state, tenant=actor.tenant)

    def replay(self, actor: Actor, *, stream_id: str | None = None) -> int:
        """Dead letters back to pending (admin); returns how many."""
        with self.fl._operation("webhooks.replay", actor):
            self.fl.authorize(actor, "webhooks.replay")
            if stream_id is not None:
                self.store.get(actor.tenant, stream_id)
            n = self.store.replay(stream_id=stream_id, tenant=actor.tenant)
            self.fl._done(ev.WebhooksReplayed(actor, decision=f"{n} dead letters"
                                              + (f" of stream:{stream_id}" if stream_id else "")))
        if self.sender is not None:
            self.sender.wake()
        return n

    # ------------------------------------------------------------------ internals
    def _create(self, actor: Actor, kind: str, source: str, purpose: str, collection: str | None, mode: str,
                fps: float, identify_per_hour: int | None, webhook_url: str | None) -> StreamInfo:
        if mode not in MODES:
            raise InvalidArgument(f"mode is one of {', '.join(MODES)}", mode=mode)
        for name, value in (("purpose", purpose), ("source", source), ("collection", collection or ""),
                            ("webhook_url", webhook_url or "")):
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
                raise InvalidArgument(f"{name} holds control characters", field=name)
        if not purpose or not purpose.strip():
            raise InvalidArgument("a stream states its purpose (why these faces are watched)")
        if not 0 < fps <= 30:
            raise InvalidArgument("fps (sampled frames per second) is above 0 and at most 30", fps=fps)
        if mode == "identify":
            if not collection:
                raise InvalidArgument("an identifying stream names the collection it searches")
            actor.require("identify")
            self.fl.gallery.collection(collection, actor.tenant)  # NOT_FOUND now, not in the thread
        else:
            collection = None  # detect-only and count-only never touch a gallery
        budget = self.settings.stream_identify_per_hour if identify_per_hour is None else identify_per_hour
        if budget < 0 or (budget > self.settings.stream_identify_per_hour and not actor.has("admin")):
            raise Forbidden("a stream's identification budget is at most the operator's default "
                            f"({self.settings.stream_identify_per_hour} an hour) without the admin scope")
        with self._lock:
            if sum(1 for r in self.runners.values() if r.thread.is_alive()) >= self.settings.max_streams:
                raise Forbidden(f"this server already watches {self.settings.max_streams} streams "
                                "(FACELEDGER_MAX_STREAMS)")
        return self.store.create(stream_id=str(uuid.uuid4()), kind=kind, tenant=actor.tenant or "default",
                                 collection=collection, source=source, mode=mode, purpose=purpose.strip(),
                                 fps=float(fps), identify_per_hour=budget, webhook_url=webhook_url,
                                 webhook_secret=new_secret() if webhook_url else None, created_by=actor.key_id)

    def _launch(self, info: StreamInfo, source: str, *, cleanup: Path | None = None) -> None:
        runner = StreamRunner(self, info, source, cleanup=cleanup)
        with self._lock:
            self.runners[info.stream_id] = runner
        runner.thread.start()

    def _finished(self, stream_id: str) -> None:
        with self._lock:
            self.runners.pop(stream_id, None)
