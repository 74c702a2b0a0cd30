"""A serial cable between two pseudo-terminals, with fault injection.

``SerialWire`` creates two pty pairs and relays bytes between their master sides. The driver under
test opens :attr:`SerialWire.host_port`, the simulated device opens :attr:`SerialWire.device_port`;
both are real ttys, so every byte crosses the kernel's tty layer exactly as with a USB-RS485
adapter. The relay in the middle is where the line can be made to misbehave: silence, garbage,
truncated frames, bit noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    TO_HOST = "to_host"  # device -> agent
    TO_DEVICE = "to_device"  # agent -> device


@dataclass
class LineFaults:
    """What the wire currently does to bytes travelling in one direction."""

    silent: bool = False  # drop everything
    garbage_next: int = 0  # prepend this many random bytes to the next chunk, once
    truncate_next: int = 0  # cut the next N chunks in half
    noise_probability: float = 0.0  # per-byte probability of a flipped bit


@dataclass
class WireStats:
    bytes_to_host: int = 0
    bytes_to_device: int = 0
    bytes_dropped: int = 0
    bytes_injected: int = 0


def _open_raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class SerialWire:
    """Two ptys joined back to back. Create inside a running event loop, then ``await start()``."""

    def __init__(self, name: str = "wire", seed: int | None = None) -> None:
        self.name = name
        self._host_master, self._host_slave, self.host_port = _open_raw_pty()
        self._dev_master, self._dev_slave, self.device_port = _open_raw_pty()
        self.faults = {Direction.TO_HOST: LineFaults(), Direction.TO_DEVICE: LineFaults()}
        self.stats = WireStats()
        self._rng = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, bytearray] = {self._host_master: bytearray(), self._dev_master: bytearray()}
        #: called with (direction, bytes) for every chunk relayed — for benchmarks that time wire events
        self.observers: list[Callable[[Direction, bytes], None]] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._host_master, self._relay, self._host_master, self._dev_master,
                              Direction.TO_DEVICE)
        self._loop.add_reader(self._dev_master, self._relay, self._dev_master, self._host_master,
                              Direction.TO_HOST)

    def close(self) -> None:
        if self._loop is not None:
            for fd in (self._host_master, self._dev_master):
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
                    self._loop.remove_writer(fd)
            self._loop = None
        for fd in (self._host_master, self._host_slave, self._dev_master, self._dev_slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def __aenter__(self) -> SerialWire:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # --- fault injection ---------------------------------------------------------------------

    def set_silent(self, direction: Direction, silent: bool = True) -> None:
        self.faults[direction].silent = silent

    def inject_garbage(self, direction: Direction, count: int = 16) -> None:
        """Random bytes ahead of the next chunk (or on their own if nothing else is sent)."""
        self.faults[direction].garbage_next += count
        target = self._dev_master if direction is Direction.TO_DEVICE else self._host_master
        if self._loop is not None:  # send them now too, so a quiet line still sees noise
            self._write(target, self._take_garbage(direction))

    def truncate_next(self, direction: Direction, chunks: int = 1) -> None:
        self.faults[direction].truncate_next += chunks

    def set_noise(self, direction: Direction, probability: float) -> None:
        self.faults[direction].noise_probability = probability

    def clear_faults(self) -> None:
        for f in self.faults.values():
            f.silent, f.garbage_next, f.truncate_next, f.noise_probability = False, 0, 0, 0.0

    # --- relay ---------------------------------------------------------------------------------

    def _take_garbage(self, direction: Direction) -> bytes:
        n, self.faults[direction].garbage_next = self.faults[direction].garbage_next, 0
        self.stats.bytes_injected += n
        return bytes(self._rng.randrange(256) for _ in range(n))

    def _relay(self, src: int, dst: int, direction: Direction) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO: the other side closed its end; it may reopen later
        if not data:
            return
        faults = self.faults[direction]
        if faults.silent:
            self.stats.bytes_dropped += len(data)
            return
        if faults.truncate_next > 0:
            faults.truncate_next -= 1
            keep = max(1, len(data) // 2)
            self.stats.bytes_dropped += len(data) - keep
            data = data[:keep]
        if faults.noise_probability > 0.0:
            noisy = bytearray(data)
            for i in range(len(noisy)):
                if self._rng.random() < faults.noise_probability:
                    noisy[i] ^= 1 << self._rng.randrange(8)
            data = bytes(noisy)
        if faults.garbage_next:
            data = self._take_garbage(direction) + data
        if direction is Direction.TO_HOST:
            self.stats.bytes_to_host += len(data)
        else:
            self.stats.bytes_to_device += len(data)
        self._write(dst, data)
        for observer in self.observers:
            observer(direction, data)

    def _write(self, fd: int, data: bytes) -> None:
        pending = self._pending[fd]
        if pending:
            pending.extend(data)
            return
        try:
            n = os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return
        if n < len(data):
            pending.extend(data[n:])
            assert self._loop is not None
            self._loop.add_writer(fd, self._flush, fd)

    def _flush(self, fd: int) -> None:
        pending = self._pending[fd]
        try:
            n = os.write(fd, pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pending.clear()
            n = 0
        del pending[:n]
        if not pending and self._loop is not None:
            self._loop.remove_writer(fd)
