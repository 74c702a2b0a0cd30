"""External limits (the site's energy manager and its fail-safe) as the CSMS hears of them, and the bound they put
on the composite schedule (firmware/charger/external_limits.py, pure). End to end:
tests/test_e2e_ocpp201_smart_charging.py (K11-K13 over a real MQTT broker)."""

from __future__ import annotations

from datetime import UTC, datetime

from firmware.charger.external_limits import (
    FAILSAFE,
    SITE,
    ExternalCaps,
    ExternalLimit,
    LimitChange,
    caps,
    changes,
    external_limits,
)
from firmware.charger.limits import ChargingLimits
from firmware.charger.smart_charging import (
    ChargerSetup,
    ChargingProfile,
    ChargingSchedule,
    ConnectorSetup,
    InstalledProfile,
    ProfileKind,
    ProfilePurpose,
    RateUnit,
    SchedulePeriod,
    composite_schedule,
)

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TWO = ChargerSetup({1: ConnectorSetup(32.0, 3), 2: ConnectorSetup(32.0, 3)})


def test_only_the_external_sources_in_force_whole_charger_first() -> None:
    limits = ChargingLimits({1: 32.0, 2: 32.0})
    limits.set("ocpp", 6.0, 1)  # the CSMS's: not external
    limits.set(SITE, 10.0, 2)
    limits.set(FAILSAFE, 20.0)
    limits.set(SITE, 12.0, 1)
    assert external_limits(limits) == (ExternalLimit(FAILSAFE, None, 20.0), ExternalLimit(SITE, 1, 12.0),
                                       ExternalLimit(SITE, 2, 10.0))
    assert caps(external_limits(limits)) == ExternalCaps(20.0, {1: 12.0, 2: 10.0})
    assert external_limits(ChargingLimits({1: 32.0})) == ()


def test_what_is_worth_reporting() -> None:
    site = ExternalLimit(SITE, None, 20.0)
    one = ExternalLimit(SITE, 1, 10.0)
    assert changes({}, [site, one], 1.0) == [LimitChange(site), LimitChange(one)]  # new: reported
    reported = {site.scope: 20.0, one.scope: 10.0}
    assert changes(reported, [site, one], 1.0) == []  # unchanged
    small = ExternalLimit(SITE, 1, 10.05)  # 0.5 %
    assert changes(reported, [site, small], 1.0) == []
    assert changes(reported, [site, small], 0.0) == [LimitChange(small)]
    big = ExternalLimit(SITE, 1, 8.0)
    assert changes(reported, [site, big], 10.0) == [LimitChange(big)]  # 20 % > 10 %
    assert changes(reported, [one], 1.0) == [LimitChange(site, cleared=True)]  # gone: cleared, last value kept
    assert changes({one.scope: 0.0}, [one], 50.0) == [LimitChange(one)]  # from 0 A any offer is a change


def _default(limit: float) -> InstalledProfile:
    return InstalledProfile(0, ChargingProfile(1, 0, ProfilePurpose.TX_DEFAULT, ProfileKind.ABSOLUTE, ChargingSchedule(
        RateUnit.AMPERES, (SchedulePeriod(0, limit),), None, BASE)))


def test_external_limits_bound_the_composite_like_the_pilot() -> None:
    """A connector's external limit lowers its rating; the whole charger's is a second maximum — for an EVSE and
    for the station's total (EVSE 0), in A and in W; without them the composite is the profiles' alone."""
    installed = (_default(16.0),)
    bounds = ExternalCaps(20.0, {1: 10.0})

    def first(connector: int, unit: RateUnit, external: ExternalCaps | None) -> float:
        return composite_schedule(installed, connector, BASE, 60, unit, TWO, {}, external).periods[0].limit

    assert first(1, RateUnit.AMPERES, None) == 16.0
    assert first(1, RateUnit.AMPERES, bounds) == 10.0
    assert first(2, RateUnit.AMPERES, bounds) == 16.0  # under the charger's 20 A
    assert first(2, RateUnit.AMPERES, ExternalCaps(12.0, {})) == 12.0
    assert first(0, RateUnit.AMPERES, None) == 32.0  # 16 + 16
    assert first(0, RateUnit.AMPERES, ExternalCaps(None, {1: 10.0})) == 26.0  # 10 + 16
    assert first(0, RateUnit.AMPERES, bounds) == 20.0
    assert first(1, RateUnit.WATTS, bounds) == 10.0 * 3 * 230.0
    assert first(0, RateUnit.WATTS, bounds) == 20.0 * 3 * 230.0
