"""Outbox delivery with the OCPP 2.0.1 policy (E13): no answer within the response timeout is a failed attempt of a
TransactionEvent — retried on the same connection after MessageAttemptInterval x the attempts so far, given up after
MessageAttempts, the next message going then — where 1.6 takes it for a stale link (tests/test_ocpp16_delivery.py).
A message of no transaction not answered in time is a failed attempt too, under the same policy (a CALLERROR still
discards it at once); a connection lost while the answer is due is treated as in 1.6."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from firmware.ocpp.delivery import OutboxDelivery, RetryPolicy
from firmware.ocpp.rpc import CallErrorReceived, ConnectionLost
from firmware.ocpp.v201.transactions import TransactionMessages
from firmware.storage.database import Database
from firmware.storage.outbox import Outbox
from tests.test_ocpp16_delivery import FakeCsms, run_until_empty

INTERVAL = 0.1


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(Database(tmp_path / "agent.db"))


def event(outbox: Outbox, event_type: str, seq_no: int, local_id: int | None = 1) -> None:
    outbox.queue("TransactionEvent", {"eventType": event_type, "seqNo": seq_no, "triggerReason": "Authorized",
                                      "timestamp": "2026-03-01T12:00:00.000Z",
                                      "transactionInfo": {"transactionId": "tx-1"}}, 1, local_id)


def delivery(outbox: Outbox, attempts: int) -> OutboxDelivery:
    return OutboxDelivery(outbox, lambda: RetryPolicy(attempts, INTERVAL, timeout_is_failure=True),
                          TransactionMessages(lambda m, a: None))


def seq_nos(csms: FakeCsms) -> list[Any]:
    return [p.get("seqNo") for _, _, p in csms.sent]


async def test_no_answer_is_a_failed_attempt_given_up_after_message_attempts(outbox: Outbox) -> None:
    """TC_E_41_CS: the CSMS never answers the Started event: sent MessageAttempts times on the same connection,
    1 x then 2 x the interval apart, then given up and the next event goes."""
    event(outbox, "Started", 0)
    event(outbox, "Updated", 1)
    csms = FakeCsms(lambda action, p, n: TimeoutError() if p["seqNo"] == 0 else None)
    await run_until_empty(delivery(outbox, attempts=3), csms, outbox)  # no LinkUnresponsive: the link stays
    assert seq_nos(csms) == [0, 0, 0, 1]
    gaps = [b - a for a, b in itertools.pairwise(t for t, _, p in csms.sent if p["seqNo"] == 0)]
    assert INTERVAL * 0.9 <= gaps[0] < INTERVAL * 1.9 and INTERVAL * 1.9 <= gaps[1] < INTERVAL * 2.9
    assert outbox.stats().discarded == 1


async def test_answered_before_message_attempts_is_delivered(outbox: Outbox) -> None:
    """TC_E_42_CS: the first attempt is not answered, the second is: delivered, nothing given up."""
    event(outbox, "Started", 0)
    csms = FakeCsms(lambda action, p, n: TimeoutError() if n == 1 else None)
    await run_until_empty(delivery(outbox, attempts=3), csms, outbox)
    assert seq_nos(csms) == [0, 0] and outbox.stats().discarded == 0


async def test_the_attempts_survive_a_restart(tmp_path: Path) -> None:
    """A failed attempt is counted on disk with the message: after a restart the rest of the attempts, no more."""
    outbox = Outbox(Database(tmp_path / "agent.db"))
    event(outbox, "Started", 0)
    event(outbox, "Ended", 1)
    first_sent = asyncio.Event()

    def script(action: str, p: dict[str, Any], n: int) -> Any:
        first_sent.set()
        return TimeoutError() if p["seqNo"] == 0 else None

    csms = FakeCsms(script)
    task = asyncio.create_task(delivery(outbox, attempts=2).run(csms.call))
    await asyncio.wait_for(first_sent.wait(), 5)
    await asyncio.sleep(INTERVAL / 2)  # the failure counted; the retry not due yet: the agent stops
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    head = outbox.head()
    assert head is not None and head.attempts == 1
    again = Outbox(Database(tmp_path / "agent.db"))
    await run_until_empty(delivery(again, attempts=2), csms, again)
    assert seq_nos(csms) == [0, 0, 1]


async def test_a_connection_lost_is_still_no_failure(outbox: Outbox) -> None:
    event(outbox, "Started", 0)
    csms = FakeCsms(lambda action, p, n: ConnectionLost("gone") if n == 1 else None)
    d = delivery(outbox, attempts=1)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(d.run(csms.call), 5)
    head = outbox.head()
    assert head is not None and head.attempts == 0
    await run_until_empty(d, csms, outbox)
    assert seq_nos(csms) == [0, 0]


def notification(outbox: Outbox, action: str = "NotifyEvent") -> None:
    """A queued message of no transaction (NotifyEvent; MeterValues of an idle EVSE, SecurityEventNotification and
    ReservationStatusUpdate go the same way)."""
    outbox.queue(action, {"generatedAt": "2026-03-01T12:00:00.000Z", "seqNo": 0, "eventData": []})


async def test_no_answer_to_a_message_of_no_transaction_is_a_failed_attempt_too(outbox: Outbox) -> None:
    """2.0.1: the CALL of a queued message of no transaction timed out: one failed attempt, retried on the same
    connection after MessageAttemptInterval (2.0.1 has no attempt count for it: MessageAttempts[TransactionEvent] is
    the station's one rule), not a stale link; answered the second time: delivered, nothing given up."""
    notification(outbox)
    event(outbox, "Started", 0)
    csms = FakeCsms(lambda action, p, n: TimeoutError() if n == 1 else None)
    await run_until_empty(delivery(outbox, attempts=3), csms, outbox)  # no LinkUnresponsive: the link stays
    assert [a for _, a, _ in csms.sent] == ["NotifyEvent", "NotifyEvent", "TransactionEvent"]
    assert csms.sent[1][0] - csms.sent[0][0] >= INTERVAL * 0.9 and outbox.stats().discarded == 0


async def test_a_message_of_no_transaction_never_answered_is_given_up_after_the_attempts(outbox: Outbox) -> None:
    """Never answered: MessageAttempts sends (1 x, then 2 x the interval apart), then given up and the next goes.
    A CALLERROR still gives it up at once (the CSMS cannot process it: sending it again changes nothing)."""
    notification(outbox, "SecurityEventNotification")
    notification(outbox)
    event(outbox, "Started", 0)
    csms = FakeCsms(lambda action, p, n: TimeoutError() if action == "SecurityEventNotification" else (
        CallErrorReceived(action, "InternalError", "no", {}) if action == "NotifyEvent" else None))
    await run_until_empty(delivery(outbox, attempts=3), csms, outbox)
    assert [a for _, a, _ in csms.sent] == ["SecurityEventNotification"] * 3 + ["NotifyEvent", "TransactionEvent"]
    gaps = [b - a for a, b in itertools.pairwise(t for t, action, _ in csms.sent[:3])]
    assert INTERVAL * 0.9 <= gaps[0] < INTERVAL * 1.9 and INTERVAL * 1.9 <= gaps[1] < INTERVAL * 2.9
    assert outbox.stats().discarded == 2
