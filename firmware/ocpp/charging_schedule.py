"""ChargingSchedulePeriod as 1.6 and 2.0.1 write it alike: the composite schedule's periods of
firmware/charger/smart_charging, the limit rounded down to OCPP's one decimal, numberPhases only where not 3."""

from __future__ import annotations

from typing import Any

from firmware.charger.smart_charging import CompositeSchedule, floor_limit


def composite_periods(schedule: CompositeSchedule) -> list[dict[str, Any]]:
    """The ``chargingSchedulePeriod`` list of a GetCompositeSchedule answer (never above the limit applied)."""
    periods = []
    for p in schedule.periods:
        period: dict[str, Any] = {"startPeriod": p.start, "limit": floor_limit(p.limit)}
        if p.number_phases != 3:
            period["numberPhases"] = p.number_phases
        periods.append(period)
    return periods
