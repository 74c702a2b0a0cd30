"""OCPP 1.6 configuration keys: GetConfiguration / ChangeConfiguration semantics and persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.ocpp.v16.configuration import ChangeResult, ConfigurationKeys, KeyDefinition, KeyType
from firmware.storage import Database

CORE_REQUIRED = [
    "AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut", "ConnectorPhaseRotation",
    "GetConfigurationMaxKeys", "HeartbeatInterval", "LocalAuthorizeOffline", "LocalPreAuthorize",
    "MeterValuesAlignedData", "MeterValuesSampledData", "MeterValueSampleInterval", "NumberOfConnectors",
    "ResetRetries", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId", "StopTxnAlignedData",
    "StopTxnSampledData", "SupportedFeatureProfiles", "TransactionMessageAttempts",
    "TransactionMessageRetryInterval", "UnlockConnectorOnEVSideDisconnect",
]


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "agent.db")


def test_all_required_core_keys_reported(db: Database) -> None:
    keys = ConfigurationKeys(db, number_of_connectors=2)
    entries, unknown = keys.get(None)
    names = {e["key"] for e in entries}
    assert set(CORE_REQUIRED) <= names and unknown == []
    by_name = {e["key"]: e for e in entries}
    assert by_name["NumberOfConnectors"] == {"key": "NumberOfConnectors", "readonly": True, "value": "2"}
    assert by_name["HeartbeatInterval"]["readonly"] is False


def test_get_specific_and_unknown_keys(db: Database) -> None:
    keys = ConfigurationKeys(db, 1)
    entries, unknown = keys.get(["heartbeatinterval", "NoSuchKey"])
    assert [e["key"] for e in entries] == ["HeartbeatInterval"] and unknown == ["NoSuchKey"]


@pytest.mark.parametrize(
    ("key", "value", "result"),
    [
        ("HeartbeatInterval", "120", ChangeResult.ACCEPTED),
        ("HeartbeatInterval", "-5", ChangeResult.REJECTED),
        ("HeartbeatInterval", "ten", ChangeResult.REJECTED),
        ("LocalPreAuthorize", "TRUE", ChangeResult.ACCEPTED),
        ("LocalPreAuthorize", "yes", ChangeResult.REJECTED),
        ("NumberOfConnectors", "3", ChangeResult.REJECTED),  # read-only
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Voltage", ChangeResult.ACCEPTED),
        ("MeterValuesSampledData", "Energy.Active.Import.Register,Temperature", ChangeResult.REJECTED),
        ("FooBar", "1", ChangeResult.NOT_SUPPORTED),
        # found by tests/test_e2e_fuzz_ocpp.py: these passed the digit check, then int() raised (InternalError)
        ("HeartbeatInterval", "--5", ChangeResult.REJECTED),
        ("HeartbeatInterval", "\u00b2", ChangeResult.REJECTED),  # superscript two: isdigit(), not int()
        ("HeartbeatInterval", "\u0663", ChangeResult.REJECTED),  # Arabic-Indic three: not an OCPP integer
        ("HeartbeatInterval", " 60 ", ChangeResult.ACCEPTED),
        # §9.1.7: <connectorId>.<rotation> per connector (0: grid against the main meter), or one word for all
        ("ConnectorPhaseRotation", "0.RST,1.RTS", ChangeResult.ACCEPTED),
        ("ConnectorPhaseRotation", "1.NotApplicable", ChangeResult.ACCEPTED),
        ("ConnectorPhaseRotation", "Unknown", ChangeResult.ACCEPTED),
        ("ConnectorPhaseRotation", "2.RST", ChangeResult.REJECTED),  # one connector only
        ("ConnectorPhaseRotation", "1.RST,1.TSR", ChangeResult.REJECTED),  # twice
        ("ConnectorPhaseRotation", "1.XYZ", ChangeResult.REJECTED),
        ("ConnectorPhaseRotation", "1.rst", ChangeResult.REJECTED),
        ("ConnectorPhaseRotation", "RST", ChangeResult.REJECTED),  # whose?
        ("ConnectorPhaseRotation", "-1.RST", ChangeResult.REJECTED),
        ("ConnectorPhaseRotation", "\u0661.RST", ChangeResult.REJECTED),  # Arabic-Indic one
        ("ConnectorPhaseRotation", "", ChangeResult.REJECTED),
        ("ConnectorPhaseRotation", "0.RST,Unknown", ChangeResult.REJECTED),
    ],
)
def test_change_semantics(db: Database, key: str, value: str, result: ChangeResult) -> None:
    assert ConfigurationKeys(db, 1).change(key, value) is result


def test_changes_persist_and_notify(db: Database) -> None:
    keys = ConfigurationKeys(db, 1)
    seen: list[tuple[str, str]] = []
    keys.on_change(lambda k, v: seen.append((k, v)))
    assert keys.change("localpreauthorize", "True") is ChangeResult.ACCEPTED
    assert keys.change("MeterValuesSampledData", " Voltage , Frequency ") is ChangeResult.ACCEPTED
    assert seen == [("LocalPreAuthorize", "true"), ("MeterValuesSampledData", "Voltage,Frequency")]
    reopened = ConfigurationKeys(db, 1)
    assert reopened.get_bool("LocalPreAuthorize") is True
    assert reopened.get_list("MeterValuesSampledData") == ["Voltage", "Frequency"]


def test_presets_apply_only_at_first_boot(db: Database) -> None:
    keys = ConfigurationKeys(db, 1, presets={"HeartbeatInterval": "30"})
    assert keys.get_int("HeartbeatInterval") == 30
    keys.change("HeartbeatInterval", "90")
    assert ConfigurationKeys(db, 1, presets={"HeartbeatInterval": "30"}).get_int("HeartbeatInterval") == 90
    with pytest.raises(ValueError, match="unknown OCPP configuration key"):
        ConfigurationKeys(db, 1, presets={"Nope": "1"})
    with pytest.raises(ValueError, match="invalid value for HeartbeatInterval"):
        ConfigurationKeys(db, 1, presets={"HeartbeatInterval": "x"})


def test_reboot_required_and_secret_keys(db: Database) -> None:
    extra = [KeyDefinition("AuthorizationKey", KeyType.STRING, "", secret=True, maximum=40),
             KeyDefinition("SecurityProfile", KeyType.INT, "0", minimum=0, maximum=3, reboot_required=True)]
    keys = ConfigurationKeys(db, 1, extra=extra)
    assert keys.change("SecurityProfile", "1") is ChangeResult.REBOOT_REQUIRED
    assert keys.change("AuthorizationKey", "0011223344") is ChangeResult.ACCEPTED
    entries, _ = keys.get(None)
    assert "AuthorizationKey" not in {e["key"] for e in entries}
    assert keys.get(["AuthorizationKey"])[0] == []


def test_connector_phase_rotation_default_and_normalized_form(db: Database) -> None:
    keys = ConfigurationKeys(db, 2)
    assert keys.get_str("ConnectorPhaseRotation") == "1.Unknown,2.Unknown"  # not known until someone says
    assert keys.change("ConnectorPhaseRotation", " 02.TSR , 0.RST,1.NotApplicable") is ChangeResult.ACCEPTED
    assert ConfigurationKeys(db, 2).get_list("ConnectorPhaseRotation") == ["2.TSR", "0.RST", "1.NotApplicable"]
    assert keys.get(["ConnectorPhaseRotationMaxLength"])[0][0]["value"] == "3"


def test_max_length_keys_bound_their_lists(db: Database) -> None:
    """Each read-only <Key>MaxLength is what its list key takes: that many items are accepted, one more is not."""
    keys = ConfigurationKeys(db, 2)
    for key in ("MeterValuesAlignedData", "MeterValuesSampledData", "StopTxnAlignedData", "StopTxnSampledData"):
        limit = keys.get_int(key + "MaxLength")
        assert keys.change(key, ",".join(["Voltage"] * limit)) is ChangeResult.ACCEPTED, key
        assert keys.change(key, ",".join(["Voltage"] * (limit + 1))) is ChangeResult.REJECTED, key
    assert keys.change("ConnectorPhaseRotation", "0.RST,1.RST,2.RST") is ChangeResult.ACCEPTED
    assert keys.get_int("ConnectorPhaseRotationMaxLength") == 3
    profiles = keys.get_list("SupportedFeatureProfiles")
    assert 0 < len(profiles) <= keys.get_int("SupportedFeatureProfilesMaxLength")
    for key in ("MeterValuesAlignedDataMaxLength", "ConnectorPhaseRotationMaxLength",
                "SupportedFeatureProfilesMaxLength"):
        assert keys.change(key, "99") is ChangeResult.REJECTED  # read-only
