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
from firmware.ocpp.v201.network_profile import NetworkProfiles, url_problem
from firmware.ocpp.v201.security import Security
from firmware.security.authorization_key import basic_auth_header, is_valid_basic_auth_password
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials
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


def _station(tmp_path: Path) -> V201Context:
    """A 2.0.1 station commissioned with security profile 1 (ws://, a password)."""
    db = Database(tmp_path / "agent.db")
    config = parse_config(GOOD.replace('dir = "/var/lib/evse-agent"', f'dir = "{tmp_path}"')
                          + '\n[ocpp]\ncsms_url = "ws://127.0.0.1:9000/ocpp"\nversion = "2.0.1"\n'
                          'password = "0123456789abcdef"\n')
    return V201Context(config, {}, db, DeviceModel(db), Ledger(db), Outbox(db), lambda _: None)


def _network_profiles(ctx: V201Context, priority: str, attempts: int = 2) -> NetworkProfiles:
    """The station's network profiles as a start builds them, NetworkConfigurationPriority ``priority``."""
    ctx.variables.store("OCPPCommCtrlr", "NetworkConfigurationPriority", priority)
    ctx.variables.store("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", str(attempts))
    certs = Path(ctx.config.state_dir) / "certs"
    security = Security(ctx, SecurityEvents(ctx, OCPP201_NAMES), CertificateStore(certs),
                        ChargePointCredentials(certs, None, None))
    return NetworkProfiles(ctx, security)


def _slot(url: str, profile: int = 1, timeout: int = 30) -> dict[str, object]:
    return {"ocpp_version": "OCPP20", "ocpp_transport": "JSON", "ocpp_csms_url": url, "message_timeout": timeout,
            "security_profile": profile, "ocpp_interface": "Wireless0"}


async def test_network_profiles_are_tried_in_priority_order_then_the_commissioned_one(tmp_path: Path) -> None:
    """B10: the listed slots in order, slot 0 (the commissioned connection) after them when the list leaves it out,
    cyclically; NetworkProfileConnectionAttempts failed attempts in a row move on, an accepted connection resets
    the count. Each slot's URL (scheme by the profile) and messageTimeout apply while it is active."""
    ctx = _station(tmp_path)
    first = _network_profiles(ctx, "0")
    for slot, url in ((1, "ws://old.example.net/ocpp"), (2, "wss://new.example.net:8443/ocpp")):
        answer = await first._set_network_profile(slot, _slot(url, timeout=10 * slot))
        assert answer.status == "Accepted"
    profiles = _network_profiles(ctx, "2,1")  # the next start

    def now() -> tuple[str, str, float]:
        return profiles.active, profiles.security.link_settings().base_url, ctx.response_timeout_s

    def fail(times: int) -> None:
        for _ in range(times):
            profiles.attempt_failed(ConnectionRefusedError())

    assert now() == ("2", "ws://new.example.net:8443/ocpp", 20.0)  # the scheme follows profile 1
    fail(2)
    assert now() == ("1", "ws://old.example.net/ocpp", 10.0)
    fail(1)
    profiles.accepted()  # connected: the count starts again
    fail(1)
    assert now() == ("1", "ws://old.example.net/ocpp", 10.0)
    fail(1)
    assert now() == ("0", "ws://127.0.0.1:9000/ocpp", 30.0)  # the commissioned connection, not listed
    fail(2)
    assert ctx.variables.get("OCPPCommCtrlr", "ActiveNetworkProfile") == "2"  # round again


async def test_a_slot_below_the_current_security_profile_is_skipped_and_vpn_apn_are_refused(tmp_path: Path) -> None:
    """A05: never a lower security profile — a slot accepted before the profile was raised is passed over; B09: a
    profile asking for a VPN or an APN is Rejected (no VPN client or modem configured here), a URL that is no
    WebSocket URL too; another CSMS is not (B10)."""
    ctx = _station(tmp_path)
    first = _network_profiles(ctx, "0")
    assert (await first._set_network_profile(1, _slot("ws://other-csms.example.org/ocpp"))).status == "Accepted"
    for extra in ({"vpn": {"server": "v", "user": "u", "password": "p", "key": "k", "type": "IPSec"}},
                  {"apn": {"apn": "internet", "apn_authentication": "AUTO"}}, {"ocpp_csms_url": "http://x/ocpp"}):
        answer = await first._set_network_profile(2, {**_slot("ws://x.example/ocpp"), **extra})
        assert answer.status == "Rejected" and answer.status_info["reasonCode"] == "InvalidNetworkConf"
    first.security.values.store_profile(2)  # raised since (the prerequisites do not matter to this check)
    later = _network_profiles(ctx, "1,0")
    assert later.active == "0" and later.security.profile == 2
