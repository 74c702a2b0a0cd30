"""Smart Charging over OCPP 1.6 (§3.13, §5.5, §5.7, §5.16, §6.43 …): SetChargingProfile, ClearChargingProfile and
GetCompositeSchedule translated to and from the version-agnostic
:class:`~firmware.charger.smart_charging.SmartChargingScheduler`, which holds the profiles, keeps them on disk and
puts their limits on the connectors. This module only translates, and owns the feature's configuration keys.

The ``ocpp`` library's edges, each handled here (docs/smart-charging.md): numbers arrive as ``decimal.Decimal``
(they are turned into floats; a Decimal in an answer would raise inside the library); limits in an answer must
be multiples of 0.1 (rounded down: never above what the schedule allows); an empty period list passes the
library's schema but is refused here (Rejected, as other stacks do).

The composite schedule "is the result of the calculation of all active schedules and possible local limits present in
the Charge Point" (§5.7): the charger's external limits (the site energy manager's, its fail-safe) bound it, as in
2.0.1 — 1.6 has no message to report them on their own.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.charger.external_limits import caps, external_limits
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import (
    ChargingProfile,
    ChargingSchedule,
    CompositeSchedule,
    ProfileKind,
    ProfileLimits,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    SchedulePeriod,
    SmartChargingScheduler,
)
from firmware.ocpp.charging_schedule import composite_periods
from firmware.ocpp.rpc import handles
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.keys import KeyDefinition, KeyType

log = logging.getLogger(__name__)

#: What this charge point accepts (OCTT's TC_066 needs at least 3 profiles, 5 periods, stack level 8).
LIMITS = ProfileLimits()

KEYS = (
    KeyDefinition("ChargeProfileMaxStackLevel", KeyType.INT, str(LIMITS.max_stack_level), readonly=True),
    KeyDefinition("ChargingScheduleAllowedChargingRateUnit", KeyType.CSL, "Current,Power", readonly=True),
    KeyDefinition("ChargingScheduleMaxPeriods", KeyType.INT, str(LIMITS.max_periods), readonly=True),
    KeyDefinition("MaxChargingProfilesInstalled", KeyType.INT, str(LIMITS.max_installed), readonly=True),
)

_PURPOSE = {"ChargePointMaxProfile": ProfilePurpose.CHARGER_MAX, "TxDefaultProfile": ProfilePurpose.TX_DEFAULT,
            "TxProfile": ProfilePurpose.TX}
_KIND = {"Absolute": ProfileKind.ABSOLUTE, "Recurring": ProfileKind.RECURRING, "Relative": ProfileKind.RELATIVE}
_RECURRENCY = {"Daily": Recurrency.DAILY, "Weekly": Recurrency.WEEKLY}
_UNIT = {"A": RateUnit.AMPERES, "W": RateUnit.WATTS}


class NotAProfile(ValueError):
    """A csChargingProfiles the schema let through that is no usable profile (the message says why)."""


def profile_from_16(raw: dict[str, Any]) -> ChargingProfile:
    """A 1.6 csChargingProfiles (as the library hands it over: snake_case keys, Decimal numbers) as a profile."""
    schedule = raw["charging_schedule"]
    periods = tuple(SchedulePeriod(int(p["start_period"]), _number(p["limit"]), p.get("number_phases"))
                    for p in schedule.get("charging_schedule_period", []))
    tx = raw.get("transaction_id")
    return ChargingProfile(
        id=int(raw["charging_profile_id"]), stack_level=int(raw["stack_level"]),
        purpose=_PURPOSE[raw["charging_profile_purpose"]], kind=_KIND[raw["charging_profile_kind"]],
        schedule=ChargingSchedule(_UNIT[schedule["charging_rate_unit"]], periods, schedule.get("duration"),
                                  _time(schedule.get("start_schedule"), "startSchedule"),
                                  None if schedule.get("min_charging_rate") is None
                                  else _number(schedule["min_charging_rate"])),
        recurrency=_RECURRENCY[raw["recurrency_kind"]] if raw.get("recurrency_kind") else None,
        valid_from=_time(raw.get("valid_from"), "validFrom"), valid_to=_time(raw.get("valid_to"), "validTo"),
        transaction_id=None if tx is None else str(tx))


def composite_to_16(schedule: CompositeSchedule) -> dict[str, Any]:
    """GetCompositeSchedule.conf's chargingSchedule. startSchedule is given, equal to scheduleStart: OCTT TC_059
    checks for it (errata 3.57 allows leaving it out)."""
    return {"duration": schedule.duration, "startSchedule": mapping.timestamp(schedule.start),
            "chargingRateUnit": schedule.unit.value, "chargingSchedulePeriod": composite_periods(schedule)}


def _number(value: object) -> float:
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return number
    raise NotAProfile(f"{value!r} is not a number this charge point handles")


def _time(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(str(value).upper().replace("Z", "+00:00"))
    except ValueError:
        raise NotAProfile(f"{name} {value!r} is not a date-time") from None


class SmartCharging:
    def __init__(self, scheduler: SmartChargingScheduler, limits: LimitApplier | None = None) -> None:
        self.scheduler = scheduler
        self.limits = limits

    @handles(Action.set_charging_profile)
    async def _set(self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any) -> Any:
        try:
            profile = profile_from_16(cs_charging_profiles)
        except NotAProfile as exc:
            log.info("charging profile rejected", extra={"connector": connector_id, "reason": str(exc)})
            return call_result.SetChargingProfile(status="Rejected")
        result = self.scheduler.install(connector_id, profile)
        return call_result.SetChargingProfile(status="Accepted" if result.accepted else "Rejected")

    @handles(Action.clear_charging_profile)
    async def _clear(self, id: int | None = None, connector_id: int | None = None,
                     charging_profile_purpose: str | None = None, stack_level: int | None = None, **_: Any) -> Any:
        removed = self.scheduler.clear(
            profile_id=id, connector=connector_id, stack_level=stack_level,
            purpose=None if charging_profile_purpose is None else _PURPOSE[charging_profile_purpose])
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @handles(Action.get_composite_schedule)
    async def _composite(self, connector_id: int, duration: int, charging_rate_unit: str | None = None,
                         **_: Any) -> Any:
        unit = _UNIT[charging_rate_unit] if charging_rate_unit else RateUnit.AMPERES
        try:
            external = None if self.limits is None else caps(external_limits(self.limits.limits))
            schedule = self.scheduler.composite(connector_id, duration, unit, external=external)
        except (KeyError, ValueError) as exc:
            log.info("composite schedule refused", extra={"connector": connector_id, "reason": str(exc)})
            return call_result.GetCompositeSchedule(status="Rejected")
        return call_result.GetCompositeSchedule(status="Accepted", connector_id=connector_id,
                                                schedule_start=mapping.timestamp(schedule.start),
                                                charging_schedule=composite_to_16(schedule))
