"""One connection's life (firmware/ocpp/connection.py ``serve_connection``): whatever ends it — the connection
closing, or the session being cancelled (a reconnect, the agent stopping) — every task it started is cancelled and
awaited, the workers that may simply finish (the hardware report) included, so none leaves an exception nobody
retrieves ("Task exception was never retrieved" in the agent's log)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from firmware.ocpp.connection import serve_connection


class Receiver:
    """Stands in for the RPC charge point's receive loop: runs until the connection ends."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def start(self) -> None:
        await self.closed.wait()


async def test_a_cancelled_session_leaves_no_task_behind() -> None:
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
    started: list[asyncio.Task[Any]] = []
    report_failed = asyncio.Event()

    def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
        started.append(asyncio.create_task(coro, name=name))
        return started[-1]

    async def boot() -> None:
        return None

    async def forever() -> None:
        await asyncio.Event().wait()

    async def report() -> None:  # an extra worker failing as the connection goes: ConnectionLost in the agent
        report_failed.set()
        raise ConnectionError("not connected")

    ended: list[bool] = []
    session = asyncio.create_task(serve_connection(
        object(), Receiver(), spawn, boot=boot(),  # type: ignore[arg-type]
        accepted=lambda: ([(forever(), "ocpp-outbox")], [(report(), "ocpp-hardware"), (forever(), "ocpp-extra")]),
        ended=lambda: ended.append(True), draining=lambda: False))
    await asyncio.wait_for(report_failed.wait(), 5)
    session.cancel()
    await asyncio.gather(session, return_exceptions=True)
    assert ended == [True]
    assert [t.get_name() for t in started if not t.done()] == []  # the running extra worker too
    started.clear()  # nothing of ours holds them now: an exception never retrieved is reported when collected
    gc.collect()
    await asyncio.sleep(0)
    assert unretrieved == []
