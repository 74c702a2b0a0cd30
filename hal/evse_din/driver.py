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
* ``set_cable_lock``: not supported. The EVSE-DIN has no lock actuator output and no lock feedback input (its
  register map has neither), so ``lock_supported`` is False and ``set_cable_lock`` raises
  :class:`~hal.interfaces.LockUnsupportedError`; the configuration refuses ``cable = "socket_with_lock"`` on it.

The registers and their decoding are in :mod:`hal.evse_din.codec`; this module is the polling driver
:class:`EvseDinBoard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from hal.contactor import ContactorSupervisor
from hal.events import EventStream
from hal.evse_din.codec import (
    DEFAULT_UNIT,
    REG_AMPS_CONFIG,
    REG_COMMAND,
    REG_CONFIG_BITS,
    STATUS_BLOCK_COUNT,
    STATUS_BLOCK_START,
    STATUS_FAULT_CODES,
    CommandBits,
    ConfigBits,
    EvseDinError,
    EvseDinStatus,
    active_faults,
    amps_to_register,
    decode_status,
    register_to_amps,
    relay_expected,
)
from hal.faults import FaultLatch
from hal.interfaces import (
    BoardEvent,
    ContactorChanged,
    DeviceError,
    FaultCode,
    LinkStats,
    LockState,
    LockUnsupportedError,
    PilotChanged,
    PilotState,
)
from hal.modbus_bus import ModbusBus, ModbusExceptionResponse
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)


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
        self._faults = FaultLatch(name, self.events)  # the status block's, the link's and the relay's faults
        self._failures = 0
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
        return FaultCode.LINK_LOST in self._faults

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

    @property
    def lock_supported(self) -> bool:
        return False  # no lock output or feedback in the EVSE-DIN's registers

    @property
    def lock_state(self) -> LockState | None:
        return None

    async def set_cable_lock(self, locked: bool) -> LockState:
        raise LockUnsupportedError(f"{self.name}: the EVSE-DIN board has no cable lock actuator; configure this "
                                   "connector as a socket without a lock or a tethered cable")

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
            if self.link_lost:
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
            log.warning("EVSE-DIN did not take the host's commands", extra=self._ctx(error=problem))
        self._problem_logged = problem
        if self._faults.clear(FaultCode.LINK_LOST):
            log.info("EVSE-DIN answers again", extra=self._ctx())
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
            if not verdict.active:
                self._faults.clear(verdict.code)
            elif self._faults.raise_fault(verdict.code, f"relay bit {status.relay_on}, expected {expected}"):
                log.warning("EVSE-DIN relay disagrees with the expected state",
                          extra=self._ctx(code=str(verdict.code), expected=expected, relay=status.relay_on))

    def _on_refused(self, exc: DeviceError) -> None:
        """The board answered the poll or the sync with an exception (or undecodable data): it is
        alive, but not usable. Raised as DEVICE_ERROR until a poll succeeds; no link loss."""
        self._failures = 0
        self._problem = f"refuses: {exc}"
        self._settled.set()
        self._raise_fault(FaultCode.DEVICE_ERROR, f"board refused: {exc}")

    def _on_failure(self, exc: DeviceError) -> None:
        """No valid answer (timeout, or only corrupt frames: counted by the bus). One is tolerated;
        ``fail_after`` in a row is a lost link."""
        self._failures += 1
        log.debug("EVSE-DIN poll failed", extra=self._ctx(error=str(exc), failures=self._failures))
        if self._failures >= self.fail_after and not self.link_lost:
            self._synced = False  # the board may reboot meanwhile: sync again when it is back
            self._problem = "does not answer"
            log.warning("EVSE-DIN stopped answering", extra=self._ctx(failures=self._failures, error=str(exc)))
            self._faults.raise_fault(FaultCode.LINK_LOST, f"no valid answer to {self._failures} polls: {exc}")
            self._settled.set()

    def _set_faults(self, faults: dict[FaultCode, str]) -> None:
        """A status block lists the board's faults in full: clear those it no longer shows, raise the new ones."""
        for code in self._faults.clear_all(among=STATUS_FAULT_CODES, keep=faults):
            log.info("EVSE-DIN fault cleared", extra=self._ctx(code=str(code)))
        for code, detail in faults.items():
            self._raise_fault(code, detail)

    def _raise_fault(self, code: FaultCode, detail: str) -> None:
        if self._faults.raise_fault(code, detail):
            log.warning("EVSE-DIN fault", extra=self._ctx(code=str(code), detail=detail))

    # --- writes ------------------------------------------------------------------------------------

    async def _command(self, address: int, value: int) -> None:
        """Write a host command. Refused: :class:`EvseDinError`. No answer: :class:`DeviceError`, and the
        command is written again by the next sync."""
        try:
            await self._write(address, value)
        except EvseDinError as exc:
            log.warning("EVSE-DIN refused a command", extra=self._ctx(error=str(exc)))
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
