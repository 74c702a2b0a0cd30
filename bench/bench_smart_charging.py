"""Smart charging: how long the composite schedule takes for the largest stack the limits allow, over 24 h.

Two stacks of ``ProfileLimits()``'s largest size (MaxChargingProfilesInstalled profiles of
ChargingScheduleMaxPeriods periods, stack levels up to ChargeProfileMaxStackLevel) on a two-connector charger
with a transaction on each:

* mixed: ChargePointMaxProfiles, TxDefaultProfiles on connector 0 and on each connector, and a TxProfile per
  transaction; Absolute, daily and weekly Recurring, and Relative, in A and in W, half-hourly periods, starts
  staggered so that hardly two boundaries coincide, the higher stack levels running shorter (every level shows
  through somewhere in the day);
* every period visible: the worst case for the computation (:func:`every_period_visible`).

Figures: the composite of connector 0 (every connector) and of connector 1, in A and in W; and the limits now with
their next change (what the scheduler computes at every wake). Wall time (perf_counter) and CPU time of this
process (process_time: what the computation costs, whatever else the machine runs). Target: composite <= 5 ms.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from firmware.charger.smart_charging import (
    ChargerSetup,
    ChargingProfile,
    ChargingSchedule,
    ConnectorSetup,
    InstalledProfile,
    ProfileKind,
    ProfileLimits,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    RunningTransaction,
    SchedulePeriod,
    composite_schedule,
    install,
    limits_at,
)

NOW = datetime(2026, 3, 4, 9, 17, 23, tzinfo=UTC)
RUNS = 200


def largest_stack(limits: ProfileLimits, setup: ChargerSetup,
                  running: dict[int, RunningTransaction]) -> tuple[InstalledProfile, ...]:
    step = 86_400 // limits.max_periods
    places: list[tuple[int, ProfilePurpose]] = [(1, ProfilePurpose.TX), (2, ProfilePurpose.TX)]
    for _ in range(limits.max_stack_level + 1):
        places += [(0, ProfilePurpose.CHARGER_MAX), (0, ProfilePurpose.TX_DEFAULT), (1, ProfilePurpose.TX_DEFAULT),
                   (2, ProfilePurpose.TX_DEFAULT)]
    installed: tuple[InstalledProfile, ...] = ()
    levels: dict[tuple[int, ProfilePurpose], int] = {}
    for pid, (connector, purpose) in enumerate(places[:limits.max_installed]):
        level = levels.get((connector, purpose), 0)
        levels[(connector, purpose)] = level + 1
        unit = RateUnit.WATTS if pid % 2 else RateUnit.AMPERES
        scale = 230.0 * 3 if unit is RateUnit.WATTS else 1.0
        periods = tuple(SchedulePeriod(i * step, round((6 + (i * 7 + pid * 5) % 27) * scale, 1))
                        for i in range(limits.max_periods))
        kind = [ProfileKind.ABSOLUTE, ProfileKind.RECURRING, ProfileKind.RELATIVE][pid % 3]
        if purpose is ProfilePurpose.CHARGER_MAX and kind is ProfileKind.RELATIVE:
            kind = ProfileKind.ABSOLUTE
        start = None if kind is ProfileKind.RELATIVE else NOW - timedelta(hours=pid % 6, seconds=pid * 97)
        recurrency = (Recurrency.DAILY if pid % 4 else Recurrency.WEEKLY) if kind is ProfileKind.RECURRING else None
        # the higher the stack level, the shorter the run: every level shows through somewhere in the day
        duration = 3600 * (2 + 2 * (limits.max_stack_level - level)) + pid * 61
        profile = ChargingProfile(pid, min(level, limits.max_stack_level), purpose, kind,
                                  ChargingSchedule(unit, periods, duration, start), recurrency)
        result = install(installed, connector, profile, connectors=setup.connectors, running=running, limits=limits,
                         now=NOW)
        assert result.accepted, result.reason
        installed = result.installed
    assert len(installed) == limits.max_installed
    return installed


def every_period_visible(limits: ProfileLimits, setup: ChargerSetup,
                         running: dict[int, RunningTransaction]) -> tuple[InstalledProfile, ...]:
    """The worst case for the computation: each profile runs alone in its own slot of the day, all its periods
    inside it, so every period of every profile is in the composite (TxProfiles at every stack level on each
    connector, then TxDefaultProfiles and ChargePointMaxProfiles covering the rest)."""
    per_connector = limits.max_stack_level + 1
    slot = 86_400 // per_connector
    step = slot // limits.max_periods
    installed: tuple[InstalledProfile, ...] = ()
    places = [(c, ProfilePurpose.TX, level) for c in (1, 2) for level in range(per_connector)]
    places += [(0, ProfilePurpose.CHARGER_MAX, 0), (0, ProfilePurpose.TX_DEFAULT, 0)]
    for pid, (connector, purpose, level) in enumerate(places[:limits.max_installed]):
        unit = RateUnit.WATTS if pid % 2 else RateUnit.AMPERES
        scale = 230.0 * 3 if unit is RateUnit.WATTS else 1.0
        one_slot = purpose is ProfilePurpose.TX
        periods = tuple(SchedulePeriod(i * (step if one_slot else 86_400 // limits.max_periods),
                                       round((6 + (i * 7 + pid * 5) % 27) * scale * (3 if connector == 0 else 1), 1))
                        for i in range(limits.max_periods))
        start = NOW + timedelta(seconds=level * slot + pid * 7) if one_slot else NOW
        profile = ChargingProfile(pid, level, purpose, ProfileKind.ABSOLUTE,
                                  ChargingSchedule(unit, periods, slot if one_slot else None, start))
        result = install(installed, connector, profile, connectors=setup.connectors, running=running, limits=limits,
                         now=NOW)
        assert result.accepted, result.reason
        installed = result.installed
    assert len(installed) == limits.max_installed
    return installed


def timed(work: Callable[[], object]) -> tuple[str, object]:
    """Wall time (median, 95th percentile, maximum) and CPU time (median) of RUNS calls, in ms."""
    wall, cpu = [], []
    out = None
    for _ in range(RUNS):
        t0, c0 = time.perf_counter(), time.process_time()
        out = work()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    p95 = statistics.quantiles(wall, n=20)[-1]
    return (f"median {statistics.median(wall):.2f} ms, p95 {p95:.2f} ms, max {max(wall):.2f} ms "
            f"(CPU median {statistics.median(cpu):.2f} ms)"), out


def main() -> None:
    limits = ProfileLimits()
    setup = ChargerSetup({1: ConnectorSetup(32.0, 3), 2: ConnectorSetup(32.0, 3)})
    running = {c: RunningTransaction(1, NOW - timedelta(minutes=40 + c), str(c)) for c in setup.connectors}
    print(f"{limits.max_installed} profiles x {limits.max_periods} periods, stack levels 0..{limits.max_stack_level}, "
          "2 connectors with a transaction each, 24 h")
    for name, installed in (("mixed stack", largest_stack(limits, setup, running)),
                            ("every period visible", every_period_visible(limits, setup, running))):
        for connector in (0, 1):
            for unit in RateUnit:
                figures, schedule = timed(lambda c=connector, u=unit, i=installed: composite_schedule(
                    i, c, NOW, 86_400, u, setup, running))
                periods = len(schedule.periods)  # type: ignore[attr-defined]
                print(f"{name}: composite, connector {connector}, {unit.value}: {figures} ({periods} periods; "
                      "target <= 5 ms)")
        figures, _ = timed(lambda i=installed: limits_at(i, NOW, setup, running))  # type: ignore[misc]
        print(f"{name}: limits now + next change: {figures}")


if __name__ == "__main__":
    main()
