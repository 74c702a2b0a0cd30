"""The ordered, durable outbox: messages for the CSMS that must not be lost, kept until the CSMS answered them.

Generic over (action, payload): the storage knows no protocol. What it keeps with each message:

* ``connector`` / ``local_id`` — the transaction it belongs to (``local_id`` NULL: none), so that an adapter can
  fill in the CSMS's transaction id when it is sent (:class:`~firmware.ocpp.delivery.OutboxAdapter`), and so that
  a cap thins per transaction;
* ``attempts`` / ``retry_at`` — how often the CSMS failed to process it and when it may go again;
* ``thinnable`` — whether a cap may drop it, decided by the adapter when it queues the message (OCPP 1.6:
  periodic meter values, and meter values of no transaction).

A message is written *before* anything is sent — in the same commit as the billing record it reports, when there
is one (:meth:`Database.transaction` blocks nest) — so a ``kill -9`` at any instant leaves either nothing or a
message the restarted agent delivers.

The outbox is bounded by the disk, not by a constant. An optional cap (``[storage] max_queued_messages``) protects
a small flash: once more messages are queued than the cap allows, *only* thinnable messages are dropped — those of
no transaction first, then every other one of the oldest transaction (its first and last kept). Everything else
is never dropped; if nothing is left to thin, the queue grows past the cap (logged). Every thinned or discarded
message is counted in the settings, so the counts survive restarts and show in the Diagnostics DataTransfer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from firmware.storage.database import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

#: Settings keys of the outbox counters (cumulative over the agent's life).
THINNED_KEY = "storage.outbox.thinned"
DISCARDED_KEY = "storage.outbox.discarded"


class QueuedMessage(NamedTuple):
    """A message to queue (a plain 5-tuple ``(action, payload, connector, local_id, created_at)`` is one too)."""

    action: str
    payload: dict[str, Any]
    connector: int | None = None
    local_id: int | None = None  # None: the message belongs to no transaction
    created_at: datetime | None = None  # None: now
    thinnable: bool = False  # a cap may drop it


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
    thinnable: bool = False

    @property
    def transaction_related(self) -> bool:
        return self.local_id is not None


@dataclass(frozen=True)
class OutboxStats:
    queued: int
    thinned: int  # messages dropped to stay within the cap, ever
    discarded: int  # messages given up (the CSMS kept failing them, or they could no longer be sent), ever
    max_queued: int | None


#: The adapter's judgement of a message as it is queued: why it could not be sent as it is (a bug of ours), or None.
QueueCheck = Callable[[QueuedMessage], str | None]


class Outbox:
    """Queued messages, in order, on disk."""

    def __init__(self, db: Database, max_queued: int | None = None, check: QueueCheck | None = None) -> None:
        """``check``: run on every message as it is queued, where a faulty one has its cause (the code that built
        it); the adapter's sending then need not check it again. A message it finds faulty is logged and queued
        all the same: billing data is never refused over a bug in building its message."""
        self.db = db
        self.max_queued = max_queued
        self.check = check
        self._settings = Settings(db)
        self._over_cap_logged = False

    # --- queueing -----------------------------------------------------------------------------------

    def queue(self, action: str, payload: dict[str, Any], connector: int | None = None,
              local_id: int | None = None, created_at: datetime | None = None, *, thinnable: bool = False) -> int:
        """Queue one message (its own commit, or the caller's); returns its sequence number."""
        with self.db.transaction() as conn:
            return self._append(conn, action, payload, connector, local_id, created_at, thinnable)

    def queue_many(self, messages: Iterable[QueuedMessage]) -> list[int]:
        """Queue several messages in one commit (one fsync): all of them or none."""
        with self.db.transaction() as conn:
            return [self._append(conn, *message) for message in messages]

    def _append(self, conn: sqlite3.Connection, action: str, payload: dict[str, Any], connector: int | None = None,
                local_id: int | None = None, created_at: datetime | None = None, thinnable: bool = False) -> int:
        cur = conn.execute("INSERT INTO outbox(action, payload, connector, local_id, created_at, thinnable) "
                           "VALUES(?, ?, ?, ?, ?, ?)",
                           (action, json.dumps(payload, separators=(",", ":")), connector, local_id,
                            (created_at or datetime.now().astimezone()).isoformat(), int(thinnable)))
        seq = int(cur.lastrowid or 0)
        if self.check is not None and (fault := self.check(QueuedMessage(action, payload, connector, local_id,
                                                                          created_at, thinnable))) is not None:
            log.error("queued message is faulty; the CSMS will judge it", extra={
                "action": action, "seq": seq, "connector": connector, "local_id": local_id, "fault": fault})
        if self.max_queued is not None:
            self._enforce_cap(conn, self.max_queued)
        return seq

    def _enforce_cap(self, conn: sqlite3.Connection, cap: int) -> None:
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

    def _thin(self, conn: sqlite3.Connection, queued: int) -> bool:
        """Drop every other thinnable message of the oldest group (connector, transaction) that has at least three
        (first and last kept). Groups without a transaction go first. Returns whether anything was dropped."""
        group = conn.execute(
            "SELECT connector, local_id, COUNT(*) AS n, MIN(seq) AS first FROM outbox WHERE thinnable "
            "GROUP BY connector, local_id HAVING n >= 3 ORDER BY local_id IS NOT NULL, first LIMIT 1").fetchone()
        if group is None:
            return False
        connector, local_id = group[0], group[1]
        seqs = [int(r[0]) for r in conn.execute(
            "SELECT seq FROM outbox WHERE thinnable AND connector IS ? AND local_id IS ? ORDER BY seq",
            (connector, local_id))]
        drop = seqs[1:-1:2]
        conn.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in drop])
        total = self._settings.bump(THINNED_KEY, len(drop))
        log.warning("outbox over its cap: thinned periodic meter values", extra={
            "connector": connector, "local_id": local_id, "dropped": len(drop), "kept": len(seqs) - len(drop),
            "queued": queued - len(drop), "max_queued_messages": self.max_queued, "thinned_total": total})
        return True

    # --- reading ------------------------------------------------------------------------------------

    def head(self) -> OutboxMessage | None:
        """The oldest queued message (messages are delivered strictly in order)."""
        messages = self.peek(1)
        return messages[0] if messages else None

    def peek(self, limit: int | None = None, after_seq: int = 0) -> list[OutboxMessage]:
        """Queued messages in order (all of them without ``limit``), starting after ``after_seq``."""
        out: list[OutboxMessage] = []
        while True:
            want = -1 if limit is None else limit - len(out)
            with self.db.read() as conn:
                rows = conn.execute("SELECT seq, action, payload, connector, local_id, attempts, created_at, "
                                    "retry_at, thinnable FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after_seq, want)).fetchall()
            damaged = []
            for seq, action, payload, connector, local_id, attempts, created_at, retry_at, thinnable in rows:
                after_seq = seq
                try:
                    decoded = json.loads(payload)
                except (ValueError, TypeError):
                    damaged.append((seq, action, connector, local_id))
                    continue
                out.append(OutboxMessage(seq, action, decoded, connector, local_id, attempts, created_at,
                                         retry_at, bool(thinnable)))
            for seq, action, connector, local_id in damaged:
                # a damaged row (bit rot the integrity check did not see) must not block the queue for ever
                total = self.discard(seq)
                log.error("unreadable queued message discarded", extra={
                    "seq": seq, "action": action, "connector": connector, "local_id": local_id,
                    "discarded_total": total})
            if not damaged or limit is None or not rows:
                return out

    def count(self, action: str | None = None) -> int:
        """Messages queued (of one ``action``)."""
        with self.db.read() as conn:
            if action is None:
                return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return int(conn.execute("SELECT COUNT(*) FROM outbox WHERE action = ?", (action,)).fetchone()[0])

    def stats(self) -> OutboxStats:
        with self.db.transaction():
            return OutboxStats(self.count(), int(self._settings.get(THINNED_KEY) or 0),
                               int(self._settings.get(DISCARDED_KEY) or 0), self.max_queued)

    # --- the CSMS's answers ---------------------------------------------------------------------------

    def delivered(self, seq: int, with_removal: Callable[[], None] | None = None) -> None:
        """Drop a delivered message.

        ``with_removal`` is a write the CSMS's answer implies (the 1.6 adapter stores the transaction id a
        StartTransaction.conf brings): it goes into the same commit, which is then durable — later messages need
        what it stores. A plain removal does not wait for the disk (``Database.transaction(durable=False)``): the
        CSMS has the message, and if a power loss undoes the removal it is sent again, as at-least-once delivery
        allows (docs/storage.md)."""
        with self.db.transaction(durable=with_removal is not None) as conn:
            if with_removal is not None:
                with_removal()
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def discard(self, seq: int) -> int:
        """Give a message up (the CSMS kept failing it, or it can no longer be sent); returns the total count."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            return self._settings.bump(DISCARDED_KEY)

    def attempted(self, seq: int, retry_at: float | None = None) -> int:
        """Count one failure of the CSMS to process the message and, in the same commit, when it may be sent
        again (UNIX seconds); returns the failures so far."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE outbox SET attempts = attempts + 1, retry_at = ? WHERE seq = ?", (retry_at, seq))
            row = conn.execute("SELECT attempts FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return 0 if row is None else int(row[0])
