"""Transactions over OCPP 1.6 (§4.8, §4.10): StartTransaction and StopTransaction built from the session
machine's effects, written to the durable outbox in the connector's commit (before any hardware is switched),
delivered in order by :class:`~firmware.ocpp.delivery.OutboxDelivery` with the retry rule of
TransactionMessageAttempts / TransactionMessageRetryInterval, and the CSMS's answers acted on.

Each start and stop is recorded twice in one commit: the billing record in the ledger and the 1.6 message in the
outbox. :class:`TransactionMessages` is the 1.6 side of the (version-agnostic) delivery: it fills the CSMS's
transactionId — kept in the ledger as text — into a queued message when it is sent, and stores the id a
StartTransaction.conf brings together with the message's removal.

A transaction the ledger still has open that no session machine holds after a restart gets its StopTransaction
(reason PowerLoss) at start-up, so the CSMS does not keep it open for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.charger.energy_allowance import until_delivered
from firmware.ocpp.delivery import OutboxDelivery, RetryPolicy, Unsendable
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v16.keys import DAY_S, KeyDefinition, KeyType
from firmware.ocpp.v16.meter_values import MeterValuesReporter, energy_wh
from firmware.session import (
    AuthStatus,
    Effect,
    TransactionAccepted,
    TransactionRejected,
    TransactionStarted,
    TransactionStopped,
)
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import OutboxMessage, QueuedMessage
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

#: Queued messages of no transaction that are retried like a transaction's (the security events: never lost to
#: one CALLERROR).
RETRIED_LIKE_TRANSACTIONS = frozenset({"SecurityEventNotification"})

KEYS = (
    # Wh a transaction may still draw after the CSMS invalidated its id, with StopTransactionOnInvalidId false (0: none)
    KeyDefinition("MaxEnergyOnInvalidId", KeyType.INT, "0", minimum=0, maximum=1_000_000),
    KeyDefinition("TransactionMessageAttempts", KeyType.INT, "3", minimum=0, maximum=100),
    KeyDefinition("TransactionMessageRetryInterval", KeyType.INT, "60", minimum=0, maximum=DAY_S),
)


Confirmed = Callable[[OutboxMessage, dict[str, Any]], None]


def check_queued(message: QueuedMessage) -> str | None:
    """The outbox's check: does the message, as :meth:`TransactionMessages.prepare` will send it (a transaction's
    message with the CSMS's transactionId, an integer), validate against its 1.6 schema? Checked once, as it is
    queued and off the path of a backlog draining after a reconnect; sending does not validate it again."""
    sent = message.payload
    if message.local_id is not None and message.connector is not None and message.action != "StartTransaction":
        sent = {**sent, "transactionId": 0}
    violation = OCPP16.schema_violation(message.action, sent)
    return None if violation is None else f"{violation[0]}: {violation[1]}"


class TransactionMessages:
    """The 1.6 adapter's side of :class:`~firmware.ocpp.delivery.OutboxDelivery` (an ``OutboxAdapter``)."""

    def __init__(self, ledger: Ledger, confirmed: Confirmed) -> None:
        """``confirmed(message, answer)`` acts on an answer once the message's removal is committed."""
        self.ledger = ledger
        self._confirmed = confirmed

    def prepare(self, msg: OutboxMessage) -> dict[str, Any]:
        """A message of a transaction gets the CSMS's transactionId, which it may not have had when it was queued
        (a transaction started offline); without one — its StartTransaction was given up — it cannot be sent."""
        payload = dict(msg.payload)
        if msg.local_id is None or msg.connector is None or msg.action == "StartTransaction":
            return payload
        record = self.ledger.get(msg.connector, msg.local_id)
        if record is None or record.transaction_id is None:
            raise Unsendable("its transaction has no id from the CSMS (the StartTransaction was given up)")
        try:
            payload["transactionId"] = int(record.transaction_id)
        except ValueError:
            raise Unsendable(f"transaction id {record.transaction_id!r} is not an OCPP 1.6 integer") from None
        return payload

    def store_answer(self, msg: OutboxMessage, answer: dict[str, Any]) -> Callable[[], None] | None:
        """StartTransaction.conf's transactionId, stored with the removal: later messages of the transaction need
        it (a StopTransaction queued meanwhile, a RemoteStopTransaction naming it)."""
        if msg.action != "StartTransaction" or msg.connector is None or msg.local_id is None:
            return None
        connector, local_id, tx_id = msg.connector, msg.local_id, str(int(answer["transactionId"]))
        return lambda: self.ledger.set_transaction_id(connector, local_id, tx_id)

    def confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        self._confirmed(msg, answer)


class Transactions:
    def __init__(self, ctx: V16Context, meter_values: MeterValuesReporter,
                 learn: Callable[[object, object], None]) -> None:
        """``learn(idTag, idTagInfo)`` feeds the CSMS's word on an id to the Authorization Cache."""
        self.ctx = ctx
        self.meter_values = meter_values
        self._learn = learn
        self.delivery = OutboxDelivery(ctx.outbox, self.retry_policy, TransactionMessages(ctx.ledger, self._confirmed),
                                       retried=RETRIED_LIKE_TRANSACTIONS)
        ctx.wake_delivery = self.delivery.wake

    def retry_policy(self) -> RetryPolicy:
        k = self.ctx.keys
        return RetryPolicy(k.get_int("TransactionMessageAttempts"), float(k.get_int("TransactionMessageRetryInterval")))

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """Transactions and their messages go to disk here, inside the connector's commit."""
        for e in effects:
            if isinstance(e, TransactionStarted):
                meter_start = energy_wh(reading)
                payload: dict[str, Any] = {"connectorId": ctrl.id, "idTag": e.id_token.value, "meterStart": meter_start,
                                           "timestamp": mapping.timestamp(now)}
                if e.reservation_id is not None:
                    payload["reservationId"] = e.reservation_id
                self._started(ctrl.id, e.local_id, e.id_token.value, meter_start, now, payload)
                self.meter_values.transaction_started(ctrl, e.local_id, reading, now)
                self.delivery.wake()
            elif isinstance(e, TransactionStopped):
                transaction_data = self.meter_values.transaction_stopped(ctrl, e.local_id, reading, now)
                meter_stop = energy_wh(reading)
                if reading is None:  # no meter, or it never answered since the start: no energy we can vouch for
                    record = self.ctx.ledger.get(ctrl.id, e.local_id)
                    meter_stop = record.meter_start_wh if record is not None else 0
                reason = mapping.stop_reason(e.reason)
                stop: dict[str, Any] = {"meterStop": meter_stop, "timestamp": mapping.timestamp(now),
                                        "reason": reason}
                if e.stopped_by is not None:
                    stop["idTag"] = e.stopped_by.value
                if transaction_data:
                    stop["transactionData"] = transaction_data
                self._stopped(ctrl.id, e.local_id, meter_stop, now, reason, stop)
                self.delivery.wake()

    def _started(self, connector: int, local_id: int, id_token: str, meter_start: int, now: datetime,
                 payload: dict[str, Any]) -> None:
        """The billing record and its StartTransaction: one commit (or the caller's)."""
        ctx = self.ctx
        with ctx.db.transaction():
            ctx.ledger.start(connector, local_id, id_token, meter_start, now)
            ctx.outbox.queue("StartTransaction", payload, connector, local_id, now)

    def _stopped(self, connector: int, local_id: int, meter_stop: int, now: datetime, reason: str,
                 payload: dict[str, Any]) -> None:
        """The billing record's end and its StopTransaction: one commit (or the caller's)."""
        ctx = self.ctx
        with ctx.db.transaction():
            ctx.ledger.stop(connector, local_id, meter_stop, now, reason)
            ctx.outbox.queue("StopTransaction", payload, connector, local_id, now)

    def _confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        """A queued message was delivered (and removed from the outbox): act on the CSMS's answer."""
        payload = msg.payload
        if msg.action == "StartTransaction" and msg.connector is not None and msg.local_id is not None:
            tx_id = int(answer["transactionId"])
            info = answer.get("idTagInfo", {})
            self._learn(payload.get("idTag"), info)
            ctrl = self.ctx.connectors.get(msg.connector)
            if ctrl is not None:
                status = mapping.auth_status(str(info.get("status", "Invalid")))
                if status is AuthStatus.ACCEPTED:
                    self.ctx.spawn(ctrl.handle(TransactionAccepted(
                        local_id=msg.local_id, parent_id_token=mapping.parent_id_token(info.get("parentIdTag")))))
                else:
                    self.ctx.spawn(self._rejected(ctrl, TransactionRejected(status, local_id=msg.local_id)))
            log.info("transaction started", extra={"connector": msg.connector, "transaction_id": tx_id})
        elif msg.action == "StopTransaction":  # idTagInfo of the id that stopped it, if one did
            self._learn(payload.get("idTag"), answer.get("idTagInfo"))

    async def _rejected(self, ctrl: ConnectorController, event: TransactionRejected) -> None:
        """The CSMS invalidated the id of a started transaction (§4.8). StopTransactionOnInvalidId true: the machine
        stops it now. False: it only stops the energy — after MaxEnergyOnInvalidId more Wh, if that is set."""
        keys = self.ctx.keys
        allowance = keys.get_int("MaxEnergyOnInvalidId")
        if allowance > 0 and not keys.get_bool("StopTransactionOnInvalidId") and event.local_id is not None:
            log.info("id invalidated; energy goes on up to MaxEnergyOnInvalidId",
                     extra={"connector": ctrl.id, "wh": allowance})
            await until_delivered(ctrl, allowance, event.local_id)
        await ctrl.handle(event)

    async def close_orphaned_transactions(self) -> int:
        """After the connectors have settled a restart: a transaction still open in the ledger that no session
        machine holds (its snapshot was unusable, its connector left the configuration, or the database came
        from an agent that wrote the two apart) gets its StopTransaction now, reason PowerLoss, so the CSMS
        does not keep it open for ever. Returns how many were closed."""
        closed = 0
        for rec in self.ctx.ledger.open_transactions():
            ctrl = self.ctx.connectors.get(rec.connector)
            tx = ctrl.machine.transaction if ctrl is not None else None
            if tx is not None and tx.local_id == rec.local_id:
                continue
            reading = await ctrl.fresh_reading() if ctrl is not None else None
            now = utcnow()
            meter_stop = max(energy_wh(reading), rec.meter_start_wh) if reading is not None else rec.meter_start_wh
            stop = {"meterStop": meter_stop, "timestamp": mapping.timestamp(now), "reason": "PowerLoss"}
            self._stopped(rec.connector, rec.local_id, meter_stop, now, "PowerLoss", stop)
            log.warning("transaction left open by an earlier run stopped", extra={
                "connector": rec.connector, "local_id": rec.local_id, "transaction_id": rec.transaction_id,
                "meter_stop": meter_stop})
            closed += 1
        if closed:
            self.delivery.wake()
        return closed
