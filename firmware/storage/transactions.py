"""Durable records of transactions and the ordered outbox of queued OCPP messages.

Both are written in one SQLite transaction *before* anything is sent, so a ``kill -9`` at any
instant leaves either nothing or a complete record that the restarted agent delivers.

A transaction is keyed by (connector, local id): the local id is the session machine's, known at
once; the CSMS's ``transactionId`` arrives later (possibly much later, after an offline period) and
is filled into queued StopTransaction / MeterValues messages when they are sent.

The outbox is bounded by the disk, not by a constant. An optional cap (``[storage]
max_queued_messages``) protects a small flash: once more messages are queued than the cap allows,
*only* sampled meter values are thinned — clock-aligned values that belong to no transaction
first, then every other periodic MeterValues of the oldest transaction (its first and last kept).
StartTransaction, StopTransaction (with its transactionData) and clock-aligned values of a
transaction are never dropped; if nothing is left to thin, the queue grows past the cap (logged).
Every thinned or discarded message is counted in the settings table, so the counts survive restarts
and show in the Diagnostics DataTransfer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firmware.storage.database import Database

log = logging.getLogger(__name__)

#: Settings keys of the outbox counters (cumulative over the agent's life).
THINNED_KEY = "storage.outbox.thinned"
DISCARDED_KEY = "storage.outbox.discarded"
#: The context of a periodic sample (OCPP ReadingContext); the only transaction data that may be thinned.
PERIODIC_CONTEXT = "Sample.Periodic"
#: A message to queue: (action, payload, connector, local_id, created_at).
QueuedMessage = tuple[str, dict[str, Any], int | None, int | None, datetime | None]

_THINNABLE = ("action = 'MeterValues' AND (local_id IS NULL OR "
              f"json_extract(payload, '$.meterValue[0].sampledValue[0].context') = '{PERIODIC_CONTEXT}')")


@dataclass(frozen=True)
class TransactionRecord:
    connector: int
    local_id: int
    id_tag: str
    meter_start_wh: int
    started_at: str
    transaction_id: int | None
    stopped_at: str | None
    meter_stop_wh: int | None
    stop_reason: str | None


@dataclass(frozen=True)
class OutboxMessage:
    seq: int
    action: str
    payload: dict[str, Any]
    connector: int | None
    local_id: int | None  # None: the message belongs to no transaction (e.g. clock-aligned, idle connector)
    attempts: int  # how often the CSMS failed to process it so far
    created_at: str = ""
    retry_at: float | None = None  # UNIX seconds before which it is not sent again (after a failure)

    @property
    def transaction_related(self) -> bool:
        return self.local_id is not None


@dataclass(frozen=True)
class OutboxStats:
    queued: int
    thinned: int  # sampled meter values dropped to stay within the cap, ever
    discarded: int  # messages given up after the CSMS failed to process them, ever
    max_queued: int | None


_TX_COLUMNS = ("connector, local_id, id_tag, meter_start_wh, started_at, transaction_id, stopped_at, "
               "meter_stop_wh, stop_reason")


class TransactionLog:
    """Transactions and their queued messages, on disk."""

    def __init__(self, db: Database, max_queued: int | None = None) -> None:
        self.db = db
        self.max_queued = max_queued
        self._over_cap_logged = False

    # --- transactions ---------------------------------------------------------------------------

    def start(self, connector: int, local_id: int, id_tag: str, meter_start_wh: int, started_at: datetime,
              message: tuple[str, dict[str, Any]]) -> int:
        """Record a started transaction and queue its StartTransaction, atomically. Returns the outbox seq."""
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO transactions(connector, local_id, id_tag, meter_start_wh, started_at) "
                         "VALUES(?, ?, ?, ?, ?)", (connector, local_id, id_tag, meter_start_wh,
                                                   started_at.isoformat()))
            return self._append(conn, message, connector, local_id, started_at)

    def stop(self, connector: int, local_id: int, meter_stop_wh: int, stopped_at: datetime, reason: str,
             message: tuple[str, dict[str, Any]]) -> int:
        with self.db.transaction() as conn:
            conn.execute("UPDATE transactions SET stopped_at = ?, meter_stop_wh = ?, stop_reason = ? "
                         "WHERE connector = ? AND local_id = ?",
                         (stopped_at.isoformat(), meter_stop_wh, reason, connector, local_id))
            return self._append(conn, message, connector, local_id, stopped_at)

    def set_transaction_id(self, connector: int, local_id: int, transaction_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE transactions SET transaction_id = ? WHERE connector = ? AND local_id = ?",
                         (transaction_id, connector, local_id))

    def get(self, connector: int, local_id: int) -> TransactionRecord | None:
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE connector = ? AND local_id = ?",
                               (connector, local_id)).fetchone()
        return None if row is None else TransactionRecord(*row)

    def open_transactions(self) -> list[TransactionRecord]:
        with self.db.transaction() as conn:
            rows = conn.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE stopped_at IS NULL "
                                "ORDER BY connector, local_id").fetchall()
        return [TransactionRecord(*r) for r in rows]

    def active_by_transaction_id(self, transaction_id: int) -> TransactionRecord | None:
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT {_TX_COLUMNS} FROM transactions WHERE transaction_id = ? "
                               "AND stopped_at IS NULL", (transaction_id,)).fetchone()
        return None if row is None else TransactionRecord(*row)

    def next_local_id(self, connector: int) -> int:
        """The first local id this connector has not used (for a session machine that had to start afresh)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT MAX(local_id) FROM transactions WHERE connector = ?", (connector,)).fetchone()
        return 1 if row is None or row[0] is None else int(row[0]) + 1

    # --- outbox ---------------------------------------------------------------------------------

    def queue(self, action: str, payload: dict[str, Any], connector: int | None = None,
              local_id: int | None = None, created_at: datetime | None = None) -> int:
        with self.db.transaction() as conn:
            return self._append(conn, (action, payload), connector, local_id, created_at)

    def queue_many(self, messages: Iterable[QueuedMessage]) -> list[int]:
        """Queue several messages in one commit (one fsync): all of them or none."""
        with self.db.transaction() as conn:
            return [self._append(conn, (action, payload), connector, local_id, created_at)
                    for action, payload, connector, local_id, created_at in messages]

    def _append(self, conn: Any, message: tuple[str, dict[str, Any]], connector: int | None, local_id: int | None,
                created_at: datetime | None) -> int:
        action, payload = message
        cur = conn.execute("INSERT INTO outbox(action, payload, connector, local_id, created_at) "
                           "VALUES(?, ?, ?, ?, ?)",
                           (action, json.dumps(payload, separators=(",", ":")), connector, local_id,
                            (created_at or datetime.now().astimezone()).isoformat()))
        seq = int(cur.lastrowid)
        if self.max_queued is not None:
            self._enforce_cap(conn, self.max_queued)
        return seq

    def _enforce_cap(self, conn: Any, cap: int) -> None:
        low, high = conn.execute("SELECT MIN(seq), MAX(seq) FROM outbox").fetchone()
        if low is None or high - low + 1 <= cap:  # the seq span bounds the count: no need to count
            self._over_cap_logged = False
            return
        queued = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        if queued <= cap:
            self._over_cap_logged = False
            return
        if self._thin(conn, queued):
            return
        if not self._over_cap_logged:
            log.warning("outbox over its cap with nothing left to thin; keeping every message",
                        extra={"queued": queued, "max_queued_messages": cap})
            self._over_cap_logged = True

    def _thin(self, conn: Any, queued: int) -> bool:
        """Drop every other thinnable MeterValues of the oldest group that has at least three (first and last
        kept). Groups without a transaction go first. Returns whether anything was dropped."""
        group = conn.execute(
            f"SELECT connector, local_id, COUNT(*) AS n, MIN(seq) AS first FROM outbox WHERE {_THINNABLE} "
            "GROUP BY connector, local_id HAVING n >= 3 ORDER BY local_id IS NOT NULL, first LIMIT 1").fetchone()
        if group is None:
            return False
        connector, local_id = group[0], group[1]
        seqs = [int(r[0]) for r in conn.execute(
            f"SELECT seq FROM outbox WHERE {_THINNABLE} AND connector IS ? AND local_id IS ? ORDER BY seq",
            (connector, local_id))]
        drop = seqs[1:-1:2]
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in drop])
        total = self._bump(conn, THINNED_KEY, len(drop))
        log.warning("outbox over its cap: thinned periodic meter values", extra={
            "connector": connector, "local_id": local_id, "dropped": len(drop), "kept": len(seqs) - len(drop),
            "queued": queued - len(drop), "max_queued_messages": self.max_queued, "thinned_total": total})
        return True

    @staticmethod
    def _bump(conn: Any, key: str, by: int) -> int:
        conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                     "SET value = CAST(value AS INTEGER) + ?", (key, str(by), by))
        return int(conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()[0])


    def head(self) -> OutboxMessage | None:
        """The oldest queued message (transaction messages are delivered strictly in order)."""
        messages = self.peek(1)
        return messages[0] if messages else None

    def peek(self, limit: int | None = None, after_seq: int = 0) -> list[OutboxMessage]:
        """Queued messages in order (all of them without ``limit``), starting after ``after_seq``."""
        out: list[OutboxMessage] = []
        with self.db.transaction() as conn:
            while True:
                want = -1 if limit is None else limit - len(out)
                rows = conn.execute("SELECT seq, action, payload, connector, local_id, attempts, created_at, "
                                    "retry_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after_seq, want)).fetchall()
                damaged = False
                for seq, action, payload, connector, local_id, attempts, created_at, retry_at in rows:
                    after_seq = seq
                    try:
                        decoded = json.loads(payload)
                    except (ValueError, TypeError):
                        # a damaged row (bit rot the integrity check did not see) must not block the queue for ever
                        damaged = True
                        conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                        total = self._bump(conn, DISCARDED_KEY, 1)
                        log.error("unreadable queued message discarded", extra={
                            "seq": seq, "action": action, "connector": connector, "local_id": local_id,
                            "discarded_total": total})
                        continue
                    out.append(OutboxMessage(seq, action, decoded, connector, local_id, attempts, created_at,
                                             retry_at))
                if not damaged or limit is None or not rows:
                    return out

    def count(self) -> int:
        with self.db.transaction() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def stats(self) -> OutboxStats:
        with self.db.transaction() as conn:
            queued = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        return OutboxStats(queued, int(self.db.get_setting(THINNED_KEY) or 0),
                           int(self.db.get_setting(DISCARDED_KEY) or 0), self.max_queued)

    def delivered(self, seq: int, transaction_id: tuple[int, int, int] | None = None) -> None:
        """Drop a delivered message; for a StartTransaction, store the CSMS's id in the same commit (durably).
        A plain removal does not wait for the disk (``Database.transaction(durable=False)``): the CSMS has the
        message, and if a power loss undoes the removal it is sent again, as at-least-once delivery allows."""
        with self.db.transaction(durable=transaction_id is not None) as conn:
            if transaction_id is not None:
                connector, local_id, tx_id = transaction_id
                conn.execute("UPDATE transactions SET transaction_id = ? WHERE connector = ? AND local_id = ?",
                             (tx_id, connector, local_id))
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def discard(self, seq: int) -> int:
        """Give a message up (the CSMS kept failing it, or it can no longer be sent); returns the total count."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            return self._bump(conn, DISCARDED_KEY, 1)

    def attempted(self, seq: int, retry_at: float | None = None) -> int:
        """Count one failure of the CSMS to process the message and, in the same commit, when it may be sent
        again (UNIX seconds); returns the failures so far."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, retry_at = ? WHERE seq = ?", (retry_at, seq))
            row = conn.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return 0 if row is None else int(row[0])
