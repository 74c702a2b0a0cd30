"""One CSMS connection's life, the same for every OCPP version: boot, then the connection's workers, until it ends.

An adapter's session callback (given to :meth:`~firmware.ocpp.link.OcppLink.run`) hands :func:`serve_connection`
its charge point (the RPC layer on this connection), the boot coroutine (BootNotification until Accepted, or at
once if this run of the agent was accepted already) and what to start once accepted. A worker that fails for any
other reason than the connection going down is logged and the connection closed, so the link starts a clean
session (the queue resent, current statuses reported) instead of running half-dead; a worker that says the CSMS
does not answer (:class:`~firmware.ocpp.delivery.LinkUnresponsive`) closes it too.

:func:`serve_adapter_session` is what both adapters' session callbacks do with it: the charge point on the
connection, and once accepted the hooks, the in-order statuses, the outbox, the heartbeat and the hardware report;
an adapter passes only its dialect, handlers and the features that differ by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol

from firmware.ocpp.adapter import Spawn
from firmware.ocpp.data_transfer import VendorDataTransfer
from firmware.ocpp.delivery import LinkUnresponsive, OutboxDelivery
from firmware.ocpp.rpc import ConnectionLost, Dialect, RpcChargePoint
from firmware.ocpp.session_context import Call, CsmsConnectionMixin

log = logging.getLogger(__name__)

Worker = tuple[Coroutine[Any, Any, Any], str]  # (coroutine, task name)
ConnectionWorker = Callable[[Call], Coroutine[Any, Any, Any]]  # a coroutine of one connection, given its CALL


class InOrderStatuses(Protocol):
    """The status reporter of a version (its StatusNotifications, kept in memory and sent in order)."""

    def connected(self) -> None: ...
    def disconnected(self) -> None: ...
    def send(self, call: Call) -> Coroutine[Any, Any, None]: ...


async def serve_connection(connection: Any, cp: RpcChargePoint, start_worker: Spawn, *,
                           boot: Coroutine[Any, Any, Any], accepted: Callable[[], tuple[list[Worker], list[Worker]]],
                           ended: Callable[[], None], draining: Callable[[], bool]) -> None:
    """Runs until the connection ends (re-raising how it ended). ``accepted()`` is called once the boot is done and
    returns the workers whose end ends the connection and the extra ones that may simply finish; ``ended()`` runs
    last, whatever happened; ``draining()``: the agent is stopping, so a worker that returns is expected."""
    receiver = start_worker(cp.start(), "ocpp-receive")
    workers: list[asyncio.Task[Any]] = []
    extras: list[asyncio.Task[Any]] = []  # cleaned up with the workers however this ends (cancelled included)
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
        await receiver
    finally:
        ended()
        for t in [*workers, *extras, receiver]:
            t.cancel()
        await asyncio.gather(*workers, *extras, receiver, return_exceptions=True)


async def serve_adapter_session(connection: Any, ctx: CsmsConnectionMixin, dialect: Dialect,
                                handlers: Iterable[object], start_worker: Spawn, *, boot: ConnectionWorker,
                                heartbeat: ConnectionWorker, statuses: InOrderStatuses, delivery: OutboxDelivery,
                                hardware: VendorDataTransfer, on_accepted: Sequence[Callable[[], None]]) -> None:
    """One connection of an adapter (the session callback of :meth:`~firmware.ocpp.link.OcppLink.run`): boot once
    per run of the agent; once accepted, ``on_accepted`` in order, then the statuses, the outbox (each message
    checked as it was queued), the heartbeat and, once per run, the hardware report."""
    cp = RpcChargePoint(ctx.config.charge_point_id, connection, dialect, response_timeout=ctx.response_timeout_s,
                        handlers=handlers)
    ctx.cp = cp
    call = functools.partial(ctx.call_on, cp)

    def accepted() -> tuple[list[Worker], list[Worker]]:
        for hook in on_accepted:
            hook()
        statuses.connected()
        ctx.online.set()
        send_queued = functools.partial(ctx.call_on, cp, checked=True)  # checked as queued (check_queued)
        extra: list[Worker] = []
        if not hardware.hardware_reported:
            extra.append((hardware.report_hardware(call), "ocpp-hardware"))
        return [(statuses.send(call), "ocpp-status"), (delivery.run(send_queued), "ocpp-outbox"),
                (heartbeat(call), "ocpp-heartbeat")], extra

    def ended() -> None:
        ctx.online.clear()
        statuses.disconnected()
        ctx.cp = None

    await serve_connection(connection, cp, start_worker, boot=boot(call), accepted=accepted, ended=ended,
                           draining=lambda: delivery.draining)
