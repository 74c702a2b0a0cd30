"""A charging profile as the charger understands it, whatever protocol delivered it (pure, no I/O).

OCPP 1.6's ChargePointMaxProfile / TxDefaultProfile / TxProfile and OCPP 2.0.1's ChargingStationMaxProfile /
TxDefaultProfile / TxProfile are the same three purposes; each adapter translates its wire form into
:class:`ChargingProfile` and back. A profile can be built with any values: :meth:`ChargingProfile.problems`
says, in words a CSMS operator understands, what makes it unusable — the adapter answers Rejected with them.

:meth:`ChargingProfile.to_dict` / :meth:`ChargingProfile.from_dict` are the persisted form (plain JSON types,
datetimes as ISO 8601); ``from_dict`` raises :class:`ProfileFormatError` on anything malformed, so a damaged
row is refused rather than half-trusted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

#: OCPP's schemas say "integer"; stacks implement int32. Durations and period starts beyond it are refused, which
#: also keeps every instant the schedule reaches inside what a datetime can hold.
MAX_SECONDS = 2**31 - 1
#: Profile ids and stack levels are stored in SQLite INTEGER columns (64-bit).
MAX_ID = 2**63 - 1
#: The largest limit taken (amperes or watts): far beyond any charger, and small enough that no conversion overflows.
MAX_LIMIT = 1e9
#: numberPhases when a period leaves it out (OCPP 1.6 §7.13, 2.0.1 ChargingSchedulePeriodType).
DEFAULT_PHASES = 3


class ProfilePurpose(StrEnum):
    CHARGER_MAX = "charger_max"  # 1.6 ChargePointMaxProfile, 2.0.1 ChargingStationMaxProfile: the whole charger
    TX_DEFAULT = "tx_default"  # every transaction without a TxProfile (connector 0: all connectors)
    TX = "tx"  # one running transaction; ends with it


class ProfileKind(StrEnum):
    ABSOLUTE = "absolute"  # the schedule starts at its start time
    RECURRING = "recurring"  # restarts every day / week at the start time's time (and weekday)
    RELATIVE = "relative"  # starts with the transaction


class Recurrency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"

    @property
    def seconds(self) -> int:
        return 86_400 if self is Recurrency.DAILY else 7 * 86_400


class RateUnit(StrEnum):
    AMPERES = "A"  # per phase
    WATTS = "W"  # total over the phases in use


@dataclass(frozen=True)
class SchedulePeriod:
    start: int  # seconds from the schedule's start
    limit: float  # in the schedule's unit
    number_phases: int | None = None  # None: DEFAULT_PHASES

    @property
    def phases(self) -> int:
        return DEFAULT_PHASES if self.number_phases is None else self.number_phases


@dataclass(frozen=True)
class ChargingSchedule:
    unit: RateUnit
    periods: tuple[SchedulePeriod, ...]
    duration: int | None = None  # seconds; None: the last period never ends (no fall-back to lower profiles)
    start: datetime | None = None  # startSchedule
    min_charging_rate: float | None = None  # the EV's minimum, informational (in ``unit``)
    id: int | None = None  # 2.0.1's ChargingScheduleType.id (1.6 has none): kept to report the profile back


@dataclass(frozen=True)
class ChargingProfile:
    id: int
    stack_level: int
    purpose: ProfilePurpose
    kind: ProfileKind
    schedule: ChargingSchedule
    recurrency: Recurrency | None = None  # only read for RECURRING
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None  # a TxProfile's transaction, as the CSMS names it (1.6: the integer as text)

    def problems(self) -> list[str]:
        """Why this profile cannot be used (empty: it can). Limits a charger sets (stack level, periods, how many
        are installed) are checked where profiles are installed (:mod:`.installed`), not here."""
        out: list[str] = []
        if not _is_int(self.id) or not -MAX_ID <= self.id <= MAX_ID:
            out.append(f"id must be an integer of at most 64 bits; got {self.id!r}")
        if not _is_int(self.stack_level) or not 0 <= self.stack_level <= MAX_ID:
            out.append(f"stackLevel must be an integer >= 0; got {self.stack_level!r}")
        for name, when in (("validFrom", self.valid_from), ("validTo", self.valid_to),
                           ("startSchedule", self.schedule.start)):
            if when is not None and when.utcoffset() is None:
                out.append(f"{name} has no time zone")
        if (self.valid_from is not None and self.valid_to is not None and self.valid_from.utcoffset() is not None
                and self.valid_to.utcoffset() is not None and self.valid_to <= self.valid_from):
            out.append("validTo must be later than validFrom")
        if self.kind is ProfileKind.RECURRING:
            if self.recurrency is None:
                out.append("a Recurring profile needs recurrencyKind (Daily or Weekly)")
            if self.schedule.start is None:  # open-ocpp #137: without it there is no time of day to restart at
                out.append("a Recurring profile needs startSchedule: it restarts at that time (and weekday)")
        if self.kind is ProfileKind.RELATIVE and self.purpose is ProfilePurpose.CHARGER_MAX:
            out.append("a Relative profile runs from a transaction's start; a charger maximum belongs to no "
                       "transaction")
        if self.transaction_id is not None and self.purpose is not ProfilePurpose.TX:
            out.append("transactionId is only allowed in a TxProfile")
        out.extend(_schedule_problems(self.schedule))
        return out

    def to_dict(self) -> dict[str, Any]:
        s = self.schedule
        return {
            "id": self.id, "stack_level": self.stack_level, "purpose": self.purpose.value, "kind": self.kind.value,
            "recurrency": None if self.recurrency is None else self.recurrency.value,
            "valid_from": _iso(self.valid_from), "valid_to": _iso(self.valid_to),
            "transaction_id": self.transaction_id,
            "schedule": {
                "unit": s.unit.value, "duration": s.duration, "start": _iso(s.start),
                "min_charging_rate": s.min_charging_rate, "id": s.id,
                "periods": [{"start": p.start, "limit": p.limit, "number_phases": p.number_phases}
                            for p in s.periods],
            },
        }

    @classmethod
    def from_dict(cls, raw: object) -> ChargingProfile:
        """The persisted form back; :class:`ProfileFormatError` names the field that is wrong."""
        r = _Reader(raw, "profile")
        s = _Reader(r.get("schedule"), "schedule")
        raw_periods = s.get("periods")
        if not isinstance(raw_periods, list):
            raise ProfileFormatError("schedule.periods: not a list")
        periods = []
        for i, item in enumerate(raw_periods):
            p = _Reader(item, f"schedule.periods[{i}]")
            periods.append(SchedulePeriod(p.integer("start"), p.number("limit"), p.optional_integer("number_phases")))
        schedule = ChargingSchedule(s.enum("unit", RateUnit), tuple(periods), s.optional_integer("duration"),
                                    s.optional_time("start"), s.optional_number("min_charging_rate"),
                                    s.optional_integer("id"))
        recurrency = r.get("recurrency")
        transaction_id = r.get("transaction_id")
        if transaction_id is not None and not isinstance(transaction_id, str):
            raise ProfileFormatError("profile.transaction_id: not a string")
        return cls(r.integer("id"), r.integer("stack_level"), r.enum("purpose", ProfilePurpose),
                   r.enum("kind", ProfileKind), schedule,
                   None if recurrency is None else r.enum("recurrency", Recurrency),
                   r.optional_time("valid_from"), r.optional_time("valid_to"), transaction_id)


class ProfileFormatError(ValueError):
    """A persisted profile cannot be read back; the message names the field."""


def _schedule_problems(s: ChargingSchedule) -> list[str]:
    out: list[str] = []
    if s.id is not None and (not _is_int(s.id) or not -MAX_ID <= s.id <= MAX_ID):
        out.append(f"the schedule's id must be an integer of at most 64 bits; got {s.id!r}")
    if s.duration is not None and (not _is_int(s.duration) or not 0 <= s.duration <= MAX_SECONDS):
        out.append(f"duration must be whole seconds, 0 to {MAX_SECONDS}; got {s.duration!r}")
    if s.min_charging_rate is not None and (not _non_negative(s.min_charging_rate)
                                            or s.min_charging_rate > MAX_LIMIT):
        out.append(f"minChargingRate must be a number >= 0; got {s.min_charging_rate!r}")
    if not s.periods:
        out.append("the schedule has no periods")
        return out
    if s.periods[0].start != 0:
        out.append(f"the first period must start at 0; it starts at {s.periods[0].start!r}")
    previous: int | None = None
    for i, p in enumerate(s.periods):
        if not _is_int(p.start) or not 0 <= p.start <= MAX_SECONDS:
            out.append(f"period {i}: startPeriod must be whole seconds, 0 to {MAX_SECONDS}; got {p.start!r}")
        elif previous is not None and p.start <= previous:
            out.append(f"period {i}: startPeriod {p.start} must be later than the one before ({previous})")
        else:
            previous = p.start
        if not _non_negative(p.limit) or p.limit > MAX_LIMIT:
            out.append(f"period {i}: limit must be a number from 0 to {MAX_LIMIT:.0e}; got {p.limit!r}")
        if p.number_phases is not None and (not _is_int(p.number_phases) or not 1 <= p.number_phases <= 3):
            out.append(f"period {i}: numberPhases must be 1, 2 or 3; got {p.number_phases!r}")
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _non_negative(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 0)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


E = TypeVar("E", bound=StrEnum)


class _Reader:
    """Typed access to one JSON object of the persisted form, with the path in every error."""

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, Mapping):
            raise ProfileFormatError(f"{path}: not an object")
        self.raw, self.path = raw, path

    def get(self, key: str) -> Any:
        return self.raw.get(key)

    def integer(self, key: str) -> int:
        value = self.raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProfileFormatError(f"{self.path}.{key}: not an integer ({value!r})")
        return value

    def optional_integer(self, key: str) -> int | None:
        return None if self.raw.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileFormatError(f"{self.path}.{key}: not a number ({value!r})")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.raw.get(key) is None else self.number(key)

    def enum(self, key: str, kind: type[E]) -> E:
        value = self.raw.get(key)
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return kind(value)
        except ValueError:
            raise ProfileFormatError(f"{self.path}.{key}: {value!r} is not one of "
                                     f"{[m.value for m in kind]}") from None

    def optional_time(self, key: str) -> datetime | None:
        value = self.raw.get(key)
        if value is None:
            return None
        try:
            when = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            when = None
        if when is None or when.utcoffset() is None:
            raise ProfileFormatError(f"{self.path}.{key}: not an ISO 8601 time with a zone ({value!r})")
        return when
