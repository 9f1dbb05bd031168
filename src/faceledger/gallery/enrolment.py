"""Enrolment rules, written once: which face of an image is enrolled, and what consent allows it."""

from __future__ import annotations

import datetime as dt
import re

import cv2
import numpy as np

from faceledger.errors import ConsentRequired, EnrollmentRefused, InvalidArgument, ManyFaces, NoFace
from faceledger.gallery.records import Consent, NewFace, StoredConsent, iso
from faceledger.gallery.store import aware
from faceledger.pipeline.align import align
from faceledger.pipeline.engine import FaceAnalysis, FaceEngine


def boxes(analysis: FaceAnalysis) -> list[list[float]]:
    return [[round(float(v), 1) for v in b] for b in analysis.detections.boxes]


def enrolment_face(engine: FaceEngine, bgr: np.ndarray, digest: str, face: int | None, store_crops: bool) -> NewFace:
    """The one face of an image to enrol.

    The faces that pass the quality limits are candidates; exactly one must remain unless
    ``face`` picks one (an index into the faces, largest first), which must pass too.
    """
    analysis = engine.analyze(bgr)
    if len(analysis) == 0:
        raise NoFace("no face was found in the image")
    if face is not None:
        if not 0 <= face < len(analysis):
            raise InvalidArgument(f"face {face} asked for, the image has {len(analysis)}", faces=len(analysis))
        chosen = face
        if not analysis.quality[chosen].passed:
            raise EnrollmentRefused("the chosen face fails the quality limits",
                                    reasons=[r.value for r in analysis.quality[chosen].reasons])
    else:
        passing = [i for i, q in enumerate(analysis.quality) if q.passed]
        if not passing:
            raise EnrollmentRefused("no face passes the quality limits",
                                    reasons=sorted({r.value for q in analysis.quality for r in q.reasons}),
                                    faces=[q.to_dict() for q in analysis.quality])
        if len(passing) > 1:
            raise ManyFaces(f"{len(passing)} faces pass the quality limits; say which one (0 is the largest)",
                            faces=len(analysis), boxes=boxes(analysis))
        chosen = passing[0]
    crop = None
    if store_crops:
        crop = cv2.imencode(".jpg", align(bgr, analysis.detections.landmarks[chosen]))[1].tobytes()
    return NewFace(digest, analysis.templates[chosen], analysis.quality[chosen].to_dict(), boxes(analysis)[chosen],
                   crop, [int(bgr.shape[1]), int(bgr.shape[0])])


def check_consent(require_consent: bool, collection: str, stored: StoredConsent | None, given: Consent | None,
                  now: dt.datetime) -> None:
    """Refuse an enrolment that no valid consent record covers (a new record, or the subject's own)."""
    if given is not None and given.expires_at is not None and aware(given.expires_at) <= now:
        raise ConsentRequired("the consent record has already expired", expires_at=iso(given.expires_at))
    if not require_consent or given is not None:
        return
    if stored is None or stored.basis is None:
        raise ConsentRequired(f"collection '{collection}' requires a consent record to enrol")
    if stored.expires_at is not None and stored.expires_at <= now:
        raise ConsentRequired("the subject's consent has expired; record a new one", expires_at=iso(stored.expires_at))


# characters that cannot travel in one URL path segment, and control characters
_UNFIT = re.compile(r"[/\\?#%\x00-\x1f\x7f]")


def check_name(value: str, what: str, longest: int) -> None:
    """An id a caller chose (a subject id, a collection name): it must be usable as one URL path segment, so
    that whatever was created can be read and erased through every front end."""
    if (not isinstance(value, str) or not 1 <= len(value) <= longest or value.strip() != value
            or _UNFIT.search(value) or value in (".", "..")):
        raise InvalidArgument(f"a {what} has 1 to {longest} characters, no surrounding spaces, and none of "
                              "/ \\ ? # % or control characters", field=what)


def check_subject_id(subject_id: str) -> None:
    check_name(subject_id, "subject id", 256)
