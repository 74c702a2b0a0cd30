"""A serial port driven by the asyncio event loop: pyserial opens and configures it, the loop's
reader callback reads it, and writes never block.

Every serial driver and simulated device needs the same four things, with the same failure
handling, so they live here once:

* ``open()``: pyserial ``Serial`` (8N1 unless told otherwise, non-blocking fd), the fd registered
  with ``loop.add_reader``; a port that cannot be opened raises a :class:`DeviceError` naming it.
* reading: up to :data:`READ_CHUNK` bytes per readable event, handed to ``on_data``.
* ``write()``: ``os.write`` on the fd; what the tty does not take now waits in a bounded backlog
  that the loop flushes when the fd becomes writable (pyserial's ``write`` would loop until the
  tty took everything, blocking the event loop).
* loss: a read or write error (EIO, a hung-up tty reading as empty: an unplugged adapter) closes
  the port and calls ``on_lost`` once; the owner decides what it means (fault, reopen, retry).
* a receive handler that raises: its parsers must not (bad bytes are dropped and counted where they
  are parsed), so this is a bug; the chunk is logged with the traceback and counted as dropped, and
  the port keeps reading instead of leaving the exception to the event loop's default handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import serial  # pyserial

from hal.interfaces import DeviceError, LinkStats

log = logging.getLogger(__name__)

READ_CHUNK = 4096  # bytes per read: more than any of our frames, less than a tty buffer
MAX_BACKLOG = 16 * 1024  # bytes queued for a stalled port before writes are refused


class AsyncSerialPort:
    """One serial port, read through the event loop and written without blocking.

    ``name`` prefixes log lines and error messages (the owning device's name). ``on_data`` gets
    every chunk read; ``None`` makes a transmit-only port that never registers a reader. ``on_lost``
    is called once when the port fails (the port is already closed then); without it the loss is
    logged as a warning. ``error`` is the :class:`DeviceError` subclass raised, so a driver keeps
    its own exception type; ``device`` names what is on the port in the open error
    (``"I/O board"`` -> "cannot open I/O board port /dev/ttyS1"). ``stats`` are the owner's counters:
    a chunk ``on_data`` raised on is counted in their ``frames_dropped`` (and in :attr:`receive_errors`).
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        name: str,
        on_data: Callable[[bytes], None] | None,
        on_lost: Callable[[BaseException], None] | None = None,
        error: type[DeviceError] = DeviceError,
        device: str = "",
        bytesize: int = serial.EIGHTBITS,
        parity: str = serial.PARITY_NONE,
        stopbits: float = serial.STOPBITS_ONE,
        max_backlog: int = MAX_BACKLOG,
        stats: LinkStats | None = None,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.name = name
        self._on_data = on_data
        self._on_lost = on_lost
        self._error = error
        self._what = f"{device} port {port}" if device else port
        self._framing = (bytesize, parity, stopbits)
        self._max_backlog = max_backlog
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog = bytearray()
        self._stats = stats
        self.receive_errors = 0  # chunks the on_data handler raised on (each logged with its traceback)

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def backlog(self) -> int:
        """Bytes written but not yet taken by the tty."""
        return len(self._backlog)

    def open(self) -> None:
        """Open and configure the port and start reading it; a no-op if it is open already.

        Must run inside the event loop. Raises ``error`` naming the port and the cause."""
        if self._serial is not None:
            return
        loop = asyncio.get_running_loop()
        bytesize, parity, stopbits = self._framing
        try:
            ser = serial.Serial(self.port, self.baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits,
                                timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._error(f"{self.name}: cannot open {self._what}: {exc}") from exc
        self._serial, self._fd, self._loop = ser, ser.fileno(), loop
        self._backlog.clear()
        if self._on_data is not None:
            loop.add_reader(self._fd, self._on_readable)
        log.debug("%s: opened %s at %d %d%s%g", self.name, self.port, self.baudrate, bytesize, parity, stopbits)

    def close(self) -> None:
        """Stop reading, drop unsent bytes and close the port; safe to call at any time, repeatedly."""
        ser, self._serial = self._serial, None
        if ser is None:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._fd)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
        with contextlib.suppress(Exception):
            ser.close()
        self._backlog.clear()
        log.debug("%s: closed %s", self.name, self.port)

    def write(self, data: bytes) -> None:
        """Send ``data`` without blocking: what the tty does not take now is sent when it can.

        Raises ``error`` if the port is not open, if the backlog would exceed ``max_backlog`` (the
        port is not draining; ``data`` is dropped) or if the write fails (the port is then closed
        and ``on_lost`` called before this raises)."""
        if self._serial is None:
            raise self._error(f"{self.name}: serial port {self.port} is not open")
        if self._backlog:
            if len(self._backlog) + len(data) > self._max_backlog:
                log.warning("%s: %s is not draining; dropping %d bytes", self.name, self.port, len(data))
                raise self._error(f"{self.name}: {self.port} is not draining ({len(self._backlog)} bytes "
                                  f"queued); {len(data)} bytes dropped")
            self._backlog += data
            return
        try:
            n = os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._lost(exc)
            raise self._error(f"{self.name}: write to {self.port} failed: {exc}") from exc
        if n < len(data):
            self._backlog += data[n:]
            assert self._loop is not None
            self._loop.add_writer(self._fd, self._flush)

    # --- loop callbacks ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        ser = self._serial
        if ser is None:
            return
        try:
            # pyserial raises for EIO and for "readable but no data" (a hung-up tty) alike
            data: bytes = ser.read(READ_CHUNK)
        except (serial.SerialException, OSError) as exc:
            self._lost(exc)
            return
        if data and self._on_data is not None:
            try:
                self._on_data(data)
            except Exception:  # defence in depth: counted and logged, and the port keeps reading
                self.receive_errors += 1
                if self._stats is not None:
                    self._stats.frames_dropped += 1
                log.exception("%s: handling %d bytes received on %s failed; dropped them (%d such failures)",
                              self.name, len(data), self.port, self.receive_errors)

    def _flush(self) -> None:
        if self._serial is None:
            return
        try:
            n = os.write(self._fd, self._backlog)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._backlog[:n]
        if not self._backlog and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _lost(self, exc: BaseException) -> None:
        self.close()
        if self._on_lost is None:
            log.warning("%s: serial port %s failed, closed it: %s", self.name, self.port, exc)
            return
        log.debug("%s: serial port %s failed: %s", self.name, self.port, exc)
        self._on_lost(exc)
