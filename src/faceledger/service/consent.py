"""Consent records as front ends receive them, parsed once."""

from __future__ import annotations

import datetime as dt

from faceledger.errors import InvalidArgument
from faceledger.gallery.records import Consent


def consent_record(basis: str | None, reference: str | None = None, expires_at: dt.datetime | None = None,
                   given_at: dt.datetime | None = None) -> Consent | None:
    """A consent record from its parts, or None when no basis is given (and nothing else is).

    A time without an offset is read as UTC. A reference or an expiry without a legal basis
    is refused: it would look like consent without saying on what ground.
    """
    if basis is None or not str(basis).strip():
        if reference or expires_at or given_at:
            raise InvalidArgument("a consent reference or expiry needs a consent basis (e.g. explicit-consent)")
        return None
    return Consent(basis, reference, _utc(given_at), _utc(expires_at))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
