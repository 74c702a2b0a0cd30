"""End to end with the I/O board's MicroPython firmware: the agent process, the simulated CSMS, and
on connector 1 the firmware of mcu/ioboard/ in a real MicroPython behind the pty
(``python -m sim up --board ioboard-mcu``). A whole session: plug, card, charging, EV pause and resume
handled by the board alone, stop by card, unplug."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from hal.interfaces import PilotState
from sim.devices.ioboard_mcu import McuIoBoard
from tests.station import CP_ID, Station


async def test_charging_session_through_the_micropython_firmware(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1, board="ioboard-mcu") as s:
        board = s.charger.connectors[1].board
        assert isinstance(board, McuIoBoard)
        await s.start_agent()
        mark = s.mark()
        tx_id = await s.start_session(1, "04A1B2C3")
        # Charging is the pilot's C; the contacts follow the coil after their travel time
        await until(lambda: board.contactor_closed and board.permission)
        assert board.offered_current_a > 6.0
        assert board.linked and board.frames_received > 0
        s.ev(1).paused = True  # C -> B: the firmware opens by itself, the permission stays
        await s.wait_status(1, "SuspendedEV", since=mark)
        await until(lambda: not board.contactor_closed)  # the contacts' travel after the coil went off
        assert board.permission
        s.ev(1).paused = False
        await s.wait_status(1, "Charging", since=s.mark())
        await until(lambda: board.contactor_closed)  # closed by the board itself, no host command
        assert s.charger.connectors[1].sensed_pilot is PilotState.C
        await s.tap("04A1B2C3")
        stop = await s.wait_call("StopTransaction", since=mark)
        assert stop.payload["transactionId"] == tx_id and stop.payload["meterStop"] > 0
        await until(lambda: not board.contactor_closed and not board.permission)
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=s.mark())
        assert s.csms.state(CP_ID).transactions[tx_id].stop_count == 1
        assert not board.crashes and board.counters.extra["resets"] == 0


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Return as soon as ``predicate`` holds; fail if it has not within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
