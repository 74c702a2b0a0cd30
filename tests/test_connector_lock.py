"""The connector drives the cable lock with its feedback (firmware/charger/connector.py): a lock that fails at the
start of a transaction lets no current be offered and records no transaction; an unlock that fails answers
UnlockFailed; both raise the blocking connector_lock_failure, which a later successful lock command clears."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from firmware.charger.connector import ConnectorController
from firmware.hardware import ConnectorHardware
from firmware.session import (
    AuthorizationResult,
    AuthSource,
    AuthStatus,
    CardPresented,
    ConnectorStatus,
    IdToken,
    IdTokenType,
    PilotChanged,
    SessionConfig,
    UnlockRequested,
    UnlockResult,
    UnlockStatus,
)
from firmware.storage.database import Database
from firmware.storage.ledger import Ledger
from hal.events import EventStream
from hal.interfaces import FaultCode, LockState, LockUnsupportedError, MeterReading, PilotState
from tests.test_connector_durability import Billing, GatedMeter

CARD = IdToken("04A1B2C3", IdTokenType.ISO14443)


class LockBoard:
    """An EVSE board whose lock ends where the test says (``stuck``: it stays where it is)."""

    name = "board1"

    def __init__(self, *, has_lock: bool = True) -> None:
        self.events: EventStream[Any] = EventStream()
        self.pilot_state: PilotState | None = PilotState.A
        self.commands: list[tuple[str, Any]] = []
        self.has_lock = has_lock
        self.stuck = False
        self.engaged = False

    async def set_offered_current(self, amps: float) -> None:
        self.commands.append(("offer", amps))

    async def allow_power(self, on: bool) -> None:
        self.commands.append(("allow", on))

    async def set_cable_lock(self, locked: bool) -> LockState:
        self.commands.append(("lock", locked))
        if not self.has_lock:
            raise LockUnsupportedError("board1: no cable lock")
        if not self.stuck:
            self.engaged = locked
        return LockState.FAULT if self.engaged != locked else (LockState.LOCKED if locked else LockState.UNLOCKED)

    def energized(self) -> bool:
        return any(c in (("allow", True),) or (c[0] == "offer" and c[1] > 0) for c in self.commands)


def make(tmp_path: Path, board: LockBoard) -> tuple[ConnectorController, Database]:
    db = Database(tmp_path / "agent.db")
    ctrl = ConnectorController(ConnectorHardware(1, board, None, 32.0, 3),  # type: ignore[arg-type]
                               SessionConfig(max_current_amps=32.0), db)
    ctrl.observers.append(Billing(db))
    return ctrl, db


async def tap_to_start(ctrl: ConnectorController) -> None:
    await ctrl.handle(PilotChanged(PilotState.B))
    await ctrl.handle(CardPresented(CARD))
    await ctrl.handle(AuthorizationResult(CARD, AuthStatus.ACCEPTED, source=AuthSource.ONLINE))


async def settled(ctrl: ConnectorController, predicate: Any) -> None:
    """Until the follow-up event (the fault raised or cleared as the next event) has been handled."""
    deadline = time.monotonic() + 2.0
    while not predicate():
        assert time.monotonic() < deadline, "the follow-up event was not handled"
        await asyncio.sleep(0.005)


def lock_fault(ctrl: ConnectorController) -> bool:
    return any(f.code is FaultCode.CONNECTOR_LOCK_FAILURE for f in ctrl.machine.faults)


@pytest.mark.parametrize("has_lock", [True, False], ids=["stuck-lock", "board-without-lock"])
async def test_lock_failing_at_the_start_records_no_transaction_and_offers_nothing(tmp_path: Path,
                                                                                   has_lock: bool) -> None:
    board = LockBoard(has_lock=has_lock)
    board.stuck = True
    ctrl, db = make(tmp_path, board)
    await tap_to_start(ctrl)
    assert ctrl.machine.transaction is None and ctrl.machine.status is ConnectorStatus.FAULTED
    assert lock_fault(ctrl) and ctrl.machine.current_error is FaultCode.CONNECTOR_LOCK_FAILURE
    assert Ledger(db).next_local_id(1) == 1  # nothing recorded
    assert not board.energized()
    assert [c for c in board.commands if c[0] == "lock"] == [("lock", True), ("lock", False)]  # then released
    await asyncio.sleep(0.05)
    assert lock_fault(ctrl)  # the release does not clear it
    await ctrl.close()
    db.close()


async def test_unlock_answers_unlocked_only_when_the_feedback_says_so(tmp_path: Path) -> None:
    board = LockBoard()
    ctrl, db = make(tmp_path, board)
    await tap_to_start(ctrl)
    assert ctrl.machine.transaction is not None and board.engaged and board.energized()
    board.stuck = True
    effects = await ctrl.handle(UnlockRequested())
    assert [e for e in effects if isinstance(e, UnlockResult)] == [UnlockResult(UnlockStatus.UNLOCK_FAILED)]
    assert ctrl.machine.transaction is None  # stopped first (UnlockCommand), as 1.6 asks
    await settled(ctrl, lambda: lock_fault(ctrl))
    assert ctrl.machine.status is ConnectorStatus.FAULTED
    board.stuck = False
    effects = await ctrl.handle(UnlockRequested())
    assert [e for e in effects if isinstance(e, UnlockResult)] == [UnlockResult(UnlockStatus.UNLOCKED)]
    await settled(ctrl, lambda: not lock_fault(ctrl))
    assert not board.engaged and ctrl.machine.status is ConnectorStatus.FINISHING
    await ctrl.close()
    db.close()


class TravellingLockBoard(LockBoard):
    """A lock whose motor is still travelling until the meter has been read (at most 2 s): the start value's read
    must overlap the lock's travel, or the lock reports after 2 s and the order shows it."""

    def __init__(self, log: list[str], meter_read: asyncio.Event) -> None:
        super().__init__()
        self.log, self.meter_read = log, meter_read

    async def set_cable_lock(self, locked: bool) -> LockState:
        if locked:
            self.log.append("lock commanded")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.meter_read.wait(), 2.0)
            self.log.append("lock confirmed")
        return await super().set_cable_lock(locked)

    async def allow_power(self, on: bool) -> None:
        self.log.append(f"allow {on}")
        await super().allow_power(on)


class LoggingMeter(GatedMeter):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.read_done = asyncio.Event()

    async def read(self) -> MeterReading:
        self.log.append("meter read")
        reading = await super().read()
        self.read_done.set()
        return reading


async def test_the_start_value_is_read_while_the_lock_travels_and_recorded_before_power(tmp_path: Path) -> None:
    """The meter's fresh read for meterStart is off the tap -> contactor path: done during the lock's travel (a
    motor's 100..600 ms), yet recorded with the transaction before the contactor is allowed."""
    log: list[str] = []
    meter = LoggingMeter(log)
    board = TravellingLockBoard(log, meter.read_done)
    db = Database(tmp_path / "agent.db")
    ctrl = ConnectorController(ConnectorHardware(1, board, meter, 32.0, 3),  # type: ignore[arg-type]
                               SessionConfig(max_current_amps=32.0), db)
    ctrl.observers.append(Billing(db))
    await tap_to_start(ctrl)
    assert ctrl.machine.transaction is not None
    assert log == ["lock commanded", "meter read", "lock confirmed", "allow True"]
    assert meter.wh == 1010.0  # read once for the start, not again after the lock
    rows = db.conn.execute("SELECT payload FROM outbox").fetchall()
    assert [json.loads(r[0]) for r in rows] == [{"meterStart": 1010}]  # the value read during the travel, on disk
    await ctrl.close()
    db.close()
