"""The OCPP 2.0.1 device model (firmware/ocpp/v201/device_model.py + device_model.json): the description file,
values checked against it, the attribute statuses of Get/SetVariables, persistence and first-boot presets, and
``[ocpp] version`` with its presets in the agent configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import ConfigError, parse_config
from firmware.ocpp.presets import check_presets
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey, check_preset, load_description, markdown_table
from firmware.storage import Database
from tests.test_config import GOOD

HEARTBEAT = VariableKey("OCPPCommCtrlr", "HeartbeatInterval")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "agent.db")


def test_description_covers_the_slice_and_every_default_is_valid() -> None:
    definitions = load_description()  # raises on a default that breaks its own description
    components = {k.component for k in definitions}
    assert {"OCPPCommCtrlr", "TxCtrlr", "AuthCtrlr", "AuthCacheCtrlr", "SampledDataCtrlr",
            "DeviceDataCtrlr"} <= components
    assert definitions[HEARTBEAT].unit == "s"


@pytest.mark.parametrize(("key", "value", "problem"), [
    (HEARTBEAT, "60", None),
    (HEARTBEAT, "-1", "outside"),
    (HEARTBEAT, "1.5", "not an integer"),
    (VariableKey("AuthCtrlr", "LocalPreAuthorize"), "True", "not a boolean"),
    (VariableKey("SampledDataCtrlr", "TxUpdatedMeasurands"), "Energy.Active.Import.Register,Voltage", None),
    (VariableKey("SampledDataCtrlr", "TxUpdatedMeasurands"), "Energy.Active.Import.Register,Bogus", "not one of"),
    (VariableKey("SampledDataCtrlr", "TxUpdatedMeasurands"), "Voltage,Voltage", "twice"),
])
def test_values_are_checked_against_their_description(key: VariableKey, value: str, problem: str | None) -> None:
    found = load_description()[key].problem(value)
    assert found is None if problem is None else (found is not None and problem in found)


def test_get_and_set_statuses_and_persistence(db: Database) -> None:
    model = DeviceModel(db)
    seen: list[tuple[VariableKey, str]] = []
    model.on_change(lambda k, v: seen.append((k, v)), {HEARTBEAT})
    assert model.get_variable(HEARTBEAT).status == "Accepted"
    assert model.get_variable(VariableKey("Nope", "HeartbeatInterval")).status == "UnknownComponent"
    assert model.get_variable(VariableKey("OCPPCommCtrlr", "Nope")).status == "UnknownVariable"
    assert model.get_variable(VariableKey("OCPPCommCtrlr", "HeartbeatInterval", "x")).status == "UnknownComponent"
    assert model.get_variable(HEARTBEAT, "MinSet").status == "NotSupportedAttributeType"
    assert model.set_variable(HEARTBEAT, "30").status == "Accepted"
    assert model.set_variable(VariableKey("TxCtrlr", "TxStopPoint"), "ParkingBayOccupancy").status == "Rejected"
    assert model.set_variable(HEARTBEAT, "x").status == "Rejected"
    assert model.set_variable(VariableKey("OCPPCommCtrlr", "WebSocketPingInterval"), "10").status == "RebootRequired"
    assert seen == [(HEARTBEAT, "30")]
    assert DeviceModel(db).get_int("OCPPCommCtrlr", "HeartbeatInterval") == 30  # on disk


def test_presets_are_written_at_the_first_start_only(db: Database) -> None:
    model = DeviceModel(db, presets={"OCPPCommCtrlr.HeartbeatInterval": "90",
                                     "OCPPCommCtrlr.MessageAttempts[TransactionEvent]": "5"})
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 90
    assert model.get_int("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent") == 5
    model.set_variable(HEARTBEAT, "45")
    again = DeviceModel(db, presets={"OCPPCommCtrlr.HeartbeatInterval": "90"})
    assert again.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 45  # the CSMS owns it now


def test_check_preset() -> None:
    assert check_preset("OCPPCommCtrlr.HeartbeatInterval", "10") is None
    assert "Component.Variable" in (check_preset("HeartbeatInterval", "10") or "")
    assert "ReadOnly" in (check_preset("DeviceDataCtrlr.ItemsPerMessage[GetVariables]", "5") or "")
    assert check_preset("TxCtrlr.TxStartPoint", "EVConnected,Authorized") is None
    assert "not one of" in (check_preset("TxCtrlr.TxStartPoint", "ParkingBayOccupancy") or "")
    assert "outside" in (check_preset("OCPPCommCtrlr.HeartbeatInterval", "-3") or "")


V201 = GOOD + """
[ocpp]
csms_url = "ws://127.0.0.1:9000/ocpp"
version = "2.0.1"

[ocpp.presets]
"OCPPCommCtrlr.HeartbeatInterval" = 60
"""


def test_config_version_201_and_its_presets() -> None:
    cfg = check_presets(parse_config(V201, "a.toml"))
    assert cfg.ocpp is not None and cfg.ocpp.version == "2.0.1"
    with pytest.raises(ConfigError) as info:
        parse_config(V201.replace('version = "2.0.1"', 'version = "2.0"'), "a.toml")
    assert str(info.value).startswith("a.toml: ocpp.version: expected one of 1.6, 2.0.1")
    with pytest.raises(ConfigError) as info:
        check_presets(parse_config(V201.replace('"OCPPCommCtrlr.HeartbeatInterval" = 60', "HeartbeatInterval = 60"),
                                   "a.toml"))
    assert str(info.value).startswith("a.toml: ocpp.presets.HeartbeatInterval: expected a variable of the OCPP "
                                      "2.0.1 device model")


def test_docs_table_is_generated_from_the_description() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "ocpp201.md").read_text(encoding="utf-8")
    begin = "<!-- BEGIN DEVICE MODEL (generated by python -m firmware.ocpp.v201.device_model) -->\n"
    copied = doc[doc.index(begin) + len(begin):doc.index("<!-- END DEVICE MODEL -->")]
    assert copied == markdown_table(), "docs/ocpp201.md: regenerate with python -m firmware.ocpp.v201.device_model"
