"""Driver for the EVSE-DIN charge controller (Stegen Electronics, also sold as "SimpleEVSE-WB") over Modbus RTU.

The EVSE-DIN generates the control pilot PWM and switches its own relay: it closes the relay by itself
when the EV is in state C (or D, if enabled) while it offers >= 6 A. The host only writes the offered
current (register 1000), one-shot commands (1004) and configuration bits (2005), and reads the status
block 1000-1007. docs/hal.md (EVSE-DIN section) lists every register with its source and the open questions.

How the :class:`~hal.interfaces.EvseBoard` operations map onto the board:

* ``set_offered_current(a)``: register 1000 in whole amps (0.01 A when the board's high-resolution bit
  is on); below 6 A the board's "0 = off" (steady +12 V, X1).
* ``allow_power(False)``: 1000 := 0 (held while denied, so the board cannot restart by itself) followed by
  the documented one-shot "turn off charging now" (1004 bit 0) that opens the relay at once.
  ``allow_power(True)`` writes the offered current back; the board closes its relay when the EV is in C.
  On this board no PWM is generated while power is denied, so a real EV (which waits for PWM before
  going to C) reaches C only after ``allow_power(True)``.
* ``set_unavailable(b)``: configuration bit "disable EVSE" (2005 bit 14), read-modify-write.

The module is split into pure register decoding (used by tests and, for constants, by the simulator)
and the polling driver :class:`EvseDinBoard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from hal.contactor import ContactorSupervisor
from hal.events import EventStream
from hal.interfaces import (
    BoardEvent,
    ContactorChanged,
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    FaultCode,
    LinkStats,
    PilotChanged,
    PilotState,
)
from hal.modbus_bus import ModbusBus, ModbusExceptionResponse
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)

# --- register map (holding registers: read with FC 03, written with FC 16) -------------------------

REG_AMPS_CONFIG = 1000  # R/W  configured amps (0 = off, else 2002 .. 80)
REG_AMPS_OUTPUT = 1001  # R    amps currently offered on the PWM output
REG_VEHICLE_STATE = 1002  # R  see VehicleState
REG_CABLE_LIMIT = 1003  # R    cable current limit from the PP resistor (A)
REG_COMMAND = 1004  # R/W      see CommandBits
REG_FIRMWARE = 1005  # R       firmware revision
REG_EVSE_STATE = 1006  # R     see EvseState
REG_STATUS = 1007  # R         see StatusBits
STATUS_BLOCK_START = REG_AMPS_CONFIG
STATUS_BLOCK_COUNT = 8  # 1000-1007, one transaction

REG_DEFAULT_AMPS = 2000  # R/W amps after boot
REG_MODBUS_ADDRESS = 2001  # R/W
REG_MIN_AMPS = 2002  # R/W
REG_CONFIG_BITS = 2005  # R/W  see ConfigBits

MIN_OFFER_A = 6  # IEC 61851-1: the smallest current a PWM may offer
MAX_OFFER_A = 80  # the board's documented maximum for register 1000
HIGH_RESOLUTION_MIN_FIRMWARE = 18  # openWB / SimpleEVSE-WiFi: 0.01 A steps from firmware 18 on

DEFAULT_BAUDRATE = 9600  # 8N1, unit id 1 (evcc / openWB / EVSE-WiFi defaults, manual)
DEFAULT_UNIT = 1


class VehicleState(IntEnum):
    """Register 1002."""

    READY = 1  # no EV (A)
    EV_PRESENT = 2  # B
    CHARGING = 3  # C
    CHARGING_WITH_VENTILATION = 4  # D
    FAILURE = 5  # e.g. diode check or RCD failure


class EvseState(IntEnum):
    """Register 1006."""

    STEADY_12V = 1
    PWM = 2  # only while 1000 >= 6 and an EV is present
    OFF = 3  # disabled / turned off


class CommandBits(IntFlag):
    """Register 1004: one-shot commands."""

    TURN_OFF_CHARGING_NOW = 1 << 0
    RUN_RCD_TEST = 1 << 1  # self test and RCD test (about 30 s)
    CLEAR_RCD_ERROR = 1 << 2


class StatusBits(IntFlag):
    """Register 1007: status and failure bits.

    Bit 4 is "RCD check error" in the older register list and "RCD test in progress" (with the RCD
    error moved to bit 5) in the list used by newer firmware; see :func:`active_faults`.
    """

    RELAY_ON = 1 << 0
    DIODE_CHECK_FAIL = 1 << 1
    VENT_REQUIRED_FAIL = 1 << 2
    WAITING_FOR_PILOT_RELEASE = 1 << 3  # error recovery delay
    RCD_BIT4 = 1 << 4
    RCD_CHECK_ERROR = 1 << 5


class ConfigBits(IntFlag):
    """Register 2005 (persistent configuration)."""

    BUTTON_CURRENT_CHANGE = 1 << 0
    BUTTON_STOPS_CHARGING = 1 << 1
    PILOT_READY_LED_STEADY = 1 << 2
    CHARGE_IN_STATE_D = 1 << 3  # charge with ventilation requested (default on)
    RCD_FEEDBACK = 1 << 4
    AUTO_CLEAR_RCD_ERROR = 1 << 5
    AN_PULLUP_DISABLED = 1 << 6
    HIGH_RESOLUTION_CURRENT = 1 << 7  # 1000/1001 in 0.01 A (one source: "PWM debug")
    ERROR_LED_ON_AN = 1 << 8
    PILOT_AUTO_RECOVER_DELAY = 1 << 9
    STARTUP_DELAY = 1 << 12
    DISABLE_AFTER_CHARGE = 1 << 13
    DISABLE_EVSE = 1 << 14
    BOOTLOADER_MODE = 1 << 15


_PILOT = {
    VehicleState.READY: PilotState.A,
    VehicleState.EV_PRESENT: PilotState.B,
    VehicleState.CHARGING: PilotState.C,
    VehicleState.CHARGING_WITH_VENTILATION: PilotState.D,
}


class EvseDinError(DeviceError):
    """An EVSE-DIN answer that cannot be decoded, or a write the board refused."""


# --- pure decoding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvseDinStatus:
    """One decoded read of the status block 1000-1007 (raw register values)."""

    amps_config: int
    amps_output: int
    vehicle_state: int
    cable_limit_a: int
    command_bits: int
    firmware: int
    evse_state: int
    status_bits: int

    @property
    def relay_on(self) -> bool:
        return bool(self.status_bits & StatusBits.RELAY_ON)

    @property
    def pilot(self) -> PilotState | None:
        """Sensed pilot state; ``None`` for "failure" or a value the documentation does not define."""
        try:
            return _PILOT.get(VehicleState(self.vehicle_state))
        except ValueError:
            return None

    def high_resolution(self, config_bits: int) -> bool:
        return self.firmware >= HIGH_RESOLUTION_MIN_FIRMWARE and bool(
            config_bits & ConfigBits.HIGH_RESOLUTION_CURRENT)


def decode_status(registers: Sequence[int]) -> EvseDinStatus:
    """Decode registers 1000-1007. Raises :class:`EvseDinError` for a wrong count or non-16-bit values."""
    if len(registers) != STATUS_BLOCK_COUNT:
        raise EvseDinError(f"EVSE-DIN status block: expected {STATUS_BLOCK_COUNT} registers, "
                           f"got {len(registers)}")
    for value in registers:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
            # bounded: the repr of an integer of more than 4300 digits raises ValueError
            shown = (f"a {value.bit_length()}-bit integer" if isinstance(value, int) and value.bit_length() > 64
                     else repr(value)[:40])
            raise EvseDinError(f"EVSE-DIN status block: {shown} is not a 16-bit register value")
    return EvseDinStatus(*registers)


def active_faults(status: EvseDinStatus) -> dict[FaultCode, str]:
    """Faults the status block reports, with a detail text.

    Bit 4 of 1007 is only taken as an RCD error while the vehicle state is "failure": under the newer
    register list it means "RCD test in progress", which does not stop the board.
    """
    faults: dict[FaultCode, str] = {}
    bits = status.status_bits
    failure = status.vehicle_state == VehicleState.FAILURE
    if bits & StatusBits.DIODE_CHECK_FAIL:
        faults[FaultCode.DIODE_FAILURE] = "1007 bit 1: diode check fail"
    if bits & StatusBits.VENT_REQUIRED_FAIL:
        faults[FaultCode.VENTILATION_REQUIRED] = "1007 bit 2: vent required fail (state D not enabled)"
    if bits & StatusBits.RCD_CHECK_ERROR:
        faults[FaultCode.RCD_TRIP] = "1007 bit 5: RCD check error"
    elif failure and bits & StatusBits.RCD_BIT4:
        faults[FaultCode.RCD_TRIP] = "1007 bit 4: RCD check error (older register list)"
    if failure and not faults:
        faults[FaultCode.DEVICE_ERROR] = f"vehicle state 5 (failure), 1007 = {bits:#06x}"
    elif status.vehicle_state not in tuple(VehicleState):
        faults[FaultCode.DEVICE_ERROR] = f"undocumented vehicle state {status.vehicle_state}"
    return faults


def relay_expected(status: EvseDinStatus, *, power_allowed: bool, config_bits: int) -> bool:
    """Whether the board's firmware should have its relay closed now (the documented rule).

    This is the "commanded" side of contactor supervision: the EVSE-DIN closes by itself when the EV is
    in C (or D with 2005 bit 3) while it generates PWM, unless a failure bit is set.
    """
    if not power_allowed or status.evse_state != EvseState.PWM:
        return False
    if status.status_bits & (StatusBits.DIODE_CHECK_FAIL | StatusBits.VENT_REQUIRED_FAIL
                             | StatusBits.RCD_CHECK_ERROR):
        return False
    if status.vehicle_state == VehicleState.CHARGING:
        return True
    return status.vehicle_state == VehicleState.CHARGING_WITH_VENTILATION and bool(
        config_bits & ConfigBits.CHARGE_IN_STATE_D)


def amps_to_register(amps: float, high_resolution: bool = False) -> int:
    """Register 1000 value offering at most ``amps``: 0 (off) below 6 A, capped at 80 A, never rounded up."""
    if math.isnan(amps) or amps < MIN_OFFER_A:
        return 0
    amps = min(amps, float(MAX_OFFER_A))
    return math.floor(amps * 100 + 1e-6) if high_resolution else math.floor(amps)


def register_to_amps(value: int, high_resolution: bool = False) -> float:
    return value / 100 if high_resolution else float(value)


# --- driver ---------------------------------------------------------------------------------------


class EvseDinBoard:
    """An EVSE-DIN board on a shared RS-485 line, polled every ``poll_interval_s``.

    The driver keeps the host's commands (offered current, power permission, availability) and writes
    them again whenever the board's register 1000 disagrees, e.g. after the board rebooted with its
    power-on default current. ``stats`` count this unit's transactions on the shared line.
    """

    def __init__(self, name: str, bus: ModbusBus, unit: int = DEFAULT_UNIT, *, poll_interval_s: float = 0.2,
                 fail_after: int = 3, contactor_settle_s: float = 0.5, spawn: Spawn = create_task) -> None:
        self.name = name
        self._spawn = spawn
        self.bus = bus
        self.unit = unit
        self.poll_interval_s = poll_interval_s
        self.fail_after = max(1, fail_after)
        self.events: EventStream[BoardEvent] = EventStream()
        self.stats: LinkStats = bus.unit_stats(unit)
        self._supervisor = ContactorSupervisor(contactor_settle_s)
        self._lock = asyncio.Lock()  # one multi-transaction operation (poll, command) at a time
        self._offered_a = 0.0
        self._power_allowed = False
        self._unavailable: bool | None = None  # None: leave 2005 bit 14 as found
        self._config_bits = 0
        self._synced = False
        self._status: EvseDinStatus | None = None
        self._answered = False
        self._pilot: PilotState | None = None
        self._relay = False
        self._faults: dict[FaultCode, str] = {}
        self._failures = 0
        self._link_lost = False
        self._last_mismatch: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # first status, first refusal, or link declared lost
        self._problem = "does not answer"  # why start() fails, if it does
        self._problem_logged: str | None = None

    # --- EvseBoard ---------------------------------------------------------------------------------

    @property
    def pilot_state(self) -> PilotState | None:
        return self._pilot

    @property
    def contactor_closed(self) -> bool:
        """The board's relay bit (1007 bit 0): the board's own view, there is no mirror contact."""
        return self._relay

    @property
    def firmware_revision(self) -> int | None:
        return None if self._status is None else self._status.firmware

    @property
    def output_current_a(self) -> float:
        """Current the board reports offering on its PWM output (register 1001)."""
        if self._status is None:
            return 0.0
        return register_to_amps(self._status.amps_output, self._high_resolution())

    @property
    def link_lost(self) -> bool:
        return self._link_lost

    async def start(self) -> None:
        """Start polling; return once the board answered, else raise (polling goes on, LINK_LOST is up)."""
        if self._task is None or self._task.done():
            self._settled.clear()
            await self._open_bus()
            self._task = self._spawn(self._run(), name=f"evse-din-{self.name}")
        await self._settled.wait()
        if not self._answered:
            raise DeviceError(f"{self.name}: EVSE-DIN unit {self.unit} on {self._port()} {self._problem}")

    async def close(self) -> None:
        """Stop polling and leave the board off (1000 := 0, turn off charging now), if it answers."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._offered_a, self._power_allowed = 0.0, False
        try:
            async with self._lock:
                await self._write(REG_AMPS_CONFIG, 0)
                await self._write(REG_COMMAND, CommandBits.TURN_OFF_CHARGING_NOW)
        except DeviceError as exc:
            log.warning("EVSE-DIN not left off on close", extra=self._ctx(error=str(exc)))

    async def set_offered_current(self, amps: float) -> None:
        """Offer ``amps`` (whole amps, or 0.01 A in high-resolution mode); < 6 A writes 0 (board off, X1).

        While power is denied the offer is only remembered (register 1000 stays 0)."""
        async with self._lock:
            previous, self._offered_a = self._offered_a, max(0.0, amps)
            if not self._power_allowed:
                return
            try:
                await self._command(REG_AMPS_CONFIG, self._effective_amps())
            except EvseDinError:
                self._offered_a = previous
                raise

    async def allow_power(self, on: bool) -> None:
        """Gate the board's charging. Denied: no PWM (1000 := 0) and the relay opened now (1004 bit 0)."""
        async with self._lock:
            previous, self._power_allowed = self._power_allowed, on
            try:
                await self._command(REG_AMPS_CONFIG, self._effective_amps())
                if not on:
                    await self._command(REG_COMMAND, CommandBits.TURN_OFF_CHARGING_NOW)
            except EvseDinError:
                self._power_allowed = previous
                raise

    async def set_unavailable(self, unavailable: bool) -> None:
        """Set/clear "disable EVSE" (2005 bit 14; bit 13 "disable after charge" is cleared as well).

        The board then shows EVSE state 3 (OFF) with a steady +12 V: it has no -12 V state F.
        """
        async with self._lock:
            previous, self._unavailable = self._unavailable, unavailable
            try:
                current = await self._command_read(REG_CONFIG_BITS)
                self._config_bits = current
                wanted = self._config_with_availability(current)
                if wanted != current:
                    await self._command(REG_CONFIG_BITS, wanted)
                    self._config_bits = wanted
            except EvseDinError:
                self._unavailable = previous
                raise

    # --- polling -----------------------------------------------------------------------------------

    async def _open_bus(self) -> None:
        """Open the shared line (idempotent); a port that cannot be opened shows as failed polls."""
        try:
            await self.bus.open()
        except DeviceError as exc:
            log.debug("EVSE-DIN line not open", extra=self._ctx(error=str(exc)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if self._link_lost:
                await self._open_bus()  # e.g. a USB-RS485 adapter that was unplugged
            try:
                await self._poll_once()
            except Exception as exc:  # defence in depth: an answer that breaks decoding must not end polling
                self.stats.frames_dropped += 1
                log.exception("EVSE-DIN poll failed unexpectedly; answer dropped", extra=self._ctx())
                self._on_refused(DeviceError(f"unexpected error handling its answer: {exc!r}"))
            await asyncio.sleep(max(0.0, self.poll_interval_s - (loop.time() - started)))

    async def _poll_once(self) -> None:
        async with self._lock:
            try:
                registers = await self.bus.read_holding_registers(self.unit, STATUS_BLOCK_START,
                                                                  STATUS_BLOCK_COUNT)
                status = decode_status(registers)
            except (ModbusExceptionResponse, EvseDinError) as exc:
                self._on_refused(exc)
                return
            except DeviceError as exc:
                self._on_failure(exc)
                return
            problem: str | None = None
            try:
                if not self._synced:
                    await self._sync(status)
                elif status.amps_config != self._effective_amps():
                    await self._reconcile(status)
                else:
                    self._last_mismatch = None
            except DeviceError as exc:  # the status itself is good: still report it
                problem = f"host commands not applied: {exc}"
        self._on_status(status, problem)

    async def _sync(self, status: EvseDinStatus) -> None:
        """Bring a (re)connected board to the host's commands; read its configuration bits."""
        self._status = status
        config = (await self.bus.read_holding_registers(self.unit, REG_CONFIG_BITS, 1))[0]
        self._config_bits = config
        if config & ConfigBits.DISABLE_AFTER_CHARGE and self._unavailable is None:
            log.warning("EVSE-DIN configured to disable itself after each charge (2005 bit 13)",
                        extra=self._ctx(config=config))
        wanted = self._config_with_availability(config)
        if wanted != config:
            await self._write(REG_CONFIG_BITS, wanted)
            self._config_bits = wanted
        await self._write(REG_AMPS_CONFIG, self._effective_amps())
        self._synced = True
        log.info("EVSE-DIN synchronised", extra=self._ctx(
            firmware=status.firmware, config=self._config_bits, high_resolution=self._high_resolution(),
            amps_register=self._effective_amps()))

    async def _reconcile(self, status: EvseDinStatus) -> None:
        """Register 1000 is not what the host commanded (board reboot, local button): write it again."""
        pair = (status.amps_config, self._effective_amps())
        if pair != self._last_mismatch:  # once per distinct disagreement, not once per poll
            self._last_mismatch = pair
            log.warning("EVSE-DIN configured current differs from the host's command, rewriting",
                        extra=self._ctx(board=pair[0], commanded=pair[1]))
        await self._write(REG_AMPS_CONFIG, pair[1])

    def _on_status(self, status: EvseDinStatus, problem: str | None = None) -> None:
        self._status = status
        self._answered = True
        self._failures = 0
        if problem is not None and problem != self._problem_logged:
            log.error("EVSE-DIN did not take the host's commands", extra=self._ctx(error=problem))
        self._problem_logged = problem
        if self._link_lost:
            self._link_lost = False
            log.info("EVSE-DIN answers again", extra=self._ctx())
            self.events.publish(DeviceRecovered(self.name, FaultCode.LINK_LOST))
        self._settled.set()
        pilot = status.pilot
        if pilot is not None and pilot != self._pilot:
            self._pilot = pilot
            self.events.publish(PilotChanged(self.name, pilot))
        faults = active_faults(status)
        if problem is not None:
            faults.setdefault(FaultCode.DEVICE_ERROR, problem)
        self._set_faults(faults)
        if status.relay_on != self._relay:
            self._relay = status.relay_on
            self.events.publish(ContactorChanged(self.name, status.relay_on))
        expected = relay_expected(status, power_allowed=self._power_allowed, config_bits=self._config_bits)
        for verdict in self._supervisor.update(time.monotonic(), expected, status.relay_on):
            if verdict.active:
                log.error("EVSE-DIN relay disagrees with the expected state",
                          extra=self._ctx(code=str(verdict.code), expected=expected, relay=status.relay_on))
                self.events.publish(DeviceFault(self.name, verdict.code,
                                                f"relay bit {status.relay_on}, expected {expected}"))
            else:
                self.events.publish(DeviceRecovered(self.name, verdict.code))

    def _on_refused(self, exc: DeviceError) -> None:
        """The board answered the poll or the sync with an exception (or undecodable data): it is
        alive, but not usable. Raised as DEVICE_ERROR until a poll succeeds; no link loss."""
        self._failures = 0
        self._problem = f"refuses: {exc}"
        self._settled.set()
        if FaultCode.DEVICE_ERROR not in self._faults:
            self._set_faults({**self._faults, FaultCode.DEVICE_ERROR: f"board refused: {exc}"})

    def _on_failure(self, exc: DeviceError) -> None:
        """No valid answer (timeout, or only corrupt frames: counted by the bus). One is tolerated;
        ``fail_after`` in a row is a lost link."""
        self._failures += 1
        log.debug("EVSE-DIN poll failed", extra=self._ctx(error=str(exc), failures=self._failures))
        if self._failures >= self.fail_after and not self._link_lost:
            self._link_lost = True
            self._synced = False  # the board may reboot meanwhile: sync again when it is back
            self._problem = "does not answer"
            log.error("EVSE-DIN stopped answering", extra=self._ctx(failures=self._failures, error=str(exc)))
            self.events.publish(DeviceFault(self.name, FaultCode.LINK_LOST,
                                            f"no valid answer to {self._failures} polls: {exc}"))
            self._settled.set()

    def _set_faults(self, faults: dict[FaultCode, str]) -> None:
        for code in [c for c in self._faults if c not in faults]:
            del self._faults[code]
            log.info("EVSE-DIN fault cleared", extra=self._ctx(code=str(code)))
            self.events.publish(DeviceRecovered(self.name, code))
        for code, detail in faults.items():
            if code not in self._faults:
                self._faults[code] = detail
                log.error("EVSE-DIN fault", extra=self._ctx(code=str(code), detail=detail))
                self.events.publish(DeviceFault(self.name, code, detail))

    # --- writes ------------------------------------------------------------------------------------

    async def _command(self, address: int, value: int) -> None:
        """Write a host command. Refused: :class:`EvseDinError`. No answer: :class:`DeviceError`, and the
        command is written again by the next sync."""
        try:
            await self._write(address, value)
        except EvseDinError as exc:
            log.error("EVSE-DIN refused a command", extra=self._ctx(error=str(exc)))
            raise
        except DeviceError:
            self._synced = False
            raise

    async def _command_read(self, address: int) -> int:
        try:
            return (await self.bus.read_holding_registers(self.unit, address, 1))[0]
        except ModbusExceptionResponse as exc:
            raise EvseDinError(f"{self.name}: EVSE-DIN unit {self.unit} refused reading register "
                               f"{address}: {exc}") from exc
        except DeviceError:
            self._synced = False
            raise

    async def _write(self, address: int, value: int) -> None:
        """FC 16 write of one register (as every integration does); the echo confirms it."""
        try:
            await self.bus.write_registers(self.unit, address, [int(value)])
        except ModbusExceptionResponse as exc:
            raise EvseDinError(f"{self.name}: EVSE-DIN unit {self.unit} refused writing {int(value)} to "
                               f"register {address}: {exc}") from exc
        log.debug("EVSE-DIN register written", extra=self._ctx(register=address, value=int(value)))

    # --- helpers -----------------------------------------------------------------------------------

    def _high_resolution(self) -> bool:
        return self._status is not None and self._status.high_resolution(self._config_bits)

    def _effective_amps(self) -> int:
        """Register 1000 as the host wants it now: the offer if power is allowed, else 0 (off)."""
        if not self._power_allowed:
            return 0
        return amps_to_register(self._offered_a, self._high_resolution())

    def _config_with_availability(self, config: int) -> int:
        if self._unavailable is None:
            return config
        if self._unavailable:
            return (config | ConfigBits.DISABLE_EVSE) & ~ConfigBits.DISABLE_AFTER_CHARGE & 0xFFFF
        return config & ~(ConfigBits.DISABLE_EVSE | ConfigBits.DISABLE_AFTER_CHARGE) & 0xFFFF

    def _port(self) -> str:
        return str(getattr(self.bus, "port", "?"))

    def _ctx(self, **extra: object) -> dict[str, object]:
        return {"device": self.name, "port": self._port(), "unit": self.unit, **extra}
