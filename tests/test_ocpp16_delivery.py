"""Outbox delivery per OCPP 1.6 §4.10: in order, retried only on a failure to process (CALLERROR) with
TransactionMessageRetryInterval x failures so far, given up after TransactionMessageAttempts; a lost answer
(timeout, connection loss) is not a failure; the CSMS's transactionId is filled in when a message is sent (by the
1.6 adapter's TransactionMessages: the delivery itself knows no OCPP version)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from firmware.ocpp.delivery import LinkUnresponsive, OutboxDelivery, RetryPolicy
from firmware.ocpp.rpc import CallErrorReceived, ConnectionLost, InvalidResponse
from firmware.ocpp.v16.transactions import TransactionMessages, check_queued
from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox, OutboxMessage, QueuedMessage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INTERVAL = 0.1


def test_retry_policy_waits_interval_times_failures_then_gives_up() -> None:
    policy = RetryPolicy(attempts=3, interval_s=60)
    assert [policy.wait_before_retry(n) for n in (1, 2, 3, 4)] == [60, 120, None, None]
    assert RetryPolicy(attempts=1, interval_s=60).wait_before_retry(1) is None
    assert RetryPolicy(attempts=0, interval_s=60).wait_before_retry(1) is None  # sent once, never again


class FakeCsms:
    """Answers the agent's CALLs from a script: an exception to raise, or a payload; records each CALL."""

    def __init__(self, script: Callable[[str, dict[str, Any], int], Any] | None = None) -> None:
        self.sent: list[tuple[float, str, dict[str, Any]]] = []
        self.script = script or (lambda action, payload, n: None)
        self.next_tx = 100

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.sent.append((asyncio.get_running_loop().time(), action, payload))
        outcome = self.script(action, payload, len(self.sent))
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None:
            return dict(outcome)
        if action == "StartTransaction":
            self.next_tx += 1
            return {"transactionId": self.next_tx, "idTagInfo": {"status": "Accepted"}}
        return {}


def call_error(action: str) -> CallErrorReceived:
    return CallErrorReceived(action, "InternalError", "database down", {})


@pytest.fixture
def tlog(tmp_path: Path) -> Outbox:
    return Outbox(Database(tmp_path / "agent.db"))


def ledger(tlog: Outbox) -> Ledger:
    return Ledger(tlog.db)


def start(tlog: Outbox, connector: int = 1, local_id: int = 1) -> None:
    with tlog.db.transaction():  # the record and its message in one commit, as the 1.6 adapter writes them
        ledger(tlog).start(connector, local_id, "TAG", 10, T0)
        tlog.queue("StartTransaction", {"connectorId": connector, "idTag": "TAG", "meterStart": 10,
                                        "timestamp": "2026-03-01T12:00:00.000Z"}, connector, local_id, T0)


def meter(tlog: Outbox, value: int, connector: int | None = 1, local_id: int | None = 1,
          context: str = "Sample.Periodic") -> None:
    tlog.queue("MeterValues", {"connectorId": connector or 2, "meterValue": [{
        "timestamp": "2026-03-01T12:00:01.000Z", "sampledValue": [{"value": str(value), "context": context}]}]},
        connector, local_id)


def stop(tlog: Outbox, connector: int = 1, local_id: int = 1) -> None:
    with tlog.db.transaction():
        ledger(tlog).stop(connector, local_id, 99, T0, "Local")
        tlog.queue("StopTransaction", {"meterStop": 99, "timestamp": "2026-03-01T12:00:09.000Z", "reason": "Local"},
                   connector, local_id, T0)


def delivery(tlog: Outbox, attempts: int = 3, interval: float = INTERVAL,
             confirmed: list[tuple[OutboxMessage, dict[str, Any]]] | None = None) -> OutboxDelivery:
    seen = confirmed if confirmed is not None else []
    return OutboxDelivery(tlog, lambda: RetryPolicy(attempts, interval),
                          TransactionMessages(ledger(tlog), lambda m, a: seen.append((m, a))))


async def run_until_empty(d: OutboxDelivery, csms: FakeCsms, tlog: Outbox, timeout_s: float = 5) -> None:
    task = asyncio.create_task(d.run(csms.call))
    try:
        async with asyncio.timeout(timeout_s):
            while tlog.count():
                assert not task.done() or task.exception() is None, task.exception()
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_in_order_with_the_csms_transaction_id_filled_in(tlog: Outbox) -> None:
    start(tlog)
    meter(tlog, 11)
    meter(tlog, 12)
    stop(tlog)
    csms, confirmed = FakeCsms(), []
    await run_until_empty(delivery(tlog, confirmed=confirmed), csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "MeterValues", "MeterValues", "StopTransaction"]
    assert "transactionId" not in csms.sent[0][2]
    assert all(p["transactionId"] == 101 for _, _, p in csms.sent[1:])
    rec = ledger(tlog).get(1, 1)
    assert rec is not None and rec.transaction_id == "101"  # kept as text; sent as the integer 1.6 wants
    assert [m.action for m, _ in confirmed] == ["StartTransaction", "MeterValues", "MeterValues", "StopTransaction"]
    assert confirmed[0][1]["transactionId"] == 101


async def test_call_error_is_retried_after_interval_times_failures(tlog: Outbox) -> None:
    start(tlog)
    stop(tlog)
    csms = FakeCsms(lambda action, p, n: call_error(action) if action == "StopTransaction" and n <= 3 else None)
    await run_until_empty(delivery(tlog, attempts=3), csms, tlog)
    stops = [t for t, a, _ in csms.sent if a == "StopTransaction"]
    assert len(stops) == 3  # failed twice, the third went through
    gaps = [b - a for a, b in itertools.pairwise(stops)]
    assert INTERVAL * 0.9 <= gaps[0] < INTERVAL * 1.9  # 1 x interval
    assert INTERVAL * 1.9 <= gaps[1] < INTERVAL * 2.9  # 2 x interval
    assert tlog.stats().discarded == 0


async def test_the_retry_wait_survives_a_restart(tmp_path: Path) -> None:
    """The failure count and the time of the next try are on disk: a restarted agent still waits."""
    interval = 1.0
    tlog = Outbox(Database(tmp_path / "agent.db"))
    start(tlog)
    first = FakeCsms(lambda action, p, n: call_error(action))
    task = asyncio.create_task(delivery(tlog, interval=interval).run(first.call))
    async with asyncio.timeout(5):
        while (head := tlog.head()) is None or head.attempts == 0:  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0.01)
    failed_at = first.sent[0][0]
    task.cancel()  # the agent dies during the wait
    await asyncio.gather(task, return_exceptions=True)
    tlog.db.close()

    again = Outbox(Database(tmp_path / "agent.db"))
    head = again.head()
    assert head is not None and head.attempts == 1 and head.retry_at is not None
    second = FakeCsms()
    await run_until_empty(delivery(again, interval=interval), second, again)
    assert second.sent[0][0] - failed_at >= interval * 0.9  # not sent at once after the restart


async def test_a_wall_clock_set_back_does_not_stretch_the_retry_wait(tlog: Outbox) -> None:
    start(tlog)
    head = tlog.head()
    assert head is not None
    tlog.attempted(head.seq, retry_at=time.time() + 86_400)  # as if the clock was a day ahead at the failure
    csms = FakeCsms()
    t0 = asyncio.get_running_loop().time()
    await run_until_empty(delivery(tlog, interval=INTERVAL), csms, tlog)
    assert csms.sent[0][0] - t0 < INTERVAL * 3  # at most interval x failures


async def test_given_up_after_transaction_message_attempts_and_the_next_goes(tlog: Outbox) -> None:
    start(tlog)
    meter(tlog, 11)
    stop(tlog)
    csms = FakeCsms(lambda action, p, n: call_error(action) if action == "MeterValues" else None)
    await run_until_empty(delivery(tlog, attempts=3), csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "MeterValues", "MeterValues", "MeterValues",
                                            "StopTransaction"]
    assert tlog.stats().discarded == 1


async def test_invalid_answer_counts_as_a_failure_to_process(tlog: Outbox) -> None:
    start(tlog)
    csms = FakeCsms(lambda action, p, n: InvalidResponse("bad") if n == 1 else None)
    await run_until_empty(delivery(tlog, attempts=2), csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "StartTransaction"]


async def test_timeout_is_not_a_failure_the_link_is_dropped_and_the_message_goes_first_again(
        tlog: Outbox) -> None:
    start(tlog)
    stop(tlog)
    csms = FakeCsms(lambda action, p, n: TimeoutError() if action == "StopTransaction" and n == 2 else None)
    d = delivery(tlog, attempts=1)  # a counted failure would discard the StopTransaction at once
    with pytest.raises(LinkUnresponsive):
        await asyncio.wait_for(d.run(csms.call), 5)
    head = tlog.head()
    assert head is not None and head.action == "StopTransaction" and head.attempts == 0
    await run_until_empty(d, csms, tlog)  # the next connection
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "StopTransaction", "StopTransaction"]
    assert tlog.stats().discarded == 0


async def test_connection_lost_is_not_a_failure(tlog: Outbox) -> None:
    start(tlog)
    csms = FakeCsms(lambda action, p, n: ConnectionLost("gone") if n == 1 else None)
    d = delivery(tlog, attempts=1)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(d.run(csms.call), 5)
    head = tlog.head()
    assert head is not None and head.attempts == 0
    await run_until_empty(d, csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "StartTransaction"]


async def test_messages_of_a_transaction_whose_start_was_given_up_are_not_sent(tlog: Outbox) -> None:
    start(tlog)
    meter(tlog, 11)
    stop(tlog)
    start(tlog, 1, 2)
    csms = FakeCsms(lambda action, p, n: call_error(action) if n == 1 else None)
    await run_until_empty(delivery(tlog, attempts=1), csms, tlog)
    # without a transactionId there is nothing to send them with; the next transaction goes on normally
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "StartTransaction"]
    assert tlog.stats().discarded == 3


async def test_meter_values_of_no_transaction_are_not_retried(tlog: Outbox) -> None:
    meter(tlog, 5, connector=None, local_id=None, context="Sample.Clock")
    start(tlog)
    csms = FakeCsms(lambda action, p, n: call_error(action) if n == 1 else None)
    await run_until_empty(delivery(tlog, attempts=5), csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["MeterValues", "StartTransaction"]
    assert "transactionId" not in csms.sent[0][2]


async def test_no_answer_to_a_message_of_no_transaction_is_a_stale_link_in_1_6(tlog: Outbox) -> None:
    """1.6 is unchanged by 2.0.1's rule: a queued SecurityEventNotification (or idle MeterValues) not answered in time
    counts no attempt; the link is dropped and the message goes first on the next connection."""
    tlog.queue("SecurityEventNotification", {"type": "StartupOfTheDevice", "timestamp": "2026-03-01T12:00:00.000Z"})
    csms = FakeCsms(lambda action, p, n: TimeoutError() if n == 1 else None)
    d = OutboxDelivery(tlog, lambda: RetryPolicy(1, INTERVAL), TransactionMessages(ledger(tlog), lambda m, a: None),
                       retried=frozenset({"SecurityEventNotification"}))
    with pytest.raises(LinkUnresponsive):
        await asyncio.wait_for(d.run(csms.call), 5)
    head = tlog.head()
    assert head is not None and head.attempts == 0
    await run_until_empty(d, csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["SecurityEventNotification"] * 2 and tlog.stats().discarded == 0


async def test_a_new_message_does_not_jump_a_retry_wait(tlog: Outbox) -> None:
    start(tlog)
    csms = FakeCsms(lambda action, p, n: call_error(action) if n == 1 else None)
    d = delivery(tlog, attempts=3, interval=0.3)
    task = asyncio.create_task(d.run(csms.call))
    await asyncio.sleep(0.05)
    meter(tlog, 11)
    d.wake()  # woken during the retry wait: still waits for the rest of it, the order stays
    await asyncio.sleep(0.1)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction"]
    await asyncio.sleep(0.4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction", "StartTransaction", "MeterValues"]


async def test_drain_lets_the_message_in_flight_finish_and_sends_no_more(tlog: Outbox) -> None:
    start(tlog)
    stop(tlog)
    release = asyncio.Event()

    async def slow_call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"transactionId": 7} if action == "StartTransaction" else {}

    d = delivery(tlog)
    task = asyncio.create_task(d.run(slow_call))
    await asyncio.sleep(0.05)
    drained = asyncio.create_task(d.drain(2))
    await asyncio.sleep(0.05)
    assert not drained.done()  # waits for the answer in flight
    release.set()
    await drained
    await asyncio.wait_for(task, 1)  # run() returns: no new delivery
    head = tlog.head()
    assert head is not None and head.action == "StopTransaction"


async def test_only_the_start_transactions_removal_waits_for_the_disk(tlog: Outbox,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/storage.md "At least once": a plain removal may be undone by a power loss (the message is sent again),
    the removal that stores the CSMS's transaction id may not (later messages need the id)."""
    start(tlog)
    meter(tlog, 11)
    commits: list[tuple[bool, bool]] = []  # (durable, storing an id) of each outermost commit of a removal
    real = tlog.delivered

    def spy(seq: int, with_removal: Callable[[], None] | None = None) -> None:
        durable_flags: list[bool] = []
        real_transaction = tlog.db.transaction

        def transaction(*, durable: bool = True) -> Any:
            durable_flags.append(durable)
            return real_transaction(durable=durable)

        monkeypatch.setattr(tlog.db, "transaction", transaction)
        try:
            real(seq, with_removal)
        finally:
            monkeypatch.setattr(tlog.db, "transaction", real_transaction)
        commits.append((durable_flags[0], with_removal is not None))

    monkeypatch.setattr(tlog, "delivered", spy)
    await run_until_empty(delivery(tlog), FakeCsms(), tlog)
    assert commits == [(True, True), (False, False)]
    rec = ledger(tlog).get(1, 1)
    assert rec is not None and rec.transaction_id == "101"


async def test_a_transaction_id_that_is_no_16_integer_cannot_be_sent(tlog: Outbox) -> None:
    """The ledger keeps ids as text (2.0.1's are strings); 1.6 can only send an integer."""
    start(tlog)
    meter(tlog, 11)
    start(tlog, 1, 2)
    ledger(tlog).set_transaction_id(1, 1, "c0ffee-2.0.1")
    head = tlog.head()
    assert head is not None
    tlog.delivered(head.seq)  # as if that StartTransaction had gone out already
    csms = FakeCsms()
    await run_until_empty(delivery(tlog), csms, tlog)
    assert [a for _, a, _ in csms.sent] == ["StartTransaction"]  # the meter value was discarded, the next went on
    assert tlog.stats().discarded == 1


def test_queued_messages_are_checked_as_they_will_be_sent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a StopTransaction of a transaction started offline has no transactionId yet: prepare() fills it in
    stop = QueuedMessage("StopTransaction", {"meterStop": 10, "timestamp": "2026-01-01T00:00:00Z"}, 1, 7)
    assert check_queued(stop) is None
    assert check_queued(stop._replace(local_id=None)) == (
        "ProtocolError: payload: 'transactionId' is a required property")
    faulty = QueuedMessage("MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z",
                                                                              "sampledValue": [{"value": 5}]}]})
    fault = check_queued(faulty)
    assert fault is not None and fault.startswith("TypeConstraintViolation: meterValue.0.sampledValue.0.value")
    # a faulty message is logged where it is built, and kept: billing data is never refused over our own bug
    db = Database(tmp_path / "agent.db")
    outbox = Outbox(db, check=check_queued)
    with caplog.at_level(logging.ERROR, logger="firmware.storage.outbox"):
        seq = outbox.queue_many([faulty])[0]
    ours = [r for r in caplog.records if r.name == "firmware.storage.outbox"]
    assert [(r.getMessage(), getattr(r, "seq", None)) for r in ours] == [
        ("queued message is faulty; the CSMS will judge it", seq)]
    head = outbox.head()
    assert head is not None and head.payload == faulty.payload
    db.close()


def test_stop_reasons_are_16_reasons() -> None:
    """StopTransaction's reason is the machine's StopReason as is, but Timeout (2.0.1's E10 rule, never on in 1.6)
    which 1.6's Reason lacks: Other."""
    from firmware.ocpp.v16.mapping import stop_reason
    from firmware.session import StopReason

    assert stop_reason(StopReason.EV_DISCONNECTED) == "EVDisconnected"
    assert stop_reason(StopReason.TIMEOUT) == "Other"
    assert {stop_reason(r) for r in StopReason} <= OCPP16_REASONS


OCPP16_REASONS = {"DeAuthorized", "EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss",
                  "Reboot", "Remote", "SoftReset", "UnlockCommand"}


async def test_a_hold_starts_no_delivery_until_every_hold_is_released(tlog: Outbox) -> None:
    """A connector's step holds the delivery from its commit to its last board command (tap -> contactor)."""
    csms, sent = FakeCsms(), asyncio.Event()

    async def call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        sent.set()
        return await csms.call(action, payload)

    d = delivery(tlog)
    first, second = d.hold(), d.hold()
    task = asyncio.create_task(d.run(call))
    try:
        start(tlog)
        d.wake()
        for _ in range(20):  # the worker runs, finds the hold, and waits
            await asyncio.sleep(0)
        first()
        first()  # a release counts once
        for _ in range(20):
            await asyncio.sleep(0)
        assert csms.sent == [] and tlog.count() == 1
        second()
        await asyncio.wait_for(sent.wait(), 5)
        assert [a for _, a, _ in csms.sent] == ["StartTransaction"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
