"""The I/O board with its real firmware: mcu/ioboard/ running in MicroPython, behind the pty.

Where :class:`sim.devices.ioboard.SimulatedIoBoard` re-implements the board in CPython, this device
runs the MicroPython firmware a board maker flashes (mcu/ioboard/, board file ``boards/sim.py``) in a
real MicroPython interpreter (:mod:`sim.devices.mpy_vm`) and simulates only what lies outside the
chip: the pilot's analog front end with the EV's resistors and diode, the contactor with its travel
time and mirror contact, the RCD module, the temperature sensor, the UART (the device end of the
pty) and the hardware watchdog. The firmware reaches them through the board file's ``host.call``s,
served here from the interpreter's thread.

What the firmware holds in RAM (link state, permission, counters) is visible to tests only as the
firmware reports it through ``Board.observe``; a restart (power cycle, RESET, watchdog bite) stops the
interpreter and starts a new one, so nothing survives but what a chip keeps: the reset cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from hal.duty_cycle import duty_to_current
from hal.interfaces import PilotState
from hal.ioboard.messages import NO_FAULTS, Capability, FaultBit, PwmMode, ResetReason, SetPwm
from sim.devices.interfaces import BoardFault, DeviceCounters
from sim.devices.mcu_console import ConsoleReset, UsbConsole
from sim.devices.mpy_vm import RESULT_CAP_BYTES, ChipStop, HostFunction, MicroPythonVm, VmExit

logger = logging.getLogger(__name__)

FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "mcu" / "ioboard"
#: How the simulated chip starts: the firmware's main.py with the simulation's board file as ``board``.
BOOT = """\
import sys
sys.path.insert(0, "/fw/boards")
sys.path.insert(0, "/fw")
sys.modules["board"] = __import__("sim")
import main
"""
#: Put before BOOT for a chip whose clock runs ahead of the host's (benchmarks of long runs): the firmware's
#: ``time`` is this one, and the board's wait() only looks for host bytes, adding the sleep it skipped to the
#: clock instead of taking it. Each pass still sees LOOP_MS of chip time; the pass itself runs at its own pace.
FAST_CLOCK = """\
import sys, time as _t
class _Clock:
    ahead = 0
    ticks_diff = staticmethod(_t.ticks_diff)
    ticks_add = staticmethod(_t.ticks_add)
    sleep_ms = staticmethod(_t.sleep_ms)
    @staticmethod
    def ticks_ms():
        return (_t.ticks_ms() + _Clock.ahead) & 0x3FFFFFFF
    @staticmethod
    def ticks_us():
        return (_t.ticks_us() + _Clock.ahead * 1000) & 0x3FFFFFFF
sys.modules["time"] = _Clock
sys.path.insert(0, "/fw/boards")
import sim as _board
_wait = _board.Board.wait
def _skip(self, ms):
    _wait(self, 0)
    if ms > 0:
        _Clock.ahead += ms
_board.Board.wait = _skip
"""
#: MicroPython's REPL on the USB console of a chip with a flash filesystem: sim/devices/mcu_console.py frames
#: it, each code block runs here in the same globals, its print() output and traceback going back.
REPL = """\
import builtins, io, sys
import host
host.call("usb_repl", b"")
_print = builtins.print
_g = {"__name__": "__main__"}
while True:
    _code = host.call("usb_exec", b"")
    if not _code:
        _g = {"__name__": "__main__"}
        continue
    _out, _err = io.StringIO(), io.StringIO()
    def _to_console(*args, sep=" ", end="\\n", file=None):
        _print(*args, sep=sep, end=end, file=_out if file is None else file)
    builtins.print = _to_console
    try:
        exec(_code, _g)
    except BaseException as _e:
        sys.print_exception(_e, _err)
    builtins.print = _print
    _o = _out.getvalue().encode()
    host.call("usb_done", str(len(_o)).encode() + b":" + _o + _err.getvalue().encode())
"""
#: How such a chip starts, as MicroPython does: main.py from the flash if there is one, then the REPL. This
#: WASI build's collector does not scan the interpreter's stack (docs/ioboard-firmware.md, "Garbage
#: collection"): once main.py's loop has collected, its own top-level bytecode may be gone, so the loop never
#: returns here. On Ctrl-C the firmware goes to maintenance (``hold_watchdog``) and the simulation continues
#: the chip in a fresh interpreter running the REPL alone (the firmware's RAM is not needed by a technician's
#: session; pins and watchdog stay as they are). The REPL never collects: the chip gets FLASH_CHIP_HEAP_KB,
#: far more than a flashing session allocates, and every session ends in a reset.
BOOT_FLASH = """\
import os, sys
sys.path[:] = ["", "/lib"]
try:
    os.stat("main.py")
    _main = True
except OSError:
    _main = False
if _main:
    import main
""" + REPL
FLASH_CHIP_HEAP_KB = 8 * 1024
#: a raw-REPL code block fits in one host.call answer: tools/flash.py writes 512-byte chunks, which mpremote sends
#: as ``w(b'...')`` of at most ~2.1 KB. Kept small: the artifact holds this much of the chip's heap for good.
FLASH_CHIP_RESULT_CAP = 8 * 1024
#: The WASI artifact keeps one buffer for host.call answers on the guest's GC heap for good, its result cap plus
#: one 16-byte block (measured): gc.mem_alloc() counts it, a chip has nothing of the kind, so the heap figures
#: are reported without it.
HOST_BUFFER_EXTRA = 16
NORMAL_TEMPERATURE_DC = 250
HOT_TEMPERATURE_DC = 850
CAPABILITIES = (Capability.RCD | Capability.TEMPERATURE | Capability.MIRROR_CONTACT | Capability.DIODE_CHECK
                | Capability.CABLE_LOCK)
LOCK_TRAVEL_S = 0.1  # the lock motor, end to end
#: Pilot voltage (mV) the EV's resistor network gives on the positive half (IEC 61851-1 nominal).
EV_LEVEL_MV = {PilotState.A: 12000, PilotState.B: 9000, PilotState.C: 6000, PilotState.D: 3000,
               PilotState.E: 0, PilotState.F: -12000}
BOOT_TIMEOUT_S = 30.0
MAX_READ = 1024  # bytes handed to the firmware per wake-up (hex-encoded in a 4 KB answer)


@dataclass(frozen=True)
class FirmwareView:
    """What the firmware last reported about its own state (``Board.observe``)."""

    linked: bool = False
    permission: bool = False
    faults: FaultBit = NO_FAULTS
    requests: int = 0
    bad_frames: int = 0
    duplicates: int = 0
    nacks: int = 0
    keepalive_trips: int = 0


@dataclass(frozen=True)
class LoopFigures:
    """The firmware's own measurements, reported about once a second."""

    passes: int = 0
    work_us_max: int = 0
    period_ms_max: int = 0
    # the heap: gc.mem_alloc() without the WASI artifact's host.call buffer (HOST_BUFFER_EXTRA)
    heap_bytes: int = 0  #: gc.mem_alloc() after the latest collection
    heap_peak_bytes: int = 0  #: gc.mem_alloc() before a collection, the most
    heap_boot_bytes: int = 0  #: gc.mem_alloc() when the loop started, before any collection
    gc_us_max: int = 0
    wait_over_us_max: int = 0
    late_passes: int = 0  #: passes that started more than 10 ms after the one before


class McuIoBoard:
    """:class:`sim.devices.interfaces.SimulatedBoard` whose microcontroller runs the MicroPython firmware."""

    def __init__(self, port: str, *, keepalive_timeout_s: float = 1.0, report_interval_s: float = 0.5,
                 contactor_travel_s: float = 0.02, hardware_revision: str = "SIM-MCU",
                 wdt_timeout_ms: int = 500, c1_timeout_s: float = 6.0, fw_dir: Path = FIRMWARE_DIR,
                 flash_dir: Path | None = None, lock_travel_s: float = LOCK_TRAVEL_S, fast_clock: bool = False) -> None:
        self.port = port
        #: the chip's clock runs ahead of the host's (FAST_CLOCK): for benchmarks of hours of chip time; the host's
        #: keepalive period times the speed-up (about 10) must stay below the keepalive timeout
        self.fast_clock = fast_clock
        self.keepalive_timeout_ms = round(keepalive_timeout_s * 1000)
        self.report_interval_ms = round(report_interval_s * 1000)
        self.contactor_travel_s = contactor_travel_s
        self.lock_travel_s = lock_travel_s
        self.hardware_revision = hardware_revision
        self.wdt_timeout_ms = wdt_timeout_ms
        self.c1_timeout_ms = round(c1_timeout_s * 1000)
        self.fw_dir = fw_dir
        #: a chip with a flash filesystem (``flash_dir``, "/" on the chip) and a USB console on the pty
        #: :attr:`usb_port`: it boots what was flashed (tools/flash.py mcu), not the checkout's firmware
        self.flash_dir = flash_dir
        self.usb_port: str | None = None
        self._console: UsbConsole | None = None
        if flash_dir is not None:
            master, slave = os.openpty()
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            self._usb_slave = slave
            self.usb_port = os.ttyname(slave)
            self._console = UsbConsole(master)
        self.counters = DeviceCounters(extra={"keepalive_trips": 0, "duplicates": 0, "nacks": 0, "resets": 0,
                                              "crashes": 0, "watchdog_bites": 0, "frames_suppressed": 0})
        self.view = FirmwareView()
        self.figures = LoopFigures()
        self.crashes: list[VmExit] = []
        self.boot_times: list[float] = []  # interpreter start -> first byte on the UART, seconds
        #: when a list, what the chip does, in the order it does it (all recorded on the interpreter's thread),
        #: with time.monotonic(): input samples ("s", (high_mv, low_mv, rcd, temperature_dc, lock engaged)), pilot
        #: output ("out", permille), coil output ("coil", on), lock drive ("lock", 0 off | 1 lock | 2 unlock), bytes
        #: its UART received ("rx", bytes) and sent ("tx", bytes), restarts ("boot", ResetReason; a watchdog bite at
        #: the instant the hardware bit), a chip fault "hang" starting (None). For tests of the safety loop.
        self.trace: list[tuple[float, str, object]] | None = None
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._vm: MicroPythonVm | None = None
        self._generation = 0
        self._closing = False
        self._wdt_thread: threading.Thread | None = None
        # the world outside the chip (survives restarts)
        self._ev_pilot = PilotState.A
        self._rcd_present = False
        self._overtemp = False
        self._diode_bad = False
        self._welded = False
        self._stuck_open = False
        self._silent = False
        self.self_test_passes = True
        self._chip_fault: str | None = None
        self._contact = False
        self._coil = False
        self._coil_changed_at = time.monotonic()
        self._lock_stuck = False
        self._lock_pos = False  # the lock's position switch: True = engaged (the actuator stays put over a reset)
        self._lock_drive = 0
        self._lock_drive_since = time.monotonic()
        self._reset_pins()

    # --- SimulatedBoard ------------------------------------------------------------------------------

    def set_ev_pilot(self, state: PilotState) -> None:
        self._ev_pilot = state

    @property
    def offered_current_a(self) -> float:
        if self.pwm.mode is not PwmMode.PWM or self.pwm.duty_permille is None:
            return 0.0
        return duty_to_current(self.pwm.duty_permille / 10)

    @property
    def contactor_closed(self) -> bool:
        return self._contact_now(time.monotonic())

    def inject(self, fault: BoardFault, active: bool = True) -> None:
        match fault:
            case BoardFault.RCD_TRIP:
                self._rcd_present = active
            case BoardFault.OVERTEMPERATURE:
                self._overtemp = active
            case BoardFault.DIODE_FAILURE:
                self._diode_bad = active
            case BoardFault.WELDED:
                self._welded = active
            case BoardFault.STUCK_OPEN:
                self._stuck_open = active
            case BoardFault.SILENT:
                self._silent = active
            case BoardFault.LOCK_STUCK:
                self._lock_locked_now(time.monotonic())
                self._lock_stuck = active
        logger.info("mcu ioboard %s: fault %s %s", self.port, fault.value, "injected" if active else "removed")

    def inject_chip_fault(self, kind: str) -> None:
        """A fault inside the chip, once, for tests of the hardware watchdog. ``"hang"``: the next input
        sample never completes (a peripheral that stops answering, like an ADC conversion that never
        ends): the loop stops and nothing feeds the watchdog. ``"crash"``: the next sample comes back
        malformed, so the board layer raises in the middle of a pass: an exception out of the loop."""
        if kind not in ("hang", "crash"):
            raise ValueError(f"unknown chip fault {kind!r}")
        self._chip_fault = kind
        logger.info("mcu ioboard %s: chip fault %s injected", self.port, kind)

    # --- observation for tests (the same names as SimulatedIoBoard) ------------------------------------

    @property
    def pilot(self) -> PilotState:
        """The pilot state at the connector: F while the board drives -12 V, else what the EV presents."""
        return PilotState.F if self.pwm.mode is PwmMode.F else self._ev_pilot

    @property
    def pwm(self) -> SetPwm:
        """The pilot output the firmware drives now (pin level: 1000 ‰ = X1, 0 = F, else PWM)."""
        permille = self._output_permille
        if permille >= 1000:
            return SetPwm(PwmMode.X1)
        if permille <= 0:
            return SetPwm(PwmMode.F)
        return SetPwm(PwmMode.PWM, permille)

    @property
    def contactor_cmd(self) -> bool:
        return self._coil

    @property
    def permission(self) -> bool:
        return self.view.permission

    @property
    def cable_locked(self) -> bool:
        """Whether the lock physically holds the cable (its position switch)."""
        return self._lock_locked_now(time.monotonic())

    @property
    def faults(self) -> FaultBit:
        return self.view.faults

    @property
    def linked(self) -> bool:
        return self.view.linked

    @property
    def frames_received(self) -> int:
        return self.counters.requests

    @property
    def bad_frames(self) -> int:
        return self.counters.bad_frames

    @property
    def keepalive_trips(self) -> int:
        return self.counters.extra["keepalive_trips"]

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self, boot_timeout_s: float = BOOT_TIMEOUT_S) -> None:
        """Power on, and return once the firmware is up: its first frame (BOARD_HELLO, B1) is on the wire.
        A real board is powered before its host starts; MicroPython's start-up here (wasmtime, compiling
        the firmware's sources) takes from 0.1 s to well over the host's 0.4 s hello timeout on a loaded
        machine. A blank chip (flash mode, nothing flashed) has no firmware to wait for."""
        self.open_port()
        self._boot(ResetReason.POWER_ON)
        self._wdt_thread = threading.Thread(target=self._watchdog, name=f"wdt-{self.port}", daemon=True)
        self._wdt_thread.start()
        if self.flash_dir is not None and not (self.flash_dir / "main.py").exists():
            return
        deadline = time.monotonic() + boot_timeout_s
        while not self.boot_times:
            if time.monotonic() > deadline or self.crashes:
                raise RuntimeError(f"mcu ioboard {self.port}: the firmware did not start within {boot_timeout_s} s"
                                   f" ({self.crashes or 'no frame'})")
            await asyncio.sleep(0.005)

    def open_port(self) -> None:
        fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd, termios.TCSANOW)
        self._fd = fd

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Power off: stop the interpreter and release the port."""
        with self._lock:
            self._closing = True
            self._generation += 1
            vm, self._vm = self._vm, None
            self._reset_pins()
        if vm is not None:
            vm.interrupt()
            vm.join(2.0)
        if self._wdt_thread is not None:
            self._wdt_thread.join(1.0)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._console is not None:
            for fd in (self._console.fd, self._usb_slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._console = None

    async def __aenter__(self) -> McuIoBoard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def reboot(self, reason: ResetReason = ResetReason.POWER_ON) -> None:
        """Power-cycle the microcontroller: pins to their reset state at once, then a new interpreter."""
        self._boot(reason)

    # --- the chip ----------------------------------------------------------------------------------------

    def _reset_pins(self, at: float | None = None) -> None:
        """What the hardware does while the chip is in reset (from ``at``, default now): pull-downs keep the
        coil off, the pilot driver's pull-up gives X1."""
        at = time.monotonic() if at is None else at
        self._output_permille = 1000
        self._contact_now(at)
        self._coil = False
        self._coil_changed_at = at
        self._lock_locked_now(at)  # where the lock got to before the motor stops
        self._lock_drive = 0  # the H-bridge inputs are pulled low in reset: the lock motor is off
        self._lock_drive_since = at
        self.view = FirmwareView()
        self._wdt_armed_ms: int | None = None
        self._wdt_fed_at = time.monotonic()
        self._wdt_held = False  # maintenance: a timer feeds it
        if self._console is not None:
            self._console.reset()

    def _boot(self, reason: ResetReason, at: float | None = None) -> None:
        """Reset the chip (at ``at`` on the chip's clock, default now) and start a new interpreter."""
        with self._lock:
            if self._closing:
                return
            old = self._vm
            self._generation += 1
            self._reset_pins(at)
            self.counters.extra["resets"] += 0 if old is None else 1
            self._reset_reason = reason
            gen = self._generation
            self._booted_at = time.monotonic() if at is None else at
            self._first_tx = True
            if self.trace is not None:
                self.trace.append((self._booted_at, "boot", reason))
            if self.flash_dir is None:
                vm = MicroPythonVm(self.fw_dir, FAST_CLOCK + BOOT if self.fast_clock else BOOT,
                                   self._host_functions(gen), name=f"ioboard-mcu {self.port}",
                                   on_exit=lambda outcome: self._exited(gen, outcome))
            else:
                vm = MicroPythonVm(self.flash_dir, BOOT_FLASH, self._host_functions(gen),
                                   name=f"ioboard-mcu {self.port}", on_exit=lambda outcome: self._exited(gen, outcome),
                                   fw_guest_dir="/", fw_writable=True, result_cap=FLASH_CHIP_RESULT_CAP,
                                   heap_kb=FLASH_CHIP_HEAP_KB)
            self._vm = vm
        if old is not None:
            old.interrupt()
        logger.info("mcu ioboard %s: boot (%s)", self.port, reason.name)
        vm.start()

    def _exited(self, gen: int, outcome: VmExit) -> None:
        if outcome.reason == "reset":
            self._boot(ResetReason.HOST_REQUEST)
        elif outcome.reason == "reset_other":
            self._boot(ResetReason.OTHER)
        elif outcome.reason == "to_repl" and gen == self._generation:
            self._start_repl()
        elif outcome.reason in ("crash", "exit") and gen == self._generation:
            # A chip whose firmware died: the watchdog (if armed) restarts it, as on the board.
            self.counters.extra["crashes"] += 1
            self.crashes.append(outcome)

    def _start_repl(self) -> None:
        """The firmware ended its loop for maintenance: the same chip (pins, watchdog held, console and the
        bytes waiting on it) goes on with the REPL alone, in a new interpreter (see BOOT_FLASH)."""
        with self._lock:
            if self._closing or self.flash_dir is None:
                return
            self._generation += 1
            gen = self._generation
            vm = MicroPythonVm(self.flash_dir, REPL, self._host_functions(gen), name=f"ioboard-mcu {self.port}",
                               on_exit=lambda outcome: self._exited(gen, outcome), fw_guest_dir="/",
                               fw_writable=True, result_cap=FLASH_CHIP_RESULT_CAP, heap_kb=FLASH_CHIP_HEAP_KB)
            self._vm = vm
        logger.info("mcu ioboard %s: firmware stopped for maintenance, REPL on %s", self.port, self.usb_port)
        vm.start()

    def _watchdog(self) -> None:
        """The RP2040's watchdog: no feed for its timeout -> chip reset with reason MCU_WATCHDOG. The hardware
        counts on its own, so the reset (pins included) takes effect at the last feed + the timeout on the chip's
        clock, however late this thread, sharing the process with others, notices it."""
        while not self._closing:
            time.sleep(0.01)
            armed, fed_at = self._wdt_armed_ms, self._wdt_fed_at
            if armed is not None and not self._wdt_held and time.monotonic() - fed_at > armed / 1000:
                self.counters.extra["watchdog_bites"] += 1
                logger.warning("mcu ioboard %s: hardware watchdog bit after %d ms", self.port, armed)
                self._boot(ResetReason.MCU_WATCHDOG, at=fed_at + armed / 1000)

    def _contact_now(self, now: float) -> bool:
        if self._welded:
            return True
        if self._stuck_open:
            return False
        if self._contact != self._coil and now - self._coil_changed_at >= self.contactor_travel_s:
            self._contact = self._coil
        return self._contact

    def _lock_locked_now(self, now: float) -> bool:
        """The actuator reaches the driven end after ``lock_travel_s`` of drive, unless it is stuck."""
        drive = self._lock_drive
        if drive and not self._lock_stuck and now - self._lock_drive_since >= self.lock_travel_s:
            self._lock_pos = drive == 1
        return self._lock_pos

    def _sample(self) -> bytes:
        permille = self._output_permille
        level = EV_LEVEL_MV[self._ev_pilot]
        if permille <= 0:
            high = low = -12000  # driving F: the EV's resistors are not in the circuit
        else:
            high = level
            if permille >= 1000:
                low = high  # X1: no negative half
            elif self._ev_pilot is PilotState.E:
                low = 0
            else:
                low = -level if self._diode_bad and self._ev_pilot is not PilotState.A else -12000
        now = time.monotonic()
        mirror = self._contact_now(now)
        temp = HOT_TEMPERATURE_DC if self._overtemp else NORMAL_TEMPERATURE_DC
        lock_fb = self._lock_locked_now(now)
        if self.trace is not None:
            self.trace.append((now, "s", (high, low, self._rcd_present, temp, lock_fb)))
        return f"{high},{low},{int(mirror)},{int(self._rcd_present)},{temp},{int(lock_fb)}".encode()

    def _host_functions(self, gen: int) -> dict[str, HostFunction]:
        def current(fn: HostFunction) -> HostFunction:
            def call(payload: bytes) -> bytes:
                if gen != self._generation:
                    raise ChipStop("stale")  # this interpreter's chip was reset meanwhile
                return fn(payload)
            return call

        def cfg(_: bytes) -> bytes:
            return (f"{self.hardware_revision},{int(CAPABILITIES)},{self.keepalive_timeout_ms},"
                    f"{self.report_interval_ms},{self.wdt_timeout_ms},{int(self._reset_reason)},"
                    f"{int(self.self_test_passes)},{self.c1_timeout_ms}").encode()

        def pilot_output(payload: bytes) -> bytes:
            self._output_permille = int(payload)
            if self.trace is not None:
                self.trace.append((time.monotonic(), "out", self._output_permille))
            return b""

        def coil(payload: bytes) -> bytes:
            on = payload == b"1"
            if self.trace is not None:
                self.trace.append((time.monotonic(), "coil", on))
            if on != self._coil:
                self._contact_now(time.monotonic())
                self._coil = on
                self._coil_changed_at = time.monotonic()
            return b""

        def lock_drive(payload: bytes) -> bytes:
            now = time.monotonic()
            self._lock_locked_now(now)
            drive = int(payload)
            if drive != self._lock_drive:
                self._lock_drive, self._lock_drive_since = drive, now
            if self.trace is not None:
                self.trace.append((now, "lock", drive))
            return b""

        def write(payload: bytes) -> bytes:
            if self.trace is not None:
                self.trace.append((time.monotonic(), "tx", payload))
            if self._first_tx:
                self._first_tx = False
                self.boot_times.append(time.monotonic() - self._booted_at)
            if self._silent:
                self.counters.extra["frames_suppressed"] += 1
                return b""
            self._write(payload)
            return b""

        def wait(payload: bytes) -> bytes:
            ms_text, fed = payload.split(b",")
            if fed == b"1":
                self._wdt_fed_at = time.monotonic()
            assert self._fd is not None
            console = self._console
            watched = [self._fd] if console is None else [self._fd, console.fd]
            ready, _, _ = select.select(watched, [], [], max(int(ms_text), 0) / 1000)
            if gen != self._generation:
                raise ChipStop("stale")
            if console is not None and console.fd in ready and console.receive(0) and console.interrupt_pending():
                return b"KI"  # Ctrl-C on the USB console: KeyboardInterrupt in the running firmware
            if self._fd not in ready:
                return b""
            try:
                data = os.read(self._fd, MAX_READ)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError:  # EIO: nobody holds the host end of the wire right now
                time.sleep(0.005)
                return b""
            if self.trace is not None:
                self.trace.append((time.monotonic(), "rx", data))
            return data.hex().encode()

        def wdt_arm(payload: bytes) -> bytes:
            self._wdt_fed_at = time.monotonic()
            self._wdt_armed_ms = int(payload)
            return b""

        def reset(_: bytes) -> bytes:
            raise ChipStop("reset")

        def reset_other(_: bytes) -> bytes:
            raise ChipStop("reset_other")

        def hold_watchdog(_: bytes) -> bytes:
            self._wdt_held = True
            if self._console is not None:
                raise ChipStop("to_repl")  # the firmware's outputs are safe: the REPL takes the console
            return b""

        def usb_repl(_: bytes) -> bytes:
            assert self._console is not None
            self._console.started()
            return b""

        def usb_exec(_: bytes) -> bytes:
            assert self._console is not None
            try:
                return self._console.next_block(lambda: gen == self._generation)
            except ConsoleReset:
                raise ChipStop("stale") from None

        def usb_done(payload: bytes) -> bytes:
            assert self._console is not None
            size, _, rest = payload.partition(b":")
            self._console.answer(rest[:int(size)], rest[int(size):])
            return b""

        def sample(_: bytes) -> bytes:
            fault, self._chip_fault = self._chip_fault, None
            if fault == "hang":  # until the watchdog (or a power cycle) resets the chip
                if self.trace is not None:
                    self.trace.append((time.monotonic(), "hang", None))
                while gen == self._generation:
                    time.sleep(0.005)
                raise ChipStop("stale")
            if fault == "crash":
                return b"?,?,0,0,250"
            return self._sample()

        def observe(payload: bytes) -> bytes:
            linked, permission, faults, requests, bad, dups, nacks, trips = (int(v) for v in payload.split(b","))
            self.view = FirmwareView(bool(linked), bool(permission), FaultBit(faults), requests, bad, dups, nacks,
                                     trips)
            self.counters.requests, self.counters.bad_frames = requests, bad
            self.counters.extra.update(duplicates=dups, nacks=nacks, keepalive_trips=trips)
            return b""

        host_buffer = (RESULT_CAP_BYTES if self.flash_dir is None else FLASH_CHIP_RESULT_CAP) + HOST_BUFFER_EXTRA

        def figures(payload: bytes) -> bytes:
            passes, work, period, live, peak, boot, gc_us, over, late = (int(v) for v in payload.split(b","))
            def net(v: int) -> int:
                return max(0, v - host_buffer) if v else 0
            self.figures = LoopFigures(passes, work, period, net(live), net(peak), net(boot), gc_us, over, late)
            return b""

        def self_test(_: bytes) -> bytes:
            return b"1" if self.self_test_passes else b"0"

        table: dict[str, HostFunction] = {
            "cfg": cfg, "po": pilot_output, "co": coil, "ld": lock_drive, "s": sample, "w": write, "i": wait,
            "wa": wdt_arm, "rst": reset, "o": observe, "m": figures, "st": self_test, "rst_other": reset_other,
            "wh": hold_watchdog, "usb_repl": usb_repl, "usb_exec": usb_exec, "usb_done": usb_done}
        return {name: current(fn) for name, fn in table.items()}

    def _write(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(data)
        deadline = time.monotonic() + 0.5
        while view and time.monotonic() < deadline:
            try:
                n = os.write(fd, view)
            except (BlockingIOError, InterruptedError):
                select.select([], [fd], [], 0.01)
                continue
            except OSError:
                return  # the far end is gone: a UART's bytes fall on the floor
            view = view[n:]
