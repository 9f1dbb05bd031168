"""Test videos with ground truth: real faces from the data folder, moving over a background, entering and leaving at
known times (written with PyAV's bundled libx264)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Walker:
    """One face crossing the picture: its photo, when it enters and leaves (s), its row and direction."""

    name: str  # who it is (the LFW person), the truth a track is checked against
    photo: Path
    enter: float
    leave: float
    y: int
    left_to_right: bool = True
    size: int = 130


def face_patch(photo: Path, size: int) -> np.ndarray:
    """The central part of an LFW photo (the face and some hair and background), resized."""
    img = cv2.imread(str(photo))
    h, w = img.shape[:2]
    crop = img[int(h * 0.2): int(h * 0.8), int(w * 0.22): int(w * 0.78)]
    return cv2.resize(crop, (size, int(size * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_AREA)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth textured background (no faces): blurred noise over a gradient."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 9)
    ramp = np.linspace(60, 180, width, dtype=np.float32)[None, :, None]
    return np.clip(0.5 * noise + 0.5 * ramp, 0, 255).astype(np.uint8)


def render(walkers: list[Walker], path: Path, *, seconds: float, fps: int = 25, width: int = 640,
           height: int = 480, codec: str = "libx264") -> Path:
    """Write the clip; each walker crosses the full width between its enter and leave times."""
    import av

    bg = background(width, height)
    patches = {w.name: face_patch(w.photo, w.size) for w in walkers}
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for i in range(int(seconds * fps)):
            t = i / fps
            frame = bg.copy()
            for w in walkers:
                if not w.enter <= t < w.leave:
                    continue
                patch = patches[w.name]
                ph, pw = patch.shape[:2]
                progress = (t - w.enter) / (w.leave - w.enter)
                if not w.left_to_right:
                    progress = 1 - progress
                x = int(progress * (width - pw))  # fully inside the picture from its first frame to its last
                y = w.y
                frame[y: y + ph, x: x + pw] = patch[: height - y, : width - x]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
