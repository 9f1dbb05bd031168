"""Frames from video files and live streams (PyAV: FFmpeg bundled in its wheel), sampled at a set rate.

A file (MP4, MKV, AVI, MOV; H.264, H.265, MJPEG, whatever the bundled FFmpeg decodes) is read
once, as fast as it decodes, each sampled frame stamped with its presentation time. A live
source (``rtsp://``, ``rtsps://``, ``http(s)://`` MJPEG or HLS) is read as it arrives; when it
drops or stalls, it is opened again with exponential backoff (1 s doubling to 30 s), and the
source's status says so (``connecting``, ``live``, ``reconnecting`` with the last error,
``ended``). Timestamps of a live source continue across reconnections (seconds since the
watch began), so tracks and events keep one clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceledger.errors import InvalidArgument

log = logging.getLogger("faceledger.video")

LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
OPEN_TIMEOUT_S = 10.0  # opening and each read may take this long before the source counts as dropped


@dataclass
class Frame:
    time_s: float  # presentation time (files) or seconds since the watch began (live)
    index: int  # sampled frame number
    bgr: np.ndarray


@dataclass
class SourceStatus:
    state: str = "connecting"  # connecting, live, reconnecting, ended, failed
    frames_decoded: int = 0
    frames_sampled: int = 0
    reconnects: int = 0
    last_error: str | None = None
    width: int | None = None
    height: int | None = None
    history: list[str] = field(default_factory=list)

    def set(self, state: str, error: str | None = None) -> None:
        if state != self.state or error:
            self.history.append(f"{time.strftime('%H:%M:%S')} {state}" + (f": {error}" if error else ""))
            del self.history[:-20]
        self.state, self.last_error = state, error if error else self.last_error

    def to_dict(self) -> dict:
        return {"state": self.state, "frames_decoded": self.frames_decoded, "frames_sampled": self.frames_sampled,
                "reconnects": self.reconnects, "last_error": self.last_error, "width": self.width,
                "height": self.height, "history": list(self.history)}


def is_live(source: str) -> bool:
    return source.lower().startswith(LIVE_SCHEMES)


class VideoSource:
    """Sampled frames of one file or live stream; ``stop()`` ends the iteration from another thread."""

    def __init__(self, source: str | Path, *, fps: float = 10.0, max_side: int = 1920,
                 reconnect: bool | None = None, backoff: tuple[float, float] = (1.0, 30.0)) -> None:
        if fps <= 0 or fps > 60:
            raise InvalidArgument("fps (sampled frames per second) is between 0 and 60", fps=fps)
        self.source = str(source)
        self.live = is_live(self.source)
        if not self.live and not Path(self.source).is_file():
            raise InvalidArgument(f"no video file at {self.source}", source=self.source)
        self.fps = fps
        self.max_side = max_side
        self.reconnect = self.live if reconnect is None else reconnect
        self.backoff = backoff
        self.status = SourceStatus()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def frames(self) -> Iterator[Frame]:
        import av  # noqa: PLC0415 (PyAV loads FFmpeg: only when video is used)

        delay = self.backoff[0]
        started = time.monotonic()
        sampled = 0
        next_time = 0.0
        while not self._stop.is_set():
            try:
                options = {"rtsp_transport": "tcp", "timeout": str(int(OPEN_TIMEOUT_S * 1e6))} \
                    if self.source.lower().startswith(("rtsp://", "rtsps://")) else {}
                with av.open(self.source, options=options, timeout=OPEN_TIMEOUT_S if self.live else None) as container:
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    self.status.width, self.status.height = stream.codec_context.width, stream.codec_context.height
                    self.status.set("live" if self.live else "reading")
                    delay = self.backoff[0]
                    offset = None
                    for frame in container.decode(stream):
                        if self._stop.is_set():
                            break
                        self.status.frames_decoded += 1
                        if self.live:
                            t = time.monotonic() - started
                        else:
                            pts = frame.time if frame.time is not None else self.status.frames_decoded / 30.0
                            offset = pts if offset is None else offset
                            t = pts - offset
                        if t + 1e-6 < next_time:
                            continue
                        next_time = max(next_time + 1.0 / self.fps, t) if self.live else next_time + 1.0 / self.fps
                        sampled += 1
                        self.status.frames_sampled = sampled
                        yield Frame(float(t), sampled, self._bgr(frame))
                if self._stop.is_set() or not self.reconnect:
                    break
                self.status.set("reconnecting", "the source ended")
            except av.error.FFmpegError as exc:  # unreadable file, refused connection, dropped stream, timeout
                if not self.reconnect:
                    self.status.set("failed", f"{type(exc).__name__}: {exc}")
                    raise InvalidArgument(f"cannot read video from {self.source}: {exc}", source=self.source) from exc
                self.status.set("reconnecting", f"{type(exc).__name__}: {exc}")
            self.status.reconnects += 1
            log.warning("video source %s dropped (%s); reconnecting in %.0f s", self.source, self.status.last_error,
                        delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.backoff[1])
        if self.status.state != "failed":
            self.status.set("ended")

    def _bgr(self, frame) -> np.ndarray:
        w, h = frame.width, frame.height
        scale = min(1.0, self.max_side / max(w, h))
        if scale < 1.0:  # scaled in FFmpeg's swscale, before any copy into Python
            return frame.to_ndarray(format="bgr24", width=int(w * scale) // 2 * 2, height=int(h * scale) // 2 * 2)
        return frame.to_ndarray(format="bgr24")


def probe(path: str | Path, *, max_pixels: int = 4096 * 2160) -> dict:
    """What a video file holds (codec, size, duration), or InvalidArgument when it is not a readable video: checked
    before a video is accepted, so a bad upload is refused at once rather than failing later."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidArgument("the file has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                raise InvalidArgument("the video stream has no frame size")
            if width * height > max_pixels:
                raise InvalidArgument(f"frames of {width}x{height} are larger than {max_pixels} pixels",
                                      width=width, height=height)
            for _frame in container.decode(stream):  # one frame must decode
                break
            else:
                raise InvalidArgument("no frame of the video could be decoded")
            duration = float(container.duration) / 1e6 if container.duration else None
            return {"codec": stream.codec_context.name, "width": width, "height": height, "seconds": duration}
    except av.error.FFmpegError as exc:
        raise InvalidArgument(f"not a readable video: {exc}") from exc
