"""OCPP 2.0.1 K's translation (firmware/ocpp/v201/smart_charging.py) and what it added to the shared charger layer:
a ChargingProfileType read and written back, what 2.0.1 refuses that 1.6 takes (K01.FR.40/41, several schedules,
ExternalConstraints, phaseToUse), the same-stack-level rule of each version, the schedule id kept on disk,
GetChargingProfiles' selection and its ReportChargingProfiles pages. End to end:
tests/test_e2e_ocpp201_smart_charging.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ocpp.charge_point import camel_to_snake_case

from firmware.charger.external_limits import FAILSAFE, SITE
from firmware.charger.limit_applier import LimitApplier
from firmware.charger.smart_charging import (
    ChargingProfile,
    ChargingSchedule,
    InstalledProfile,
    ProfileKind,
    ProfileLimits,
    ProfilePurpose,
    RateUnit,
    Refusal,
    RunningTransaction,
    SameStackLevel,
    SchedulePeriod,
    floor_limit,
    install,
)
from firmware.config import parse_config
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel
from firmware.ocpp.v201.smart_charging import (
    PROFILES_PER_REPORT,
    NotAProfile,
    SmartCharging,
    external_profile_id,
    profile_from_201,
    profile_to_201,
)
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from tests.test_config import GOOD

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

WIRE = {  # a ChargingProfileType as a CSMS sends it
    "id": 17, "stackLevel": 3, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Recurring",
    "recurrencyKind": "Daily", "validFrom": "2026-03-01T00:00:00.000Z", "validTo": "2026-04-01T00:00:00.000Z",
    "chargingSchedule": [{"id": 5, "startSchedule": "2026-03-01T06:00:00.000Z", "duration": 3600,
                          "chargingRateUnit": "W", "minChargingRate": 1400.0,
                          "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0},
                                                     {"startPeriod": 1800, "limit": 3680.0, "numberPhases": 1}]}]}


def handed(wire: dict[str, Any]) -> dict[str, Any]:
    """As the ocpp library hands a request's nested object to a handler: snake_case keys."""
    return camel_to_snake_case(wire)  # type: ignore[no-any-return]


def test_a_profile_read_and_reported_back_as_sent() -> None:
    profile = profile_from_201(handed(WIRE))
    assert profile.kind is ProfileKind.RECURRING and profile.purpose is ProfilePurpose.TX_DEFAULT
    assert profile.schedule.id == 5 and profile.schedule.unit is RateUnit.WATTS
    assert profile.schedule.periods[1] == SchedulePeriod(1800, 3680.0, 1)
    assert profile.valid_to == datetime(2026, 4, 1, tzinfo=UTC) and profile.problems() == []
    assert profile_to_201(profile, None) == WIRE
    # and through the persisted form (the schedule's id too); a row written before it had one still reads
    assert ChargingProfile.from_dict(profile.to_dict()) == profile
    old_row = profile.to_dict()
    del old_row["schedule"]["id"]
    assert ChargingProfile.from_dict(old_row).schedule.id is None


@pytest.mark.parametrize(("change", "code"), [
    ({"chargingProfilePurpose": "ChargingStationExternalConstraints"}, "UnsupportedParam"),
    ({"chargingProfileKind": "Absolute", "recurrencyKind": None}, None),  # Absolute with startSchedule: fine
    ({"chargingProfileKind": "Relative", "recurrencyKind": None}, "InvalidSchedule"),  # K01.FR.41
    ({"chargingSchedule": [{**WIRE["chargingSchedule"][0], "startSchedule": None}]}, "InvalidSchedule"),  # FR.40
    ({"chargingSchedule": [WIRE["chargingSchedule"][0], {**WIRE["chargingSchedule"][0], "id": 6}]},
     "InvalidSchedule"),  # ISO 15118's choice of schedules
    ({"chargingSchedule": [{**WIRE["chargingSchedule"][0], "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 16.0, "numberPhases": 1, "phaseToUse": 2}]}]}, "UnsupportedParam"),
])
def test_what_2_0_1_refuses_before_the_charger_layer_looks(change: dict[str, Any], code: str | None) -> None:
    wire = {k: v for k, v in {**WIRE, **change}.items() if v is not None}
    wire["chargingSchedule"] = [{k: v for k, v in s.items() if v is not None} for s in wire["chargingSchedule"]]
    if code is None:
        assert profile_from_201(handed(wire)).kind is ProfileKind.ABSOLUTE
        return
    with pytest.raises(NotAProfile) as refused:
        profile_from_201(handed(wire))
    assert refused.value.reason_code == code and str(refused.value)


def _profile(pid: int, purpose: ProfilePurpose = ProfilePurpose.TX_DEFAULT, stack: int = 1, *,
             valid_from: datetime | None = None, valid_to: datetime | None = None) -> ChargingProfile:
    return ChargingProfile(pid, stack, purpose, ProfileKind.ABSOLUTE, ChargingSchedule(
        RateUnit.AMPERES, (SchedulePeriod(0, 10.0),), start=NOW), valid_from=valid_from, valid_to=valid_to)


def _put(held: tuple[InstalledProfile, ...], connector: int, profile: ChargingProfile,
         rule: SameStackLevel) -> Any:
    running = {1: RunningTransaction(4, NOW, "tx-uuid")}
    return install(held, connector, profile, connectors=(1, 2), running=running, limits=ProfileLimits(), now=NOW,
                   same_stack_level=rule)


def test_the_same_stack_level_replaces_in_1_6_and_is_refused_in_2_0_1_where_both_can_be_valid() -> None:
    first = _put((), 1, _profile(1, valid_to=NOW + timedelta(hours=2)), SameStackLevel.REPLACES)
    assert first.accepted
    replaced = _put(first.installed, 1, _profile(2), SameStackLevel.REPLACES)  # 1.6 §3.13.2
    assert replaced.accepted and [p.profile.id for p in replaced.installed] == [2]

    refused = _put(first.installed, 1, _profile(2), SameStackLevel.REFUSED_IF_OVERLAPPING)  # K01.FR.06
    assert not refused.accepted and refused.refusal is Refusal.SAME_STACK_LEVEL and refused.installed == \
        first.installed
    later = _put(first.installed, 1, _profile(3, valid_from=NOW + timedelta(hours=2)),
                 SameStackLevel.REFUSED_IF_OVERLAPPING)  # starts when the first ends: both held
    assert later.accepted and {p.profile.id for p in later.installed} == {1, 3}
    for other in (_put(first.installed, 2, _profile(4), SameStackLevel.REFUSED_IF_OVERLAPPING),  # another EVSE
                  _put(first.installed, 1, _profile(5, stack=2), SameStackLevel.REFUSED_IF_OVERLAPPING),
                  _put(first.installed, 1, _profile(1, valid_to=None), SameStackLevel.REFUSED_IF_OVERLAPPING)):
        assert other.accepted  # the same id replaces in both versions (K01.FR.05)

    tx = _put((), 1, _profile(6, ProfilePurpose.TX), SameStackLevel.REFUSED_IF_OVERLAPPING)
    again = _put(tx.installed, 1, _profile(7, ProfilePurpose.TX), SameStackLevel.REFUSED_IF_OVERLAPPING)
    assert not again.accepted and again.refusal is Refusal.SAME_STACK_LEVEL  # K01.FR.39: the same transaction


def test_each_refusal_says_its_kind() -> None:
    held: tuple[InstalledProfile, ...] = ()
    cases = [(9, _profile(1), Refusal.UNKNOWN_CONNECTOR), (1, _profile(1, stack=9), Refusal.STACK_LEVEL),
             (1, _profile(1, ProfilePurpose.CHARGER_MAX), Refusal.WRONG_CONNECTOR),
             (2, _profile(1, ProfilePurpose.TX), Refusal.NO_TRANSACTION)]
    for connector, profile, kind in cases:
        result = _put(held, connector, profile, SameStackLevel.REPLACES)
        assert not result.accepted and result.refusal is kind and result.reason
    assert floor_limit(16.09) == 16.0 and floor_limit(7.3) == 7.3  # never above the limit applied


class _Scheduler:
    """What SmartCharging reads of the scheduler to select and report (the real one is in the E2E tests)."""

    def __init__(self, installed: list[InstalledProfile]) -> None:
        self.installed = tuple(installed)
        self.limits = ProfileLimits()


def test_get_charging_profiles_selects_by_every_field_and_reports_in_pages(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    ledger = Ledger(db)
    ledger.start(1, 4, "CARD", 0, NOW)
    ledger.set_transaction_id(1, 4, "tx-uuid")
    ctx = V201Context(parse_config(GOOD), {}, db, DeviceModel(db), ledger, Outbox(db), lambda _: None)
    held = [InstalledProfile(1, _profile(100 + i, stack=i % 3)) for i in range(PROFILES_PER_REPORT + 2)]
    held += [InstalledProfile(0, _profile(1, ProfilePurpose.CHARGER_MAX, 0)),
             InstalledProfile(1, _profile(2, ProfilePurpose.TX, 5), transaction=4)]
    feature = SmartCharging(ctx, _Scheduler(held), None)  # type: ignore[arg-type]

    def ids(evse: int | None, **criterion: Any) -> set[int]:
        return {p.profile.id for p in feature.select(evse, criterion)}

    assert ids(0, charging_profile_purpose=None) == {1}  # EVSE 0: the station's own only
    assert len(ids(None)) == len(held) and len(ids(1)) == len(held) - 1
    assert ids(1, charging_profile_purpose="TxProfile") == {2}
    assert ids(None, stack_level=0, charging_profile_purpose="TxDefaultProfile") == {100, 103, 106, 109}
    assert ids(None, charging_profile_id=[2, 101, 999]) == {2, 101}
    assert ids(None, charging_limit_source=["EMS", "SO"]) == set()  # all were set by the CSMS (CSO)
    assert ids(None, charging_profile_purpose="ChargingStationExternalConstraints") == set()

    reports = feature.reports(42, feature.select(None, {}))
    assert [(r["evseId"], len(r["chargingProfile"]), r["tbc"]) for r in reports] == [
        (0, 1, True), (1, PROFILES_PER_REPORT, True), (1, 3, False)]
    assert {r["requestId"] for r in reports} == {42} and {r["chargingLimitSource"] for r in reports} == {"CSO"}
    tx_profile = next(p for r in reports for p in r["chargingProfile"] if p["id"] == 2)
    assert tx_profile["transactionId"] == "tx-uuid"  # the station's id of the transaction it is bound to
    assert ctx.variables.get("SmartChargingCtrlr", "Entries", "ChargingProfiles") == str(len(held))
    assert ctx.variables.get("SmartChargingCtrlr", "RateUnit") == "A,W"


def test_external_limits_are_reported_after_the_csms_own_profiles_of_their_evse(tmp_path: Path) -> None:
    """The energy manager's limits and the fail-safe (the LimitApplier's ``site`` / ``failsafe`` sources) are
    selected by every criterion and reported as ChargingStationExternalConstraints in their own messages:
    chargingLimitSource EMS / Other, ids below 0, after the CSMS's profiles of the same EVSE."""
    db = Database(tmp_path / "agent.db")
    ctx = V201Context(parse_config(GOOD), {}, db, DeviceModel(db), Ledger(db), Outbox(db), lambda _: None)
    applier = LimitApplier({}, {1: 32.0, 2: 32.0})
    feature = SmartCharging(ctx, _Scheduler([InstalledProfile(1, _profile(7))]), None,  # type: ignore[arg-type]
                            applier)
    applier.set(SITE, 10.0, 1)
    applier.set(FAILSAFE, 20.0)

    def ids(evse: int | None, **criterion: Any) -> list[int]:
        return [external_profile_id(e) for e in feature.select_external(evse, criterion)]

    assert ids(None) == [-2, -11] and ids(0) == [-2] and ids(1) == [-11] and ids(2) == []
    assert ids(None, charging_limit_source=["EMS"]) == [-11] and ids(None, charging_limit_source=["CSO"]) == []
    assert ids(None, charging_profile_purpose="TxDefaultProfile") == [] and ids(None, stack_level=1) == []
    assert ids(None, charging_profile_purpose="ChargingStationExternalConstraints", charging_profile_id=[-2]) == [-2]
    reports = feature.reports(5, feature.select(None, {}), feature.select_external(None, {}))
    assert [(r["evseId"], r["chargingLimitSource"], [p["id"] for p in r["chargingProfile"]], r["tbc"])
            for r in reports] == [(0, "Other", [-2], True), (1, "CSO", [7], True), (1, "EMS", [-11], False)]
    failsafe = reports[0]["chargingProfile"][0]
    assert failsafe["chargingProfilePurpose"] == "ChargingStationExternalConstraints"
    assert failsafe["chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 20.0}]
    applier.clear(SITE, 1)
    assert ids(None) == [-2]
