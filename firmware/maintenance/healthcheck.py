"""The first-boot health check of a freshly installed agent: does it pass its self-test and come up?

``python -m firmware healthcheck --config FILE``, run from the slot being checked (tools/flash.py runs it on
the controller after switching slots; the agent's own updater will do the same). Two stages:

1. the self-test (:mod:`firmware.maintenance.selftest`): every device answers and the CSMS accepts a connection;
2. the agent started as a real process, exactly as the systemd unit starts it, with ``$NOTIFY_SOCKET`` and
   ``$WATCHDOG_USEC`` pointing at a datagram socket of ours: it must say ``READY=1`` within the time limit,
   then keep pinging the watchdog and stay up for ``settle_s`` seconds. It is then stopped with SIGTERM.

Anything else — the agent exiting, not getting ready in time, the self-test failing — fails the check,
and the caller rolls back to the previous slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from firmware.config import AgentConfig
from firmware.maintenance.selftest import run_selftest

#: The watchdog interval the check asks for: short, so one check sees a few pings.
WATCHDOG_USEC = 1_000_000


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    stage: str  # "selftest", "start", "running" (where it failed), or "passed"
    detail: str
    selftest: dict[str, Any] | None = None
    ready_after_s: float | None = None
    watchdog_pings: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _interpreter() -> list[str]:
    """This interpreter with the flags that matter for where imports come from (-S: the slot's own lib only)."""
    return [sys.executable, *(["-S"] if sys.flags.no_site else []), *(["-s"] if sys.flags.no_user_site else [])]


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def run_healthcheck(config: AgentConfig, *, timeout_s: float = 60.0, settle_s: float = 3.0,
                          selftest_timeout_s: float = 5.0, csms_required: bool = True) -> HealthResult:
    """``csms_required=False``: a CSMS that cannot be reached does not fail the check (a site whose uplink is
    down during installation); every device must still answer."""
    report = await run_selftest(config, selftest_timeout_s)
    failed = [c for c in report.failed if csms_required or c.name != "csms"]
    if failed:
        names = ", ".join(f"{c.name}: {c.detail}" for c in failed)
        return HealthResult(False, "selftest", f"self-test failed: {names}", report.to_json())
    with tempfile.TemporaryDirectory(prefix="evse-health-") as tmp:
        result = await _run_agent(config, Path(tmp), timeout_s, settle_s)
    return HealthResult(result.ok, result.stage, result.detail, report.to_json(), result.ready_after_s,
                        result.watchdog_pings)


async def _run_agent(config: AgentConfig, tmp: Path, timeout_s: float, settle_s: float) -> HealthResult:
    loop = asyncio.get_running_loop()
    sock_path = tmp / "notify"
    log_path = tmp / "agent.log"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC=str(WATCHDOG_USEC), PYTHONUNBUFFERED="1")
    env.pop("WATCHDOG_PID", None)
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(*_interpreter(), "-m", "firmware", "run", "--config",
                                                    config.path, stdout=log, stderr=asyncio.subprocess.STDOUT,
                                                    env=env)
    ready_after: float | None = None
    pings = 0
    exited = asyncio.ensure_future(proc.wait())
    try:
        deadline = started + timeout_s
        while True:  # until READY=1 (then settle_s more), or the agent exits, or the time is up
            now = time.monotonic()
            limit = deadline if ready_after is None else started + ready_after + settle_s
            if now >= limit:
                break
            recv = asyncio.ensure_future(loop.sock_recv(sock, 4096))
            done, _ = await asyncio.wait({recv, exited}, timeout=limit - now, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recv
            else:
                for state in recv.result().decode(errors="replace").split("\n"):
                    if state == "READY=1" and ready_after is None:
                        ready_after = time.monotonic() - started
                    elif state == "WATCHDOG=1" and ready_after is not None:
                        pings += 1
            if exited in done:
                code = exited.result()
                stage = "start" if ready_after is None else "running"
                return HealthResult(False, stage, f"the agent exited with code {code}"
                                    f"{' before it was ready' if ready_after is None else ' while settling'}; "
                                    f"last log lines:\n{_tail(log_path)}", ready_after_s=ready_after,
                                    watchdog_pings=pings)
        if ready_after is None:
            return HealthResult(False, "start", f"the agent did not report READY within {timeout_s:g} s; last log "
                                f"lines:\n{_tail(log_path)}", watchdog_pings=pings)
        if pings == 0:
            return HealthResult(False, "running", "the agent is up but does not ping the systemd watchdog",
                                ready_after_s=ready_after)
        return HealthResult(True, "passed", f"agent ready after {ready_after:.1f} s, up for {settle_s:g} s more, "
                            f"{pings} watchdog ping(s)", ready_after_s=ready_after, watchdog_pings=pings)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), 15)
            except TimeoutError:
                proc.kill()
                await exited
        sock.close()
