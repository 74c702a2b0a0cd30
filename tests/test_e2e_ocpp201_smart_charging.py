"""OCPP 2.0.1 K Smart Charging end to end: the agent process with ``[ocpp] version = "2.0.1"``, simulated devices
on ptys and the simulated 2.0.1 CSMS (every request and answer checked against the library's 2.0.1 schemas).

The profile rules, stacking and composite are the charger layer's, shared with 1.6 (tests/test_e2e_smart_charging.py
and the unit tests cover them in depth); these tests check the 2.0.1 translation and that the limit reaches the
EV: the simulated board's pilot. One station for the module (the tests run in order, each clears the profiles it
set); the OCTT 2.0.1 test case each test stands for is in its name. The station has the site's MQTT broker (a real
mosquitto): its energy manager is the external system whose limits K11-K13 report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from sim.csms.charging_profiles import Period, charging_profile_201
from tests.mqtt_broker import Mosquitto, Subscriber
from tests.station import CP_ID, WAIT_S, Station
from tests.test_e2e_mqtt import ROOT, mqtt_section

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"
TOKEN = {"idToken": CARD, "type": "ISO14443"}
RATING_A = 32.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mosquitto]:
    async with Mosquitto(tmp_path_factory.mktemp("broker")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def s(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("k"), ocpp="2.0.1", connectors=2,
                       extra_config=mqtt_section(broker)) as station:
        station.csms.behaviour.id_tags.accept(CARD)
        await station.start_agent()
        yield station


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def absolute(profile_id: int, stack: int, purpose: str, amps: float, **kw: Any) -> dict[str, Any]:
    return charging_profile_201(profile_id, stack, purpose, [Period(0, amps)], start=now() - timedelta(seconds=5),
                                **kw)


async def set_profile(s: Station, evse: int, profile: dict[str, Any]) -> dict[str, Any]:
    return await s.csms.set_charging_profile201(CP_ID, evse, profile, timeout_s=WAIT_S)


async def clear_all(s: Station) -> None:
    await s.csms.clear_charging_profile201(CP_ID, timeout_s=WAIT_S)


async def offered(s: Station, evse: int, amps: float) -> None:
    """Until the simulated board offers ``amps`` on the EVSE's pilot (0: no PWM offer)."""
    board = s.charger.connectors[evse].board
    await s.wait_until(lambda: board.offered_current_a == pytest.approx(amps, abs=0.6),
                       what=f"EVSE {evse} offering {amps} A (offers {board.offered_current_a})")


def composite_limits(answer: dict[str, Any]) -> list[float]:
    return [p["limit"] for p in answer["schedule"]["chargingSchedulePeriod"]]


async def start_transaction(s: Station, evse: int) -> str:
    """EV plugged, card tapped: until the Started event; its transactionId."""
    mark = s.mark()
    s.ev(evse).plug()
    await s.wait_status(evse, "Occupied", since=mark)
    await s.tap(CARD)
    started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started"
                                and e.payload["evse"]["id"] == evse, since=mark)
    return str(started.payload["transactionInfo"]["transactionId"])


async def end_transaction(s: Station, evse: int) -> None:
    mark = s.mark()
    s.ev(evse).unplug()
    await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
    await s.wait_status(evse, "Available", since=mark)


async def test_tc_k_39_k_47_composite_without_profiles_and_the_variables(s: Station) -> None:
    """TC_K_39_CS: no profile installed: the composite is the EVSE's rating; TC_K_47_CS: an unknown EVSE is
    Rejected; GetChargingProfiles says NoProfiles; the SmartChargingCtrlr variables say what the station takes."""
    answer = await s.csms.get_composite_schedule201(CP_ID, 1, 300, "A", timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    assert answer["schedule"]["evseId"] == 1 and answer["schedule"]["duration"] == 300
    assert answer["schedule"]["chargingRateUnit"] == "A"
    assert composite_limits(answer) == [RATING_A]
    station = await s.csms.get_composite_schedule201(CP_ID, 0, 300, "A", timeout_s=WAIT_S)
    assert composite_limits(station) == [2 * RATING_A]  # EVSE 0: the whole station's draw
    unknown = await s.csms.get_composite_schedule201(CP_ID, 7, 300, timeout_s=WAIT_S)
    assert unknown["status"] == "Rejected" and unknown["statusInfo"]["reasonCode"] == "UnknownEvse"
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 1)
    assert (status, reports) == ("NoProfiles", [])
    names = ["Available", "Enabled", "Entries", "LimitChangeSignificance", "PeriodsPerSchedule", "ProfileStackLevel",
             "RateUnit"]
    got = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
        {"component": {"name": "SmartChargingCtrlr"},
         "variable": {"name": n, **({"instance": "ChargingProfiles"} if n == "Entries" else {})}} for n in names]})
    values = {r["variable"]["name"]: (r["attributeStatus"], r.get("attributeValue")) for r in got["getVariableResult"]}
    assert values == {"Available": ("Accepted", "true"), "Enabled": ("Accepted", "true"),
                      "Entries": ("Accepted", "0"), "LimitChangeSignificance": ("Accepted", "1.0"),
                      "PeriodsPerSchedule": ("Accepted", "48"), "ProfileStackLevel": ("Accepted", "8"),
                      "RateUnit": ("Accepted", "A,W")}


async def test_tc_k_01_k_60_k_02_k_16_tx_default_then_tx_profile_on_the_pilot(s: Station) -> None:
    """TC_K_01_CS: a TxDefaultProfile on EVSE 1 limits the session that starts there (the pilot offers 10 A);
    TC_K_60_CS: a TxProfile for its transaction (the station's UUID) takes over (8 A); a TxProfile without
    transactionId (K01.FR.03), for an unknown transaction (TC_K_16_CS) or on an EVSE without one (TC_K_02_CS) is
    Rejected; the change of rate is a TransactionEvent ChargingRateChanged (LimitChangeSignificance); TC_K_30_CS /
    TC_K_32_CS: GetChargingProfiles reports them (transactionId too); TC_K_05_CS: cleared
    by id, the TxDefaultProfile shows again; TC_K_08_CS: clearing one that is not there is Unknown; the TxProfile
    ends with its transaction."""
    assert await set_profile(s, 1, absolute(101, 0, "TxDefaultProfile", 10)) == {"status": "Accepted"}
    tx = await start_transaction(s, 1)
    await offered(s, 1, 10)
    no_tx = await set_profile(s, 1, absolute(102, 1, "TxProfile", 8))
    assert no_tx["status"] == "Rejected" and no_tx["statusInfo"]["reasonCode"] == "TxNotFound"
    other = await set_profile(s, 1, absolute(102, 1, "TxProfile", 8, transaction_id="not-a-transaction"))
    assert other["status"] == "Rejected" and other["statusInfo"]["reasonCode"] == "TxNotFound"
    idle = await set_profile(s, 2, absolute(102, 1, "TxProfile", 8, transaction_id=tx))
    assert idle["status"] == "Rejected" and idle["statusInfo"]["reasonCode"] == "TxNotFound"
    mark = s.mark()
    assert await set_profile(s, 1, absolute(102, 1, "TxProfile", 8, transaction_id=tx)) == {"status": "Accepted"}
    await offered(s, 1, 8)
    # 10 A -> 8 A is more than SmartChargingCtrlr.LimitChangeSignificance (1 %): reported
    changed = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "ChargingRateChanged",
                                since=mark)
    assert changed.payload["eventType"] == "Updated" and changed.payload["transactionInfo"]["transactionId"] == tx
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 60, "A", timeout_s=WAIT_S)
    assert composite_limits(composite) == [8.0]

    status, reports = await s.csms.get_charging_profiles201(CP_ID, 2, evse_id=1)
    assert status == "Accepted" and [r["tbc"] for r in reports] == [False]
    assert reports[0]["evseId"] == 1 and reports[0]["chargingLimitSource"] == "CSO"
    profiles = {p["id"]: p for p in reports[0]["chargingProfile"]}
    assert set(profiles) == {101, 102}
    assert profiles[102]["transactionId"] == tx and profiles[102]["chargingProfilePurpose"] == "TxProfile"
    assert profiles[101]["chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 3, profile_ids=[102])
    assert status == "Accepted" and [p["id"] for r in reports for p in r["chargingProfile"]] == [102]

    assert await s.csms.clear_charging_profile201(CP_ID, profile_id=102, timeout_s=WAIT_S) == {"status": "Accepted"}
    await offered(s, 1, 10)
    assert await s.csms.clear_charging_profile201(CP_ID, profile_id=102, timeout_s=WAIT_S) == {"status": "Unknown"}
    assert await set_profile(s, 1, absolute(103, 2, "TxProfile", 6, transaction_id=tx)) == {"status": "Accepted"}
    await offered(s, 1, 6)
    await end_transaction(s, 1)
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 4, purpose="TxProfile")
    assert status == "NoProfiles"  # the TxProfile ended with its transaction
    await clear_all(s)


async def test_tc_k_03_k_10_k_40_k_06_station_maximum_stacking_and_clear_by_criteria(s: Station) -> None:
    """TC_K_03_CS: a ChargingStationMaxProfile on EVSE 0 (not on EVSE 1; not Relative, K01.FR.38) caps the pilot;
    TC_K_10_CS: a TxDefaultProfile on EVSE 0 applies to every EVSE; TC_K_40_CS: a higher stack level wins where it
    runs, the lower one shows after its duration; a second profile of the same stack level and purpose on the same
    EVSE is Rejected (K01.FR.06), not a replacement as in 1.6; TC_K_28_CS / TC_K_09_CS: a TxDefaultProfile set and
    cleared during a transaction; TC_K_07_CS: clearing an unknown stackLevel/purpose is Unknown; TC_K_06_CS: cleared
    by stackLevel and purpose; TC_K_29_CS: the profiles of EVSE 0 reported; selected by purpose, stack level and
    chargingLimitSource."""
    wrong = await set_profile(s, 1, absolute(201, 0, "ChargingStationMaxProfile", 12))
    assert wrong["status"] == "Rejected" and wrong["statusInfo"]["reasonCode"] == "InvalidValue"
    relative = await set_profile(s, 0, charging_profile_201(201, 0, "ChargingStationMaxProfile", [Period(0, 12)],
                                                            kind="Relative"))
    assert relative["status"] == "Rejected"
    assert await set_profile(s, 0, absolute(201, 0, "ChargingStationMaxProfile", 12)) == {"status": "Accepted"}
    assert await set_profile(s, 0, absolute(202, 0, "TxDefaultProfile", 16)) == {"status": "Accepted"}
    assert await set_profile(s, 0, absolute(203, 1, "TxDefaultProfile", 9, duration_s=3600)) == {
        "status": "Accepted"}
    duplicate = await set_profile(s, 0, absolute(204, 1, "TxDefaultProfile", 7))
    assert duplicate["status"] == "Rejected" and duplicate["statusInfo"]["reasonCode"] == "DuplicateProfile"
    for evse in (1, 2):
        composite = await s.csms.get_composite_schedule201(CP_ID, evse, 7200, "A", timeout_s=WAIT_S)
        periods = composite["schedule"]["chargingSchedulePeriod"]
        assert [p["limit"] for p in periods] == [9.0, 12.0]  # stack 1 for its hour, then stack 0 under the max
        assert 3590 <= periods[1]["startPeriod"] <= 3600
    watts = await s.csms.get_composite_schedule201(CP_ID, 1, 60, "W", timeout_s=WAIT_S)
    assert composite_limits(watts) == [9 * 3 * 230.0]
    await start_transaction(s, 2)
    await offered(s, 2, 9)
    # TC_K_28_CS: a TxDefaultProfile set during the transaction applies to it; TC_K_09_CS: cleared, it no longer does
    assert await set_profile(s, 2, absolute(205, 3, "TxDefaultProfile", 6)) == {"status": "Accepted"}
    await offered(s, 2, 6)
    assert await s.csms.clear_charging_profile201(CP_ID, profile_id=205, timeout_s=WAIT_S) == {"status": "Accepted"}
    await offered(s, 2, 9)
    assert await s.csms.clear_charging_profile201(CP_ID, evse_id=0, purpose="TxDefaultProfile", stack_level=7,
                                                  timeout_s=WAIT_S) == {"status": "Unknown"}  # TC_K_07_CS
    assert await s.csms.clear_charging_profile201(CP_ID, evse_id=0, purpose="TxDefaultProfile", stack_level=1,
                                                  timeout_s=WAIT_S) == {"status": "Accepted"}
    await offered(s, 2, 12)  # the TxDefaultProfile of 16 A under the station's maximum of 12 A
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 5, evse_id=0)  # TC_K_29_CS
    assert status == "Accepted" and {p["id"] for r in reports for p in r["chargingProfile"]} == {201, 202}
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 9, evse_id=0, purpose="TxDefaultProfile",
                                                            stack_level=0)  # TC_K_36_CS-like
    assert status == "Accepted" and [p["id"] for r in reports for p in r["chargingProfile"]] == [202]
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 10, sources=["CSO"])  # TC_K_34_CS-like
    assert status == "Accepted" and {p["id"] for r in reports for p in r["chargingProfile"]} == {201, 202}
    assert (await s.csms.get_charging_profiles201(CP_ID, 11, sources=["EMS", "SO"]))[0] == "NoProfiles"
    await end_transaction(s, 2)
    await clear_all(s)


async def set_significance(s: Station, percent: str) -> None:
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
        "component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "LimitChangeSignificance"},
        "attributeValue": percent}]})
    assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"


async def test_limit_change_significance_decides_which_changes_are_reported(s: Station) -> None:
    """SmartChargingCtrlr.LimitChangeSignificance 50 %: 16 A -> 12 A (25 %) is not a ChargingRateChanged event,
    12 A -> 20 A (67 %) is — the only one (the events leave in order: the second arriving means the first would
    have arrived before it)."""
    await set_significance(s, "50")
    assert await set_profile(s, 1, absolute(601, 0, "TxDefaultProfile", 16)) == {"status": "Accepted"}
    tx = await start_transaction(s, 1)
    await offered(s, 1, 16)
    mark = s.mark()
    assert await set_profile(s, 1, absolute(602, 1, "TxProfile", 12, transaction_id=tx)) == {"status": "Accepted"}
    await offered(s, 1, 12)
    assert await set_profile(s, 1, absolute(602, 1, "TxProfile", 20, transaction_id=tx)) == {"status": "Accepted"}
    await offered(s, 1, 20)
    await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "ChargingRateChanged", since=mark)
    assert [e.payload["triggerReason"] for e in s.calls("TransactionEvent", mark)].count("ChargingRateChanged") == 1
    await end_transaction(s, 1)
    await set_significance(s, "1.0")
    await clear_all(s)


async def test_tc_k_37_remote_start_with_a_tx_profile(s: Station) -> None:
    """TC_K_37_CS: RequestStartTransaction with a Relative TxProfile: Accepted, the transaction starts under it (the
    pilot offers 7 A), GetChargingProfiles reports it with the started transaction's id; a chargingProfile that is
    no TxProfile is Rejected and nothing starts."""
    mark = s.mark()
    refused = await s.csms.call(CP_ID, "RequestStartTransaction", {
        "idToken": TOKEN, "remoteStartId": 1, "evseId": 1,
        "chargingProfile": charging_profile_201(301, 0, "TxDefaultProfile", [Period(0, 7)], kind="Relative")})
    assert refused["status"] == "Rejected"
    answer = await s.csms.call(CP_ID, "RequestStartTransaction", {
        "idToken": TOKEN, "remoteStartId": 2, "evseId": 1,
        "chargingProfile": charging_profile_201(302, 0, "TxProfile", [Period(0, 7)], kind="Relative")})
    assert answer["status"] == "Accepted"
    s.ev(1).plug()
    started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
    assert started.payload["transactionInfo"]["remoteStartId"] == 2
    await offered(s, 1, 7)
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 6, evse_id=1)
    profiles = [p for r in reports for p in r["chargingProfile"]]
    assert status == "Accepted" and [p["id"] for p in profiles] == [302]
    assert profiles[0]["transactionId"] == started.payload["transactionInfo"]["transactionId"]
    await end_transaction(s, 1)


async def test_tc_k_13_profiles_survive_kill_9_and_keep_limiting(s: Station) -> None:
    """TC_K_13_CS / TC_K_105_CS-like: a TxDefaultProfile and a ChargingStationMaxProfile survive kill -9; after the
    restart they are reported and the next session is limited by them."""
    await clear_all(s)
    assert await set_profile(s, 1, absolute(401, 0, "TxDefaultProfile", 11)) == {"status": "Accepted"}
    assert await set_profile(s, 0, absolute(402, 0, "ChargingStationMaxProfile", 20)) == {"status": "Accepted"}
    await s.kill_agent()
    await s.start_agent()
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 7)
    assert status == "Accepted" and {p["id"] for r in reports for p in r["chargingProfile"]} == {401, 402}
    assert [r["evseId"] for r in reports] == [0, 1] and [r["tbc"] for r in reports] == [True, False]
    await start_transaction(s, 1)
    await offered(s, 1, 11)
    await end_transaction(s, 1)
    await clear_all(s)


async def test_k01_what_2_0_1_refuses(s: Station) -> None:
    """K01 rules 2.0.1 adds, each Rejected with its reasonCode: Absolute without startSchedule (K01.FR.40),
    Relative with one (K01.FR.41), an unknown EVSE (TC_K_14_CS), ChargingStationExternalConstraints (not the CSMS's
    to set), two chargingSchedules (ISO 15118 only), a stack level above ProfileStackLevel, a TxProfile on EVSE 0
    (TC_K_11_CS), a first period not at 0; nothing was installed."""
    cases: list[tuple[int, dict[str, Any], str]] = [
        (1, charging_profile_201(501, 0, "TxDefaultProfile", [Period(0, 10)]), "InvalidSchedule"),
        (1, charging_profile_201(502, 0, "TxDefaultProfile", [Period(0, 10)], kind="Relative", start=now()),
         "InvalidSchedule"),
        (9, absolute(503, 0, "TxDefaultProfile", 10), "UnknownEvse"),
        (0, absolute(504, 0, "ChargingStationExternalConstraints", 10), "UnsupportedParam"),
        (1, absolute(506, 9, "TxDefaultProfile", 10), "InvalidStackLevel"),
        (0, absolute(508, 0, "TxProfile", 10, transaction_id="any"), "InvalidValue"),  # TC_K_11_CS
        (1, charging_profile_201(507, 0, "TxDefaultProfile", [Period(5, 10)], start=now()), "InvalidProfile"),
    ]
    two = absolute(505, 0, "TxDefaultProfile", 10)
    two["chargingSchedule"].append({**two["chargingSchedule"][0], "id": 2})
    cases.append((1, two, "InvalidSchedule"))
    for profile_id, phases, code in ((509, 1, "UnsupportedParam"), (510, 3, "InvalidSchedule")):  # K01.FR.20 / 19
        phase = charging_profile_201(profile_id, 0, "TxDefaultProfile", [Period(0, 10, phases)], start=now())
        phase["chargingSchedule"][0]["chargingSchedulePeriod"][0]["phaseToUse"] = 2
        cases.append((1, phase, code))
    for evse, profile, code in cases:
        answer = await set_profile(s, evse, profile)
        assert answer["status"] == "Rejected" and answer["statusInfo"]["reasonCode"] == code, (profile["id"], answer)
        assert answer["statusInfo"]["additionalInfo"]
    status, _ = await s.csms.get_charging_profiles201(CP_ID, 8)
    assert status == "NoProfiles"
    assert await s.csms.clear_charging_profile201(CP_ID, purpose="ChargingStationExternalConstraints",
                                                  timeout_s=WAIT_S) == {"status": "Unknown"}


def starts_and_limits(answer: dict[str, Any]) -> list[tuple[int, float]]:
    assert answer["status"] == "Accepted", answer
    return [(p["startPeriod"], p["limit"]) for p in answer["schedule"]["chargingSchedulePeriod"]]


def near(got: list[tuple[int, float]], want: list[tuple[int, float]], slack_s: int = 4) -> bool:
    """The composite's periods as expected, each start within ``slack_s`` (the seconds between setting the
    profiles and asking for the composite: OCTT's "x" and <Configured max time deviation>)."""
    return len(got) == len(want) and all(g[1] == w[1] and abs(g[0] - w[0]) <= slack_s
                                         for g, w in zip(got, want, strict=True))


async def test_tc_k_19_recurring_daily_profile(s: Station) -> None:
    """TC_K_19_CS: a Recurring (Daily) TxDefaultProfile whose startSchedule was yesterday, a minute later than now:
    Accepted, reported with its recurrencyKind, and the composite shows today's recurrence — 6 A for the rest of
    its hour, then the rating."""
    start = now() - timedelta(days=1, seconds=60)
    profile = charging_profile_201(701, 0, "TxDefaultProfile", [Period(0, 6)], kind="Recurring", recurrency="Daily",
                                   start=start, duration_s=3600)
    assert await set_profile(s, 1, profile) == {"status": "Accepted"}
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 19, profile_ids=[701])
    reported = [p for r in reports for p in r["chargingProfile"]]
    assert status == "Accepted" and len(reported) == 1
    assert reported[0]["chargingProfileKind"] == "Recurring" and reported[0]["recurrencyKind"] == "Daily"
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 7200, "A", timeout_s=WAIT_S)
    assert near(starts_and_limits(composite), [(0, 6.0), (3600 - 60, RATING_A)])
    await clear_all(s)


async def test_tc_k_21_valid_from(s: Station) -> None:
    """TC_K_21_CS: a TxDefaultProfile valid from 300 s from now: Accepted; the composite over 400 s is the rating
    until then, 6 A from then."""
    profile = absolute(702, 0, "TxDefaultProfile", 6, valid_from=now() + timedelta(seconds=300))
    assert await set_profile(s, 1, profile) == {"status": "Accepted"}
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 400, "A", timeout_s=WAIT_S)
    assert near(starts_and_limits(composite), [(0, RATING_A), (300, 6.0)])
    await clear_all(s)


async def test_tc_k_22_valid_to(s: Station) -> None:
    """TC_K_22_CS: a TxDefaultProfile valid until 300 s from now: 6 A until then, the rating after."""
    profile = absolute(703, 0, "TxDefaultProfile", 6, valid_from=now() - timedelta(seconds=2),
                       valid_to=now() + timedelta(seconds=300))
    assert await set_profile(s, 1, profile) == {"status": "Accepted"}
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 400, "A", timeout_s=WAIT_S)
    assert near(starts_and_limits(composite), [(0, 6.0), (300, RATING_A)])
    await clear_all(s)


async def test_tc_k_23_start_schedule(s: Station) -> None:
    """TC_K_23_CS: an Absolute TxDefaultProfile whose startSchedule is 60 s from now: the rating until then,
    6 A from then (nothing before a profile's start)."""
    profile = charging_profile_201(704, 0, "TxDefaultProfile", [Period(0, 6)], start=now() + timedelta(seconds=60))
    assert await set_profile(s, 1, profile) == {"status": "Accepted"}
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 300, "A", timeout_s=WAIT_S)
    assert near(starts_and_limits(composite), [(0, RATING_A), (60, 6.0)])
    await clear_all(s)


async def test_tc_k_24_clear_by_stack_level_and_purpose_on_every_evse(s: Station) -> None:
    """TC_K_24_CS: ClearChargingProfile with stackLevel and purpose and no evseId clears the matching profiles of
    every EVSE (Accepted) and leaves the rest; the same request again is Unknown."""
    assert await set_profile(s, 1, absolute(711, 0, "TxDefaultProfile", 10)) == {"status": "Accepted"}
    assert await set_profile(s, 2, absolute(712, 0, "TxDefaultProfile", 11)) == {"status": "Accepted"}
    assert await set_profile(s, 1, absolute(713, 1, "TxDefaultProfile", 12)) == {"status": "Accepted"}
    assert await s.csms.clear_charging_profile201(CP_ID, purpose="TxDefaultProfile", stack_level=0,
                                                  timeout_s=WAIT_S) == {"status": "Accepted"}
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 24)
    assert status == "Accepted" and [p["id"] for r in reports for p in r["chargingProfile"]] == [713]
    assert await s.csms.clear_charging_profile201(CP_ID, purpose="TxDefaultProfile", stack_level=0,
                                                  timeout_s=WAIT_S) == {"status": "Unknown"}
    await clear_all(s)


async def test_tc_k_31_get_profiles_without_evse_id(s: Station) -> None:
    """TC_K_31_CS: GetChargingProfiles without evseId reports the profiles of every EVSE, EVSE 0 included: one
    ReportChargingProfiles per EVSE, in EVSE order, ``tbc`` on all but the last."""
    assert await set_profile(s, 0, absolute(721, 0, "ChargingStationMaxProfile", 30)) == {"status": "Accepted"}
    assert await set_profile(s, 1, absolute(722, 0, "TxDefaultProfile", 10)) == {"status": "Accepted"}
    assert await set_profile(s, 2, absolute(723, 0, "TxDefaultProfile", 12)) == {"status": "Accepted"}
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 31)
    assert status == "Accepted"
    assert [(r["evseId"], [p["id"] for p in r["chargingProfile"]], r["tbc"]) for r in reports] == [
        (0, [721], True), (1, [722], True), (2, [723], False)]
    assert {r["requestId"] for r in reports} == {31}
    await clear_all(s)


async def test_tc_k_33_get_profiles_of_an_evse_by_stack_level(s: Station) -> None:
    """TC_K_33_CS: GetChargingProfiles for EVSE 1 and stackLevel 1 reports only EVSE 1's profile of that stack level
    (not EVSE 1's other one, not EVSE 0's of the same level); a stack level with none there: NoProfiles."""
    assert await set_profile(s, 1, absolute(731, 0, "TxDefaultProfile", 10)) == {"status": "Accepted"}
    assert await set_profile(s, 1, absolute(732, 1, "TxDefaultProfile", 9, duration_s=600)) == {"status": "Accepted"}
    assert await set_profile(s, 0, absolute(733, 1, "TxDefaultProfile", 8)) == {"status": "Accepted"}
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 33, evse_id=1, stack_level=1)
    assert status == "Accepted" and [(r["evseId"], [p["id"] for p in r["chargingProfile"]]) for r in reports] == [
        (1, [732])]
    assert (await s.csms.get_charging_profiles201(CP_ID, 34, evse_id=1, stack_level=5))[0] == "NoProfiles"
    await clear_all(s)


async def test_tc_k_35_get_profiles_of_an_evse_by_purpose_while_charging(s: Station) -> None:
    """TC_K_35_CS (state EnergyTransferStarted): GetChargingProfiles for EVSE 1 and a purpose reports only that
    purpose's profiles there — the TxProfile with its transaction's id, or the TxDefaultProfile; a purpose not held
    there: NoProfiles."""
    assert await set_profile(s, 1, absolute(741, 0, "TxDefaultProfile", 16)) == {"status": "Accepted"}
    tx = await start_transaction(s, 1)
    await offered(s, 1, 16)
    assert await set_profile(s, 1, absolute(742, 1, "TxProfile", 12, transaction_id=tx)) == {"status": "Accepted"}
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 35, evse_id=1, purpose="TxProfile")
    profiles = [p for r in reports for p in r["chargingProfile"]]
    assert status == "Accepted" and [(p["id"], p.get("transactionId")) for p in profiles] == [(742, tx)]
    status, reports = await s.csms.get_charging_profiles201(CP_ID, 36, evse_id=1, purpose="TxDefaultProfile")
    assert status == "Accepted" and [p["id"] for r in reports for p in r["chargingProfile"]] == [741]
    assert (await s.csms.get_charging_profiles201(CP_ID, 37, evse_id=1,
                                                  purpose="ChargingStationMaxProfile"))[0] == "NoProfiles"
    await end_transaction(s, 1)
    await clear_all(s)


async def test_tc_k_41_composite_combining_purposes(s: Station) -> None:
    """TC_K_41_CS (state EnergyTransferStarted): a ChargingStationMaxProfile of 10 A for a day, a TxDefaultProfile
    (300 s: 6, 10, 8, 15, 8 A from 0, 60, 120, 180, 260 s) and a TxProfile (260 s: 8, 11, 16, 6, 12 A from 0, 50,
    140, 200, 240 s) on EVSE 1: the composite over 400 s is the TxProfile under the maximum while it runs, then the
    TxDefaultProfile, then the maximum — 8, 10, 6, 10, 8, 10 A from 0, 50, 200, 240, 260, 300 s (less the seconds
    since their common startSchedule)."""
    tx = await start_transaction(s, 1)
    start = now() - timedelta(seconds=2)
    valid = {"valid_from": start, "valid_to": start + timedelta(seconds=403)}
    assert await set_profile(s, 0, charging_profile_201(
        751, 0, "ChargingStationMaxProfile", [Period(0, 10)], start=start, duration_s=86400)) == {
        "status": "Accepted"}
    assert await set_profile(s, 1, charging_profile_201(
        752, 0, "TxDefaultProfile", [Period(0, 6), Period(60, 10), Period(120, 8), Period(180, 15), Period(260, 8)],
        start=start, duration_s=300, **valid)) == {"status": "Accepted"}
    assert await set_profile(s, 1, charging_profile_201(
        753, 0, "TxProfile", [Period(0, 8), Period(50, 11), Period(140, 16), Period(200, 6), Period(240, 12)],
        start=start, duration_s=260, transaction_id=tx, **valid)) == {"status": "Accepted"}
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 400, "A", timeout_s=WAIT_S)
    x = (datetime.fromisoformat(composite["schedule"]["scheduleStart"]) - start).total_seconds()
    assert abs((datetime.fromisoformat(composite["schedule"]["scheduleStart"]) - now()).total_seconds()) <= 3
    want = [(0, 8.0), (50, 10.0), (200, 6.0), (240, 10.0), (260, 8.0), (300, 10.0)]
    assert near(starts_and_limits(composite), [(max(0, round(t - x)), limit) for t, limit in want], slack_s=1)
    assert composite["schedule"]["duration"] == 400 and composite["schedule"]["evseId"] == 1
    await end_transaction(s, 1)
    await clear_all(s)


async def ems_limit(em: Subscriber, topic: str, payload: str) -> None:
    """The site's energy manager sets (or with ``null`` removes) a limit: until the agent accepted it."""
    mark = len(em.seen)
    await em.publish(f"{ROOT}/{topic}", payload)
    reply = await em.wait_for(f"{ROOT}/reply", lambda m: m.json()["topic"] == f"{ROOT}/{topic}", since=mark)
    assert reply.json()["accepted"] is True, reply.json()


def limit_calls(s: Station, since: int) -> list[tuple[str, dict[str, Any]]]:
    return [(e.action, e.payload) for e in s.calls(since=since)
            if e.action in ("NotifyChargingLimit", "ClearedChargingLimit")]


async def test_tc_k_52_external_limits_of_the_site_energy_manager(s: Station, broker: Mosquitto) -> None:
    """TC_K_52_CS (K12): the site's energy manager limits the whole station to 20 A: NotifyChargingLimit with
    chargingLimitSource EMS, no evseId; with NotifyChargingLimitWithSchedules, EVSE 1's 10 A comes with its schedule.
    Both bound the composite (EVSE 1 10 A, EVSE 2 and the station 20 A) and are reported by GetChargingProfiles as
    ChargingStationExternalConstraints (ids below 0), one report per EVSE and source after the CSMS's own; the CSMS
    can neither set nor clear them. K11: during a transaction 10 A -> 8 A is reported, with a TransactionEvent
    ChargingRateChanged; 8 A -> 8.05 A is within LimitChangeSignificance (1 %): not reported. K13: removed, each is
    a ClearedChargingLimit, and the composite is the rating again."""
    got = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ExternalControlSignalsEnabled"}},
        {"component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "ACPhaseSwitchingSupported"}}]})
    assert [r.get("attributeValue") for r in got["getVariableResult"]] == ["true", "false"]
    async with Subscriber(broker, f"{ROOT}/reply") as em:
        mark = s.mark()
        await ems_limit(em, "cmd/limit", "20")
        notify = await s.wait_call("NotifyChargingLimit", since=mark)
        assert notify.payload == {"chargingLimit": {"chargingLimitSource": "EMS"}}  # the whole station
        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
            "component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "NotifyChargingLimitWithSchedules"},
            "attributeValue": "true"}]})
        assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted"
        mark = s.mark()
        await ems_limit(em, "cmd/connector/1/limit", "10")
        notify = await s.wait_call("NotifyChargingLimit", since=mark)
        assert notify.payload["evseId"] == 1 and notify.payload["chargingLimit"] == {"chargingLimitSource": "EMS"}
        [schedule] = notify.payload["chargingSchedule"]
        assert schedule["chargingRateUnit"] == "A"
        assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]

        assert composite_limits(await s.csms.get_composite_schedule201(CP_ID, 1, 60, "A", timeout_s=WAIT_S)) == [
            10.0]
        assert composite_limits(await s.csms.get_composite_schedule201(CP_ID, 2, 60, "A", timeout_s=WAIT_S)) == [
            20.0]
        assert composite_limits(await s.csms.get_composite_schedule201(CP_ID, 0, 60, "A", timeout_s=WAIT_S)) == [
            20.0]
        assert await set_profile(s, 1, absolute(801, 0, "TxDefaultProfile", 16)) == {"status": "Accepted"}
        status, reports = await s.csms.get_charging_profiles201(CP_ID, 52)
        assert status == "Accepted"
        assert [(r["evseId"], r["chargingLimitSource"], [p["id"] for p in r["chargingProfile"]], r["tbc"])
                for r in reports] == [(0, "EMS", [-1], True), (1, "CSO", [801], True), (1, "EMS", [-11], False)]
        external = reports[2]["chargingProfile"][0]
        assert external["chargingProfilePurpose"] == "ChargingStationExternalConstraints"
        assert external["chargingSchedule"][0]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0}]
        status, reports = await s.csms.get_charging_profiles201(CP_ID, 53, evse_id=1,
                                                                purpose="ChargingStationExternalConstraints")
        assert status == "Accepted" and [(r["evseId"], r["chargingLimitSource"]) for r in reports] == [(1, "EMS")]
        refused = await set_profile(s, 0, absolute(802, 0, "ChargingStationExternalConstraints", 5))
        assert refused["status"] == "Rejected" and refused["statusInfo"]["reasonCode"] == "UnsupportedParam"
        assert await s.csms.clear_charging_profile201(CP_ID, purpose="ChargingStationExternalConstraints",
                                                      timeout_s=WAIT_S) == {"status": "Unknown"}

        # K11: with a transaction
        tx = await start_transaction(s, 1)
        await offered(s, 1, 10)
        mark = s.mark()
        await ems_limit(em, "cmd/connector/1/limit", "8")
        await offered(s, 1, 8)
        notify = await s.wait_call("NotifyChargingLimit", since=mark)
        assert notify.payload["evseId"] == 1
        assert notify.payload["chargingSchedule"][0]["chargingSchedulePeriod"][0]["limit"] == 8.0
        changed = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "ChargingRateChanged",
                                    since=mark)
        assert changed.payload["transactionInfo"]["transactionId"] == tx
        mark = s.mark()
        await ems_limit(em, "cmd/connector/1/limit", "8.05")  # within 1 %: not reported
        await ems_limit(em, "cmd/connector/1/limit", "null")  # K13
        await s.wait_call("ClearedChargingLimit", since=mark)
        assert limit_calls(s, mark) == [("ClearedChargingLimit", {"chargingLimitSource": "EMS", "evseId": 1})]
        await offered(s, 1, 16)  # the TxDefaultProfile again, under the station's 20 A
        await end_transaction(s, 1)
        mark = s.mark()
        await ems_limit(em, "cmd/limit", "null")
        await s.wait_call("ClearedChargingLimit", since=mark)
        assert limit_calls(s, mark) == [("ClearedChargingLimit", {"chargingLimitSource": "EMS"})]
    assert composite_limits(await s.csms.get_composite_schedule201(CP_ID, 2, 60, "A", timeout_s=WAIT_S)) == [
        RATING_A]
    assert (await s.csms.get_charging_profiles201(CP_ID, 54, sources=["EMS"]))[0] == "NoProfiles"
    await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
        "component": {"name": "SmartChargingCtrlr"}, "variable": {"name": "NotifyChargingLimitWithSchedules"},
        "attributeValue": "false"}]})
    await clear_all(s)


async def test_number_phases_1_without_phase_to_use(s: Station) -> None:
    """numberPhases 1 without phaseToUse is taken (the station picks the phase, K01): a limit in W is spread over one
    phase — 2300 W is 10 A per phase, and the composite in A says so with numberPhases 1; with phaseToUse it is
    Rejected (test_k01_what_2_0_1_refuses): SmartChargingCtrlr.ACPhaseSwitchingSupported is false."""
    profile = charging_profile_201(901, 0, "TxDefaultProfile", [Period(0, 2300, 1)], unit="W",
                                   start=now() - timedelta(seconds=5))
    assert await set_profile(s, 1, profile) == {"status": "Accepted"}
    composite = await s.csms.get_composite_schedule201(CP_ID, 1, 60, "A", timeout_s=WAIT_S)
    assert composite["schedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 10.0, "numberPhases": 1}]
    await clear_all(s)


async def test_external_limits_changed_while_offline_are_reported_after_the_reconnect(s: Station,
                                                                                     broker: Mosquitto) -> None:
    """What the energy manager changed while the CSMS was away is reported once the station is back, as the net
    change: EVSE 2 limited to 12 A then 14 A is one NotifyChargingLimit; a station limit set and removed again while
    offline is nothing."""
    async with Subscriber(broker, f"{ROOT}/reply") as em:
        await s.csms.set_online(False)
        await s.csms.wait_disconnected(CP_ID, timeout_s=WAIT_S)
        mark = s.mark()
        try:
            await ems_limit(em, "cmd/connector/2/limit", "12")
            await ems_limit(em, "cmd/limit", "5")
            await ems_limit(em, "cmd/connector/2/limit", "14")
            await ems_limit(em, "cmd/limit", "null")
        finally:
            await s.csms.set_online(True)
        await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
        await s.wait_call("NotifyChargingLimit", since=mark)
        assert composite_limits(await s.csms.get_composite_schedule201(CP_ID, 2, 60, "A", timeout_s=WAIT_S)) == [
            14.0]  # the CSMS's own request, after the report: nothing else was queued before it
        assert limit_calls(s, mark) == [("NotifyChargingLimit", {"evseId": 2,
                                                                 "chargingLimit": {"chargingLimitSource": "EMS"}})]
        mark = s.mark()
        await ems_limit(em, "cmd/connector/2/limit", "null")
        await s.wait_call("ClearedChargingLimit", since=mark)
