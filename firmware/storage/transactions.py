"""Durable records of transactions and the ordered outbox of transaction-related OCPP messages.

Both are written in one SQLite transaction *before* anything is sent, so a ``kill -9`` at any
instant leaves either nothing or a complete record that the restarted agent delivers.

A transaction is keyed by (connector, local id): the local id is the session machine's, known at
once; the CSMS's ``transactionId`` arrives later (possibly much later, after an offline period) and
is filled into queued StopTransaction / MeterValues messages when they are sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firmware.storage.database import Database


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
    local_id: int | None
    attempts: int


class TransactionLog:
    """Transactions and their queued messages, on disk."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
            row = conn.execute("SELECT connector, local_id, id_tag, meter_start_wh, started_at, transaction_id, "
                               "stopped_at, meter_stop_wh, stop_reason FROM transactions "
                               "WHERE connector = ? AND local_id = ?", (connector, local_id)).fetchone()
        return None if row is None else TransactionRecord(*row)

    def open_transactions(self) -> list[TransactionRecord]:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT connector, local_id, id_tag, meter_start_wh, started_at, transaction_id, "
                                "stopped_at, meter_stop_wh, stop_reason FROM transactions "
                                "WHERE stopped_at IS NULL ORDER BY connector, local_id").fetchall()
        return [TransactionRecord(*r) for r in rows]

    def active_by_transaction_id(self, transaction_id: int) -> TransactionRecord | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT connector, local_id, id_tag, meter_start_wh, started_at, transaction_id, "
                               "stopped_at, meter_stop_wh, stop_reason FROM transactions "
                               "WHERE transaction_id = ? AND stopped_at IS NULL", (transaction_id,)).fetchone()
        return None if row is None else TransactionRecord(*row)

    # --- outbox ---------------------------------------------------------------------------------

    def queue(self, action: str, payload: dict[str, Any], connector: int | None = None,
              local_id: int | None = None, created_at: datetime | None = None) -> int:
        with self.db.transaction() as conn:
            return self._append(conn, (action, payload), connector, local_id, created_at)

    @staticmethod
    def _append(conn: Any, message: tuple[str, dict[str, Any]], connector: int | None, local_id: int | None,
                created_at: datetime | None) -> int:
        action, payload = message
        cur = conn.execute("INSERT INTO outbox(action, payload, connector, local_id, created_at) "
                           "VALUES(?, ?, ?, ?, ?)",
                           (action, json.dumps(payload, separators=(",", ":")), connector, local_id,
                            (created_at or datetime.now().astimezone()).isoformat()))
        return int(cur.lastrowid)

    def head(self) -> OutboxMessage | None:
        """The oldest queued message (transaction messages are delivered strictly in order)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT seq, action, payload, connector, local_id, attempts FROM outbox "
                               "ORDER BY seq LIMIT 1").fetchone()
        if row is None:
            return None
        return OutboxMessage(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])

    def count(self) -> int:
        with self.db.transaction() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def delivered(self, seq: int, transaction_id: tuple[int, int, int] | None = None) -> None:
        """Drop a delivered message; for a StartTransaction, store the CSMS's id in the same commit."""
        with self.db.transaction() as conn:
            if transaction_id is not None:
                connector, local_id, tx_id = transaction_id
                conn.execute("UPDATE transactions SET transaction_id = ? WHERE connector = ? AND local_id = ?",
                             (tx_id, connector, local_id))
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def attempted(self, seq: int) -> int:
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))
            row = conn.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return 0 if row is None else int(row[0])
