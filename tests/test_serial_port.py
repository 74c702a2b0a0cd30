"""AsyncSerialPort over real ptys: reading through the loop, non-blocking writes with a bounded
backlog, clear open errors, and a port that disappears reported once without crashing the loop."""

from __future__ import annotations

import asyncio
import logging
import os
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from hal.interfaces import DeviceError, LinkStats
from hal.serial_port import AsyncSerialPort
from sim.devices.serial_wire import SerialWire

MISSING = "/dev/does-not-exist"


class Sink:
    """Collects what a port reads and what it reports lost."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: list[BaseException] = []
        self._changed = asyncio.Event()

    def on_data(self, data: bytes) -> None:
        self.data += data
        self._changed.set()

    def on_lost(self, exc: BaseException) -> None:
        self.lost.append(exc)
        self._changed.set()

    async def wait_for(self, size: int, within_s: float = 2.0) -> bytes:
        async with asyncio.timeout(within_s):
            while len(self.data) < size:
                self._changed.clear()
                await self._changed.wait()
        return bytes(self.data)

    async def wait_lost(self, within_s: float = 2.0) -> None:
        async with asyncio.timeout(within_s):
            while not self.lost:
                self._changed.clear()
                await self._changed.wait()


class Pty:
    """A raw pty standing in for a USB serial adapter: ``path`` is the tty a port opens."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.plugged = True

    def unplug(self) -> None:
        """Close the master: the tty hangs up, as when the adapter is pulled out."""
        os.close(self.master)
        self.plugged = False

    def close(self) -> None:
        if self.plugged:
            os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Exceptions that escaped into the event loop's handler (a crashing callback lands here)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


async def test_bytes_cross_the_wire_both_ways_and_close_is_idempotent(wire: SerialWire) -> None:
    host_sink, dev_sink = Sink(), Sink()
    host = AsyncSerialPort(wire.host_port, 115200, name="host", on_data=host_sink.on_data, on_lost=host_sink.on_lost)
    dev = AsyncSerialPort(wire.device_port, 115200, name="dev", on_data=dev_sink.on_data, on_lost=dev_sink.on_lost)
    assert not host.is_open
    host.open()
    dev.open()
    host.open()  # already open: nothing happens
    try:
        assert host.is_open and dev.is_open
        host.write(b"ping\x00\xff")
        assert await dev_sink.wait_for(6) == b"ping\x00\xff"
        dev.write(b"pong")
        dev.write(b"!")
        assert await host_sink.wait_for(5) == b"pong!"
        assert host.backlog == 0 and dev.backlog == 0
    finally:
        host.close()
        dev.close()
    host.close()
    assert not host.is_open
    with pytest.raises(DeviceError, match=f"host: serial port {wire.host_port} is not open"):
        host.write(b"x")
    assert host_sink.lost == [] and dev_sink.lost == []  # closing is not losing


async def test_a_write_larger_than_the_tty_buffer_is_queued_and_arrives_whole_in_order(wire: SerialWire) -> None:
    sink = Sink()
    host = AsyncSerialPort(wire.host_port, 115200, name="host", on_data=None, max_backlog=1 << 20)
    dev = AsyncSerialPort(wire.device_port, 115200, name="dev", on_data=sink.on_data)
    host.open()
    dev.open()
    try:
        big = bytes(range(256)) * 1024  # 256 KiB: more than a pty holds
        host.write(big)
        assert host.backlog > 0  # the rest waits for the loop's writer callback
        host.write(b"tail")  # queued behind the backlog, not ahead of it
        assert await sink.wait_for(len(big) + 4, within_s=5.0) == big + b"tail"
        assert host.backlog == 0
    finally:
        host.close()
        dev.close()


async def test_a_port_that_does_not_drain_refuses_writes_beyond_its_backlog(pty: Pty) -> None:
    path = pty.path  # nobody reads the master: the line is stalled
    port = AsyncSerialPort(path, 9600, name="stalled", on_data=None, max_backlog=1024)
    port.open()
    try:
        port.write(bytes(256 * 1024))  # the tty takes what it can, the rest is queued
        queued = port.backlog
        assert queued > 0
        with pytest.raises(DeviceError, match=rf"stalled: {path} is not draining .*; 10 bytes dropped"):
            port.write(bytes(10))
        assert port.backlog == queued and port.is_open  # refused, not lost
    finally:
        port.close()
    assert port.backlog == 0


async def test_framing_is_8n1_by_default_and_configurable(pty: Pty) -> None:
    """Read back from the tty. (A pty forces CS8 and no parity whatever it is asked, so only the
    speed and the stop bits show a non-default setting.)"""
    slave, path = pty.slave, pty.path
    port = AsyncSerialPort(path, 9600, name="framing", on_data=None)
    port.open()
    try:
        attrs = termios.tcgetattr(slave)
        assert attrs[2] & termios.CSIZE == termios.CS8 and not attrs[2] & (termios.PARENB | termios.CSTOPB)
        assert attrs[4] == termios.B9600
    finally:
        port.close()
    port = AsyncSerialPort(path, 19200, name="framing", on_data=None, stopbits=2)
    port.open()
    try:
        attrs = termios.tcgetattr(slave)
        assert attrs[2] & termios.CSTOPB and attrs[4] == termios.B19200
    finally:
        port.close()


async def test_a_port_that_cannot_be_opened_raises_a_device_error_naming_it() -> None:
    port = AsyncSerialPort(MISSING, 9600, name="reader", on_data=None)
    with pytest.raises(DeviceError, match=f"^reader: cannot open {MISSING}: ") as info:
        port.open()
    assert info.value.__cause__ is not None  # pyserial's reason stays attached
    assert not port.is_open

    class BoardError(DeviceError):
        pass

    port = AsyncSerialPort(MISSING, 9600, name="board", on_data=None, error=BoardError, device="I/O board")
    with pytest.raises(BoardError, match=f"^board: cannot open I/O board port {MISSING}: "):
        port.open()
    with pytest.raises(BoardError, match="not open"):
        port.write(b"x")


async def test_a_port_that_disappears_is_reported_lost_once_and_closed(
    pty: Pty, loop_errors: list[dict[str, Any]]
) -> None:
    path = pty.path
    sink = Sink()
    port = AsyncSerialPort(path, 9600, name="reader", on_data=sink.on_data, on_lost=sink.on_lost)
    port.open()
    os.write(pty.master, b"before")
    assert await sink.wait_for(6) == b"before"
    pty.unplug()
    await sink.wait_lost()
    await asyncio.sleep(0.05)  # a closed port must not report again (a hung-up fd stays readable)
    assert len(sink.lost) == 1
    assert not port.is_open
    with pytest.raises(DeviceError, match="not open"):
        port.write(b"x")
    port.close()
    assert len(sink.lost) == 1 and loop_errors == []


async def test_a_failed_write_closes_the_port_reports_it_lost_and_raises(
    pty: Pty, loop_errors: list[dict[str, Any]]
) -> None:
    path = pty.path
    sink = Sink()
    port = AsyncSerialPort(path, 9600, name="module", on_data=None, on_lost=sink.on_lost)  # transmit-only
    port.open()
    pty.unplug()
    with pytest.raises(DeviceError, match=f"module: write to {path} failed: ") as info:
        port.write(b"frame")
    assert isinstance(info.value.__cause__, OSError)
    assert len(sink.lost) == 1 and not port.is_open
    with pytest.raises(DeviceError, match="not open"):
        port.write(b"frame")
    assert len(sink.lost) == 1 and loop_errors == []


async def test_without_on_lost_a_lost_port_is_logged_as_a_warning(
    pty: Pty, caplog: pytest.LogCaptureFixture
) -> None:
    path = pty.path
    sink = Sink()
    port = AsyncSerialPort(path, 9600, name="sim device", on_data=sink.on_data)
    with caplog.at_level(logging.WARNING, logger="hal.serial_port"):
        port.open()
        pty.unplug()
        for _ in range(400):  # the loss shows only in the log and in is_open
            if not port.is_open:
                break
            await asyncio.sleep(0.005)
    assert not port.is_open
    assert any(r.levelno == logging.WARNING and f"sim device: serial port {path} failed" in r.getMessage()
               for r in caplog.records)


async def test_a_receive_handler_that_raises_is_logged_counted_and_reading_goes_on(
    pty: Pty, loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """Defence in depth: parsers drop bad bytes themselves, but a bug in one must not leave the
    exception to the event loop's default handler, uncounted."""
    sink = Sink()

    def on_data(data: bytes) -> None:
        if b"!" in data:
            raise IndexError("a parser bug")
        sink.on_data(data)

    stats = LinkStats()
    port = AsyncSerialPort(pty.path, 9600, name="reader", on_data=on_data, stats=stats)
    with caplog.at_level(logging.ERROR, logger="hal.serial_port"):
        port.open()
        os.write(pty.master, b"bad!")
        for _ in range(400):
            if port.receive_errors:
                break
            await asyncio.sleep(0.005)
        os.write(pty.master, b"good")
        assert await sink.wait_for(4) == b"good"
    port.close()
    assert (port.receive_errors, stats.frames_dropped) == (1, 1)
    assert loop_errors == []
    record = next(r for r in caplog.records if "handling 4 bytes received on" in r.getMessage())
    assert record.exc_info is not None and record.exc_info[0] is IndexError
