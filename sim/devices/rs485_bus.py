"""A simulated RS-485 line: several Modbus RTU devices answering on one pseudo-terminal.

The wire protocol is pymodbus' own RTU server (``ModbusSerialServer``), so the agent's bus talks to
an independent Modbus implementation, not to a mirror of itself. Register values are not stored in
pymodbus: each attached :class:`SimulatedModbusDevice` answers every request at request time (through
a pymodbus ``SimDevice`` action callback), so a device's registers always reflect its current state.

Like a real line, a request addressed to a unit nobody answers for, or to a device that is
``silent``, gets no response at all (the master times out); it is never answered with an exception.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol, cast

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from hal.modbus_bus import quiet_pymodbus_logging

log = logging.getLogger(__name__)

RegisterKind = Literal["input", "holding"]

_READ_KIND: dict[int, RegisterKind] = {3: "holding", 4: "input"}
_WRITE_FUNCTIONS = frozenset({6, 16})


class SimulatedModbusDevice(Protocol):
    """A device on the simulated line, asked for its registers at the moment a request arrives."""

    unit: int
    silent: bool  # True: does not answer at all (as a dead device on the bus)

    def read_registers(self, kind: RegisterKind, address: int, count: int) -> list[int] | int:
        """``count`` register values from ``address``, or a Modbus exception code (e.g. 2)."""
        ...

    def write_registers(self, address: int, values: list[int]) -> int | None:
        """Apply a write of holding registers: ``None`` if accepted, else a Modbus exception code."""
        ...


@dataclass(frozen=True)
class LineEvent:
    """One frame seen by the simulated line, for tests that check what happened on the wire."""

    at: float  # time.monotonic()
    direction: Literal["request", "response"]
    unit: int
    function_code: int
    address: int


class SimulatedRs485Bus:
    """Several simulated Modbus devices sharing one serial line (the device end of a SerialWire)."""

    def __init__(self, port: str, *, baudrate: int = 9600) -> None:
        self.port = port
        self.baudrate = baudrate
        self.requests = 0  # requests answered (with data or an exception)
        self.response_delay_s = 0.0  # device turnaround time; real meters take tens of milliseconds
        self.trace: deque[LineEvent] = deque(maxlen=10_000)
        self._devices: dict[int, SimulatedModbusDevice] = {}
        self._sim_devices: dict[int, SimDevice] = {}
        self._server: ModbusSerialServer | None = None
        quiet_pymodbus_logging()

    def attach(self, device: SimulatedModbusDevice) -> None:
        if not 1 <= device.unit <= 247:
            raise ValueError(f"unit id must be 1..247, not {device.unit}")
        if device.unit in self._devices:
            raise ValueError(f"unit {device.unit} is already attached to {self.port}")
        self._devices[device.unit] = device
        self._sim_devices[device.unit] = self._sim_device(device.unit)
        if self._server is not None:
            self._server.context = SimCore(list(self._sim_devices.values()))

    @property
    def devices(self) -> dict[int, SimulatedModbusDevice]:
        return dict(self._devices)

    async def start(self) -> None:
        self._server = ModbusSerialServer(
            list(self._sim_devices.values()),
            framer=FramerType.RTU,
            port=self.port,
            baudrate=self.baudrate,
            ignore_missing_devices=True,
            trace_pdu=self._trace_pdu,
        )
        await self._server.serve_forever(background=True)
        log.info("simulated RS-485 line on %s with units %s", self.port, sorted(self._devices))

    async def close(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]  # untyped in pymodbus
            self._server = None

    async def __aenter__(self) -> SimulatedRs485Bus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- pymodbus glue -------------------------------------------------------------------------

    def _sim_device(self, unit: int) -> SimDevice:
        """A pymodbus device whose whole register space is valid; the action callback decides."""
        bits = [SimData(0, count=16, datatype=DataType.BITS)]
        holding = [SimData(0, count=0x10000, datatype=DataType.REGISTERS)]
        inputs = [SimData(0, count=0x10000, datatype=DataType.REGISTERS)]

        async def action(
            function_code: int,
            start_address: int,
            address: int,
            count: int,
            current_registers: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            if self.response_delay_s > 0:
                await asyncio.sleep(self.response_delay_s)
            return self._serve(unit, function_code, start_address, address, count, current_registers,
                               set_values)

        return SimDevice(id=unit, simdata=(bits, list(bits), holding, inputs), action=action)

    def _serve(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        device = self._devices[unit]
        try:
            if set_values is not None:
                return _exc(device.write_registers(address, [int(v) for v in set_values]))
            if function_code in _WRITE_FUNCTIONS:
                return None  # pymodbus reads back what was just written, to echo it
            kind = _READ_KIND.get(function_code)
            if kind is None:
                return ExcCodes.ILLEGAL_FUNCTION
            result = device.read_registers(kind, address, count)
        except Exception:
            log.exception("simulated unit %d failed on function %d at %d", unit, function_code, address)
            return ExcCodes.DEVICE_FAILURE
        if isinstance(result, int):
            return _exc(result)
        if len(result) != count or any(not 0 <= r <= 0xFFFF for r in result):
            log.error("simulated unit %d returned %d registers (want %d) or values out of range",
                      unit, len(result), count)
            return ExcCodes.DEVICE_FAILURE
        offset = address - start_address
        registers[offset : offset + count] = result
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self.requests += 1
            self.trace.append(LineEvent(time.monotonic(), "response", pdu.dev_id, pdu.function_code,
                                        getattr(pdu, "address", 0)))
            return pdu
        device = self._devices.get(pdu.dev_id)
        if device is None or device.silent:
            # Returning no PDU makes pymodbus' request handler skip the request: no answer at all.
            return cast(ModbusPDU, None)
        self.trace.append(LineEvent(time.monotonic(), "request", pdu.dev_id, pdu.function_code,
                                    getattr(pdu, "address", 0)))
        return pdu


def _exc(code: int | None) -> ExcCodes | None:
    if code is None:
        return None
    try:
        return ExcCodes(code)
    except ValueError:
        return ExcCodes.DEVICE_FAILURE
