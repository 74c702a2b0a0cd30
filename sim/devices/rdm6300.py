"""A simulated RDM6300-style 125 kHz reader module: repeats the tag's ASCII frame while it is present.

The real module has no command set (its RX pin is unused), so this only ever transmits. ``send_raw``
lets tests put arbitrary (e.g. corrupt) bytes on the line as if the module had sent them.
"""

from __future__ import annotations

import asyncio
import contextlib

from hal.interfaces import DeviceError
from hal.rdm6300.codec import encode_frame, parse_tag_uid
from hal.serial_port import AsyncSerialPort
from sim.devices.interfaces import DeviceCounters


class SimulatedRdm6300:
    """Implements :class:`sim.devices.interfaces.SimulatedReader` on the device end of a serial wire."""

    def __init__(self, port: str, repeat_s: float = 0.1, *, baudrate: int = 9600) -> None:
        self.port = port
        self.counters = DeviceCounters()  # extra["frames_sent"]
        self._repeat_s = repeat_s
        self._port = AsyncSerialPort(port, baudrate, name="sim rdm6300", on_data=None)  # the module only talks
        self._task: asyncio.Task[None] | None = None
        self._frame: bytes | None = None
        self._silent = False
        self._wake = asyncio.Event()

    async def start(self) -> None:
        self._port.open()
        self._task = asyncio.create_task(self._transmit(), name=f"sim-rdm6300:{self.port}")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._port.close()

    async def __aenter__(self) -> SimulatedRdm6300:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def present(self, uid: str) -> None:
        """Put a tag (10 hex digits: version byte + 32-bit id) in the field; sent at once, then
        every ``repeat_s``."""
        parse_tag_uid(uid)
        self._frame = encode_frame(uid)
        self._wake.set()

    def remove(self) -> None:
        self._frame = None

    def set_silent(self, silent: bool) -> None:
        """The module stops transmitting (dead antenna, no power) — indistinguishable from no tag."""
        self._silent = silent
        self._wake.set()

    def send_raw(self, data: bytes) -> None:
        self._write(data)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(DeviceError):  # closed, or failed just now (the port logged that)
            self._port.write(data)

    async def _transmit(self) -> None:
        while True:
            if self._frame is not None and not self._silent:
                self._write(self._frame)
                self.counters.extra["frames_sent"] = self.counters.extra.get("frames_sent", 0) + 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._repeat_s):
                    await self._wake.wait()
