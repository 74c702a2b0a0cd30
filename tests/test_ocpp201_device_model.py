"""The OCPP 2.0.1 device model (firmware/ocpp/v201/device_model.py + device_model.json): the description file,
values checked against it, the attribute statuses of Get/SetVariables (Target, MinSet, MaxSet too), the EVSE and
Connector tiers, persistence and first-boot presets, the 1.6 keys and 2.0.1 variables as two views of one store,
and ``[ocpp] version`` with its presets in the agent configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware.config import ConfigError, parse_config
from firmware.ocpp.presets import check_presets
from firmware.ocpp.security_policy import FALLBACK_AFTER
from firmware.ocpp.v16 import features
from firmware.ocpp.v16.configuration import KEYS as CONFIGURATION_KEYS
from firmware.ocpp.v16.configuration import SETTING_PREFIX, ConfigurationKeys
from firmware.ocpp.v16.keys import ChangeResult, KeyType
from firmware.ocpp.v201.device_model import (
    SHARED_PREFIX,
    DataType,
    DeviceModel,
    GetResult,
    Mutability,
    SetResult,
    VariableKey,
    check_preset,
    load_description,
    markdown_table,
    request_size,
)
from firmware.storage import Database
from firmware.storage.settings import Settings
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
    """docs/ocpp201.md's device model table is the description file's; ``UPDATE_DOCS=1`` rewrites a stale one."""
    path = Path(__file__).parent.parent / "docs" / "ocpp201.md"
    doc = path.read_text(encoding="utf-8")
    begin = "<!-- BEGIN DEVICE MODEL (generated by python -m firmware.ocpp.v201.device_model) -->\n"
    start, end = doc.index(begin) + len(begin), doc.index("<!-- END DEVICE MODEL -->")
    if doc[start:end] != markdown_table() and os.environ.get("UPDATE_DOCS") == "1":
        path.write_text(doc[:start] + markdown_table() + doc[end:], encoding="utf-8")
        doc = path.read_text(encoding="utf-8")
    assert doc[start:doc.index("<!-- END DEVICE MODEL -->")] == markdown_table(), (
        "docs/ocpp201.md: stale device model table; rerun this test with UPDATE_DOCS=1")


# --- the physical tiers: EVSE and Connector per EVSE -------------------------------------------------------------

def test_evse_and_connector_components_exist_per_evse(db: Database) -> None:
    model = DeviceModel(db, evse_ids=[1, 2])
    evse1 = VariableKey("EVSE", "Available", evse=1)
    assert model.get_variable(evse1) == GetResult("Accepted", "true")
    assert model.get_variable(VariableKey("Connector", "Available", evse=2, connector=1)).value == "true"
    assert model.get_variable(VariableKey("EVSE", "AllowReset", evse=2)).value == "false"
    assert model.get_variable(VariableKey("EVSE", "Available", evse=3)).status == "UnknownComponent"
    assert model.get_variable(VariableKey("EVSE", "Available")).status == "UnknownComponent"  # the tier is needed
    assert model.get_variable(VariableKey("Connector", "Available", evse=1, connector=2)).status == "UnknownComponent"
    assert model.get_variable(VariableKey("EVSE", "NoSuch", evse=1)).status == "UnknownVariable"
    assert model.get_variable(VariableKey("OCPPCommCtrlr", "HeartbeatInterval", evse=1)).status == "UnknownComponent"
    assert model.set_variable(evse1, "false").status == "Rejected"  # ReadOnly
    power = VariableKey("EVSE", "Power", evse=1)
    assert model.get_variable(power) == GetResult("Accepted", "")  # provided, nothing reads it yet: unknown
    model.provide(power, lambda: "7360.0")
    model.characterize(power, maximum=22080.0)
    assert model.get_variable(power).value == "7360.0"
    assert model.definitions[power].maximum == 22080.0
    assert model.definitions[VariableKey("EVSE", "Power", evse=2)].maximum is None  # per instance


def test_inventory_reads_the_configuration_and_the_connectors(db: Database) -> None:
    """inventory.py: SupplyPhases, ConnectorType, Power's maxLimit from the configuration; AvailabilityState,
    Enabled and Problem from each connector's machine; the station's state from all of them."""
    from types import SimpleNamespace

    from firmware.ocpp.v201.context import V201Context
    from firmware.ocpp.v201.inventory import describe_inventory
    from firmware.session import ConnectorStatus, SessionConfig
    from firmware.storage.ledger import Ledger
    from firmware.storage.outbox import Outbox

    config = parse_config(GOOD)
    ids = [c.id for c in config.connectors]
    model = DeviceModel(db, evse_ids=ids)
    machines = {i: SimpleNamespace(status=ConnectorStatus.AVAILABLE, ev_connected=False, config=SessionConfig())
                for i in ids}
    connectors = {i: SimpleNamespace(machine=machines[i], latest_reading=None) for i in ids}
    ctx = V201Context(config, connectors, db, model, Ledger(db), Outbox(db), lambda _: None)  # type: ignore[arg-type]
    problems: set[tuple[int, str]] = set()  # (EVSE, component) with a problem that does not make them Faulted
    describe_inventory(ctx, lambda e, component="EVSE": (e, component) in problems)
    first = config.connectors[0]
    assert model.get("EVSE", "SupplyPhases", evse=first.id) == str(first.phases)
    assert model.get("Connector", "ConnectorType", evse=first.id, connector=1) in ("sType2", "cType2")
    assert model.definitions[VariableKey("EVSE", "Power", evse=first.id)].maximum == round(
        first.max_current_a * first.phases * config.nominal_voltage_v, 1)
    assert model.get("ChargingStation", "VendorName") == config.identity.vendor
    assert model.get("EVSE", "AvailabilityState", evse=first.id) == "Available"
    assert model.get("ChargingStation", "AvailabilityState") == "Available"
    assert model.get("EVSE", "Problem", evse=first.id) == "false"
    problems.add((first.id, "EVSE"))
    assert model.get("EVSE", "Problem", evse=first.id) == "true"  # a meter lost: Available, with a Problem
    assert model.get("ConnectorPlugRetentionLock", "Problem", evse=first.id, connector=1) == "false"
    problems.add((first.id, "ConnectorPlugRetentionLock"))
    assert model.get("ConnectorPlugRetentionLock", "Problem", evse=first.id, connector=1) == "true"
    problems.clear()
    machines[first.id].status = ConnectorStatus.FAULTED
    assert model.get("EVSE", "Problem", evse=first.id) == "true"
    assert model.get("Connector", "AvailabilityState", evse=first.id, connector=1) == "Faulted"
    for m in machines.values():
        m.status = ConnectorStatus.UNAVAILABLE
    assert model.get("EVSE", "Enabled", evse=first.id) == "false"
    assert model.get("ChargingStation", "AvailabilityState") == "Unavailable"


# --- attribute types besides Actual ----------------------------------------------------------------------------

FAN = """{"components": [{"name": "Fan", "variables": [
  {"name": "FanSpeed", "dataType": "integer", "mutability": "ReadOnly", "provided": true, "min": 0, "max": 1000,
   "attributes": {"Target": "ReadWrite", "MinSet": "ReadWrite", "MaxSet": "ReadWrite"}},
  {"name": "Secret", "dataType": "string", "mutability": "WriteOnly", "default": ""}]}]}"""


def test_target_minset_maxset_as_described(db: Database, tmp_path: Path) -> None:
    """Part 1 §4.3's fan: the Actual value measured (ReadOnly), Target set by the CSMS within MinSet..MaxSet and
    the physical limits; a supported attribute not set yet reads "" (B06.FR.13); an attribute not described is
    NotSupportedAttributeType; a WriteOnly variable is not read (B06.FR.09)."""
    (tmp_path / "fan.json").write_text(FAN, encoding="utf-8")
    definitions = load_description(tmp_path / "fan.json")
    speed, secret = VariableKey("Fan", "FanSpeed"), VariableKey("Fan", "Secret")
    assert definitions[speed].attribute_types == ("Actual", "Target", "MinSet", "MaxSet")
    model = DeviceModel(db, definitions=definitions)
    model.provide(speed, lambda: "502")
    assert model.get_variable(speed) == GetResult("Accepted", "502")
    assert model.get_variable(speed, "Target") == GetResult("Accepted", "")
    assert model.set_variable(speed, "300", "Actual").status == "Rejected"
    assert model.set_variable(speed, "200", "MinSet").status == "Accepted"
    assert model.set_variable(speed, "500", "MaxSet").status == "Accepted"
    assert model.set_variable(speed, "150", "MaxSet") == SetResult("Rejected", "below MinSet 200")
    assert model.set_variable(speed, "600", "Target") == SetResult("Rejected", "above MaxSet 500")
    assert model.set_variable(speed, "1200", "Target").reason.startswith("outside")
    assert model.set_variable(speed, "450", "Target").status == "Accepted"
    assert DeviceModel(db, definitions=definitions).get_variable(speed, "Target").value == "450"  # on disk
    assert model.get_variable(secret, "Target").status == "NotSupportedAttributeType"
    assert model.get_variable(secret).status == "Rejected"
    assert model.set_variable(secret, "x").status == "Accepted"


def test_description_refuses_what_it_cannot_mean(tmp_path: Path) -> None:
    bad = {
        "tier": FAN.replace('"name": "Fan",', '"name": "Fan", "tier": "Plug",'),
        "attribute": FAN.replace('"Target": "ReadWrite"', '"Measured": "ReadWrite"'),
        "provided writable": FAN.replace('"mutability": "ReadOnly", "provided"',
                                         '"mutability": "ReadWrite", "provided"'),
        "mapping": FAN[:-1] + ', "ocpp16": {"HeartbeatInterval": "Fan.NoSuch"}}',
    }
    for name, text in bad.items():
        assert text != FAN, name
        (tmp_path / "bad.json").write_text(text, encoding="utf-8")
        with pytest.raises(ValueError):
            load_description(tmp_path / "bad.json")


# --- the 1.6 keys and the 2.0.1 variables: two views of one store ---------------------------------------------

def _keys(db: Database) -> ConfigurationKeys:
    return ConfigurationKeys(db, 2)


def test_the_mapping_names_1_6_keys_of_the_same_kind() -> None:
    """Every mapped 1.6 key exists, is writable as its variable is, of the same kind; both views store where the
    1.6 configuration does."""
    assert SHARED_PREFIX == SETTING_PREFIX
    keys = {d.name: d for d in [*features.key_definitions(2), *CONFIGURATION_KEYS]}
    kinds = {KeyType.BOOL: {DataType.BOOLEAN}, KeyType.INT: {DataType.INTEGER},
             KeyType.CSL: {DataType.MEMBER_LIST, DataType.SEQUENCE_LIST}}
    mapped = [d for d in load_description().values() if d.ocpp16 is not None]
    assert {"HeartbeatInterval", "LocalAuthListEnabled", "AuthorizationCacheEnabled",
            "MeterValueSampleInterval"} <= {d.ocpp16 for d in mapped}
    for d in mapped:
        assert d.ocpp16 is not None
        key = keys[d.ocpp16]
        assert d.data_type in kinds[key.type], d.key
        assert not key.readonly and d.mutability is Mutability.READ_WRITE, d.key
        assert key.validate(d.default) == d.default, d.key  # the 2.0.1 default is a valid 1.6 value


def test_a_setting_never_set_reads_the_same_in_both_views(db: Database) -> None:
    """One store, one default: for every ``ocpp16`` mapping of device_model.json, the 1.6 key's default is the
    variable's, and on a fresh store GetConfiguration and GetVariables report the same value (a default that drifts
    in one view fails here)."""
    keys = {d.name: d for d in [*features.key_definitions(2), *CONFIGURATION_KEYS]}
    mapped = [d for d in load_description().values() if d.ocpp16 is not None]
    assert len(mapped) >= 20
    v16, model = _keys(db), DeviceModel(db)
    for d in mapped:
        assert d.ocpp16 is not None
        assert keys[d.ocpp16].default == d.default, (d.ocpp16, d.key)
        assert v16.get_str(d.ocpp16) == model.value(d) == d.default, (d.ocpp16, d.key)


def test_a_value_set_in_one_version_is_the_value_in_the_other(db: Database) -> None:
    assert _keys(db).change("ConnectionTimeOut", "90") == ChangeResult.ACCEPTED
    assert _keys(db).change("LocalAuthListEnabled", "false") == ChangeResult.ACCEPTED
    model = DeviceModel(db, presets={"TxCtrlr.EVConnectionTimeOut": "30"})  # a preset never undoes a stored value
    assert model.get_int("TxCtrlr", "EVConnectionTimeOut") == 90
    assert model.get("LocalAuthListCtrlr", "Enabled") == "false"
    assert model.set_variable(VariableKey("AuthCacheCtrlr", "Enabled"), "false").status == "Accepted"
    assert model.set_variable(VariableKey("SampledDataCtrlr", "TxUpdatedInterval"), "15").status == "Accepted"
    keys = _keys(db)
    assert keys.get_bool("AuthorizationCacheEnabled") is False
    assert keys.get_int("MeterValueSampleInterval") == 15
    assert keys.get_int("ConnectionTimeOut") == 90


def test_a_1_6_value_the_2_0_1_description_refuses_reads_as_the_default(db: Database) -> None:
    """1.6 samples more measurands than 2.0.1 describes: such a list reads as the 2.0.1 default there."""
    assert _keys(db).change("MeterValuesSampledData", "Energy.Active.Import.Register,Frequency") == \
        ChangeResult.ACCEPTED
    d = load_description()[VariableKey("SampledDataCtrlr", "TxUpdatedMeasurands")]
    assert DeviceModel(db).get("SampledDataCtrlr", "TxUpdatedMeasurands") == d.default


def test_a_2_0_1_value_stored_before_the_mapping_moves_to_the_shared_key(db: Database) -> None:
    Settings(db).put("v201.OCPPCommCtrlr.HeartbeatInterval", "45")
    Settings(db).put("v201.AuthCtrlr.LocalPreAuthorize", "true")
    Settings(db).put("ocpp16.LocalPreAuthorize", "false")  # 1.6 ran since: its value stands
    model = DeviceModel(db)
    assert model.get_int("OCPPCommCtrlr", "HeartbeatInterval") == 45
    assert model.get("AuthCtrlr", "LocalPreAuthorize") == "false"
    assert Settings(db).get("v201.OCPPCommCtrlr.HeartbeatInterval") is None
    assert _keys(db).get_int("HeartbeatInterval") == 45


def test_request_size_is_compact_json() -> None:
    assert request_size({"a": [1, 2], "b": "é"}) == len('{"a":[1,2],"b":"\\u00e9"}')


def test_unlock_on_ev_side_disconnect_steers_the_session_and_is_the_1_6_key(db: Database) -> None:
    """OCPPCommCtrlr.UnlockOnEVSideDisconnect (Part 2 "General", required) is 1.6's
    UnlockConnectorOnEVSideDisconnect and the session machine's ``unlock_on_ev_side_disconnect``."""
    from firmware.ocpp.v201.session_settings import session_config
    from firmware.session import SessionConfig

    model = DeviceModel(db)
    assert session_config(SessionConfig(), model).unlock_on_ev_side_disconnect is True
    assert _keys(db).change("UnlockConnectorOnEVSideDisconnect", "false") == ChangeResult.ACCEPTED
    assert session_config(SessionConfig(), model).unlock_on_ev_side_disconnect is False


SIZES = """{"components": [{"name": "DeviceDataCtrlr", "variables": [
  {"name": "ValueSize", "dataType": "integer", "mutability": "ReadOnly", "default": "8"},
  {"name": "ConfigurationValueSize", "dataType": "integer", "mutability": "ReadOnly", "default": "6"},
  {"name": "ReportingValueSize", "dataType": "integer", "mutability": "ReadOnly", "default": "20"}]},
  {"name": "Box", "variables": [
  {"name": "Label", "dataType": "string", "mutability": "ReadWrite", "default": ""},
  {"name": "Long", "dataType": "string", "mutability": "ReadOnly", "default": "0123456789abc"}]}]}"""


def test_value_sizes_limit_what_is_set_and_what_is_reported(db: Database, tmp_path: Path) -> None:
    """Part 2 "General" DeviceDataCtrlr: a SetVariables value longer than ConfigurationValueSize is Rejected; a
    value reported (GetVariables; NotifyReport and NotifyEvent use ``reported`` too) is cut at ReportingValueSize;
    ValueSize caps both (the smaller wins)."""
    (tmp_path / "sizes.json").write_text(SIZES, encoding="utf-8")
    model = DeviceModel(db, definitions=load_description(tmp_path / "sizes.json"))
    label, long = VariableKey("Box", "Label"), VariableKey("Box", "Long")
    assert model.configuration_value_size() == 6 and model.reporting_value_size() == 8
    assert model.set_variable(label, "abcdef").status == "Accepted"
    refused = model.set_variable(label, "abcdefg")
    assert refused.status == "Rejected" and "ConfigurationValueSize" in refused.reason
    assert model.get("Box", "Label") == "abcdef"
    assert model.get_variable(long) == GetResult("Accepted", "01234567")
    assert model.reported("x" * 30) == "x" * 8


def test_the_station_s_value_sizes_and_general_variables(db: Database) -> None:
    """This station: every value up to 1000 characters (the schema's SetVariables limit); the Part 2 "General"
    variables of this slice are there, ReadOnly, with what the station does."""
    model = DeviceModel(db)
    assert model.configuration_value_size() == 1000 and model.reporting_value_size() == 1000
    assert model.set_variable(VariableKey("SecurityCtrlr", "OrganizationName"), "x" * 1001).status == "Rejected"
    for component, variable, value in (("DeviceDataCtrlr", "ValueSize", "1000"),
                                       ("DeviceDataCtrlr", "ConfigurationValueSize", "1000"),
                                       ("DeviceDataCtrlr", "ReportingValueSize", "1000"),
                                       ("ChargingStation", "AllowNewSessionsPendingFirmwareUpdate", "false")):
        key = VariableKey(component, variable)
        assert model.definitions[key].mutability is Mutability.READ_ONLY
        assert model.get_variable(key) == GetResult("Accepted", value)
    # the attempts with a network profile before the next (Part 2 "General"; TC_A_05/06_CS set it): ReadWrite,
    # the shared security policy's count by default
    attempts = VariableKey("OCPPCommCtrlr", "NetworkProfileConnectionAttempts")
    assert model.definitions[attempts].mutability is Mutability.READ_WRITE
    assert model.get_variable(attempts) == GetResult("Accepted", str(FALLBACK_AFTER))
    assert model.set_variable(attempts, "1").status == "Accepted"
    assert model.get_int(attempts.component, attempts.variable) == 1
    assert model.set_variable(attempts, "0").status == "Rejected"


def test_master_pass_group_id_is_the_session_machines_master_pass_group(db: Database) -> None:
    """AuthCtrlr.MasterPassGroupId (C16; 2.0.1 only, no 1.6 key): empty is no master pass; a value is the group an
    accepted id must have to be one, matched as ids are (its value, whatever the type)."""
    from firmware.ocpp.v201.session_settings import session_config
    from firmware.session import IdToken, IdTokenType, SessionConfig

    model = DeviceModel(db)
    d = load_description()[VariableKey("AuthCtrlr", "MasterPassGroupId")]
    assert d.ocpp16 is None and d.mutability is Mutability.READ_WRITE and d.default == ""
    assert session_config(SessionConfig(), model).master_pass_group is None
    assert model.set_variable(VariableKey("AuthCtrlr", "MasterPassGroupId"), "POLICE").status == "Accepted"
    group = session_config(SessionConfig(), model).master_pass_group
    assert group is not None and group.matches(IdToken("police", IdTokenType.ISO14443))
    assert model.set_variable(VariableKey("AuthCtrlr", "MasterPassGroupId"), "x" * 37).status == "Rejected"
