"""The I/O board firmware's hardware watchdog (machine.WDT): a firmware that stops feeding it is restarted
and comes back safe, and says why (docs/ioboard-protocol.md B1, B14, §3.6 MCU_WATCHDOG, §3.9).

The MicroPython firmware charges behind the pty with the host driver on the other end; then a fault
inside the chip stops its loop: a peripheral that never answers (the loop hangs) or one that answers
nonsense (an exception escapes a pass). The simulated RP2040 watchdog bites after the RP2040 board file's
WDT_TIMEOUT_MS, the pins fall to their reset state and a new interpreter boots. The hung loop must open the
contactor within B8's 100 ms too: the watchdog's reset drops the coil, on the chip's clock (the trace).
"""

from __future__ import annotations

import ast
import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from hal.events import Subscription
from hal.interfaces import BoardEvent, DeviceFault, DeviceRecovered, FaultCode, PilotState
from hal.ioboard import IoBoard
from hal.ioboard.codec import FrameDecoder
from hal.ioboard.messages import (
    AllowContactor,
    BoardHello,
    FaultBit,
    Log,
    Message,
    PwmMode,
    ResetReason,
    StateReport,
    decode_message,
)
from sim.devices.ioboard_mcu import FIRMWARE_DIR, McuIoBoard
from sim.devices.serial_wire import Direction, SerialWire
from tests.test_ioboard_mcu_safety import firmware_io


def rp2040_constant(name: str) -> int:
    """A constant of the RP2040 board file's Board class, as flashed (the simulated board takes it from us)."""
    tree = ast.parse((FIRMWARE_DIR / "boards" / "rp2040.py").read_text())
    board = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Board")
    value = next(n.value for n in board.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == name for t in n.targets))
    result = ast.literal_eval(value)
    assert isinstance(result, int)
    return result


WDT_TIMEOUT_MS = rp2040_constant("WDT_TIMEOUT_MS")
T_OPEN_S = 0.100  # B8
CONTACTOR_TRAVEL_S = 0.02  # the simulated contactor's drop-out time (McuIoBoard's default)


@pytest.fixture
async def charging() -> AsyncIterator[tuple[McuIoBoard, IoBoard, list[Message]]]:
    """The firmware charging an EV in C (PWM, permission, contactor closed); the board's frames from then on."""
    async with SerialWire() as wire:
        mcu = McuIoBoard(wire.device_port, keepalive_timeout_s=0.3, report_interval_s=0.1,
                         wdt_timeout_ms=WDT_TIMEOUT_MS, contactor_travel_s=CONTACTOR_TRAVEL_S)
        mcu.trace = []
        await mcu.start()
        host = IoBoard("ioboard", wire.host_port, keepalive_s=0.05, link_timeout_s=0.4, contactor_settle_s=0.1)
        try:
            await host.start()
            mcu.set_ev_pilot(PilotState.B)
            await host.set_offered_current(16.0)
            await host.allow_power(True)
            mcu.set_ev_pilot(PilotState.C)
            await until(lambda: mcu.contactor_closed and host.contactor_closed)
            yield mcu, host, board_frames(wire)
        finally:
            await host.close()
            await mcu.close()


def board_frames(wire: SerialWire) -> list[Message]:
    """Every message the board sends from now on, in order."""
    decoder, frames = FrameDecoder(), []

    def seen(direction: Direction, data: bytes) -> None:
        if direction is Direction.TO_HOST:
            frames.extend(decode_message(payload).message for payload in decoder.feed(data))
    wire.observers.append(seen)
    return frames


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Return as soon as ``predicate`` holds; fail if it has not within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def expect(sub: Subscription[BoardEvent], predicate: Callable[[BoardEvent], bool],
                 within: float = 5.0) -> BoardEvent:
    async with asyncio.timeout(within):
        while True:
            event = await sub.get()
            if predicate(event):
                return event


@pytest.mark.parametrize("fault", ["hang", "crash"])
async def test_a_firmware_that_stops_feeding_the_watchdog_restarts_safe_and_says_so(
        charging: tuple[McuIoBoard, IoBoard, list[Message]], fault: str) -> None:
    mcu, host, frames = charging
    with host.events.subscribe() as sub:
        t0 = time.monotonic()
        mcu.inject_chip_fault(fault)
        await until(lambda: mcu.counters.extra["watchdog_bites"] == 1)
        event = await expect(sub, lambda e: isinstance(e, DeviceFault) and e.code is FaultCode.DEVICE_ERROR
                             and "hardware watchdog" in e.detail)
        # the driver re-synchronises with the restarted board and restores what the firmware asked for
        await until(lambda: mcu.linked and mcu.permission and mcu.contactor_closed)
        await host.clear_faults(FaultBit.MCU_WATCHDOG)  # the technician has seen it (latched, §3.6)
        await expect(sub, lambda e: isinstance(e, DeviceRecovered) and e.code is FaultCode.DEVICE_ERROR)
    assert isinstance(event, DeviceFault)
    hello = host.board_hello
    assert hello is not None and hello.reset_reason is ResetReason.MCU_WATCHDOG
    if fault == "crash":  # the exception, with its traceback, is the chip's last word
        assert len(mcu.crashes) == 1 and "ValueError" in mcu.crashes[0].stderr
    else:
        assert not mcu.crashes
    assert mcu.counters.extra["watchdog_bites"] == 1 and mcu.counters.extra["resets"] == 1

    # The restarted chip's first frame is its BOARD_HELLO, reason MCU_WATCHDOG (B1), then the safe state:
    # X1, coil off, MCU_WATCHDOG set, and a LOG for the technician (B14); nothing closes before the host
    # has granted the permission to the new chip.
    first = next(i for i, m in enumerate(frames) if isinstance(m, BoardHello))
    after = frames[first:]
    assert isinstance(after[0], BoardHello) and after[0].reset_reason is ResetReason.MCU_WATCHDOG
    state = next(m for m in after if isinstance(m, StateReport))
    assert state.pwm_mode is PwmMode.X1 and not state.contactor_cmd and state.faults & FaultBit.MCU_WATCHDOG
    assert any(isinstance(m, Log) and "hardware watchdog" in m.text for m in after)

    events = firmware_io(mcu.trace)
    boot = next(i for i, (t, kind, _) in enumerate(events) if kind == "boot" and t > t0)
    assert events[boot][2] is ResetReason.MCU_WATCHDOG
    t_bite = events[boot][0]  # the watchdog's reset, on the chip's clock: the pins drop the coil
    t_fed = t_bite - WDT_TIMEOUT_MS / 1000
    t_last_sample = [t for t, kind, _ in events[:boot] if kind == "s"][-1]
    if fault == "crash":  # the exception switched the outputs safe on its way out of the loop
        t_off, _, on = [e for e in events[:boot] if e[1] == "coil"][-1]
        assert on is False and t_off >= t0
        assert t_last_sample - 1e-6 <= t_fed <= t_off + 1e-6  # fed each pass until the fault, not after it
    else:
        # B8 with the loop hung: nothing in the firmware runs, the watchdog's reset opens the contactor. The
        # coil still held it closed when the loop hung; it drops at the bite, the contacts one travel later.
        t_hang = next(t for t, kind, _ in events if kind == "hang")
        assert t_last_sample - 1e-6 <= t_fed <= t_hang + 1e-6  # fed each pass until the hang, not after it
        assert [on for _, kind, on in events[:boot] if kind == "coil"][-1] is True
        assert t_bite - t_hang <= WDT_TIMEOUT_MS / 1000 + 1e-6
        assert t_bite + CONTACTOR_TRAVEL_S - t_hang <= T_OPEN_S
    grant = next(i for i, (_, kind, v) in enumerate(events)
                 if i > boot and kind == "rx" and isinstance(v.message, AllowContactor) and v.message.on)
    assert not any(kind == "coil" and on for _, kind, on in events[boot:grant])  # pins' reset state: coil off
