"""A database the schema-v4 agent wrote (``tests/fixtures/agent-v4.db``, made by ``make_v4_fixture.py`` with the v4
code) opens with the current code: migrated to the current schema with every row kept (the CSMS's transaction ids
as text), read back through the ledger, the outbox, the settings and the authorization stores, and delivered by
an agent process to the simulated CSMS in order, with the integer transactionIds OCPP 1.6 wants.

The fixture is a two-connector charger's; the agent started on it here has one connector (connector 2 removed
from the configuration), so it also has to close connector 2's open transaction by itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from firmware.ocpp.delivery import OutboxDelivery, RetryPolicy
from firmware.ocpp.v16.configuration import ConfigurationKeys
from firmware.ocpp.v16.transactions import TransactionMessages
from firmware.session import SessionConfig, SessionMachine
from firmware.session.events import AuthStatus
from firmware.storage.auth_stores import LIST_VERSION_KEY, AuthorizationCache, IdTagInfo, LocalAuthorizationList
from firmware.storage.database import MIGRATIONS, Database
from firmware.storage.ledger import Ledger, TransactionRecord
from firmware.storage.outbox import DISCARDED_KEY, Outbox
from firmware.storage.settings import Settings
from tests.station import CP_ID, Station

FIXTURE = Path(__file__).parent / "fixtures" / "agent-v4.db"
CARD_1, CARD_2 = "04A1B2C3", "04D5E6F7"


def at(hh_mm: str) -> str:
    return f"2026-03-01T{hh_mm}:00.000Z"


def iso(hh_mm: str) -> str:
    return f"2026-03-01T{hh_mm}:00+00:00"


#: The queue as the v4 agent left it: (action, connector, local_id, attempts, meter value time, context,
#: thinnable as the v4 code's cap judged it).
QUEUED = [
    ("MeterValues", 1, 2, 1, "10:31", "Sample.Periodic", True),  # failed once: attempts and retry_at set
    ("MeterValues", 1, 2, 0, "10:45", "Sample.Clock", False),  # clock-aligned of a transaction: never thinned
    ("MeterValues", None, None, 0, "10:45", "Sample.Clock", True),  # of idle connector 2: no transaction
    ("StartTransaction", 2, 1, 0, None, None, False),  # started offline: no CSMS id yet
    ("MeterValues", 1, 2, 0, "11:00", "Sample.Periodic", True),
    ("MeterValues", 2, 1, 0, "11:00", "Sample.Periodic", True),
    ("MeterValues", 1, 2, 0, "11:00", "Sample.Clock", False),
    ("MeterValues", 2, 1, 0, "11:00", "Sample.Clock", False),
]


def _rows(path: Path, sql: str, *, immutable: bool = False) -> list[tuple[Any, ...]]:
    """Read-only; ``immutable`` for the committed fixture (a reader of a WAL-mode file otherwise leaves -wal/-shm
    files beside it)."""
    conn = sqlite3.connect(f"file:{path}?{'immutable=1' if immutable else 'mode=ro'}", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def v4_copy(tmp_path: Path) -> Path:
    """The fixture, copied (opening it migrates it: the committed file must stay at v4)."""
    path = tmp_path / "storage" / "agent.db"
    path.parent.mkdir()
    shutil.copy(FIXTURE, path)
    return path


def test_the_fixture_is_a_single_v4_file() -> None:
    assert _rows(FIXTURE, "PRAGMA user_version", immutable=True) == [(4,)]
    assert FIXTURE.read_bytes()[18:20] == b"\x02\x02"  # a WAL-mode file, as the agent left it ...
    assert not Path(f"{FIXTURE}-wal").exists()  # ... checkpointed: everything is in the one file


def test_every_row_is_migrated(v4_copy: Path) -> None:
    before = {table: _rows(v4_copy, f"SELECT * FROM {table} ORDER BY 1, 2")
              for table in ("settings", "auth_cache", "local_auth_list")}
    outbox_before = _rows(v4_copy, "SELECT seq, action, payload, connector, local_id, attempts, created_at, retry_at "
                                   "FROM outbox ORDER BY seq")
    transactions_before = _rows(v4_copy, "SELECT * FROM transactions ORDER BY connector, local_id")
    db = Database(v4_copy)
    assert db.version == len(MIGRATIONS) == 6
    assert _rows(v4_copy, "SELECT COUNT(*) FROM charging_profiles") == [(0,)]  # v6: none installed yet

    # the ledger: every record, the CSMS's ids as their decimal text (one beyond 32 bits kept exactly)
    ledger = Ledger(db)
    records = [ledger.get(c, n) for c, n in ((1, 1), (1, 2), (2, 1))]
    assert records == [
        TransactionRecord(1, 1, CARD_1, 1000, iso("10:00"), "5000000001", iso("10:20"), 1800, "Local"),
        TransactionRecord(1, 2, CARD_1, 1800, iso("10:30"), "4102", None, None, None),
        TransactionRecord(2, 1, CARD_2, 5000, iso("10:50"), None, None, None, None)]
    assert [(r.connector, r.local_id) for r in ledger.open_transactions()] == [(1, 2), (2, 1)]
    assert ledger.active_by_transaction_id("4102") == records[1]
    assert ledger.next_local_id(1) == 3 and ledger.next_local_id(2) == 2
    assert [tuple(r) for r in transactions_before] == [
        (r.connector, r.local_id, r.id_token, r.meter_start_wh, r.started_at,
         None if r.transaction_id is None else int(r.transaction_id), r.stopped_at, r.meter_stop_wh, r.stop_reason)
        for r in records if r is not None]
    assert _rows(v4_copy, "SELECT DISTINCT typeof(transaction_id) FROM transactions ORDER BY 1") == [
        ("null",), ("text",)]
    columns = {name: kind for _, name, kind, *_ in _rows(v4_copy, "PRAGMA table_info(transactions)")}
    assert columns["transaction_id"] == "TEXT" and "id_token" in columns and "id_tag" not in columns

    # the outbox: every message, in order, unchanged, classified for the cap as the v4 code's SQL did it
    outbox = Outbox(db)
    queued = outbox.peek()
    assert [(m.seq, m.action, json.dumps(m.payload, separators=(",", ":")), m.connector, m.local_id, m.attempts,
             m.created_at, m.retry_at) for m in queued] == outbox_before
    assert [(m.action, m.connector, m.local_id, m.attempts, m.thinnable) for m in queued] == [
        (a, c, n, attempts, thin) for a, c, n, attempts, _, _, thin in QUEUED]
    assert [(m.payload["meterValue"][0]["timestamp"], m.payload["meterValue"][0]["sampledValue"][0]["context"])
            for m in queued if m.action == "MeterValues"] == [
        (at(t), ctx) for a, _, _, _, t, ctx, _ in QUEUED if a == "MeterValues"]
    assert queued[0].retry_at == datetime(2026, 3, 1, 10, 32, tzinfo=UTC).timestamp()
    assert queued[3].payload == {"connectorId": 2, "idTag": CARD_2, "meterStart": 5000, "timestamp": at("10:50")}
    stats = outbox.stats()
    assert (stats.queued, stats.thinned, stats.discarded) == (8, 0, 1)

    # settings, the authorization tables: untouched
    assert {table: _rows(v4_copy, f"SELECT * FROM {table} ORDER BY 1, 2")
            for table in ("settings", "auth_cache", "local_auth_list")} == before
    settings = Settings(db)
    assert settings.get(DISCARDED_KEY) == "1" and settings.get("agent.charge_point_inoperative") == "0"
    assert json.loads(settings.get("availability.1") or "") == {"csms": True, "site": True}
    keys = ConfigurationKeys(db, 1)
    assert (keys.get_int("HeartbeatInterval"), keys.get_int("ClockAlignedDataInterval"),
            keys.get_int("TransactionMessageAttempts"), keys.get_int("TransactionMessageRetryInterval"),
            keys.get_bool("LocalPreAuthorize")) == (120, 900, 5, 3, True)
    machine = SessionMachine.restore(json.loads(settings.get("session.1") or ""), SessionConfig(max_current_amps=32))
    assert machine.transaction is not None and machine.transaction.local_id == 2
    now = datetime(2026, 6, 1, tzinfo=UTC)
    cache = AuthorizationCache(db)
    assert len(cache) == 3
    assert cache.get(CARD_1, now) == IdTagInfo(AuthStatus.ACCEPTED, datetime(2030, 1, 1, tzinfo=UTC))
    assert cache.get("0badcafe", now) == IdTagInfo(AuthStatus.BLOCKED)
    assert cache.get("0E0E0E0E", now) == IdTagInfo(AuthStatus.EXPIRED, datetime(2026, 1, 1, tzinfo=UTC), "GROUP-1")
    local_list = LocalAuthorizationList(db)
    assert local_list.version == 7 and settings.get(LIST_VERSION_KEY) == "7" and len(local_list) == 2
    assert local_list.get(CARD_2.lower()) == IdTagInfo(AuthStatus.ACCEPTED, None, "GROUP-1")
    db.close()
    assert Database(v4_copy).version == 6  # opened again: nothing left to migrate


def test_migration_5_is_all_or_nothing(v4_copy: Path) -> None:
    """The table rebuild runs inside the migration's transaction: a failure after it leaves the v4 file as it was."""
    before = _rows(v4_copy, "SELECT * FROM transactions ORDER BY connector, local_id")

    def fails_after_5(conn: sqlite3.Connection) -> None:
        MIGRATIONS[4](conn)
        raise sqlite3.OperationalError("power cut in the middle of migration 5")

    with pytest.raises(sqlite3.OperationalError, match="migration 5"):
        Database(v4_copy, [*MIGRATIONS[:4], fails_after_5])
    assert _rows(v4_copy, "PRAGMA user_version") == [(4,)]
    assert _rows(v4_copy, "SELECT * FROM transactions ORDER BY connector, local_id") == before
    assert [name for _, name, *_ in _rows(v4_copy, "PRAGMA table_info(outbox)")][-1] == "retry_at"


def test_a_payload_that_is_not_json_does_not_stop_the_migration(v4_copy: Path) -> None:
    conn = sqlite3.connect(v4_copy)
    conn.execute("UPDATE outbox SET payload = '{\"connectorId\": 1, \"meterV' "
                 "WHERE seq = (SELECT MIN(seq) FROM outbox)")  # torn: the check cannot see it
    conn.commit()
    conn.close()
    outbox = Outbox(Database(v4_copy))
    assert [m.action for m in outbox.peek()] == [a for a, *_ in QUEUED[1:]]  # the damaged one discarded, counted
    assert outbox.stats().discarded == 2


async def test_the_1_6_delivery_sends_the_migrated_queue_with_integer_ids(v4_copy: Path) -> None:
    """The delivery and the 1.6 adapter's TransactionMessages alone, against a scripted CSMS."""
    db = Database(v4_copy)
    outbox, ledger = Outbox(db), Ledger(db)
    sent: list[tuple[str, dict[str, Any]]] = []

    async def csms(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        sent.append((action, payload))
        return {"transactionId": 77, "idTagInfo": {"status": "Accepted"}} if action == "StartTransaction" else {}

    delivery = OutboxDelivery(outbox, lambda: RetryPolicy(5, 3.0), TransactionMessages(ledger, lambda m, a: None))
    task = asyncio.create_task(delivery.run(csms))
    try:
        async with asyncio.timeout(10):
            while outbox.count():  # noqa: ASYNC110 (polls the database)
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    expected_ids = {(1, 2): 4102, (2, 1): 77, (None, None): None}
    assert [(a, p.get("transactionId")) for a, p in sent] == [
        (a, None if a == "StartTransaction" else expected_ids[(c, n)]) for a, c, n, *_ in QUEUED]
    assert all(type(p["transactionId"]) is int for _, p in sent if "transactionId" in p)
    record = ledger.get(2, 1)
    assert record is not None and record.transaction_id == "77"


async def test_an_agent_started_on_it_delivers_the_queue_and_closes_the_open_transactions(tmp_path: Path,
                                                                                           v4_copy: Path) -> None:
    async with Station(tmp_path, connectors=1, storage_dir=v4_copy.parent) as s:
        s.csms.behaviour.id_tags.accept(CARD_1, CARD_2)
        # the simulated meter starts at 0 Wh; the charger's meter had counted past the fixture's readings
        s.charger.connectors[1].electrical.energy_import_wh = 9000.0
        await s.start_agent()
        await s.wait_until(lambda: len(s.calls("StopTransaction")) == 2, 20, "both open transactions stopped")
        await s.wait_until(lambda: _rows(v4_copy, "SELECT COUNT(*) FROM outbox") == [(0,)], 10, "the outbox empty")

        sent = [e for e in s.calls() if e.action in ("StartTransaction", "MeterValues", "StopTransaction")]
        start = next(e for e in sent if e.action == "StartTransaction")
        answer = s.csms.transcript.response_to(start)
        assert answer is not None
        new_id = answer.payload["transactionId"]
        ids = {(1, 2): 4102, (2, 1): new_id, (None, None): None}
        # the queue in its order, then the two PowerLoss stops the restart queued behind it: connector 1's, its
        # session restored from the snapshot, then connector 2's, which no connector of this agent holds
        expected = [(a, None if a == "StartTransaction" else ids[(c, n)]) for a, c, n, *_ in QUEUED]
        expected += [("StopTransaction", 4102), ("StopTransaction", new_id)]
        assert [(e.action, e.payload.get("transactionId")) for e in sent[:10]] == expected
        assert all(e.action == "MeterValues" and "transactionId" not in e.payload for e in sent[10:])  # clock ticks
        assert all(type(e.payload["transactionId"]) is int for e in sent[:10] if "transactionId" in e.payload)
        assert [e.payload["meterValue"][0]["timestamp"] for e in sent[:8] if e.action == "MeterValues"] == [
            at(t) for a, _, _, _, t, _, _ in QUEUED if a == "MeterValues"]
        assert start.payload == {"connectorId": 2, "idTag": CARD_2, "meterStart": 5000, "timestamp": at("10:50")}
        stop_1, stop_2 = sent[8].payload, sent[9].payload
        assert stop_1["reason"] == "PowerLoss" and stop_1["meterStop"] >= 9000  # a fresh reading
        assert stop_2["reason"] == "PowerLoss" and stop_2["meterStop"] == 5000  # no meter: its start value
        state = s.csms.state(CP_ID)
        assert state.transactions[new_id].stop_count == 1 and not state.transactions[new_id].is_open
        assert state.transactions[4102].stop_count == 1

    ledger = Ledger(Database(v4_copy))
    assert ledger.open_transactions() == []
    assert [(r.transaction_id, r.stop_reason) for r in (ledger.get(1, 2), ledger.get(2, 1)) if r is not None] == [
        ("4102", "PowerLoss"), (str(new_id), "PowerLoss")]
