"""Security events: every one in the rolling security log; the critical ones and the TLS failures of the link in
the durable outbox as valid SecurityEventNotifications; link failures never flood it; the log never grows
without bound. Config and key checks of the security settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.config import ConfigError, parse_config
from firmware.ocpp.v16.configuration import ConfigurationKeys
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v16.security_events import ACTION, MAX_QUEUED_LINK_EVENTS, SecurityEvents
from firmware.security.security_log import SecurityLog
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox

BASE = """
[charge_point]
id = "CP-SEC"

[storage]
dir = "{dir}"

[[connectors]]
id = 1
board = {{ driver = "ioboard", port = "/dev/ttyS1" }}

[ocpp]
csms_url = "{url}"
{ocpp}
"""


def _config(tmp_path: Path, url: str = "ws://csms/ocpp", ocpp: str = "") -> str:
    return BASE.format(dir=tmp_path, url=url, ocpp=ocpp)


def _events(tmp_path: Path) -> tuple[SecurityEvents, Outbox]:
    config = parse_config(_config(tmp_path), "agent.toml")
    db = Database(tmp_path / "agent.db")
    outbox = Outbox(db)
    ctx = V16Context(config, {}, db, ConfigurationKeys(db, 1), Ledger(db), outbox, lambda code: None)
    return SecurityEvents(ctx), outbox


def test_critical_events_are_queued_link_failures_capped_all_logged(tmp_path: Path) -> None:
    events, outbox = _events(tmp_path)
    for _ in range(MAX_QUEUED_LINK_EVENTS + 5):  # a clock that makes every certificate look expired
        events.report("InvalidCentralSystemCertificate", "certificate is not yet valid")
    assert outbox.count(ACTION) == MAX_QUEUED_LINK_EVENTS and events.not_queued == 5
    assert events.report("StartupOfTheDevice") is True  # critical: queued even so, never dropped
    assert events.report("FailedToAuthenticateAtCentralSystem", "HTTP 401") is False  # not critical: logged only
    assert outbox.count(ACTION) == MAX_QUEUED_LINK_EVENTS + 1
    for message in outbox.peek():
        assert OCPP16.schema_violation(ACTION, message.payload) is None, message.payload
    logged = [json.loads(line) for line in (tmp_path / "security.log").read_text().splitlines()]
    assert len(logged) == MAX_QUEUED_LINK_EVENTS + 7
    assert [e["sent"] for e in logged[-7:]] == [False] * 5 + [True, False]
    assert events.report("TamperDetectionActivated", "x" * 300) and len(outbox.peek()[-1].payload["techInfo"]) == 255


def test_security_log_rolls_over_and_keeps_its_backups(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    log = SecurityLog(tmp_path / "security.log", max_bytes=1000, backups=2)
    for i in range(100):
        log.write("InvalidMessages", datetime.now(UTC), f"event {i:03d}")
    files = log.files()
    assert [f.name for f in files] == ["security.log.2", "security.log.1", "security.log"]
    assert all(f.stat().st_size <= 1000 for f in files)
    newest = files[-1].read_text().splitlines()[-1]
    assert json.loads(newest)["techInfo"] == "event 099"


@pytest.mark.parametrize(("url", "ocpp", "error"), [
    ("ws://c/o", 'security_profile = 1', "ocpp.security_profile: expected a password (AuthorizationKey)"),
    ("wss://c/o", 'security_profile = 2\npassword = "0123456789abcdef"',
     "ocpp.security_profile: expected csms_ca (the CSMS root certificate)"),
    ("ws://c/o", 'security_profile = 2\npassword = "0123456789abcdef"\ncsms_ca = "{ca}"',
     "ocpp.csms_url: expected a wss:// URL for security profile 2"),
    ("wss://c/o", 'security_profile = 3\ncsms_ca = "{ca}"', "ocpp.security_profile: expected cp_cert and cp_key"),
    ("wss://c/o", 'csms_ca = "/no/such/ca.pem"', "ocpp.csms_ca: expected an existing file (PEM) or directory"),
    ("ws://c/o", 'security_profile = 4', "ocpp.security_profile"),
])
def test_security_settings_are_checked_with_the_configuration(tmp_path: Path, url: str, ocpp: str,
                                                              error: str) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_config(_config(tmp_path, url, ocpp.format(ca=ca)), "agent.toml")


def test_implied_profile_keeps_older_configurations(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, "ws://c/o", 'password = "0123456789abcdef"'), "agent.toml")
    assert config.ocpp is not None and config.ocpp.security_profile == 1
    assert "0123456789abcdef" not in repr(config.ocpp)
    config = parse_config(_config(tmp_path, "wss://c/o"), "agent.toml")
    assert config.ocpp is not None and config.ocpp.security_profile == 0  # TLS with the system's store, no auth
