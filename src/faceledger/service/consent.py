"""Consent records and points in time as front ends receive them, parsed and checked once."""

from __future__ import annotations

import datetime as dt

from faceledger.errors import InvalidArgument
from faceledger.gallery.records import Consent

EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)


def instant(value: dt.datetime | str | None, name: str) -> dt.datetime | None:
    """An ISO 8601 time (with or without offset; none means UTC) as an aware UTC datetime.

    Refused with INVALID_ARGUMENT: a number (not a Unix timestamp in disguise), text that is
    not ISO 8601, and times outside 1970..9000 UTC (an offset near year 1 or 9999 cannot be
    represented in UTC, and no consent or audit question needs them).
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidArgument(f"{name} is not an ISO 8601 time, e.g. 2027-12-31T23:59:00+01:00",
                                  field=name) from None
    if not isinstance(value, dt.datetime):
        raise InvalidArgument(f"{name} must be an ISO 8601 time", field=name)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    try:
        utc = value.astimezone(dt.timezone.utc)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise InvalidArgument(f"{name} must lie between 1970 and 9000 (UTC)", field=name)
    return utc


def consent_record(basis: str | None, reference: str | None = None, expires_at: dt.datetime | str | None = None,
                   given_at: dt.datetime | str | None = None) -> Consent | None:
    """A consent record from its parts, or None when no basis is given (and nothing else is).

    Times are stored in UTC whatever offset they came with. A reference or an expiry without
    a legal basis is refused: it would look like consent without saying on what ground.
    """
    if basis is None or not str(basis).strip():
        if reference or expires_at or given_at:
            raise InvalidArgument("a consent reference or expiry needs a consent basis (e.g. explicit-consent)")
        return None
    return Consent(basis, reference, instant(given_at, "consent given_at"), instant(expires_at, "consent expires_at"))


def checked(consent: Consent | None) -> Consent | None:
    """A consent record whose times are checked and in UTC (whichever front end built it)."""
    if consent is None:
        return None
    if not consent.basis or not str(consent.basis).strip():
        raise InvalidArgument("a consent record needs its legal basis (e.g. explicit-consent)")
    return Consent(consent.basis, consent.reference, instant(consent.given_at, "consent given_at"),
                   instant(consent.expires_at, "consent expires_at"))
