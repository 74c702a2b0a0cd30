"""The configuration validator: good files load, bad ones name the file, the key and the expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from firmware.config import ConfigError, load_config, parse_config
from firmware.exitcodes import ExitCode
from firmware.ocpp.presets import check_presets

GOOD = """
[charge_point]
id = "CP-0001"

[storage]
dir = "/var/lib/evse-agent"

[buses.rs485]
port = "/dev/ttyUSB0"
baudrate = 19200

[[connectors]]
id = 1
max_current_a = 16
phases = 1
board = { driver = "evse_din", bus = "rs485", unit = 11 }
meter = { model = "sdm120", bus = "rs485", unit = 1 }

[[connectors]]
id = 2
board = { driver = "ioboard", port = "/dev/ttyS1" }
meter = { model = "abb_b23", bus = "rs485", unit = 2 }

[[readers]]
driver = "pn532"
port = "/dev/ttyS2"
connectors = [1, 2]
"""


def test_good_config_loads_typed() -> None:
    cfg = parse_config(GOOD, "agent.toml")
    assert cfg.charge_point_id == "CP-0001"
    assert cfg.buses["rs485"].baudrate == 19200
    c1, c2 = cfg.connectors
    assert (c1.board.driver, c1.board.unit, c1.max_current_a, c1.phases) == ("evse_din", 11, 16.0, 1)
    assert c1.meter is not None and c1.meter.model == "sdm120"
    assert c2.board.port == "/dev/ttyS1" and c2.max_current_a == 32.0
    assert cfg.readers[0].connectors == (1, 2)


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ('model = "sdm120"', 'model = "sdm12"', "connectors[0].meter.model", "one of abb_b23, sdm120, sdm630"),
        ("max_current_a = 16", "max_current_a = 100", "connectors[0].max_current_a", "a number from 6.0 to 80.0"),
        ("max_current_a = 16", 'max_current_a = "16"', "connectors[0].max_current_a", "a number"),
        ('id = "CP-0001"', 'id = "CP 0001"', "charge_point.id", "without"),
        ("unit = 11", "unit = 1", "connectors[0].meter.unit", "not already used on bus 'rs485'"),
        ("connectors = [1, 2]", "connectors = [1, 3]", "readers[0].connectors", "connector ids among [1, 2]"),
        ('bus = "rs485", unit = 11', 'bus = "modbus", unit = 11', "connectors[0].board.bus", "[buses.NAME]"),
        ("baudrate = 19200", "baud = 19200", "buses.rs485.baud", "no such key here"),
        ('driver = "pn532"', 'driver = "acr122"', "readers[0].driver", "one of pn532, rdm6300"),
        ("phases = 1\n", 'phases = 1\ncable = "socket_with_lock"\n', "connectors[0].cable",
         '"socket_without_lock" or "tethered": a evse_din board has no cable lock actuator'),
        ("phases = 1\n", 'phases = 1\ncable = "socket"\n', "connectors[0].cable",
         "one of socket_with_lock, socket_without_lock, tethered"),
    ],
)
def test_bad_values_name_file_key_and_expectation(old: str, new: str, key: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse_config(GOOD.replace(old, new, 1), "/etc/evse-agent/agent.toml")
    message = str(info.value)
    assert message.startswith(f"/etc/evse-agent/agent.toml: {key}: expected ")
    assert expected in message


def test_cable_kind_per_connector_defaults_to_what_the_board_can_do() -> None:
    """A socket with a lock where the board drives one (the I/O board), else a socket without; either may be
    set explicitly, and the session machine's cable_lock follows it."""
    c1, c2 = parse_config(GOOD).connectors
    assert (c1.cable, c1.cable_lock) == ("socket_without_lock", False)
    assert (c2.cable, c2.cable_lock) == ("socket_with_lock", True)
    text = GOOD.replace("phases = 1\n", 'phases = 1\ncable = "tethered"\n').replace(
        'port = "/dev/ttyS1" }\n', 'port = "/dev/ttyS1" }\ncable = "tethered"\n')
    assert [(c.cable, c.cable_lock) for c in parse_config(text).connectors] == [("tethered", False)] * 2


def test_missing_required_and_broken_toml() -> None:
    with pytest.raises(ConfigError, match=r"x\.toml: charge_point: expected a table \(required, missing\)"):
        parse_config("[[connectors]]\nid = 1\n", "x.toml")
    with pytest.raises(ConfigError, match=r"x\.toml: expected valid TOML"):
        parse_config("[charge_point\n", "x.toml")
    with pytest.raises(ConfigError, match=r"expected at least one"):
        parse_config('[charge_point]\nid = "A"\n', "x.toml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_exits_with_config_code_and_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text(GOOD.replace('model = "sdm120"', 'model = "sdm12"'))
    proc = subprocess.run([sys.executable, "-m", "firmware", "check-config", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.CONFIG
    assert f"{bad}: connectors[0].meter.model: expected one of" in proc.stderr
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    proc = subprocess.run([sys.executable, "-m", "firmware", "check-config", "--config", str(good)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "2 connector(s)" in proc.stdout


OCPP = GOOD + """
[ocpp]
csms_url = "ws://127.0.0.1:9000/ocpp"
password = "0123456789abcdef"

[ocpp.presets]
HeartbeatInterval = 60
LocalPreAuthorize = true
"""


def test_ocpp_section_and_presets() -> None:
    cfg = parse_config(OCPP, "a.toml")
    assert cfg.ocpp is not None and cfg.ocpp.csms_url == "ws://127.0.0.1:9000/ocpp"
    assert cfg.ocpp.presets == {"HeartbeatInterval": "60", "LocalPreAuthorize": "true"}
    assert "0123456789abcdef" not in repr(cfg.ocpp)
    assert (cfg.ocpp.reservations, cfg.ocpp.reserve_connector_zero) == (True, True)  # docs/reservation.md
    off = parse_config(OCPP.replace('password = "',
                                    'reservations = false\nreserve_connector_zero = false\npassword = "'))
    assert off.ocpp is not None and (off.ocpp.reservations, off.ocpp.reserve_connector_zero) == (False, False)
    assert cfg.ocpp.additional_root_certificate_check is False  # 2.0.1's ReadOnly SecurityCtrlr variable
    check = parse_config(OCPP.replace('password = "', 'additional_root_certificate_check = true\npassword = "'))
    assert check.ocpp is not None and check.ocpp.additional_root_certificate_check is True


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('csms_url = "ws://', 'csms_url = "http://', "a.toml: ocpp.csms_url: expected a ws:// or wss:// URL"),
        ('password = "0123456789abcdef"', 'password = "short"',
         "a.toml: ocpp.password: expected 16 to 40 characters (OCPP AuthorizationKey); got '***'"),
        ("HeartbeatInterval = 60", "HeartbeatInterval = 6.5", "a.toml: ocpp.presets.HeartbeatInterval: expected"),
        ("HeartbeatInterval = 60", "HeartbeatInterval = -1",
         "a.toml: ocpp.presets.HeartbeatInterval: expected a valid integer for HeartbeatInterval from 0 to 86400"),
        ("HeartbeatInterval = 60", "NumberOfConnectors = 4",
         "a.toml: ocpp.presets.NumberOfConnectors: expected a writable key"),
        ("HeartbeatInterval = 60", "HeartBeatIntervall = 60",
         "a.toml: ocpp.presets.HeartBeatIntervall: expected an OCPP 1.6 configuration key"),
        ('password = "', 'reservations = "no"\npassword = "', "a.toml: ocpp.reservations: expected true or false"),
        ('password = "', 'additional_root_certificate_check = 1\npassword = "',
         "a.toml: ocpp.additional_root_certificate_check: expected true or false"),
        ("HeartbeatInterval = 60", "ReserveConnectorZeroSupported = false",
         "a.toml: ocpp.presets.ReserveConnectorZeroSupported: expected a writable key"),
    ],
)
def test_bad_ocpp_section(old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_presets(parse_config(OCPP.replace(old, new), "a.toml"))  # what python -m firmware does
    assert str(info.value).startswith(message)
    assert "short" not in str(info.value)


def test_cli_without_subcommand_runs_the_agent_with_its_config(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text(GOOD.replace('model = "sdm120"', 'model = "nope"'))
    proc = subprocess.run([sys.executable, "-m", "firmware", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.CONFIG  # it went the `run` way and validated the file first
    assert "connectors[0].meter.model" in proc.stderr


def test_firmware_transfer_ca_and_crl_keys(tmp_path: Path) -> None:
    ca = tmp_path / "files-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    cfg = parse_config(GOOD + f'[firmware]\ntransfer_ca = "{ca}"\ncrl = "/etc/evse-agent/firmware-ca.crl"\n'
                              'crl_url = "https://pki.example.com/firmware-ca.crl"\n', "a.toml")
    assert (cfg.firmware.transfer_ca, cfg.firmware.crl, cfg.firmware.crl_url) == (
        str(ca), "/etc/evse-agent/firmware-ca.crl", "https://pki.example.com/firmware-ca.crl")
    assert parse_config(GOOD, "a.toml").firmware.crl is None
    with pytest.raises(ConfigError, match=r"firmware\.transfer_ca: expected an existing CA certificate file"):
        parse_config(GOOD + f'[firmware]\ntransfer_ca = "{tmp_path / "missing.pem"}"\n', "a.toml")
    with pytest.raises(ConfigError, match=r"firmware\.crl_url: expected an http:// or https:// URL"):
        parse_config(GOOD + '[firmware]\ncrl_url = "ldap://pki.example.com/crl"\n', "a.toml")
