"""Decisions, written once: what a search's candidates mean for each face of a probe.

A candidate is a subject scored by its best face. The top candidate is a "match" when its
similarity reaches the threshold of the target false-match rate; under human review the
service decides nothing ("review": candidates for a person to judge). Every front end
reports these values as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from faceledger.matching.calibration import Calibration

MATCH, UNKNOWN, REVIEW = "match", "unknown", "review"


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    display_name: str | None
    similarity: float
    fmr: float
    fmr_is_upper_bound: bool
    match: bool | None  # None under human review: the service makes no decision

    def to_dict(self) -> dict:
        return {**asdict(self), "similarity": round(self.similarity, 6)}


@dataclass(frozen=True)
class ProbeResult:
    """One face of a probe image and what the gallery says of it."""

    box: list[float]
    quality: dict
    decision: str  # "match", "unknown", or "review" when the tenant requires human review
    subject_id: str | None  # the matched subject when decision == "match"
    candidates: list[Candidate]

    def to_dict(self) -> dict:
        return {"box": self.box, "quality": self.quality, "decision": self.decision, "subject_id": self.subject_id,
                "candidates": [c.to_dict() for c in self.candidates]}

    @property
    def audit_decision(self) -> str:
        return f"match:{self.subject_id}" if self.decision == MATCH else self.decision


@dataclass(frozen=True)
class IdentifyResult:
    collection: str
    model_id: str
    target_fmr: float
    threshold: float
    faces: list[ProbeResult]

    def to_dict(self) -> dict:
        return {"collection": self.collection, "model_id": self.model_id, "target_fmr": self.target_fmr,
                "threshold": round(self.threshold, 6), "faces": [f.to_dict() for f in self.faces]}

    @property
    def audit_decision(self) -> str:
        """The decision as the audit log records it: one entry per face, "match:<subject>" for a match."""
        return ",".join(f.audit_decision for f in self.faces)


def open_set(box: list[float], quality: dict, ranked: Sequence[tuple[str, str | None, float]],
             calibration: Calibration, threshold: float, *, human_review: bool = False) -> ProbeResult:
    """The decision for one face from its ranked (subject id, name, similarity) candidates."""
    candidates = []
    for subject_id, name, similarity in ranked:
        fmr, bound = calibration.fmr(similarity)
        candidates.append(Candidate(subject_id, name, similarity, fmr, bound,
                                    None if human_review else similarity >= threshold))
    if human_review:
        return ProbeResult(box, quality, REVIEW, None, candidates)
    top = candidates[0] if candidates and candidates[0].match else None
    return ProbeResult(box, quality, MATCH if top else UNKNOWN, top.subject_id if top else None, candidates)
