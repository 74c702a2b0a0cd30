"""TaskSupervisor: a task that ends unexpectedly is restarted (logged) or stops the agent, as registered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from firmware.task_supervisor import ESCALATE_AFTER, InjectedFault, OnFailure, TaskSupervisor


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


async def test_a_restart_task_is_started_again_after_an_exception_and_the_error_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    fatal: list[str] = []
    sup = TaskSupervisor(lambda name, _e: fatal.append(name), restart_delay_s=0.01)
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("first run fails")
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR):
        sup.start("work", loop)
        await until(lambda: runs == 2)
    state = sup.state("work")
    assert state is not None and (state.state, state.failures) == ("running", 1)
    assert state.last_error == "RuntimeError: first run fails"
    record = next(r for r in caplog.records if r.getMessage() == "task ended; restarting")
    assert record.task == "work" and record.exc_info is not None  # type: ignore[attr-defined]
    assert fatal == []
    await sup.stop()
    assert sup.state("work").state == "stopped"  # type: ignore[union-attr]


async def test_a_loop_that_returns_is_an_unexpected_end_too() -> None:
    sup = TaskSupervisor(lambda name, _e: None, restart_delay_s=0.01)
    runs = 0

    async def returns() -> None:
        nonlocal runs
        runs += 1

    sup.start("short", returns)
    await until(lambda: runs >= 2)
    assert sup.state("short").last_error == "returned"  # type: ignore[union-attr]
    await sup.stop()


async def test_an_exit_task_calls_on_fatal_once_and_is_not_restarted() -> None:
    fatal: list[tuple[str, str]] = []
    sup = TaskSupervisor(lambda name, e: fatal.append((name, repr(e))), restart_delay_s=0.01)
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        raise ValueError("boom")

    sup.start("driver", loop, OnFailure.EXIT)
    await until(lambda: bool(fatal))
    await asyncio.sleep(0.05)
    assert runs == 1 and fatal == [("driver", "ValueError('boom')")]
    assert sup.state("driver").state == "failed"  # type: ignore[union-attr]


async def test_a_restart_task_failing_again_and_again_is_escalated_to_exit() -> None:
    fatal: list[str] = []
    sup = TaskSupervisor(lambda name, _e: fatal.append(name), restart_delay_s=0.001, max_restart_delay_s=0.001)

    async def always_fails() -> None:
        raise OSError("no")

    sup.start("flaky", always_fails)
    await until(lambda: bool(fatal))
    assert fatal == ["flaky"] and sup.state("flaky").failures == ESCALATE_AFTER  # type: ignore[union-attr]


async def test_injecting_a_fault_ends_the_task_as_an_exception_would() -> None:
    fatal: list[str] = []
    sup = TaskSupervisor(lambda name, _e: fatal.append(name), restart_delay_s=0.01)
    cleaned = asyncio.Event()

    async def driver_loop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    task = sup.spawn(driver_loop(), name="board1-keepalive")
    restarted = 0

    async def agent_loop() -> None:
        nonlocal restarted
        restarted += 1
        await asyncio.Event().wait()

    sup.start("metering", agent_loop)
    await until(lambda: restarted == 1)
    assert sorted(sup.names()) == ["board1-keepalive", "metering"]
    assert sup.inject("metering")
    await until(lambda: restarted == 2)
    assert fatal == []
    assert sup.inject("board1-keepalive")
    with pytest.raises(InjectedFault):
        await task
    assert cleaned.is_set() and fatal == ["board1-keepalive"]
    assert not sup.inject("board1-keepalive") and not sup.inject("no-such-task")
    await sup.stop()


async def test_spawned_tasks_owned_elsewhere_are_listed_but_their_owner_decides() -> None:
    fatal: list[str] = []
    sup = TaskSupervisor(lambda name, _e: fatal.append(name))

    async def worker() -> int:
        raise ConnectionError("link gone")

    task = sup.spawn(worker(), name="ocpp-outbox", on_failure=OnFailure.OWNER)
    with pytest.raises(ConnectionError):
        await task
    assert fatal == [] and sup.state("ocpp-outbox").state == "failed"  # type: ignore[union-attr]
    ok = sup.spawn(asyncio.sleep(0, result=7), name="once")
    assert await ok == 7 and sup.state("once").state == "ended"  # type: ignore[union-attr]
    report = {r["name"]: r for r in sup.report()}
    assert report["ocpp-outbox"]["onFailure"] == "owner" and report["ocpp-outbox"]["lastError"].startswith(
        "ConnectionError")


async def test_ends_while_stopping_are_expected() -> None:
    fatal: list[str] = []
    sup = TaskSupervisor(lambda name, _e: fatal.append(name))
    task = sup.spawn(asyncio.Event().wait(), name="reader")
    sup.start("limits", lambda: asyncio.Event().wait())
    await asyncio.sleep(0)
    await sup.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert fatal == [] and {r["state"] for r in sup.report()} == {"stopped"}
