"""The outbox on disk: capacity bounded by the disk, order kept across restarts, thinning under a cap, counters,
and atomic multi-write commits (Database.transaction nesting) of a billing record and its message."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.charger.metering import ReadingContext
from firmware.config import ConfigError, parse_config
from firmware.ocpp.v16.meter_values import thinnable
from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import DISCARDED_KEY, THINNED_KEY, Outbox, QueuedMessage
from firmware.storage.settings import Settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def meter_values(i: int, context: str = "Sample.Periodic", connector: int = 1) -> dict[str, Any]:
    return {"connectorId": connector, "meterValue": [{"timestamp": (T0 + timedelta(seconds=i)).isoformat(),
                                                      "sampledValue": [{"value": str(1000 + i), "context": context,
                                                                        "measurand": "Energy.Active.Import.Register",
                                                                        "unit": "Wh"}]}]}


def queue_mv(log: Outbox, i: int, context: str = "Sample.Periodic", connector: int | None = 1,
             local_id: int | None = 1) -> None:
    """A MeterValues classified as the 1.6 adapter classifies it (what a cap may thin)."""
    log.queue("MeterValues", meter_values(i, context, connector or 2), connector, local_id,
              thinnable=thinnable(local_id, ReadingContext(context)))


def start_tx(log: Outbox, connector: int = 1, local_id: int = 1) -> None:
    """The billing record and its StartTransaction in one commit, as the 1.6 adapter writes them."""
    with log.db.transaction():
        Ledger(log.db).start(connector, local_id, "04A1B2C3", 1000, T0)
        log.queue("StartTransaction", {"connectorId": connector, "idTag": "04A1B2C3", "meterStart": 1000,
                                       "timestamp": T0.isoformat()}, connector, local_id, T0)


def stop_tx(log: Outbox, connector: int = 1, local_id: int = 1, wh: int = 2000) -> None:
    with log.db.transaction():
        Ledger(log.db).stop(connector, local_id, wh, T0, "Local")
        log.queue("StopTransaction", {"meterStop": wh, "timestamp": T0.isoformat()}, connector, local_id, T0)


def test_hundred_thousand_queued_messages_survive_a_restart_in_order(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = Database(path)
    log = Outbox(db)
    start_tx(log)
    total = 100_000
    for chunk in range(0, total, 10_000):
        batch = [QueuedMessage("MeterValues", meter_values(i), 1, 1, thinnable=True)
                 for i in range(chunk, chunk + 10_000)]
        log.queue_many(batch)
    stop_tx(log)
    db.close()

    again = Outbox(Database(path))  # "restart": a new connection to the same file
    queued = again.peek()
    assert len(queued) == total + 2 == again.count()
    assert [m.action for m in (queued[0], queued[-1])] == ["StartTransaction", "StopTransaction"]
    values = [int(m.payload["meterValue"][0]["sampledValue"][0]["value"]) for m in queued[1:-1]]
    assert values == list(range(1000, 1000 + total))  # every one, in the order queued
    seqs = [m.seq for m in queued]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert again.head() == queued[0]
    assert [m.seq for m in again.peek(3, after_seq=seqs[10])] == seqs[11:14]


def test_nested_transactions_commit_together_or_not_at_all(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    log, ledger, settings = Outbox(db), Ledger(db), Settings(db)
    with pytest.raises(RuntimeError), db.transaction():
        settings.put("session.1", "snapshot with a transaction")
        start_tx(log)  # joins the outer transaction
        assert db.in_transaction
        raise RuntimeError("power cut between the two writes")
    assert not db.in_transaction
    assert settings.get("session.1") is None and log.count() == 0 and ledger.open_transactions() == []
    with db.transaction():
        settings.put("session.1", "snapshot with a transaction")
        start_tx(log)
    assert settings.get("session.1") is not None and log.count() == 1 and len(ledger.open_transactions()) == 1


def test_a_write_left_uncommitted_by_a_killed_process_is_not_there(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = Database(path)
    db.conn.execute("BEGIN IMMEDIATE")
    db.conn.execute("INSERT INTO settings(key, value) VALUES('session.1', 'half')")
    # a second process opens the file meanwhile (the first never commits: it is killed)
    other = sqlite3.connect(path)
    assert other.execute("SELECT COUNT(*) FROM settings").fetchone()[0] == 0
    other.close()


def test_cap_thins_only_periodic_meter_values_of_the_oldest_transaction(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    db = Database(tmp_path / "agent.db")
    log = Outbox(db, max_queued=12)
    start_tx(log, 1, 1)
    for i in range(8):
        queue_mv(log, i)
    queue_mv(log, 100, "Sample.Clock")  # clock-aligned of a transaction: kept
    stop_tx(log, 1, 1)
    start_tx(log, 2, 1)
    assert log.count() == 12 and log.stats().thinned == 0
    with caplog.at_level(logging.WARNING, logger="firmware.storage.outbox"):
        queue_mv(log, 200, connector=2)  # the 13th: over the cap
    kept = log.peek()
    # every other periodic value of the oldest transaction went, its first and last stayed
    periodic_1 = [int(m.payload["meterValue"][0]["sampledValue"][0]["value"]) - 1000 for m in kept
                  if m.local_id == 1 and m.connector == 1 and m.action == "MeterValues"
                  and m.payload["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Periodic"]
    assert periodic_1 == [0, 2, 4, 6, 7]
    assert [m.action for m in kept].count("StartTransaction") == 2
    assert [m.action for m in kept].count("StopTransaction") == 1
    assert any(m.payload["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock" for m in kept
               if m.action == "MeterValues")
    assert log.count() == 10 and log.stats().thinned == 3 and Settings(db).get(THINNED_KEY) == "3"
    assert any(r.getMessage() == "outbox over its cap: thinned periodic meter values" for r in caplog.records)


def test_values_of_no_transaction_are_thinned_first(tmp_path: Path) -> None:
    log = Outbox(Database(tmp_path / "agent.db"), max_queued=8)
    start_tx(log)
    for i in range(4):
        queue_mv(log, i)
    for i in range(4):  # clock-aligned values of an idle connector: no transaction
        queue_mv(log, 50 + i, "Sample.Clock", connector=None, local_id=None)
    kept = log.peek()
    idle = [m for m in kept if m.local_id is None]
    assert len(idle) == 3 and len([m for m in kept if m.local_id == 1]) == 5  # the transaction's untouched


def test_over_the_cap_with_nothing_to_thin_keeps_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = Outbox(Database(tmp_path / "agent.db"), max_queued=3)
    with caplog.at_level(logging.WARNING, logger="firmware.storage.outbox"):
        for connector in (1, 2, 3):
            start_tx(log, connector)
            stop_tx(log, connector)
    assert log.count() == 6 and log.stats().thinned == 0  # Start/Stop are never dropped
    warnings = [r for r in caplog.records if "nothing left to thin" in r.getMessage()]
    assert len(warnings) == 1  # said once, not for every message


def test_thinning_repeats_on_the_same_transaction_as_it_keeps_growing(tmp_path: Path) -> None:
    log = Outbox(Database(tmp_path / "agent.db"), max_queued=1000)
    start_tx(log)
    for i in range(3000):
        queue_mv(log, i)
    kept = log.peek()
    assert len(kept) <= 1000 and kept[0].action == "StartTransaction"
    values = [int(m.payload["meterValue"][0]["sampledValue"][0]["value"]) - 1000 for m in kept[1:]]
    assert values[0] == 0 and values == sorted(values) and len(values) == len(set(values))
    assert log.stats().thinned == 3000 - len(values)


def test_discarded_and_attempted_are_counted(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    log = Outbox(db)
    start_tx(log)
    head = log.head()
    assert head is not None and head.attempts == 0 and head.transaction_related
    assert log.attempted(head.seq) == 1 and log.attempted(head.seq) == 2
    assert log.head() is not None and log.head().attempts == 2  # type: ignore[union-attr]
    assert log.discard(head.seq) == 1
    assert log.count() == 0 and Settings(db).get(DISCARDED_KEY) == "1"
    stats = log.stats()
    assert (stats.queued, stats.discarded, stats.thinned, stats.max_queued) == (0, 1, 0, None)


def test_start_transaction_id_is_stored_with_the_delivery(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    log, ledger = Outbox(db), Ledger(db)
    start_tx(log, 1, 1)
    start_tx(log, 1, 2)
    head = log.head()
    assert head is not None
    log.delivered(head.seq, lambda: ledger.set_transaction_id(1, 1, "4711"))
    rec = ledger.get(1, 1)
    assert rec is not None and rec.transaction_id == "4711"
    assert ledger.active_by_transaction_id("4711") == rec
    assert ledger.next_local_id(1) == 3 and ledger.next_local_id(2) == 1
    assert [m.local_id for m in log.peek()] == [2]  # removed in the same commit


def test_an_unreadable_queued_message_is_discarded_not_blocking_the_queue(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    log = Outbox(db)
    start_tx(log)
    queue_mv(log, 1)
    head = log.head()
    assert head is not None
    db.conn.execute("UPDATE outbox SET payload = '{\"connectorId\": 1, \"meterV' WHERE seq = ?", (head.seq,))
    nxt = log.head()
    assert nxt is not None and nxt.action == "MeterValues" and log.count() == 1 and log.stats().discarded == 1


def test_storage_cap_in_the_configuration_file() -> None:
    base = '[charge_point]\nid = "CP-1"\n\n[[connectors]]\nid = 1\nboard = { driver = "ioboard", port = "/dev/x" }\n'
    assert parse_config(base).max_queued_messages is None  # default: the disk is the limit
    capped = parse_config(base + '\n[storage]\ndir = "/tmp/x"\nmax_queued_messages = 250000\n')
    assert capped.max_queued_messages == 250000 and capped.state_dir == "/tmp/x"
    with pytest.raises(ConfigError, match=r"storage\.max_queued_messages: expected an integer from 1000"):
        parse_config(base + "\n[storage]\nmax_queued_messages = 10\n")


def test_the_cap_follows_the_classification_given_at_queue_time_not_the_payload(tmp_path: Path) -> None:
    """The outbox knows no OCPP version: what may be thinned is what the adapter said when it queued it."""
    log = Outbox(Database(tmp_path / "agent.db"), max_queued=4)
    for i in range(3):  # e.g. a 2.0.1 adapter's periodic TransactionEvents
        log.queue("TransactionEvent", {"seqNo": i}, 1, 1, thinnable=True)
    log.queue("TransactionEvent", {"seqNo": 3}, 1, 1)
    log.queue("MeterValues", meter_values(0), 1, 1)  # looks periodic, but was not marked thinnable
    assert [m.payload.get("seqNo") for m in log.peek()] == [0, 2, 3, None]
    assert [m.thinnable for m in log.peek()] == [True, True, False, False]
