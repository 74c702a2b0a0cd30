"""The agent's SQLite database: WAL, full fsync, versioned migrations, corruption handled loudly.

What lives in it is kept by the stores beside this module: ``settings`` (key/value), ``ledger`` (billing
records), ``outbox`` (messages not yet delivered), ``auth_stores`` (Authorization Cache, Local Authorization List),
``charging_profiles`` (smart charging).

Why SQLite: one file, transactional, survives ``kill -9`` at any instant when used with WAL and
``synchronous=FULL`` (a commit that returned is on disk). Migrations only ever add or convert: a migration that
would drop unsent data does not belong here.

A database that cannot be opened or fails its integrity check is never replaced silently by an
empty one: it is moved aside (kept for forensics) only when the caller explicitly asks for a fresh
start, otherwise :class:`StorageError` says what is wrong and where the file is.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

Migration = Callable[[sqlite3.Connection], None]


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _v2(conn: sqlite3.Connection) -> None:
    """Transactions and the outbox of transaction-related messages (billing data: never dropped)."""
    conn.execute("""
        CREATE TABLE transactions (
            connector      INTEGER NOT NULL,
            local_id       INTEGER NOT NULL,
            id_tag         TEXT    NOT NULL,
            meter_start_wh INTEGER NOT NULL,
            started_at     TEXT    NOT NULL,
            transaction_id INTEGER,            -- assigned by the CSMS; NULL until StartTransaction.conf
            stopped_at     TEXT,
            meter_stop_wh  INTEGER,
            stop_reason    TEXT,
            PRIMARY KEY (connector, local_id)
        )""")
    conn.execute("""
        CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            action     TEXT    NOT NULL,
            payload    TEXT    NOT NULL,       -- JSON; transactionId filled in when sent
            connector  INTEGER,                -- with local_id: the transaction the message belongs to
            local_id   INTEGER,
            attempts   INTEGER NOT NULL DEFAULT 0,
            created_at TEXT    NOT NULL
        )""")


def _v3(conn: sqlite3.Connection) -> None:
    """Authorization Cache and Local Authorization List (OCPP 1.6 §3.5; firmware/storage/auth_stores.py). ``key``
    is the casefolded id (ids are case-insensitive), ``expiry`` UNIX seconds, ``used`` the cache's LRU counter."""
    conn.execute("""
        CREATE TABLE auth_cache (
            key           TEXT    PRIMARY KEY,
            id_tag        TEXT    NOT NULL,
            status        TEXT    NOT NULL,
            expiry        REAL,
            parent_id_tag TEXT,
            used          INTEGER NOT NULL
        )""")
    conn.execute("CREATE INDEX auth_cache_used ON auth_cache(used)")
    conn.execute("""
        CREATE TABLE local_auth_list (
            key           TEXT    PRIMARY KEY,
            id_tag        TEXT    NOT NULL,
            status        TEXT    NOT NULL,
            expiry        REAL,
            parent_id_tag TEXT
        )""")


def _v4(conn: sqlite3.Connection) -> None:
    """When a message the CSMS failed to process may be sent again (UNIX seconds; NULL: now), so that a restart
    does not cut the TransactionMessageRetryInterval wait short."""
    conn.execute("ALTER TABLE outbox ADD COLUMN retry_at REAL")


def _v5(conn: sqlite3.Connection) -> None:
    """One shape for every OCPP version (issue 10):

    * ``transactions.transaction_id`` becomes TEXT — OCPP 2.0.1's transaction id is a string; 1.6's integers
      become their decimal text (the 1.6 adapter turns them back with ``int()``) — and ``id_tag`` becomes
      ``id_token``. SQLite cannot change a column's type, so the table is rebuilt: created, copied, checked,
      dropped, renamed, all inside this migration's transaction (all of it or none).
    * ``outbox.thinnable``: whether a cap may drop the message, decided by the adapter that queues it instead of
      read from 1.6 payload paths by the storage. Rows already queued are classified as the v4 code did it:
      MeterValues of no transaction, or whose first sampled value is periodic (a payload that is not JSON stays
      0: the outbox discards it when it reaches the head).
    """
    conn.execute("""
        CREATE TABLE transactions_v5 (
            connector      INTEGER NOT NULL,
            local_id       INTEGER NOT NULL,   -- the session machine's number, per connector
            id_token       TEXT    NOT NULL,
            meter_start_wh INTEGER NOT NULL,
            started_at     TEXT    NOT NULL,
            transaction_id TEXT,               -- assigned by the CSMS; NULL until it answered the start
            stopped_at     TEXT,
            meter_stop_wh  INTEGER,
            stop_reason    TEXT,
            PRIMARY KEY (connector, local_id)
        )""")
    conn.execute("INSERT INTO transactions_v5 SELECT connector, local_id, id_tag, meter_start_wh, started_at, "
                 "CAST(transaction_id AS TEXT), stopped_at, meter_stop_wh, stop_reason FROM transactions")
    conn.execute("DROP TABLE transactions")
    conn.execute("ALTER TABLE transactions_v5 RENAME TO transactions")
    conn.execute("ALTER TABLE outbox ADD COLUMN thinnable INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE outbox SET thinnable = 1 WHERE action = 'MeterValues' AND (local_id IS NULL OR CASE "
                 "WHEN json_valid(payload) THEN json_extract(payload, '$.meterValue[0].sampledValue[0].context') "
                 "END = 'Sample.Periodic')")


def _v6(conn: sqlite3.Connection) -> None:
    """Installed charging profiles (smart charging; firmware/storage/charging_profiles.py): one row per profile, the
    profile itself as JSON (the charger layer's form, whatever protocol delivered it)."""
    conn.execute("""
        CREATE TABLE charging_profiles (
            profile_id     INTEGER PRIMARY KEY,  -- unique among installed profiles (the same id replaces)
            connector      INTEGER NOT NULL,     -- 0: the whole charger
            transaction_local_id INTEGER,        -- a TxProfile's transaction: the connector's local id
            profile        TEXT    NOT NULL      -- JSON
        )""")


#: Schema versions in order; index + 1 is the version number. Append, never edit or remove.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6]


class StorageError(Exception):
    """The database cannot be used; the message says why and where the file is."""


def is_storage_failure(exc: BaseException) -> bool:
    """The database itself failed (disk full, I/O error, corruption found late, locked), as opposed to a
    statement our code got wrong (constraint, misuse), which says nothing about the file."""
    return (isinstance(exc, sqlite3.DatabaseError)
            and not isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError))


class Database:
    """A connection to the agent's database, migrated to the latest schema on open.

    Thread-safe by serialization: the agent calls it from one event loop; helper threads (if any)
    go through the same lock.

    ``on_failure`` (set by the agent) is called with every storage failure of a write, wherever it
    happens — an event's commit, the delivery worker, a configuration change, the authorization cache
    — before the exception propagates: without a working database no billing data can be kept, so the
    agent stops with exit code 74 instead of carrying on in a loop of failures.
    """

    def __init__(self, path: str | Path, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        self.on_failure: Callable[[sqlite3.Error], None] | None = None
        self._lock = threading.RLock()
        self._depth = 0  # nesting of transaction() blocks (the lock makes it per thread)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create the database's folder ({exc})") from exc
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            result = self.conn.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: database unreadable ({exc}); the file was left in place "
                               "for inspection — move it away to start with an empty database") from exc
        if result is None or result[0] != "ok":
            raise StorageError(f"{self.path}: integrity check failed ({result and result[0]}); the file was "
                               "left in place for inspection — move it away to start with an empty database")
        self._migrate(migrations)

    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: Sequence[Migration]) -> None:
        current = self.version
        if current > len(migrations):
            raise StorageError(f"{self.path}: schema version {current} is newer than this agent knows "
                               f"({len(migrations)}); refusing to touch it (downgrade?)")
        for number in range(current + 1, len(migrations) + 1):
            with self.transaction() as conn:
                migrations[number - 1](conn)
                conn.execute(f"PRAGMA user_version = {number}")
            log.info("database migrated", extra={"db": str(self.path), "version": number})

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; rolled back on any exception. Durable once the outermost block exits.

        Nested blocks join the outer one, so that callers can make several writes atomic together
        (the connector commits a session snapshot and the transaction records it implies as one unit:
        a power cut leaves both or neither).

        ``durable=False`` commits without waiting for the disk (``synchronous=NORMAL`` for this commit): it
        survives a crash or ``kill -9`` of the process, and the next durable commit makes it durable too, but a
        power loss of the whole board before then may undo it — WAL keeps the order, so what is undone is a
        tail of the most recent such commits, never a hole. Only for writes that may be redone: removing a
        message the CSMS has already answered (undone, it is sent again: at-least-once delivery)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            try:
                if not durable:
                    self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._restore_durability(durable)
                self._report(exc)
                raise
            self._depth = 1
            try:
                yield self.conn
                self._depth = 0
                self.conn.execute("COMMIT")
            except BaseException as exc:
                self._depth = 0
                if self.conn.in_transaction:
                    with suppress(sqlite3.Error):  # the failure that brought us here is the one to report
                        self.conn.execute("ROLLBACK")
                self._report(exc)
                raise
            finally:
                self._restore_durability(durable)

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """For reads only: no BEGIN IMMEDIATE … COMMIT around them, which takes the write lock and costs two more
        statements (a third of the statements of delivering one queued message). In autocommit mode each SELECT
        reads one consistent snapshot; use :meth:`transaction` where several must agree. Joins an outer block."""
        with self._lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                self._report(exc)
                raise

    def _restore_durability(self, durable: bool) -> None:
        if not durable:
            with suppress(sqlite3.Error):  # a failing database is reported by the statement that failed
                self.conn.execute("PRAGMA synchronous=FULL")

    def _report(self, exc: BaseException) -> None:
        if self.on_failure is not None and isinstance(exc, sqlite3.Error) and is_storage_failure(exc):
            self.on_failure(exc)

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def quarantine(path: str | Path) -> Path:
    """Move a damaged database (and its WAL/SHM) aside, keeping it; returns the new name."""
    src = Path(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dst = src.with_name(f"{src.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(src) + suffix)
        if part.exists():
            part.rename(Path(str(dst) + suffix))
    return dst
