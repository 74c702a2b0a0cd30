"""The agent's event-loop exception handler (firmware/agent.py ``Agent._callback_failed``): an exception no task
owns — asyncio's "Task exception was never retrieved" among them — is logged once as an ERROR with asyncio's own
message and counted, and the handler itself never fails (a log field named ``message`` would make logging raise,
and asyncio would then log "Unhandled error in exception handler" instead)."""

from __future__ import annotations

import asyncio
import gc
import logging
from types import SimpleNamespace

import pytest

from firmware.agent import Agent


def test_an_unretrieved_task_exception_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    owner = SimpleNamespace(report=SimpleNamespace(callback_errors=0))
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda lp, ctx: Agent._callback_failed(owner, lp, ctx))  # type: ignore[arg-type]

    async def fails() -> None:
        raise ConnectionError("not connected")

    try:
        with caplog.at_level(logging.ERROR):
            task = loop.create_task(fails())
            loop.run_until_complete(asyncio.wait([task]))
            del task  # never retrieved: asyncio reports it when the task is collected
            gc.collect()
    finally:
        loop.close()
    records = [r for r in caplog.records if r.getMessage() == "unhandled error in a callback"]
    assert len(records) == 1 and owner.report.callback_errors == 1
    assert records[0].asyncio_message == "Task exception was never retrieved"  # type: ignore[attr-defined]
    assert isinstance(records[0].exc_info[1], ConnectionError)  # type: ignore[index]
    assert not [r for r in caplog.records if "Unhandled error in exception handler" in r.getMessage()]
