"""Delivering the outbox: transaction-related messages, in order, with OCPP's retry rule — for any OCPP version.

The protocol specifics come from the adapter (:class:`OutboxAdapter`): what to fill into a message when it is
sent (1.6: the CSMS's transactionId, from the ledger), what to store with its removal (1.6: the id a
StartTransaction.conf brings), and what to do with the answer. The rules below are 1.6's; OCPP 2.0.1 has the
same ones for TransactionEvent (MessageAttemptsTransactionEvent, MessageAttemptIntervalTransactionEvent) but one:
what a missing answer means (:attr:`RetryPolicy.timeout_is_failure`, below).

OCPP 1.6 (§4.10 "Transaction-related messages", 3.7 in the first edition) asks three things, done here:

* **In order, queued while offline.** StartTransaction, StopTransaction and the periodic and clock-aligned
  MeterValues of a transaction are written to the durable outbox when they happen and sent strictly in
  that order, one at a time, whenever the charge point is online and accepted. Other messages
  (StatusNotification, Heartbeat, Authorize, DataTransfer) do not wait behind the queue.
* **Retry only what the CSMS failed to process.** A CALLERROR (or a CALLRESULT that breaks the 1.6 schema,
  which carries no usable answer either) is a failure to process the message: it is sent again after
  ``TransactionMessageRetryInterval`` times the number of failures so far, and given up (counted, logged, the
  next message goes) once it has failed ``TransactionMessageAttempts`` times. With 3 and 60 that is: fail,
  wait 60 s, fail, wait 120 s, fail, discard. 0 attempts behaves as 1 (the message is sent once). The
  failure count and the time of the next try are stored with the message, so a restart does not cut the
  wait short (a wall clock set backwards meanwhile shortens it to at most the interval the rule gives).
* **A lost answer is not a failure.** No answer within the response timeout, or a connection that drops
  while the answer is due, says nothing about the CSMS having processed the message: it is not counted.
  A timeout marks the link as unresponsive (:class:`LinkUnresponsive`: the session closes the connection
  and the link reconnects); the message stays at the head of the queue and goes first after the reconnect.

OCPP 2.0.1 differs on that last point. Its E13 ("Transaction-related message not accepted by CSMS") is about a
CSMS that "might not accept a transaction related message, or does not reply within the MessageTimeout ... the
Charging Station SHALL retry the messages" (the use case's description, repeated by OCTT TC_E_41_CS / TC_E_42_CS,
whose CSMS simply does not answer and expects the TransactionEventRequest resent until MessageAttemptsTransactionEvent
is reached, then the next message); E13.FR.03: "The Charging Station SHALL wait as many seconds as specified in its
MessageAttemptIntervalTransactionEvent key, multiplied by the number of preceding transmissions of this same
message". OCPP-J 2.0.1 (Part 4 §4.1.1) has a CALL "timed out" when it is not responded to within the
implementation's timeout (OCPPCommCtrlr.MessageTimeout), and §4.1.4 allows a message "retried ... when no response
was received within timeout". So with the 2.0.1 policy (``timeout_is_failure``) no answer within the timeout is one
failed attempt of a transaction-related message, counted and retried on the same connection like a CALLERROR, and
given up after the attempts; the connection stays (WebSocketPingInterval is what finds a dead link). The same holds
for a queued message of no transaction (MeterValues of an idle EVSE, NotifyEvent, SecurityEventNotification,
ReservationStatusUpdate): its CALL has timed out, which says nothing about the link either; 2.0.1 gives such messages
no attempt count of their own (MessageAttempts / MessageAttemptInterval have the one instance TransactionEvent), so
the station's one rule bounds them — retried after MessageAttemptInterval x the attempts so far, given up after
MessageAttempts. Their CALLERROR still gives them up at once (the CSMS cannot process them: resending changes
nothing). A connection that drops while the answer is due is still no failure, in both versions.

Delivery is at-least-once: a message whose answer was lost (power cut or connection loss between the
CSMS processing it and the agent committing its removal) is sent again, unchanged, so that the CSMS can
recognise it (docs/storage.md "At least once"). OCPP 1.6 has no way to ask the CSMS whether it already
has it.

Messages that belong to no transaction (clock-aligned MeterValues of an idle connector) are queued too,
so that the register readings of an offline period are not lost, but they are not transaction-related:
a CALLERROR discards them at once, and a cap on the queue thins them first; not answered in time they are a stale
link in 1.6 (reconnect, sent again first), a failed attempt in 2.0.1 (above).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from firmware.ocpp.rpc import CallErrorReceived, InvalidResponse
from firmware.storage.outbox import Outbox, OutboxMessage

log = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class LinkUnresponsive(Exception):
    """The CSMS did not answer a queued message in time: treat the link as stale, reconnect, resend."""


class Unsendable(Exception):
    """A queued message can no longer be sent (e.g. its transaction never got an id from the CSMS): it is
    discarded and counted; the message says why."""


class OutboxAdapter(Protocol):
    """What the delivery needs from a protocol version's adapter."""

    def prepare(self, msg: OutboxMessage) -> dict[str, Any]:
        """The payload to send now, with what was learnt since it was queued filled in. Raises
        :class:`Unsendable` when it cannot be sent any more."""

    def store_answer(self, msg: OutboxMessage, answer: dict[str, Any]) -> Callable[[], None] | None:
        """A write the answer implies that later messages need (None: nothing); it is committed together with
        the message's removal, durably."""

    def confirmed(self, msg: OutboxMessage, answer: dict[str, Any]) -> None:
        """After the removal was committed: act on the answer."""


@dataclass(frozen=True)
class RetryPolicy:
    """TransactionMessageAttempts / TransactionMessageRetryInterval (OCPP 1.6 §9.1), MessageAttempts /
    MessageAttemptInterval [TransactionEvent] (2.0.1). ``timeout_is_failure``: no answer within the response
    timeout is a failed attempt (2.0.1 E13), retried by this policy whatever the message — also one of no
    transaction —, not a stale link (1.6)."""

    attempts: int
    interval_s: float
    timeout_is_failure: bool = False

    def wait_before_retry(self, failures: int) -> float | None:
        """Seconds to wait before sending a message again after its ``failures``-th failure to process, or
        ``None`` when it is to be given up."""
        if failures >= max(1, self.attempts):
            return None
        return self.interval_s * failures


class OutboxDelivery:
    """Sends the outbox head, one message at a time, while a connection is up (``run`` per connection)."""

    def __init__(self, outbox: Outbox, policy: Callable[[], RetryPolicy], adapter: OutboxAdapter, *,
                 retried: frozenset[str] = frozenset()) -> None:
        """``policy`` is read at each failure (the keys may change). ``retried``: actions retried by the policy
        like a transaction's messages although they belong to none (1.6: SecurityEventNotification)."""
        self.outbox = outbox
        self._retried = retried
        self._policy = policy
        self._adapter = adapter
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._draining = False
        self._holds = 0  # see hold()
        # seq -> loop time before which it is not sent again: the stored retry_at, read once (monotonic after)
        self._not_before: dict[int, float] = {}

    @property
    def draining(self) -> bool:
        return self._draining

    def wake(self) -> None:
        """Something was queued: look at the head now (or once the last :meth:`hold` is released)."""
        self._wake.set()

    def hold(self) -> Callable[[], None]:
        """Start no new delivery until the returned release is called (each hold released once; a delivery in
        flight finishes). For a connector's step that queued a message and still has to switch the hardware: the
        message is on disk already, and its round trip and the commit of its answer would otherwise run between the
        board's commands (tap -> contactor, firmware/charger/connector.py ``after_step``)."""
        self._holds += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._holds -= 1
                self._wake.set()

        return release

    async def run(self, call: Call) -> None:
        """Deliver until the connection fails (the exception propagates) or :meth:`drain` is called."""
        while not self._draining:
            if self._holds:
                self._wake.clear()
                await self._wake.wait()
                continue
            msg = self.outbox.head()
            if msg is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._retry_wait(msg)
            if wait > 0:  # a retry after a failure to process; other messages flow meanwhile
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            self._idle.clear()
            try:
                await self._deliver(call, msg)
            finally:
                self._idle.set()

    def _retry_wait(self, msg: OutboxMessage) -> float:
        """Seconds until ``msg`` may be sent again. The stored wall-clock time is turned into loop time once;
        no longer than the rule's wait after its failures, in case the wall clock was set backwards since."""
        if msg.retry_at is None:
            return 0.0
        now = asyncio.get_running_loop().time()
        if msg.seq not in self._not_before:
            longest = self._policy().interval_s * msg.attempts
            self._not_before = {msg.seq: now + max(0.0, min(msg.retry_at - time.time(), longest))}
        return self._not_before[msg.seq] - now

    async def drain(self, timeout_s: float) -> None:
        """Before the agent exits: start no new delivery, and let one in flight finish, so that a message
        the CSMS has answered is also removed from the outbox — otherwise it would be sent again after the
        restart (OCPP 1.6 has no duplicate detection for StopTransaction)."""
        self._draining = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("a queued message was still in flight at exit; it will be sent again after the restart")

    async def _deliver(self, call: Call, msg: OutboxMessage) -> None:
        try:
            payload = self._adapter.prepare(msg)
        except Unsendable as exc:
            total = self.outbox.discard(msg.seq)
            log.error("queued message cannot be sent; discarded", extra={
                "action": msg.action, "connector": msg.connector, "local_id": msg.local_id, "seq": msg.seq,
                "reason": str(exc), "discarded_total": total})
            return
        try:
            answer = await call(msg.action, payload)
        except TimeoutError as exc:
            if self._policy().timeout_is_failure:  # 2.0.1: the CALL timed out, a failed attempt; the link stays
                self._failed(msg, exc, "no answer within the response timeout", retry=True)
                return
            log.warning("no answer to a queued message; reconnecting, it will be sent again first",
                        extra={"action": msg.action, "seq": msg.seq})
            raise LinkUnresponsive(f"{msg.action} (seq {msg.seq}) not answered") from exc
        except (CallErrorReceived, InvalidResponse) as exc:
            self._failed(msg, exc, retry=self._retried_message(msg))
            return
        self.outbox.delivered(msg.seq, self._adapter.store_answer(msg, answer))
        self._adapter.confirmed(msg, answer)

    def _retried_message(self, msg: OutboxMessage) -> bool:
        return msg.transaction_related or msg.action in self._retried

    def _failed(self, msg: OutboxMessage, exc: Exception, error: str | None = None, *, retry: bool) -> None:
        """The CSMS failed to process the message (§4.10; 2.0.1 E13 also: did not answer it in time): retry per the
        policy if ``retry``, else (or once the attempts are spent) give it up."""
        failures = msg.attempts + 1  # the row's count: this worker is the outbox's only consumer
        wait = self._policy().wait_before_retry(failures) if retry else None
        error = error or str(exc)
        if wait is None:
            total = self.outbox.discard(msg.seq)
            log.error("CSMS failed to process a queued message; discarded", extra={
                "action": msg.action, "seq": msg.seq, "failures": failures, "connector": msg.connector,
                "local_id": msg.local_id, "discarded_total": total, "error": error})
            return
        self.outbox.attempted(msg.seq, retry_at=time.time() + wait)
        self._not_before = {msg.seq: asyncio.get_running_loop().time() + wait}
        log.warning("CSMS failed to process a queued message; retrying", extra={
            "action": msg.action, "seq": msg.seq, "failures": failures, "retry_in_s": wait, "error": error})
