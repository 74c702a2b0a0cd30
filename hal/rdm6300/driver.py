"""Driver for an RDM6300-style 125 kHz (EM4100) reader: a transmit-only module on a serial port.

The module repeats its frame (:mod:`hal.rdm6300.codec`) for as long as the tag is in the field and says
nothing otherwise. Because it cannot be polled, silence means "no tag" as much as "module dead": this
driver raises LINK_LOST only when the serial port itself fails (adapter unplugged, port closed) and
recovers when it can reopen the port.
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
from hal.rdm6300.codec import Rdm6300Decoder
from hal.serial_port import AsyncSerialPort
from hal.tasks import Spawn, create_task

log = logging.getLogger(__name__)


class Rdm6300Reader:
    """An :class:`hal.interfaces.IdReader` for an RDM6300-style module on a serial port."""

    def __init__(
        self,
        name: str,
        port: str,
        *,
        baudrate: int = 9600,
        hold_s: float = 0.5,
        confirm_frames: int = 2,
        reopen_interval_s: float = 1.0,
        spawn: Spawn = create_task,
    ) -> None:
        """``hold_s``: a tag not heard from for this long has left the field (the module repeats its
        frame every ~0.1-0.5 s while the tag is there). ``confirm_frames``: identical frames needed
        before a tag is reported — the XOR checksum lets about 1 in 1000 noise-hit frames through
        with a wrong id (measured at 5 % byte noise), the same wrong id twice is negligible.
        ``reopen_interval_s``: how often a failed port is tried again."""
        if confirm_frames < 1:
            raise ValueError("confirm_frames must be >= 1")
        self.name = name
        self.port = port
        self._spawn = spawn
        self.events: EventStream[ReaderEvent] = EventStream()
        self.stats = LinkStats()
        self._port = AsyncSerialPort(port, baudrate, name=name, on_data=self._on_data, on_lost=self._port_failed,
                                     stats=self.stats)
        self._hold_s = hold_s
        self._reopen_interval_s = reopen_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._decoder = Rdm6300Decoder()
        self._dropped_seen = 0
        self._confirm_frames = confirm_frames
        self._card: str | None = None
        self._candidate: str | None = None
        self._candidate_count = 0
        self._candidate_at = 0.0
        self._gone: asyncio.TimerHandle | None = None
        self._reopen_task: asyncio.Task[None] | None = None
        self._faults = FaultLatch(name, self.events)

    @property
    def card_present(self) -> str | None:
        return self._card

    @property
    def link_lost(self) -> bool:
        return FaultCode.LINK_LOST in self._faults

    async def start(self) -> None:
        """Open the port; raises :class:`DeviceError` if it cannot be opened. The module cannot be
        asked anything, so there is no answer to wait for."""
        self._loop = asyncio.get_running_loop()
        self._open_port()

    async def close(self) -> None:
        if self._reopen_task is not None:
            self._reopen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen_task
            self._reopen_task = None
        if self._gone is not None:
            self._gone.cancel()
            self._gone = None
        self._port.close()
        log.info("rdm6300 %s: closed (%s)", self.name, self.stats)

    # --- port ---------------------------------------------------------------------------------

    def _open_port(self) -> None:
        self._port.open()
        self._decoder = Rdm6300Decoder()
        self._dropped_seen = 0
        log.info("rdm6300 %s: listening on %s at %d 8N1", self.name, self.port, self._port.baudrate)

    def _port_failed(self, exc: BaseException) -> None:
        """The port closed itself (adapter unplugged): LINK_LOST, and keep trying to reopen it."""
        self._card_gone()
        self._candidate = None
        if self._faults.raise_fault(FaultCode.LINK_LOST, f"serial port failed: {exc}"):
            log.warning("rdm6300 %s: serial port %s failed: %s", self.name, self.port, exc)
        if self._reopen_task is None:
            self._reopen_task = self._spawn(self._reopen(), name=f"rdm6300-reopen:{self.name}")

    async def _reopen(self) -> None:
        while True:
            await asyncio.sleep(self._reopen_interval_s)
            try:
                self._open_port()
            except DeviceError as exc:
                log.debug("rdm6300 %s: still cannot reopen: %s", self.name, exc)
                continue
            self._reopen_task = None
            self._faults.clear(FaultCode.LINK_LOST)
            log.warning("rdm6300 %s: port %s reopened", self.name, self.port)
            return

    # --- frames -------------------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        frames = self._decoder.feed(data)
        if self._decoder.dropped > self._dropped_seen:
            self.stats.frames_dropped += self._decoder.dropped - self._dropped_seen
            self._dropped_seen = self._decoder.dropped
            log.debug("rdm6300 %s: dropped frames so far: %s", self.name, dict(self._decoder.reasons))
        for frame in frames:
            self.stats.frames_received += 1
            self._seen(frame.uid)

    def _seen(self, uid: str) -> None:
        """One CardPresented per presentation: repeats of the tag in the field are suppressed, and a
        new tag must be heard ``confirm_frames`` times (within ``hold_s`` of each other) first."""
        assert self._loop is not None
        now = self._loop.time()
        if uid == self._card:
            self._candidate = None
            self._hold()
            return
        if uid != self._candidate or now - self._candidate_at > self._hold_s:
            self._candidate, self._candidate_count = uid, 0
        self._candidate_count += 1
        self._candidate_at = now
        if self._candidate_count < self._confirm_frames:
            return
        self._candidate = None
        self._card = uid
        self._hold()
        log.info("rdm6300 %s: tag …%s presented", self.name, uid[-4:])
        self.events.publish(CardPresented(self.name, uid, CardTechnology.EM4100))

    def _hold(self) -> None:
        """(Re)start the countdown after which the tag counts as gone."""
        assert self._loop is not None
        if self._gone is not None:
            self._gone.cancel()
        self._gone = self._loop.call_later(self._hold_s, self._card_gone)

    def _card_gone(self) -> None:
        if self._gone is not None:
            self._gone.cancel()
            self._gone = None
        if self._card is not None:
            log.info("rdm6300 %s: tag …%s left the field", self.name, self._card[-4:])
            self._card = None
