"""What a power cut can leave behind in a connector's durable state: the session snapshot and the billing records
it implies are committed together, never one without the other (the meter read for a stop happens between
the machine's decision and the records, so it is the window a cut would hit)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.charger.connector import SNAPSHOT_KEY, ConnectorController
from firmware.hardware import ConnectorHardware
from firmware.session import (
    AuthorizationResult,
    AuthSource,
    AuthStatus,
    CardPresented,
    Effect,
    IdToken,
    IdTokenType,
    PilotChanged,
    SessionConfig,
    TransactionStarted,
    TransactionStopped,
)
from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from firmware.storage.settings import Settings
from hal.events import EventStream
from hal.interfaces import LockState, MeterReading, PilotState, utcnow

CARD = IdToken("04A1B2C3", IdTokenType.ISO14443)


class FakeBoard:
    name = "board1"

    def __init__(self) -> None:
        self.events: EventStream[Any] = EventStream()
        self.pilot_state: PilotState | None = PilotState.A
        self.commands: list[tuple[str, Any]] = []

    async def set_offered_current(self, amps: float) -> None:
        self.commands.append(("offer", amps))

    async def allow_power(self, on: bool) -> None:
        self.commands.append(("allow", on))

    async def set_cable_lock(self, locked: bool) -> LockState:
        self.commands.append(("lock", locked))
        return LockState.LOCKED if locked else LockState.UNLOCKED


class GatedMeter:
    """A meter whose reads wait until the test lets them through (a slow RS-485 line, frozen in time)."""

    name = "meter1"

    def __init__(self) -> None:
        self.events: EventStream[Any] = EventStream()
        self.gate = asyncio.Event()
        self.gate.set()
        self.wh = 1000.0
        self.reading_now = asyncio.Event()

    async def read(self) -> MeterReading:
        self.reading_now.set()
        await self.gate.wait()
        self.wh += 10
        return MeterReading("meter1", utcnow(), self.wh, 7000.0, (10.0,), (230.0,))


class Billing:
    """The durable part of the OCPP client's observer, reduced to the ledger and the outbox."""

    def __init__(self, db: Database, fail: bool = False) -> None:
        self.ledger, self.outbox, self.fail = Ledger(db), Outbox(db), fail

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        for e in effects:
            wh = 0 if reading is None else round(reading.energy_import_wh)
            if isinstance(e, TransactionStarted):
                self.ledger.start(ctrl.id, e.local_id, e.id_token.value, wh, now)
                self.outbox.queue("StartTransaction", {"meterStart": wh}, ctrl.id, e.local_id, now)
            elif isinstance(e, TransactionStopped):
                self.ledger.stop(ctrl.id, e.local_id, wh, now, e.reason.value)
                self.outbox.queue("StopTransaction", {"meterStop": wh}, ctrl.id, e.local_id, now)
                if self.fail:
                    raise RuntimeError("disk full")

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        return None


def make(tmp_path: Path) -> tuple[ConnectorController, GatedMeter, Database]:
    db = Database(tmp_path / "agent.db")
    meter = GatedMeter()
    hw = ConnectorHardware(1, FakeBoard(), meter, 32.0, 3)  # type: ignore[arg-type]
    ctrl = ConnectorController(hw, SessionConfig(max_current_amps=32.0), db)
    ctrl.observers.append(Billing(db))
    return ctrl, meter, db


def on_disk(path: Path) -> tuple[Any, list[tuple[Any, ...]], list[str]]:
    """What a restarted agent would find: (snapshot's transaction, transactions rows, queued actions)."""
    conn = sqlite3.connect(path)
    try:
        raw = conn.execute("SELECT value FROM settings WHERE key = ?", (SNAPSHOT_KEY.format(1),)).fetchone()
        snapshot_tx = json.loads(raw[0])["context"]["transaction"] if raw else None
        rows = conn.execute("SELECT local_id, stopped_at IS NOT NULL FROM transactions").fetchall()
        actions = [r[0] for r in conn.execute("SELECT action FROM outbox ORDER BY seq")]
        return snapshot_tx, rows, actions
    finally:
        conn.close()


async def start_transaction(ctrl: ConnectorController) -> None:
    await ctrl.handle(PilotChanged(PilotState.B))
    await ctrl.handle(CardPresented(CARD))
    await ctrl.handle(AuthorizationResult(CARD, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    assert ctrl.machine.transaction is not None


async def test_a_cut_during_the_stop_meter_read_leaves_the_transaction_open_in_both(tmp_path: Path) -> None:
    ctrl, meter, _ = make(tmp_path)
    await start_transaction(ctrl)
    meter.gate.clear()
    meter.reading_now.clear()
    stopping = asyncio.create_task(ctrl.handle(CardPresented(CARD)))  # the same card stops it
    await asyncio.wait_for(meter.reading_now.wait(), 2)
    # the machine has decided (in memory), the disk still says "open" everywhere: a cut now restores an open
    # transaction, which PowerRestored then stops with PowerLoss — and nothing was sent or switched meanwhile
    snapshot_tx, rows, actions = on_disk(tmp_path / "agent.db")
    assert ctrl.machine.transaction is None
    assert snapshot_tx is not None and rows == [(1, 0)] and actions == ["StartTransaction"]
    meter.gate.set()
    await asyncio.wait_for(stopping, 2)
    snapshot_tx, rows, actions = on_disk(tmp_path / "agent.db")
    assert snapshot_tx is None and rows == [(1, 1)] and actions == ["StartTransaction", "StopTransaction"]


async def test_records_that_fail_take_the_snapshot_with_them(tmp_path: Path) -> None:
    ctrl, _, _ = make(tmp_path)
    await start_transaction(ctrl)
    ctrl.observers[0] = Billing(ctrl._db, fail=True)
    with pytest.raises(RuntimeError):
        await ctrl.handle(CardPresented(CARD))
    snapshot_tx, rows, actions = on_disk(tmp_path / "agent.db")
    assert snapshot_tx is not None and rows == [(1, 0)] and actions == ["StartTransaction"]


async def test_a_machine_that_lost_its_snapshot_does_not_reuse_local_ids(tmp_path: Path) -> None:
    ctrl, _, db = make(tmp_path)
    await start_transaction(ctrl)
    Settings(db).put(SNAPSHOT_KEY.format(1), "{not json")  # e.g. written by a broken release
    again = ConnectorController(ctrl.hw, SessionConfig(max_current_amps=32.0), db)
    again.observers.append(Billing(db))
    assert not again.restored
    await start_transaction(again)  # would fail on the (connector, local id) key if the id were reused
    assert again.machine.transaction is not None and again.machine.transaction.local_id == 2


async def test_latest_reading_never_goes_back_in_time(tmp_path: Path) -> None:
    ctrl, _, _ = make(tmp_path)
    fresh = await ctrl.fresh_reading()
    assert fresh is not None
    older = MeterReading("meter1", fresh.taken_at - timedelta(seconds=1), fresh.energy_import_wh - 5, 0.0, (0.0,),
                         (230.0,))
    ctrl._keep_newest(older)  # a poll's event delivered late
    assert ctrl.latest_reading is fresh


async def test_a_failing_database_is_reported_so_the_agent_can_stop(tmp_path: Path) -> None:
    ctrl, _, _ = make(tmp_path)
    failures: list[Exception] = []
    ctrl._db.on_failure = failures.append  # what the agent hooks to stop with 74

    class DiskFull(Billing):
        def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
                   now: datetime) -> None:
            raise sqlite3.OperationalError("database or disk is full")

    await ctrl.handle(PilotChanged(PilotState.B))
    await ctrl.handle(CardPresented(CARD))
    ctrl.observers[0] = DiskFull(ctrl._db)
    with pytest.raises(sqlite3.OperationalError):
        await ctrl.handle(AuthorizationResult(CARD, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    assert len(failures) == 1 and "disk is full" in str(failures[0])
    # nothing switched: no power offered (the cable lock a transaction starts with is driven before the record:
    # a lock is no energy)
    assert [c for c in ctrl.hw.board.commands if c[0] != "lock"] == []  # type: ignore[attr-defined]


class AfterStep(Billing):
    """Billing that asks to be called back once its step is over (as the OCPP adapters hold their delivery)."""

    def __init__(self, db: Database, called: list[tuple[str, Any]], fail: bool = False) -> None:
        super().__init__(db)
        self.called, self.fail_record = called, fail

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        ctrl.after_step(lambda: self.called.append(("after step", None)))
        if self.fail_record:
            raise sqlite3.OperationalError("database or disk is full")
        super().record(ctrl, effects, reading, now)

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        self.called.append(("notify", None))


async def test_after_step_callbacks_run_once_the_hardware_is_switched(tmp_path: Path) -> None:
    """What a step recorded is followed up (sent) only after its board commands: the permission to energize is not
    queued behind the delivery's round trip and commit."""
    ctrl, _, db = make(tmp_path)
    board: FakeBoard = ctrl.hw.board  # type: ignore[assignment]
    ctrl.observers[0] = AfterStep(db, board.commands)
    await ctrl.handle(PilotChanged(PilotState.B))
    board.commands.clear()
    await ctrl.handle(CardPresented(CARD))
    assert board.commands == [("after step", None), ("notify", None)]  # every recorded step, once
    board.commands.clear()
    await ctrl.handle(AuthorizationResult(CARD, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    assert ctrl.machine.transaction is not None
    # after the board's commands, before the observers report (a StopTransaction before its Faulted status)
    assert board.commands[-2:] == [("after step", None), ("notify", None)]
    assert ("allow", True) in board.commands[:-2]
    await ctrl.close()


async def test_after_step_callbacks_run_also_when_the_step_fails(tmp_path: Path) -> None:
    ctrl, _, db = make(tmp_path)
    called: list[tuple[str, Any]] = []
    await ctrl.handle(PilotChanged(PilotState.B))
    ctrl.observers[0] = AfterStep(db, called, fail=True)
    with pytest.raises(sqlite3.OperationalError):
        await ctrl.handle(CardPresented(CARD))
    assert called == [("after step", None)]  # a held delivery is released: nothing waits for ever
    ctrl.observers[0] = Billing(db)
    await ctrl.handle(AuthorizationResult(CARD, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))
    assert called == [("after step", None)]  # not called again by a later step
    await ctrl.close()
