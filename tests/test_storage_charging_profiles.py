"""The installed charging profiles on disk (firmware/storage/charging_profiles.py): read back as written, a
replacement all or nothing, and both still there after the process is killed (kill -9) right after the call."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from firmware.storage.charging_profiles import ChargingProfileStore, StoredProfile
from firmware.storage.database import Database


def doc(pid: int, limit: float) -> dict[str, object]:
    return {"id": pid, "limit": limit}


def test_profiles_read_back_as_written_and_the_same_id_is_one_row(tmp_path: Path) -> None:
    store = ChargingProfileStore(Database(tmp_path / "agent.db"))
    store.save(StoredProfile(3, 0, None, doc(3, 32.0)))
    store.save(StoredProfile(1, 2, 7, doc(1, 16.0)))
    store.save(StoredProfile(3, 1, None, doc(3, 10.0)))  # same id: replaces its row
    assert store.load() == [StoredProfile(1, 2, 7, doc(1, 16.0)), StoredProfile(3, 1, None, doc(3, 10.0))]
    store.remove([1, 99])
    reopened = ChargingProfileStore(Database(tmp_path / "agent.db"))
    assert reopened.load() == [StoredProfile(3, 1, None, doc(3, 10.0))]


def test_a_replacement_is_all_or_nothing(tmp_path: Path) -> None:
    """The old profiles out and the new one in, in one commit: an insert that fails leaves the old set whole."""
    db = Database(tmp_path / "agent.db")
    store = ChargingProfileStore(db)
    store.save(StoredProfile(1, 0, None, doc(1, 16.0)))
    store.save(StoredProfile(2, 0, None, doc(2, 16.0)))
    db.conn.execute("CREATE TRIGGER refuse_99 BEFORE INSERT ON charging_profiles WHEN NEW.profile_id = 99 "
                    "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    with pytest.raises(sqlite3.IntegrityError, match="disk trouble"):
        store.save(StoredProfile(99, 0, None, doc(99, 6.0)), removed=[1, 2])
    assert [p.profile_id for p in store.load()] == [1, 2]


def test_a_document_that_is_not_json_comes_back_as_text(tmp_path: Path) -> None:
    db = Database(tmp_path / "agent.db")
    db.conn.execute("INSERT INTO charging_profiles VALUES (5, 1, NULL, '{\"id\": 5, \"li')")
    assert ChargingProfileStore(db).load() == [StoredProfile(5, 1, None, '{"id": 5, "li')]


def test_a_replacement_survives_kill_9_and_the_replaced_profile_never_comes_back(tmp_path: Path) -> None:
    """libocpp #1051: a profile replaced before a power cut was back after the restart."""
    path = tmp_path / "agent.db"
    script = textwrap.dedent(f"""
        import os, signal
        from firmware.storage.charging_profiles import ChargingProfileStore, StoredProfile
        from firmware.storage.database import Database
        store = ChargingProfileStore(Database({str(path)!r}))
        store.save(StoredProfile(1, 0, None, {{"id": 1}}))
        store.save(StoredProfile(2, 0, None, {{"id": 2}}), removed=[1])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == -9, result.stderr
    assert ChargingProfileStore(Database(path)).load() == [StoredProfile(2, 0, None, {"id": 2})]
