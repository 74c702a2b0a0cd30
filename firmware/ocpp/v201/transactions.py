"""E Transactions over OCPP 2.0.1: TransactionEvent Started / Updated / Ended built from the session machine's
effects, exactly where the 1.6 adapter builds Start/StopTransaction — written to the durable outbox in the
connector's commit (before any hardware is switched), delivered in order by
:class:`~firmware.ocpp.delivery.OutboxDelivery` with OCPPCommCtrlr.MessageAttempts / MessageAttemptInterval
(instance TransactionEvent), and the CSMS's answers acted on.

A 2.0.1 transaction runs from its TxStartPoint to its TxStopPoint (:mod:`transaction_points`): it may begin before
the machine's own transaction (EV connected, an id authorized while no EV is there) and end after it (the unplug
after a local stop), or begin and end inside it (EnergyTransfer). The open transaction of each EVSE is kept in the
settings store; the machine's transaction in it has its billing record in the ledger, keyed by the machine's
``local_id`` and tagged with the 2.0.1 transaction's id.

The transaction id is the station's own: a UUID drawn at the start point, stored with the Started event in the same
commit, so no id is substituted when a message is sent (the 1.6 side must wait for the CSMS's). Each message
carries:

* ``seqNo``: 0 for Started, then +1 for every message of the transaction, counted in the
  settings store in the message's own commit, so a restart continues the count;
* ``triggerReason``: the machine's :class:`~firmware.session.Trigger` (named like 2.0.1's enum on purpose), or what
  reached the start or stop point; MeterValuePeriodic / MeterValueClock for samples, AbnormalCondition for a
  transaction the restart ended;
* ``offline``: true when the event happened while the CSMS was not reachable;
* ``meterValue``: Transaction.Begin samples (TxStartedMeasurands) in Started, Sample.Periodic
  (TxUpdatedMeasurands) in Updated, and in Ended the samples kept for it (SampledDataCtrlr / AlignedDataCtrlr
  TxEndedInterval) then Transaction.End (TxEndedMeasurands).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.connector import ConnectorController
from firmware.charger.energy_allowance import until_delivered
from firmware.charger.metering import ReadingContext, next_aligned_time, samples_from_reading
from firmware.charger.readings import energy_wh, fresh_reading
from firmware.ocpp.delivery import OutboxDelivery, RetryPolicy
from firmware.ocpp.rpc import handles
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.ocpp.v201.dialect import OCPP201
from firmware.ocpp.v201.transaction_points import (
    EvseFacts,
    TxPoint,
    parse_points,
    start_point_reached,
    stop_point_reached,
)
from firmware.session import (
    AuthorizationDropped,
    AuthorizationHeld,
    AuthStatus,
    ConnectorStatus,
    Effect,
    RemoteStopRequested,
    StatusChanged,
    StopReason,
    TransactionAccepted,
    TransactionRejected,
    TransactionStarted,
    TransactionStopped,
    Trigger,
)
from firmware.session.id_token import IdToken
from firmware.storage.outbox import OutboxMessage, QueuedMessage
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

_SEQ_PREFIX = "v201.seq."  # settings: the next seqNo of an open transaction, by its id
_OPEN_PREFIX = "v201.tx."  # settings: an EVSE's open transaction, by the EVSE's id
_ENDED_PREFIX = "v201.txended."  # settings: the TxEndedInterval samples kept for a transaction's Ended, by its id
#: TxEndedInterval samples kept per transaction at most (the oldest are dropped beyond it).
MAX_ENDED_VALUES = 200
#: triggerReasons of an Updated event that joins the machine's transaction (and its id) to an open transaction.
_JOINING_TRIGGERS = frozenset({"Authorized", "RemoteStart", "CablePluggedIn"})
TX_UPDATED_INTERVAL = VariableKey("SampledDataCtrlr", "TxUpdatedInterval")
TX_ENDED_INTERVAL = VariableKey("SampledDataCtrlr", "TxEndedInterval")
ALIGNED_INTERVAL = VariableKey("AlignedDataCtrlr", "Interval")
ALIGNED_TX_ENDED_INTERVAL = VariableKey("AlignedDataCtrlr", "TxEndedInterval")

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


@dataclass
class OpenTransaction:
    """A 2.0.1 transaction of an EVSE, from its start point to its stop point (:mod:`transaction_points`). Kept in
    the settings store (``v201.tx.<evse>``) in the commit of its Started, removed in the commit of its Ended."""

    transaction_id: str
    local_id: int | None = None  # the session machine's transaction within it (the ledger's key), if any yet
    carried: bool = False  # left open by an earlier run of the agent: ended as the connector restarts

    def to_json(self) -> str:
        return json.dumps({"transactionId": self.transaction_id, "localId": self.local_id})

    @classmethod
    def from_json(cls, text: str) -> OpenTransaction | None:
        try:
            raw = json.loads(text)
            local_id = raw.get("localId")
            return cls(str(raw["transactionId"]), local_id if isinstance(local_id, int) else None, carried=True)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass
class _Step:
    """What one step of an EVSE's session machine brought that the transaction events are about."""

    started: TransactionStarted | None = None
    stopped: TransactionStopped | None = None
    held: AuthorizationHeld | None = None
    dropped: AuthorizationDropped | None = None
    status: StatusChanged | None = None  # the last one

    @classmethod
    def of(cls, effects: list[Effect]) -> _Step:
        step = cls()
        for e in effects:
            if isinstance(e, TransactionStarted):
                step.started = e
            elif isinstance(e, TransactionStopped):
                step.stopped = e
            elif isinstance(e, AuthorizationHeld):
                step.held = e
            elif isinstance(e, AuthorizationDropped):
                step.dropped = e
            elif isinstance(e, StatusChanged):
                step.status = e
        return step


#: the machine's transaction stopped for these: the 2.0.1 transaction ends too, whatever TxStopPoint says.
_ENDS_ANY_TRANSACTION = frozenset({Trigger.ABNORMAL_CONDITION, Trigger.RESET_COMMAND})
_DROP_REASON = {Trigger.EV_CONNECT_TIMEOUT: "Timeout", Trigger.STOP_AUTHORIZED: "Local"}


class Transactions:
    def __init__(self, ctx: V201Context, learn: Learn) -> None:
        """``learn(idToken, idTokenInfo)`` feeds the CSMS's word on an id to the Authorization Cache."""
        self.ctx = ctx
        self._learn = learn
        self.delivery = OutboxDelivery(ctx.outbox, self.retry_policy, TransactionMessages(self._confirmed))
        ctx.wake_delivery = self.delivery.wake
        self._charging_state: dict[str, str] = {}  # transaction id -> the chargingState last reported
        self._remote_start_ids: dict[int, int] = {}  # connector -> remoteStartId of a remote start under way
        self._facts: dict[int, EvseFacts] = {}  # EVSE -> its facts after the last step
        self._open: dict[int, OpenTransaction] = self._load_open()  # EVSE -> its 2.0.1 transaction
        self._energy_limit: set[int] = set()  # EVSEs whose next energy stop is MaxEnergyOnInvalidId's
        #: told the EVSE's id once a transaction has ended (after its commit)
        self.ended_listeners: list[Callable[[int], None]] = []
        self._sampling_changed = asyncio.Event()
        ctx.variables.on_change(lambda key, value: self._sampling_changed.set(), {TX_UPDATED_INTERVAL})
        self._aligned_changed = asyncio.Event()
        ctx.variables.on_change(lambda key, value: self._aligned_changed.set(), {ALIGNED_INTERVAL})
        self._ended_sampling_changed = asyncio.Event()
        ctx.variables.on_change(lambda key, value: self._ended_sampling_changed.set(), {TX_ENDED_INTERVAL})
        self._ended_aligned_changed = asyncio.Event()
        ctx.variables.on_change(lambda key, value: self._ended_aligned_changed.set(), {ALIGNED_TX_ENDED_INTERVAL})

    def retry_policy(self) -> RetryPolicy:
        v = self.ctx.variables
        return RetryPolicy(v.get_int("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
                           float(v.get_int("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent")),
                           # E13: no answer within MessageTimeout is a failed attempt (of any queued message)
                           timeout_is_failure=True)

    def remote_start_requested(self, connector: int, remote_start_id: int | None) -> None:
        """RequestStartTransaction's id, for the Started event of the transaction it begins (None: forget it)."""
        if remote_start_id is None:
            self._remote_start_ids.pop(connector, None)
        else:
            self._remote_start_ids[connector] = remote_start_id

    def open_transaction(self, evse: int) -> OpenTransaction | None:
        return self._open.get(evse)

    def evse_of(self, transaction_id: str) -> int | None:
        """The EVSE whose ongoing transaction this is, or None."""
        return next((evse for evse, tx in self._open.items() if tx.transaction_id == transaction_id), None)

    def _points(self, variable: str) -> frozenset[TxPoint]:
        return parse_points(self.ctx.variables.get_list("TxCtrlr", variable))

    # --- the machine's effects, inside the connector's commit ---------------------------------------

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """One step of ``ctrl``'s machine: the transaction's start (first start point reached), the machine's own
        transaction joining it, its updates, and its end (first stop point reached) — in that order."""
        step = _Step.of(effects)
        before = self._facts.get(ctrl.id, EvseFacts())
        after = EvseFacts.of(ctrl.machine)
        self._facts[ctrl.id] = after
        if step.started is not None:  # the billing record of the machine's transaction, whatever the start point
            e = step.started
            self.ctx.ledger.start(ctrl.id, e.local_id, e.id_token.value, energy_wh(reading), now)
        if step.stopped is not None:
            self._ledger_stop(ctrl, step.stopped.local_id, reading, now, step.stopped.reason.value)
        tx = self._open.get(ctrl.id)
        if tx is not None and tx.carried:  # open when the agent stopped: it ends with the restart
            reason = "Reboot" if step.stopped is not None and step.stopped.reason is StopReason.REBOOT else "PowerLoss"
            self._end(ctrl, tx, "AbnormalCondition", reason, None, reading, now)
            tx = None
        if tx is None:
            point = start_point_reached(self._points("TxStartPoint"), before, after)
            if point is not None and not self._unreachable(after):
                self._start(ctrl, point, step, reading, now)
            return
        if step.started is not None and tx.local_id != step.started.local_id:
            self._join(ctrl, tx, step.started, reading, now)
        stop = stop_point_reached(self._points("TxStopPoint"), before, after)
        if stop is None and step.stopped is not None and step.stopped.trigger in _ENDS_ANY_TRANSACTION:
            stop = TxPoint.POWER_PATH_CLOSED  # a fault, an emergency stop, a reset: whatever the stop points
        if stop is None:
            self._update(ctrl, tx, step, now)
            return
        trigger, reason, stopped_by = self._why_ended(ctrl, stop, step)
        self._end(ctrl, tx, trigger, reason, stopped_by, reading, now)
        if ctrl.machine.transaction is not None:
            # the 2.0.1 transaction ended before the machine's (EnergyTransfer, or the EV gone while
            # StopTxOnEVSideDisconnect kept it): no energy without a transaction, the machine stops too
            log.info("transaction ended at its stop point; the session stops too",
                     extra={"connector": ctrl.id, "stop_point": stop.value})
            self.ctx.spawn(ctrl.handle(RemoteStopRequested()))

    @staticmethod
    def _unreachable(after: EvseFacts) -> bool:
        return not after.ev and not after.authorized

    def _start(self, ctrl: ConnectorController, point: TxPoint, step: _Step, reading: MeterReading | None,
               now: datetime) -> None:
        ctx = self.ctx
        machine = ctrl.machine
        tx = OpenTransaction(str(uuid.uuid4()))
        trigger = {TxPoint.EV_CONNECTED: "CablePluggedIn", TxPoint.ENERGY_TRANSFER: "ChargingStateChanged"}.get(point)
        if trigger is None:  # Authorized / PowerPathClosed: what authorized it, or what closed the power path
            trigger = (step.started.trigger.value if step.started is not None
                       else step.held.trigger.value if step.held is not None else "Authorized")
        state = mapping.charging_state(machine.status, machine.ev_connected)
        payload = self._event("Started", tx.transaction_id, trigger, now, ctrl.id, state)
        payload["evse"] = {"id": ctrl.id, "connectorId": 1}
        machine_tx, held = machine.transaction, machine.authorization
        token = machine_tx.id_token if machine_tx is not None else held.id_token if held is not None else None
        if token is not None:
            payload["idToken"] = mapping.id_token(token)
        reservation = (machine_tx.reservation_id if machine_tx is not None
                       else held.reservation_id if held is not None else None)
        if reservation is not None:
            payload["reservationId"] = reservation
        remote = machine_tx.remote_start if machine_tx is not None else held is not None and held.remote_start
        remote_start_id = self._remote_start_ids.pop(ctrl.id, None) if remote or machine_tx is not None else None
        if remote and remote_start_id is not None:
            payload["transactionInfo"]["remoteStartId"] = remote_start_id
        reading = reading or fresh_reading(ctrl, now)
        self._add_samples(payload, reading, "TxStartedMeasurands", ReadingContext.TRANSACTION_BEGIN, now)
        with ctx.db.transaction():
            if machine_tx is not None:
                tx.local_id = machine_tx.local_id
                ctx.ledger.set_transaction_id(ctrl.id, machine_tx.local_id, tx.transaction_id)
            self._put_open(ctrl.id, tx)
            self._queue(ctrl.id, self._local_id(ctrl, tx), payload)
        self._charging_state[tx.transaction_id] = state
        log.info("transaction started", extra={"connector": ctrl.id, "transaction_id": tx.transaction_id,
                                               "start_point": point.value, "trigger": trigger})

    def _join(self, ctrl: ConnectorController, tx: OpenTransaction, e: TransactionStarted,
              reading: MeterReading | None, now: datetime) -> None:
        """The machine's transaction began inside the open 2.0.1 one (it started at EVConnected or Authorized):
        Updated with what authorized it or connected the EV, the id token, and the ledger's record."""
        ctx = self.ctx
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Updated", tx.transaction_id, e.trigger.value, now, ctrl.id, state)
        payload["idToken"] = mapping.id_token(e.id_token)
        if e.reservation_id is not None:
            payload["reservationId"] = e.reservation_id
        remote_start_id = self._remote_start_ids.pop(ctrl.id, None)
        if e.remote_start and remote_start_id is not None:
            payload["transactionInfo"]["remoteStartId"] = remote_start_id
        with ctx.db.transaction():
            ctx.ledger.set_transaction_id(ctrl.id, e.local_id, tx.transaction_id)
            tx.local_id = e.local_id
            self._put_open(ctrl.id, tx)
            self._queue(ctrl.id, e.local_id, payload)
        self._charging_state[tx.transaction_id] = state

    def _update(self, ctrl: ConnectorController, tx: OpenTransaction, step: _Step, now: datetime) -> None:
        """A step inside the transaction that did not end it: Updated when the charging state changed (E02,
        triggerReason what the machine says caused it), when the machine's transaction stopped or a held
        authorization ended without reaching a stop point (its trigger, and the id that stopped it)."""
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        ended = step.stopped or step.dropped
        if self._charging_state.get(tx.transaction_id) == state and ended is None:
            return
        self._charging_state[tx.transaction_id] = state
        if ended is not None:
            trigger = ended.trigger.value
        elif ctrl.id in self._energy_limit and ctrl.machine.status is ConnectorStatus.SUSPENDED_EVSE:
            self._energy_limit.discard(ctrl.id)
            trigger = "EnergyLimitReached"
        elif step.status is not None and step.status.trigger is not None:
            trigger = step.status.trigger.value
        else:
            trigger = "ChargingStateChanged"
        payload = self._event("Updated", tx.transaction_id, trigger, now, ctrl.id, state)
        if step.stopped is not None and step.stopped.stopped_by is not None:
            payload["idToken"] = mapping.id_token(step.stopped.stopped_by)
        self._queue(ctrl.id, self._local_id(ctrl, tx), payload)

    def _why_ended(self, ctrl: ConnectorController, stop: TxPoint, step: _Step
                   ) -> tuple[str, str, IdToken | None]:
        """triggerReason, stoppedReason and the id that stopped it, for the Ended event."""
        if step.stopped is not None:
            e = step.stopped
            return e.trigger.value, mapping.stopped_reason(e.reason, e.fault), e.stopped_by
        if step.dropped is not None:
            d = step.dropped
            if d.reason is not None:  # ended by another id than its own (a master pass)
                return d.trigger.value, mapping.stopped_reason(d.reason, None), None
            return d.trigger.value, _DROP_REASON.get(d.trigger, "Other"), None
        if stop is TxPoint.ENERGY_TRANSFER and ctrl.machine.ev_connected:
            by_ev = ctrl.machine.status is ConnectorStatus.SUSPENDED_EV
            return "ChargingStateChanged", "StoppedByEV" if by_ev else "Other", None
        return "EVCommunicationLost", "EVDisconnected", None

    def _ledger_stop(self, ctrl: ConnectorController, local_id: int, reading: MeterReading | None, now: datetime,
                     reason: str) -> None:
        record = self.ctx.ledger.get(ctrl.id, local_id)
        if record is None or record.stopped_at is not None:
            return
        meter_stop = energy_wh(reading) if reading is not None else record.meter_start_wh
        self.ctx.ledger.stop(ctrl.id, local_id, meter_stop, now, reason)

    def _end(self, ctrl: ConnectorController, tx: OpenTransaction, trigger: str, reason: str,
             stopped_by: IdToken | None, reading: MeterReading | None, now: datetime) -> None:
        ctx = self.ctx
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Ended", tx.transaction_id, trigger, now, ctrl.id, state, stopped_reason=reason)
        if stopped_by is not None:
            payload["idToken"] = mapping.id_token(stopped_by)
        reading = reading or fresh_reading(ctrl, now)
        with ctx.db.transaction():
            kept = self._take_ended_values(tx.transaction_id)
            self._add_samples(payload, reading, "TxEndedMeasurands", ReadingContext.TRANSACTION_END, now)
            if kept:
                payload["meterValue"] = kept + payload.get("meterValue", [])
            if tx.local_id is not None:
                self._ledger_stop(ctrl, tx.local_id, reading, now, reason)
            self._put_open(ctrl.id, None)
            self._queue(ctrl.id, self._local_id(ctrl, tx), payload, last=True)
        self._charging_state.pop(tx.transaction_id, None)
        log.info("transaction ended", extra={"connector": ctrl.id, "transaction_id": tx.transaction_id,
                                             "trigger": trigger, "stopped_reason": reason})
        for listener in self.ended_listeners:
            listener(ctrl.id)

    def end_now(self, ctrl: ConnectorController, trigger: str, reason: str) -> bool:
        """End the EVSE's transaction that the machine holds no transaction of (e.g. RequestStopTransaction of one
        begun at EVConnected); False when there is none."""
        tx = self._open.get(ctrl.id)
        if tx is None:
            return False
        now = utcnow()
        self._end(ctrl, tx, trigger, reason, None, fresh_reading(ctrl, now), now)
        return True

    @staticmethod
    def _local_id(ctrl: ConnectorController, tx: OpenTransaction) -> int:
        """The outbox's key for the transaction's messages (transaction-related, in order): the machine's
        transaction in it, or the one the machine will start next."""
        return tx.local_id if tx.local_id is not None else ctrl.machine.next_local_id

    # --- open transactions on disk -----------------------------------------------------------------------

    def _load_open(self) -> dict[int, OpenTransaction]:
        with self.ctx.db.read() as conn:
            rows = conn.execute("SELECT key, value FROM settings WHERE key LIKE ?", (_OPEN_PREFIX + "%",)).fetchall()
        out: dict[int, OpenTransaction] = {}
        for key, value in rows:
            evse = key[len(_OPEN_PREFIX):]
            tx = OpenTransaction.from_json(value)
            if evse.isdigit() and tx is not None:
                out[int(evse)] = tx
        return out

    def _put_open(self, evse: int, tx: OpenTransaction | None) -> None:
        key = f"{_OPEN_PREFIX}{evse}"
        with self.ctx.db.transaction() as conn:
            if tx is None:
                conn.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, tx.to_json()))
        if tx is None:
            self._open.pop(evse, None)
            self._energy_limit.discard(evse)  # an allowance never reached is not the next transaction's
        else:
            self._open[evse] = tx

    def _keep_ended_value(self, tx_id: str, value: dict[str, Any]) -> None:
        """A TxEndedInterval sample, kept on disk until the Ended event carries it (at most MAX_ENDED_VALUES:
        the oldest go first beyond that)."""
        key = _ENDED_PREFIX + tx_id
        with self.ctx.db.transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            values = json.loads(row[0]) if row is not None else []
            values = [*values, value][-MAX_ENDED_VALUES:]
            conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = excluded.value", (key, json.dumps(values)))

    def _take_ended_values(self, tx_id: str) -> list[dict[str, Any]]:
        key = _ENDED_PREFIX + tx_id
        with self.ctx.db.transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            conn.execute("DELETE FROM settings WHERE key = ?", (key,))
        if row is None:
            return []
        try:
            values = json.loads(row[0])
        except ValueError:
            return []
        return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []

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
        whether that transaction is still ongoing (between its start and its stop point)."""
        queued = [m for m in self.ctx.outbox.peek() if m.action == "TransactionEvent"]
        if transaction_id is None:
            return call_result.GetTransactionStatus(messages_in_queue=bool(queued))
        mine = any(m.payload.get("transactionInfo", {}).get("transactionId") == transaction_id for m in queued)
        ongoing = self.evse_of(transaction_id) is not None
        return call_result.GetTransactionStatus(messages_in_queue=mine, ongoing_indicator=ongoing)

    # --- the CSMS's answers -------------------------------------------------------------------------

    def _confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        """A queued TransactionEvent was delivered: an idTokenInfo in the answer is the CSMS's word on the id it
        carried (C10: cached). For the id the machine's transaction began with (its Started, or the Updated that
        joined it to a transaction begun earlier) a status other than Accepted stops the transaction or its energy
        (E05, TxCtrlr.StopTxOnInvalidId / MaxEnergyOnInvalidId)."""
        info = answer.get("idTokenInfo")
        if not isinstance(info, dict) or msg.connector is None or msg.local_id is None:
            return
        token = mapping.parse_id_token(msg.payload.get("idToken"))
        self._learn(token, info)
        if msg.payload.get("eventType") != "Started" and msg.payload.get("triggerReason") not in _JOINING_TRIGGERS:
            return
        ctrl = self.ctx.connectors.get(msg.connector)
        tx = ctrl.machine.transaction if ctrl is not None else None
        if (ctrl is None or tx is None or tx.local_id != msg.local_id or token is None
                or token.value != tx.id_token.value):
            return
        status = mapping.auth_status(str(info.get("status")))
        if status is AuthStatus.ACCEPTED:
            self.ctx.spawn(ctrl.handle(TransactionAccepted(
                local_id=msg.local_id, parent_id_token=mapping.parent_id_token_of(info))))
        else:
            self.ctx.spawn(self._rejected(ctrl, TransactionRejected(status, local_id=msg.local_id)))

    async def _rejected(self, ctrl: ConnectorController, event: TransactionRejected) -> None:
        """E05: TxCtrlr.StopTxOnInvalidId true: the machine stops the transaction now (triggerReason Deauthorized).
        False: it only stops the energy — after TxCtrlr.MaxEnergyOnInvalidId more Wh if that is set (the same
        allowance as 1.6's, :mod:`firmware.charger.energy_allowance`), at once if not — with triggerReason
        EnergyLimitReached."""
        v = self.ctx.variables
        allowance = v.get_int("TxCtrlr", "MaxEnergyOnInvalidId")
        if not v.get_bool("TxCtrlr", "StopTxOnInvalidId") and event.local_id is not None:
            if allowance > 0:
                log.info("id invalidated; energy goes on up to MaxEnergyOnInvalidId",
                         extra={"connector": ctrl.id, "wh": allowance})
                await until_delivered(ctrl, allowance, event.local_id)
            # the transaction is not stopped, so not Deauthorized ("stopped because of the authorization status"):
            # its energy stops at an allowance reached, at once when there is none
            self._energy_limit.add(ctrl.id)
        await ctrl.handle(event)

    def triggered(self, ctrl: ConnectorController) -> bool:
        """TriggerMessage TransactionEvent: an Updated event (triggerReason Trigger) with the transaction's current
        state and a Trigger sample; False when the EVSE has no transaction."""
        return self.updated(ctrl, "Trigger", ReadingContext.TRIGGER)

    def updated(self, ctrl: ConnectorController, trigger: str, context: ReadingContext) -> bool:
        """An Updated event of the EVSE's open transaction with ``trigger`` and the transaction's current state,
        samples (TxUpdatedMeasurands) in ``context``; False when the EVSE has no transaction."""
        tx = self._open.get(ctrl.id)
        if tx is None:
            return False
        now = utcnow()
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Updated", tx.transaction_id, trigger, now, ctrl.id, state)
        self._add_samples(payload, fresh_reading(ctrl, now), "TxUpdatedMeasurands", context, now)
        self._queue(ctrl.id, self._local_id(ctrl, tx), payload)
        return True

    # --- periodic samples (SampledDataCtrlr.TxUpdatedInterval / TxEndedInterval) ----------------------------

    async def run_metering(self) -> None:
        """The ``metering`` task: periodic samples in transactions, the clock-aligned values, and the samples of
        both kinds kept for the Ended event."""
        await asyncio.gather(self.run_sampling(), self.run_aligned(), self._run_ended_sampling(),
                             self._run_ended_aligned())

    async def _every(self, interval: Callable[[], int], changed: asyncio.Event, aligned: bool,
                     tick: Callable[[datetime], None]) -> None:
        """Call ``tick`` every ``interval()`` seconds (aligned to midnight if ``aligned``; 0: never); a change of
        the interval restarts the wait."""
        while True:
            seconds = interval()
            changed.clear()
            if seconds <= 0:
                await changed.wait()
                continue
            at = next_aligned_time(utcnow(), seconds) if aligned else None
            wait = (at - utcnow()).total_seconds() if at is not None else float(seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(0.0, wait))
                continue
            tick(at if at is not None else utcnow())

    async def run_sampling(self) -> None:
        """Every TxUpdatedInterval seconds (0: never) an Updated event with Sample.Periodic values for each
        transaction whose meter has a fresh reading."""
        def tick(now: datetime) -> None:
            for ctrl in self.ctx.connectors.values():
                self._periodic(ctrl, now)
        await self._every(lambda: self.ctx.variables.get_int("SampledDataCtrlr", "TxUpdatedInterval"),
                          self._sampling_changed, False, tick)

    def _periodic(self, ctrl: ConnectorController, now: datetime) -> None:
        tx = self._open.get(ctrl.id)
        reading = fresh_reading(ctrl, now)
        if tx is None or reading is None:
            return
        state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
        payload = self._event("Updated", tx.transaction_id, "MeterValuePeriodic", now, ctrl.id, state)
        self._add_samples(payload, reading, "TxUpdatedMeasurands", ReadingContext.PERIODIC, now)
        if "meterValue" in payload:  # E11.FR.05: a cap on the outbox drops these first, every other one
            self._queue(ctrl.id, self._local_id(ctrl, tx), payload, thinnable=True)

    async def _run_ended_sampling(self) -> None:
        """J02: every SampledDataCtrlr.TxEndedInterval seconds (0: never) Sample.Periodic values of
        TxEndedMeasurands, kept for the transaction's Ended event."""
        await self._every(lambda: self.ctx.variables.get_int("SampledDataCtrlr", "TxEndedInterval"),
                          self._ended_sampling_changed, False,
                          lambda now: self.keep_for_ended(now, self.ctx.variables.get_list(
                              "SampledDataCtrlr", "TxEndedMeasurands"), ReadingContext.PERIODIC))

    async def _run_ended_aligned(self) -> None:
        """J01: at the end of every AlignedDataCtrlr.TxEndedInterval (aligned to midnight; 0: never) Sample.Clock
        values of AlignedDataCtrlr.TxEndedMeasurands, kept for the transaction's Ended event."""
        await self._every(lambda: self.ctx.variables.get_int("AlignedDataCtrlr", "TxEndedInterval"),
                          self._ended_aligned_changed, True,
                          lambda at: self.keep_for_ended(at, self.ctx.variables.get_list(
                              "AlignedDataCtrlr", "TxEndedMeasurands"), ReadingContext.CLOCK))

    def keep_for_ended(self, at: datetime, measurands: list[str], context: ReadingContext) -> None:
        for ctrl in self.ctx.connectors.values():
            tx = self._open.get(ctrl.id)
            reading = fresh_reading(ctrl, at)
            if tx is None or reading is None:
                continue
            samples = samples_from_reading(reading, measurands, context)
            if samples:
                self._keep_ended_value(tx.transaction_id, mapping.meter_value(at, samples))

    # --- clock-aligned values (AlignedDataCtrlr) -----------------------------------------------------------

    async def run_aligned(self) -> None:
        """At the end of every AlignedDataCtrlr.Interval (aligned to midnight; 0: never), each connector's
        Sample.Clock values (AlignedDataCtrlr.Measurands) from a fresh reading: in an Updated event (triggerReason
        MeterValueClock) when a transaction runs, else in MeterValues for the EVSE. AlignedDataCtrlr.SendDuringIdle
        true: none at all while any transaction runs (J01.FR.20; OCTT TC_J_06_CS)."""
        await self._every(lambda: self.ctx.variables.get_int("AlignedDataCtrlr", "Interval"),
                          self._aligned_changed, True, self.clock_tick)

    def clock_tick(self, at: datetime) -> None:
        if self._open and self.ctx.variables.get_bool("AlignedDataCtrlr", "SendDuringIdle"):
            return  # only while no transaction runs anywhere (J01.FR.20)
        measurands = self.ctx.variables.get_list("AlignedDataCtrlr", "Measurands")
        for ctrl in self.ctx.connectors.values():
            reading = fresh_reading(ctrl, at)
            samples = samples_from_reading(reading, measurands, ReadingContext.CLOCK) if reading is not None else []
            if not samples:
                continue
            tx = self._open.get(ctrl.id)
            if tx is not None:
                state = mapping.charging_state(ctrl.machine.status, ctrl.machine.ev_connected)
                payload = self._event("Updated", tx.transaction_id, "MeterValueClock", at, ctrl.id, state)
                payload["meterValue"] = [mapping.meter_value(at, samples)]
                self._queue(ctrl.id, self._local_id(ctrl, tx), payload, thinnable=True)
            else:  # of the EVSE alone: a cap on the outbox may drop it (no bill depends on it)
                values = {"evseId": ctrl.id, "meterValue": [mapping.meter_value(at, samples)]}
                self.ctx.outbox.queue("MeterValues", values, thinnable=True)
                self.delivery.wake()

    # --- after a restart ---------------------------------------------------------------------------------

    async def close_orphaned_transactions(self) -> int:
        """After the connectors have settled a restart (which ended their transactions of the earlier run): a
        transaction still open — of an EVSE no longer configured, or a billing record left open that no session
        machine holds — gets its Ended now (stoppedReason PowerLoss, triggerReason AbnormalCondition), so the CSMS
        does not keep it open for ever."""
        closed = 0
        for evse, tx in list(self._open.items()):
            if not tx.carried or evse in self.ctx.connectors:
                continue
            now = utcnow()
            payload = self._event("Ended", tx.transaction_id, "AbnormalCondition", now, evse, "Idle",
                                  stopped_reason="PowerLoss")
            with self.ctx.db.transaction():
                kept = self._take_ended_values(tx.transaction_id)
                if kept:
                    payload["meterValue"] = kept
                self._put_open(evse, None)
                self._queue(evse, tx.local_id if tx.local_id is not None else 0, payload, last=True)
            closed += 1
        open_ids = {tx.transaction_id for tx in self._open.values()}
        for rec in self.ctx.ledger.open_transactions():
            ctrl = self.ctx.connectors.get(rec.connector)
            held = ctrl.machine.transaction if ctrl is not None else None
            if (held is not None and held.local_id == rec.local_id) or rec.transaction_id is None:
                continue
            reading = await ctrl.fresh_reading() if ctrl is not None else None
            now = utcnow()
            meter_stop = max(energy_wh(reading), rec.meter_start_wh) if reading is not None else rec.meter_start_wh
            with self.ctx.db.transaction():
                self.ctx.ledger.stop(rec.connector, rec.local_id, meter_stop, now, "PowerLoss")
                if rec.transaction_id not in open_ids:
                    payload = self._event("Ended", rec.transaction_id, "AbnormalCondition", now, rec.connector,
                                          "Idle", stopped_reason="PowerLoss")
                    self._add_samples(payload, reading, "TxEndedMeasurands", ReadingContext.TRANSACTION_END, now)
                    self._queue(rec.connector, rec.local_id, payload, last=True)
                    closed += 1
            log.warning("transaction left open by an earlier run stopped", extra={
                "connector": rec.connector, "local_id": rec.local_id, "transaction_id": rec.transaction_id})
        return closed
