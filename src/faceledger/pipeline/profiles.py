"""Model profiles: which recognizers make a template, and whether each also sees the mirror image."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Component:
    recognizer: str  # "sface" (or a model_dir recognizer) or "dlib"
    flip: bool  # add the horizontally flipped face's embedding (test-time augmentation)


@dataclass(frozen=True)
class Profile:
    name: str
    components: tuple[Component, ...]
    description: str


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("fast", (Component("sface", False),),
                "SFace int8, 128-d. The default: the throughput target with LFW accuracy above 99.15%."),
        Profile("accurate", (Component("sface", True), Component("dlib", False)),
                "SFace (with its mirror image) and dlib ResNet fused as one 256-d template (cosine = mean of the "
                "two). dlib's own flip would add 0.03 points on LFW for 70% more time, so it is left out."),
    )
}
