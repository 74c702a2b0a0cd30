"""OCPP 2.0.1 end to end, N07 NotifyEvent (firmware/ocpp/v201/notify_event.py) and the Part 2 "General" variables of
DeviceDataCtrlr / OCPPCommCtrlr / ChargingStation: one agent process, one simulated EVSE, the simulated 2.0.1 CSMS,
shared by the module. Each test leaves no EV plugged and the EVSE Available.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sim.csms.transcript import TranscriptEntry
from tests.station import CP_ID, WAIT_S, Station

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def station(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("events201"), ocpp="2.0.1", connectors=1) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        await s.wait_status(1, "Available")
        yield s


def events(s: Station, since: int = 0) -> list[dict[str, Any]]:
    """Every eventData the CSMS got, in order."""
    return [d for e in s.calls("NotifyEvent", since) for d in e.payload["eventData"]]


def about(component: str, variable: str, value: str | None = None, *, cleared: bool | None = None) -> Any:
    """A predicate on a NotifyEvent: it carries an event of that component's variable (with that value)."""
    def match(e: TranscriptEntry) -> bool:
        return any(d["component"]["name"] == component and d["variable"]["name"] == variable
                   and (value is None or d["actualValue"] == value)
                   and (cleared is None or d.get("cleared", False) == cleared) for d in e.payload["eventData"])
    return match


def only(entry: TranscriptEntry, component: str, variable: str) -> dict[str, Any]:
    found = [d for d in entry.payload["eventData"]
             if d["component"]["name"] == component and d["variable"]["name"] == variable]
    assert len(found) == 1, entry.payload
    return found[0]


async def test_availability_state_changes_are_notified_for_the_evse_and_its_connector(station: Station) -> None:
    """N07 / Part 2 AvailabilityState: plugging in makes the EVSE and its connector Occupied, unplugging Available
    again, each a HardWiredNotification, trigger Delta, eventIds rising across messages; every message valid
    (the simulated CSMS checks the schema), seqNo 0 and tbc false."""
    s = station
    mark = s.mark()
    s.ev(1).plug()
    occupied = await s.wait_call("NotifyEvent", about("EVSE", "AvailabilityState", "Occupied"), since=mark)
    evse = only(occupied, "EVSE", "AvailabilityState")
    connector = only(occupied, "Connector", "AvailabilityState")
    assert evse["component"] == {"name": "EVSE", "evse": {"id": 1}}
    assert connector["component"] == {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
    assert connector["actualValue"] == "Occupied"
    for d in (evse, connector):
        assert d["trigger"] == "Delta" and d["eventNotificationType"] == "HardWiredNotification"
    assert occupied.payload["seqNo"] == 0 and occupied.payload["tbc"] is False
    s.ev(1).unplug()
    available = await s.wait_call("NotifyEvent", about("EVSE", "AvailabilityState", "Available"), since=mark)
    ids = [d["eventId"] for d in events(s, mark)]
    assert ids == sorted(set(ids)) and only(available, "EVSE", "AvailabilityState")["eventId"] > evse["eventId"]


async def test_events_of_an_offline_period_survive_kill_9_and_go_in_order(station: Station) -> None:
    """Through the durable outbox: the CSMS offline, the EV plugged in and out and in again, the agent killed (-9)
    and started; once the CSMS is back, the three AvailabilityState changes arrive in the order they happened,
    each once, eventIds rising; nothing is told twice after the restart (the facts reported are kept)."""
    s = station
    await s.csms.set_online(False)
    mark = s.mark()
    for plugged in (True, False, True):
        seen = len(s.log())
        s.ev(1).plug() if plugged else s.ev(1).unplug()
        await s.wait_log(lambda e: e.get("msg") == "NotifyEvent queued", since=seen)
    await s.kill_agent()
    await s.start_agent(wait_boot=False)
    await s.csms.set_online(True)
    await s.wait_booted(since=mark)
    await s.wait_until(lambda: len(events(s, mark)) >= 6, what="the queued NotifyEvents delivered")
    await s.quiet(0.5)
    told = [(d["component"]["name"], d["actualValue"]) for d in events(s, mark)]
    assert told == [("EVSE", "Occupied"), ("Connector", "Occupied"), ("EVSE", "Available"),
                    ("Connector", "Available"), ("EVSE", "Occupied"), ("Connector", "Occupied")]
    ids = [d["eventId"] for d in events(s, mark)]
    assert ids == sorted(set(ids))
    back = s.mark()
    s.ev(1).unplug()
    await s.wait_call("NotifyEvent", about("EVSE", "AvailabilityState", "Available"), since=back)


async def test_tc_g_20_cs_lock_failure_is_a_problem_of_the_plug_retention_lock(station: Station) -> None:
    """TC_G_20_CS (G05 Lock Failure): the lock does not engage at the start, so no transaction starts; the station
    sends NotifyEvent ConnectorPlugRetentionLock Problem true (G05.FR.02) with the fault's techCode, the EVSE and
    connector Faulted; the variable reads true. Once the lock works and an UnlockConnector moves it, the problem
    is cleared (cleared true, actualValue false)."""
    s = station
    s.lock_stuck(1)
    mark = s.mark()
    s.ev(1).plug()
    await s.tap(CARD)
    raised = await s.wait_call("NotifyEvent", about("ConnectorPlugRetentionLock", "Problem", "true"), since=mark)
    problem = only(raised, "ConnectorPlugRetentionLock", "Problem")
    assert problem["component"] == {"name": "ConnectorPlugRetentionLock", "evse": {"id": 1, "connectorId": 1}}
    assert problem["techCode"] == "connector_lock_failure" and problem["techInfo"]
    assert "cleared" not in problem
    await s.wait_call("NotifyEvent", about("Connector", "AvailabilityState", "Faulted"), since=mark)
    assert not [e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Started"]
    got = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
        {"component": {"name": "ConnectorPlugRetentionLock", "evse": {"id": 1, "connectorId": 1}},
         "variable": {"name": "Problem"}}]}, timeout_s=WAIT_S)
    assert got["getVariableResult"][0]["attributeValue"] == "true"
    s.lock_stuck(1, False)
    back = s.mark()
    assert (await s.csms.unlock_connector_201(CP_ID, 1, timeout_s=WAIT_S))["status"] == "Unlocked"
    cleared = await s.wait_call("NotifyEvent", about("ConnectorPlugRetentionLock", "Problem", cleared=True),
                                since=back)
    gone = only(cleared, "ConnectorPlugRetentionLock", "Problem")
    assert gone["actualValue"] == "false" and gone["techCode"] == "connector_lock_failure"
    assert gone["eventId"] > problem["eventId"]
    s.ev(1).unplug()
    await s.wait_status(1, "Available", since=back)


async def test_a_lost_meter_is_a_problem_of_the_evse_while_it_stays_available(station: Station) -> None:
    """The meter's link lost (1.6: PowerMeterFailure, vendorErrorCode link_lost): no Faulted status in 2.0.1, so
    the detail is NotifyEvent EVSE Problem true, techCode link_lost and the meter in techInfo; EVSE.Problem reads
    true; back: cleared."""
    s = station
    mark = s.mark()
    s.meter_silent(1)
    raised = await s.wait_call("NotifyEvent", about("EVSE", "Problem", "true"), since=mark)
    problem = only(raised, "EVSE", "Problem")
    assert problem["techCode"] == "link_lost" and "meter" in problem["techInfo"]
    got = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Problem"}}]}, timeout_s=WAIT_S)
    assert got["getVariableResult"][0]["attributeValue"] == "true"
    assert not [st for st in s.statuses(1, mark) if st != "Available"]
    back = s.mark()
    s.meter_silent(1, False)
    cleared = await s.wait_call("NotifyEvent", about("EVSE", "Problem", cleared=True), since=back)
    assert only(cleared, "EVSE", "Problem")["actualValue"] == "false"


async def test_general_variables_and_value_sizes(station: Station) -> None:
    """Part 2 "General": DeviceDataCtrlr ValueSize / ConfigurationValueSize / ReportingValueSize (1000: a longer
    value the schema refuses before the device model — the rejection by a smaller size is unit-tested),
    OCPPCommCtrlr.NetworkProfileConnectionAttempts (3, the shared fallback's count; ReadWrite: set in
    tests/test_e2e_ocpp201_security.py), ChargingStation.AllowNewSessionsPendingFirmwareUpdate false — all but
    NetworkProfileConnectionAttempts ReadOnly (a SetVariables Rejected)."""
    s = station
    names = ["DeviceDataCtrlr.ValueSize", "DeviceDataCtrlr.ConfigurationValueSize",
             "DeviceDataCtrlr.ReportingValueSize", "OCPPCommCtrlr.NetworkProfileConnectionAttempts",
             "ChargingStation.AllowNewSessionsPendingFirmwareUpdate"]
    got = await s.csms.get_variables(CP_ID, names, timeout_s=WAIT_S)
    assert [(r["attributeStatus"], r["attributeValue"]) for r in got["getVariableResult"]] == [
        ("Accepted", "1000"), ("Accepted", "1000"), ("Accepted", "1000"), ("Accepted", "3"), ("Accepted", "false")]
    refused = await s.csms.set_variables(CP_ID, {"DeviceDataCtrlr.ValueSize": "10",
                                                 "ChargingStation.AllowNewSessionsPendingFirmwareUpdate": "true"},
                                         timeout_s=WAIT_S)
    assert [(r["attributeStatus"], r["attributeStatusInfo"]["reasonCode"]) for r in refused["setVariableResult"]
            ] == [("Rejected", "ReadOnly")] * 2
