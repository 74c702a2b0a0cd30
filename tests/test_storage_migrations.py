"""Databases written by earlier versions of the agent open with the current code, lose nothing that was queued,
and their queue is delivered; a damaged database stops the agent with exit 74 and is left in place.

The old databases are written here with the SQL the old code ran (schema and rows as of that version), not
with today's helpers, so a migration that drifts from what is really on chargers fails here.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from firmware.exitcodes import ExitCode
from firmware.storage.database import MIGRATIONS, Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from firmware.storage.settings import Settings
from tests.station import CP_ID, Station

# --- what the agent of schema version 1 and 2 wrote ------------------------------------------------------

V1_SCHEMA = ["CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)"]
V2_SCHEMA = [*V1_SCHEMA, """
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
        )""", """
        CREATE TABLE outbox (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            action     TEXT    NOT NULL,
            payload    TEXT    NOT NULL,       -- JSON; transactionId filled in when sent
            connector  INTEGER,                -- with local_id: the transaction the message belongs to
            local_id   INTEGER,
            attempts   INTEGER NOT NULL DEFAULT 0,
            created_at TEXT    NOT NULL
        )"""]

T_START, T_MV1, T_MV2, T_STOP, T_OPEN = ("2026-03-01T10:00:00.000Z", "2026-03-01T10:01:00.000Z",
                                         "2026-03-01T10:02:00.000Z", "2026-03-01T10:03:00.000Z",
                                         "2026-03-01T11:00:00.000Z")


def _create(path: Path, version: int, schema: list[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for ddl in schema:
        conn.execute(ddl)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def write_v1(path: Path) -> None:
    conn = _create(path, 1, V1_SCHEMA)
    conn.execute("INSERT INTO settings VALUES ('ocpp16.HeartbeatInterval', '120')")
    conn.execute("INSERT INTO settings VALUES ('agent.charge_point_inoperative', '0')")
    conn.close()


def _mv(connector: int, at: str, wh: int) -> str:
    return json.dumps({"connectorId": connector, "meterValue": [{"timestamp": at, "sampledValue": [
        {"value": str(wh), "context": "Sample.Periodic", "format": "Raw", "measurand": "Energy.Active.Import.Register",
         "location": "Outlet", "unit": "Wh"}]}]}, separators=(",", ":"))


def write_v2(path: Path) -> None:
    """Connector 1: a transaction started and stopped offline, nothing of it sent yet. Connector 2: a transaction
    the CSMS confirmed (id 900), still open, with a meter value queued — and no session snapshot (as after a
    crash of an agent that wrote the two apart)."""
    conn = _create(path, 2, V2_SCHEMA)
    conn.execute("INSERT INTO settings VALUES ('ocpp16.HeartbeatInterval', '120')")
    conn.execute("INSERT INTO transactions(connector, local_id, id_tag, meter_start_wh, started_at, stopped_at, "
                 "meter_stop_wh, stop_reason) VALUES (1, 1, '04A1B2C3', 1000, ?, ?, 1500, 'Local')",
                 ("2026-03-01T10:00:00+00:00", "2026-03-01T10:03:00+00:00"))
    conn.execute("INSERT INTO transactions(connector, local_id, id_tag, meter_start_wh, started_at, transaction_id) "
                 "VALUES (2, 1, '04D5E6F7', 2000, '2026-03-01T10:30:00+00:00', 900)")
    rows = [
        ("StartTransaction", json.dumps({"connectorId": 1, "idTag": "04A1B2C3", "meterStart": 1000,
                                         "timestamp": T_START}, separators=(",", ":")), 1, 1),
        ("MeterValues", _mv(1, T_MV1, 1200), 1, 1),
        ("MeterValues", _mv(2, T_OPEN, 2100), 2, 1),
        ("MeterValues", _mv(1, T_MV2, 1400), 1, 1),
        ("StopTransaction", json.dumps({"meterStop": 1500, "timestamp": T_STOP, "reason": "Local",
                                        "idTag": "04A1B2C3"}, separators=(",", ":")), 1, 1),
    ]
    for action, payload, connector, local_id in rows:
        conn.execute("INSERT INTO outbox(action, payload, connector, local_id, created_at) VALUES (?, ?, ?, ?, ?)",
                     (action, payload, connector, local_id, "2026-03-01T10:00:00+00:00"))
    conn.close()


# --- migrations ---------------------------------------------------------------------------------------------

def test_version_1_database_is_migrated_keeping_its_settings(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    write_v1(path)
    db = Database(path)
    assert db.version == len(MIGRATIONS)
    assert Settings(db).get("ocpp16.HeartbeatInterval") == "120"
    assert Outbox(db).count() == 0 and Ledger(db).open_transactions() == []


def test_version_2_database_keeps_every_queued_message_in_order(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    write_v2(path)
    db = Database(path)
    assert db.version == len(MIGRATIONS)
    ledger = Ledger(db)
    queued = Outbox(db).peek()
    assert [(m.action, m.connector, m.local_id, m.attempts) for m in queued] == [
        ("StartTransaction", 1, 1, 0), ("MeterValues", 1, 1, 0), ("MeterValues", 2, 1, 0),
        ("MeterValues", 1, 1, 0), ("StopTransaction", 1, 1, 0)]
    assert queued[0].payload["meterStart"] == 1000 and queued[-1].payload["meterStop"] == 1500
    assert [(r.connector, r.local_id, r.transaction_id) for r in ledger.open_transactions()] == [(2, 1, "900")]
    assert ledger.next_local_id(1) == 2
    # migration 5 classified the periodic values as a cap may thin them (the v4 code read that from the payload)
    assert [m.thinnable for m in queued] == [False, True, True, True, False]


async def test_version_2_queue_is_delivered_by_the_current_agent(tmp_path: Path) -> None:
    write_v2(tmp_path / "agent.db")
    async with Station(tmp_path, connectors=2) as s:
        s.csms.behaviour.id_tags.accept("04A1B2C3", "04D5E6F7")
        await s.start_agent()
        await s.wait_until(lambda: len(s.calls("StopTransaction")) == 2, 10, "both StopTransactions")
        sent = [e for e in s.calls() if e.action in ("StartTransaction", "MeterValues", "StopTransaction")]
        start = sent[0]
        response = s.csms.transcript.response_to(start)
        assert response is not None
        tx_id = response.payload["transactionId"]
        assert [(e.action, e.payload.get("transactionId")) for e in sent] == [
            ("StartTransaction", None), ("MeterValues", tx_id), ("MeterValues", 900), ("MeterValues", tx_id),
            ("StopTransaction", tx_id), ("StopTransaction", 900)]
        assert [e.payload["meterValue"][0]["timestamp"] for e in sent if e.action == "MeterValues"] == [
            T_MV1, T_OPEN, T_MV2]
        # connector 2's transaction had no session left to end it: the agent stopped it (PowerLoss) itself,
        # with a meter value it can vouch for (not below its start)
        orphan = sent[-1].payload
        assert orphan["reason"] == "PowerLoss" and orphan["meterStop"] >= 2000
        assert s.csms.state(CP_ID).transactions[tx_id].stop_count == 1


# --- a damaged database ---------------------------------------------------------------------------------------

def _config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f'[charge_point]\nid = "CP-1"\n\n[storage]\ndir = "{tmp_path}"\n\n'
                      '[[connectors]]\nid = 1\nboard = { driver = "ioboard", port = "/dev/evse-no-such-port" }\n')
    return config


def _run_agent(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=30)


def test_unreadable_database_stops_the_agent_with_exit_74_and_is_kept(tmp_path: Path) -> None:
    damaged = b"SQLite format 3\x00" + b"\xff" * 5000  # a header, then garbage
    (tmp_path / "agent.db").write_bytes(damaged)
    result = _run_agent(_config(tmp_path))
    assert result.returncode == ExitCode.STORAGE
    assert f"storage error: {tmp_path / 'agent.db'}" in result.stderr
    assert "left in place" in result.stderr
    assert (tmp_path / "agent.db").read_bytes() == damaged  # never replaced by an empty one


def test_database_failing_its_integrity_check_stops_the_agent_with_exit_74(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = Database(path)
    log = Outbox(db)
    for i in range(300):  # a few pages of queued messages
        log.queue("MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": str(i), "sampledValue": []}]}, 1, 1)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page = 4096
    last = len(data) // page - 1  # a leaf page of the outbox
    assert last > 4 and data[last * page] == 13  # 13: table B-tree leaf
    data[last * page:last * page + 12] = b"\xff" * 12  # its page header overwritten (bit rot, a torn write)
    path.write_bytes(bytes(data))
    result = _run_agent(_config(tmp_path))
    assert result.returncode == ExitCode.STORAGE, result.stderr
    assert str(path) in result.stderr
    assert path.read_bytes() == bytes(data)
