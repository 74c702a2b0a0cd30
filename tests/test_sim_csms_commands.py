"""The operator's CSMS verbs (sim/harness/csms_commands.py): each version's message, and every message valid
against that version's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ocpp
import pytest

from sim.csms.commands201 import variable_name, variable_ref
from sim.csms.ocppj import check_payload
from sim.harness import csms_commands as c

CASES: list[tuple[str, Any, tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = [
    ("remote start on a connector", lambda v: c.remote_start(v, "04A2B3C4", connector=2, remote_start_id=7),
     ("RemoteStartTransaction", {"idTag": "04A2B3C4", "connectorId": 2}),
     ("RequestStartTransaction", {"idToken": {"idToken": "04A2B3C4", "type": "ISO14443"}, "remoteStartId": 7,
                                  "evseId": 2})),
    ("remote start anywhere", lambda v: c.remote_start(v, "A"),
     ("RemoteStartTransaction", {"idTag": "A"}),
     ("RequestStartTransaction", {"idToken": {"idToken": "A", "type": "ISO14443"}, "remoteStartId": 1})),
    ("remote stop", lambda v: c.remote_stop(v, 12),
     ("RemoteStopTransaction", {"transactionId": 12}), ("RequestStopTransaction", {"transactionId": "12"})),
    ("reset", lambda v: c.reset(v), ("Reset", {"type": "Soft"}), ("Reset", {"type": "Immediate"})),
    ("availability of everything", lambda v: c.availability(v, False),
     ("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}),
     ("ChangeAvailability", {"operationalStatus": "Inoperative"})),
    ("availability of a connector", lambda v: c.availability(v, True, connector=2),
     ("ChangeAvailability", {"connectorId": 2, "type": "Operative"}),
     ("ChangeAvailability", {"operationalStatus": "Operative", "evse": {"id": 2}})),
    ("unlock", lambda v: c.unlock(v, connector=2),
     ("UnlockConnector", {"connectorId": 2}), ("UnlockConnector", {"evseId": 2, "connectorId": 1})),
    ("clear cache", c.clear_cache, ("ClearCache", {}), ("ClearCache", {})),
    ("trigger", lambda v: c.trigger(v, "StatusNotification", connector=1),
     ("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1}),
     ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 1}})),
]


@pytest.mark.parametrize(("what", "build", "v16", "v201"), CASES, ids=[x[0] for x in CASES])
def test_each_verb_is_the_versions_message(what: str, build: Any, v16: Any, v201: Any) -> None:
    for version, owed in (("1.6", v16), ("2.0.1", v201)):
        action, payload = build(version)
        assert (action, payload) == owed
        assert check_payload(action, payload, version=version) is None, (version, action)


def test_201_only_targets_and_the_variables() -> None:
    assert c.availability("2.0.1", False, evse=1, connector=1)[1] == {
        "operationalStatus": "Inoperative", "evse": {"id": 1, "connectorId": 1}}
    assert c.unlock("2.0.1", evse=3, connector=2)[1] == {"evseId": 3, "connectorId": 2}
    assert c.reset("2.0.1", "OnIdle", evse=1)[1] == {"type": "OnIdle", "evseId": 1}
    for refused in (lambda: c.reset("1.6", evse=1), lambda: c.reset("1.6", "Immediate"),
                    lambda: c.reset("2.0.1", "Hard"), lambda: c.availability("1.6", True, evse=1),
                    lambda: c.trigger("1.6", "TransactionEvent"),
                    lambda: c.trigger("2.0.1", "DiagnosticsStatusNotification"),
                    lambda: c.remote_stop("1.6", "a-uuid"), lambda: c.get_variables("2.0.1", ["HeartbeatInterval"])):
        with pytest.raises(c.CommandError):
            refused()
    assert c.get_variables("1.6", ["HeartbeatInterval"]) == ("GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert c.set_variable("1.6", "HeartbeatInterval", "30") == ("ChangeConfiguration",
                                                                {"key": "HeartbeatInterval", "value": "30"})
    action, payload = c.set_variable("2.0.1", "OCPPCommCtrlr.MessageAttempts[TransactionEvent]", "5")
    assert action == "SetVariables" and check_payload(action, payload, version="2.0.1") is None
    item = payload["setVariableData"][0]
    assert item == {"component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "MessageAttempts", "instance": "TransactionEvent"}, "attributeValue": "5"}
    assert variable_name(item) == "OCPPCommCtrlr.MessageAttempts[TransactionEvent]"
    assert variable_ref("TxCtrlr.EVConnectionTimeOut") == {"component": {"name": "TxCtrlr"},
                                                          "variable": {"name": "EVConnectionTimeOut"}}


def test_the_trigger_lists_are_the_schemas() -> None:
    base = Path(ocpp.__file__).parent
    v16 = json.loads((base / "v16" / "schemas" / "TriggerMessage.json").read_text())
    v201 = json.loads((base / "v201" / "schemas" / "TriggerMessageRequest.json").read_text())
    assert set(c.TRIGGER_MESSAGES["1.6"]) == set(v16["properties"]["requestedMessage"]["enum"])
    assert set(c.TRIGGER_MESSAGES["2.0.1"]) == set(v201["definitions"]["MessageTriggerEnumType"]["enum"])
