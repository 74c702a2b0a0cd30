"""Security events: every one in the rolling security log; the critical ones and the TLS failures of the link in
the durable outbox as valid SecurityEventNotifications; link failures never flood it; the log never grows
without bound. Config and key checks of the security settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware.config import ConfigError, parse_config
from firmware.ocpp.security_events import ACTION, MAX_QUEUED_LINK_EVENTS, SecurityEvents
from firmware.ocpp.v16.configuration import ConfigurationKeys
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.dialect import OCPP16
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
    assert events.report("InvalidChargePointCertificate", "not for the pending key") is False  # capped alike
    assert events.report("StartupOfTheDevice") is True  # critical: queued even so, never dropped
    assert events.report("FailedToAuthenticateAtCentralSystem", "HTTP 401") is False  # not critical: logged only
    assert outbox.count(ACTION) == MAX_QUEUED_LINK_EVENTS + 1
    for message in outbox.peek():
        assert OCPP16.schema_violation(ACTION, message.payload) is None, message.payload
    logged = [json.loads(line) for line in (tmp_path / "security.log").read_text().splitlines()]
    assert len(logged) == MAX_QUEUED_LINK_EVENTS + 8
    assert [e["sent"] for e in logged[-8:]] == [False] * 6 + [True, False]
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


def test_security_archive_holds_the_rolled_files_oldest_first_within_the_window(tmp_path: Path) -> None:
    """What GetLog SecurityLog uploads: the events of every file of the log, oldest first, within the window."""
    import io
    import tarfile
    from datetime import UTC, datetime, timedelta

    from firmware.maintenance.diagnostics import build_security_archive

    log = SecurityLog(tmp_path / "security.log", max_bytes=600, backups=3)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(12):
        log.write("ResetOrReboot", t0 + timedelta(hours=i), f"event {i:02d}")
    assert len(log.files()) > 1

    def events(start: datetime | None, stop: datetime | None) -> list[str]:
        archive = build_security_archive("CP-SEC", log.files(), tmp_path / "out", start, stop)
        assert archive.name.startswith("securitylog-CP-SEC-") and len(list(archive.parent.iterdir())) == 1
        with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as tar:
            text = tar.extractfile("security.jsonl").read().decode()  # type: ignore[union-attr]
        return [json.loads(line)["techInfo"] for line in text.splitlines() if line]

    kept = events(None, None)  # rolling over dropped the oldest: what is left is in order, up to the newest
    assert kept == sorted(kept) and kept[-1] == "event 11" and len(kept) >= 6
    assert events(t0 + timedelta(hours=8), t0 + timedelta(hours=10)) == ["event 08", "event 09", "event 10"]
    assert events(t0 - timedelta(days=2), t0 - timedelta(days=1)) == []


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


def test_free_space_going_low_is_one_event_until_it_recovers(tmp_path: Path) -> None:
    from firmware.security.device_watch import FreeSpaceWatch

    free = [100 << 20]
    watch = FreeSpaceWatch(tmp_path, 16 << 20, free=lambda _: free[0])
    assert watch.check() is None
    free[0] = 10 << 20
    info = watch.check()
    assert info is not None and "10 MiB free, below 16 MiB" in info
    assert watch.check() is None  # still low: once per occurrence
    free[0] = 20 << 20
    assert watch.check() is None
    free[0] = 1 << 20
    assert watch.check() is not None  # low again: a new occurrence
    assert FreeSpaceWatch(tmp_path, 0, free=lambda _: 0).check() is None  # 0: off
    assert FreeSpaceWatch(tmp_path, 1 << 62).check() is not None  # the real statvfs of this disk


def test_a_step_of_the_wall_clock_is_setting_system_time() -> None:
    from firmware.security.device_watch import ClockStepWatch

    wall, mono = [1000.0], [5.0]
    watch = ClockStepWatch(60.0, wall=lambda: wall[0], monotonic=lambda: mono[0])
    wall[0], mono[0] = 1030.0, 35.0  # time passing: no step
    assert watch.check() is None
    wall[0], mono[0] = 1060.0 + 3600, 65.0  # set an hour ahead (a first NTP sync)
    assert watch.check() == pytest.approx(3600.0)
    wall[0] += 59.0  # within the tolerance (slewing never adds up to it between checks)
    assert watch.check() is None
    wall[0] -= 120.0
    assert watch.check() == pytest.approx(-120.0)


def test_start_up_events_security_log_cleared_and_memory_exhaustion(tmp_path: Path) -> None:
    events, outbox = _events(tmp_path)
    events.started("first start")
    assert [m.payload["type"] for m in outbox.peek()] == ["StartupOfTheDevice"]
    for f in events.log.files():  # someone with the file system clears the log between two runs
        f.unlink()
    again, outbox = _events(tmp_path)
    again.space.min_free_bytes = 1 << 62  # more than any disk has: the storage is "getting full"
    again.started("second start")
    types = [m.payload["type"] for m in outbox.peek()]
    assert types == ["StartupOfTheDevice", "StartupOfTheDevice", "SecurityLogWasCleared", "MemoryExhaustion"]
    for message in outbox.peek():
        assert OCPP16.schema_violation(ACTION, message.payload) is None, message.payload
    third, outbox = _events(tmp_path)
    third.started("third start")  # the log is there again: nothing cleared
    assert [m.payload["type"] for m in outbox.peek()][4:] == ["StartupOfTheDevice"]
