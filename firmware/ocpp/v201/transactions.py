"""E Transactions over OCPP 2.0.1: TransactionEvent Started / Updated / Ended built from the session machine's
effects, exactly where the 1.6 adapter builds Start/StopTransaction — written to the durable outbox in the
connector's commit (before any hardware is switched), delivered in order by
:class:`~firmware.ocpp.delivery.OutboxDelivery` with OCPPCommCtrlr.MessageAttempts / MessageAttemptInterval
(instance TransactionEvent), and the CSMS's answers acted on.

The transaction id is the station's own: a UUID drawn when the machine starts the transaction, stored in the
ledger with the billing record in the same commit, so no id is substituted when a message is sent (the 1.6 side
must wait for the CSMS's). Each message carries:

* ``seqNo``: 0 for Started, then +1 for every message of the transaction, counted in the
  settings store in the message's own commit, so a restart continues the count;
* ``triggerReason``: the machine's :class:`~firmware.session.Trigger` (named like 2.0.1's enum on purpose),
  MeterValuePeriodic for the samples of SampledDataCtrlr.TxUpdatedInterval, AbnormalCondition for a transaction
  closed after a restart that no connector holds;
* ``offline``: true when the event happened while the CSMS was not reachable;
* ``meterValue``: Transaction.Begin samples (TxStartedMeasurands) in Started, Sample.Periodic
  (TxUpdatedMeasurands) in Updated, Transaction.End (TxEndedMeasurands) in Ended.

TxStartPoint / TxStopPoint are PowerPathClosed (EV connected and authorized), the machine's own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.connector import ConnectorController
from firmware.charger.metering import ReadingContext, next_aligned_time, samples_from_reading
from firmware.charger.readings import energy_wh, fresh_reading
from firmware.ocpp.delivery import OutboxDelivery, RetryPolicy
from firmware.ocpp.rpc import handles
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.ocpp.v201.dialect import OCPP201
from firmware.session import (
    AuthStatus,
    Effect,
    StatusChanged,
    TransactionAccepted,
    TransactionRejected,
    TransactionStarted,
    TransactionStopped,
)
from firmware.session.id_token import IdToken
from firmware.storage.outbox import OutboxMessage, QueuedMessage
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

_SEQ_PREFIX = "v201.seq."  # settings: the next seqNo of an open transaction, by its id
TX_UPDATED_INTERVAL = VariableKey("SampledDataCtrlr", "TxUpdatedInterval")
ALIGNED_INTERVAL = VariableKey("AlignedDataCtrlr", "Interval")

Learn = Callable[[IdToken | None, object], None]


def check_queued(message: QueuedMessage) -> str | None:
    """The outbox's check: does the message validate against its 2.0.1 schema? Checked once, as it is queued
    (the payload is sent as queued: nothing is filled in later)."""
    violation = OCPP201.schema_violation(message.action, message.payload)
    return None if violation is None else f"{violation[0]}: {violation[1]}"


class TransactionMessages:
    """The 2.0.1 adapter's side of :class:`~firmware.ocpp.delivery.OutboxDelivery`: nothing to fill in."""

    def __init__(self, confirmed: Callable[[OutboxMessage, dict[str, Any]], None]) -> None:
        self._confirmed = confirmed

    def prepare(self, msg: OutboxMessage) -> dict[str, Any]:
        return dict(msg.payload)

    def store_answer(self, msg: OutboxMessage, answer: dict[str, Any]) -> Callable[[], None] | None:
        return None

    def confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        self._confirmed(msg, answer)


class Transactions:
    def __init__(self, ctx: V201Context, learn: Learn) -> None:
        """``learn(idToken, idTokenInfo)`` feeds the CSMS's word on an id to the Authorization Cache."""
        self.ctx = ctx
        self._learn = learn
        self.delivery = OutboxDelivery(ctx.outbox, self.retry_policy, TransactionMessages(self._confirmed))
        ctx.wake_delivery = self.delivery.wake
        self._charging_state: dict[str, str] = {}  # transaction id -> the chargingState last reported
        self._remote_start_ids: dict[int, int] = {}  # connector -> remoteStartId of a remote start under way
        self._sampling_changed = asyncio.Event()
        ctx.variables.on_change(lambda key, value: self._sampling_changed.set(), {TX_UPDATED_INTERVAL})
        self._aligned_changed = asyncio.Event()
        ctx.variables.on_change(lambda key, value: self._aligned_changed.set(), {ALIGNED_INTERVAL})

    def retry_policy(self) -> RetryPolicy:
        v = self.ctx.variables
        return RetryPolicy(v.get_int("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
                           float(v.get_int("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent")))

    def remote_start_requested(self, connector: int, remote_start_id: int | None) -> None:
        """RequestStartTransaction's id, for the Started event of the transaction it begins (None: forget it)."""
        if remote_start_id is None:
            self._remote_start_ids.pop(connector, None)
        else:
            self._remote_start_ids[connector] = remote_start_id

    # --- the machine's effects, inside the connector's commit ---------------------------------------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        for e in effects:
            if isinstance(e, TransactionStarted):
                self._started(ctrl, e, reading, now)
            elif isinstance(e, StatusChanged):
                self._status_changed(ctrl, e, now)
            elif isinstance(e, TransactionStopped):
                self._stopped(ctrl, e, reading, now)

    def _started(self, ctrl: ConnectorController, e: TransactionStarted, reading: MeterReading | None,
                 now: datetime) -> None:
        ctx = self.ctx
        tx_id = str(uuid.uuid4())
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Started", tx_id, e.trigger.value, now, ctrl.id, state)
        payload["idToken"] = mapping.id_token(e.id_token)
        payload["evse"] = {"id": ctrl.id, "connectorId": 1}
        if e.reservation_id is not None:
            payload["reservationId"] = e.reservation_id
        remote_start_id = self._remote_start_ids.pop(ctrl.id, None)
        if e.remote_start and remote_start_id is not None:
            payload["transactionInfo"]["remoteStartId"] = remote_start_id
        self._add_samples(payload, reading, "TxStartedMeasurands", ReadingContext.TRANSACTION_BEGIN, now)
        with ctx.db.transaction():
            ctx.ledger.start(ctrl.id, e.local_id, e.id_token.value, energy_wh(reading), now)
            ctx.ledger.set_transaction_id(ctrl.id, e.local_id, tx_id)
            self._queue(ctrl.id, e.local_id, payload)
        self._charging_state[tx_id] = state
        log.info("transaction started", extra={"connector": ctrl.id, "transaction_id": tx_id})

    def _status_changed(self, ctrl: ConnectorController, e: StatusChanged, now: datetime) -> None:
        """A change of the charging state of an open transaction: Updated (E02, triggerReason
        ChargingStateChanged or what the machine says caused it)."""
        tx = ctrl.machine.transaction
        record = self.ctx.ledger.get(ctrl.id, tx.local_id) if tx is not None else None
        if tx is None or record is None or record.transaction_id is None or record.stopped_at is not None:
            return
        state = mapping.charging_state(e.status, e.ev_connected)
        if self._charging_state.get(record.transaction_id) == state:
            return
        self._charging_state[record.transaction_id] = state
        trigger = e.trigger.value if e.trigger is not None else "ChargingStateChanged"
        self._queue(ctrl.id, tx.local_id, self._event("Updated", record.transaction_id, trigger, now, ctrl.id, state))

    def _stopped(self, ctrl: ConnectorController, e: TransactionStopped, reading: MeterReading | None,
                 now: datetime) -> None:
        ctx = self.ctx
        record = ctx.ledger.get(ctrl.id, e.local_id)
        if record is None or record.transaction_id is None:
            log.error("transaction stopped that was never recorded", extra={"connector": ctrl.id,
                                                                            "local_id": e.local_id})
            return
        meter_stop = energy_wh(reading) if reading is not None else record.meter_start_wh
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Ended", record.transaction_id, e.trigger.value, now, ctrl.id, state,
                              stopped_reason=mapping.stopped_reason(e.reason, e.fault))
        if e.stopped_by is not None:
            payload["idToken"] = mapping.id_token(e.stopped_by)
        self._add_samples(payload, reading, "TxEndedMeasurands", ReadingContext.TRANSACTION_END, now)
        with ctx.db.transaction():
            ctx.ledger.stop(ctrl.id, e.local_id, meter_stop, now, e.reason.value)
            self._queue(ctrl.id, e.local_id, payload, last=True)
        self._charging_state.pop(record.transaction_id, None)

    # --- building and queueing ------------------------------------------------------------------------

    def _event(self, event_type: str, tx_id: str, trigger: str, now: datetime, connector: int,
               charging_state: str, *, stopped_reason: str | None = None) -> dict[str, Any]:
        info: dict[str, Any] = {"transactionId": tx_id, "chargingState": charging_state}
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        payload: dict[str, Any] = {"eventType": event_type, "timestamp": mapping.timestamp(now),
                                   "triggerReason": trigger, "seqNo": 0, "transactionInfo": info}
        if not self.ctx.online.is_set():
            payload["offline"] = True
        if event_type != "Started":
            payload["evse"] = {"id": connector, "connectorId": 1}
        return payload

    def _add_samples(self, payload: dict[str, Any], reading: MeterReading | None, variable: str,
                     context: ReadingContext, now: datetime) -> None:
        if reading is None:
            return
        samples = samples_from_reading(reading, self.ctx.variables.get_list("SampledDataCtrlr", variable), context)
        if samples:
            payload["meterValue"] = [mapping.meter_value(now, samples)]

    def _queue(self, connector: int, local_id: int, payload: dict[str, Any], *, last: bool = False,
               thinnable: bool = False) -> None:
        """Queue one TransactionEvent with the transaction's next seqNo, in one commit with the count (or the
        caller's). ``last``: the Ended event; the count goes with it."""
        tx_id = payload["transactionInfo"]["transactionId"]
        key = _SEQ_PREFIX + tx_id
        with self.ctx.db.transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            seq_no = int(row[0]) if row is not None else 0
            if last:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, str(seq_no + 1)))
            self.ctx.outbox.queue("TransactionEvent", {**payload, "seqNo": seq_no}, connector, local_id,
                                  thinnable=thinnable)
        self.delivery.wake()

    # --- GetTransactionStatus (E14) ---------------------------------------------------------------------

    @handles(Action.get_transaction_status)
    async def _get_transaction_status(self, transaction_id: str | None = None, **_: Any) -> Any:
        """Whether transaction messages are still queued (of ``transaction_id``, or of any transaction), and
        whether that transaction is still ongoing."""
        queued = [m for m in self.ctx.outbox.peek() if m.action == "TransactionEvent"]
        if transaction_id is None:
            return call_result.GetTransactionStatus(messages_in_queue=bool(queued))
        mine = any(m.payload.get("transactionInfo", {}).get("transactionId") == transaction_id for m in queued)
        ongoing = any(r.transaction_id == transaction_id for r in self.ctx.ledger.open_transactions())
        return call_result.GetTransactionStatus(messages_in_queue=mine, ongoing_indicator=ongoing)

    # --- the CSMS's answers -------------------------------------------------------------------------

    def _confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        """A queued TransactionEvent was delivered: an idTokenInfo in the answer to Started is the CSMS's word on
        the id the transaction started with (E01, C10: cached; not Accepted: the machine stops it or its energy)."""
        info = answer.get("idTokenInfo")
        if not isinstance(info, dict) or msg.connector is None or msg.local_id is None:
            return
        token = mapping.parse_id_token(msg.payload.get("idToken"))
        self._learn(token, info)
        if msg.payload.get("eventType") != "Started":
            return
        ctrl = self.ctx.connectors.get(msg.connector)
        if ctrl is None:
            return
        status = mapping.auth_status(str(info.get("status")))
        if status is AuthStatus.ACCEPTED:
            self.ctx.spawn(ctrl.handle(TransactionAccepted(
                local_id=msg.local_id, parent_id_token=mapping.parent_id_token_of(info))))
        else:
            self.ctx.spawn(self._rejected(ctrl, TransactionRejected(status, local_id=msg.local_id)))

    async def _rejected(self, ctrl: ConnectorController, event: TransactionRejected) -> None:
        """The machine decides by TxCtrlr.StopTxOnInvalidId (its ``stop_transaction_on_invalid_id``): stop the
        transaction, or only its energy (MaxEnergyOnInvalidId is not in this slice: at once)."""
        await ctrl.handle(event)

    def triggered(self, ctrl: ConnectorController) -> bool:
        """TriggerMessage TransactionEvent: an Updated event (triggerReason Trigger) with the transaction's current
        state and a Trigger sample; False when the EVSE has no transaction."""
        return self.updated(ctrl, "Trigger", ReadingContext.TRIGGER)

    def updated(self, ctrl: ConnectorController, trigger: str, context: ReadingContext) -> bool:
        """An Updated event of the EVSE's transaction with ``trigger`` and the transaction's current state, samples
        (TxUpdatedMeasurands) in ``context``; False when the EVSE has no transaction."""
        tx = ctrl.machine.transaction
        record = self.ctx.ledger.get(ctrl.id, tx.local_id) if tx is not None else None
        if tx is None or record is None or record.transaction_id is None:
            return False
        now = utcnow()
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Updated", record.transaction_id, trigger, now, ctrl.id, state)
        self._add_samples(payload, fresh_reading(ctrl, now), "TxUpdatedMeasurands", context, now)
        self._queue(ctrl.id, tx.local_id, payload)
        return True

    # --- periodic samples (SampledDataCtrlr.TxUpdatedInterval) -----------------------------------------

    async def run_metering(self) -> None:
        """The ``metering`` task: periodic samples in transactions and the clock-aligned values."""
        await asyncio.gather(self.run_sampling(), self.run_aligned())

    async def run_sampling(self) -> None:
        """Every TxUpdatedInterval seconds (0: never) an Updated event with Sample.Periodic values for each
        transaction whose meter has a fresh reading."""
        while True:
            interval = self.ctx.variables.get_int("SampledDataCtrlr", "TxUpdatedInterval")
            self._sampling_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sampling_changed.wait(), interval if interval > 0 else None)
                continue
            now = utcnow()
            for ctrl in self.ctx.connectors.values():
                self._periodic(ctrl, now)

    def _periodic(self, ctrl: ConnectorController, now: datetime) -> None:
        tx = ctrl.machine.transaction
        reading = fresh_reading(ctrl, now)
        record = self.ctx.ledger.get(ctrl.id, tx.local_id) if tx is not None else None
        if tx is None or reading is None or record is None or record.transaction_id is None:
            return
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Updated", record.transaction_id, "MeterValuePeriodic", now, ctrl.id, state)
        self._add_samples(payload, reading, "TxUpdatedMeasurands", ReadingContext.PERIODIC, now)
        if "meterValue" in payload:
            self._queue(ctrl.id, tx.local_id, payload)

    # --- clock-aligned values (AlignedDataCtrlr) -----------------------------------------------------------

    async def run_aligned(self) -> None:
        """At the end of every AlignedDataCtrlr.Interval (aligned to midnight; 0: never), each connector's
        Sample.Clock values (AlignedDataCtrlr.Measurands) from a fresh reading: in an Updated event (triggerReason
        MeterValueClock) when a transaction runs, else in MeterValues for the EVSE."""
        while True:
            interval = self.ctx.variables.get_int("AlignedDataCtrlr", "Interval")
            self._aligned_changed.clear()
            if interval <= 0:
                await self._aligned_changed.wait()
                continue
            at = next_aligned_time(utcnow(), interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._aligned_changed.wait(), (at - utcnow()).total_seconds())
                continue
            self.clock_tick(at)

    def clock_tick(self, at: datetime) -> None:
        measurands = self.ctx.variables.get_list("AlignedDataCtrlr", "Measurands")
        for ctrl in self.ctx.connectors.values():
            reading = fresh_reading(ctrl, at)
            samples = samples_from_reading(reading, measurands, ReadingContext.CLOCK) if reading is not None else []
            if not samples:
                continue
            tx = ctrl.machine.transaction
            record = self.ctx.ledger.get(ctrl.id, tx.local_id) if tx is not None else None
            if tx is not None and record is not None and record.transaction_id is not None and not record.stopped_at:
                state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
                payload = self._event("Updated", record.transaction_id, "MeterValueClock", at, ctrl.id, state)
                payload["meterValue"] = [mapping.meter_value(at, samples)]
                self._queue(ctrl.id, tx.local_id, payload)
            else:  # of the EVSE alone: a cap on the outbox may drop it (no bill depends on it)
                values = {"evseId": ctrl.id, "meterValue": [mapping.meter_value(at, samples)]}
                self.ctx.outbox.queue("MeterValues", values, thinnable=True)
                self.delivery.wake()

    # --- after a restart ---------------------------------------------------------------------------------

    async def close_orphaned_transactions(self) -> int:
        """A transaction still open in the ledger that no session machine holds gets its Ended now
        (stoppedReason PowerLoss, triggerReason AbnormalCondition), so the CSMS does not keep it open for ever."""
        closed = 0
        for rec in self.ctx.ledger.open_transactions():
            ctrl = self.ctx.connectors.get(rec.connector)
            tx = ctrl.machine.transaction if ctrl is not None else None
            if (tx is not None and tx.local_id == rec.local_id) or rec.transaction_id is None:
                continue
            reading = await ctrl.fresh_reading() if ctrl is not None else None
            now = utcnow()
            meter_stop = max(energy_wh(reading), rec.meter_start_wh) if reading is not None else rec.meter_start_wh
            payload = self._event("Ended", rec.transaction_id, "AbnormalCondition", now, rec.connector, "Idle",
                                  stopped_reason="PowerLoss")
            self._add_samples(payload, reading, "TxEndedMeasurands", ReadingContext.TRANSACTION_END, now)
            with self.ctx.db.transaction():
                self.ctx.ledger.stop(rec.connector, rec.local_id, meter_stop, now, "PowerLoss")
                self._queue(rec.connector, rec.local_id, payload, last=True)
            log.warning("transaction left open by an earlier run stopped", extra={
                "connector": rec.connector, "local_id": rec.local_id, "transaction_id": rec.transaction_id})
            closed += 1
        return closed
