"""Percent similarities for clients that threshold on one (Rekognition's 0-100, CompreFace's 0-1), derived from
calibrated false-positive rates so that each value means a stated error rate.

faceledger's own answers carry the calibrated rates. Clients written for other services compare a
"similarity" with a fixed number instead (Rekognition: 80 by default, 99 advised for consequential
uses). Here that number is a monotone function of the chance that someone else scores as high:

    percent = 80 + (19 / 3) * (-3 - log10(rate))       clipped to [0, 100]

so 80 means a rate of 1e-3 and 99 a rate of 1e-6 (19/3 points per decade). ``rate`` is, for a 1:1
comparison (CompareFaces, verify), its false-match rate; for a search of a gallery of N faces
(SearchFaces, recognize), the chance that a search for someone not enrolled reaches this score
(FPIR at N faces), so a client's fixed threshold keeps its stranger-match rate at any gallery size.
The rate is the upper confidence bound of the calibration (conservative where it is extrapolated).
"""

from __future__ import annotations

import math

ANCHOR_PERCENT = 80.0
ANCHOR_RATE = 1e-3
PER_DECADE = 19.0 / 3.0  # 99 <-> 1e-6


def percent(rate: float) -> float:
    """The similarity (0-100) of a false-positive rate."""
    if rate <= 0.0:
        return 100.0
    value = ANCHOR_PERCENT + PER_DECADE * (math.log10(ANCHOR_RATE) - math.log10(min(rate, 1.0)))
    return min(100.0, max(0.0, value))


def rate(similarity: float) -> float:
    """The false-positive rate a similarity (0-100) stands for: the inverse of ``percent`` (rates above 1 mean
    every score passes)."""
    return 10.0 ** (math.log10(ANCHOR_RATE) - (similarity - ANCHOR_PERCENT) / PER_DECADE)
