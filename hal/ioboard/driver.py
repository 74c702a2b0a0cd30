"""Host driver for our safety I/O board (docs/ioboard-protocol.md) over a UART.

The microcontroller generates the pilot PWM, senses the pilot, switches the contactor and enforces
the safety rules (keepalive watchdog, no contactor outside C2/D2 or with a blocking fault). This driver
only translates: offered amps -> SET_PWM duty, allow_power -> ALLOW_CONTACTOR, STATE reports -> events.

ALLOW_CONTACTOR is a *permission* (IEC 61851 "ready to supply", see ``EvseBoard.allow_power``): the
board closes the contactor while it holds the permission, the PWM runs and the EV is in C/D (state
C2/D2), opens it when the EV leaves C/D and keeps the permission, so an EV pausing and resuming needs
no host command. (Stopping the PWM opens it too, after at most T_c1 if the EV stays in C.) The
board drops the permission by itself on a blocking fault or a host timeout. Contactor supervision
therefore compares the mirror contact with the state the board *should* be in (permission, pilot
and faults as the board reports them), not with the host's last command.

Commands are stop-and-wait: one command in flight, retransmitted with the same sequence number
until the board ACKs or NACKs it (bounded). Keepalives are fire-and-forget and skipped while a
command is in flight, since any host frame feeds the board's watchdog.

Re-synchronisation: after a board reset (unsolicited BOARD_HELLO), after the board's keepalive
watchdog tripped (HOST_TIMEOUT in a STATE), and after the link came back, the driver replays the
hello handshake where needed, clears HOST_TIMEOUT and re-applies what the firmware last asked for:
the pilot output and the permission. Those interruptions are the link's, not the firmware's
decisions, so the firmware's permission stands. A blocking fault is different: the board dropped
the permission because of it, the driver forgets it too, and the firmware grants it again once
the fault has cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import NoReturn

from hal.contactor import ContactorSupervisor
from hal.duty_cycle import current_to_duty
from hal.events import EventStream
from hal.faults import FaultLatch
from hal.interfaces import (
    BoardEvent,
    ContactorChanged,
    DeviceError,
    FaultCode,
    LinkStats,
    LockChanged,
    LockState,
    LockUnsupportedError,
    PilotChanged,
    PilotState,
)
from hal.ioboard.codec import DELIMITER, FrameDecoder, encode_frame
from hal.ioboard.messages import (
    BLOCKING_FAULTS,
    LATCHED_FAULTS,
    PROTOCOL_MAJOR,
    PROTOCOL_MINOR,
    SEQ_MODULO,
    Ack,
    AllowContactor,
    BoardHello,
    Capability,
    ClearFaults,
    FaultBit,
    HostHello,
    HostMessage,
    Keepalive,
    Log,
    LogLevel,
    MessageError,
    Nack,
    NackReason,
    PwmMode,
    RequestState,
    Reset,
    SetLock,
    SetPwm,
    StateReport,
    decode_message,
    encode_message,
)
from hal.serial_port import AsyncSerialPort
from hal.tasks import Spawn, create_task

logger = logging.getLogger(__name__)

ACK_TIMEOUT_S = 0.1  # the board answers within 20 ms (spec §5); this leaves room for a busy host
MAX_ATTEMPTS = 4  # transmissions of one command before giving up
HELLO_REPLY_TIMEOUT_S = 0.5  # BOARD_HELLO follows the ACK of HOST_HELLO at once
MAX_TX_BACKLOG = 16 * 1024  # bytes queued for a stalled port before we drop them
HOST_NAME = "evse-agent"
#: How long set_cable_lock waits for the lock's feedback to settle: the board's T_lock (at most 1 s, spec §5)
#: plus its report after the change, with room for a busy host.
LOCK_SETTLE_S = 2.0

_BIT_FAULTS: dict[FaultBit, tuple[FaultCode, str]] = {
    FaultBit.RCD_TRIP: (FaultCode.RCD_TRIP, "residual current detected"),
    FaultBit.OVERTEMPERATURE: (FaultCode.OVERTEMPERATURE, "board over temperature"),
    FaultBit.DIODE_FAILURE: (FaultCode.DIODE_FAILURE, "EV diode check failed"),
    FaultBit.PILOT_SHORT: (FaultCode.DEVICE_ERROR, "pilot short (state E)"),
    FaultBit.HOST_TIMEOUT: (FaultCode.DEVICE_ERROR, "board keepalive watchdog tripped (host silent)"),
    FaultBit.MCU_WATCHDOG: (FaultCode.DEVICE_ERROR, "board restarted by its hardware watchdog"),
    FaultBit.SELFTEST_FAILED: (FaultCode.DEVICE_ERROR, "board self test failed"),
}
# Every code the board's fault bits can raise (an unknown bit is a DEVICE_ERROR): what a STATE report lists in full.
BOARD_FAULT_CODES = frozenset({code for code, _ in _BIT_FAULTS.values()} | {FaultCode.DEVICE_ERROR})


def faults_by_code(bits: FaultBit) -> dict[FaultCode, frozenset[str]]:
    """Group the board's fault bits by the :class:`FaultCode` they raise, with a detail per bit."""
    active: dict[FaultCode, set[str]] = {}
    for bit in range(32):
        if not int(bits) & (1 << bit):
            continue
        code, detail = _BIT_FAULTS.get(FaultBit(1 << bit), (FaultCode.DEVICE_ERROR, f"unknown fault bit {bit}"))
        active.setdefault(code, set()).add(detail)
    return {code: frozenset(details) for code, details in active.items()}


def contactor_expected(report: StateReport, permission: bool, lock_wanted: bool | None = None) -> bool:
    """Whether the board's contactor should be closed (spec B7/B8): state C2/D2 — it holds the permission,
    the PWM runs, the pilot is C or D and no blocking fault is active — and, once the host drives the cable
    lock (``lock_wanted`` not None: its last SET_LOCK), the lock is asked for and reports LOCKED (B16). The
    commanded side of contactor supervision. In C1/D1 (PWM stopped, EV still in C/D) the board keeps a closed
    contactor for at most T_c1 while the EV goes to B, and closes none: its coil output says which, and is what
    to expect."""
    if not (permission and report.pilot in (PilotState.C, PilotState.D) and not report.faults & BLOCKING_FAULTS):
        return False
    if lock_wanted is not None and not (lock_wanted and report.lock is LockState.LOCKED):
        return False
    if report.pwm_mode is PwmMode.PWM:
        return True
    return report.pwm_mode is PwmMode.X1 and report.contactor_cmd


def fault_names(bits: FaultBit) -> str:
    """``RCD_TRIP|HOST_TIMEOUT`` for log lines and errors; unknown bits as hex."""
    names = [bit.name or "" for bit in FaultBit if bits & bit]
    unknown = int(bits) & ~sum(int(bit) for bit in FaultBit)
    if unknown:
        names.append(f"{unknown:#x}")
    return "|".join(names) or "none"


def pwm_for(offered_amps: float, unavailable: bool) -> SetPwm:
    """The SET_PWM that offers ``offered_amps`` (X1 below 6 A) or says "not available" (F)."""
    if unavailable:
        return SetPwm(PwmMode.F)
    duty = current_to_duty(offered_amps)
    return SetPwm(PwmMode.X1) if duty is None else SetPwm.percent(duty)


class IoBoard:
    """:class:`hal.interfaces.EvseBoard` for our I/O board protocol (COBS + CBOR + CRC-32 on a UART)."""

    def __init__(self, name: str, port: str, *, baudrate: int = 115200, keepalive_s: float = 0.25,
                 link_timeout_s: float = 1.0, contactor_settle_s: float = 0.5, spawn: Spawn = create_task) -> None:
        self.name = name
        self._spawn = spawn
        self.port = port
        self.baudrate = baudrate
        self.keepalive_s = keepalive_s
        self.link_timeout_s = link_timeout_s
        self.events: EventStream[BoardEvent] = EventStream()
        self.stats = LinkStats()
        self.decoder = FrameDecoder()
        self.board_frames_missed = 0  # gaps in the board's sequence numbers
        self._supervisor = ContactorSupervisor(contactor_settle_s)
        self._port = AsyncSerialPort(port, baudrate, name=name, on_data=self._feed, on_lost=self._port_failed,
                                     device="I/O board", max_backlog=MAX_TX_BACKLOG, stats=self.stats)
        self._codec_dropped = 0
        self._seq = 0
        self._lock = asyncio.Lock()
        self._pending: tuple[int, HostMessage, asyncio.Future[Ack | Nack]] | None = None
        self._hello_after_seq: int | None = None  # seq of our HOST_HELLO whose reply we await
        self._hello_armed = False  # its ACK/NACK arrived: the next BOARD_HELLO is the reply
        self._hello_waiter: asyncio.Future[BoardHello] | None = None
        self._state_waiter: asyncio.Future[StateReport] | None = None
        self._hello: BoardHello | None = None
        self._state: StateReport | None = None
        self._pilot: PilotState | None = None
        self._contactor_closed = False
        self._faults = FaultLatch(name, self.events)  # the board's fault bits, the link, the contactor
        self._offered_amps = 0.0
        self._unavailable = False
        # The permission to energize as the firmware last set it (re-sent on re-sync), and as the
        # board holds it as far as we know (None: an ALLOW_CONTACTOR got no answer, fate unknown).
        self._permission = False
        self._supervise_wake = asyncio.Event()  # something the supervise loop checks has changed
        self._board_permission_value: bool | None = False
        # The cable lock: what the firmware last asked for (None: never; re-sent on re-sync) and the feedback.
        self._lock_wanted: bool | None = None
        self._lock_state: LockState | None = None
        self._lock_moved = asyncio.Event()  # a STATE brought a new lock feedback
        self._last_rx = 0.0
        self._last_board_seq: int | None = None
        self._started = False
        self._resync_event = asyncio.Event()
        self._resync_hello = False
        self._resyncing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._next_reopen = 0.0

    # --- EvseBoard --------------------------------------------------------------------------------

    @property
    def pilot_state(self) -> PilotState | None:
        return self._pilot

    @property
    def contactor_closed(self) -> bool:
        return self._contactor_closed

    @property
    def board_hello(self) -> BoardHello | None:
        """The board's identity and timing from its last BOARD_HELLO."""
        return self._hello

    @property
    def state(self) -> StateReport | None:
        """The board's last STATE report."""
        return self._state

    @property
    def link_up(self) -> bool:
        return self._started and not self._link_lost

    @property
    def _link_lost(self) -> bool:
        return FaultCode.LINK_LOST in self._faults

    @property
    def power_allowed(self) -> bool:
        """The permission to energize as the firmware last granted it, unless a blocking fault has
        made the board drop it since (then the firmware has to grant it again)."""
        return self._permission

    @property
    def lock_supported(self) -> bool:
        """The board announced a cable lock with feedback (capability CABLE_LOCK, protocol 1.1)."""
        return self._hello is not None and bool(self._hello.capabilities & Capability.CABLE_LOCK)

    @property
    def lock_state(self) -> LockState | None:
        return self._lock_state

    async def start(self) -> None:
        """Open the port, handshake (version check) and read the first STATE; raises DeviceError."""
        if self._started:
            return
        self._open_port()
        try:
            self._write(bytes([DELIMITER]))  # ends any partial frame in the board's receiver
            async with self._lock:
                hello = await self._handshake_locked()
                await self._command_locked(ClearFaults(FaultBit.HOST_TIMEOUT))
                await self._request_state_locked()
        except BaseException:
            self._port.close()
            raise
        self._started = True
        self._last_rx = time.monotonic()
        self._tasks = [self._spawn(coro, name=f"{self.name}-{what}") for what, coro in (
            ("keepalive", self._keepalive_loop()), ("supervise", self._supervise_loop()),
            ("resync", self._resync_loop()))]
        logger.info("%s: I/O board on %s up: protocol %d.%d, firmware %s, hardware %s, watchdog %d ms",
                    self.name, self.port, hello.proto_major, hello.proto_minor, hello.firmware_version,
                    hello.hardware_revision, hello.keepalive_timeout_ms)

    async def close(self) -> None:
        """Open the contactor and stop the PWM (best effort), then release the port."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        if self._started and self._port.is_open:
            self._permission = False
            try:
                async with self._lock:
                    await self._allow_locked(False, attempts=2)
                    await self._command_locked(SetPwm(PwmMode.X1), attempts=2)
            except DeviceError as exc:
                logger.warning("%s: could not leave the board in its safe state on close: %s", self.name, exc)
        self._started = False
        self._port.close()

    async def set_offered_current(self, amps: float) -> None:
        self._offered_amps = amps
        await self._apply_pwm()

    async def set_unavailable(self, unavailable: bool) -> None:
        self._unavailable = unavailable
        await self._apply_pwm()

    async def allow_power(self, on: bool) -> None:
        """Send ALLOW_CONTACTOR(``on``) whatever the pilot state: the board closes by itself in C2/D2.

        Raises :class:`DeviceError` if the board refuses (a blocking fault is active, or the link is
        not set up) — then nothing was granted — or does not answer. An unanswered permission stays
        what the firmware asked for: the driver re-sends it at once in the background and at every
        re-sync, since the firmware does not repeat an unchanged decision.
        """
        async with self._lock:
            self._permission = on
            try:
                await self._allow_locked(on)
            except DeviceError:
                if self._board_permission is None:
                    self._request_resync(hello=False)
                elif on:  # refused: the command had no effect, nothing is granted
                    self._permission = False
                raise

    async def set_cable_lock(self, locked: bool) -> LockState:
        """SET_LOCK, then a fresh STATE (the feedback after the command), then wait up to LOCK_SETTLE_S for the
        feedback to reach the commanded position or FAULT (the board gives up after its T_lock). The firmware's
        wish is kept and re-sent after a board restart, like the permission."""
        if not self.lock_supported:
            raise LockUnsupportedError(f"{self.name}: the I/O board on {self.port} has no cable lock (no CABLE_LOCK "
                                       "capability in its BOARD_HELLO)")
        target = LockState.LOCKED if locked else LockState.UNLOCKED
        async with self._lock:
            self._lock_wanted = locked
            await self._command_locked(SetLock(locked))
            await self._request_state_locked()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOCK_SETTLE_S):
                while self._lock_state not in (target, LockState.FAULT):
                    self._lock_moved.clear()
                    await self._lock_moved.wait()
        state = self._lock_state or LockState.MOVING
        if state is not target:
            logger.warning("%s: cable lock did not reach %s: feedback %s", self.name, target.value, state.value)
        return state

    # --- extras beyond EvseBoard --------------------------------------------------------------------

    async def clear_faults(self, mask: FaultBit = LATCHED_FAULTS) -> None:
        """Ask the board to clear latched faults (e.g. an RCD trip) whose cause has gone."""
        async with self._lock:
            await self._command_locked(ClearFaults(mask))

    async def request_state(self) -> StateReport:
        """A fresh STATE report from the board."""
        async with self._lock:
            return await self._request_state_locked()

    async def reset_board(self) -> None:
        """Restart the board's microcontroller; the driver re-syncs when its BOARD_HELLO arrives."""
        async with self._lock:
            await self._command_locked(Reset(), attempts=1)

    # --- commands -----------------------------------------------------------------------------------

    async def _allow_locked(self, on: bool, attempts: int = MAX_ATTEMPTS) -> None:
        """ALLOW_CONTACTOR(``on``), tracking what the board holds; a NACK raises a DeviceError that
        names the blocking faults."""
        msg = AllowContactor(on)
        try:
            answer = await self._transact_locked(msg, attempts)  # the answer updates _board_permission
        except DeviceError:
            self._board_permission = None
            raise
        if isinstance(answer, Nack):
            if answer.reason is NackReason.FAULT_ACTIVE:
                faults = self._state.faults & BLOCKING_FAULTS if self._state is not None else FaultBit(0)
                self._refused(msg, answer, f"the permission to energize while a blocking fault is active "
                                           f"({fault_names(faults)})")
            self._refused(msg, answer)

    async def _apply_pwm(self) -> None:
        async with self._lock:
            await self._command_locked(pwm_for(self._offered_amps, self._unavailable))

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) % SEQ_MODULO
        return seq

    async def _transact_locked(self, msg: HostMessage, attempts: int = MAX_ATTEMPTS) -> Ack | Nack:
        """Send ``msg`` and wait for its ACK/NACK, retransmitting the same seq; caller holds the lock."""
        loop = asyncio.get_running_loop()
        seq = self._next_seq()
        payload = encode_message(seq, msg)
        fut: asyncio.Future[Ack | Nack] = loop.create_future()
        self._pending = (seq, msg, fut)
        self.stats.requests += 1
        try:
            for attempt in range(1, attempts + 1):
                self._send_payload(payload)
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                    # that races with the answer, and close() would then wait for ever.
                    async with asyncio.timeout(ACK_TIMEOUT_S):
                        return await asyncio.shield(fut)
                except TimeoutError:
                    self.stats.timeouts += 1
                    logger.debug("%s: no answer to %s seq=%d (attempt %d/%d)", self.name,
                                 type(msg).__name__, seq, attempt, attempts)
        finally:
            self._pending = None
        raise DeviceError(f"{self.name}: I/O board on {self.port} did not acknowledge {type(msg).__name__} "
                          f"(seq {seq}) after {attempts} attempts")

    async def _command_locked(self, msg: HostMessage, attempts: int = MAX_ATTEMPTS) -> None:
        answer = await self._transact_locked(msg, attempts)
        if isinstance(answer, Nack):
            self._refused(msg, answer)

    def _refused(self, msg: HostMessage, answer: Nack, what: str | None = None) -> NoReturn:
        """Count, log and raise a NACK as a DeviceError naming the command, reason and board text."""
        self.stats.exceptions += 1
        text = f": {answer.text}" if answer.text else ""
        what = what or type(msg).__name__
        logger.warning("%s: I/O board on %s refused %s: %s%s", self.name, self.port, what, answer.reason.name, text)
        raise DeviceError(f"{self.name}: I/O board on {self.port} refused {what}: {answer.reason.name}{text}")

    async def _handshake_locked(self) -> BoardHello:
        """HOST_HELLO -> ACK + BOARD_HELLO; refuses a board of another major protocol version."""
        loop = asyncio.get_running_loop()
        self._hello_waiter = loop.create_future()
        self._hello_armed = False
        self._hello_after_seq = self._seq  # the seq _transact_locked is about to use
        try:
            answer = await self._transact_locked(HostHello(PROTOCOL_MAJOR, PROTOCOL_MINOR, HOST_NAME))
            try:
                async with asyncio.timeout(HELLO_REPLY_TIMEOUT_S):
                    hello = await self._hello_waiter
            except TimeoutError:
                if isinstance(answer, Nack):
                    raise DeviceError(f"{self.name}: I/O board on {self.port} refused HOST_HELLO: "
                                      f"{answer.reason.name} {answer.text}".rstrip()) from None
                raise DeviceError(f"{self.name}: I/O board on {self.port} acknowledged HOST_HELLO "
                                  "but sent no BOARD_HELLO") from None
        finally:
            self._hello_waiter = None
            self._hello_after_seq = None
            self._hello_armed = False
        self._hello = hello
        self._board_permission = False  # B4: HOST_HELLO withdraws it (a board of another major too)
        if hello.proto_major != PROTOCOL_MAJOR:
            msg = (f"{self.name}: I/O board on {self.port} speaks protocol {hello.proto_major}."
                   f"{hello.proto_minor} (firmware {hello.firmware_version!r}, hardware "
                   f"{hello.hardware_revision!r}); this host supports {PROTOCOL_MAJOR}.x only: refusing it")
            logger.warning("%s", msg)
            raise DeviceError(msg)
        if isinstance(answer, Nack):
            self.stats.exceptions += 1
            raise DeviceError(f"{self.name}: I/O board on {self.port} refused HOST_HELLO: {answer.reason.name} "
                              f"{answer.text}".rstrip())
        if self.keepalive_s * 4 > hello.keepalive_timeout_ms / 1000:  # spec §5: T_kh <= T_ka / 4
            logger.warning("%s: keepalive every %.3f s is too slow for the board's %d ms watchdog", self.name,
                           self.keepalive_s, hello.keepalive_timeout_ms)
        return hello

    async def _request_state_locked(self) -> StateReport:
        loop = asyncio.get_running_loop()
        self._state_waiter = loop.create_future()
        try:
            await self._command_locked(RequestState())
            async with asyncio.timeout(HELLO_REPLY_TIMEOUT_S):
                return await self._state_waiter
        except TimeoutError:
            raise DeviceError(f"{self.name}: I/O board on {self.port} sent no STATE after REQUEST_STATE") from None
        finally:
            self._state_waiter = None

    # --- background tasks ---------------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_s)
            if not self._lock.locked():  # a command in flight feeds the watchdog already
                self._send_payload(encode_message(self._next_seq(), Keepalive()))

    @property
    def _board_permission(self) -> bool | None:
        return self._board_permission_value

    @_board_permission.setter
    def _board_permission(self, value: bool | None) -> None:
        self._board_permission_value = value
        self._supervise_wake.set()  # the contactor's expected state may have changed

    def _next_supervision(self, now: float) -> float:
        """Seconds until something is due: the link timeout, a reopen of the port, a contactor mismatch's
        settle time. The loop sleeps until then (or until a report or a permission change wakes it)
        instead of ticking: an idle charger should not wake 20 times a second per board."""
        due = [self._last_rx + self.link_timeout_s] if not self._link_lost else []
        if not self._port.is_open:
            due.append(self._next_reopen)
        settle = self._supervisor.deadline()
        if settle is not None:
            due.append(settle)
        return max(0.001, min(due) - now) if due else self.link_timeout_s

    async def _supervise_loop(self) -> None:
        while True:
            self._supervise_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._supervise_wake.wait(), self._next_supervision(time.monotonic()))
            now = time.monotonic()
            if not self._port.is_open and now >= self._next_reopen:
                self._next_reopen = now + self.link_timeout_s
                with contextlib.suppress(DeviceError):
                    self._open_port()
                    self._write(bytes([DELIMITER]))
            if not self._link_lost and now - self._last_rx > self.link_timeout_s:
                detail = f"no frame from the I/O board on {self.port} for {now - self._last_rx:.2f} s"
                self._faults.raise_fault(FaultCode.LINK_LOST, detail)
                logger.warning("%s: link lost: %s", self.name, detail)
            if not self._link_lost and self._state is not None:
                self._supervise(now, self._state)

    def _request_resync(self, hello: bool) -> None:
        if hello:
            self._resync_hello = True
        elif self._resyncing:
            return  # the running resync clears what triggered this
        self._resync_event.set()

    async def _resync_loop(self) -> None:
        while True:
            await self._resync_event.wait()
            self._resync_event.clear()
            hello, self._resync_hello = self._resync_hello, False
            self._resyncing = True
            try:
                async with self._lock:
                    if hello:
                        await self._handshake_locked()
                    if hello or (self._state is not None and self._state.faults & FaultBit.HOST_TIMEOUT):
                        await self._command_locked(ClearFaults(FaultBit.HOST_TIMEOUT))
                    await self._command_locked(pwm_for(self._offered_amps, self._unavailable))
                    if self._lock_wanted is not None and self.lock_supported:  # before the permission (B16)
                        await self._command_locked(SetLock(self._lock_wanted))
                    await self._restore_permission_locked()
                logger.info("%s: I/O board re-synchronised%s (permission to energize %s)", self.name,
                            " after its restart" if hello else "", "granted" if self._permission else "withheld")
            except DeviceError as exc:
                logger.warning("%s: re-sync with the I/O board failed (will retry on its next report): %s",
                               self.name, exc)
            finally:
                self._resyncing = False

    async def _restore_permission_locked(self) -> None:
        """Re-send the firmware's permission; a blocking fault the board still has is no error here:
        the permission is dropped and the firmware grants it again once the fault has cleared."""
        if not self._permission:
            if self._board_permission is not False:  # unknown: make sure the board has none
                await self._allow_locked(False)
            return
        try:
            await self._allow_locked(True)
        except DeviceError:
            if self._board_permission is None:
                raise  # no answer: the next re-sync tries again
            self._permission = False
            logger.warning("%s: permission to energize not restored: the board reports a blocking fault; "
                           "the firmware has to grant it again once the fault has cleared", self.name)

    # --- receive path ---------------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        payloads = self.decoder.feed(data)
        dropped = self.decoder.stats.dropped
        if dropped != self._codec_dropped:
            self.stats.frames_dropped += dropped - self._codec_dropped
            self._codec_dropped = dropped
            logger.warning("%s: dropped a bad frame from %s (%s); %d dropped so far", self.name, self.port,
                           self.decoder.last_error, self.stats.frames_dropped)
        for payload in payloads:
            self._handle_payload(payload)

    def _handle_payload(self, payload: bytes) -> None:
        try:
            envelope = decode_message(payload)
        except MessageError as exc:
            self.stats.frames_dropped += 1
            logger.warning("%s: dropped an invalid message from the I/O board: %s", self.name, exc)
            return
        msg = envelope.message
        if not isinstance(msg, BoardHello | StateReport | Ack | Nack | Log):
            self.stats.frames_dropped += 1
            logger.warning("%s: dropped a host-only %s sent by the I/O board", self.name, type(msg).__name__)
            return
        self.stats.frames_received += 1
        self._last_rx = time.monotonic()
        self._track_board_seq(envelope.seq, isinstance(msg, BoardHello))
        if self._faults.clear(FaultCode.LINK_LOST):
            logger.info("%s: link to the I/O board on %s is back", self.name, self.port)
            self._request_resync(hello=False)
        match msg:
            case Ack() | Nack():
                self._on_answer(msg)
            case BoardHello():
                self._on_hello(msg)
            case StateReport():
                self._on_state(msg)
            case Log():
                level = {LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO,
                         LogLevel.WARNING: logging.WARNING}.get(msg.level, logging.ERROR)
                logger.log(level, "%s: board says: %s", self.name, msg.text)

    def _track_board_seq(self, seq: int, is_hello: bool) -> None:
        last, self._last_board_seq = self._last_board_seq, seq
        if last is not None and not is_hello:
            gap = (seq - last - 1) % SEQ_MODULO
            self.board_frames_missed += gap

    def _on_answer(self, msg: Ack | Nack) -> None:
        if self._hello_after_seq is not None and msg.ack_seq == self._hello_after_seq:
            self._hello_armed = True
        pending = self._pending
        if pending is not None and pending[0] == msg.ack_seq and not pending[2].done():
            if isinstance(pending[1], AllowContactor):
                self._on_allow_answer(pending[1].on, msg)
            pending[2].set_result(msg)
        else:
            logger.debug("%s: stale answer for seq %d", self.name, msg.ack_seq)

    def _on_allow_answer(self, on: bool, answer: Ack | Nack) -> None:
        """Track the board's permission here, in frame order: a STATE right behind the ACK that
        shows a blocking fault must win over the ACK."""
        if isinstance(answer, Ack):
            self._board_permission = on
        elif on:
            self._board_permission = False  # refused: B7 grants none while a blocking fault is active

    def _on_hello(self, hello: BoardHello) -> None:
        if self._hello_armed and self._hello_waiter is not None and not self._hello_waiter.done():
            self._hello_armed = False
            self._hello_waiter.set_result(hello)
            return
        if self._hello_waiter is not None:
            return  # a hello the board repeated while unlinked, before it saw our HOST_HELLO
        self._hello = hello
        self._board_permission = False  # B1: a restarted board holds no permission
        if self._started:
            logger.warning("%s: I/O board restarted (reset reason %s); re-synchronising", self.name,
                           hello.reset_reason.name)
            self._request_resync(hello=True)

    def _on_state(self, report: StateReport) -> None:
        self._state = report
        self._supervise_wake.set()
        if self._state_waiter is not None and not self._state_waiter.done():
            self._state_waiter.set_result(report)
        if report.pilot != self._pilot:
            self._pilot = report.pilot
            self.events.publish(PilotChanged(self.name, report.pilot))
        if report.contactor_fb != self._contactor_closed:
            self._contactor_closed = report.contactor_fb
            self.events.publish(ContactorChanged(self.name, report.contactor_fb))
        if report.lock != self._lock_state:
            self._lock_state = report.lock
            self._lock_moved.set()
            if report.lock is not None:
                self.events.publish(LockChanged(self.name, report.lock))
        self._update_faults(report.faults)
        self._track_permission(report.faults)
        self._supervise(time.monotonic(), report)
        if self._started and report.faults & FaultBit.HOST_TIMEOUT:
            self._request_resync(hello=False)

    def _track_permission(self, faults: FaultBit) -> None:
        """B8: the board drops the permission on any blocking fault. HOST_TIMEOUT is the link's
        failure, so the firmware's permission stands and the re-sync restores it; any other blocking
        fault takes it away until the firmware grants it again."""
        blocking = faults & BLOCKING_FAULTS
        if not blocking:
            return
        self._board_permission = False
        if self._permission and blocking & ~FaultBit.HOST_TIMEOUT:
            self._permission = False
            logger.warning("%s: the I/O board dropped the permission to energize (blocking fault %s); "
                           "it has to be granted again once the fault has cleared", self.name,
                           fault_names(blocking))

    def _supervise(self, now: float, report: StateReport) -> None:
        """Mirror contact against the state the board should be in (unknown permission: its coil)."""
        permission = self._board_permission
        expected = (report.contactor_cmd if permission is None
                    else contactor_expected(report, permission, self._lock_wanted))
        for verdict in self._supervisor.update(now, expected, report.contactor_fb):
            if verdict.active:
                detail = (f"mirror contact {'closed' if report.contactor_fb else 'open'} for over "
                          f"{self._supervisor.settle_s:.2f} s while the contactor should be "
                          f"{'closed' if expected else 'open'} (permission {permission}, pilot {report.pilot.value}, "
                          f"faults {fault_names(report.faults)}, coil {'on' if report.contactor_cmd else 'off'})")
                if self._faults.raise_fault(verdict.code, detail):
                    logger.warning("%s: contactor fault %s: %s", self.name, verdict.code.value, detail)
            elif self._faults.clear(verdict.code):
                logger.info("%s: contactor fault %s cleared", self.name, verdict.code.value)

    def _update_faults(self, bits: FaultBit) -> None:
        """A STATE lists the board's faults in full: a new code, or a new bit behind an active one, is a
        DeviceFault (several bits share DEVICE_ERROR); a code no longer listed is recovered."""
        active = faults_by_code(bits)
        for code, causes in active.items():
            if self._faults.raise_causes(code, causes):
                logger.warning("%s: I/O board fault %s: %s", self.name, code.value, self._faults.active[code])
        for code in self._faults.clear_all(among=BOARD_FAULT_CODES, keep=active):
            logger.info("%s: I/O board fault %s cleared", self.name, code.value)

    # --- port I/O -------------------------------------------------------------------------------------

    def _open_port(self) -> None:
        self._port.open()
        self.decoder.reset()

    def _port_failed(self, exc: BaseException) -> None:
        """The port closed itself; the supervise loop reopens it and the link timeout reports it."""
        logger.warning("%s: serial port %s failed, closed it (will reopen): %s", self.name, self.port, exc)

    def _send_payload(self, payload: bytes) -> None:
        # A leading delimiter ends any garbage the board may hold, so this frame is not lost with it.
        if self._write(bytes([DELIMITER]) + encode_frame(payload)):
            self.stats.frames_sent += 1

    def _write(self, data: bytes) -> bool:
        """Non-blocking write; False if the port is closed, failed or not draining (the frame is lost
        like one garbled on the line: the retransmission or the next keepalive makes up for it)."""
        try:
            self._port.write(data)
        except DeviceError:
            return False
        return True
