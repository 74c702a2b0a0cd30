"""``tools/flash.py mcu`` against a simulated RP2040 with a flash filesystem and a USB console.

The chip (``McuIoBoard`` with ``flash_dir``) runs the WASI MicroPython; it boots main.py from its flash if
there is one and serves MicroPython's REPL on a pty, the raw REPL included (sim/devices/mcu_console.py: the
unix-port interpreter has none of its own, so the console frames what pyexec.c would and the chip's
interpreter executes each block). The tool runs as a technician runs it, in a subprocess, with mpremote on
that pty: it writes the .mpy files, hashes them on the chip, restarts it, and reads the BOARD_HELLO on the
board's host UART.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hal.interfaces import PilotState
from hal.ioboard import IoBoard
from hal.ioboard.messages import ResetReason
from sim.devices.ioboard_mcu import McuIoBoard
from sim.devices.serial_wire import SerialWire
from tools.flashing import mcu

FLASH = Path(__file__).resolve().parents[1] / "tools" / "flash.py"


async def atool(*args: str | Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """flash.py while the simulated board keeps running in this event loop."""
    proc = await asyncio.create_subprocess_exec(sys.executable, str(FLASH), *map(str, args),
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return subprocess.CompletedProcess([], proc.returncode, out.decode(), err.decode())


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_dry_run_lists_the_build_and_opens_nothing(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(FLASH), "mcu", str(tmp_path / "no-such-port"), "--dry-run"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    files = mcu.build("rp2040")
    assert [f.path for f in files] == [*(f"iob/{p.stem}.mpy" for p in sorted((mcu.FIRMWARE / "iob").glob("*.py"))),
                                       "board.mpy", "main.py"]
    for f in files:
        assert f"would write {f.path:<18} {len(f.data):>6} B  sha256 {f.sha256[:16]}" in proc.stdout
        assert f.path == "main.py" or f.data.startswith(b"M\x06")  # .mpy version 6, what MicroPython 1.2x loads
    assert "was not opened" in proc.stdout and not (tmp_path / "no-such-port").exists()


async def test_flash_a_blank_board_then_reflash_it_while_charging_and_verify(tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    async with SerialWire() as wire:
        chip = McuIoBoard(wire.device_port, flash_dir=flash, keepalive_timeout_s=0.5, report_interval_s=0.1)
        await chip.start()
        host: IoBoard | None = None
        try:
            assert chip.usb_port is not None
            # a blank board: only MicroPython's REPL on its USB port
            first = await atool("mcu", chip.usb_port, "--board", "sim", "--uart", wire.host_port)
            assert first.returncode == 0, first.stderr
            built = mcu.build("sim")
            for f in built:
                assert f"wrote {f.path}" in first.stdout
                assert (flash / f.path).read_bytes() == f.data
            assert "verified: the SHA-256 of all 9 files" in first.stdout
            assert "firmware 1.1.0, protocol 1.1, hardware SIM-MCU, reset reason OTHER" in first.stdout

            # the flashed firmware is the board now: the agent's driver links up and charges through it
            host = IoBoard("ioboard", wire.host_port, keepalive_s=0.05, link_timeout_s=0.4, contactor_settle_s=0.1)
            await host.start()
            chip.set_ev_pilot(PilotState.B)
            await host.set_offered_current(16.0)
            await host.allow_power(True)
            chip.set_ev_pilot(PilotState.C)
            await until(lambda: chip.contactor_closed)

            # flashing it again while it charges: Ctrl-C stops the firmware safely, an earlier firmware's
            # leftover is removed, the watchdog does not cut the session short, the driver follows the restart
            (flash / "iob" / "old.py").write_text("raise RuntimeError('an earlier firmware')\n")
            chip.trace = []
            again = await atool("mcu", chip.usb_port, "--board", "sim")
            assert again.returncode == 0, again.stderr
            assert "removed iob/old.py" in again.stdout and not (flash / "iob" / "old.py").exists()
            stopped = [on for _, kind, on in chip.trace if kind == "coil"]
            assert stopped[0] is False  # the interrupted firmware opened the contactor first
            assert chip.counters.extra["watchdog_bites"] == 0
            await until(lambda: host is not None and host.board_hello is not None
                        and host.board_hello.reset_reason is ResetReason.OTHER)
            await until(lambda: chip.linked and chip.contactor_closed)  # re-synchronised: charging again

            # a damaged file is found by the hashes computed on the board
            damaged = flash / "iob" / "link.mpy"
            damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
            check = await atool("mcu", chip.usb_port, "--board", "sim", "--verify-only")
            assert check.returncode == 6, check.stdout + check.stderr
            assert "iob/link.mpy (board " in check.stderr and "iob/app.mpy" not in check.stderr
            assert not chip.contactor_cmd  # stopped for maintenance, outputs safe
        finally:
            if host is not None:
                await host.close()
            await chip.close()
