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
                "SFace, 128-d (the model zoo's int8-stored weights, run in float32). The default: LFW 99.32%."),
        Profile("accurate", (Component("sface", False), Component("dlib", False)),
                "SFace and dlib ResNet fused as one 256-d template (cosine = mean of the two). Adding the mirror "
                "images gains 0.05-0.08 points on LFW for 12-80% more time, so they are left out."),
    )
}
