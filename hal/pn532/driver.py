"""PN532 NFC reader over HSU (UART, 115200 8N1): the chip polls for ISO/IEC 14443 type A cards itself.

Dialog per UM0701-02 §6.2.2: the host sends a command frame, the PN532 acknowledges it with an ACK
frame, executes it and sends the answer. If no ACK comes in time the command is sent again; if an
answer arrives corrupt the host asks for it again with a NACK; if no answer comes the host aborts
the command with an ACK (the abort mechanism of §6.2.1.3).

Start-up: HSU wake-up (0x55 0x55 + zeros), an ACK frame (aborts an InAutoPoll a previous process may
have left running: the dialog has the host wait for the answer or abort before it sends a new command;
an ACK with nothing to abort is ignored), SAMConfiguration (normal mode: the
PN532/C106 starts in LowVbat mode and this is the command that takes it out), GetFirmwareVersion, and
RFConfiguration MaxRetries (MxRtyPassiveActivation bounded, so that no passive activation is retried
forever, the chip's default). The same sequence is run again after any link failure, as the chip may have
been power-cycled.

Polling: InAutoPoll (§7.3.13) for type 0x10 (any ISO/IEC 14443-3 type A card, activated up to its UID:
no RATS, no DEP), so that the chip polls the field and the host only waits for its answer, instead of
asking five times a second. The figures:

* Period 1 (150 ms, the smallest): the chip looks for a card every 150 ms and answers at once when it
  has one, so a card placed is reported within ~150 ms (plus its activation, a few ms) — as fast as
  the 0.2 s host polling this replaces.
* PollNr ``autopoll_count`` = 20 while no card is there: an empty field is answered with NbTg = 0 after
  20 x 150 ms = 3 s. That answer is the liveness check: the host waits 1.2 x 3 s + ``answer_timeout_s``
  (4.1 s) for it, and a silent chip is one failed poll; the next ones fail fast (the init sequence gets
  no ACK in 3 x 0.1 s), so LINK_LOST (``fail_after`` = 3) comes ~5 s after the chip fell silent (1.5 s
  with host polling). The idle line carries one command, its ACK and its answer every 3 s instead of 15
  frames a second; a longer cycle would save little more and report a dead reader later.
* While a card is on the reader: PollNr 1. The chip answers at once while the card stays, or NbTg = 0
  after 150 ms once it has gone. The host waits ``poll_interval_s`` (0.2 s) after an answer listing the
  card (a held card costs what host polling did) and polls again at once after an empty one (the chip
  waited already). ``absent_after`` = 2 empty answers in a row end the presentation: ~0.5 s after the
  card left. A card is reported once per presentation.
* After each answer listing a card, InRelease, as host polling did; Tg 0 (every target the chip
  activated), as InAutoPoll may report two.
* An InAutoPoll still running is aborted with an ACK frame: when its answer is overdue, on ``close()``,
  and by the init sequence (above).

Only the PN532 has InAutoPoll (the PN531 and PN533 do not); this driver is for the PN532 and keeps no
InListPassiveTarget polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hal.events import EventStream
from hal.faults import FaultLatch
from hal.interfaces import (
    CardPresented,
    CardTechnology,
    DeviceError,
    FaultCode,
    LinkStats,
    ReaderEvent,
)
from hal.pn532.codec import (
    ACK_FRAME,
    HSU_WAKEUP,
    IN_RELEASE_ALL,
    NACK_FRAME,
    RF_CFG_MAX_RETRIES,
    SAM_MODE_NORMAL,
    TFI_PN532_TO_HOST,
    Ack,
    AutoPollRequest,
    AutoPollType,
    Command,
    DropReason,
    ErrorFrame,
    FirmwareVersion,
    Frame,
    FrameDecoder,
    InformationFrame,
    Nack,
    Pn532ApplicationError,
    Pn532ProtocolError,
    build_command,
    check_status,
    parse_firmware_version,
    parse_in_auto_poll,
)
from hal.serial_port import AsyncSerialPort
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)

PN532_IC = 0x32
AUTOPOLL_TYPES = (AutoPollType.MIFARE,)  # every ISO/IEC 14443-3 type A card, up to its UID
AUTOPOLL_MARGIN = 1.2  # how much longer than its nominal duration an InAutoPoll may take to answer


class Pn532LinkError(DeviceError):
    """The PN532 did not acknowledge or answer in time, or its serial port failed."""


class _CorruptFrame:
    """Inbox marker: the decoder threw away a damaged frame (a NACK may get the answer again)."""


class _PortLost:
    """Inbox marker: the serial port failed while a command was under way."""


_Inbound = Frame | _CorruptFrame | _PortLost


def _mask(uid: str) -> str:
    """Card UIDs authorise charging: logs show only enough to tell cards apart."""
    return "…" + uid[-4:]


class Pn532Reader:
    """An :class:`hal.interfaces.IdReader` for a PN532 on a serial port (HSU)."""

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 115200,
        poll_interval_s: float = 0.2,
        autopoll_period: int = 1,
        autopoll_count: int = 20,
        fail_after: int = 3,
        absent_after: int = 2,
        ack_timeout_s: float = 0.1,
        answer_timeout_s: float = 0.5,
        retries: int = 2,
        max_nacks: int = 2,
        passive_activation_retries: int = 0x02,
        spawn: Spawn = create_task,
    ) -> None:
        """``autopoll_period`` is InAutoPoll's Period (x 150 ms) and ``autopoll_count`` its PollNr while
        no card is there (see the module docstring for the figures); ``poll_interval_s`` is the pause after
        an answer listing a card and after a failed poll; ``fail_after`` consecutive failed polls raise
        LINK_LOST; ``absent_after`` answers without the card end its presentation; ``retries`` is how often
        a command is sent again after a missing ACK/answer; ``passive_activation_retries`` is
        MxRtyPassiveActivation (0xFF = retry forever)."""
        if fail_after < 1 or absent_after < 1 or retries < 0:
            raise ValueError("fail_after and absent_after must be >= 1, retries >= 0")
        if not 1 <= autopoll_count < 0xFF:  # 0xFF is endless: no NbTg = 0, so no liveness check
            raise ValueError("autopoll_count must be 1..254: the chip must answer now and then")
        AutoPollRequest(autopoll_count, autopoll_period, AUTOPOLL_TYPES)  # ValueError if out of range
        self.name = name
        self.port = port
        self._spawn = spawn
        self.events: EventStream[ReaderEvent] = EventStream()
        self.stats = LinkStats()
        self.firmware: FirmwareVersion | None = None
        self._port = AsyncSerialPort(port, baudrate, name=name, on_data=self._on_data, on_lost=self._port_failed,
                                     error=Pn532LinkError, stats=self.stats)
        self._poll_interval_s = poll_interval_s
        self._autopoll_period = autopoll_period
        self._autopoll_count = autopoll_count
        self._fail_after = fail_after
        self._absent_after = absent_after
        self._ack_timeout_s = ack_timeout_s
        self._answer_timeout_s = answer_timeout_s
        self._retries = retries
        self._max_nacks = max_nacks
        self._passive_activation_retries = passive_activation_retries
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decoder = FrameDecoder()
        self._inbox: asyncio.Queue[_Inbound] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._initialised = False
        self._failures = 0
        self._faults = FaultLatch(name, self.events)
        self._card: str | None = None
        self._misses = 0
        self._running: Command | None = None  # sent, neither answered nor aborted yet

    # --- public -----------------------------------------------------------------------------

    @property
    def link_lost(self) -> bool:
        return FaultCode.LINK_LOST in self._faults

    @property
    def card_present(self) -> str | None:
        """UID of the card on the reader now (as last polled), ``None`` if none."""
        return self._card

    async def start(self) -> None:
        """Open the port and run the init sequence; raises :class:`DeviceError` if the PN532 does not
        answer. Polling then runs in the background until :meth:`close`."""
        self._loop = asyncio.get_running_loop()
        try:
            await self._initialise()
        except DeviceError:
            self._close_port()
            raise
        self._task = self._spawn(self._run(), name=f"pn532:{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running is not None and self._port.is_open:
            self._abort(self._running)  # an InAutoPoll left running would keep the chip busy for seconds
        self._close_port()
        log.info("pn532 %s: closed (%s)", self.name, self.stats)

    # --- poll loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._loop is not None
        # the first poll, like every one after a failure, waits poll_interval_s: the agent subscribes to the
        # reader's events after starting it, and a card reported before that would be lost while held
        pause = self._poll_interval_s
        while True:
            await asyncio.sleep(pause)
            pause = self._poll_interval_s
            request = self._poll_request()
            started = self._loop.time()
            try:
                if not self._initialised:
                    await self._initialise()
                uid = await self._poll_once(request)
            except (Pn532ProtocolError, Pn532ApplicationError) as exc:
                # the chip answered, so the link is up; the answer was wrong and is logged as such.
                # A chip that reset itself (back in LowVbat) answers like this: configure it again.
                log.warning("pn532 %s on %s: %s", self.name, self.port, exc)
                self._initialised = False
                self._link_ok()
            except DeviceError as exc:
                self._link_failed(exc)
            except Exception:  # defence in depth: an answer the parsers choked on must not end polling
                self.stats.frames_dropped += 1
                self._initialised = False
                log.exception("pn532 %s on %s: poll failed unexpectedly; dropped the answer", self.name, self.port)
            else:
                self._link_ok()
                self._track(uid)
                if uid is None:  # the chip waited for a card already; one that answers early is held to its period
                    pause = max(0.0, started + request.duration_s - self._loop.time())

    def _poll_request(self) -> AutoPollRequest:
        """A long poll while the field is empty (the liveness check); one period while a card is there, so
        that its removal is seen within a period."""
        count = 1 if self._card is not None else self._autopoll_count
        return AutoPollRequest(count, self._autopoll_period, AUTOPOLL_TYPES)

    async def _poll_once(self, request: AutoPollRequest) -> str | None:
        within = request.duration_s * AUTOPOLL_MARGIN + self._answer_timeout_s
        answer = await self._transceive(Command.IN_AUTO_POLL, request.params(), answer_within_s=within)
        try:
            targets = parse_in_auto_poll(answer)
        except Pn532ProtocolError:
            self.stats.frames_dropped += 1
            raise
        if not targets:
            return None
        release = await self._transceive(Command.IN_RELEASE, bytes([IN_RELEASE_ALL]))
        try:
            check_status("InRelease", release)
        except DeviceError as exc:  # the UID was read fine; a failed release is only worth a log line
            self.stats.exceptions += 1
            log.warning("pn532 %s: %s", self.name, exc)
        cards = [t.target_a for t in targets if t.target_a is not None]
        if not cards:  # a type the driver did not ask for: nothing to report
            log.debug("pn532 %s: ignored target of type 0x%02X", self.name, targets[0].type)
            return None
        return cards[0].uid_hex

    def _track(self, uid: str | None) -> None:
        """One CardPresented per presentation: a card stays 'present' until missed ``absent_after``
        times in a row; a different card is a new presentation at once."""
        if uid is None:
            if self._card is not None:
                self._misses += 1
                if self._misses >= self._absent_after:
                    log.info("pn532 %s: card %s removed", self.name, _mask(self._card))
                    self._card = None
            return
        self._misses = 0
        if uid != self._card:
            self._card = uid
            log.info("pn532 %s: card %s presented (%d-byte UID)", self.name, _mask(uid), len(uid) // 2)
            self.events.publish(CardPresented(self.name, uid, CardTechnology.ISO14443A))

    def _link_ok(self) -> None:
        self._failures = 0
        if self._faults.clear(FaultCode.LINK_LOST):
            log.warning("pn532 %s on %s: answering again (%s)", self.name, self.port, self.firmware)

    def _link_failed(self, exc: DeviceError) -> None:
        self._failures += 1
        self._initialised = False  # the chip may have been reset: wake it and configure it again
        log.debug("pn532 %s: poll failed (%d in a row): %s", self.name, self._failures, exc)
        if self._failures >= self._fail_after and self._faults.raise_fault(FaultCode.LINK_LOST, str(exc)):
            log.warning("pn532 %s on %s: link lost after %d failed polls: %s", self.name, self.port,
                      self._failures, exc)

    # --- init sequence ------------------------------------------------------------------------

    async def _initialise(self) -> None:
        if not self._port.is_open:
            self._open_port()
        # wake the chip; then abort whatever it may still be running (an InAutoPoll of ours, or of a process
        # before us): no new command before that. An ACK with nothing to abort is ignored (§6.2.1.3).
        self._port.write(HSU_WAKEUP + ACK_FRAME)
        self.stats.frames_sent += 1
        self._running = None
        await self._transceive(Command.SAM_CONFIGURATION, bytes([SAM_MODE_NORMAL]))
        fw = parse_firmware_version(await self._transceive(Command.GET_FIRMWARE_VERSION))
        if fw.ic != PN532_IC:
            log.warning("pn532 %s: IC byte 0x%02X, expected 0x32 (a PN532); carrying on", self.name, fw.ic)
        if not fw.support & 0x01:
            raise Pn532ProtocolError(f"{self.name}: {fw} does not support ISO/IEC 14443 type A")
        # MxRtyATR, MxRtyPSL: the defaults (0xFF, 0x01); MxRtyPassiveActivation: bounded
        await self._transceive(
            Command.RF_CONFIGURATION, bytes([RF_CFG_MAX_RETRIES, 0xFF, 0x01, self._passive_activation_retries])
        )
        self.firmware = fw
        self._initialised = True
        log.info("pn532 %s on %s: %s ready", self.name, self.port, fw)

    # --- command/answer exchange --------------------------------------------------------------

    async def _transceive(self, command: Command, params: bytes = b"", *,
                          answer_within_s: float | None = None) -> bytes:
        """Send ``command`` and return the data of its answer (after D5, code+1).

        ``answer_within_s``: a command that runs long on purpose (InAutoPoll) and its own deadline for the
        answer. Such a command is aborted, not sent again, when the deadline passes (the caller's next poll
        is the retry), and aborted before it is sent again after a missing ACK (the ACK may have been lost
        while the chip runs the command, and it takes no new one until aborted)."""
        frame = build_command(command, params)
        self.stats.requests += 1
        try:
            return await self._exchange(command, frame, answer_within_s)
        except DeviceError:  # answered with an error, or the port failed: nothing left to abort
            self._running = None
            raise

    async def _exchange(self, command: Command, frame: bytes, answer_within_s: float | None) -> bytes:
        for attempt in range(self._retries + 1):
            self._discard_stale()
            self._port.write(frame)
            self.stats.frames_sent += 1
            self._running = command
            if not await self._await_ack():
                self.stats.timeouts += 1
                log.debug("pn532 %s: no ACK to %s (attempt %d)", self.name, command.name, attempt + 1)
                if answer_within_s is not None:
                    self._abort(command)
                continue
            answer = await self._await_answer(command, answer_within_s or self._answer_timeout_s)
            if answer is not None:
                self._running = None
                return answer
            self.stats.timeouts += 1
            log.debug("pn532 %s: no answer to %s (attempt %d), aborting it", self.name, command.name,
                      attempt + 1)
            self._abort(command)
            if answer_within_s is not None:
                raise Pn532LinkError(f"{self.name}: no answer to {command.name} on {self.port} within "
                                     f"{answer_within_s:.1f} s")
        self._running = None
        raise Pn532LinkError(
            f"{self.name}: no answer to {command.name} on {self.port} after {self._retries + 1} attempts"
        )

    def _abort(self, command: Command) -> None:
        """Abort the command in progress with an ACK frame (UM0701-02 §6.2.1.3)."""
        with contextlib.suppress(DeviceError):  # a failed port is reported by its own callback
            self._port.write(ACK_FRAME)
            self.stats.frames_sent += 1
        self._running = None
        log.debug("pn532 %s: aborted %s", self.name, command.name)

    async def _next(self, deadline: float) -> _Inbound | None:
        """Next inbound item before ``deadline`` (loop time), ``None`` on timeout."""
        assert self._loop is not None
        remaining = deadline - self._loop.time()
        if remaining <= 0 and self._inbox.empty():
            return None
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await self._inbox.get()
        except TimeoutError:
            return None

    async def _await_ack(self) -> bool:
        assert self._loop is not None
        deadline = self._loop.time() + self._ack_timeout_s
        while True:
            item = await self._next(deadline)
            if item is None:
                self._expire_partial()
                return False
            if isinstance(item, _PortLost):
                raise Pn532LinkError(f"{self.name}: serial port {self.port} failed")
            if isinstance(item, Ack):
                return True
            if isinstance(item, _CorruptFrame):
                continue  # maybe our ACK; the timeout decides
            self._unexpected(item, "while waiting for ACK")

    async def _await_answer(self, command: Command, timeout_s: float) -> bytes | None:
        assert self._loop is not None
        deadline = self._loop.time() + timeout_s
        nacks = 0
        while True:
            item = await self._next(deadline)
            if item is None:
                self._expire_partial()
                return None
            if isinstance(item, _PortLost):
                raise Pn532LinkError(f"{self.name}: serial port {self.port} failed")
            if isinstance(item, _CorruptFrame):
                if nacks < self._max_nacks:
                    nacks += 1
                    log.debug("pn532 %s: corrupt answer to %s, sending NACK", self.name, command.name)
                    self._port.write(NACK_FRAME)  # ask for the last answer again (§6.2.1.4)
                    self.stats.frames_sent += 1
                    deadline = max(deadline, self._loop.time() + self._answer_timeout_s)
                continue
            if isinstance(item, ErrorFrame):
                self.stats.exceptions += 1
                raise Pn532ApplicationError(
                    f"{self.name}: PN532 answered {command.name} with its syntax-error frame (7F)"
                )
            if (
                isinstance(item, InformationFrame)
                and item.tfi == TFI_PN532_TO_HOST
                and item.code == (command + 1) & 0xFF
            ):
                return item.params
            if isinstance(item, Ack):
                continue  # a duplicate ACK is harmless
            self._unexpected(item, f"while waiting for the answer to {command.name}")

    def _unexpected(self, item: Frame, when: str) -> None:
        self.stats.frames_dropped += 1
        log.debug("pn532 %s: dropped unexpected %s %s", self.name, type(item).__name__, when)

    def _discard_stale(self) -> None:
        """Frames left over from an earlier exchange (late answers, duplicates after a NACK)."""
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, InformationFrame | ErrorFrame | Nack):
                self._unexpected(item, "(stale)")

    # --- serial port --------------------------------------------------------------------------

    def _open_port(self) -> None:
        self._port.open()
        self._decoder = FrameDecoder()
        log.info("pn532 %s: opened %s at %d 8N1", self.name, self.port, self._port.baudrate)

    def _close_port(self) -> None:
        self._port.close()
        self._initialised = False

    def _port_failed(self, exc: BaseException) -> None:
        """The port closed itself; a command under way fails at once instead of timing out."""
        log.warning("pn532 %s: serial port %s failed: %s", self.name, self.port, exc)
        self._initialised = False
        self._inbox.put_nowait(_PortLost())

    def _on_data(self, data: bytes) -> None:
        self._deliver(self._decoder.events(data))

    def _expire_partial(self) -> None:
        """A timeout means the line is quiet: a partial frame held by the decoder was truncated."""
        self._deliver(self._decoder.expire_events())

    def _deliver(self, items: list[Frame | DropReason]) -> None:
        for item in items:
            if isinstance(item, DropReason):
                self.stats.frames_dropped += 1
                if item is not DropReason.NOISE:  # a damaged frame, not mere noise: worth a NACK
                    self._inbox.put_nowait(_CorruptFrame())
                continue
            self.stats.frames_received += 1
            self._inbox.put_nowait(item)
