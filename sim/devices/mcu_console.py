"""The USB console of a simulated MicroPython chip: the friendly and the raw REPL on a pseudo-terminal.

On a real RP2040 the MicroPython runtime (``shared/runtime/pyexec.c``, C code in the interpreter image, not
our firmware) serves the REPL on the USB serial port: Ctrl-C interrupts the running program, Ctrl-A enters
the raw REPL, in which each block of code ends with Ctrl-D, is acknowledged ``OK``, executed, and answered
with its output, ``\\x04``, its error output, ``\\x04`` and the prompt ``>``; Ctrl-B goes back to the
friendly REPL. That is the protocol mpremote speaks (and so ``tools/flash.py mcu``).

The WASI MicroPython of the simulation is the unix port, which has no raw REPL, so this module plays
pyexec's part on the host side of the pty: it parses what the technician's tool sends and hands each
code block to the chip's interpreter (``McuIoBoard``'s flash mode, whose boot code asks for the next block
with ``host.call("usb_exec")`` and runs it with the same globals, as the REPL does), then frames the
answer. Raw-paste mode (Ctrl-E) is declined, as by a runtime built without it; mpremote falls back.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable

BANNER = (b"MicroPython v1.27.0 on 2026-06-02; simulated RP2040 (WASI build)\r\n"
          b"Type \"help()\" for more information.\r\n>>> ")
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"


class ConsoleReset(Exception):
    """The chip was reset while the console waited for input."""


class UsbConsole:
    """The device end of the USB serial line (``fd``, a pty master) and pyexec's REPL state."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()  # bytes received and not consumed yet
        self.raw = False

    def reset(self) -> None:
        """A chip reset: the USB device re-enumerates, whatever was on its way is gone."""
        self.pending.clear()
        self.raw = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)
                continue
            except OSError:
                return  # nobody holds the other end: the bytes are lost, as on an unplugged cable
            view = view[n:]

    def receive(self, timeout_s: float) -> bool:
        """Read what arrived within ``timeout_s`` into :attr:`pending`; False if nothing did."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # EIO: the host end is closed right now
            return False
        self.pending += data
        return bool(data)

    def interrupt_pending(self) -> bool:
        """A Ctrl-C arrived while a program runs (it becomes a KeyboardInterrupt there); consumed."""
        i = self.pending.find(b"\x03")
        if i < 0:
            return False
        del self.pending[:i + 1]
        return True

    def started(self) -> None:
        """The program ended (or there was none): the friendly REPL greets."""
        self.write(b"\r\n" + BANNER)

    def next_block(self, alive: Callable[[], bool]) -> bytes:
        """Serve the REPL until a raw-REPL code block is complete; returns it, after sending ``OK`` (empty:
        a soft reset). ``alive()`` False (the chip was reset) raises :class:`ConsoleReset`."""
        block = bytearray()
        while True:
            while not self.pending:
                if not alive():
                    raise ConsoleReset
                self.receive(0.05)
            byte = self.pending[0]
            del self.pending[:1]
            if byte == 0x01:  # Ctrl-A: (re-)enter the raw REPL
                self.raw = True
                block.clear()
                self.write(b"\r\n" + RAW_BANNER)
            elif byte == 0x02:  # Ctrl-B: back to the friendly REPL
                self.raw = False
                block.clear()
                self.write(b"\r\n" + BANNER)
            elif byte == 0x03:  # Ctrl-C: forget the line
                block.clear()
                if not self.raw:
                    self.write(b"\r\n>>> ")
            elif not self.raw:
                continue  # the friendly REPL's line editing is not simulated; a tool never relies on it
            elif byte == 0x05 and not block:  # Ctrl-E A Ctrl-A: raw-paste request, declined
                self._take(2)
                self.write(b"R\x00")
            elif byte == 0x04:
                if not block:  # Ctrl-D on an empty block: a soft reset (fresh globals), still in the raw REPL
                    self.write(b"soft reboot\r\n" + RAW_BANNER)
                    return b""
                self.write(b"OK")
                return bytes(block)
            else:
                block.append(byte)

    def answer(self, out: bytes, err: bytes) -> None:
        """The executed block's output and error output, framed as the raw REPL does, and the next prompt."""
        self.write(out + b"\x04" + err + b"\x04>")

    def _take(self, n: int) -> None:
        while len(self.pending) < n and self.receive(1.0):
            pass
        del self.pending[:n]
