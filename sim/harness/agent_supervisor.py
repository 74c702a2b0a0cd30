"""Runs the agent as a separate process, the way systemd does on a controller, and reads what it says.

:class:`AgentSupervisor` restarts the agent when it dies of anything but a clean stop or an error that a
restart cannot fix (configuration, storage, usage), backing off when it crashes again and again, and
can cut its power (SIGKILL, no chance to clean up) and power it on again: the simulator's way of
testing durability.

:class:`AgentOutput` keeps what the agent printed (JSON log lines): the last N lines, the last
connector status the agent reported (``{"msg": "connector status", "connector": 1, "status": ...}``) and the
charging limits it applies (:class:`~sim.harness.agent_limits.AgentLimits`), which works whatever CSMS the agent
talks to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from firmware.exitcodes import ExitCode
from sim.harness.agent_limits import AgentLimits

log = logging.getLogger(__name__)

#: The agent dies with the simulator (SIGTERM on parent death): a killed simulator leaves no agent behind.
#: Done in a tiny launcher that then execs the agent (same pid), so no pre-exec hook runs in our process.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "if sys.platform.startswith('linux'):\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG\n"
    "    if os.getppid() != int(sys.argv[1]):\n"
    "        sys.exit(0)  # the simulator died before prctl took effect\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)

EventCallback = Callable[[str, dict[str, Any]], None]

#: Exit codes after which a restart cannot help (state name given); the agent stays down until power-on.
#: Looked up by value so the simulator keeps working with an agent that knows fewer codes.
_NO_RESTART: dict[int, str] = {ExitCode.USAGE: "usage_error", 74: "storage_error", ExitCode.CONFIG: "config_error"}
_RESTART = 75  # the agent asks to be started again at once (OCPP Reset)
STABLE_RUN_S = 10.0  # a run at least this long resets the crash-loop back-off
MAX_RESTART_DELAY_S = 30.0


class AgentSupervisor:
    """One agent process at a time; ``on_line`` gets every line it prints (stdout and stderr)."""

    def __init__(self, config_path: Path, *, restart_delay_s: float = 1.0,
                 on_line: Callable[[str], None] | None = None, on_event: EventCallback | None = None,
                 env: dict[str, str] | None = None, stop_timeout_s: float = 5.0, cwd: str | None = None,
                 before_start: Callable[[], Awaitable[None]] | None = None) -> None:
        """``cwd``: the agent's working directory (default: ours); with A/B slots the active slot, as the unit's
        WorkingDirectory= (``python -c`` puts it first on the import path). ``before_start``: awaited before each
        start (the A/B slot runner applies a pending switch there, sim/harness/ab_slots.py)."""
        self.before_start = before_start
        self.config_path = config_path
        self.restart_delay_s = restart_delay_s
        self.stop_timeout_s = stop_timeout_s
        self.on_line = on_line or (lambda line: print(line, file=sys.stderr, flush=True))
        self.on_event = on_event
        self.env = env
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.last_exit: int | None = None
        # starting | running | restarting | powered_off | stopped | usage_error | storage_error | config_error
        self.state = "starting"
        self._powered = True
        self._stopping = False
        self._quick_failures = 0  # crashes in a row, each within STABLE_RUN_S of its start
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    @property
    def powered(self) -> bool:
        return self._powered

    def snapshot(self) -> dict[str, Any]:
        return {"running": self.running, "pid": self.pid, "starts": self.starts,
                "last_exit_code": self.last_exit, "powered": self._powered, "state": self.state,
                "config": str(self.config_path)}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="agent-supervisor")

    # ---- the process ---------------------------------------------------------------------------

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LAUNCHER, str(os.getpid()),
            "-m", "firmware", "run", "--config", str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env, limit=1 << 20, cwd=self.cwd,
            # its own process group: a Ctrl-C in the terminal reaches the simulator, which stops the agent
            process_group=0,
        )
        self.starts += 1
        log.info("agent started", extra={"pid": proc.pid, "starts": self.starts})
        return proc

    async def _pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line over the limit: skipped, the rest still flows
                log.warning("agent output line too long; skipped", extra={"pid": proc.pid})
                continue
            if not raw:
                return
            try:
                self.on_line(raw.decode("utf-8", "replace").rstrip("\r\n"))
            except Exception:  # a consumer's bug must not stop the agent's output from being read
                log.exception("agent output consumer failed")

    def _notify(self, kind: str, **fields: Any) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        if self.on_event is not None:
            try:
                self.on_event(kind, fields)
            except Exception:
                log.exception("agent event consumer failed")

    async def _supervise(self) -> None:
        while True:
            if not self._powered:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.before_start is not None:
                try:
                    await self.before_start()
                except Exception:  # the hook's bug must not stop the charger's agent
                    log.exception("before-start hook failed")
                if not self._powered:  # the hook stopped it (a switch back): wait for it to be started again
                    continue
            try:
                proc = await self._spawn()
            except OSError as exc:
                log.error("agent could not be started", extra={"error": str(exc)})
                self.state = "restarting"
                await self._pause(self.restart_delay_s)
                continue
            self.process = proc
            self.state = "running"
            started_at = asyncio.get_running_loop().time()
            self._notify("started", pid=proc.pid, starts=self.starts)
            pump = asyncio.create_task(self._pump(proc), name="agent-output")
            code = await proc.wait()
            await pump
            self.last_exit = code
            log.info("agent exited", extra={"code": code, "pid": proc.pid})
            restart_now = False
            if self._stopping:
                self.state = "stopped"
            elif code in _NO_RESTART and self._powered:
                log.error("agent cannot run as configured; not restarting until power-on",
                          extra={"code": code, "reason": _NO_RESTART[code], "config": str(self.config_path)})
                self._powered, self.state = False, _NO_RESTART[code]
            elif code == _RESTART and self._powered:
                self.state, restart_now = "restarting", True  # it asked for it (OCPP Reset)
            elif not self._powered:
                self.state = "powered_off"
            elif code == ExitCode.OK:
                log.warning("agent stopped by itself; not restarting until power-on")
                self._powered, self.state = False, "stopped"
            else:
                self.state = "restarting"
            self._notify("exited", pid=proc.pid, code=code, state=self.state)
            if self.state == "restarting" and not restart_now:
                ran_s = asyncio.get_running_loop().time() - started_at
                self._quick_failures = self._quick_failures + 1 if ran_s < STABLE_RUN_S else 0
                await self._pause(self.restart_backoff_s())

    def restart_backoff_s(self) -> float:
        """``restart_delay_s``, doubled for each crash in a row that came soon after the start (a crash
        loop), up to ``MAX_RESTART_DELAY_S``: a broken agent is retried, not hammered."""
        doublings = max(0, self._quick_failures - 1)
        return float(min(self.restart_delay_s * 2 ** min(doublings, 16), MAX_RESTART_DELAY_S))

    async def _pause(self, seconds: float) -> None:
        """Wait before a restart; a power cut or power-on during the wait ends it early."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    # ---- power -----------------------------------------------------------------------------------

    async def power_cut(self, timeout_s: float = 5.0) -> int | None:
        """SIGKILL the agent (no clean-up) and keep it down until :meth:`power_on`. Returns the killed pid."""
        self._powered = False
        self._wake.set()
        proc = self.process
        if proc is None or proc.returncode is not None:
            self.state = "powered_off" if self.state in ("restarting", "running", "starting") else self.state
            return None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        log.warning("agent power cut (SIGKILL)", extra={"pid": proc.pid})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout_s)
        await self._until(lambda: self.state != "running", timeout_s)
        return proc.pid

    async def shut_down(self, timeout_s: float | None = None) -> None:
        """Stop the agent as systemd stops a service (SIGTERM, SIGKILL after ``stop_timeout_s``) and keep it down
        until :meth:`power_on`; returns once no agent process runs."""
        self._powered = False
        self._wake.set()
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout_s or self.stop_timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def power_on(self, timeout_s: float = 5.0) -> bool:
        """Start the agent again (also after a configuration error or a stop); True once it runs."""
        if self.running and self._powered:
            return True
        starts = self.starts
        self._powered = True
        self._wake.set()
        await self._until(lambda: self.starts > starts and self.state != "starting", timeout_s)
        return self.running

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL if the agent has not stopped within ``stop_timeout_s``."""
        self._powered = False
        self._stopping = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout_s)
            except TimeoutError:
                log.error("agent did not stop on SIGTERM; killing it", extra={"pid": proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            await self._until(lambda: self.state != "running", 1.0)  # its last lines are read
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


StatusCallback = Callable[[int, dict[str, Any]], None]
LineCallback = Callable[[dict[str, Any]], None]


class AgentOutput:
    """What the agent printed: the last ``keep`` lines (numbered) and its last status per connector.

    Lines are JSON objects (firmware.logs); anything else (a traceback, a print) is kept as
    ``{"text": line}``. Every line is also written to ``sink`` if given.
    """

    STATUS_MSG = "connector status"

    def __init__(self, keep: int = 2000, sink: TextIO | None = None) -> None:
        self._lines: deque[tuple[int, dict[str, Any]]] = deque(maxlen=keep)
        self._next_seq = 0
        self.sink = sink
        self.statuses: dict[int, dict[str, Any]] = {}
        self.limits = AgentLimits()
        self.status_listeners: list[StatusCallback] = []
        self.line_listeners: list[LineCallback] = []

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def feed(self, line: str) -> None:
        if self.sink is not None:
            try:
                self.sink.write(line + "\n")
                self.sink.flush()
            except (OSError, ValueError) as exc:  # a full disk must not stop the simulation
                log.error("agent log write failed", extra={"error": str(exc)})
                self.sink = None
        obj = _parse_line(line)
        if obj is None:
            return
        self._lines.append((self._next_seq, obj))
        self._next_seq += 1
        for listener in self.line_listeners:
            listener(obj)
        if obj.get("msg") == self.STATUS_MSG and "status" in obj:
            self._record_status(obj)
        self.limits.feed(obj)

    def _record_status(self, obj: dict[str, Any]) -> None:
        connector = obj.get("connector")
        if isinstance(connector, bool) or not isinstance(connector, int | str):
            return
        try:
            n = int(connector)
        except ValueError:
            return
        record = {k: v for k, v in obj.items() if k not in ("ts", "level", "logger", "msg", "connector")}
        record["at"] = obj.get("ts")
        self.statuses[n] = record
        for listener in self.status_listeners:
            listener(n, record)

    def tail(self, n: int, since: int | None = None) -> list[dict[str, Any]]:
        """The last ``n`` lines kept, or with ``since`` the first ``n`` lines numbered ``since`` or later."""
        if since is not None:
            return [obj for seq, obj in self._lines if seq >= since][:n]
        if n <= 0:
            return []
        return [obj for _, obj in list(self._lines)[-n:]]


def _parse_line(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            pass
        else:
            if isinstance(obj, dict):
                return obj
    return {"text": line}
