"""Supervised tasks end to end: a fault injected into each running task of the agent process has the outcome
docs/architecture.md lists for it ("Supervised tasks") — the agent's loops are restarted with an ERROR line
and the charger keeps working; a driver's loop makes the agent exit 1 and the supervisor (systemd, here the
station's) starts a fresh process that boots and charges again."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from sim.csms.transcript import EntryKind
from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"


def _inject(s: Station, fault_file: Path, task: str) -> int:
    """Ask the running agent to raise InjectedFault in ``task``; returns the log length before it."""
    before = len(s.log())
    fault_file.write_text(task)
    assert s.proc is not None
    os.kill(s.proc.pid, signal.SIGUSR2)
    return before


async def _log_line(s: Station, since: int, match: Any, timeout_s: float = WAIT_S) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in s.log()[since:] if match(e)]
        return bool(found)

    await s.wait_until(seen, timeout_s, "log line")
    return found[0]


async def _session(s: Station) -> None:
    """A whole session: plug, card, charge, unplug, StopTransaction at the CSMS."""
    tx_id = await s.start_session(1, CARD)
    mark = s.mark()
    s.ev(1).unplug()
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == tx_id
    await s.wait_status(1, "Available", since=mark)


async def test_the_agents_own_loops_are_restarted_and_the_charger_keeps_working(tmp_path: Path) -> None:
    fault_file = tmp_path / "inject"
    async with Station(tmp_path, connectors=1) as s:
        s.agent_env["EVSE_AGENT_FAULT_INJECTION"] = str(fault_file)
        await s.start_agent()
        for task in ("metering", "limits", "reader-reader1", "watch-board1", "watch-meter1", "connector1-board",
                     "connector1-meter", "connector1-latch"):
            since = _inject(s, fault_file, task)
            await _log_line(s, since, lambda e, t=task: e.get("msg") == "fault injected" and e.get("task") == t
                            and e.get("injected") is True)
            line = await _log_line(s, since, lambda e, t=task: e.get("msg") == "task ended; restarting"
                                   and e.get("task") == t)
            assert line["level"] == "ERROR" and "InjectedFault" in line["exc"]
        # the CSMS link: restarted, reconnects, no new boot (same process)
        for task, message in (("ocpp", "task ended; restarting"), ("ocpp-outbox", "OCPP worker stopped; reconnecting"),
                              ("ocpp-receive", "OCPP session failed; reconnecting")):
            mark = s.mark()
            since = _inject(s, fault_file, task)
            line = await _log_line(s, since, lambda e, m=message: e.get("msg") == m)
            assert line["level"] == "ERROR" and "InjectedFault" in line["exc"], line
            await s.csms.transcript.wait_for_event(EntryKind.CONNECT, CP_ID, timeout_s=WAIT_S, since=mark)
            await s.wait_booted(since=mark)
        assert s.agent_running and s.starts == 1 and len(s.calls("BootNotification")) == 1
        await _session(s)  # card routing, limits, metering and the link all work after their restarts
        assert s.agent_running


async def test_a_driver_loop_that_dies_restarts_the_agent_process(tmp_path: Path) -> None:
    fault_file = tmp_path / "inject"
    async with Station(tmp_path, connectors=1) as s:
        s.agent_env["EVSE_AGENT_FAULT_INJECTION"] = str(fault_file)
        await s.start_agent(supervised=True)
        for restarts, task in enumerate(("board1-keepalive", "meter-poll-meter1", "pn532:reader1"), start=1):
            mark = s.mark()
            since = _inject(s, fault_file, task)
            line = await _log_line(s, since, lambda e, t=task: e.get("msg") == "task failed; stopping the agent"
                                   and e.get("task") == t)
            assert line["level"] == "CRITICAL" and "InjectedFault" in line["exc"]
            await s.wait_until(lambda r=restarts: s.starts == r + 1, what=f"restart after {task}")
            assert s.exit_codes[-1] == 1  # ExitCode.FAILURE: systemd's Restart=on-failure starts it again
            await s.wait_call("BootNotification", since=mark)
            await s.wait_booted(since=mark)
        await _session(s)


async def test_a_stop_at_any_instant_of_start_up_is_a_clean_stop(tmp_path: Path) -> None:
    """SIGTERM while the process is still importing or starting (systemd's stop, the power-cut loop's last stop):
    exit 0, never death by the signal — from the agent's first line on (before it, the interpreter is starting)."""
    async with Station(tmp_path, connectors=1) as s:
        for delay in (0.0, 0.01, 0.03, 0.1, 0.2, 0.4, 0.8):
            await s.start_agent(wait_boot=False)
            await s.wait_until(s.catches_sigterm, 15, "the interpreter runs the agent's first lines")
            await asyncio.sleep(delay)  # the instant of the stop is what is tested here
            code = await s.stop_agent()
            assert code == 0, f"stopped {delay} s after the first line: exit {code}; log tail {s.log()[-3:]}"
