"""The SQLite database: migrations, durability settings, loud failure on corruption."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from firmware.storage.database import MIGRATIONS, Database, StorageError, quarantine
from firmware.storage.settings import Settings


def test_fresh_database_is_migrated_and_uses_wal(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    assert db.version == len(MIGRATIONS)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    settings = Settings(db)
    settings.put("a.b", "1")
    settings.put("a.b", "2")
    settings.put("a_c", "3")
    db.close()
    again = Settings(Database(tmp_path / "agent.db"))
    assert again.get("a.b") == "2"
    assert again.with_prefix("a.") == {"a.b": "2"}  # '_' and '%' in a prefix are literal


def test_later_migration_keeps_existing_rows(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db", MIGRATIONS[:1])
    Settings(db).put("k", "v")
    db.close()

    def v2(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE extra (x INTEGER)")

    db = Database(tmp_path / "agent.db", [*MIGRATIONS[:1], v2])
    assert db.version == 2 and Settings(db).get("k") == "v"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    db.conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    db.close()
    with pytest.raises(StorageError, match="newer than this agent knows"):
        Database(tmp_path / "agent.db")


def test_corrupt_file_is_reported_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match=r"agent.db: database unreadable .* left in place"):
        Database(path)
    assert path.read_bytes().startswith(b"this is not")  # never replaced silently
    moved = quarantine(path)
    assert moved.exists() and not path.exists()
    assert Database(path).version == len(MIGRATIONS)


def test_storage_failures_are_reported_wherever_they_happen_but_not_our_own_mistakes(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    failures: list[sqlite3.Error] = []
    db.on_failure = failures.append
    with pytest.raises(sqlite3.IntegrityError), db.transaction() as conn:  # a statement we got wrong
        conn.execute("INSERT INTO settings(key, value) VALUES('k', NULL)")
    assert failures == []
    pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
    db.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    with pytest.raises(sqlite3.OperationalError, match="full"):
        Settings(db).put("big", "x" * 100_000)
    assert len(failures) == 1 and "full" in str(failures[0])
    assert not db.in_transaction and not db.conn.in_transaction  # rolled back: the next commit can be tried
    assert Settings(db).get("big") is None


def test_settings_counters_and_literal_prefixes(tmp_path: Path) -> None:
    settings = Settings(Database(tmp_path / "agent.db"))
    assert settings.bump("storage.outbox.thinned", 3) == 3 and settings.bump("storage.outbox.thinned") == 4
    settings.put("a\\b.c", "1")
    settings.put("axb.c", "2")
    assert settings.with_prefix("a\\b") == {"a\\b.c": "1"}  # the escape character is literal too
