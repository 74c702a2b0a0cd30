"""The key/value settings: small durable facts that need no table of their own.

OCPP configuration keys the CSMS changed (``ocpp16.<Key>``), each connector's session snapshot (``session.<n>``)
and who holds it inoperative (``availability.<n>``), agent flags (``agent.*``), the outbox's counters
(``storage.outbox.*``) and the Local Authorization List's version. One place for the SQL, so that the stores
that keep a counter or a version next to their rows (the outbox, the local list) write it the same way —
inside their own commit, since :meth:`Database.transaction` blocks nest.
"""

from __future__ import annotations

from firmware.storage.database import Database


class Settings:
    """The ``settings`` table of one database. Every call is its own commit, or joins the caller's."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Every setting whose key starts with ``prefix`` (taken literally: ``_`` and ``%`` match only themselves)."""
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT key, value FROM settings WHERE key LIKE ? ESCAPE '\\'",
                                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",)
                                ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def put(self, key: str, value: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def delete(self, key: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM settings WHERE key = ?", (key,))

    def bump(self, key: str, by: int = 1) -> int:
        """Add ``by`` to a counter (absent: 0) and return the new total."""
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE "
                         "SET value = CAST(value AS INTEGER) + ?", (key, str(by), by))
            return int(conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()[0])
