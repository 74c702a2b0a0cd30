"""End to end: the CSMS configures and queries the charger.

GetConfiguration / ChangeConfiguration (known, unknown, invalid, read-only keys, and that a change
really applies), ChangeAvailability (one connector, the whole charge point, during a transaction,
unknown connector), DataTransfer in both directions, and clock-aligned meter values.

The tests share two stations (agent process, simulated devices and CSMS) per module, one with one connector and
one with two; the fixtures ``one`` and ``two`` put a station back to neutral after each test
(tests/station_neutral.py), whichever ran before. The hardware summary of the first boot has a station of its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import pytest_asyncio

from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import back_to_neutral

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"
#: the keys tests change, at the value every test starts with (the agent's defaults; Station's presets)
KEYS = {"HeartbeatInterval": "300", "MeterValueSampleInterval": "0", "ClockAlignedDataInterval": "0",
        "MeterValuesAlignedData": "Energy.Active.Import.Register", "StopTxnAlignedData": "",
        "StopTxnSampledData": "Energy.Active.Import.Register"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def one_station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("config1"), connectors=1, heartbeat_interval=300,
                       presets={"ConnectionTimeOut": 45}) as s:
        await s.start_agent()
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def two_station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("config2"), connectors=2) as s:
        await s.start_agent()
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def one(one_station: Station) -> AsyncIterator[Station]:
    """The one-connector station, put back to neutral after the test."""
    yield one_station
    await back_to_neutral(one_station, KEYS)


@pytest_asyncio.fixture(loop_scope="module")
async def two(two_station: Station) -> AsyncIterator[Station]:
    """The two-connector station, put back to neutral after the test."""
    yield two_station
    await back_to_neutral(two_station, KEYS)


def _parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def test_get_configuration_known_unknown_and_all_keys(one: Station) -> None:
    s = one
    answer = await s.csms.get_configuration(CP_ID, ["ConnectionTimeOut", "NumberOfConnectors", "NoSuchKey"])
    assert answer["configurationKey"] == [
        {"key": "ConnectionTimeOut", "readonly": False, "value": "45"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "1"}]
    assert answer["unknownKey"] == ["NoSuchKey"]
    everything = await s.csms.get_configuration(CP_ID)
    keys = {e["key"]: e for e in everything["configurationKey"]}
    assert "unknownKey" not in everything
    # the Core profile's required keys are all there (OCPP 1.6 §9.1)
    for key in ("AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut",
                "GetConfigurationMaxKeys", "HeartbeatInterval", "LocalAuthorizeOffline", "LocalPreAuthorize",
                "MeterValuesAlignedData", "MeterValuesSampledData", "MeterValueSampleInterval",
                "NumberOfConnectors", "ResetRetries", "ConnectorPhaseRotation",
                "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId", "StopTxnAlignedData",
                "StopTxnSampledData", "SupportedFeatureProfiles", "TransactionMessageAttempts",
                "TransactionMessageRetryInterval", "UnlockConnectorOnEVSideDisconnect"):
        assert key in keys, key
    assert keys["SupportedFeatureProfiles"]["readonly"] is True


async def test_change_configuration_answers_and_the_change_applies(one: Station) -> None:
    s = one
    change = s.csms.change_configuration
    assert (await change(CP_ID, "NoSuchKey", "1"))["status"] == "NotSupported"
    assert (await change(CP_ID, "HeartbeatInterval", "often"))["status"] == "Rejected"
    assert (await change(CP_ID, "HeartbeatInterval", "-5"))["status"] == "Rejected"
    assert (await change(CP_ID, "MeterValuesSampledData", "Energy.Active.Import.Register,Bogus"))[
        "status"] == "Rejected"
    assert (await change(CP_ID, "NumberOfConnectors", "4"))["status"] == "Rejected"  # read-only
    got = await s.csms.get_configuration(CP_ID, ["HeartbeatInterval", "NumberOfConnectors"])
    assert [e["value"] for e in got["configurationKey"]] == ["300", "1"]
    # HeartbeatInterval 300 -> 1: heartbeats start, about 1 s apart (never closer; a loaded run may be later)
    mark = s.mark()
    assert (await change(CP_ID, "HeartbeatInterval", "1"))["status"] == "Accepted"
    first = await s.wait_call("Heartbeat", since=mark)
    second = await s.wait_call("Heartbeat", since=first.seq + 1)
    assert 0.7 <= (second.ts - first.ts).total_seconds() < 10, (first.ts, second.ts)  # not the 300 s of before
    got = await s.csms.get_configuration(CP_ID, ["HeartbeatInterval"])
    assert got["configurationKey"][0]["value"] == "1"


async def test_changed_meter_value_sample_interval_applies_to_a_running_transaction(one: Station) -> None:
    s = one
    began = s.mark()
    tx_id = await s.start_session(1, CARD)
    await s.quiet(1.5)
    mark = s.mark()
    assert not s.calls("MeterValues", began)  # sampling off
    assert (await s.csms.change_configuration(CP_ID, "MeterValueSampleInterval", "1"))["status"] == "Accepted"
    first = await s.wait_call("MeterValues", since=mark)
    second = await s.wait_call("MeterValues", since=first.seq + 1)
    assert first.payload["transactionId"] == tx_id == second.payload["transactionId"]
    sampled = first.payload["meterValue"][0]["sampledValue"]
    assert {v["context"] for v in sampled} == {"Sample.Periodic"}
    # sampled every 1 s by the agent's clock (the readings' own timestamps; when they arrived varies with load)
    taken = [_parse(e.payload["meterValue"][0]["timestamp"]) for e in (first, second)]
    assert 0.5 <= (taken[1] - taken[0]).total_seconds() <= 2.0, taken


async def test_change_availability_of_one_connector_and_of_the_charge_point(two: Station) -> None:
    s = two
    mark = s.mark()
    assert (await s.csms.change_availability(CP_ID, 3, "Inoperative"))["status"] == "Rejected"
    assert (await s.csms.change_availability(CP_ID, 2, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(2, "Unavailable", since=mark)
    assert s.statuses(1, mark) == [] and s.statuses(0, mark) == []
    # the whole charge point: connector 0 and every connector
    whole = s.mark()
    assert (await s.csms.change_availability(CP_ID, 0, "Inoperative"))["status"] == "Accepted"
    await s.wait_status(0, "Unavailable", since=whole)
    await s.wait_status(1, "Unavailable", since=whole)
    await s.quiet(0.3)
    assert s.statuses(2, whole) == []  # already Unavailable: no repeated report
    # an unavailable connector refuses an EV and a card
    seen = len(s.log())
    s.ev(1).plug()
    await s.wait_log(lambda e: e.get("event") == "PilotChanged" and e.get("device") == "board1"
                     and e.get("state") == "B", since=seen, what="the agent saw the EV")
    await s.tap(CARD)
    await s.quiet(0.5)
    assert not s.calls("StartTransaction", whole) and not s.calls("Authorize", whole)
    back = s.mark()
    assert (await s.csms.change_availability(CP_ID, 0, "Operative"))["status"] == "Accepted"
    await s.wait_status(0, "Available", since=back)
    await s.wait_status(1, "Preparing", since=back)  # the EV is still plugged in
    await s.wait_status(2, "Available", since=back)


async def test_change_availability_during_a_transaction_is_scheduled(one: Station) -> None:
    s = one
    tx_id = await s.start_session(1, CARD)
    mark = s.mark()
    assert (await s.csms.change_availability(CP_ID, 1, "Inoperative"))["status"] == "Scheduled"
    await s.quiet(0.5)
    assert s.statuses(1, mark) == [] and not s.calls("StopTransaction", mark)
    await s.tap(CARD)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id
    await s.wait_status(1, "Unavailable", since=mark)
    await s.quiet(0.3)
    assert s.statuses(1, mark)[-1] == "Unavailable"
    # it persists: a new card is refused, and so is a remote start
    again = s.mark()
    await s.tap(CARD)
    assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=1))["status"] == "Rejected"
    await s.quiet(0.3)
    assert not s.calls("StartTransaction", again)


async def test_data_transfer_from_the_csms(one: Station) -> None:
    s = one
    unknown = await s.csms.data_transfer(CP_ID, "com.example", message_id="Diagnostics")
    assert unknown == {"status": "UnknownVendorId"}
    wrong_message = await s.csms.data_transfer(CP_ID, "evse-agent", message_id="NoSuchMessage")
    assert wrong_message["status"] == "UnknownMessageId"
    # vendorId is a CiString255: compared without regard to case
    diagnostics = await s.csms.data_transfer(CP_ID, "EVSE-Agent", message_id="Diagnostics")
    assert diagnostics["status"] == "Accepted"
    data = json.loads(diagnostics["data"])
    assert set(data["devices"]) == {"board1", "meter1", "reader1"}
    assert data["connectors"][0]["connector"] == 1 and data["connectors"][0]["status"] == "Available"


async def test_data_transfer_hardware_summary_after_the_first_accepted_boot(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=2, boot_statuses=["Pending", "Accepted"]) as s:
        await s.start_agent()
        transfer = await s.wait_call("DataTransfer")
        assert transfer.payload["vendorId"] == "evse-agent" and transfer.payload["messageId"] == "Hardware"
        accepted = [e for e in s.calls("BootNotification")
                    if (r := s.csms.transcript.response_to(e)) and r.payload["status"] == "Accepted"]
        assert accepted and accepted[0].seq < transfer.seq
        summary = json.loads(transfer.payload["data"])
        assert summary["chargePointModel"] and summary["firmwareVersion"]
        assert [c["connector"] for c in summary["connectors"]] == [1, 2]
        first = summary["connectors"][0]
        assert first["board"]["driver"] == "ioboard" and first["board"]["name"] == "board1"
        assert first["cable"] == "socket_with_lock" and first["board"]["lockSupported"] is True
        assert first["meter"]["model"] == "sdm630" and first["meter"]["unit"] == 1
        assert [r["driver"] for r in summary["readers"]] == ["pn532"]
        # once per boot, not again after a mere reconnect
        mark = s.mark()
        await s.csms.disconnect(CP_ID)
        await s.wait_booted(since=mark)
        await s.quiet(0.5)
        assert not s.calls("DataTransfer", mark) and not s.calls("BootNotification", mark)


async def test_clock_aligned_meter_values(two: Station) -> None:
    s = two
    began = s.mark()
    keys = {"MeterValuesAlignedData": "Energy.Active.Import.Register",
            "StopTxnAlignedData": "Energy.Active.Import.Register", "StopTxnSampledData": "",
            "ClockAlignedDataInterval": "2"}  # the interval last: every aligned value is sampled as set above
    for key, value in keys.items():
        assert (await s.csms.change_configuration(CP_ID, key, value, timeout_s=WAIT_S))["status"] == "Accepted"
    # idle connectors report too, without a transactionId
    idle = await s.wait_call("MeterValues", since=began)
    assert "transactionId" not in idle.payload
    tx_id = await s.start_session(1, CARD)
    mark = s.mark()
    await s.wait_call("MeterValues", lambda e: e.payload.get("transactionId") == tx_id, since=mark)
    await s.wait_call("MeterValues", lambda e: e.payload.get("transactionId") == tx_id, since=s.mark())
    await s.tap(CARD)
    stop = await s.wait_call("StopTransaction", since=mark)
    values = [e.payload for e in s.calls("MeterValues", began)]
    for p in values:
        assert len(p["meterValue"]) == 1
        mv = p["meterValue"][0]
        stamp = _parse(mv["timestamp"])
        assert stamp.microsecond == 0 and stamp.second % 2 == 0, mv["timestamp"]  # on the 2 s grid
        assert [(v["measurand"], v["context"], v["unit"]) for v in mv["sampledValue"]] == [
            ("Energy.Active.Import.Register", "Sample.Clock", "Wh")]
        assert p.get("transactionId") in (None, tx_id)
    started = _parse(s.calls("StartTransaction", began)[0].payload["timestamp"])
    stopped = _parse(stop.payload["timestamp"])
    in_tx = [p for p in values if "transactionId" in p]
    assert len(in_tx) >= 2 and all(p["connectorId"] == 1 for p in in_tx)
    assert all(started <= _parse(p["meterValue"][0]["timestamp"]) <= stopped for p in in_tx)
    connector2 = [p for p in values if p["connectorId"] == 2]
    assert connector2 and all("transactionId" not in p for p in connector2)
    # StopTxnAlignedData: the clock-aligned samples of the transaction travel with the stop
    data = stop.payload["transactionData"]
    clock = [mv for mv in data if mv["sampledValue"][0]["context"] == "Sample.Clock"]
    assert len(clock) >= 2
    assert all(_parse(mv["timestamp"]).second % 2 == 0 for mv in clock)


async def test_charge_point_inoperative_during_a_transaction_then_across_a_restart(two: Station) -> None:
    s = two
    tx_id = await s.start_session(1, CARD)
    mark = s.mark()
    assert (await s.csms.change_availability(CP_ID, 0, "Inoperative"))["status"] == "Scheduled"
    await s.wait_status(2, "Unavailable", since=mark)  # the idle connector goes at once
    await s.quiet(0.5)
    assert s.statuses(1, mark) == [] and s.statuses(0, mark) == []  # the charge point waits for the stop
    await s.tap(CARD)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id
    await s.wait_status(1, "Unavailable", since=mark)
    await s.wait_status(0, "Unavailable", since=mark)
    # ChangeAvailability persists across a reboot (§5.2)
    await s.stop_agent()
    restart = s.mark()
    await s.start_agent()
    await s.quiet(0.5)
    assert [s.statuses(c, restart) for c in (0, 1, 2)] == [["Unavailable"]] * 3
    back = s.mark()
    assert (await s.csms.change_availability(CP_ID, 0, "Operative"))["status"] == "Accepted"
    await s.wait_status(0, "Available", since=back)
    await s.wait_status(1, "Preparing", since=back)
    await s.wait_status(2, "Available", since=back)
