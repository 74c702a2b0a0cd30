"""Every long-running task of the agent, watched in one place.

A task that ends when nobody asked it to — with an exception, or a loop that simply returns — is a fault
of the agent, and a silent one is the worst kind: a dead CSMS link or meter poll in a process that keeps
running is never restarted by systemd. Each task is registered with what its end means
(docs/architecture.md lists them):

* :attr:`OnFailure.RESTART` — the agent's own loops (the CSMS link, metering, limits, telemetry, card
  routing): logged as an ERROR with the traceback, then started again after a back-off (1 s doubling
  to 30 s). One that fails :data:`ESCALATE_AFTER` times within :data:`ESCALATE_WINDOW_S` is treated as
  EXIT: a loop that cannot stay up needs a fresh process.
* :attr:`OnFailure.EXIT` — the drivers' loops (board keep-alive and state, meter polling, readers): their
  state lives in the driver and cannot be restarted from outside. The agent stops with exit code 1
  (``ExitCode.FAILURE``), systemd restarts it, and the new process syncs the hardware from scratch (the
  boards fall back to their safe state as soon as the host is silent).
* :attr:`OnFailure.OWNER` — tasks whose owner awaits them and handles their end (the workers of one CSMS
  connection: the session closes the connection and the link reconnects). Only listed and injectable here.

:meth:`TaskSupervisor.inject` raises :class:`InjectedFault` inside a running task, for tests of exactly this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A RESTART task that fails this often within the window is escalated to EXIT.
ESCALATE_AFTER = 5
ESCALATE_WINDOW_S = 600.0


class OnFailure(StrEnum):
    RESTART = "restart"
    EXIT = "exit"
    OWNER = "owner"


class InjectedFault(Exception):
    """Raised inside a task by :meth:`TaskSupervisor.inject` (tests)."""


@dataclass
class TaskState:
    """What a health report shows of one task."""

    name: str
    on_failure: OnFailure
    state: str = "running"  # running | restarting | ended | failed | stopped
    failures: int = 0
    last_error: str | None = None
    since: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "onFailure": self.on_failure.value, "state": self.state,
                "failures": self.failures, "lastError": self.last_error, "since": round(self.since, 3)}


class TaskSupervisor:
    def __init__(self, on_fatal: Callable[[str, BaseException | None], None], *, restart_delay_s: float = 1.0,
                 max_restart_delay_s: float = 30.0) -> None:
        """``on_fatal(task name, error)`` is called once a task whose end must stop the agent has ended."""
        self._on_fatal = on_fatal
        self.restart_delay_s = restart_delay_s
        self.max_restart_delay_s = max_restart_delay_s
        self._states: dict[str, TaskState] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # the RESTART/EXIT loops started here
        self._injections: dict[str, asyncio.Future[None]] = {}
        self._failure_times: dict[str, list[float]] = {}
        self._stopping = False

    # --- registering ------------------------------------------------------------------------------

    def start(self, name: str, factory: Callable[[], Awaitable[None]],
              on_failure: OnFailure = OnFailure.RESTART) -> None:
        """Run ``factory()`` for as long as the agent runs (RESTART: again after each unexpected end)."""
        self._states[name] = TaskState(name, on_failure)
        self._tasks[name] = asyncio.create_task(self._keep_running(name, factory), name=name)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str,
              on_failure: OnFailure = OnFailure.EXIT) -> asyncio.Task[T]:
        """``asyncio.create_task`` for a task that runs once (a driver's loop, a connection's worker). An
        exception ends it as ``on_failure`` says; returning is a normal end. Cancelling it is its owner's
        right. Drivers take this as their ``spawn`` (:data:`hal.tasks.Spawn`)."""
        state = TaskState(name, on_failure)
        self._states[name] = state
        task = asyncio.create_task(self._guard(name, coro), name=name)
        task.add_done_callback(lambda t: self._spawned_ended(state, t))
        return task

    # --- reporting and tests ------------------------------------------------------------------------

    def report(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self._states.values()]

    def state(self, name: str) -> TaskState | None:
        return self._states.get(name)

    def inject(self, name: str, message: str = "injected fault") -> bool:
        """Raise :class:`InjectedFault` inside task ``name`` now (False: no such task running)."""
        future = self._injections.get(name)
        if future is None or future.done():
            return False
        future.set_exception(InjectedFault(f"{message} ({name})"))
        return True

    def names(self) -> list[str]:
        return [n for n, s in self._states.items() if s.state in ("running", "restarting")]

    async def stop(self) -> None:
        """The agent is stopping: every end from now on is expected. Cancels the loops started here; spawned
        tasks belong to their owners (a driver's ``close`` stops its loops after leaving the hardware safe)."""
        self._stopping = True
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in self._states.values():
            if state.state in ("running", "restarting"):
                state.state = "stopped"

    # --- the watching ---------------------------------------------------------------------------------

    async def _guard(self, name: str, work: Awaitable[T]) -> T:
        """Await ``work`` in a task of its own, next to a future that :meth:`inject` can fail."""
        loop = asyncio.get_running_loop()
        injected: asyncio.Future[None] = loop.create_future()
        self._injections[name] = injected
        inner = asyncio.ensure_future(work)
        either: set[asyncio.Future[Any]] = {inner, injected}
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if inner.done():
                return inner.result()
            inner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await inner
            injected.result()  # raises the InjectedFault
            raise AssertionError("unreachable")
        finally:
            if not inner.done():
                inner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await inner
            if not injected.done():
                injected.cancel()
            if self._injections.get(name) is injected:
                del self._injections[name]

    async def _keep_running(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        state = self._states[name]
        delay = self.restart_delay_s
        while True:
            state.state, state.since = "running", time.time()
            error: BaseException | None = None
            try:
                await self._guard(name, factory())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            if self._stopping:
                return
            state.failures += 1
            state.last_error = _describe(error)
            if state.on_failure is OnFailure.EXIT or self._escalate(name):
                state.state = "failed"
                log.critical("task ended; stopping the agent", exc_info=error,
                             extra={"task": name, "error": state.last_error, "failures": state.failures})
                self._on_fatal(name, error)
                return
            state.state = "restarting"
            log.error("task ended; restarting", exc_info=error,
                      extra={"task": name, "error": state.last_error, "failures": state.failures,
                             "restart_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_restart_delay_s)

    def _escalate(self, name: str) -> bool:
        now = time.monotonic()
        recent = [t for t in self._failure_times.get(name, []) if now - t < ESCALATE_WINDOW_S] + [now]
        self._failure_times[name] = recent
        return len(recent) >= ESCALATE_AFTER

    def _spawned_ended(self, state: TaskState, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            state.state = "stopped"
            return
        error = task.exception()
        if error is None:
            state.state = "ended"
            return
        state.state, state.failures, state.last_error = "failed", state.failures + 1, _describe(error)
        if self._stopping or state.on_failure is OnFailure.OWNER:
            return  # the owner awaits it and decides
        log.critical("task failed; stopping the agent", exc_info=error,
                     extra={"task": state.name, "error": state.last_error})
        self._on_fatal(state.name, error)


def _describe(error: BaseException | None) -> str:
    return "returned" if error is None else f"{type(error).__name__}: {error}"[:300]
