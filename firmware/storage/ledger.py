"""Billing records: one row per transaction, whatever protocol reports it.

A transaction is keyed by (connector, local id): the local id is the session machine's, known at once; the
CSMS's transaction id arrives later (possibly much later, after an offline period) and is kept as text — OCPP
2.0.1's is a string, 1.6's integer is stored as its decimal text and turned back by the 1.6 adapter.

The ledger writes nothing on its own: a start or stop is recorded inside the commit that also queues its message
(the adapter opens it, or joins the connector's event commit — :meth:`Database.transaction` blocks nest), so a
power cut leaves both or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from firmware.storage.database import Database


@dataclass(frozen=True)
class TransactionRecord:
    connector: int
    local_id: int
    id_token: str
    meter_start_wh: int
    started_at: str  # ISO 8601, as recorded
    transaction_id: str | None  # the CSMS's; None until it answered the start
    stopped_at: str | None
    meter_stop_wh: int | None
    stop_reason: str | None


_COLUMNS = ("connector, local_id, id_token, meter_start_wh, started_at, transaction_id, stopped_at, meter_stop_wh, "
            "stop_reason")


class Ledger:
    """The transactions of this charge point, on disk."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, connector: int, local_id: int, id_token: str, meter_start_wh: int, started_at: datetime) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO transactions(connector, local_id, id_token, meter_start_wh, started_at) "
                         "VALUES(?, ?, ?, ?, ?)", (connector, local_id, id_token, meter_start_wh,
                                                   started_at.isoformat()))

    def stop(self, connector: int, local_id: int, meter_stop_wh: int, stopped_at: datetime, reason: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE transactions SET stopped_at = ?, meter_stop_wh = ?, stop_reason = ? "
                         "WHERE connector = ? AND local_id = ?",
                         (stopped_at.isoformat(), meter_stop_wh, reason, connector, local_id))

    def set_transaction_id(self, connector: int, local_id: int, transaction_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE transactions SET transaction_id = ? WHERE connector = ? AND local_id = ?",
                         (transaction_id, connector, local_id))

    def get(self, connector: int, local_id: int) -> TransactionRecord | None:
        with self.db.read() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM transactions WHERE connector = ? AND local_id = ?",
                               (connector, local_id)).fetchone()
        return None if row is None else TransactionRecord(*row)

    def open_transactions(self) -> list[TransactionRecord]:
        with self.db.transaction() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM transactions WHERE stopped_at IS NULL "
                                "ORDER BY connector, local_id").fetchall()
        return [TransactionRecord(*r) for r in rows]

    def active_by_transaction_id(self, transaction_id: str) -> TransactionRecord | None:
        """The open transaction the CSMS knows as ``transaction_id`` (e.g. for a remote stop)."""
        with self.db.transaction() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM transactions WHERE transaction_id = ? "
                               "AND stopped_at IS NULL", (transaction_id,)).fetchone()
        return None if row is None else TransactionRecord(*row)

    def next_local_id(self, connector: int) -> int:
        """The first local id this connector has not used (for a session machine that had to start afresh)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT MAX(local_id) FROM transactions WHERE connector = ?", (connector,)).fetchone()
        return 1 if row is None or row[0] is None else int(row[0]) + 1
