"""The OCPP 1.6J charge point: Core profile, mapping the connectors' session machines to messages.

What it does, in the order a charger lives it:

* keeps the WebSocket up (:class:`~firmware.ocpp.link.OcppLink`), and after a reboot sends
  BootNotification until Accepted, honouring Pending/Rejected and their interval, sending nothing
  else meanwhile (it does answer the CSMS's requests, as §4.2 allows);
* reports every connector's status (connector 0 too), with error codes from hardware faults, and the
  current status of each after a reconnect (not the history) — :mod:`~firmware.ocpp.v16.status_report`;
* turns the machines' transaction effects into StartTransaction / MeterValues / StopTransaction, kept
  in the durable outbox (:class:`~firmware.storage.transactions.TransactionLog`) and delivered strictly in
  order, the CSMS's transactionId substituted into queued messages when they are sent;
* samples meter values per MeterValueSampleInterval and clock-aligned per ClockAlignedDataInterval, and
  the transaction data StopTxnSampledData / StopTxnAlignedData ask for — :mod:`~firmware.ocpp.v16.meter_values`;
* sends Heartbeat after HeartbeatInterval without other traffic;
* serves the CSMS's Core requests by translating them into session events and the machines' answers
  back into confirmations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import datetime
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.authorization import Authorizer, AuthSettings, IdTagInfo, Verdict
from firmware.charger.connector import ConnectorController, reset_flag
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.ocpp.delivery import LinkUnresponsive, OutboxDelivery, RetryPolicy
from firmware.ocpp.link import Backoff, OcppLink
from firmware.ocpp.rpc import (
    CallErrorReceived,
    ConnectionLost,
    InvalidResponse,
    RpcChargePoint,
    after_answering,
    handles,
)
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.configuration import ChangeResult, ConfigurationKeys
from firmware.ocpp.v16.meter_values import MeterValuesReporter, energy_wh
from firmware.ocpp.v16.status_report import StatusReporter
from firmware.session import (
    AuthorizationResult,
    AuthPurpose,
    AuthSource,
    AuthStatus,
    AvailabilityChanged,
    AvailabilityScheduled,
    Effect,
    RemoteStartRequested,
    RemoteStartResult,
    RemoteStopRequested,
    RemoteStopResult,
    RequestAuthorization,
    ResetRequested,
    StatusChanged,
    TransactionAccepted,
    TransactionRejected,
    TransactionStarted,
    TransactionStopped,
    UnlockRequested,
    UnlockResult,
    UnlockStatus,
)
from firmware.session.status import ConnectorStatus
from firmware.storage import Database
from firmware.storage.transactions import OutboxMessage, TransactionLog
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
VENDOR_ID = "evse-agent"
#: Transaction-related actions: queued on disk, delivered in order, retried per TransactionMessageAttempts.
TRANSACTION_ACTIONS = frozenset({"StartTransaction", "StopTransaction", "MeterValues"})


class _ChargePoint(RpcChargePoint):
    """The CSMS-facing handlers; each delegates to :class:`Ocpp16Client`."""

    def __init__(self, client: Ocpp16Client, connection: Any) -> None:
        super().__init__(client.identity, connection, response_timeout=client.response_timeout_s)
        self.client = client

    @handles(Action.remote_start_transaction)
    async def _remote_start(self, id_tag: str, connector_id: int | None = None, **_: Any) -> Any:
        return call_result.RemoteStartTransaction(status=await self.client.remote_start(id_tag, connector_id))

    @handles(Action.remote_stop_transaction)
    async def _remote_stop(self, transaction_id: int, **_: Any) -> Any:
        return call_result.RemoteStopTransaction(status=await self.client.remote_stop(transaction_id))

    @handles(Action.change_availability)
    async def _change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        return call_result.ChangeAvailability(status=await self.client.change_availability(connector_id, type))

    @handles(Action.change_configuration)
    async def _change_configuration(self, key: str, value: str, **_: Any) -> Any:
        return call_result.ChangeConfiguration(status=self.client.change_configuration(key, value))

    @handles(Action.get_configuration)
    async def _get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        entries, unknown = self.client.keys.get(key)
        return call_result.GetConfiguration(configuration_key=entries or None, unknown_key=unknown or None)

    @handles(Action.clear_cache)
    async def _clear_cache(self, **_: Any) -> Any:
        return call_result.ClearCache(status=self.client.clear_cache())

    @handles(Action.reset)
    async def _reset(self, type: str, **_: Any) -> Any:
        return call_result.Reset(status="Accepted")

    @after_answering(Action.reset)
    def _after_reset(self, type: str, **_: Any) -> None:
        # only now: the Accepted must be on the wire before a hard reset ends the process
        self.client.schedule_reset(hard=type == "Hard")

    @handles(Action.unlock_connector)
    async def _unlock(self, connector_id: int, **_: Any) -> Any:
        return call_result.UnlockConnector(status=await self.client.unlock(connector_id))

    @handles(Action.data_transfer)
    async def _data_transfer(self, vendor_id: str, message_id: str | None = None, data: str | None = None,
                             **_: Any) -> Any:
        status, answer = self.client.incoming_data_transfer(vendor_id, message_id, data)
        return call_result.DataTransfer(status=status, data=answer)


class Ocpp16Client:
    """One charge point's OCPP 1.6J session with the CSMS; also a connector observer."""

    def __init__(self, config: AgentConfig, connectors: dict[int, ConnectorController], db: Database,
                 keys: ConfigurationKeys, *, request_exit: Callable[[ExitCode], None],
                 diagnostics: Callable[[], dict[str, Any]] | None = None,
                 hardware: Callable[[], dict[str, Any]] | None = None,
                 spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]] | None = None) -> None:
        """``spawn(coro, name)`` starts the workers of each connection (the agent's task supervisor lists them
        and can inject faults; their ends are handled here: the connection is closed and the link reconnects)."""
        assert config.ocpp is not None
        self._start_worker = spawn or (lambda coro, name: asyncio.create_task(coro, name=name))
        self.config = config
        self.identity = config.charge_point_id
        self.connectors = connectors
        self.db = db
        self.keys = keys
        self.tlog = TransactionLog(db, max_queued=config.max_queued_messages)
        self.response_timeout_s = config.ocpp.response_timeout_s
        self._request_exit = request_exit
        self._diagnostics = diagnostics or (lambda: {})
        self._hardware = hardware
        self._hardware_reported = False  # the Hardware DataTransfer went out in this run
        self.link = OcppLink(config.ocpp.csms_url, self.identity, SUBPROTOCOL, password=config.ocpp.password,
                             backoff=Backoff(config.ocpp.reconnect_min_s, config.ocpp.reconnect_max_s),
                             ping_interval_s=keys.get_int("WebSocketPingInterval") or None)
        self.cp: _ChargePoint | None = None
        self.accepted = False  # BootNotification accepted in this run of the agent
        self._online = asyncio.Event()  # connected and accepted
        self.delivery = OutboxDelivery(self.tlog, self._retry_policy, self._confirmed)
        self.statuses = StatusReporter(connectors, keys, db, VENDOR_ID)
        self.meter_values = MeterValuesReporter(connectors, keys, self.tlog, self.delivery.wake)
        self._last_traffic = 0.0
        self._heartbeat_wake = asyncio.Event()  # HeartbeatInterval changed: recompute the wait now
        self._tasks: set[asyncio.Task[Any]] = set()
        self.auth = Authorizer(db, self._auth_settings, cache_capacity=config.ocpp.authorization_cache_size)
        keys.on_change(self._apply_key)

    @property
    def online(self) -> bool:
        """Connected to the CSMS and accepted (for health reports)."""
        return self._online.is_set()

    # --- connector observer -------------------------------------------------------------------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """Transactions and their messages go to disk here, before the hardware is switched."""
        for e in effects:
            if isinstance(e, TransactionStarted):
                meter_start = energy_wh(reading)
                payload: dict[str, Any] = {"connectorId": ctrl.id, "idTag": e.id_token, "meterStart": meter_start,
                                           "timestamp": mapping.timestamp(now)}
                if e.reservation_id is not None:
                    payload["reservationId"] = e.reservation_id
                self.tlog.start(ctrl.id, e.local_id, e.id_token, meter_start, now, ("StartTransaction", payload))
                self.meter_values.transaction_started(ctrl, e.local_id, reading, now)
                self.delivery.wake()
            elif isinstance(e, TransactionStopped):
                transaction_data = self.meter_values.transaction_stopped(ctrl, e.local_id, reading, now)
                meter_stop = energy_wh(reading)
                if reading is None:  # no meter, or it never answered since the start: no energy we can vouch for
                    record = self.tlog.get(ctrl.id, e.local_id)
                    meter_stop = record.meter_start_wh if record is not None else 0
                stop: dict[str, Any] = {"meterStop": meter_stop, "timestamp": mapping.timestamp(now),
                                        "reason": e.reason.value}
                if e.stopped_by is not None:
                    stop["idTag"] = e.stopped_by
                if transaction_data:
                    stop["transactionData"] = transaction_data
                self.tlog.stop(ctrl.id, e.local_id, stop["meterStop"], now, e.reason.value, ("StopTransaction", stop))
                self.delivery.wake()

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                self.statuses.connector_changed(ctrl, e)
            elif isinstance(e, RequestAuthorization):
                self._spawn(self._authorize(ctrl, e))

    # --- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        await self.link.run(self._session)

    async def _session(self, connection: Any) -> None:
        """One connection: boot (once per run), then the workers, until the connection ends. A worker that
        fails for any other reason than the connection going down is logged and the connection closed, so
        the link starts a clean session (resent queue, current statuses) instead of running half-dead."""
        cp = _ChargePoint(self, connection)
        self.cp = cp
        receiver = self._start_worker(cp.start(), "ocpp-receive")
        workers: list[asyncio.Task[Any]] = []
        try:
            boot = self._start_worker(self._boot(cp), "ocpp-boot")
            done, _ = await asyncio.wait({receiver, boot}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done or isinstance(boot.exception(), ConnectionLost):
                boot.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                    await boot
                await receiver  # re-raise ConnectionClosed
                return
            boot.result()
            self.statuses.connected()
            self._online.set()
            workers = [self._start_worker(c, n) for c, n in (
                (self.statuses.send(lambda action, payload: self._call(cp, action, payload)), "ocpp-status"),
                (self.delivery.run(lambda action, payload: self._call(cp, action, payload)), "ocpp-outbox"),
                (self._heartbeat(cp), "ocpp-heartbeat"))]
            extra = []
            if self._hardware is not None and not self._hardware_reported:
                extra.append(self._start_worker(self._report_hardware(cp), "ocpp-hardware"))
            done, _ = await asyncio.wait({receiver, *workers}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {receiver}:
                error = task.exception() if not task.cancelled() else None
                if error is None and self.delivery.draining:
                    continue  # the agent is stopping: the outbox worker finished its last delivery
                if isinstance(error, LinkUnresponsive):
                    log.warning("CSMS not answering; closing the connection to reconnect", extra={"error": str(error)})
                    await connection.close()
                elif not isinstance(error, ConnectionLost):
                    log.error("OCPP worker stopped; reconnecting", extra={"worker": task.get_name()},
                              exc_info=error)
                    await connection.close()
            workers += extra
            await receiver
        finally:
            self._online.clear()
            self.statuses.disconnected()
            self.cp = None
            for t in [*workers, receiver]:
                t.cancel()
            await asyncio.gather(*workers, receiver, return_exceptions=True)

    async def _call(self, cp: _ChargePoint, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        result = await cp.call_raw(action, payload)
        self._last_traffic = asyncio.get_running_loop().time()
        return result

    async def _boot(self, cp: _ChargePoint) -> None:
        """BootNotification until Accepted (once per run of the agent, not per reconnect)."""
        if self.accepted:
            return
        ident = self.config.identity
        payload: dict[str, Any] = {"chargePointVendor": ident.vendor, "chargePointModel": ident.model,
                                   "firmwareVersion": ident.firmware_version}
        if ident.serial_number:
            payload["chargePointSerialNumber"] = ident.serial_number
        while True:
            try:
                answer = await self._call(cp, "BootNotification", payload)
            except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
                log.warning("BootNotification failed", extra={"error": str(exc)})
                await asyncio.sleep(max(self.keys.get_int("HeartbeatInterval"), 10))
                continue
            status, interval = answer["status"], int(answer["interval"])
            log.info("BootNotification answered", extra={"status": status, "interval": interval})
            if status == "Accepted":
                if interval > 0:
                    self.keys.change("HeartbeatInterval", str(interval))
                self.accepted = True
                return
            # Pending / Rejected: only the CSMS may talk now; ask again after the interval it gave
            await asyncio.sleep(interval if interval > 0 else 30)

    async def _report_hardware(self, cp: _ChargePoint) -> None:
        """DataTransfer vendorId ``evse-agent``, messageId ``Hardware``: once per run of the agent, after the
        first Accepted BootNotification, ``data`` is a JSON object describing the charger's devices, so a
        CSMS operator can see what a site was commissioned with without a technician on site::

            {"chargePointVendor": ..., "chargePointModel": ..., "firmwareVersion": ...,
             "buses": [{"name", "port", "baudrate"}],
             "connectors": [{"connector", "maxCurrentA", "phases",
                             "board": {"name", "driver", "port" | "bus" + "unit"},
                             "meter": {"name", "model", "bus", "unit"} | null}],
             "readers": [{"name", "driver", "port", "connectors"}]}

        The CSMS's answer does not matter (most answer UnknownVendorId); a lost connection retries it
        on the next one. BootNotification's own fields stay the standard ones."""
        assert self._hardware is not None
        data = json.dumps(self._hardware(), separators=(",", ":"), default=str)
        try:
            answer = await self._call(cp, "DataTransfer", {"vendorId": VENDOR_ID, "messageId": "Hardware",
                                                           "data": data})
        except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
            log.warning("Hardware DataTransfer not answered", extra={"error": str(exc)})
        else:
            log.info("Hardware DataTransfer answered", extra={"status": answer.get("status")})
        self._hardware_reported = True

    # --- heartbeat --------------------------------------------------------------------------------

    async def _heartbeat(self, cp: _ChargePoint) -> None:
        """Heartbeat after HeartbeatInterval without traffic of ours; 0 turns it off. A changed interval
        applies at once (it wakes the wait), not after the old interval has run out."""
        loop = asyncio.get_running_loop()
        while True:
            interval = self.keys.get_int("HeartbeatInterval")
            wait = interval - (loop.time() - self._last_traffic) if interval > 0 else None
            if wait is None or wait > 0:
                self._heartbeat_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._heartbeat_wake.wait(), wait)
                continue
            try:
                await self._call(cp, "Heartbeat", {})
            except (CallErrorReceived, InvalidResponse, TimeoutError) as exc:
                log.warning("Heartbeat failed", extra={"error": str(exc)})
                self._last_traffic = loop.time()

    # --- transaction-related messages -------------------------------------------------------------

    def _retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.keys.get_int("TransactionMessageAttempts"),
                           float(self.keys.get_int("TransactionMessageRetryInterval")))

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Before the agent exits: let a delivery in flight finish (see :meth:`OutboxDelivery.drain`)."""
        await self.delivery.drain(timeout_s)

    def _confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        """A queued message was delivered (and removed from the outbox): act on the CSMS's answer."""
        payload = msg.payload
        if msg.action == "StartTransaction" and msg.connector is not None and msg.local_id is not None:
            tx_id = int(answer["transactionId"])
            info = answer.get("idTagInfo", {})
            self._learn(payload.get("idTag"), info)
            ctrl = self.connectors.get(msg.connector)
            if ctrl is not None:
                status = mapping.auth_status(str(info.get("status", "Invalid")))
                event: TransactionAccepted | TransactionRejected = (
                    TransactionAccepted(local_id=msg.local_id, parent_id_token=info.get("parentIdTag"))
                    if status is AuthStatus.ACCEPTED
                    else TransactionRejected(status, local_id=msg.local_id))
                self._spawn(ctrl.handle(event))
            log.info("transaction started", extra={"connector": msg.connector, "transaction_id": tx_id})
        elif msg.action == "StopTransaction":  # idTagInfo of the id that stopped it, if one did
            self._learn(payload.get("idTag"), answer.get("idTagInfo"))

    # --- power loss ------------------------------------------------------------------------------

    async def close_orphaned_transactions(self) -> int:
        """After the connectors have settled a restart: a transaction still open in the log that no session
        machine holds (its snapshot was unusable, its connector left the configuration, or the database came
        from an agent that wrote the two apart) gets its StopTransaction now, reason PowerLoss, so the CSMS
        does not keep it open for ever. Returns how many were closed."""
        closed = 0
        for rec in self.tlog.open_transactions():
            ctrl = self.connectors.get(rec.connector)
            tx = ctrl.machine.transaction if ctrl is not None else None
            if tx is not None and tx.local_id == rec.local_id:
                continue
            reading = await ctrl.fresh_reading() if ctrl is not None else None
            now = utcnow()
            meter_stop = max(energy_wh(reading), rec.meter_start_wh) if reading is not None else rec.meter_start_wh
            stop = {"meterStop": meter_stop, "timestamp": mapping.timestamp(now), "reason": "PowerLoss"}
            self.tlog.stop(rec.connector, rec.local_id, meter_stop, now, "PowerLoss", ("StopTransaction", stop))
            log.warning("transaction left open by an earlier run stopped", extra={
                "connector": rec.connector, "local_id": rec.local_id, "transaction_id": rec.transaction_id,
                "meter_stop": meter_stop})
            closed += 1
        if closed:
            self.delivery.wake()
        return closed

    # --- authorization ------------------------------------------------------------------------------

    def _auth_settings(self) -> AuthSettings:
        k = self.keys
        return AuthSettings(local_pre_authorize=k.get_bool("LocalPreAuthorize"),
                            local_authorize_offline=k.get_bool("LocalAuthorizeOffline"),
                            allow_offline_tx_for_unknown_id=k.get_bool("AllowOfflineTxForUnknownId"),
                            cache_enabled=k.get_bool("AuthorizationCacheEnabled"),
                            local_list_enabled=k.get_bool("LocalAuthListEnabled"))

    async def _authorize(self, ctrl: ConnectorController, req: RequestAuthorization) -> None:
        """Authorize an id (docs/authorization.md): from the Local Authorization List or the Authorization
        Cache when :func:`~firmware.authorization.decide` says so, else Authorize.req — and if that gets no
        answer, as offline. Every way this can fail still answers the machine, which otherwise keeps the id
        pending (and ignores the same card until the restart)."""
        cp = self.cp
        online = cp is not None and self._online.is_set()
        decision = self.auth.decide(req.id_token, online=online, purpose=req.purpose, now=utcnow())
        if decision.verdict is Verdict.ASK_CSMS and cp is not None:
            try:
                answer = await self._call(cp, "Authorize", {"idTag": req.id_token})
            except (CallErrorReceived, InvalidResponse) as exc:
                log.warning("Authorize failed", extra={"connector": ctrl.id, "error": str(exc)})
                await ctrl.handle(AuthorizationResult(req.id_token, AuthStatus.UNKNOWN, source=AuthSource.ONLINE))
                return
            except Exception as exc:  # no answer, or the connection went down meanwhile: we are offline
                log.info("Authorize not answered; authorizing as offline",
                         extra={"connector": ctrl.id, "error": f"{type(exc).__name__}: {exc}"})
                decision = self.auth.decide(req.id_token, online=False, purpose=req.purpose, now=utcnow())
            else:
                info = IdTagInfo.from_ocpp16(answer.get("idTagInfo") or {})
                now = utcnow()
                status = info.effective_status(now)
                await ctrl.handle(AuthorizationResult(req.id_token, status, parent_id_token=info.parent_id_tag,
                                                      source=AuthSource.ONLINE))
                self._learn(req.id_token, info)
                if req.purpose is AuthPurpose.REMOTE_START:
                    log.info("remote start authorized", extra={"connector": ctrl.id, "status": status.value})
                return
        log.info("authorized without the CSMS", extra={
            "connector": ctrl.id, "purpose": req.purpose.value, "verdict": decision.verdict.value,
            "status": decision.status.value, "source": decision.source.value if decision.source else None,
            "reason": decision.reason})
        await ctrl.handle(decision.result(req.id_token))
        self.auth.used(req.id_token, decision)

    def _learn(self, id_tag: object, info: IdTagInfo | object) -> None:
        """Every IdTagInfo from the CSMS (Authorize.conf, StartTransaction.conf, StopTransaction.conf) updates
        the Authorization Cache (§3.5.1); a storage failure costs a cache entry, never a message or a session.
        ``info`` may be the wire object; an answer without one (StopTransaction.conf) changes nothing."""
        if not isinstance(id_tag, str):
            return
        if isinstance(info, dict):
            info = IdTagInfo.from_ocpp16(info)
        if not isinstance(info, IdTagInfo):
            return
        try:
            self.auth.learn(id_tag, info, utcnow())
        except Exception:
            log.exception("authorization cache not updated")

    def clear_cache(self) -> str:
        """ClearCache (§5.4): Accepted once the Authorization Cache is empty, Rejected if it could not be."""
        try:
            self.auth.clear_cache()
        except Exception:
            log.exception("ClearCache failed")
            return "Rejected"
        log.info("authorization cache cleared")
        return "Accepted"

    # --- CSMS requests ------------------------------------------------------------------------------

    def _connector(self, connector_id: int | None) -> ConnectorController | None:
        if connector_id is None:
            return None
        return self.connectors.get(connector_id)

    async def remote_start(self, id_tag: str, connector_id: int | None) -> str:
        if connector_id is not None:
            ctrl = self._connector(connector_id)
        else:  # the charge point chooses: an EV waiting first, then an idle connector
            free = [c for c in sorted(self.connectors.values(), key=lambda c: c.id) if c.machine.transaction is None]
            waiting = [c for c in free if c.machine.status is ConnectorStatus.PREPARING]
            idle = [c for c in free if c.machine.status is ConnectorStatus.AVAILABLE]
            ctrl = (waiting or idle)[0] if (waiting or idle) else None
        if ctrl is None:
            return "Rejected"
        effects = await ctrl.handle(RemoteStartRequested(id_tag))
        result = next((e for e in effects if isinstance(e, RemoteStartResult)), None)
        return "Accepted" if result is not None and result.accepted else "Rejected"

    async def remote_stop(self, transaction_id: int) -> str:
        record = self.tlog.active_by_transaction_id(transaction_id)
        ctrl = self._connector(record.connector) if record is not None else None
        if record is None or ctrl is None:
            return "Rejected"
        tx = ctrl.machine.transaction
        if tx is None or tx.local_id != record.local_id:
            return "Rejected"
        effects = await ctrl.handle(RemoteStopRequested())
        result = next((e for e in effects if isinstance(e, RemoteStopResult)), None)
        return "Accepted" if result is not None and result.accepted else "Rejected"

    async def change_availability(self, connector_id: int, kind: str) -> str:
        operative = kind == "Operative"
        if connector_id == 0:
            targets = list(self.connectors.values())
            self.statuses.set_charge_point_operative(operative)
        else:
            ctrl = self._connector(connector_id)
            if ctrl is None:
                return "Rejected"
            targets = [ctrl]
        scheduled = False
        for ctrl in targets:
            effects = await ctrl.handle(AvailabilityChanged(operative))
            scheduled = scheduled or any(isinstance(e, AvailabilityScheduled) for e in effects)
        self.statuses.charge_point_changed()
        return "Scheduled" if scheduled else "Accepted"

    def change_configuration(self, key: str, value: str) -> str:
        result = self.keys.change(key, value)
        return result.value

    def _apply_key(self, key: str, value: str) -> None:
        """Apply a changed key live (ChangeConfiguration or BootNotification's interval)."""
        if key == "WebSocketPingInterval":
            self.link.set_ping_interval(float(value))
        elif key == "HeartbeatInterval":
            self._heartbeat_wake.set()
        elif key == "AuthorizationCacheEnabled" and value == "false":
            # off means off: no entries left behind that nobody updates until it is switched on again
            self.clear_cache()
        elif key == "MeterValueSampleInterval":
            self.meter_values.reschedule()
        session_keys = {"ConnectionTimeOut", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId",
                        "AuthorizeRemoteTxRequests"}
        if key in session_keys:
            for ctrl in self.connectors.values():
                ctrl.machine.config = session_config_from_keys(ctrl.machine.config, self.keys)

    async def unlock(self, connector_id: int) -> str:
        ctrl = self._connector(connector_id)
        if ctrl is None:
            return "NotSupported"
        effects = await ctrl.handle(UnlockRequested())
        result = next((e for e in effects if isinstance(e, UnlockResult)), None)
        if result is None:
            return "UnlockFailed"
        return {UnlockStatus.UNLOCKED: "Unlocked", UnlockStatus.NOT_SUPPORTED: "NotSupported"}.get(
            result.status, "UnlockFailed")

    def schedule_reset(self, *, hard: bool) -> None:
        """Answer first (Accepted), then stop transactions, deliver what we can, and restart."""
        self._spawn(self._reset(hard))

    async def _reset(self, hard: bool) -> None:
        await asyncio.sleep(0)  # let the confirmation go out first
        for ctrl in self.connectors.values():
            await ctrl.handle(ResetRequested(hard=hard))
        reset_flag(self.db, "hard" if hard else "soft")
        if not hard:  # soft: give queued StopTransactions a moment to reach the CSMS
            for _ in range(50):
                if self.tlog.count() == 0 or not self._online.is_set():
                    break
                await asyncio.sleep(0.1)
        log.info("restarting for reset", extra={"type": "Hard" if hard else "Soft"})
        self._request_exit(ExitCode.RESTART)

    def incoming_data_transfer(self, vendor_id: str, message_id: str | None,
                               data: str | None) -> tuple[str, str | None]:
        if vendor_id.casefold() != VENDOR_ID.casefold():  # vendorId is a CiString255 (case-insensitive)
            return "UnknownVendorId", None
        if message_id == "Diagnostics":
            return "Accepted", json.dumps(self._diagnostics(), default=str, separators=(",", ":"))
        return "UnknownMessageId", None

    async def data_transfer(self, message_id: str, data: str | None = None) -> dict[str, Any] | None:
        """Send a DataTransfer of our own vendor id (answers None while offline)."""
        cp = self.cp
        if cp is None or not self._online.is_set():
            return None
        payload: dict[str, Any] = {"vendorId": VENDOR_ID, "messageId": message_id}
        if data is not None:
            payload["data"] = data
        return await self._call(cp, "DataTransfer", payload)

    # --- helpers --------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def session_config_from_keys(base: Any, keys: ConfigurationKeys) -> Any:
    """The session machine's settings that OCPP configuration keys control."""
    return replace(base,
                   connection_timeout_s=float(keys.get_int("ConnectionTimeOut")),
                   stop_transaction_on_ev_side_disconnect=keys.get_bool("StopTransactionOnEVSideDisconnect"),
                   stop_transaction_on_invalid_id=keys.get_bool("StopTransactionOnInvalidId"),
                   authorize_remote_tx_requests=keys.get_bool("AuthorizeRemoteTxRequests"))


__all__ = ["ChangeResult", "Ocpp16Client", "session_config_from_keys"]
