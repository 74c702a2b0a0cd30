"""The agent's database across slot versions (firmware/maintenance/db_rollback.py, through slots.py):
a snapshot before a new slot first runs, and on a switch back the snapshot restored with what the new slot recorded
carried into it — or the switch refused when that cannot be done. The "new agent" here is today's storage code with
one more migration (a real schema change: a new column on the outbox and transactions, a new table); the "older
agent" is today's code, which refuses the newer schema (exit 74 in the agent) and must open the restored one.
End to end with bundles, a failed health check and the older agent delivering: tests/test_flash.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from firmware.maintenance import db_rollback, slots
from firmware.storage.database import MIGRATIONS, Database, StorageError
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from firmware.storage.settings import Settings

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _v_next(conn: sqlite3.Connection) -> None:
    """What a newer agent might add: a NOT NULL column with a default, a column without, and a table of its own."""
    conn.execute("ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE transactions ADD COLUMN tariff TEXT")
    conn.execute("CREATE TABLE firmware_jobs (id INTEGER PRIMARY KEY, state TEXT NOT NULL)")


NEWER = [*MIGRATIONS, _v_next]


def make_root(tmp: Path) -> Path:
    """A controller root with two installed slots (manifests only: nothing is run here), slot a active."""
    root = tmp / "controller"
    state = root / "var/lib/evse-agent"
    (root / "etc/evse-agent").mkdir(parents=True)
    (root / "etc/evse-agent/agent.toml").write_text(f'[storage]\ndir = "{state}"\n')
    for n, slot in enumerate(slots.SLOTS):
        (root / "opt/evse-agent/slots" / slot).mkdir(parents=True)
        (root / "opt/evse-agent/slots" / slot / "manifest.json").write_text(json.dumps({"version": f"1.{n}.0"}))
    os.symlink("slots/a", root / "opt/evse-agent/current")
    (root / "opt/evse-agent/state.json").write_text(json.dumps(
        {"slots": {"a": {"version": "1.0.0", "activated_at": "2026-11-01T00:00:00Z"},
                   "b": {"version": "1.1.0"}}}))  # b: freshly installed, never run
    return root


def older_agent_records(db_path: Path) -> None:
    db = Database(db_path)
    Ledger(db).start(1, 1, "OLD-TAG", 1000, T0)
    Ledger(db).stop(1, 1, 2000, T0, "Local")
    Outbox(db).queue("StopTransaction", {"meterStop": 2000}, 1, 1)
    Settings(db).put("session.1", '{"old": true}')
    Settings(db).put("ocpp.key.HeartbeatInterval", "300")
    db.close()


def test_switch_back_restores_the_snapshot_and_carries_the_new_slots_records(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    db_path = slots.database_path(str(root))
    older_agent_records(db_path)

    r = slots.activate(str(root), "b")  # first run of slot b: the database is snapshotted first
    assert r["database"]["snapshot"]["schema"] == len(MIGRATIONS)
    assert (root / "opt/evse-agent/snapshots/before-b.db").is_file()

    new = Database(db_path, NEWER)  # the new agent migrates and records
    assert new.version == len(MIGRATIONS) + 1
    Outbox(new).delivered(Outbox(new).head().seq)  # type: ignore[union-attr]  # the old stop, delivered by it
    Ledger(new).start(2, 1, "NEW-TAG", 5000, T0)
    Outbox(new).queue("StartTransaction", {"idTag": "NEW-TAG", "meterStart": 5000}, 2, 1)
    Outbox(new).queue("MeterValues", {"connectorId": 2}, 2, 1, thinnable=True)
    Settings(new).put("session.2", '{"new": true}')
    Settings(new).put("ocpp.key.HeartbeatInterval", "60")
    with new.transaction() as conn:
        conn.execute("UPDATE transactions SET tariff = 'night' WHERE connector = 2")
        conn.execute("INSERT INTO firmware_jobs (state) VALUES ('x')")
    new.close()
    with pytest.raises(StorageError, match="newer than this agent knows"):
        Database(db_path)  # what the older agent would do with it: exit 74, and systemd leaves it dead

    r = slots.activate(str(root), "a", "rolled back")
    restore = r["database"]["restore"]
    assert restore["restored"] and restore["schema"] == len(MIGRATIONS)
    assert restore["rows"] == {"transactions": 2, "outbox": 2}
    assert "transactions.tariff" in restore["columns_not_carried"] and "outbox.priority" in restore[
        "columns_not_carried"]
    assert restore["tables_not_carried"] == ["firmware_jobs (1 rows)"]
    assert Path(restore["kept_aside"]).is_file()

    old = Database(db_path)  # the older agent opens it, and finds what the new one recorded
    assert old.version == len(MIGRATIONS)
    assert [(m.action, m.payload) for m in Outbox(old).peek()] == [
        ("StartTransaction", {"idTag": "NEW-TAG", "meterStart": 5000}), ("MeterValues", {"connectorId": 2})]
    assert Outbox(old).peek()[1].thinnable
    assert Ledger(old).get(2, 1).id_token == "NEW-TAG"  # type: ignore[union-attr]
    assert Ledger(old).get(1, 1).meter_stop_wh == 2000  # type: ignore[union-attr]
    assert Settings(old).get("session.2") == '{"new": true}'
    assert Settings(old).get("ocpp.key.HeartbeatInterval") == "300"  # the snapshot's: not billing data
    Outbox(old).queue("StopTransaction", {"meterStop": 6000}, 2, 1)  # and goes on in order after them
    assert [m.action for m in Outbox(old).peek()][-1] == "StopTransaction"
    old.close()
    history = slots.info(str(root))["history"]
    assert "restored schema" in history[-1]["database"]
    state = json.loads((root / "opt/evse-agent/state.json").read_text())
    assert "activated_at" not in state["slots"]["b"]  # switched to again, b runs (and migrates) as if first


def test_switch_back_without_a_schema_change_keeps_the_database(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    db_path = slots.database_path(str(root))
    older_agent_records(db_path)
    slots.activate(str(root), "b")
    same = Database(db_path)
    Settings(same).put("ocpp.key.HeartbeatInterval", "60")
    same.close()
    r = slots.activate(str(root), "a", "rolled back")
    assert r["database"]["restore"]["restored"] is False
    db = Database(db_path)
    assert Settings(db).get("ocpp.key.HeartbeatInterval") == "60"  # nothing lost at all
    db.close()


def _drop_required_column(conn: sqlite3.Connection) -> None:
    """A newer agent that renamed the outbox's ``action`` (the older agent requires it)."""
    conn.execute("ALTER TABLE outbox RENAME COLUMN action TO kind")


def test_a_restore_that_would_lose_records_is_refused_and_the_new_slot_stays(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    db_path = slots.database_path(str(root))
    older_agent_records(db_path)
    slots.activate(str(root), "b")
    new = Database(db_path, [*MIGRATIONS, _drop_required_column])
    new.close()
    answer = slots.call("activate", {"root": str(root), "slot": "a", "reason": "rolled back"})
    assert answer["ok"] is False and answer["kind"] == "refused"
    assert "lacks column(s) action that the older agent requires" in answer["error"]
    assert slots.active_slot(str(root)) == "b"
    assert Database(db_path, [*MIGRATIONS, _drop_required_column]).version == len(MIGRATIONS) + 1  # untouched
    assert slots.info(str(root))["history"][-1]["event"] == "switch refused"


def test_first_install_has_no_database_to_snapshot_and_a_later_install_replaces_the_snapshot(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert slots.activate(str(root), "b")["database"] == {"snapshot": None}
    older_agent_records(slots.database_path(str(root)))
    state = json.loads((root / "opt/evse-agent/state.json").read_text())
    state["slots"]["a"] = {"version": "1.2.0"}  # a new install into slot a
    (root / "opt/evse-agent/state.json").write_text(json.dumps(state))
    assert slots.activate(str(root), "a")["database"]["snapshot"]["schema"] == len(MIGRATIONS)
    assert sorted(p.name for p in (root / "opt/evse-agent/snapshots").iterdir()) == ["before-a.db"]


def test_snapshot_of_a_live_wal_database_is_consistent(tmp_path: Path) -> None:
    """The backup API copies what a running agent committed, WAL included (a file copy of agent.db would not)."""
    db_path = tmp_path / "agent.db"
    live = Database(db_path)
    for n in range(50):
        Outbox(live).queue("MeterValues", {"n": n})
    assert Path(str(db_path) + "-wal").stat().st_size > 0  # committed, still in the WAL
    taken = db_rollback.take_snapshot(db_path, tmp_path / "snap.db")
    assert taken is not None
    conn = sqlite3.connect(tmp_path / "snap.db")
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 50
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    live.close()


def test_the_tool_refuses_to_stop_an_agent_with_a_running_transaction_unless_forced(tmp_path: Path) -> None:
    """``flash`` and ``commission`` on a live controller stop or restart the agent: slots.info reads the open
    transactions from the agent's database, and the tool refuses, saying what runs (tools/flashing/cli.py)."""
    from tools.flashing.cli import Fail, refuse_if_charging

    root = make_root(tmp_path)
    db = Database(slots.database_path(str(root)))
    Ledger(db).start(2, 1, "TAG", 1000, T0)
    Ledger(db).set_transaction_id(2, 1, "42")
    Ledger(db).start(1, 1, "DONE", 1000, T0)
    Ledger(db).stop(1, 1, 2000, T0, "Local")
    db.close()
    info = slots.info(str(root))
    assert info["open_transactions"] == [{"connector": 2, "started_at": T0.isoformat(), "transaction_id": "42"}]
    with pytest.raises(Fail, match=r"a transaction is running: connector 2 \(transaction 42 since 2026-12-01") as e:
        refuse_if_charging(info, False, "flash")
    assert "flash would stop the agent and cut it" in str(e.value) and "--force" in str(e.value)
    refuse_if_charging(info, True, "flash")  # forced: goes on
    refuse_if_charging(slots.info(str(make_root(tmp_path / "other"))), False, "commission")  # no database: nothing
