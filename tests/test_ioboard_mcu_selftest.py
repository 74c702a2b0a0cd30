"""The I/O board firmware's RCD self test and its LOG (docs/ioboard-protocol.md B14, §3.6 SELFTEST_FAILED):
the MicroPython firmware tests the RCD at power-on and again on CLEAR_FAULTS of SELFTEST_FAILED, and tells the
technician the outcome either way, failed (with the latched, blocking bit) or passed.

The simulated board's RCD module trips on the test current or not (``McuIoBoard.self_test_passes``); the
board's frames are read off the wire as they pass, from the first one after power-on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hal.interfaces import DeviceError
from hal.ioboard import IoBoard
from hal.ioboard.messages import BoardHello, FaultBit, Log, LogLevel, Message, StateReport
from sim.devices.ioboard_mcu import McuIoBoard
from sim.devices.serial_wire import SerialWire
from tests.test_ioboard_mcu_watchdog import board_frames, until


@pytest.fixture
async def wire() -> AsyncIterator[SerialWire]:
    async with SerialWire() as wire:
        yield wire


async def power_on(wire: SerialWire, self_test_passes: bool) -> tuple[McuIoBoard, IoBoard, list[Message]]:
    frames = board_frames(wire)
    mcu = McuIoBoard(wire.device_port)
    mcu.self_test_passes = self_test_passes
    await mcu.start()
    host = IoBoard("ioboard", wire.host_port)
    await host.start()
    return mcu, host, frames


def logs(frames: list[Message]) -> list[Log]:
    return [m for m in frames if isinstance(m, Log)]


async def test_a_passing_self_test_is_logged_after_the_hello(wire: SerialWire) -> None:
    mcu, host, frames = await power_on(wire, self_test_passes=True)
    try:
        await until(lambda: any("self test" in m.text for m in logs(frames)))
        (log,) = [m for m in logs(frames) if "self test" in m.text]
        assert log.level is LogLevel.INFO and "power-on self test passed" in log.text
        assert isinstance(frames[0], BoardHello)  # B1: the hello first, the LOG after it
        assert not mcu.faults & FaultBit.SELFTEST_FAILED
    finally:
        await host.close()
        await mcu.close()


async def test_a_failed_self_test_is_logged_latched_and_cleared_only_by_a_passing_re_test(wire: SerialWire) -> None:
    mcu, host, frames = await power_on(wire, self_test_passes=False)
    try:
        await until(lambda: any("self test" in m.text for m in logs(frames)))
        (log,) = [m for m in logs(frames) if "self test" in m.text]
        assert log.level is LogLevel.ERROR and "power-on self test failed" in log.text
        state = next(m for m in frames if isinstance(m, StateReport))
        assert state.faults & FaultBit.SELFTEST_FAILED  # latched from the first STATE on
        with pytest.raises(DeviceError):  # blocking: no permission to energize
            await host.allow_power(True)

        await host.clear_faults(FaultBit.SELFTEST_FAILED)  # the RCD still does not trip: the re-test fails
        await until(lambda: sum("self test" in m.text for m in logs(frames)) == 2)
        retest = [m for m in logs(frames) if "self test" in m.text][1]
        assert retest.level is LogLevel.ERROR and "re-test self test failed" in retest.text
        assert (await host.request_state()).faults & FaultBit.SELFTEST_FAILED

        mcu.self_test_passes = True  # the RCD module replaced
        await host.clear_faults(FaultBit.SELFTEST_FAILED)
        await until(lambda: sum("self test" in m.text for m in logs(frames)) == 3)
        retest = [m for m in logs(frames) if "self test" in m.text][2]
        assert retest.level is LogLevel.INFO and "re-test self test passed" in retest.text
        assert not (await host.request_state()).faults & FaultBit.SELFTEST_FAILED
        await host.allow_power(True)
    finally:
        await host.close()
        await mcu.close()
