"""OCPP 2.0.1 end to end: the agent process with ``[ocpp] version = "2.0.1"``, simulated devices on ptys and the
simulated CSMS speaking 2.0.1 (subprotocol ocpp2.0.1, every request checked against the library's 2.0.1 schemas).

The OCTT 2.0.1 test case each test stands for is named in its docstring where there is one.

Most tests share one station (agent process, two EVSEs, simulated devices and CSMS) per module: the ``station``
fixture puts it back to neutral after each test (tests/station_neutral.py: CSMS online, no EV, no transaction,
the variables tests change at their first values), whichever ran before. The tests of the boot itself, and
those that kill, reset or restart the agent, have a station of their own.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sim.csms.transcript import EntryKind, TranscriptEntry
from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import back_to_neutral_201, variables_201

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: the variables tests of the shared station change (put back to the values they had when it booted)
CHANGED = ["OCPPCommCtrlr.HeartbeatInterval", "OCPPCommCtrlr.OfflineThreshold", "SampledDataCtrlr.TxUpdatedInterval",
           "AlignedDataCtrlr.Interval", "AuthCtrlr.OfflineTxForUnknownIdEnabled"]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Station, dict[str, str]]]:
    async with Station(tmp_path_factory.mktemp("ocpp201"), ocpp="2.0.1") as s:
        await s.start_agent()
        yield s, await variables_201(s, CHANGED)


@pytest_asyncio.fixture(loop_scope="module")
async def station(shared: tuple[Station, dict[str, str]]) -> AsyncIterator[Station]:
    """The module's shared station, put back to neutral after the test."""
    s, first = shared
    yield s
    await back_to_neutral_201(s, first)


async def _set(s: Station, values: dict[str, str]) -> None:
    answer = await s.csms.set_variables(CP_ID, values, timeout_s=WAIT_S)
    assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted"] * len(values), answer


async def test_cold_boot_statuses_and_heartbeat(tmp_path: Path) -> None:
    """TC_B_01_CS (cold boot, Accepted) and G01: BootNotification with reason PowerUp first, then every EVSE's
    connector Available; Heartbeat after HeartbeatInterval without other traffic."""
    async with Station(tmp_path, ocpp="2.0.1", heartbeat_interval=1) as s:
        await s.start_agent()
        assert s.csms.session(CP_ID).connection.subprotocol == "ocpp2.0.1"
        boot = s.calls("BootNotification")
        assert len(boot) == 1
        assert boot[0].payload["reason"] == "PowerUp"
        assert boot[0].payload["chargingStation"]["vendorName"] == "evse-agent"
        assert s.csms.transcript.messages(CP_ID)[0].action == "BootNotification"
        for evse in (1, 2):
            await s.wait_status(evse, "Available")
            status = next(e for e in s.calls("StatusNotification") if e.payload["evseId"] == evse)
            assert status.payload["connectorId"] == 1
        await s.wait_call("Heartbeat")
        assert s.csms.state(CP_ID).heartbeat_count >= 1


async def test_boot_pending_and_rejected_then_accepted(tmp_path: Path) -> None:
    """TC_B_02_CS / TC_B_03_CS: while Pending or Rejected nothing but BootNotification is sent, and the interval
    given is honoured between attempts."""
    async with Station(tmp_path, ocpp="2.0.1", boot_statuses=["Pending", "Rejected", "Accepted"]) as s:
        await s.start_agent(wait_boot=False)
        await s.wait_status(1, "Available")
        calls = s.calls()
        boots = [i for i, e in enumerate(calls) if e.action == "BootNotification"]
        assert len(boots) == 3
        assert all(e.action == "BootNotification" for e in calls[: boots[-1] + 1])
        times = [calls[i].ts for i in boots]
        assert all((b - a).total_seconds() >= 0.9 for a, b in itertools.pairwise(times))


def _events(s: Station, since: int = 0) -> list[dict]:
    return [e.payload for e in s.calls("TransactionEvent", since)]


async def _plug_and_tap(s: Station, mark: int, card: str = "04A1B2C3") -> TranscriptEntry:
    """EV plugged into EVSE 1, then a card tapped: until the Started event; returns it."""
    s.ev(1).plug()
    await s.wait_status(1, "Occupied", since=mark)
    await s.tap(card)
    return await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)


async def test_plug_tap_charge_unplug_transaction_events(station: Station) -> None:
    """TC_E_01_CS (start PowerPathClosed) / TC_E_03_CS (local start, cable plugin first) and TC_E_17_CS (stop: the
    EV unplugged deauthorizes, StopTxOnEVSideDisconnect true); TC_J_07_CS (sampled values in Started) and TC_J_09_CS
    (in Updated): Authorize with the id token and its type; TransactionEvent Started,
    Updated (charging state, periodic meter values), Ended in order with seqNo 0, 1, 2, ... and the station's
    own UUID throughout; meter values with Transaction.Begin in Started and Transaction.End in Ended."""
    s = station
    await _set(s, {"SampledDataCtrlr.TxUpdatedInterval": "1"})
    s.csms.behaviour.id_tags.accept("04A1B2C3")
    mark = s.mark()
    started = await _plug_and_tap(s, mark)
    authorize = await s.wait_call("Authorize", since=mark)
    assert authorize.payload["idToken"] == {"idToken": "04A1B2C3", "type": "ISO14443"}
    tx_id = started.payload["transactionInfo"]["transactionId"]
    assert str(uuid.UUID(tx_id)) == tx_id
    assert started.payload["seqNo"] == 0 and started.payload["triggerReason"] == "Authorized"
    assert started.payload["idToken"] == {"idToken": "04A1B2C3", "type": "ISO14443"}
    assert started.payload["evse"] == {"id": 1, "connectorId": 1}
    assert "offline" not in started.payload
    begin = started.payload["meterValue"][0]["sampledValue"][0]
    assert begin["context"] == "Transaction.Begin" and begin["measurand"] == "Energy.Active.Import.Register"
    await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "MeterValuePeriodic",
                      since=mark)
    await s.wait_until(lambda: any(e["transactionInfo"].get("chargingState") == "Charging"
                                   for e in _events(s, mark)), what="chargingState Charging reported")
    unplugged = s.mark()
    s.ev(1).unplug()
    ended = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=unplugged)
    await s.wait_status(1, "Available", since=unplugged)
    info = ended.payload["transactionInfo"]
    assert info["transactionId"] == tx_id and info["stoppedReason"] == "EVDisconnected"
    assert ended.payload["triggerReason"] == "EVCommunicationLost"
    end = ended.payload["meterValue"][0]["sampledValue"][0]
    assert end["context"] == "Transaction.End" and end["value"] > begin["value"]
    events = _events(s, mark)
    assert {e["transactionInfo"]["transactionId"] for e in events} == {tx_id}
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    types = [e["eventType"] for e in events]
    assert types[0] == "Started" and types[-1] == "Ended" and set(types[1:-1]) == {"Updated"}
    tx = s.csms.state(CP_ID).transactions201[tx_id]
    assert not tx.is_open and tx.seq_nos == list(range(len(events)))
    assert not [line for line in s.log() if line.get("level") in ("ERROR", "CRITICAL")]


async def test_kill_9_mid_transaction_then_ended_after_restart(tmp_path: Path) -> None:
    """Power loss during a transaction (E: the transaction's messages are kept through a power cut): the
    agent is killed with SIGKILL while charging; after the restart the same transaction ends with
    stoppedReason PowerLoss, its seqNo continuing, and a new BootNotification (reason PowerUp)."""
    async with Station(tmp_path, ocpp="2.0.1") as s:
        s.csms.behaviour.id_tags.accept("04A1B2C3")
        await s.start_agent()
        mark = s.mark()
        started = await _plug_and_tap(s, mark)
        tx_id = started.payload["transactionInfo"]["transactionId"]
        energy = s.charger.connector_state(1)["energy_wh"]
        await s.wait_until(lambda: s.charger.connector_state(1)["energy_wh"] > energy + 1, what="energy flowing")
        await s.kill_agent()
        await s.start_agent()
        ended = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
        assert ended.payload["transactionInfo"]["transactionId"] == tx_id
        assert ended.payload["transactionInfo"]["stoppedReason"] == "PowerLoss"
        events = _events(s, mark)
        assert [e["seqNo"] for e in events] == list(range(len(events)))
        assert [e["eventType"] for e in events].count("Ended") == 1
        assert len(s.calls("BootNotification")) == 2
        assert s.calls("BootNotification", mark)[0].payload["reason"] == "PowerUp"


async def test_get_and_set_variables(tmp_path: Path) -> None:
    """TC_B_06_CS..TC_B_08_CS / TC_B_09_CS..: GetVariables and SetVariables item by item with every attribute
    status: Accepted, Rejected (read-only; invalid value), UnknownComponent, UnknownVariable,
    NotSupportedAttributeType, RebootRequired; a value set is read back and kept across a restart."""
    async with Station(tmp_path, ocpp="2.0.1") as s:
        await s.start_agent()

        def item(component: str, variable: str, instance: str | None = None) -> dict:
            v: dict = {"name": variable}
            if instance is not None:
                v["instance"] = instance
            return {"component": {"name": component}, "variable": v}

        answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
            item("OCPPCommCtrlr", "HeartbeatInterval"),
            item("TxCtrlr", "TxStartPoint"),
            item("NoSuchCtrlr", "HeartbeatInterval"),
            item("OCPPCommCtrlr", "NoSuchVariable"),
            {**item("OCPPCommCtrlr", "HeartbeatInterval"), "attributeType": "Target"},
            item("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
        ]}, timeout_s=WAIT_S)
        results = answer["getVariableResult"]
        assert [r["attributeStatus"] for r in results] == [
            "Accepted", "Accepted", "UnknownComponent", "UnknownVariable", "NotSupportedAttributeType", "Accepted"]
        assert results[0]["attributeValue"] == "300" and results[1]["attributeValue"] == "PowerPathClosed"
        assert results[5]["variable"] == {"name": "MessageAttempts", "instance": "TransactionEvent"}

        answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [
            {**item("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "120"},
            {**item("TxCtrlr", "TxStartPoint"), "attributeValue": "ParkingBayOccupancy"},
            {**item("TxCtrlr", "EVConnectionTimeOut"), "attributeValue": "-5"},
            {**item("AuthCtrlr", "LocalPreAuthorize"), "attributeValue": "maybe"},
            {**item("NoSuchCtrlr", "X"), "attributeValue": "1"},
            {**item("AuthCtrlr", "NoSuchVariable"), "attributeValue": "1"},
            {**item("OCPPCommCtrlr", "HeartbeatInterval"), "attributeValue": "5", "attributeType": "MaxSet"},
            {**item("OCPPCommCtrlr", "WebSocketPingInterval"), "attributeValue": "30"},
            {**item("TxCtrlr", "EVConnectionTimeOut"), "attributeValue": "90"},
        ]}, timeout_s=WAIT_S)
        results = answer["setVariableResult"]
        assert [r["attributeStatus"] for r in results] == [
            "Accepted", "Rejected", "Rejected", "Rejected", "UnknownComponent", "UnknownVariable",
            "NotSupportedAttributeType", "RebootRequired", "Accepted"]
        assert results[1]["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
        answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
            item("OCPPCommCtrlr", "HeartbeatInterval")]}, timeout_s=WAIT_S)
        assert answer["getVariableResult"][0]["attributeValue"] == "120"
        await s.stop_agent()
        await s.start_agent()
        answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
            item("TxCtrlr", "EVConnectionTimeOut"), item("OCPPCommCtrlr", "WebSocketPingInterval")]},
            timeout_s=WAIT_S)
        assert [r["attributeValue"] for r in answer["getVariableResult"]] == ["90", "30"]


async def test_get_variables_over_items_per_message(station: Station) -> None:
    """TC_B_08_CS: a GetVariablesRequest with DeviceDataCtrlr.ItemsPerMessage[GetVariables] + 1 items is answered
    item by item, the first ItemsPerMessage Accepted and the last Rejected; the same for SetVariables, where the
    item over the limit is not applied."""
    s = station
    limit_item = {"component": {"name": "DeviceDataCtrlr"},
                  "variable": {"name": "ItemsPerMessage", "instance": "GetVariables"}}
    answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [limit_item]}, timeout_s=WAIT_S)
    limit = int(answer["getVariableResult"][0]["attributeValue"])
    item = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
    answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [item] * (limit + 1)},
                               timeout_s=WAIT_S)
    assert [r["attributeStatus"] for r in answer["getVariableResult"]] == ["Accepted"] * limit + ["Rejected"]
    sets = [{**item, "attributeValue": "200"}] * limit + [{**item, "attributeValue": "201"}]
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": sets}, timeout_s=WAIT_S)
    assert [r["attributeStatus"] for r in answer["setVariableResult"]] == ["Accepted"] * limit + ["Rejected"]
    answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [item]}, timeout_s=WAIT_S)
    assert answer["getVariableResult"][0]["attributeValue"] == "200"


async def test_offline_transaction_is_flagged_and_delivered_after_reconnect(station: Station) -> None:
    """TC_E_43_CS (transaction during an offline period): with the CSMS unreachable an unknown id is let charge
    (AuthCtrlr.OfflineTxForUnknownIdEnabled); its Started and Ended carry ``offline: true`` and are delivered,
    in order, once the CSMS is back."""
    s = station
    await _set(s, {"AuthCtrlr.OfflineTxForUnknownIdEnabled": "true"})
    await s.csms.set_online(False)
    s.ev(1).plug()
    await s.tap("04A1B2C3")
    await s.wait_until(lambda: s.charger.connector_state(1)["contactor_closed"], what="charging offline")
    s.ev(1).unplug()
    await s.wait_until(lambda: not s.charger.connector_state(1)["contactor_closed"], what="stopped")
    mark = s.mark()
    await s.csms.set_online(True)
    ended = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
    events = _events(s, mark)
    assert events[0]["eventType"] == "Started" and events[-1] == ended.payload
    assert all(e.get("offline") is True for e in events)
    assert [e["seqNo"] for e in events] == list(range(len(events)))


async def test_reconnect_reports_statuses_by_offline_threshold(station: Station) -> None:
    """G01 / OCPPCommCtrlr.OfflineThreshold: after a reconnect within the threshold only the status that changed
    while offline is sent; after one beyond it (threshold 0) every EVSE's status again."""
    s = station
    await _set(s, {"OCPPCommCtrlr.HeartbeatInterval": "1"})
    await s.csms.set_online(False)
    s.ev(1).plug()
    mark = s.mark()
    await s.csms.set_online(True)
    await s.wait_status(1, "Occupied", since=mark)
    await s.wait_call("Heartbeat", since=s.mark())  # the status worker had its turn: nothing else queued
    assert s.statuses(2, mark) == [] and s.statuses(1, mark) == ["Occupied"]
    await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [{
        "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "OfflineThreshold"},
        "attributeValue": "0"}]}, timeout_s=WAIT_S)
    await s.csms.set_online(False)
    mark = s.mark()
    await s.csms.set_online(True)
    await s.wait_status(1, "Occupied", since=mark)
    await s.wait_status(2, "Available", since=mark)


async def test_remote_start_and_stop(station: Station) -> None:
    """TC_F_01_CS (Remote start transaction - Cable plugin first), TC_F_08_CS / TC_F_09_CS (Remote stop transaction
    - Success / Rejected), TC_F_13_CS (Trigger message - TransactionEvent - Specific EVSE), TC_E_35_CS (stop
    PowerPathClosed - Remote stop): RequestStartTransaction with an IdToken and remoteStartId on EVSE 1 with an EV
    plugged in; the id is authorized first (AuthCtrlr.AuthorizeRemoteStart), Started has triggerReason RemoteStart
    and the remoteStartId; RequestStopTransaction with the station's transaction id ends it with stoppedReason
    Remote; an unknown transaction id is Rejected. E14 GetTransactionStatus while the Started event is still
    unanswered: messagesInQueue and ongoingIndicator true."""
    s = station
    s.csms.behaviour.id_tags.accept("APP-USER-1")
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Occupied", since=mark)
    s.csms.behaviour.faults.set_delay("TransactionEvent", 2.0)  # Started stays queued for a while
    answer = await s.csms.call(CP_ID, "RequestStartTransaction", {
        "idToken": {"idToken": "APP-USER-1", "type": "Central"}, "remoteStartId": 42, "evseId": 1},
        timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    authorize = await s.wait_call("Authorize", since=mark)
    assert authorize.payload["idToken"] == {"idToken": "APP-USER-1", "type": "Central"}
    started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
    assert started.payload["triggerReason"] == "RemoteStart"
    assert started.payload["transactionInfo"]["remoteStartId"] == 42
    tx_id = started.payload["transactionInfo"]["transactionId"]
    # E14: the Started event is not answered yet, so it is still queued
    status = await s.csms.call(CP_ID, "GetTransactionStatus", {"transactionId": tx_id}, timeout_s=WAIT_S)
    assert status == {"messagesInQueue": True, "ongoingIndicator": True}
    s.csms.behaviour.faults.set_delay("TransactionEvent", 0.0)
    # F06 TriggerMessage TransactionEvent: an Updated event, triggerReason Trigger, of the same transaction
    answer = await s.csms.call(CP_ID, "TriggerMessage", {"requestedMessage": "TransactionEvent",
                                                         "evse": {"id": 1}}, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    triggered = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "Trigger",
                                  since=mark)
    assert triggered.payload["eventType"] == "Updated"
    assert triggered.payload["transactionInfo"]["transactionId"] == tx_id
    unknown = await s.csms.call(CP_ID, "RequestStopTransaction", {"transactionId": str(uuid.uuid4())},
                                timeout_s=WAIT_S)
    assert unknown["status"] == "Rejected"
    answer = await s.csms.call(CP_ID, "RequestStopTransaction", {"transactionId": tx_id}, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    ended = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
    assert ended.payload["transactionInfo"]["transactionId"] == tx_id
    assert ended.payload["transactionInfo"]["stoppedReason"] == "Remote"
    assert ended.payload["triggerReason"] == "RemoteStop"


async def test_availability_unlock_clear_cache_and_reset(tmp_path: Path) -> None:
    """G03 / G04 ChangeAvailability of one EVSE and of the station; F05 UnlockConnector of an unknown connector;
    C11 ClearCache; B11 Reset Immediate: the agent restarts and boots again with reason RemoteReset."""
    async with Station(tmp_path, ocpp="2.0.1") as s:
        await s.start_agent(supervised=True)
        mark = s.mark()
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {
            "operationalStatus": "Inoperative", "evse": {"id": 2}}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_status(2, "Unavailable", since=mark)
        assert s.statuses(1, mark) == []
        answer = await s.csms.call(CP_ID, "ChangeAvailability", {"operationalStatus": "Operative"}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_status(2, "Available", since=mark)
        answer = await s.csms.call(CP_ID, "UnlockConnector", {"evseId": 7, "connectorId": 1}, timeout_s=WAIT_S)
        assert answer["status"] == "UnknownConnector"
        answer = await s.csms.call(CP_ID, "ClearCache", {}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        mark = s.mark()
        answer = await s.csms.call(CP_ID, "Reset", {"type": "Immediate"}, timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        boot = await s.wait_call("BootNotification", since=mark)
        assert boot.payload["reason"] == "RemoteReset"
        assert s.exit_codes and s.exit_codes[-1] == 75


async def test_get_base_report_and_transaction_status(station: Station) -> None:
    """TC_B_53_CS-like GetBaseReport FullInventory: Accepted, then NotifyReport pages with the same requestId,
    seqNo 0, 1, … and tbc true on all but the last, holding every variable of the device model (the 2.0.1 schema
    checked by the CSMS); ConfigurationInventory leaves out the ReadOnly ones (the other kinds and GetReport:
    tests/test_e2e_ocpp201_device_model.py). E14 GetTransactionStatus: nothing queued, no ongoing transaction for an
    unknown id."""
    from firmware.ocpp.v201.device_model import load_description

    definitions = load_description()
    s = station
    mark = s.mark()
    for request_id, base in ((7, "FullInventory"), (8, "ConfigurationInventory")):
        answer = await s.csms.call(CP_ID, "GetBaseReport", {"requestId": request_id, "reportBase": base},
                                   timeout_s=WAIT_S)
        assert answer["status"] == "Accepted"
        await s.wait_call("NotifyReport", lambda e, r=request_id: e.payload["requestId"] == r
                          and not e.payload.get("tbc", False), since=mark)
        pages = [e.payload for e in s.calls("NotifyReport", mark) if e.payload["requestId"] == request_id]
        assert [p["seqNo"] for p in pages] == list(range(len(pages)))
        assert [p.get("tbc", False) for p in pages] == [True] * (len(pages) - 1) + [False]
        reported = {(d["component"]["name"], d["variable"]["name"], d["variable"].get("instance"))
                    for p in pages for d in p["reportData"]}
        expected = {(k.component, k.variable, k.variable_instance) for k, d in definitions.items()
                    if base == "FullInventory" or d.writable}
        assert reported == expected
    answer = await s.csms.call(CP_ID, "GetTransactionStatus", {"transactionId": str(uuid.uuid4())},
                               timeout_s=WAIT_S)
    assert answer == {"messagesInQueue": False, "ongoingIndicator": False}


async def test_trigger_message(station: Station) -> None:
    """F06 TriggerMessage: TC_F_20_CS (Heartbeat) and TC_F_23_CS (StatusNotification of one EVSE - Available,
    though nothing changed) are sent after the answer; TC_F_26_CS BootNotification once accepted and TransactionEvent
    without a transaction are Rejected; TC_F_27_CS a message the station does not implement (SignV2GCertificate) is
    NotImplemented; an unknown EVSE is Rejected. (MeterValues: tests/test_e2e_ocpp201_cfg.py.)"""
    s = station
    mark = s.mark()

    async def trigger(message: str, evse: int | None = None) -> str:
        payload: dict = {"requestedMessage": message}
        if evse is not None:
            payload["evse"] = {"id": evse}
        return str((await s.csms.call(CP_ID, "TriggerMessage", payload, timeout_s=WAIT_S))["status"])

    assert await trigger("Heartbeat") == "Accepted"
    await s.wait_call("Heartbeat", since=mark)
    assert await trigger("StatusNotification", 2) == "Accepted"
    await s.wait_status(2, "Available", since=mark)
    assert s.statuses(1, mark) == []
    assert await trigger("BootNotification") == "Rejected"
    assert await trigger("TransactionEvent", 1) == "Rejected"
    assert await trigger("SignV2GCertificate") == "NotImplemented"
    assert await trigger("StatusNotification", 9) == "Rejected"
    assert len(s.calls("BootNotification")) == 1


async def test_invalid_calls_get_201_error_codes(station: Station) -> None:
    """OCPP-J 2.0.1 framing on the wire (Table 8 spellings): an unknown action NotImplemented, a 2.0.1 action not
    taken here NotSupported, a missing required property OccurrenceConstraintViolation, an unknown property
    FormatViolation, a wrong type TypeConstraintViolation, a payload that is not an object FormatViolation — and
    the station still answers afterwards."""
    import json

    s = station
    mark = s.mark()

    async def error_for(uid: str, frame: list[object]) -> str:
        await s.send_raw(json.dumps(frame))
        reply = await s.wait_reply(uid, since=mark)
        assert reply.kind is EntryKind.CALLERROR, reply.raw
        return reply.error_code or ""

    assert await error_for("u1", [2, "u1", "MakeCoffee", {}]) == "NotImplemented"
    assert await error_for("u2", [2, "u2", "GetDisplayMessages", {"requestId": 1}]) == "NotSupported"
    assert await error_for("u3", [2, "u3", "GetVariables", {}]) == "OccurrenceConstraintViolation"
    assert await error_for("u4", [2, "u4", "ClearCache", {"bogus": 1}]) == "FormatViolation"
    assert await error_for("u5", [2, "u5", "Reset", {"type": 5}]) == "TypeConstraintViolation"
    assert await error_for("u6", [2, "u6", "ClearCache", [1]]) == "FormatViolation"
    answer = await s.csms.call(CP_ID, "ClearCache", {}, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"


async def test_clock_aligned_values(station: Station) -> None:
    """TC_J_01_CS (no transaction ongoing) and TC_J_02_CS (transaction ongoing), AlignedDataCtrlr: at the end of
    every Interval (aligned to the clock) Sample.Clock values — in an Updated event (triggerReason MeterValueClock)
    for the EVSE with a transaction, in MeterValues for the idle one; the timestamps on the interval's grid."""
    s = station
    await _set(s, {"AlignedDataCtrlr.Interval": "2"})
    s.csms.behaviour.id_tags.accept("04A1B2C3")
    mark = s.mark()
    started = await _plug_and_tap(s, mark)
    clock = await s.wait_call("TransactionEvent", lambda e: e.payload["triggerReason"] == "MeterValueClock",
                              since=mark)
    assert clock.payload["transactionInfo"]["transactionId"] == started.payload["transactionInfo"]["transactionId"]
    idle = await s.wait_call("MeterValues", lambda e: e.payload["evseId"] == 2, since=mark)
    for payload in (clock.payload, idle.payload):
        value = payload["meterValue"][0]
        assert value["sampledValue"][0]["context"] == "Sample.Clock"
        assert int(value["timestamp"][17:19]) % 2 == 0 and value["timestamp"].endswith(".000Z")
