"""OCPP 1.6 csChargingProfiles (and 2.0.1 ChargingProfileTypes) from a few plain values: what a person at
``python -m sim ctl profile set`` means.

Pure (no I/O, the clock is passed in), so the control API and tests build the same payloads. Only the shape is
made here; whether the payload is valid 1.6 is :func:`sim.csms.ocppj.check_payload`'s job, and whether the charge
point takes it is the charge point's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
#: 2.0.1's name of the charger's maximum; either name is taken and sent as the version spells it
STATION_MAX_201 = "ChargingStationMaxProfile"
ANY_PURPOSE = (*PURPOSES, STATION_MAX_201)
KINDS = ("Absolute", "Recurring", "Relative")
RECURRENCIES = ("Daily", "Weekly")
UNITS = ("A", "W")

_OFFSET = re.compile(r"\+(\d+(?:\.\d*)?)")


@dataclass(frozen=True)
class Period:
    """One chargingSchedulePeriod: from ``start_s`` (seconds into the schedule) on, ``limit`` in the unit."""

    start_s: int
    limit: float
    phases: int | None = None

    def to_ocpp(self) -> dict[str, Any]:
        out: dict[str, Any] = {"startPeriod": self.start_s, "limit": self.limit}
        if self.phases is not None:
            out["numberPhases"] = self.phases
        return out


def parse_instant(text: str, now: datetime) -> datetime:
    """``now``, ``+SECONDS`` (from now) or an ISO 8601 date-time with its UTC offset; ValueError otherwise.

    A time without an offset is refused: the charge point and the person may not share a time zone."""
    text = text.strip()
    if text == "now":
        return now
    offset = _OFFSET.fullmatch(text)
    if offset is not None:
        return now + timedelta(seconds=float(offset.group(1)))
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected now, +SECONDS or an ISO 8601 date-time, got {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (add Z or +01:00, ...)")
    return when


def ocpp_datetime(when: datetime) -> str:
    """UTC, whole seconds, ``Z``: what every 1.6 stack parses."""
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def charging_profile(profile_id: int, stack_level: int, purpose: str, periods: Sequence[Period], *,
                     unit: str = "A", kind: str = "Absolute", recurrency: str | None = None,
                     start: datetime | None = None, duration_s: int | None = None,
                     transaction_id: int | None = None, min_charging_rate: float | None = None) -> dict[str, Any]:
    """The csChargingProfiles object of a SetChargingProfile.req (or RemoteStartTransaction's chargingProfile).

    Values are taken as given (a bad one is for the schema check or the charge point to refuse); only
    combinations that cannot mean anything raise ValueError: a Recurring profile without recurrency, a
    recurrency on another kind, a Relative profile with a start (it starts with its transaction), a transaction
    id on another purpose than TxProfile."""
    if kind == "Recurring" and recurrency is None:
        raise ValueError("a Recurring profile needs a recurrency (Daily or Weekly)")
    if kind != "Recurring" and recurrency is not None:
        raise ValueError(f"recurrency is for Recurring profiles, not {kind}")
    if kind == "Relative" and start is not None:
        raise ValueError("a Relative profile starts with its transaction: give no start")
    if transaction_id is not None and purpose != "TxProfile":
        raise ValueError(f"a transaction id is for a TxProfile, not a {purpose}")
    schedule: dict[str, Any] = {"chargingRateUnit": unit, "chargingSchedulePeriod": [p.to_ocpp() for p in periods]}
    if duration_s is not None:
        schedule["duration"] = duration_s
    if start is not None:
        schedule["startSchedule"] = ocpp_datetime(start)
    if min_charging_rate is not None:
        schedule["minChargingRate"] = min_charging_rate
    profile: dict[str, Any] = {"chargingProfileId": profile_id}
    if transaction_id is not None:
        profile["transactionId"] = transaction_id
    profile.update(stackLevel=stack_level, chargingProfilePurpose=purpose, chargingProfileKind=kind)
    if recurrency is not None:
        profile["recurrencyKind"] = recurrency
    profile["chargingSchedule"] = schedule
    return profile


def charging_profile_201(profile_id: int, stack_level: int, purpose: str, periods: Sequence[Period], *,
                         unit: str = "A", kind: str = "Absolute", recurrency: str | None = None,
                         start: datetime | None = None, duration_s: int | None = None,
                         transaction_id: str | None = None, valid_from: datetime | None = None,
                         valid_to: datetime | None = None, schedule_id: int = 1,
                         min_charging_rate: float | None = None) -> dict[str, Any]:
    """An OCPP 2.0.1 ChargingProfileType (SetChargingProfileRequest's, RequestStartTransactionRequest's) with one
    chargingSchedule. Values are taken as given: whether the station takes them is the station's to say (2.0.1
    wants a startSchedule on Absolute and Recurring profiles, none on Relative ones, a transactionId on a
    TxProfile)."""
    schedule: dict[str, Any] = {"id": schedule_id, "chargingRateUnit": unit,
                                "chargingSchedulePeriod": [p.to_ocpp() for p in periods]}
    if duration_s is not None:
        schedule["duration"] = duration_s
    if start is not None:
        schedule["startSchedule"] = ocpp_datetime(start)
    if min_charging_rate is not None:
        schedule["minChargingRate"] = min_charging_rate
    profile: dict[str, Any] = {"id": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": purpose,
                               "chargingProfileKind": kind}
    if recurrency is not None:
        profile["recurrencyKind"] = recurrency
    if transaction_id is not None:
        profile["transactionId"] = transaction_id
    if valid_from is not None:
        profile["validFrom"] = ocpp_datetime(valid_from)
    if valid_to is not None:
        profile["validTo"] = ocpp_datetime(valid_to)
    profile["chargingSchedule"] = [schedule]
    return profile


def purpose_in(version: str, purpose: str) -> str:
    """``purpose`` as OCPP ``version`` spells it (the charger maximum: ChargePointMaxProfile in 1.6,
    ChargingStationMaxProfile in 2.0.1)."""
    if purpose in (PURPOSES[0], STATION_MAX_201):
        return STATION_MAX_201 if version == "2.0.1" else PURPOSES[0]
    return purpose


def profile_ids_sent(payloads: Iterable[tuple[str | None, Any]]) -> set[int]:
    """The profile ids in SetChargingProfile / RemoteStartTransaction / RequestStartTransaction requests (1.6's
    chargingProfileId, 2.0.1's id), given (action, payload)."""
    ids: set[int] = set()
    for action, payload in payloads:
        if not isinstance(payload, dict):
            continue
        profile = (payload.get("csChargingProfiles") or payload.get("chargingProfile")
                   if action == "SetChargingProfile" else payload.get("chargingProfile")
                   if action in ("RemoteStartTransaction", "RequestStartTransaction") else None)
        if isinstance(profile, dict):
            pid = profile.get("chargingProfileId", profile.get("id"))
            if isinstance(pid, int) and not isinstance(pid, bool):
                ids.add(pid)
    return ids
