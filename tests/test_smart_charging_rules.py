"""Charging profiles: what makes one unusable (with the reason a CSMS operator reads), the persisted form, and the
rules of the installed set — who may go where, what replaces what, clearing, ending with a transaction
(firmware/charger/smart_charging/profiles.py, installed.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from firmware.charger.smart_charging import (
    ChargingProfile,
    ChargingSchedule,
    InstalledProfile,
    InstallResult,
    ProfileFormatError,
    ProfileKind,
    ProfileLimits,
    ProfilePurpose,
    RateUnit,
    Recurrency,
    RunningTransaction,
    SchedulePeriod,
    clear,
    drop_ended,
    install,
)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
CONNECTORS = (1, 2)
P = ProfilePurpose


def profile(pid: int = 1, stack: int = 0, purpose: ProfilePurpose = P.TX_DEFAULT,
            kind: ProfileKind = ProfileKind.ABSOLUTE, periods: tuple[tuple[int, float], ...] = ((0, 16.0),),
            **schedule: object) -> ChargingProfile:
    sched = ChargingSchedule(RateUnit.AMPERES, tuple(SchedulePeriod(s, lim) for s, lim in periods),
                             start=T0 if kind is not ProfileKind.RELATIVE else None)
    sched = replace(sched, **schedule)
    return ChargingProfile(pid, stack, purpose, kind, sched)


def put(held: tuple[InstalledProfile, ...], connector: int, p: ChargingProfile,
        running: dict[int, RunningTransaction] | None = None, limits: ProfileLimits | None = None) -> InstallResult:
    return install(held, connector, p, connectors=CONNECTORS, running=running or {},
                   limits=limits or ProfileLimits(), now=T0)


# --- validation -----------------------------------------------------------------------------------------------

def test_a_usable_profile_has_no_problems() -> None:
    assert profile(periods=((0, 16.0), (60, 0.0), (120, 32.0))).problems() == []
    recurring = replace(profile(kind=ProfileKind.RECURRING), recurrency=Recurrency.WEEKLY)
    assert recurring.problems() == []


@pytest.mark.parametrize(("broken", "reason"), [
    (profile(periods=()), "no periods"),
    (profile(periods=((10, 16.0),)), "first period must start at 0"),
    (profile(periods=((0, 16.0), (60, 10.0), (60, 8.0))), "must be later than the one before (60)"),
    (profile(periods=((0, 16.0), (60, 10.0), (30, 8.0))), "must be later than the one before (60)"),
    (profile(periods=((0, -1.0),)), "limit must be a number from 0"),
    (profile(periods=((0, math.nan),)), "limit must be a number from 0"),
    (profile(periods=((0, math.inf),)), "limit must be a number from 0"),
    (profile(periods=((0, 2e9),)), "limit must be a number from 0"),
    (profile(duration=-1), "duration must be whole seconds"),
    (profile(duration=2**31), "duration must be whole seconds"),
    (profile(min_charging_rate=-2.0), "minChargingRate must be a number >= 0"),
    (profile(kind=ProfileKind.RECURRING), "needs recurrencyKind"),
    (replace(profile(kind=ProfileKind.RECURRING, start=None), recurrency=Recurrency.DAILY), "needs startSchedule"),
    (profile(purpose=P.CHARGER_MAX, kind=ProfileKind.RELATIVE), "a charger maximum belongs to no transaction"),
    (replace(profile(), transaction_id="12"), "transactionId is only allowed in a TxProfile"),
    (replace(profile(), valid_from=T0, valid_to=T0), "validTo must be later than validFrom"),
    (replace(profile(), valid_from=datetime(2026, 3, 1)), "validFrom has no time zone"),
    (replace(profile(), stack_level=-1), "stackLevel must be an integer >= 0"),
    (replace(profile(), id=True), "id must be an integer"),
])
def test_an_unusable_profile_says_why(broken: ChargingProfile, reason: str) -> None:
    problems = broken.problems()
    assert any(reason in p for p in problems), problems


def test_number_phases_must_be_1_to_3() -> None:
    p = profile()
    bad = replace(p, schedule=replace(p.schedule, periods=(SchedulePeriod(0, 16.0, 4),)))
    assert bad.problems() == ["period 0: numberPhases must be 1, 2 or 3; got 4"]


# --- persisted form -------------------------------------------------------------------------------------------

def test_the_persisted_form_is_json_and_reads_back_equal() -> None:
    p = ChargingProfile(7, 3, P.TX, ProfileKind.RECURRING, ChargingSchedule(
        RateUnit.WATTS, (SchedulePeriod(0, 11000.0, 3), SchedulePeriod(3600, 3680.5, 1)), 86_400,
        datetime(2026, 3, 1, 22, 0, tzinfo=UTC), 1380.0), Recurrency.DAILY, T0, T0 + timedelta(days=30), "4102")
    text = json.dumps(p.to_dict())
    assert ChargingProfile.from_dict(json.loads(text)) == p
    assert ChargingProfile.from_dict(profile().to_dict()) == profile()


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.pop("schedule"), "schedule: not an object"),
    (lambda d: d.update(purpose="ChargePointMaxProfile"), "profile.purpose"),
    (lambda d: d.update(id="1"), "profile.id: not an integer"),
    (lambda d: d["schedule"].update(periods={}), "schedule.periods: not a list"),
    (lambda d: d["schedule"]["periods"][0].update(limit="16"), "schedule.periods[0].limit: not a number"),
    (lambda d: d["schedule"].update(start="yesterday"), "schedule.start: not an ISO 8601 time"),
    (lambda d: d["schedule"].update(start="2026-03-01T10:00:00"), "schedule.start: not an ISO 8601 time with a zone"),
    (lambda d: d.update(transaction_id=12), "profile.transaction_id: not a string"),
])
def test_a_damaged_persisted_form_is_refused_naming_the_field(mutate: Callable[[dict[str, Any]], object],
                                                              field: str) -> None:
    raw = profile().to_dict()
    mutate(raw)
    with pytest.raises(ProfileFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ChargingProfile.from_dict(raw)
    with pytest.raises(ProfileFormatError, match="profile: not an object"):
        ChargingProfile.from_dict("[]")


# --- where a profile may go -----------------------------------------------------------------------------------

def test_a_charger_maximum_only_on_connector_0() -> None:
    assert not put((), 1, profile(purpose=P.CHARGER_MAX)).accepted
    assert put((), 1, profile(purpose=P.CHARGER_MAX)).reason == "a ChargePointMaxProfile can only be set on connector 0"
    assert put((), 0, profile(purpose=P.CHARGER_MAX)).accepted


def test_a_tx_profile_needs_the_running_transaction() -> None:
    """OCTT TC_058_1 (no transaction) and TC_058_2 (wrong transactionId): Rejected."""
    tx = {1: RunningTransaction(4, T0, "4102")}
    assert put((), 0, profile(purpose=P.TX), tx).reason == ("a TxProfile needs a connector (> 0) with a running "
                                                            "transaction")
    assert put((), 2, profile(purpose=P.TX), tx).reason == "no transaction is running on connector 2"
    wrong = put((), 1, replace(profile(purpose=P.TX), transaction_id="999"), tx)
    assert not wrong.accepted and wrong.reason == ("transactionId 999 is not the transaction running on connector 1 "
                                                   "(4102)")
    offline = put((), 1, replace(profile(purpose=P.TX), transaction_id="4102"), {1: RunningTransaction(4, T0)})
    assert not offline.accepted and "(not known yet)" in offline.reason
    for p in (profile(purpose=P.TX), replace(profile(purpose=P.TX), transaction_id="4102")):
        ok = put((), 1, p, tx)
        assert ok.accepted and ok.added is not None and ok.added.transaction == 4  # bound to the local id


def test_tx_default_on_connector_0_or_one_connector_and_no_unknown_connector() -> None:
    assert put((), 0, profile()).accepted and put((), 2, profile()).accepted
    assert put((), 3, profile()).reason == "there is no connector 3"


def test_the_charger_limits_are_enforced() -> None:
    limits = ProfileLimits(max_installed=3, max_stack_level=8, max_periods=5, units=frozenset({RateUnit.AMPERES}))
    assert put((), 0, profile(stack=9), limits=limits).reason == "stackLevel 9 is above ChargeProfileMaxStackLevel (8)"
    assert put((), 0, profile(stack=8), limits=limits).accepted
    six = tuple((60 * i, 16.0) for i in range(6))
    assert put((), 0, profile(periods=six), limits=limits).reason == \
        "6 periods are more than ChargingScheduleMaxPeriods (5)"
    watts = profile(unit=RateUnit.WATTS)
    assert put((), 0, watts, limits=limits).reason == "charging rate unit W is not supported here"
    assert put((), 0, profile(periods=((0, -1.0),)), limits=limits).reason.startswith("period 0: limit must be")


def test_an_absolute_profile_without_start_starts_when_installed() -> None:
    result = put((), 0, profile(start=None))
    assert result.added is not None and result.added.profile.schedule.start == T0
    relative = put((), 0, profile(kind=ProfileKind.RELATIVE))
    assert relative.added is not None and relative.added.profile.schedule.start is None


# --- replacing and the count ----------------------------------------------------------------------------------

def test_the_same_id_replaces_anywhere() -> None:
    held = put((), 1, profile(pid=5, stack=1)).installed
    result = put(held, 0, profile(pid=5, stack=2, purpose=P.CHARGER_MAX))
    assert result.accepted and [p.profile.id for p in result.removed] == [5]
    assert [(p.connector, p.profile.purpose) for p in result.installed] == [(0, P.CHARGER_MAX)]


def test_the_same_stack_level_and_purpose_on_the_same_connector_replaces() -> None:
    held = put((), 1, profile(pid=1, stack=2)).installed
    held = put(held, 2, profile(pid=2, stack=2)).installed  # another connector: both stay
    held = put(held, 1, profile(pid=3, stack=3)).installed  # another stack level: stays
    held = put(held, 0, profile(pid=4, stack=2, purpose=P.CHARGER_MAX)).installed  # another purpose: stays
    assert sorted(p.profile.id for p in held) == [1, 2, 3, 4]
    result = put(held, 1, profile(pid=9, stack=2))
    assert [p.profile.id for p in result.removed] == [1]
    assert sorted(p.profile.id for p in result.installed) == [2, 3, 4, 9]


def test_max_installed_then_rejected_but_a_replacement_still_goes() -> None:
    limits = ProfileLimits(max_installed=3)
    held: tuple[InstalledProfile, ...] = ()
    for i in range(3):
        held = put(held, 0, profile(pid=i, stack=i), limits=limits).installed
    full = put(held, 0, profile(pid=10, stack=5), limits=limits)
    assert not full.accepted and full.reason == "MaxChargingProfilesInstalled (3) are installed"
    assert full.installed == held
    assert put(held, 0, profile(pid=1, stack=7), limits=limits).accepted  # same id
    assert put(held, 0, profile(pid=11, stack=2), limits=limits).accepted  # same stack level and purpose


# --- clearing and ending --------------------------------------------------------------------------------------

def _held() -> tuple[InstalledProfile, ...]:
    tx = {1: RunningTransaction(1, T0, "1")}
    held: tuple[InstalledProfile, ...] = ()
    for connector, p in [(0, profile(pid=1, stack=0, purpose=P.CHARGER_MAX)), (0, profile(pid=2, stack=0)),
                         (1, profile(pid=3, stack=1)), (2, profile(pid=4, stack=1)),
                         (1, profile(pid=5, stack=2, purpose=P.TX))]:
        result = put(held, connector, p, tx)
        assert result.accepted, result.reason
        held = result.installed
    return held


def ids(profiles: tuple[InstalledProfile, ...]) -> list[int]:
    return sorted(p.profile.id for p in profiles)


def test_clear_without_criteria_clears_everything() -> None:
    assert ids(clear(_held()).removed) == [1, 2, 3, 4, 5] and clear(_held()).kept == ()


def test_clear_by_id_only_the_id_counts() -> None:
    assert ids(clear(_held(), profile_id=3, connector=2, purpose=P.CHARGER_MAX).removed) == [3]
    assert clear(_held(), profile_id=99, connector=1).removed == ()  # Unknown, even though connector 1 has some


def test_clear_by_criteria_all_must_match() -> None:
    assert ids(clear(_held(), connector=1).removed) == [3, 5]
    assert ids(clear(_held(), connector=0).removed) == [1, 2]  # connector 0's own, not every connector's
    assert ids(clear(_held(), purpose=P.TX_DEFAULT).removed) == [2, 3, 4]
    assert ids(clear(_held(), purpose=P.TX_DEFAULT, stack_level=1).removed) == [3, 4]
    assert ids(clear(_held(), purpose=P.TX_DEFAULT, stack_level=1, connector=2).removed) == [4]
    assert clear(_held(), purpose=P.CHARGER_MAX, connector=1).removed == ()


def test_tx_profiles_end_with_their_transaction() -> None:
    held = _held()
    assert drop_ended(held, {1: RunningTransaction(1, T0)}).removed == ()
    assert ids(drop_ended(held, {}).removed) == [5]
    after = drop_ended(held, {1: RunningTransaction(2, T0)})  # a later transaction on the same connector
    assert ids(after.removed) == [5] and ids(after.kept) == [1, 2, 3, 4]
