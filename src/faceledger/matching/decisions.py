"""Decisions, written once: what a search's candidates mean for each face of a probe.

A candidate is a subject scored by its best face. The decision follows the collection's
open-set policy (:class:`~faceledger.matching.openset.OpenSetPolicy`, re-derived for the
gallery's current size on every search): "match", "review" (a possible match for a person to
judge) or "unknown". Under the tenant's human-review guardrail the service decides nothing
("review" with the candidates). Each candidate carries its similarity, the per-comparison FMR
of that similarity, and the search-level FPIR: the share of searches of a gallery this size
in which a stranger would score at least as high with someone. Every front end reports these
values as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from faceledger.matching.calibration import BOUND, Calibration
from faceledger.matching.openset import MATCH, REVIEW, UNKNOWN, OpenSetPolicy, fpir_at

__all__ = ["MATCH", "REVIEW", "UNKNOWN", "Candidate", "IdentifyResult", "ProbeResult", "open_set"]


@dataclass(frozen=True)
class Candidate:
    subject_id: str
    display_name: str | None
    similarity: float
    fmr: float  # per comparison: the share of impostor pairs scoring at least this high
    fmr_basis: str  # "measured", "extrapolated" (impostor tail model) or "bound" (at most this)
    fpir: float  # for this gallery's size: the share of strangers' searches with someone scoring this high
    match: bool | None  # None under human review: the service makes no decision

    @property
    def fmr_is_upper_bound(self) -> bool:
        return self.fmr_basis == BOUND

    def to_dict(self) -> dict:
        return {**asdict(self), "similarity": round(self.similarity, 6), "fmr_is_upper_bound": self.fmr_is_upper_bound}


@dataclass(frozen=True)
class ProbeResult:
    """One face of a probe image and what the gallery says of it."""

    box: list[float]
    quality: dict
    decision: str  # "match", "review" or "unknown"
    subject_id: str | None  # the matched subject when decision == "match"
    candidates: list[Candidate]
    landmarks: list | None = None  # the five points, for front ends that draw or return them

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
    policy: OpenSetPolicy
    faces: list[ProbeResult]
    human_review: bool = False

    def to_dict(self) -> dict:
        return {"collection": self.collection, "model_id": self.model_id, **self.policy.to_dict(),
                "human_review": self.human_review, "faces": [f.to_dict() for f in self.faces]}

    @property
    def audit_decision(self) -> str:
        """The decision as the audit log records it: one entry per face, "match:<subject>" for a match."""
        return ",".join(f.audit_decision for f in self.faces)


def open_set(box: list[float], quality: dict, ranked: Sequence[tuple[str, str | None, float]],
             calibration: Calibration, policy: OpenSetPolicy, *, top_k: int | None = None,
             unseen_bound: float | None = None, human_review: bool = False,
             landmarks: list | None = None) -> ProbeResult:
    """The decision for one face from its ranked (subject id, name, similarity) candidates, best first.

    The decision looks at every subject in ``ranked`` (the second one matters however few are
    shown); ``unseen_bound`` bounds the best score of any subject not in ``ranked``. The result
    lists the first ``top_k`` candidates.
    """
    top = ranked[0][2] if ranked else None
    seconds = [s for s in ((ranked[1][2] if len(ranked) > 1 else None), unseen_bound) if s is not None]
    decision = REVIEW if human_review else policy.decide(top, max(seconds) if seconds else None)
    candidates = []
    for rank, (subject_id, name, similarity) in enumerate(ranked[:top_k]):
        fmr, upper, basis = calibration.fmr_detail(similarity)
        match = None if human_review else (rank == 0 and decision == MATCH)
        candidates.append(Candidate(subject_id, name, similarity, fmr, basis, fpir_at(upper, policy.gallery_faces),
                                    match))
    subject = ranked[0][0] if decision == MATCH else None
    return ProbeResult(box, quality, decision, subject, candidates, landmarks)
