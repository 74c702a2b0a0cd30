"""One Modbus RTU line (an RS-485 serial port) shared by several devices.

Every device on the line (energy meters, the EVSE board, ...) talks through one :class:`ModbusBus`,
which owns the serial port and the pymodbus client and serializes transactions with an
:class:`asyncio.Lock`: RTU is strictly master/slave, so a second request on the wire before the
first answer (or its timeout) would corrupt both.

Receive-side framing is done here rather than by pymodbus' stock RTU framer, because the stock
framer throws a whole receive buffer away at the first CRC mismatch (a valid answer behind a few
bytes of line noise is lost), silently skips frames of other units and counts nothing. Our framer
hunts byte by byte for a CRC-valid frame from the unit and function we asked, drops everything else
and counts it in :attr:`LinkStats.frames_dropped`. Request encoding, CRC, PDU decoding and the serial
transport remain pymodbus'.

Addresses are 0-based protocol addresses, as they travel on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU

from hal.interfaces import DeviceError, LinkStats

log = logging.getLogger(__name__)

MAX_READ_REGISTERS: Final = 125  # Modbus application protocol v1.1b3, 6.3/6.4: 1..125 registers
MAX_WRITE_REGISTERS: Final = 123  # 6.12: 1..123 registers
SETTLE_FRACTION: Final = 0.5  # after a timeout, keep the line quiet for this fraction of timeout_s

EXCEPTION_NAMES: Final[dict[int, str]] = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}

FUNCTION_NAMES: Final[dict[int, str]] = {
    3: "read_holding_registers",
    4: "read_input_registers",
    6: "write_register",
    16: "write_registers",
}


def exception_name(code: int) -> str:
    return EXCEPTION_NAMES.get(code, f"UNKNOWN EXCEPTION {code}")


def quiet_pymodbus_logging() -> None:
    """Keep pymodbus' own log lines out unless someone configured its logger on purpose.

    pymodbus logs every timeout, skipped frame and late answer (with hex dumps) at WARNING/ERROR and
    without port or unit context; the bus reports each of these itself, with context and counters.
    Setting the ``pymodbus`` logger level explicitly (e.g. to DEBUG) brings pymodbus' lines back.
    """
    pymodbus_logger = logging.getLogger("pymodbus")
    if pymodbus_logger.level == logging.NOTSET:
        pymodbus_logger.setLevel(logging.CRITICAL)



def _reraise_cancellation() -> None:
    """pymodbus can turn a cancellation of the awaiting task into a timeout or connection error (it waits with
    its own timeouts). Swallowed, the cancellation is lost and the task never ends — the agent then hangs on
    its way out. A task being cancelled gets its CancelledError back instead of a DeviceError."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

class ModbusExceptionResponse(DeviceError):
    """A device answered with a Modbus exception response (it is alive, but refused the request)."""

    def __init__(self, message: str, *, code: int, unit: int, function_code: int, address: int) -> None:
        super().__init__(message)
        self.code = code
        self.unit = unit
        self.function_code = function_code
        self.address = address

    @property
    def code_name(self) -> str:
        return exception_name(self.code)


@dataclass
class FramerEvents:
    """What the receive framer tells the bus; callbacks so the bus can attribute counts to a unit."""

    on_frame: Callable[[], None]
    on_drop: Callable[[str], None]


class RtuResponseFramer(FramerRTU):
    """RTU response framer that hunts for the expected frame and reports everything it drops.

    Accepted: a CRC-valid frame whose unit and function code (or exception code ``fc | 0x80``)
    match the request last sent. Dropped and reported: junk bytes before it, CRC-valid frames of
    other units or functions (late answers), frames pymodbus cannot decode, and a partial frame
    still waiting when the next request is sent or the transaction times out.
    """

    def __init__(self, decoder: DecodePDU, events: FramerEvents) -> None:
        super().__init__(decoder)
        self._events = events
        self._expect_unit: int | None = None
        self._expect_fcs: frozenset[int] = frozenset()
        self.pending = 0  # bytes held back waiting for the rest of a plausible frame

    def buildFrame(self, message: ModbusPDU) -> bytes:
        self.discard_pending("partial frame discarded before the next request")
        self._expect_unit = message.dev_id
        self._expect_fcs = frozenset({message.function_code, message.function_code | 0x80})
        return super().buildFrame(message)

    def discard_pending(self, why: str) -> None:
        if self.pending:
            self.pending = 0
            self._events.on_drop(why)

    def _frame_size(self, frame: bytes) -> int:
        """Size of the frame starting at ``frame[0]`` as its header announces it; 0 if implausible."""
        try:
            pdu_class = self.decoder.lookupPduClass(frame)
            if pdu_class is None:
                return 0
            return int(pdu_class.calculateRtuFrameSize(frame))
        except Exception:  # any PDU class quirk on random bytes just means "not a frame here"
            return 0

    def handleFrame(
        self, data: bytes, exp_devid: int, exp_tid: int
    ) -> tuple[int, ModbusPDU | None]:
        pos = 0
        junk = False
        result: tuple[int, ModbusPDU | None] | None = None
        while len(data) - pos >= self.MIN_SIZE:
            frame = data[pos:]
            size = self._frame_size(frame)
            if size < self.MIN_SIZE:
                pos, junk = pos + 1, True
                continue
            expected = frame[0] == self._expect_unit and frame[1] in self._expect_fcs
            if len(frame) < size:
                if expected:
                    break  # the rest of our answer is still on its way
                pos, junk = pos + 1, True
                continue
            crc = int.from_bytes(frame[size - 2 : size], "big")
            if not self.check_CRC(frame[: size - 2], crc):
                pos, junk = pos + 1, True
                continue
            if not expected:
                self._events.on_drop(f"frame from unit {frame[0]} function {frame[1]} not asked for")
                pos += size
                continue
            pdu = self._decode(frame[1 : size - 2])
            if pdu is None:
                self._events.on_drop(f"undecodable frame from unit {frame[0]} function {frame[1]}")
                pos += size
                continue
            pdu.dev_id = frame[0]
            pdu.transaction_id = 0
            pos += size
            result = (pos, pdu)
            break
        if junk:
            self._events.on_drop("junk bytes on the line")
        if result is not None:
            self.pending = len(data) - result[0]
            self._events.on_frame()
            return result
        self.pending = len(data) - pos
        return pos, None

    def _decode(self, pdu_bytes: bytes) -> ModbusPDU | None:
        try:
            return self.decoder.decode(pdu_bytes)
        except Exception:  # a CRC-valid but malformed PDU: drop it like any corrupt frame
            return None


class ModbusBus:
    """One RS-485 line (one serial port) shared by several devices (unit ids); every transaction
    is serialized by an asyncio.Lock so devices sharing the line never interleave."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 9600,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 0.3,
        retries: int = 0,
        name: str | None = None,
    ) -> None:
        if parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be 'N', 'E' or 'O', not {parity!r}")
        if stopbits not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2, not {stopbits!r}")
        if timeout_s <= 0 or retries < 0:
            raise ValueError("timeout_s must be > 0 and retries >= 0")
        self.port = port
        self.name = name or f"modbus:{port}"
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.timeout_s = timeout_s
        self.retries = retries
        self.stats = LinkStats()
        self._unit_stats: dict[int, LinkStats] = {}
        self._lock = asyncio.Lock()
        self._client: AsyncModbusSerialClient | None = None
        self._framer: RtuResponseFramer | None = None
        self._current_unit: int | None = None  # unit of the transaction in flight, if any
        quiet_pymodbus_logging()

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the serial port. Idempotent, so every device sharing the line may call it."""
        async with self._lock:
            if self._client is not None and self._client.connected:
                return
            if self._client is None:
                self._client = AsyncModbusSerialClient(
                    self.port,
                    framer=FramerType.RTU,
                    baudrate=self.baudrate,
                    bytesize=8,
                    parity=self.parity,
                    stopbits=self.stopbits,
                    timeout=self.timeout_s,
                    retries=self.retries,
                    reconnect_delay=0,  # we reconnect on demand in _connect(), never in the background
                    name=self.name,
                    trace_packet=self._trace_packet,
                )
                self._framer = RtuResponseFramer(
                    DecodePDU(False), FramerEvents(on_frame=self._on_frame, on_drop=self._on_drop)
                )
                self._client.ctx.framer = self._framer
            await self._connect()
            log.info("%s: opened %s (%d baud, %s%d, timeout %.3fs)", self.name, self.port, self.baudrate,
                     self.parity, self.stopbits, self.timeout_s)

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._framer = None
                log.info("%s: closed %s (%s)", self.name, self.port, self.stats)

    async def __aenter__(self) -> ModbusBus:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _connect(self) -> None:
        assert self._client is not None
        if not await self._client.connect():
            raise DeviceError(f"{self.name}: cannot open serial port {self.port}")
        # connection_made (which sets up the reader) runs on the next loop iterations
        for _ in range(10):
            if self._client.connected:
                return
            await asyncio.sleep(0)

    # --- statistics ------------------------------------------------------------------------------

    def unit_stats(self, unit: int) -> LinkStats:
        """Counters for the transactions with one unit (a driver exposes these as its own stats)."""
        stats = self._unit_stats.get(unit)
        if stats is None:  # not setdefault: that builds a LinkStats on every call, and this runs for every frame
            stats = self._unit_stats[unit] = LinkStats()
        return stats

    def _counters(self) -> list[LinkStats]:
        if self._current_unit is None:
            return [self.stats]
        return [self.stats, self.unit_stats(self._current_unit)]

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if sending and data:
            for s in self._counters():
                s.frames_sent += 1
        return data

    def _on_frame(self) -> None:
        if self._current_unit is None:
            self._on_drop("answer arrived after its request had timed out")
            return
        for s in self._counters():
            s.frames_received += 1

    def _on_drop(self, why: str) -> None:
        for s in self._counters():
            s.frames_dropped += 1
        log.debug("%s: dropped a frame on %s: %s (total %d)", self.name, self.port, why,
                  self.stats.frames_dropped)

    # --- transactions --------------------------------------------------------------------------

    async def read_input_registers(self, unit: int, address: int, count: int) -> list[int]:
        _check_read(unit, address, count)
        response = await self._transact(
            unit, 4, address, lambda c: c.read_input_registers(address, count=count, device_id=unit)
        )
        return self._registers(response, unit, 4, address, count)

    async def read_holding_registers(self, unit: int, address: int, count: int) -> list[int]:
        _check_read(unit, address, count)
        response = await self._transact(
            unit, 3, address, lambda c: c.read_holding_registers(address, count=count, device_id=unit)
        )
        return self._registers(response, unit, 3, address, count)

    async def write_register(self, unit: int, address: int, value: int) -> None:
        _check_write(unit, address, [value])
        response = await self._transact(
            unit, 6, address, lambda c: c.write_register(address, value, device_id=unit)
        )
        if response.address != address or list(response.registers) != [value]:
            self._mismatch(unit, 6, address, f"echo {response.address}/{list(response.registers)}")

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        _check_write(unit, address, values)
        response = await self._transact(
            unit, 16, address, lambda c: c.write_registers(address, list(values), device_id=unit)
        )
        if response.address != address or response.count != len(values):
            self._mismatch(unit, 16, address, f"echo address {response.address} count {response.count}")

    async def _settle(self, framer: RtuResponseFramer) -> None:
        """After a timeout, listen a little longer before the line is used again.

        A slave that answers just after our timeout would otherwise have its late answer taken
        for the answer to the next request (RTU frames carry no transaction id). Whatever arrives
        in this window is dropped and counted; only failing transactions pay for it.
        """
        await asyncio.sleep(self.timeout_s * SETTLE_FRACTION)
        framer.discard_pending("partial frame discarded after a timeout")

    def _registers(self, response: ModbusPDU, unit: int, fc: int, address: int, count: int) -> list[int]:
        registers = list(response.registers)
        if len(registers) != count:
            self._mismatch(unit, fc, address, f"{len(registers)} registers instead of {count}")
        return registers

    def _mismatch(self, unit: int, fc: int, address: int, what: str) -> None:
        """A CRC-valid answer from the right unit that does not fit the request: drop it, fail."""
        for s in (self.stats, self.unit_stats(unit)):
            s.frames_dropped += 1
        raise DeviceError(f"{self.name}: unit {unit} answered {FUNCTION_NAMES[fc]} at address "
                          f"{address} (0x{address:04X}) on {self.port} with {what}")

    async def _transact(
        self,
        unit: int,
        fc: int,
        address: int,
        call: Callable[[AsyncModbusSerialClient], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        async with self._lock:
            client, framer = self._client, self._framer
            if client is None or framer is None:
                raise DeviceError(f"{self.name}: {self.port} is not open")
            self._current_unit = unit
            unit_stats = self.unit_stats(unit)
            for s in (self.stats, unit_stats):
                s.requests += 1
            dropped_before = unit_stats.frames_dropped
            try:
                if not client.connected:
                    log.warning("%s: %s was closed, reopening", self.name, self.port)
                    await self._connect()
                response = await call(client)
                _reraise_cancellation()
            except ConnectionException as exc:
                _reraise_cancellation()
                raise DeviceError(f"{self.name}: serial port {self.port} is not usable: {exc}") from exc
            except ModbusException as exc:
                _reraise_cancellation()
                for s in (self.stats, unit_stats):
                    s.timeouts += 1
                framer.discard_pending("partial frame discarded at timeout")
                self._current_unit = None
                await self._settle(framer)
                corrupt = unit_stats.frames_dropped - dropped_before
                detail = f" ({corrupt} corrupt/unexpected frame(s) dropped)" if corrupt else ""
                raise DeviceError(
                    f"{self.name}: no valid answer from unit {unit} to {FUNCTION_NAMES[fc]} at address "
                    f"{address} (0x{address:04X}) on {self.port} within {self.timeout_s}s{detail}"
                ) from exc
            except OSError as exc:
                _reraise_cancellation()
                raise DeviceError(f"{self.name}: serial port {self.port} failed: {exc}") from exc
            finally:
                self._current_unit = None
            if response.isError():
                for s in (self.stats, unit_stats):
                    s.exceptions += 1
                code = int(response.exception_code)
                raise ModbusExceptionResponse(
                    f"{self.name}: unit {unit} answered {FUNCTION_NAMES[fc]} at address {address} "
                    f"(0x{address:04X}) with exception {code} ({exception_name(code)})",
                    code=code, unit=unit, function_code=fc, address=address,
                )
            return response


def _check_unit(unit: int) -> None:
    # 0 is broadcast (never answered), 248..255 reserved (Modbus over serial line v1.02, 2.2)
    if not 1 <= unit <= 247:
        raise ValueError(f"unit id must be 1..247, not {unit}")


def _check_read(unit: int, address: int, count: int) -> None:
    _check_unit(unit)
    if not 1 <= count <= MAX_READ_REGISTERS:
        raise ValueError(f"register count must be 1..{MAX_READ_REGISTERS}, not {count}")
    if not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError(f"registers {address}..{address + count - 1} are outside 0..65535")


def _check_write(unit: int, address: int, values: list[int]) -> None:
    _check_unit(unit)
    if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
        raise ValueError(f"register count must be 1..{MAX_WRITE_REGISTERS}, not {len(values)}")
    if not 0 <= address <= 0xFFFF or address + len(values) > 0x10000:
        raise ValueError(f"registers {address}..{address + len(values) - 1} are outside 0..65535")
    if any(not 0 <= v <= 0xFFFF for v in values):
        raise ValueError(f"register values must be 0..65535: {values}")
