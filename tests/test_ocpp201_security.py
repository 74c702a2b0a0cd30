"""The pure parts of OCPP 2.0.1's security translation: the Basic-auth password without 1.6's hex rule, the events
2.0.1 renamed (queued under their 2.0.1 names, valid against the 2.0.1 schema, capped as in 1.6), the device
model's feature checks and the station's own writes, and which network profile URL the station can connect to.
The messages end to end are in tests/test_e2e_ocpp201_security.py."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from firmware.config import parse_config
from firmware.ocpp.security_events import ACTION, MAX_QUEUED_LINK_EVENTS, OCPP201_NAMES, SecurityEvents
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey
from firmware.ocpp.v201.dialect import OCPP201
from firmware.ocpp.v201.network_profile import url_problem
from firmware.security.authorization_key import basic_auth_header, is_valid_basic_auth_password
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from tests.test_config import GOOD

HEX = "00112233445566778899aabbccddeeff0a0b0c0d"


def test_the_2_0_1_password_is_sent_as_its_text_byte_for_byte() -> None:
    as_text = basic_auth_header("CP-1", HEX, hex_rule=False)
    assert base64.b64decode(as_text.removeprefix("Basic ")) == b"CP-1:" + HEX.encode("ascii")
    decoded = basic_auth_header("CP-1", HEX)  # 1.6 TC_085: the 20 bytes the hex digits encode
    assert base64.b64decode(decoded.removeprefix("Basic ")) == b"CP-1:" + bytes.fromhex(HEX)


@pytest.mark.parametrize(("password", "valid"), [
    ("correct-horse-battery", True), (HEX, True), ("a*b-c_d=e:f+g|h@i.j", True), ("x" * 40, True),
    ("x" * 15, False), ("x" * 41, False), ("has spaces in it, sixteen+", False), ("pässwordpässword", False),
])
def test_basic_auth_password_is_16_to_40_characters_of_identifier_string(password: str, valid: bool) -> None:
    assert is_valid_basic_auth_password(password) is valid


def _context(tmp_path: Path) -> V201Context:
    db = Database(tmp_path / "agent.db")
    config = parse_config(GOOD.replace('dir = "/var/lib/evse-agent"', f'dir = "{tmp_path}"'))
    return V201Context(config, {}, db, DeviceModel(db), Ledger(db), Outbox(db), lambda _: None)


def test_renamed_events_are_queued_and_logged_under_their_2_0_1_names(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    events = SecurityEvents(ctx, OCPP201_NAMES)  # its log: <state dir>/security.log
    for _ in range(MAX_QUEUED_LINK_EVENTS + 2):  # the cap goes by the whitepaper's name, as in 1.6
        events.report("InvalidCentralSystemCertificate", "certificate has expired")
    assert events.report("InvalidChargePointCertificate", "not for the pending key") is False  # capped alike
    assert events.report("StartupOfTheDevice") is True
    queued = ctx.outbox.peek()
    assert [m.payload["type"] for m in queued] == ["InvalidCsmsCertificate"] * MAX_QUEUED_LINK_EVENTS + [
        "StartupOfTheDevice"]
    assert all(OCPP201.schema_violation(ACTION, m.payload) is None for m in queued)
    logged = (tmp_path / "security.log").read_text()
    assert "InvalidChargingStationCertificate" in logged and "InvalidCentralSystemCertificate" not in logged


def test_a_feature_check_refuses_a_value_and_the_station_writes_without_listeners(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = DeviceModel(Database(tmp_path / "agent.db"))
    password = VariableKey("SecurityCtrlr", "BasicAuthPassword")
    seen: list[str] = []
    model.add_check(password, lambda current, new: None if len(new) >= 16 else "too short")
    model.on_change(lambda key, value: seen.append(value), {password})
    refused = model.set_variable(password, "short")
    assert (refused.status, refused.reason) == ("Rejected", "too short")
    with caplog.at_level(logging.INFO):
        assert model.set_variable(password, "correct-horse-battery").status == "Accepted"
    assert seen == ["correct-horse-battery"] and "correct-horse-battery" not in caplog.text  # WriteOnly: masked
    assert model.get_variable(password).status == "Rejected"
    model.store("SecurityCtrlr", "BasicAuthPassword", "commissioned-password")  # the station's own write
    model.store("SecurityCtrlr", "SecurityProfile", "2")  # ReadOnly to the CSMS, not to the station
    assert seen == ["correct-horse-battery"]
    assert model.get("SecurityCtrlr", "BasicAuthPassword") == "commissioned-password"
    assert model.get_variable(VariableKey("SecurityCtrlr", "SecurityProfile")).value == "2"


@pytest.mark.parametrize(("slot_url", "good"), [
    ("wss://csms.example.com/ocpp", True), ("ws://csms.example.com:8080/ocpp/", True),
    ("wss://another-csms.example.net/ocpp", True),  # B10: a network profile may name another CSMS
    ("https://csms.example.com/ocpp", False), ("wss:///ocpp", False),
    ("wss://csms.example.com:notaport/ocpp", False), ("", False),
])
def test_a_network_profile_names_a_websocket_url_with_a_host(slot_url: str, good: bool) -> None:
    """Any CSMS (a migration, B10, names another one); the scheme follows the security profile, but it must be
    one of the WebSocket schemes and name a host and, if any, a numeric port."""
    assert (url_problem(slot_url) is None) is good
