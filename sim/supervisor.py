"""Runs the agent as a separate process, the way systemd does on a controller.

Restarts it when it exits with anything but a clean stop or a configuration error (restarting
cannot fix a bad configuration), and can cut its power (SIGKILL, no chance to clean up) and
power it on again — the simulator's way of testing durability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from firmware.exitcodes import ExitCode

log = logging.getLogger(__name__)


class AgentSupervisor:
    def __init__(self, config_path: Path, *, restart_delay_s: float = 1.0,
                 on_line: Callable[[str], None] | None = None, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.restart_delay_s = restart_delay_s
        self.on_line = on_line or (lambda line: print(line, file=sys.stderr, flush=True))
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.last_exit: int | None = None
        self._powered = True
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="agent-supervisor")

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware", "run", "--config", str(self.config_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        )
        self.starts += 1
        log.info("agent started", extra={"pid": proc.pid, "starts": self.starts})
        return proc

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            self.on_line(raw.decode("utf-8", "replace").rstrip("\n"))

    async def _supervise(self) -> None:
        while True:
            if not self._powered:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.process = await self._spawn()
            pump = asyncio.create_task(self._pump(self.process))
            code = await self.process.wait()
            await pump
            self.last_exit = code
            log.info("agent exited", extra={"code": code})
            if code == ExitCode.CONFIG:
                log.error("agent configuration is invalid; not restarting")
                return
            if code == ExitCode.OK and self._powered:
                return  # stopped on request
            await asyncio.sleep(self.restart_delay_s if self._powered else 0)

    def power_cut(self) -> None:
        """SIGKILL the agent and keep it down until :meth:`power_on`."""
        self._powered = False
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)

    def power_on(self) -> None:
        self._powered = True
        self._wake.set()

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._powered = False
        if self.running:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                self.process.kill()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
