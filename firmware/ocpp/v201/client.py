"""The OCPP 2.0.1 charging station: composes the 2.0.1 features and keeps one session with the CSMS at a time.

The same shape as the 1.6 adapter (:mod:`firmware.ocpp.v16.client`), on the same layers — the session machine,
the charger layer, the ledger and the durable outbox, the link and the RPC layer with the 2.0.1
:data:`~firmware.ocpp.v201.dialect.OCPP201` dialect. The features share one
:class:`~firmware.ocpp.v201.context.V201Context`: :mod:`provisioning` (BootNotification, Heartbeat,
Get/SetVariables on the :mod:`device_model`), :mod:`status` (StatusNotification), :mod:`transactions`
(TransactionEvent through the outbox), :mod:`authorization` (Authorize, the cache) and :mod:`session_settings`.
This module only routes:

* connector effects to the features (``record`` inside the connector's commit, ``notify`` after it);
* each connection: BootNotification once per run of the agent, then the connection's workers (statuses, the
  outbox, heartbeat) until it ends;
* the CSMS's CALLs to the features' handlers (:class:`~firmware.ocpp.rpc.RpcChargePoint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from firmware.charger.connector import ConnectorController, pending_reset
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.ocpp.adapter import Spawn
from firmware.ocpp.delivery import LinkUnresponsive
from firmware.ocpp.link import Backoff, OcppLink
from firmware.ocpp.rpc import ConnectionLost, RpcChargePoint
from firmware.ocpp.v201.authorization import Authorization
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel
from firmware.ocpp.v201.dialect import OCPP201
from firmware.ocpp.v201.provisioning import Provisioning
from firmware.ocpp.v201.session_settings import SessionSettings, session_config
from firmware.ocpp.v201.status import StatusReporter
from firmware.ocpp.v201.transactions import Transactions, check_queued
from firmware.session import Effect, RequestAuthorization, SessionConfig, StatusChanged
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox, OutboxStats
from hal.interfaces import MeterReading

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp2.0.1"


class Ocpp201Client:
    """One charging station's OCPP 2.0.1 session with the CSMS; also a connector observer."""

    def __init__(self, config: AgentConfig, connectors: dict[int, ConnectorController], db: Database, *,
                 request_exit: Callable[[ExitCode], None], ledger: Ledger | None = None,
                 spawn: Spawn | None = None) -> None:
        assert config.ocpp is not None
        variables = DeviceModel(db, presets=config.ocpp.presets)
        self.ctx = ctx = V201Context(config, connectors, db, variables, ledger or Ledger(db),
                                     Outbox(db, max_queued=config.max_queued_messages, check=check_queued),
                                     request_exit)
        self._start_worker: Spawn = spawn or (lambda coro, name: asyncio.create_task(coro, name=name))
        ping = variables.get_int("OCPPCommCtrlr", "WebSocketPingInterval")  # RebootRequired: read once
        self.link = OcppLink(config.ocpp.csms_url, config.charge_point_id, SUBPROTOCOL, password=config.ocpp.password,
                             backoff=Backoff(config.ocpp.reconnect_min_s, config.ocpp.reconnect_max_s),
                             ping_interval_s=ping or None)
        # B01: the reason of this boot; the reset that ended the previous run is still flagged at this point
        self.provisioning = Provisioning(ctx, "RemoteReset" if pending_reset(db) else "PowerUp")
        self.statuses = StatusReporter(
            connectors, lambda: float(variables.get_int("OCPPCommCtrlr", "OfflineThreshold")))
        self.authorization = Authorization(ctx)
        self.transactions = Transactions(ctx, self.authorization.learn)
        self._handlers: tuple[object, ...] = (self.provisioning,)
        self._session_settings = SessionSettings(variables, connectors)

    @property
    def variables(self) -> DeviceModel:
        return self.ctx.variables

    @property
    def ledger(self) -> Ledger:
        return self.ctx.ledger

    @property
    def outbox(self) -> Outbox:
        return self.ctx.outbox

    @property
    def online(self) -> bool:
        return self.ctx.online.is_set()

    @property
    def response_timeout_s(self) -> float:
        return self.ctx.response_timeout_s

    def session_config(self, base: SessionConfig) -> SessionConfig:
        return session_config(base, self.ctx.variables)

    def loops(self) -> dict[str, Callable[[], Awaitable[None]]]:
        return {"ocpp": self.run, "metering": self.transactions.run_sampling}

    def outbox_stats(self) -> OutboxStats:
        return self.ctx.outbox.stats()

    def reset_retries(self) -> int:
        return self.ctx.variables.get_int("OCPPCommCtrlr", "ResetRetries")

    # --- connector observer -------------------------------------------------------------------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        self.transactions.record(ctrl, effects, reading, now)

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                self.statuses.connector_changed(ctrl, e)
            elif isinstance(e, RequestAuthorization):
                self.ctx.spawn(self.authorization.authorize(ctrl, e))

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.link.run(self._session)

    async def _session(self, connection: Any) -> None:
        """One connection: boot (once per run), then the workers, until the connection ends. A worker that
        fails for any other reason than the connection going down is logged and the connection closed, so
        the link starts a clean session (resent queue, current statuses) instead of running half-dead."""
        ctx = self.ctx
        cp = RpcChargePoint(ctx.config.charge_point_id, connection, OCPP201, response_timeout=ctx.response_timeout_s,
                            handlers=self._handlers)
        ctx.cp = cp
        call = functools.partial(ctx.call_on, cp)
        receiver = self._start_worker(cp.start(), "ocpp-receive")
        workers: list[asyncio.Task[Any]] = []
        try:
            boot = self._start_worker(self.provisioning.boot(call), "ocpp-boot")
            done, _ = await asyncio.wait({receiver, boot}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done or isinstance(boot.exception(), ConnectionLost):
                boot.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                    await boot
                await receiver  # re-raise ConnectionClosed
                return
            boot.result()
            self.statuses.connected()
            ctx.online.set()
            delivery = self.transactions.delivery
            send_queued = functools.partial(ctx.call_on, cp, checked=True)  # checked as queued (check_queued)
            workers = [self._start_worker(c, n) for c, n in (
                (self.statuses.send(call), "ocpp-status"), (delivery.run(send_queued), "ocpp-outbox"),
                (self.provisioning.heartbeat(call), "ocpp-heartbeat"))]
            done, _ = await asyncio.wait({receiver, *workers}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {receiver}:
                error = task.exception() if not task.cancelled() else None
                if error is None and delivery.draining:
                    continue  # the agent is stopping: the outbox worker finished its last delivery
                if isinstance(error, LinkUnresponsive):
                    log.warning("CSMS not answering; closing the connection to reconnect", extra={"error": str(error)})
                    await connection.close()
                elif not isinstance(error, ConnectionLost):
                    log.error("OCPP worker stopped; reconnecting", extra={"worker": task.get_name()},
                              exc_info=error)
                    await connection.close()
            await receiver
        finally:
            ctx.online.clear()
            self.statuses.disconnected()
            ctx.cp = None
            for t in [*workers, receiver]:
                t.cancel()
            await asyncio.gather(*workers, receiver, return_exceptions=True)

    async def close_orphaned_transactions(self) -> int:
        closed = await self.transactions.close_orphaned_transactions()
        if closed:
            self.transactions.delivery.wake()
        return closed

    async def drain(self, timeout_s: float = 5.0) -> None:
        await self.transactions.delivery.drain(timeout_s)

    async def close(self) -> None:
        await self.ctx.close()
