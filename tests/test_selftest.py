"""The agent's self-test and first-boot health check, as real processes against simulated devices on ptys and
the simulated CSMS; and the systemd notify protocol against a real unix datagram socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware.systemd_notify import SystemdNotifier
from sim.csms.behaviour import ChargePointProfile
from sim.csms.server import SimulatedCsms
from sim.harness.charger import ChargerSpec, OcppSettings, SimulatedCharger

CP_ID = "SELFTEST-CP"
PASSWORD = "0123456789abcdef"


class Bench:
    """Simulated charger + CSMS (password-protected) and the config that points at them."""

    def __init__(self, tmp: Path, reader: str = "pn532") -> None:
        self.charger = SimulatedCharger(ChargerSpec(charge_point_id=CP_ID, connectors=2, reader=reader))  # type: ignore[arg-type]
        self.csms = SimulatedCsms(response_timeout_s=5, ping_interval_s=None)
        self.config = tmp / "agent.toml"
        self.tmp = tmp

    async def __aenter__(self) -> Bench:
        await self.charger.start()
        await self.csms.start()
        self.csms.behaviour.profiles[CP_ID] = ChargePointProfile(password=PASSWORD)
        self.config.write_text(self.charger.agent_config(
            str(self.tmp / "state"), OcppSettings(self.csms.url, PASSWORD, {"HeartbeatInterval": "300"})))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.csms.stop()
        await self.charger.close()


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    async with Bench(tmp_path) as b:
        yield b


async def firmware(*args: str, timeout_s: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "firmware", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_selftest_all_devices_and_csms_pass(bench: Bench) -> None:
    code, out, _ = await firmware("selftest", "--config", str(bench.config))
    assert code == 0, out
    for name in ("board1", "board2", "meter1", "meter2", "reader1", "csms"):
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert "  ok  " in line, line
    assert "all checks passed" in out
    assert "ocpp1.6, security profile 1, basic auth" in out
    assert bench.csms.transcript.messages(CP_ID) == []  # connected and closed, not one OCPP message sent


async def test_selftest_names_the_missing_device(bench: Bench) -> None:
    bench.charger.connectors[2].meter.set_silent(True)
    code, out, _ = await firmware("selftest", "--config", str(bench.config), "--timeout", "2")
    assert code == 1
    line = next(line for line in out.splitlines() if line.startswith("meter2 "))
    assert "FAIL" in line and "unit 2" in line, line
    assert "1 check(s) FAILED: meter2" in out
    code, out, _ = await firmware("selftest", "--config", str(bench.config), "--timeout", "2", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "board1": "ok", "board2": "ok", "meter1": "ok", "meter2": "FAIL", "reader1": "ok", "csms": "ok"}


async def test_selftest_wrong_password_and_missing_reader_port(bench: Bench) -> None:
    text = bench.config.read_text().replace(PASSWORD, "wrong-password-0000")
    text = text.replace(bench.charger.wires["reader"].host_port, "/dev/does-not-exist")
    bench.config.write_text(text)
    code, out, _ = await firmware("selftest", "--config", str(bench.config), "--json", "--timeout", "2")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert code == 1
    assert checks["csms"]["status"] == "FAIL" and "HTTP 401" in checks["csms"]["detail"]
    assert checks["reader1"]["status"] == "FAIL" and "/dev/does-not-exist" in checks["reader1"]["detail"]
    assert PASSWORD not in out and "wrong-password-0000" not in out


async def test_selftest_invalid_config_exits_78(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[charge_point]\nid = "X"\n')
    code, _, err = await firmware("selftest", "--config", str(cfg))
    assert code == 78 and "connectors" in err


async def test_healthcheck_runs_the_agent_until_ready_and_watchdog(bench: Bench) -> None:
    code, out, _ = await firmware("healthcheck", "--config", str(bench.config), "--json", "--settle", "1.5")
    result = json.loads(out)
    assert code == 0, result
    assert result["stage"] == "passed" and result["ready_after_s"] < 30 and result["watchdog_pings"] >= 1
    assert bench.csms.transcript.messages(CP_ID, action="BootNotification")  # the agent really booted


async def test_healthcheck_csms_optional_when_the_uplink_is_down(bench: Bench) -> None:
    await bench.csms.stop()
    code, out, _ = await firmware("healthcheck", "--config", str(bench.config), "--json", "--timeout", "2")
    result = json.loads(out)
    assert code == 1 and result["stage"] == "selftest" and "csms: cannot connect" in result["detail"]
    code, out, _ = await firmware("healthcheck", "--config", str(bench.config), "--json", "--settle", "1",
                                  "--csms-optional")
    assert code == 0, out
    assert json.loads(out)["stage"] == "passed"


async def test_healthcheck_fails_when_selftest_fails(bench: Bench) -> None:
    bench.charger.connectors[1].meter.set_silent(True)
    code, out, _ = await firmware("healthcheck", "--config", str(bench.config), "--json")
    result = json.loads(out)
    assert code == 1 and result["stage"] == "selftest" and "meter1" in result["detail"]


def test_sd_notify_ready_and_watchdog_over_a_real_datagram_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        n = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
        assert n.enabled and n.watchdog_interval_s == pytest.approx(0.1)
        assert n.notify("READY=1")
        assert server.recv(100) == b"READY=1"

        async def ping_a_while() -> None:
            task = asyncio.create_task(n.watchdog())
            await asyncio.sleep(0.25)
            task.cancel()

        asyncio.run(ping_a_while())
        pings = [server.recv(100) for _ in range(2)]
        assert pings == [b"WATCHDOG=1", b"WATCHDOG=1"]


def test_sd_notify_is_silent_outside_systemd() -> None:
    n = SystemdNotifier({})
    assert not n.enabled and not n.notify("READY=1") and n.watchdog_interval_s is None
    other = SystemdNotifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.address == "\0x" and other.watchdog_interval_s is None  # the watchdog is for another process
