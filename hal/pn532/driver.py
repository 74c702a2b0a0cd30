"""PN532 NFC reader over HSU (UART, 115200 8N1): polls for ISO/IEC 14443 type A cards.

Dialog per UM0701-02 §6.2.2: the host sends a command frame, the PN532 acknowledges it with an ACK
frame, executes it and sends the answer. If no ACK comes in time the command is sent again; if an
answer arrives corrupt the host asks for it again with a NACK; if no answer comes the host aborts
the command with an ACK (the abort mechanism of §6.2.1.3) and sends it again.

Start-up: HSU wake-up (0x55 0x55 + zeros), SAMConfiguration (normal mode: the PN532/C106 starts in
LowVbat mode and this is the command that takes it out), GetFirmwareVersion, and RFConfiguration
MaxRetries so that InListPassiveTarget gives up after a few activation attempts instead of waiting
for a card forever (the chip's default). The same sequence is run again after any link failure, as
the chip may have been power-cycled.

Polling: InListPassiveTarget (MaxTg 1, 106 kbps type A), then InRelease of the target found. A card
held on the reader is reported once; it counts as removed after ``absent_after`` polls without it.
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
    BRTY_106_TYPE_A,
    HSU_WAKEUP,
    NACK_FRAME,
    RF_CFG_MAX_RETRIES,
    SAM_MODE_NORMAL,
    TFI_PN532_TO_HOST,
    Ack,
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
    parse_in_list_passive_target_a,
)
from hal.serial_port import AsyncSerialPort
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)

PN532_IC = 0x32


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
        fail_after: int = 3,
        absent_after: int = 2,
        ack_timeout_s: float = 0.1,
        answer_timeout_s: float = 0.5,
        retries: int = 2,
        max_nacks: int = 2,
        passive_activation_retries: int = 0x02,
        spawn: Spawn = create_task,
    ) -> None:
        """``fail_after`` consecutive failed polls raise LINK_LOST; ``absent_after`` polls without a
        card end its presentation; ``retries`` is how often a command is sent again after a missing
        ACK/answer; ``passive_activation_retries`` is MxRtyPassiveActivation (0xFF = wait forever)."""
        if fail_after < 1 or absent_after < 1 or retries < 0:
            raise ValueError("fail_after and absent_after must be >= 1, retries >= 0")
        self.name = name
        self.port = port
        self._spawn = spawn
        self.events: EventStream[ReaderEvent] = EventStream()
        self.stats = LinkStats()
        self.firmware: FirmwareVersion | None = None
        self._port = AsyncSerialPort(port, baudrate, name=name, on_data=self._on_data, on_lost=self._port_failed,
                                     error=Pn532LinkError, stats=self.stats)
        self._poll_interval_s = poll_interval_s
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
        self._close_port()
        log.info("pn532 %s: closed (%s)", self.name, self.stats)

    # --- poll loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                if not self._initialised:
                    await self._initialise()
                uid = await self._poll_once()
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

    async def _poll_once(self) -> str | None:
        answer = await self._transceive(Command.IN_LIST_PASSIVE_TARGET, bytes([0x01, BRTY_106_TYPE_A]))
        try:
            targets = parse_in_list_passive_target_a(answer)
        except Pn532ProtocolError:
            self.stats.frames_dropped += 1
            raise
        if not targets:
            return None
        target = targets[0]
        release = await self._transceive(Command.IN_RELEASE, bytes([target.tg]))
        try:
            check_status("InRelease", release)
        except DeviceError as exc:  # the UID was read fine; a failed release is only worth a log line
            self.stats.exceptions += 1
            log.warning("pn532 %s: %s", self.name, exc)
        return target.uid_hex

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
        self._port.write(HSU_WAKEUP)
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

    async def _transceive(self, command: Command, params: bytes = b"") -> bytes:
        """Send ``command`` and return the data of its answer (after D5, code+1)."""
        frame = build_command(command, params)
        self.stats.requests += 1
        for attempt in range(self._retries + 1):
            self._discard_stale()
            self._port.write(frame)
            self.stats.frames_sent += 1
            if not await self._await_ack():
                self.stats.timeouts += 1
                log.debug("pn532 %s: no ACK to %s (attempt %d)", self.name, command.name, attempt + 1)
                continue
            answer = await self._await_answer(command)
            if answer is not None:
                return answer
            self.stats.timeouts += 1
            log.debug("pn532 %s: no answer to %s (attempt %d), aborting it", self.name, command.name,
                      attempt + 1)
            self._port.write(ACK_FRAME)  # abort the command in progress (UM0701-02 §6.2.1.3)
            self.stats.frames_sent += 1
        raise Pn532LinkError(
            f"{self.name}: no answer to {command.name} on {self.port} after {self._retries + 1} attempts"
        )

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

    async def _await_answer(self, command: Command) -> bytes | None:
        assert self._loop is not None
        deadline = self._loop.time() + self._answer_timeout_s
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
                    deadline = self._loop.time() + self._answer_timeout_s
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
