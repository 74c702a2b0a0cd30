"""The agent's database across versions: a snapshot before a new slot first runs, and its restore on a rollback.

This module runs ON THE CONTROLLER as root with the standard library only (sent with :mod:`slots`, which calls it).

A new agent migrates the database when it first opens it (firmware/storage/database.py); an older agent refuses a
schema newer than it knows (exit 74, which systemd does not restart). So before a slot runs for the first time,
:func:`take_snapshot` copies the database with SQLite's online backup API (a consistent copy of a WAL database,
which a file copy is not), and a rollback to the slot that was active then calls :func:`restore`:

* the live schema is the one the snapshot has (the new agent added no migration): nothing to do, the older agent
  reads the live database as it is, and nothing is lost;
* the live schema is newer: the snapshot comes back, and what the new slot recorded that the older agent must not
  lose is carried into it — every billing record (``transactions``), every queued message (``outbox``) and the
  connectors' session snapshots (``settings`` ``session.N``, committed with them) — column by column, as far as
  the older schema has the columns. If it cannot be (a table is gone, a column the older agent requires has no
  value) the restore refuses and says why, and the caller does not roll back: an older agent on a database it
  cannot open would leave the charger dead. Everything else (configuration keys, the authorization cache, the
  local list, charging profiles) is as it was in the snapshot: what the new slot changed there is lost, and the
  CSMS learns it from the older versions it is told (the local list's version, the keys it reads).

The database the new slot left is kept beside the restored one (``agent.db.rolled-back-<stamp>``) for inspection.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

DB_NAME = "agent.db"
#: Tables carried back whole (projected on the older schema's columns): the billing data.
CARRIED_TABLES = ("transactions", "outbox")
#: Settings rows carried back with them: the connectors' session snapshots (firmware/charger/connector.py).
CARRIED_SETTINGS = "session.%"


class RestoreRefused(Exception):
    """What the new slot recorded cannot be carried into the older schema; the message says what and why."""


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _schema(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _owner_like(path: Path, like: os.stat_result) -> None:
    """Files we create beside the agent's database are the agent's, as the database is (we run as root)."""
    if os.geteuid() == 0:
        os.chown(path, like.st_uid, like.st_gid)
    os.chmod(path, like.st_mode & 0o777)


def _open_live(db: Path) -> sqlite3.Connection:
    """The live database, opened so that the -wal/-shm files SQLite may create stay the agent's."""
    st = db.stat()
    conn = sqlite3.connect(db, isolation_level=None)
    for suffix in ("-wal", "-shm"):
        side = Path(str(db) + suffix)
        if side.exists():
            _owner_like(side, st)
    return conn


def _backup(src: sqlite3.Connection, dest: Path) -> None:
    """``src`` into a new file ``dest`` (temp + rename, fsynced): complete or absent."""
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    out = sqlite3.connect(tmp)
    try:
        src.backup(out)
        out.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        out.close()
    _fsync(tmp)
    os.replace(tmp, dest)
    _fsync(dest.parent)


def take_snapshot(db: Path, dest: Path) -> dict[str, Any] | None:
    """Copy the database ``db`` to ``dest`` with the backup API; None when there is no database yet (a first
    install: nothing to lose)."""
    if not db.is_file():
        return None
    dest.parent.mkdir(parents=True, exist_ok=True)
    conn = _open_live(db)
    try:
        schema = _schema(conn)
        _backup(conn, dest)
    finally:
        conn.close()
    return {"path": str(dest), "schema": schema, "taken_at": _stamp(), "bytes": dest.stat().st_size}


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> dict[str, tuple[bool, bool]]:
    """Column -> (required: NOT NULL without a default, primary key)."""
    rows = conn.execute(f"PRAGMA {schema}.table_info({table})").fetchall()
    return {r[1]: (bool(r[3]) and r[4] is None, bool(r[5])) for r in rows}


def _tables(conn: sqlite3.Connection, schema: str) -> set[str]:
    rows = conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table'").fetchall()
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


def _carry(work: sqlite3.Connection) -> dict[str, Any]:
    """Into ``main`` (a copy of the snapshot), from ``live``: the carried tables and settings. Raises
    :class:`RestoreRefused`."""
    carried: dict[str, Any] = {"rows": {}, "columns_not_carried": [], "tables_not_carried": []}
    old_tables, new_tables = _tables(work, "main"), _tables(work, "live")
    for table in CARRIED_TABLES:
        if table not in old_tables:
            continue  # the older agent keeps none: nothing it could represent
        if table not in new_tables:
            raise RestoreRefused(f"the new agent's database has no table {table!r}: its records cannot be carried "
                                 "back to the older agent")
        old, new = _columns(work, "main", table), _columns(work, "live", table)
        missing = [c for c, (required, _) in old.items() if required and c not in new]
        if missing:
            raise RestoreRefused(f"table {table!r} of the new agent's database lacks column(s) "
                                 f"{', '.join(missing)} that the older agent requires: its records cannot be carried "
                                 "back")
        common = [c for c in old if c in new]
        carried["columns_not_carried"] += [f"{table}.{c}" for c in new if c not in old]
        names = ", ".join(common)
        work.execute(f"DELETE FROM main.{table}")
        work.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM live.{table}")
        carried["rows"][table] = work.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0]
    if "settings" in old_tables and "settings" in new_tables:
        work.execute("DELETE FROM main.settings WHERE key LIKE ?", (CARRIED_SETTINGS,))
        work.execute("INSERT INTO main.settings (key, value) SELECT key, value FROM live.settings WHERE key LIKE ?",
                     (CARRIED_SETTINGS,))
    for table in sorted(new_tables - old_tables):
        count = work.execute(f"SELECT count(*) FROM live.{table}").fetchone()[0]
        if count:
            carried["tables_not_carried"].append(f"{table} ({count} rows)")
    return carried


def restore(db: Path, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Put the database back to the schema of ``snapshot`` (from :func:`take_snapshot`), carrying the new slot's
    billing records into it; the database the new slot left is kept beside it. Call with the agent stopped.
    Raises :class:`RestoreRefused` (the live database untouched)."""
    snap = Path(snapshot["path"])
    if not db.is_file():
        raise RestoreRefused(f"{db} is missing: nothing to restore into (the snapshot {snap} is kept)")
    live = _open_live(db)
    try:
        live_schema = _schema(live)
        if live_schema == snapshot["schema"]:
            return {"restored": False, "detail": f"schema {live_schema} unchanged: the database is kept as it is"}
        if live_schema < snapshot["schema"]:
            raise RestoreRefused(f"the database's schema {live_schema} is older than the snapshot's "
                                 f"({snapshot['schema']}): it was not left by the slot being rolled back")
        live.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what is kept aside is one self-contained file
    finally:
        live.close()
    if not snap.is_file():
        raise RestoreRefused(f"the snapshot {snap} taken for this switch is missing")
    st = db.stat()
    work_path = db.with_name(f".{db.name}.restore")
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(str(work_path) + suffix).unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{snap}?mode=ro", uri=True)
    try:
        _backup(src, work_path)
    finally:
        src.close()
    work = sqlite3.connect(work_path, isolation_level=None)
    try:
        work.execute("ATTACH DATABASE ? AS live", (f"file:{db}?mode=ro",))
        work.execute("BEGIN IMMEDIATE")
        try:
            carried = _carry(work)
            work.execute("COMMIT")
        except sqlite3.Error as exc:
            work.execute("ROLLBACK")
            raise RestoreRefused(f"the new slot's records do not fit the older schema: {exc}") from None
        except RestoreRefused:
            work.execute("ROLLBACK")
            raise
        work.execute("DETACH DATABASE live")
        check = work.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise RestoreRefused(f"the restored database fails its integrity check ({check})")
    except RestoreRefused:
        work.close()
        work_path.unlink(missing_ok=True)
        raise
    work.close()
    _fsync(work_path)
    _owner_like(work_path, st)
    aside = db.with_name(f"{db.name}.rolled-back-{_stamp()}")
    for suffix in ("-wal", "-shm"):  # checkpointed and truncated above; stale ones must not meet the restored file
        Path(str(db) + suffix).unlink(missing_ok=True)
    os.link(db, aside)
    os.replace(work_path, db)
    _fsync(db.parent)
    return {"restored": True, "schema": snapshot["schema"], "from_schema": live_schema, "kept_aside": str(aside),
            **carried}


def open_transactions(db: Path) -> list[dict[str, Any]]:
    """The transactions the agent's database has open (what a stop of the agent would cut), for the technician's
    tool; none when there is no database or it cannot be read."""
    if not db.is_file():
        return []
    try:
        conn = _open_live(db)
        try:
            rows = conn.execute("SELECT connector, started_at, transaction_id FROM transactions "
                                "WHERE stopped_at IS NULL ORDER BY connector").fetchall()
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return []
    return [{"connector": r[0], "started_at": r[1], "transaction_id": r[2]} for r in rows]
