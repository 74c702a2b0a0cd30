"""N07 NotifyEvent (firmware/ocpp/v201/notify_event.py): which events tell an EVSE's change, and how they look."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from firmware.ocpp.v201.dialect import OCPP201
from firmware.ocpp.v201.notify_event import (
    EMERGENCY_STOP,
    Change,
    EvseFacts,
    Problem,
    changes,
    event_data,
    facts_of,
)
from firmware.session import ConnectorStatus, SessionConfig
from firmware.session.context import ActiveFault
from hal.types import FaultCode

METER = Problem("link_lost", "meter:meter1", "no answer for 5 s")
LOCK = Problem("connector_lock_failure", "board:board1", "lock did not reach locked")


def test_a_state_change_is_told_for_the_evse_and_its_connector() -> None:
    assert changes(EvseFacts("Available"), EvseFacts("Occupied")) == [
        Change("EVSE", "AvailabilityState", "Occupied"), Change("Connector", "AvailabilityState", "Occupied")]
    assert changes(EvseFacts("Occupied"), EvseFacts("Occupied")) == []


def test_problems_raised_and_cleared() -> None:
    """A new problem: Problem true with its techCode (a lock failure on ConnectorPlugRetentionLock, G05.FR.02);
    gone: cleared, the value whether another one of that component stays."""
    quiet, meter, both = EvseFacts("Available"), EvseFacts("Available", frozenset({METER})), \
        EvseFacts("Faulted", frozenset({METER, LOCK}))
    assert changes(quiet, meter) == [Change("EVSE", "Problem", "true", problem=METER)]
    assert changes(meter, both) == [Change("EVSE", "AvailabilityState", "Faulted"),
                                    Change("Connector", "AvailabilityState", "Faulted"),
                                    Change("ConnectorPlugRetentionLock", "Problem", "true", problem=LOCK)]
    assert changes(both, meter)[2:] == [Change("ConnectorPlugRetentionLock", "Problem", "false", cleared=True,
                                               problem=LOCK)]
    assert changes(meter, quiet) == [Change("EVSE", "Problem", "false", cleared=True, problem=METER)]
    other_meter = Problem("device_error", "meter:meter1", "bad CRC")
    assert changes(EvseFacts("Available", frozenset({METER, other_meter})), meter) == [
        Change("EVSE", "Problem", "true", cleared=True, problem=other_meter)]  # the EVSE still has one


def test_event_data_is_a_valid_notify_event() -> None:
    data = [event_data(Change("EVSE", "Problem", "false", cleared=True, problem=METER), 2, 7,
                       "2026-01-01T00:00:00Z", 1000),
            event_data(Change("Connector", "AvailabilityState", "Faulted"), 2, 8, "2026-01-01T00:00:00Z", 3),
            event_data(Change("ConnectorPlugRetentionLock", "Problem", "true", problem=LOCK), 2, 9,
                       "2026-01-01T00:00:00Z", 1000)]
    payload: dict[str, Any] = {"generatedAt": "2026-01-01T00:00:00Z", "seqNo": 0, "tbc": False, "eventData": data}
    assert OCPP201.schema_violation("NotifyEvent", payload) is None
    assert data[0] == {"eventId": 7, "timestamp": "2026-01-01T00:00:00Z", "trigger": "Delta", "actualValue": "false",
                       "eventNotificationType": "HardWiredNotification", "cleared": True,
                       "component": {"name": "EVSE", "evse": {"id": 2}}, "variable": {"name": "Problem"},
                       "techCode": "link_lost", "techInfo": "no answer for 5 s (meter:meter1)"}
    assert data[1]["component"] == {"name": "Connector", "evse": {"id": 2, "connectorId": 1}}
    assert data[1]["actualValue"] == "Fau"  # cut at the reporting value size
    assert "techCode" not in data[1] and "cleared" not in data[1]
    assert data[2]["component"] == {"name": "ConnectorPlugRetentionLock", "evse": {"id": 2, "connectorId": 1}}


def test_facts_of_a_machine_and_their_storage() -> None:
    machine = SimpleNamespace(status=ConnectorStatus.FAULTED, ev_connected=True, emergency_stop_active=True,
                              config=SessionConfig(),
                              faults=(ActiveFault(FaultCode.LINK_LOST, "meter:meter1", "silent", False),))
    facts = facts_of(SimpleNamespace(machine=machine))  # type: ignore[arg-type]
    assert facts.state == "Faulted"
    assert {p.code for p in facts.problems} == {"link_lost", EMERGENCY_STOP}
    assert EvseFacts.from_json(facts.to_json()) == facts
    assert EvseFacts.from_json("{broken") is None
