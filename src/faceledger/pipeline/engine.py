"""The face engine: image -> faces (boxes, landmarks, quality) -> templates. Everything above calls this."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from faceledger.config import Settings, get_settings
from faceledger.errors import ManyFaces, NoFace
from faceledger.imaging import ImageInput, decode_at_least, decode_image
from faceledger.models.detections import Detections
from faceledger.models.dlib_resnet import DlibResnet
from faceledger.models.files import resolve
from faceledger.models.sface import OnnxRecognizer, l2_normalize
from faceledger.models.yunet import YuNet
from faceledger.pipeline.align import align_all, crop_scale
from faceledger.pipeline.profiles import PROFILES, Component, Profile
from faceledger.pipeline.quality import Quality, QualityLimits, assess


@dataclass
class FaceAnalysis:
    """Every face found in one image, as arrays, with quality and (optionally) templates."""

    width: int
    height: int
    detections: Detections
    quality: list[Quality]
    templates: np.ndarray | None  # (N, D) unit vectors, or None when not embedded
    model_id: str

    def __len__(self) -> int:
        return len(self.detections)

    def to_dict(self, *, include_templates: bool = False) -> dict:
        faces = []
        for i in range(len(self)):
            face = {
                "box": [round(float(v), 1) for v in self.detections.boxes[i]],
                "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.detections.landmarks[i]],
                "confidence": round(float(self.detections.scores[i]), 4),
                "quality": self.quality[i].to_dict(),
            }
            if include_templates and self.templates is not None:
                face["template"] = [round(float(v), 6) for v in self.templates[i]]
            faces.append(face)
        return {"width": self.width, "height": self.height, "model_id": self.model_id, "faces": faces}


@dataclass
class Components:
    """Raw per-recognizer embeddings for N faces, before a profile combines them."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # "sface", "sface_flip", "dlib", ...

    def template(self, components: tuple[Component, ...]) -> np.ndarray:
        parts = []
        for c in components:
            v = self.vectors[c.recognizer]
            if c.flip:
                v = v + self.vectors[c.recognizer + "_flip"]
            parts.append(l2_normalize(v))
        return l2_normalize(np.concatenate(parts, axis=1))


class FaceEngine:
    """Detector, recognizers and quality limits for one profile, loaded lazily, thread-safe."""

    def __init__(self, settings: Settings | None = None, profile: str | None = None) -> None:
        self.settings = settings or get_settings()
        self.profile: Profile = PROFILES[profile or self.settings.profile]
        s = self.settings
        self.limits = QualityLimits.from_settings(s)
        self.detector = YuNet(resolve("yunet", model_dir=s.model_dir, filename=s.detector_file), threads=s.threads,
                              device=s.device)
        custom = s.model_dir is not None and s.recognizer_file
        self._recognizers: dict[str, OnnxRecognizer | DlibResnet] = {
            "sface": OnnxRecognizer(
                resolve("sface", model_dir=s.model_dir, filename=s.recognizer_file), threads=s.threads,
                batch=s.embed_batch, mean=s.recognizer_mean if custom else 0.0, std=s.recognizer_std if custom else 1.0,
                device=s.device,
            )
        }
        self._dlib_lock = threading.Lock()

    # models ---------------------------------------------------------------
    def recognizer(self, name: str) -> OnnxRecognizer | DlibResnet:
        if name not in self._recognizers:
            with self._dlib_lock:
                if name not in self._recognizers:
                    s = self.settings
                    self._recognizers[name] = DlibResnet(resolve("dlib_resnet"), resolve("dlib_shape5"),
                                                         threads=s.threads, batch=s.embed_batch, device=s.device)
        return self._recognizers[name]

    @property
    def model_id(self) -> str:
        return model_id_for(self, self.profile.components)

    def load(self) -> None:
        """Load every model of the profile now; raises ModelFileError naming a bad file."""
        self.detector.load()
        for c in self.profile.components:
            self.recognizer(c.recognizer).load()

    def describe(self) -> dict:
        models = {"detector": self.detector.model}
        models.update({c.recognizer: self.recognizer(c.recognizer).model for c in self.profile.components})
        runners = {"detector": self.detector}
        runners.update({c.recognizer: self.recognizer(c.recognizer) for c in self.profile.components})
        return {
            "profile": self.profile.name, "description": self.profile.description, "model_id": self.model_id,
            "device": self.settings.device,
            "models": {k: {"file": str(m.path), "sha256": m.sha256, "bundled": m.bundled,
                           "runs_on": runners[k].active_providers} for k, m in models.items()},
        }

    # pipeline ---------------------------------------------------------------
    def decode(self, image: ImageInput) -> np.ndarray:
        return decode_image(image, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)

    def detect(self, bgr: np.ndarray, *, score_threshold: float | None = None, upscale: float = 1.0) -> Detections:
        s = self.settings
        return self.detector.detect(
            bgr, score_threshold=s.detect_score if score_threshold is None else score_threshold,
            nms_threshold=s.detect_nms, max_side=s.detect_max_side, upscale=upscale, max_faces=s.max_faces,
        ).order_by_area()

    def components(self, bgr: np.ndarray, detections: Detections, wanted: tuple[Component, ...] | None = None,
                   crops: np.ndarray | None = None) -> Components:
        """Raw embeddings of each face for the wanted components (default: the profile's)."""
        out = Components()
        for c in wanted or self.profile.components:
            model = self.recognizer(c.recognizer)
            if isinstance(model, DlibResnet):
                faces = model.chips(bgr, detections)
                embed = model.embed_chips
            else:
                faces = align_all(bgr, detections.landmarks) if crops is None else crops
                embed = model.embed
            if c.flip:
                both = embed(np.concatenate([faces, faces[:, :, ::-1]]))
                out.vectors[c.recognizer], out.vectors[c.recognizer + "_flip"] = both[: len(faces)], both[len(faces):]
            else:
                out.vectors[c.recognizer] = embed(faces)
        return out

    def embed(self, bgr: np.ndarray, detections: Detections, crops: np.ndarray | None = None) -> np.ndarray:
        """(N, D) templates of the profile for the given faces."""
        return self.components(bgr, detections, crops=crops).template(self.profile.components)

    def analyze(self, image: ImageInput, *, embed: bool = True) -> FaceAnalysis:
        """Decode, detect, align, assess and (optionally) embed every face of an image.

        A large JPEG is decoded reduced (``reduced_decode``), no smaller than the detector's input; when a face found
        there is too small for its crops, or none is found, the image is decoded whole and analysed exactly as without
        the reduction.
        Coordinates are always the whole image's."""
        s = self.settings
        view = decode_at_least(image, s.detect_max_side if s.reduced_decode else 0, max_bytes=s.max_image_bytes,
                               max_pixels=s.max_image_pixels)
        bgr = view.bgr
        found = self.detect(bgr)  # in bgr's pixels
        if view.reduced and (len(found) == 0 or self._too_small(found.landmarks)):
            bgr = view.whole()
            found = self.detect(bgr)
        reduced = view.reduced and bgr is view.bgr
        detections = found.mapped(view.k, view.offset, (view.width, view.height)) if reduced else found
        crops = align_all(bgr, found.landmarks)
        quality = assess(detections, crops, self.limits)
        templates = self.embed(bgr, found, crops) if embed and len(detections) else None
        return FaceAnalysis(view.width, view.height, detections, quality, templates, self.model_id)

    def _too_small(self, landmarks: np.ndarray) -> bool:
        """Whether any face would be enlarged into one of the profile's crops (so more pixels would show more)."""
        need = max(self.recognizer(c.recognizer).face_scale for c in self.profile.components)
        return any(crop_scale(lm) * need > 1.0 for lm in landmarks)

    def single_face(self, image: ImageInput, *, face: int | None = None) -> tuple[FaceAnalysis, int]:
        """The analysis and the index of the one face an operation is about.

        Refuses with NoFace when there is none and ManyFaces when there are several,
        unless ``face`` says which (an index into the faces ordered largest first).
        """
        analysis = self.analyze(image)
        n = len(analysis)
        if n == 0:
            raise NoFace("no face was found in the image")
        if face is not None:
            if not 0 <= face < n:
                raise ManyFaces(f"face {face} was asked for, but the image has {n} face(s)", faces=n)
            return analysis, face
        if n > 1:
            raise ManyFaces(f"the image has {n} faces; say which one (0 is the largest)", faces=n,
                            boxes=[[round(float(v), 1) for v in b] for b in analysis.detections.boxes])
        return analysis, 0


def model_id_for(engine: FaceEngine, components: tuple[Component, ...]) -> str:
    """A stable id naming the exact files and options that produce a template."""
    parts = []
    for c in components:
        m = engine.recognizer(c.recognizer).model
        parts.append(f"{m.path.stem}@{m.sha256[:12]}{'+flip' if c.flip else ''}")
    return "|".join(parts)
