"""What every adapter's feature context shares about the CSMS connection: the CALL on the current (or a given)
connection that marks the traffic the heartbeat measures, short tasks owned by the adapter, and the two workers
that look the same in every version — Heartbeat after an interval without traffic, and a queue of messages sent
in order. A version's context (``V16Context``, ``V201Context``) is a dataclass with the fields named below and
inherits these methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from firmware.ocpp.rpc import CallErrorReceived, ConnectionLost, InvalidResponse, RpcChargePoint
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox, OutboxStats

if TYPE_CHECKING:
    from firmware.config import AgentConfig

log = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
#: Between tries of a final status notification (firmware, logs) while the CSMS does not answer it.
STATUS_RESEND_S = 5.0
#: How long an intermediate maintenance status waits for the CSMS connection before it is skipped: long enough for
#: the agent that resumes a job right after a restart (or a power cut) to connect and be accepted, short enough that
#: an update made offline is not held up for long.
INTERMEDIATE_WAIT_S = 15.0


@dataclass(kw_only=True)
class CsmsConnectionMixin:
    """The connection's state every version's context holds (keyword-only fields with defaults, so that a version's
    dataclass context puts its own required fields first) and the methods over it. ``config`` is the version
    context's own field."""

    if TYPE_CHECKING:
        config: AgentConfig
    cp: RpcChargePoint | None = None  # the current connection's charge point
    online: asyncio.Event = field(default_factory=asyncio.Event)  # connected and accepted
    last_traffic: float = 0.0  # loop time of our last answered CALL (the heartbeat waits on it)
    wake_delivery: Callable[[], None] = lambda: None  # something was queued in the outbox
    #: ``(type, techInfo)``: a security event under the whitepaper's name (``firmware.ocpp.security_events``:
    #: logged, queued if critical, sent under the version's name)
    report_security_event: Callable[[str, str | None], object] = lambda event, info: None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # the adapter's short tasks

    @property
    def response_timeout_s(self) -> float:
        assert self.config.ocpp is not None
        return self.config.ocpp.response_timeout_s

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A CALL on the current connection."""
        cp = self.cp
        if cp is None:
            raise ConnectionLost(f"{action}: not connected")
        return await self.call_on(cp, action, payload)

    async def call_on(self, cp: RpcChargePoint, action: str, payload: dict[str, Any], *,
                      checked: bool = False) -> dict[str, Any]:
        """A CALL on one connection (a connection's workers never send on the next one); ``checked``: see
        :meth:`RpcChargePoint.call_raw`."""
        result = await cp.call_raw(action, payload, checked=checked)
        self.last_traffic = asyncio.get_running_loop().time()
        return result

    async def notify_status(self, action: str, payload: dict[str, Any], *, final: bool) -> None:
        """A maintenance status notification (firmware, logs): an intermediate one is sent once the CSMS is
        connected, skipped when it is not within :data:`INTERMEDIATE_WAIT_S`; a ``final`` one waits for the
        connection and is sent again every :data:`STATUS_RESEND_S` until answered (a CALLERROR or a malformed answer
        ends it: no use insisting)."""
        while True:
            if not final:
                try:
                    await asyncio.wait_for(self.online.wait(), INTERMEDIATE_WAIT_S)
                except TimeoutError:
                    return
            await self.online.wait()
            try:
                await self.call(action, payload)
                return
            except (ConnectionLost, TimeoutError) as exc:
                log.info("status notification not answered", extra={"action": action, "payload": payload,
                                                                     "error": str(exc)})
                if not final:
                    return
            except (CallErrorReceived, InvalidResponse) as exc:
                log.warning("status notification refused by the CSMS", extra={"action": action, "payload": payload,
                                                                               "error": str(exc)})
                return
            await asyncio.sleep(STATUS_RESEND_S)

    async def accepted_within(self, timeout_s: float) -> str | None:
        """The new agent's check after a firmware switch: accepted by the CSMS (its BootNotification answered
        Accepted) within ``timeout_s``; None when it was, else why not."""
        try:
            await asyncio.wait_for(self.online.wait(), timeout_s)
        except TimeoutError:
            return f"not accepted by the CSMS within {timeout_s:g} s"
        return None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def heartbeat(self, call: Call, interval_s: Callable[[], int], wake: asyncio.Event) -> None:
        """A connection's Heartbeat worker: Heartbeat once ``interval_s()`` passed without other traffic of ours
        (0 turns it off); ``wake`` set: the interval changed, recompute the wait now."""
        loop = asyncio.get_running_loop()
        while True:
            interval = interval_s()
            wait = interval - (loop.time() - self.last_traffic) if interval > 0 else None
            if wait is None or wait > 0:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), wait)
                continue
            try:
                await call("Heartbeat", {})
            except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
                log.warning("Heartbeat failed", extra={"error": str(exc)})
                self.last_traffic = loop.time()


async def boot_until_accepted(call: Call, payload: Callable[[], dict[str, Any]], *,
                              answered: Callable[[str, int], None], heartbeat_interval: Callable[[], int],
                              wait: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """BootNotification until Accepted, the same in every version (only the payload differs): one that fails (a
    CALLERROR, a malformed answer, no answer) is sent again after HeartbeatInterval (10 s at least); after Pending or
    Rejected only the CSMS may talk, until the interval it gave (30 s if none). ``answered(status, interval)`` sees
    each answer (the version logs it and, on Accepted, takes the interval as its HeartbeatInterval); ``wait``: how
    a wait is spent (1.6 cuts it short when a TriggerMessage asks for a BootNotification)."""
    while True:
        try:
            answer = await call("BootNotification", payload())
        except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
            log.warning("BootNotification failed", extra={"error": str(exc)})
            await wait(max(heartbeat_interval(), 10))
            continue
        status, interval = str(answer["status"]), int(answer["interval"])
        answered(status, interval)
        if status == "Accepted":
            return
        await wait(interval if interval > 0 else 30)


async def send_in_order(call: Call, action: str, queue: list[dict[str, Any]], wake: asyncio.Event) -> None:
    """A connection's worker for a queue of ``action`` messages kept in memory (the statuses): sends them in
    order as ``wake`` says there are some; a refused one is dropped (logged), a timed-out one sent again."""
    while True:
        await wake.wait()
        wake.clear()
        while queue:
            payload = queue[0]
            try:
                await call(action, payload)
            except (CallErrorReceived, InvalidResponse) as exc:
                log.warning("%s not accepted", action, extra={"error": str(exc)})
            except TimeoutError:
                log.warning("%s timed out; resending", action)
                continue
            queue.pop(0)


class AdapterContext(Protocol):
    """What :class:`ContextViews` reads of a version's feature context."""

    ledger: Ledger
    outbox: Outbox
    online: asyncio.Event

    @property
    def response_timeout_s(self) -> float: ...


class ContextViews:
    """The parts of :class:`~firmware.ocpp.adapter.OcppAdapter` every version answers alike from its feature
    context (``ctx``), so that each client says only what differs."""

    ctx: AdapterContext

    @property
    def ledger(self) -> Ledger:
        return self.ctx.ledger

    @property
    def outbox(self) -> Outbox:
        return self.ctx.outbox

    @property
    def online(self) -> bool:
        """Connected to the CSMS and accepted (for health reports)."""
        return self.ctx.online.is_set()

    @property
    def response_timeout_s(self) -> float:
        return self.ctx.response_timeout_s

    def outbox_stats(self) -> OutboxStats:
        return self.ctx.outbox.stats()
