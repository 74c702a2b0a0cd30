"""Timestamps on the wire: the same RFC 3339 form in OCPP 1.6 and 2.0.1."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and 'Z', the form strict CSMSs accept."""
    u = when.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S.") + f"{u.microsecond // 1000:03d}Z"
