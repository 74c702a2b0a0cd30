"""Timestamps on the wire: the same RFC 3339 form in OCPP 1.6 and 2.0.1."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

log = logging.getLogger(__name__)


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and 'Z', the form strict CSMSs accept."""
    u = when.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"


def parse_timestamp(value: object) -> datetime | None:
    """A date-time from the wire (RFC 3339) in UTC; one without an offset is taken as UTC; None if unreadable."""
    try:
        when = datetime.fromisoformat(str(value).strip().upper().replace("Z", "+00:00"))
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):  # not a date, or one UTC cannot hold (9999-12-31T23:00:00-05:00)
        return None


def expiry(value: object, field: str) -> datetime | None:
    """An id's expiry from the CSMS (1.6 expiryDate, 2.0.1 cacheExpiryDateTime): None when absent; one that cannot
    be read is taken as already passed (an id must not become valid forever because its date was garbled)."""
    if value is None:
        return None
    when = parse_timestamp(value)
    if when is None:
        log.warning("unreadable expiry date; treated as expired", extra={"field": field})
        return datetime.fromtimestamp(0, UTC)
    return when


def unix_seconds(value: object) -> float:
    """A request's date-time (retrieveDate, installDateTime...) as UNIX seconds; 0 when absent or unreadable (as
    soon as possible)."""
    when = parse_timestamp(value) if value else None
    return when.timestamp() if when is not None else 0.0
