"""Simulated I/O board microcontroller: our board protocol on the device end of a serial wire.

It implements the board side of docs/ioboard-protocol.md, MUSTs included, so the host driver is
tested against the specified behaviour and not against shortcuts: the host keepalive watchdog,
the contactor rule (B7/B8: ALLOW_CONTACTOR is a *permission*; the coil closes while the permission
is held, the PWM runs, the pilot is C or D and no blocking fault is active — state C2/D2 — and opens
when one of these ends, except that the PWM stopping (C2 -> C1) leaves the EV up to ``c1_timeout_s`` to
go to B; a blocking fault, the host timeout, HOST_HELLO and a restart drop the permission, the pilot
leaving C/D does not),
latched and live fault bits, duplicate detection, HELLO repeated while unlinked, STATE on change
and periodically, the cable lock (1.1: SET_LOCK, its feedback in STATE, FAULT after T_lock, no contactor
while a commanded lock is not LOCKED — B15, B16). Physics on the EV side is kept to what the tests need: the
EV's pilot state, a contactor with travel time and a mirror contact, a lock actuator with travel time and a
position switch (``LOCK_STUCK``: it does not move).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from hal.duty_cycle import duty_to_current
from hal.interfaces import DeviceError, LockState, PilotState
from hal.ioboard.codec import DELIMITER, FrameDecoder, encode_frame
from hal.ioboard.messages import (
    BLOCKING_FAULTS,
    MAX_TEXT_LEN,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    SEQ_MODULO,
    Ack,
    AllowContactor,
    BoardHello,
    BoardMessage,
    Capability,
    ClearFaults,
    FaultBit,
    HostHello,
    Keepalive,
    Log,
    LogLevel,
    MessageError,
    Nack,
    NackReason,
    PwmMode,
    RequestState,
    Reset,
    ResetReason,
    SetLock,
    SetPwm,
    StateReport,
    decode_message,
    encode_message,
)
from hal.serial_port import AsyncSerialPort
from sim.devices.interfaces import BoardFault, DeviceCounters

logger = logging.getLogger(__name__)

HELLO_REPEAT_S = 1.0  # while unlinked (spec §5)
TICK_S = 0.005
RESET_DELAY_S = 0.01  # after the ACK of RESET
NORMAL_TEMPERATURE_DC = 250
HOT_TEMPERATURE_DC = 850
CAPABILITIES = Capability.RCD | Capability.TEMPERATURE | Capability.MIRROR_CONTACT | Capability.DIODE_CHECK
LOCK_TRAVEL_S = 0.1  # a typical socket lock motor: 100..600 ms end to end
LOCK_TIMEOUT_S = 1.0  # T_lock: the feedback must confirm within this, else FAULT (spec §5: at most 1000 ms)


class SimulatedIoBoard:
    """:class:`sim.devices.interfaces.SimulatedBoard` speaking our I/O board protocol on ``port``."""

    def __init__(self, port: str, *, baudrate: int = 115200, keepalive_timeout_s: float = 1.0,
                 report_interval_s: float = 0.5, contactor_travel_s: float = 0.02, c1_timeout_s: float = 6.0,
                 protocol_version: tuple[int, int] = (PROTOCOL_MAJOR, PROTOCOL_MINOR),
                 firmware_version: str = "sim-1.1.0", hardware_revision: str = "SIM-A", cable_lock: bool = True,
                 lock_travel_s: float = LOCK_TRAVEL_S, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.port = port
        self.baudrate = baudrate
        self.keepalive_timeout_s = keepalive_timeout_s
        self.report_interval_s = report_interval_s
        self.contactor_travel_s = contactor_travel_s
        self.c1_timeout_s = c1_timeout_s
        self.protocol_version = protocol_version
        self.firmware_version = firmware_version
        self.hardware_revision = hardware_revision
        self.capabilities = CAPABILITIES | Capability.CABLE_LOCK if cable_lock else CAPABILITIES
        self.lock_travel_s = lock_travel_s
        self.lock_timeout_s = lock_timeout_s
        self.counters = DeviceCounters(extra={"keepalive_trips": 0, "duplicates": 0, "nacks": 0,
                                              "frames_sent": 0, "frames_suppressed": 0, "resets": 0})
        self.decoder = FrameDecoder()
        self._codec_dropped = 0
        #: (wall-clock time, duty cycle in ‰ or None when not PWM) of every change of the pilot signal the host asked
        #: for: what a scope on the pilot line would show, for tests that time a limit reaching the EV
        self.pwm_changes: list[tuple[datetime, int | None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = AsyncSerialPort(port, baudrate, name="sim ioboard", on_data=self._on_data)
        self._task: asyncio.Task[None] | None = None
        # physics and injected faults (survive a reset)
        self._ev_pilot = PilotState.A
        self._rcd_present = False
        self._overtemp = False
        self._diode_bad = False
        self._welded = False
        self._stuck_open = False
        self._silent = False
        self._contact = False
        self._lock_stuck = False
        self._lock_pos = False  # the lock's position switch: True = locked (the actuator stays put over a reset)
        self._boot(ResetReason.POWER_ON)

    # --- SimulatedBoard ---------------------------------------------------------------------------

    def set_ev_pilot(self, state: PilotState) -> None:
        self._ev_pilot = state
        self._evaluate()

    @property
    def offered_current_a(self) -> float:
        if self._pwm.mode is not PwmMode.PWM or self._pwm.duty_permille is None:
            return 0.0
        return duty_to_current(self._pwm.duty_permille / 10)

    @property
    def contactor_closed(self) -> bool:
        return self._contact

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
                self._lock_stuck = active
        logger.info("sim ioboard %s: fault %s %s", self.port, fault.value, "injected" if active else "removed")
        self._move_contact(time.monotonic())
        self._evaluate()

    # --- observation for tests -----------------------------------------------------------------------

    @property
    def pilot(self) -> PilotState:
        """The pilot state the board senses."""
        return PilotState.F if self._pwm.mode is PwmMode.F else self._ev_pilot

    @property
    def pwm(self) -> SetPwm:
        """The pilot output applied now."""
        return self._pwm

    @property
    def contactor_cmd(self) -> bool:
        """Whether the board drives the contactor coil."""
        return self._coil

    @property
    def permission(self) -> bool:
        """Whether the board holds the host's permission to energize (ALLOW_CONTACTOR on)."""
        return self._permission

    @property
    def faults(self) -> FaultBit:
        return self._faults

    @property
    def lock_state(self) -> LockState | None:
        """The lock feedback the board reports (None without CABLE_LOCK)."""
        return self._lock_state if self.capabilities & Capability.CABLE_LOCK else None

    @property
    def cable_locked(self) -> bool:
        """Whether the lock physically holds the cable (its position switch)."""
        return self._lock_pos

    @property
    def linked(self) -> bool:
        return self._linked

    @property
    def frames_received(self) -> int:
        return self.counters.requests

    @property
    def bad_frames(self) -> int:
        return self.counters.bad_frames

    @property
    def keepalive_trips(self) -> int:
        return self.counters.extra["keepalive_trips"]

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._port.open()
        self._hello_due = 0.0
        self._task = asyncio.create_task(self._run(), name=f"sim-ioboard-{self.port}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._port.close()

    async def __aenter__(self) -> SimulatedIoBoard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def reboot(self, reason: ResetReason = ResetReason.POWER_ON) -> None:
        """Restart the microcontroller: outputs safe, link state and sequence numbers forgotten."""
        self.counters.extra["resets"] += 1
        logger.info("sim ioboard %s: reboot (%s)", self.port, reason.name)
        self._boot(reason)
        now = time.monotonic()
        self._hello_due = now + HELLO_REPEAT_S
        self._send(self._hello_message())  # B1: the first frame after a restart
        self._evaluate(now)

    def _boot(self, reason: ResetReason) -> None:
        self._reset_reason = reason
        self._pwm = SetPwm(PwmMode.X1)
        self._permission = False
        self._coil = False
        self._coil_changed_at = time.monotonic()
        self._c1_since: float | None = None
        self._faults = FaultBit.MCU_WATCHDOG if reason is ResetReason.MCU_WATCHDOG else FaultBit(0)
        self._lock_wanted: bool | None = None  # no SET_LOCK since the restart: the lock stays where it is
        self._lock_since = time.monotonic()
        self._lock_reached = False
        self._lock_state = LockState.LOCKED if self._lock_pos else LockState.UNLOCKED
        self._linked = False
        self._last_host_rx = time.monotonic()
        self._tx_seq = 0
        self._last_cmd_seq: int | None = None
        self._last_answer: Ack | Nack | None = None
        self._hello_due = time.monotonic()
        self._last_report: tuple[object, ...] | None = None
        self._last_report_at = 0.0
        self.decoder.reset()

    # --- the firmware's main loop --------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            if not self._linked and now >= self._hello_due:
                self._hello_due = now + HELLO_REPEAT_S
                self._send(self._hello_message())
            if self._linked and not self._faults & FaultBit.HOST_TIMEOUT \
                    and now - self._last_host_rx > self.keepalive_timeout_s:
                self._trip_watchdog(now)
            self._move_contact(now)
            self._move_lock(now)
            self._evaluate(now)
            await asyncio.sleep(TICK_S)

    def _trip_watchdog(self, now: float) -> None:
        """Host silent too long: PWM off (X1), permission dropped, contactor open, HOST_TIMEOUT latched
        (spec §4.4)."""
        self.counters.extra["keepalive_trips"] += 1
        self._faults |= FaultBit.HOST_TIMEOUT
        self._pwm = SetPwm(PwmMode.X1)
        self._permission = False
        self._set_coil(False, now)
        silent_ms = (now - self._last_host_rx) * 1000
        logger.warning("sim ioboard %s: host silent for %.0f ms: PWM off, permission dropped, contactor open",
                       self.port, silent_ms)
        self._send(Log(LogLevel.WARNING, f"host keepalive timeout after {silent_ms:.0f} ms"))

    def _set_coil(self, on: bool, now: float) -> None:
        if on != self._coil:
            self._coil = on
            self._coil_changed_at = now

    def _move_contact(self, now: float) -> None:
        if self._welded:
            self._contact = True
        elif self._stuck_open:
            self._contact = False
        elif self._contact != self._coil and now - self._coil_changed_at >= self.contactor_travel_s:
            self._contact = self._coil

    def _move_lock(self, now: float) -> None:
        wanted = self._lock_wanted
        if (wanted is not None and wanted != self._lock_pos and not self._lock_stuck
                and now - self._lock_since >= self.lock_travel_s):
            self._lock_pos = wanted

    def _update_lock_state(self, now: float) -> None:
        """B15: the feedback, MOVING while the actuator travels, FAULT once T_lock passed without reaching the
        commanded position (the drive stops then; the next SET_LOCK tries again)."""
        wanted = self._lock_wanted
        if wanted is None or wanted == self._lock_pos:
            state = LockState.LOCKED if self._lock_pos else LockState.UNLOCKED
            self._lock_reached = wanted is not None
        elif self._lock_reached:
            state = LockState.FAULT  # it left the position it had reached (forced): not driven again by itself
        elif now - self._lock_since < self.lock_timeout_s:
            state = LockState.MOVING
        else:
            state = LockState.FAULT
        if state != self._lock_state:
            self._lock_state = state
            if state is LockState.FAULT:
                self._send(Log(LogLevel.ERROR, f"cable lock did not reach {'locked' if wanted else 'unlocked'} "
                                               f"within {self.lock_timeout_s * 1000:.0f} ms"))

    def _evaluate(self, now: float | None = None) -> None:
        """Recompute live faults, enforce the interlock, and report what changed."""
        now = time.monotonic() if now is None else now
        live = FaultBit(0)
        if self._overtemp:
            live |= FaultBit.OVERTEMPERATURE
        if self._diode_bad:
            live |= FaultBit.DIODE_FAILURE
        if self.pilot is PilotState.E:
            live |= FaultBit.PILOT_SHORT
        latched = self._faults & ~(FaultBit.OVERTEMPERATURE | FaultBit.DIODE_FAILURE | FaultBit.PILOT_SHORT)
        if self._rcd_present:
            latched |= FaultBit.RCD_TRIP
        self._faults = latched | live
        blocking = self._faults & BLOCKING_FAULTS
        if blocking and self._permission:  # B8: a blocking fault takes the permission with it
            self._permission = False
            logger.warning("sim ioboard %s: blocking faults %#x: permission dropped", self.port, int(blocking))
            self._send(Log(LogLevel.WARNING, f"blocking faults {int(blocking):#x}: permission to energize dropped"))
        self._update_lock_state(now)
        self._set_coil(self._coil_wanted(blocking, now), now)
        snapshot = (self.pilot, self._pwm, self._coil, self._contact, self._faults, self._lock_state)
        if snapshot != self._last_report or now - self._last_report_at >= self.report_interval_s:
            self._last_report, self._last_report_at = snapshot, now
            if self._port.is_open:
                self._send(self._state_message())

    def _coil_wanted(self, blocking: FaultBit, now: float) -> bool:
        """B7/B8: closed in C2/D2 (permission, PWM, pilot C/D, no blocking fault); leaving C/D opens but keeps
        the permission; the PWM stopping with the contactor closed (C1/D1) leaves the EV ``c1_timeout_s``
        to go to B (IEC 61851-1 Table A.6 sequence 10.2), F opens at once."""
        ready = (self._permission and self.pilot in (PilotState.C, PilotState.D) and not blocking
                 and (self._lock_wanted is None or (self._lock_wanted and self._lock_state is LockState.LOCKED)))  # B16
        if ready and self._pwm.mode is PwmMode.PWM:
            coil = True
        elif ready and self._pwm.mode is PwmMode.X1 and self._coil:
            if self._c1_since is None:
                self._c1_since = now
            coil = now - self._c1_since < self.c1_timeout_s
        else:
            coil = False
        if not coil or self._pwm.mode is not PwmMode.X1:
            self._c1_since = None
        return coil

    def _hello_message(self) -> BoardHello:
        major, minor = self.protocol_version
        return BoardHello(major, minor, self.firmware_version, self.hardware_revision, self.capabilities,
                          round(self.keepalive_timeout_s * 1000), round(self.report_interval_s * 1000),
                          self._reset_reason)

    def _state_message(self) -> StateReport:
        temp = HOT_TEMPERATURE_DC if self._overtemp else NORMAL_TEMPERATURE_DC
        return StateReport(self.pilot, self._pwm.mode, self._pwm.duty_permille, self._coil, self._contact,
                           self._faults, temp, self.lock_state)

    # --- commands ------------------------------------------------------------------------------------

    def _on_payload(self, payload: bytes) -> None:
        try:
            envelope = decode_message(payload)
        except MessageError as exc:
            self.counters.bad_frames += 1
            if exc.seq is not None:  # readable seq: the host gets a NACK instead of a timeout
                self._last_cmd_seq = exc.seq
                self._answer(Nack(exc.seq, exc.reason, _clip(str(exc))))
            return
        msg, seq = envelope.message, envelope.seq
        self.counters.requests += 1
        self._last_host_rx = time.monotonic()
        if isinstance(msg, HostHello):
            self._last_cmd_seq = None  # a new host session: its seq may repeat the old one's
        elif seq == self._last_cmd_seq and self._last_answer is not None:
            self.counters.extra["duplicates"] += 1
            self._answer(self._last_answer)  # retransmission: answer again, do not execute again
            return
        self._last_cmd_seq = seq
        self._execute(seq, msg)

    def _execute(self, seq: int, msg: object) -> None:
        now = time.monotonic()
        match msg:
            case HostHello():
                self._pwm = SetPwm(PwmMode.X1)  # a new host session starts from the safe state
                self._permission = False
                self._set_coil(False, now)
                if msg.proto_major != self.protocol_version[0]:
                    self._linked = False
                    self._answer(Nack(seq, NackReason.VERSION_MISMATCH,
                                      f"board speaks {self.protocol_version[0]}.x, host {msg.proto_major}."
                                      f"{msg.proto_minor}"))
                else:
                    self._linked = True
                    self._answer(Ack(seq))
                self._send(self._hello_message())
            case Keepalive():
                self._answer(Ack(seq))
            case SetPwm():
                if msg.mode is PwmMode.PWM and not self._linked:
                    self._answer(Nack(seq, NackReason.NOT_LINKED, "PWM needs a HOST_HELLO first"))
                elif msg.mode is PwmMode.PWM and self._faults & FaultBit.HOST_TIMEOUT:
                    self._answer(Nack(seq, NackReason.FAULT_ACTIVE, "clear HOST_TIMEOUT first"))
                else:
                    duty = msg.duty_permille if msg.mode is PwmMode.PWM else None
                    if not self.pwm_changes or self.pwm_changes[-1][1] != duty:
                        self.pwm_changes.append((datetime.now(UTC), duty))
                    self._pwm = msg
                    self._answer(Ack(seq))
            case AllowContactor(on=False):
                self._permission = False  # _evaluate opens the coil
                self._answer(Ack(seq))
            case AllowContactor(on=True):  # B7: a permission, accepted in any pilot state
                if not self._linked:
                    self._answer(Nack(seq, NackReason.NOT_LINKED, "contactor needs a HOST_HELLO first"))
                elif self._faults & BLOCKING_FAULTS:
                    self._answer(Nack(seq, NackReason.FAULT_ACTIVE,
                                      f"blocking faults {int(self._faults & BLOCKING_FAULTS):#x}"))
                else:
                    self._permission = True  # _evaluate closes the coil if the pilot is C or D
                    self._answer(Ack(seq))
            case RequestState():
                self._answer(Ack(seq))
                self._last_report_at = now
                self._last_report = (self.pilot, self._pwm, self._coil, self._contact, self._faults, self._lock_state)
                self._send(self._state_message())
            case ClearFaults():
                clearable = msg.mask & ~(FaultBit.OVERTEMPERATURE | FaultBit.DIODE_FAILURE | FaultBit.PILOT_SHORT)
                if self._rcd_present:
                    clearable &= ~FaultBit.RCD_TRIP
                self._faults &= ~clearable
                self._answer(Ack(seq))
            case SetLock():
                if not self.capabilities & Capability.CABLE_LOCK:
                    self._answer(Nack(seq, NackReason.UNSUPPORTED, "no cable lock on this board"))
                elif not self._linked:
                    self._answer(Nack(seq, NackReason.NOT_LINKED, "the lock needs a HOST_HELLO first"))
                else:
                    self._lock_wanted = msg.locked  # a new attempt, also after a FAULT
                    self._lock_since = now
                    self._lock_reached = False
                    self._answer(Ack(seq))
            case Reset():
                self._answer(Ack(seq))
                assert self._loop is not None
                self._loop.call_later(RESET_DELAY_S, self.reboot, ResetReason.HOST_REQUEST)
            case _:
                self._answer(Nack(seq, NackReason.UNKNOWN_TYPE, f"{type(msg).__name__} is not a command"))
        self._evaluate(now)

    def _answer(self, answer: Ack | Nack) -> None:
        self._last_answer = answer
        if isinstance(answer, Nack):
            self.counters.extra["nacks"] += 1
        self._send(answer)

    # --- serial I/O ----------------------------------------------------------------------------------

    def _send(self, msg: BoardMessage) -> None:
        if self._silent:
            self.counters.extra["frames_suppressed"] += 1
            return
        payload = encode_message(self._tx_seq, msg)
        self._tx_seq = (self._tx_seq + 1) % SEQ_MODULO
        self.counters.extra["frames_sent"] += 1
        self._write(bytes([DELIMITER]) + encode_frame(payload))

    def _on_data(self, data: bytes) -> None:
        payloads = self.decoder.feed(data)
        dropped = self.decoder.stats.dropped
        if dropped != self._codec_dropped:
            self.counters.bad_frames += dropped - self._codec_dropped
            self._codec_dropped = dropped
        for payload in payloads:
            self._on_payload(payload)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(DeviceError):  # closed, or failed just now (the port logged that)
            self._port.write(data)


def _clip(text: str) -> str:
    raw = text.encode()[:MAX_TEXT_LEN]
    return raw.decode(errors="ignore")
