"""One CSMS connection's life, the same for every OCPP version: boot, then the connection's workers, until it ends.

An adapter's session callback (given to :meth:`~firmware.ocpp.link.OcppLink.run`) hands :func:`serve_connection`
its charge point (the RPC layer on this connection), the boot coroutine (BootNotification until Accepted, or at
once if this run of the agent was accepted already) and what to start once accepted. A worker that fails for any
other reason than the connection going down is logged and the connection closed, so the link starts a clean
session (the queue resent, current statuses reported) instead of running half-dead; a worker that says the CSMS
does not answer (:class:`~firmware.ocpp.delivery.LinkUnresponsive`) closes it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from firmware.ocpp.adapter import Spawn
from firmware.ocpp.delivery import LinkUnresponsive
from firmware.ocpp.rpc import ConnectionLost, RpcChargePoint

log = logging.getLogger(__name__)

Worker = tuple[Coroutine[Any, Any, Any], str]  # (coroutine, task name)


async def serve_connection(connection: Any, cp: RpcChargePoint, start_worker: Spawn, *,
                           boot: Coroutine[Any, Any, Any], accepted: Callable[[], tuple[list[Worker], list[Worker]]],
                           ended: Callable[[], None], draining: Callable[[], bool]) -> None:
    """Runs until the connection ends (re-raising how it ended). ``accepted()`` is called once the boot is done and
    returns the workers whose end ends the connection and the extra ones that may simply finish; ``ended()`` runs
    last, whatever happened; ``draining()``: the agent is stopping, so a worker that returns is expected."""
    receiver = start_worker(cp.start(), "ocpp-receive")
    workers: list[asyncio.Task[Any]] = []
    try:
        boot_task = start_worker(boot, "ocpp-boot")
        done, _ = await asyncio.wait({receiver, boot_task}, return_when=asyncio.FIRST_COMPLETED)
        if receiver in done or isinstance(boot_task.exception(), ConnectionLost):
            boot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await boot_task
            await receiver  # re-raise ConnectionClosed
            return
        boot_task.result()
        main, extra = accepted()
        workers = [start_worker(c, n) for c, n in main]
        extras = [start_worker(c, n) for c, n in extra]
        done, _ = await asyncio.wait({receiver, *workers}, return_when=asyncio.FIRST_COMPLETED)
        for task in done - {receiver}:
            error = task.exception() if not task.cancelled() else None
            if error is None and draining():
                continue  # the agent is stopping: the outbox worker finished its last delivery
            if isinstance(error, LinkUnresponsive):
                log.warning("CSMS not answering; closing the connection to reconnect", extra={"error": str(error)})
                await connection.close()
            elif not isinstance(error, ConnectionLost):
                log.error("OCPP worker stopped; reconnecting", extra={"worker": task.get_name()}, exc_info=error)
                await connection.close()
        workers += extras
        await receiver
    finally:
        ended()
        for t in [*workers, receiver]:
            t.cancel()
        await asyncio.gather(*workers, receiver, return_exceptions=True)
