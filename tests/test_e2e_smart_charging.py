"""Smart Charging end to end (agent process, simulated board and meter, simulated CSMS), after the OCTT cases of
OCPP 1.6 (TC_056 … TC_082): profiles set, cleared and queried over the wire, and the limit on the pilot.

Composite schedules are read relative to the agent's clock: each check allows the second or two a loaded machine
puts between the request and its answer. The one-connector tests with the default configuration share one station
(``one``), put back after each (tests/station_neutral.py); the others have their own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hal.duty_cycle import duty_to_current
from sim.csms.server import CallErrorReceived
from tests.mqtt_broker import Mosquitto, Subscriber
from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import Shared, configure, neutral_after, shared_station
from tests.test_e2e_mqtt import ROOT, mqtt_section

CARD = "04A1B2C3"
NO_REMOTE_AUTH = {"AuthorizeRemoteTxRequests": "false"}

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_one(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("smart1"), connectors=1) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def one(shared_one: Shared) -> AsyncIterator[Station]:
    """The shared station with one connector, put back after the test."""
    async with neutral_after(shared_one) as s:
        yield s


def profile(profile_id: int, stack_level: int, purpose: str, periods: list[tuple[int, float]], *,
            unit: str = "A", kind: str = "Absolute", start: datetime | None = None, duration: int | None = None,
            transaction_id: int | None = None, **extra: Any) -> dict[str, Any]:
    """A 1.6 csChargingProfiles."""
    schedule: dict[str, Any] = {"chargingRateUnit": unit,
                                "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}
    if duration is not None:
        schedule["duration"] = duration
    if start is not None:
        schedule["startSchedule"] = start.isoformat().replace("+00:00", "Z")
    out: dict[str, Any] = {"chargingProfileId": profile_id, "stackLevel": stack_level,
                           "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
                           "chargingSchedule": schedule, **extra}
    if transaction_id is not None:
        out["transactionId"] = transaction_id
    return out


async def set_profile(s: Station, connector: int, cs_profile: dict[str, Any]) -> str:
    answer = await s.csms.call(CP_ID, "SetChargingProfile", {"connectorId": connector,
                                                             "csChargingProfiles": cs_profile})
    return str(answer["status"])


async def composite(s: Station, connector: int, duration: int, unit: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"connectorId": connector, "duration": duration}
    if unit is not None:
        payload["chargingRateUnit"] = unit
    return await s.csms.call(CP_ID, "GetCompositeSchedule", payload)


def limits(answer: dict[str, Any]) -> list[float]:
    return [p["limit"] for p in answer["chargingSchedule"]["chargingSchedulePeriod"]]


async def offered(s: Station, connector: int, amps: float) -> None:
    """Until the simulated board offers ``amps`` on its pilot (0: no PWM offer)."""
    board = s.charger.connectors[connector].board
    await s.wait_until(lambda: board.offered_current_a == pytest.approx(amps, abs=0.6),
                       what=f"connector {connector} offering {amps} A (offers {board.offered_current_a})")


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def test_tx_default_then_composite_then_a_session_under_it(tmp_path: Path) -> None:
    """TC_056: a TxDefaultProfile on connector 0 (every connector); the composite shows it; a session that
    starts later charges under it. Also: the keys, and SupportedFeatureProfiles."""
    async with Station(tmp_path, connectors=2) as s:
        await s.start_agent()
        keys = {k["key"]: k for k in (await s.csms.call(CP_ID, "GetConfiguration", {}))["configurationKey"]}
        assert "SmartCharging" in keys["SupportedFeatureProfiles"]["value"].split(",")
        assert {k: (keys[k]["value"], keys[k]["readonly"]) for k in (
            "ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
            "MaxChargingProfilesInstalled")} == {
            "ChargeProfileMaxStackLevel": ("8", True),
            "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", True),
            "ChargingScheduleMaxPeriods": ("48", True), "MaxChargingProfilesInstalled": ("20", True)}
        t0 = now()
        assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 10), (600, 8)], start=t0,
                                               kind="Absolute")) == "Accepted"
        answer = await composite(s, 1, 900)
        assert answer["status"] == "Accepted" and answer["connectorId"] == 1
        schedule = answer["chargingSchedule"]
        # startSchedule = scheduleStart (OCTT TC_059 checks it; errata 3.57 would allow leaving it out)
        assert schedule["startSchedule"] == answer["scheduleStart"] and schedule["chargingRateUnit"] == "A"
        assert limits(answer) == [10, 8] and schedule["duration"] == 900
        start = datetime.fromisoformat(answer["scheduleStart"].replace("Z", "+00:00"))
        second = schedule["chargingSchedulePeriod"][1]["startPeriod"]
        assert abs((start + timedelta(seconds=second)) - (t0 + timedelta(seconds=600))) <= timedelta(seconds=1)
        await s.start_session(2, CARD)
        await offered(s, 2, 10)
        # an unknown connector has no composite schedule
        assert (await composite(s, 3, 60))["status"] == "Rejected"


async def test_tx_profile_needs_its_running_transaction(one: Station) -> None:
    """TC_057, TC_058_1, TC_058_2: a TxProfile is Rejected without a transaction or for another transaction's id,
    Accepted for the running one, which then charges under it; it ends with the transaction."""
    s = one
    tx = profile(5, 1, "TxProfile", [(0, 12)], kind="Relative")
    assert await set_profile(s, 1, tx) == "Rejected"  # TC_058_1: no transaction
    tx_id = await s.start_session(1, CARD)
    assert await set_profile(s, 1, {**tx, "transactionId": tx_id + 1}) == "Rejected"  # TC_058_2
    assert await set_profile(s, 0, {**tx, "transactionId": tx_id}) == "Rejected"  # connector 0: no transaction
    assert await set_profile(s, 1, {**tx, "transactionId": tx_id}) == "Accepted"  # TC_057
    await offered(s, 1, 12)
    assert limits(await composite(s, 1, 300)) == [12]
    mark = s.mark()
    await s.tap(CARD)  # the transaction ends, and its profile with it
    await s.wait_call("StopTransaction", since=mark)
    assert (await s.csms.call(CP_ID, "ClearChargingProfile", {"id": 5}))["status"] == "Unknown"


async def test_remote_start_with_a_tx_profile(one: Station) -> None:
    """TC_059 and TC_060: RemoteStartTransaction with a TxProfile starts a transaction charging under it; with any
    other purpose it is Rejected and nothing starts."""
    s = one
    await configure(s, NO_REMOTE_AUTH)
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    default = profile(7, 0, "TxDefaultProfile", [(0, 9)], kind="Relative")
    answer = await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1, charging_profile=default)
    assert answer["status"] == "Rejected"  # TC_060
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    assert not s.calls("StartTransaction", mark)
    tx = profile(8, 0, "TxProfile", [(0, 14), (3600, 7)], kind="Relative")
    answer = await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1, charging_profile=tx)
    assert answer["status"] == "Accepted"
    await s.wait_call("StartTransaction", since=mark)
    await s.wait_status(1, "Charging", since=mark)
    await offered(s, 1, 14)
    answer = await composite(s, 1, 7200)
    assert answer["chargingSchedule"]["startSchedule"] == answer["scheduleStart"]
    assert limits(answer) == [14, 7]


async def test_charger_max_tx_default_and_tx_profile_in_amperes_and_watts(one: Station) -> None:
    """TC_066: ChargePointMaxProfile + TxDefaultProfile + TxProfile; the composite is the lowest of them, in A and
    converted to W with the connector's phases and the nominal voltage (230 V, 3 phases here)."""
    s = one
    tx_id = await s.start_session(1, CARD)
    t0 = now()
    assert await set_profile(s, 0, profile(1, 0, "ChargePointMaxProfile", [(0, 16), (3600, 10)], start=t0)
                             ) == "Accepted"
    assert await set_profile(s, 0, profile(2, 0, "TxDefaultProfile", [(0, 13)], start=t0)) == "Accepted"
    assert await set_profile(s, 1, profile(3, 0, "TxProfile", [(0, 12), (1800, 20)], start=t0,
                                           transaction_id=tx_id)) == "Accepted"
    await offered(s, 1, 12)
    amps = await composite(s, 1, 5400, "A")
    assert limits(amps) == [12, 16, 10]  # TxProfile, then the charger's maximum over its 20 A, then 10 A
    watts = await composite(s, 1, 5400, "W")
    assert watts["chargingSchedule"]["chargingRateUnit"] == "W"
    assert limits(watts) == [12 * 3 * 230, 16 * 3 * 230, 10 * 3 * 230]
    # a profile given in W is converted to A on the pilot: 6,900 W / (3 x 230 V) = 10 A
    assert await set_profile(s, 1, profile(4, 1, "TxProfile", [(0, 6900)], unit="W", start=t0,
                                           transaction_id=tx_id)) == "Accepted"
    await offered(s, 1, 10)


async def test_clear_by_id_by_criteria_then_all(one: Station) -> None:
    """TC_067 and TC_072: two TxDefault stack levels (the higher for its duration, then the lower shows through);
    cleared by id, by criteria (connector, purpose, stack level), then everything; the composite after each."""
    s = one
    t0 = now()
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 20)], start=t0)) == "Accepted"
    assert await set_profile(s, 1, profile(2, 1, "TxDefaultProfile", [(0, 8)], start=t0, duration=1200)
                             ) == "Accepted"
    assert await set_profile(s, 0, profile(3, 0, "ChargePointMaxProfile", [(0, 15)], start=t0)) == "Accepted"
    assert limits(await composite(s, 1, 3600)) == [8, 15]  # TC_072: level 1 for 20 min, then level 0 (capped)
    clear = "ClearChargingProfile"
    assert (await s.csms.call(CP_ID, clear, {"id": 2}))["status"] == "Accepted"
    assert limits(await composite(s, 1, 3600)) == [15]
    assert (await s.csms.call(CP_ID, clear, {"id": 2}))["status"] == "Unknown"
    # criteria that match nothing: all of them must match
    assert (await s.csms.call(CP_ID, clear, {"connectorId": 0, "chargingProfilePurpose": "TxDefaultProfile",
                                              "stackLevel": 5}))["status"] == "Unknown"
    assert (await s.csms.call(CP_ID, clear, {"connectorId": 0, "chargingProfilePurpose": "TxDefaultProfile",
                                              "stackLevel": 0}))["status"] == "Accepted"
    assert limits(await composite(s, 1, 3600)) == [15]
    assert (await s.csms.call(CP_ID, clear, {}))["status"] == "Accepted"
    answer = await composite(s, 1, 3600)
    assert answer["status"] == "Accepted" and limits(answer) == [32]  # nothing but the connector's rating
    assert (await s.csms.call(CP_ID, clear, {}))["status"] == "Unknown"


async def test_a_new_tx_default_applies_to_the_running_transaction(one: Station) -> None:
    """TC_082 (errata 3.8): a TxDefaultProfile set during a transaction without a TxProfile limits it at once; a
    limit under 6 A pauses the offer (SuspendedEVSE) until it rises again."""
    s = one
    await s.start_session(1, CARD)
    await offered(s, 1, 32)
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 11)], kind="Relative")) == "Accepted"
    await offered(s, 1, 11)
    mark = s.mark()
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 0)], kind="Relative")) == "Accepted"
    await s.wait_status(1, "SuspendedEVSE", since=mark)
    await offered(s, 1, 0)
    mark = s.mark()
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 7)], kind="Relative")) == "Accepted"
    await s.wait_status(1, "Charging", since=mark)
    await offered(s, 1, 7)


async def test_the_pilot_follows_three_periods_within_a_second_of_each_boundary(one: Station) -> None:
    """The board's own record of its duty cycle: each period boundary reaches the pilot within 1 s."""
    s = one
    await s.start_session(1, CARD)
    board = s.charger.connectors[1].board
    t0 = now() + timedelta(seconds=2)
    steps = [(0, 16), (3, 10), (6, 13)]
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", steps, start=t0)) == "Accepted"
    await offered(s, 1, 13)
    for start_s, amps in steps:
        boundary = t0 + timedelta(seconds=start_s)
        change = next(((at, duty) for at, duty in board.pwm_changes if at >= boundary and duty is not None
                       and duty_to_current(duty / 10) == pytest.approx(amps, abs=0.3)), None)
        assert change is not None, (start_s, amps, board.pwm_changes[-6:])
        assert change[0] - boundary <= timedelta(seconds=1), (start_s, change[0] - boundary)


async def test_a_profile_survives_a_power_cut_before_its_boundary(tmp_path: Path) -> None:
    """Set, then the power is cut before the schedule's next period; after the restart (offline: the CSMS is not
    needed) the new transaction charges at the period now in force."""
    async with Station(tmp_path, connectors=1, presets={"AllowOfflineTxForUnknownId": "true"}) as s:
        await s.start_agent()
        t0 = now()
        assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 16), (4, 9)], start=t0)) == "Accepted"
        await s.kill_agent()
        await s.csms.set_online(False)
        await s.start_agent(wait_boot=False)
        await s.wait_until(lambda: datetime.now(UTC) >= t0 + timedelta(seconds=4), what="the boundary passed")
        s.ev(1).plug()
        await s.tap(CARD)
        await offered(s, 1, 9)


async def test_malformed_profiles_get_the_right_answer(one: Station) -> None:
    """The ``ocpp`` library's edges: an empty period list passes its schema (Rejected here), a limit off the 0.1
    grid is a PropertyConstraintViolation, as is an unknown purpose (errata 3.24/3.38: not FormationViolation)."""
    s = one
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [])) == "Rejected"
    assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(10, 16)])) == "Rejected"  # not from 0
    assert await set_profile(s, 0, profile(1, 9, "TxDefaultProfile", [(0, 16)])) == "Rejected"  # > max level
    assert await set_profile(s, 1, profile(1, 0, "ChargePointMaxProfile", [(0, 16)])) == "Rejected"
    for bad, code in ((profile(1, 0, "TxDefaultProfile", [(0, 16.05)]), "PropertyConstraintViolation"),
                      (profile(1, 0, "Bogus", [(0, 16)]), "PropertyConstraintViolation")):
        with pytest.raises(CallErrorReceived) as caught:
            await s.csms.call(CP_ID, "SetChargingProfile", {"connectorId": 0, "csChargingProfiles": bad},
                              validate=False, timeout_s=WAIT_S)
        assert caught.value.code == code
    # the composite of a charger with nothing installed: its rating, in both units
    assert limits(await composite(s, 1, 60, "W")) == [32 * 3 * 230]


async def test_the_limit_on_mqtt_names_the_ocpp_source_and_its_next_change(tmp_path: Path) -> None:
    """The effective limit published over MQTT carries the ``ocpp`` source and when it changes next."""
    async with Mosquitto(tmp_path / "broker") as broker, \
            Station(tmp_path, connectors=1, extra_config=mqtt_section(broker)) as s, \
            Subscriber(broker, f"{ROOT}/connector/1/limit") as sub:
        await s.start_agent()
        await s.start_session(1, CARD)
        mark = sub.mark()
        t0 = now()
        assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 10), (600, 8)], start=t0)) == "Accepted"
        limit = (await sub.wait_for(f"{ROOT}/connector/1/limit", lambda m: m.json()["limit_a"] == 10,
                                    since=mark)).json()
        assert limit["sources"]["ocpp"] == 10
        assert datetime.fromisoformat(limit["next_change"]) == t0 + timedelta(seconds=600)


async def test_the_evse_din_current_register_follows_a_profile(tmp_path: Path) -> None:
    """The other board: on an EVSE-DIN the limit is its current register (Modbus), not a PWM command."""
    async with Station(tmp_path, connectors=1, board="evse_din") as s:
        await s.start_agent()
        await s.start_session(1, CARD)
        await offered(s, 1, 32)
        assert await set_profile(s, 0, profile(1, 0, "TxDefaultProfile", [(0, 11)], kind="Relative")) == "Accepted"
        await offered(s, 1, 11)
        assert (await s.csms.call(CP_ID, "ClearChargingProfile", {}))["status"] == "Accepted"
        await offered(s, 1, 32)
