"""The shared Modbus RTU bus against the simulated RS-485 line, over a real pty pair."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadInputRegistersRequest

from hal.interfaces import DeviceError
from hal.modbus_bus import FramerEvents, ModbusBus, ModbusExceptionResponse, RtuResponseFramer
from sim.devices.rs485_bus import RegisterKind, SimulatedRs485Bus
from sim.devices.serial_wire import Direction, SerialWire

TIMEOUT_S = 0.1


class RegisterBank:
    """A minimal simulated device: registers 0..999 of both kinds, value = unit * 1000 + address."""

    def __init__(self, unit: int) -> None:
        self.unit = unit
        self.silent = False
        self.holding: dict[int, int] = {}
        self.reads: list[tuple[RegisterKind, int, int]] = []

    def value(self, kind: RegisterKind, address: int) -> int:
        if kind == "holding" and address in self.holding:
            return self.holding[address]
        return (self.unit * 1000 + address + (0 if kind == "input" else 500)) & 0xFFFF

    def read_registers(self, kind: RegisterKind, address: int, count: int) -> list[int] | int:
        self.reads.append((kind, address, count))
        if address + count > 1000:
            return 2
        return [self.value(kind, a) for a in range(address, address + count)]

    def write_registers(self, address: int, values: list[int]) -> int | None:
        if address + len(values) > 1000:
            return 2
        for i, v in enumerate(values):
            self.holding[address + i] = v
        return None


@pytest.fixture
async def line(wire: SerialWire) -> AsyncIterator[SimulatedRs485Bus]:
    sim = SimulatedRs485Bus(wire.device_port)
    sim.attach(RegisterBank(1))
    sim.attach(RegisterBank(7))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()


@pytest.fixture
async def bus(wire: SerialWire, line: SimulatedRs485Bus) -> AsyncIterator[ModbusBus]:
    b = ModbusBus(wire.host_port, timeout_s=TIMEOUT_S, name="test-line")
    await b.open()
    try:
        yield b
    finally:
        await b.close()


def expected(unit: int, kind: RegisterKind, address: int, count: int) -> list[int]:
    return [RegisterBank(unit).value(kind, a) for a in range(address, address + count)]


async def test_two_units_on_one_line_are_each_served(bus: ModbusBus, line: SimulatedRs485Bus) -> None:
    assert await bus.read_input_registers(1, 10, 3) == [1010, 1011, 1012]
    assert await bus.read_input_registers(7, 10, 3) == [7010, 7011, 7012]
    assert await bus.read_holding_registers(7, 0, 2) == [7500, 7501]
    assert line.requests == 3
    assert bus.unit_stats(1).requests == 1
    assert bus.unit_stats(7).requests == 2
    assert bus.stats.requests == 3 and bus.stats.frames_received == 3 and bus.stats.timeouts == 0


async def test_concurrent_requests_are_serialized_and_all_answered(
    bus: ModbusBus, line: SimulatedRs485Bus
) -> None:
    async def one(i: int) -> tuple[int, list[int]]:
        unit = (1, 7)[i % 2]
        await asyncio.sleep(0)  # let every task reach the bus before any finishes
        return unit, await bus.read_input_registers(unit, i * 3, 1 + i % 5)

    results = await asyncio.gather(*(one(i) for i in range(40)))

    for i, (unit, registers) in enumerate(results):
        assert registers == expected(unit, "input", i * 3, 1 + i % 5)
    assert bus.stats.timeouts == 0 and bus.stats.frames_dropped == 0
    # On the wire: strictly request, response, request, response ... never two requests in a row.
    events = list(line.trace)
    assert len(events) == 80
    for req, resp in zip(events[::2], events[1::2], strict=True):
        assert req.direction == "request" and resp.direction == "response"
        assert req.unit == resp.unit
        assert req.at <= resp.at
    for resp, next_req in zip(events[1::2], events[2::2], strict=False):
        assert next_req.at >= resp.at


async def test_writes_reach_the_device(bus: ModbusBus, line: SimulatedRs485Bus) -> None:
    await bus.write_register(7, 20, 0xBEEF)
    await bus.write_registers(7, 21, [1, 2, 3])
    assert await bus.read_holding_registers(7, 20, 4) == [0xBEEF, 1, 2, 3]
    assert await bus.read_holding_registers(1, 20, 1) == [1520]  # the other unit is untouched


async def test_exception_answer_names_unit_function_address_and_code(bus: ModbusBus) -> None:
    with pytest.raises(ModbusExceptionResponse) as err:
        await bus.read_input_registers(7, 999, 2)
    assert err.value.code == 2 and err.value.unit == 7 and err.value.address == 999
    assert err.value.code_name == "ILLEGAL DATA ADDRESS"
    message = str(err.value)
    assert "unit 7" in message and "999" in message and "0x03E7" in message
    assert "read_input_registers" in message and "ILLEGAL DATA ADDRESS" in message
    assert bus.stats.exceptions == 1 and bus.unit_stats(7).exceptions == 1
    with pytest.raises(ModbusExceptionResponse):
        await bus.write_registers(1, 999, [1, 2])
    assert await bus.read_input_registers(7, 0, 1) == [7000]  # the line is fine afterwards


async def test_unit_nobody_answers_for_times_out_with_clear_error(bus: ModbusBus) -> None:
    with pytest.raises(DeviceError) as err:
        await bus.read_holding_registers(42, 100, 1)
    assert not isinstance(err.value, ModbusExceptionResponse)
    assert "unit 42" in str(err.value) and "100" in str(err.value) and bus.port in str(err.value)
    assert bus.stats.timeouts == 1 and bus.unit_stats(42).timeouts == 1
    assert await bus.read_holding_registers(1, 100, 1) == [1600]


async def test_silent_device_times_out_then_answers_again(bus: ModbusBus, line: SimulatedRs485Bus) -> None:
    device = line.devices[7]
    device.silent = True
    with pytest.raises(DeviceError):
        await bus.read_input_registers(7, 0, 1)
    assert await bus.read_input_registers(1, 0, 1) == [1000]  # its neighbour still answers
    device.silent = False
    assert await bus.read_input_registers(7, 0, 1) == [7000]


async def test_garbage_to_host_is_dropped_counted_and_next_request_succeeds(
    wire: SerialWire, bus: ModbusBus
) -> None:
    wire.inject_garbage(Direction.TO_HOST, 24)  # on an idle line
    await asyncio.sleep(0.02)
    assert await bus.read_input_registers(1, 5, 2) == [1005, 1006]
    wire.faults[Direction.TO_HOST].garbage_next = 9  # glued in front of the next answer
    assert await bus.read_input_registers(7, 5, 2) == [7005, 7006]  # found behind the junk
    assert bus.stats.frames_dropped >= 2
    assert bus.stats.timeouts == 0


async def test_truncated_answer_is_dropped_and_next_request_succeeds(wire: SerialWire, bus: ModbusBus) -> None:
    wire.truncate_next(Direction.TO_HOST)
    with pytest.raises(DeviceError):
        await bus.read_input_registers(1, 0, 20)
    assert bus.stats.frames_dropped >= 1 and bus.unit_stats(1).frames_dropped >= 1
    assert await bus.read_input_registers(1, 0, 20) == expected(1, "input", 0, 20)


async def test_noisy_line_never_yields_wrong_values(wire: SerialWire, bus: ModbusBus) -> None:
    wire.set_noise(Direction.TO_HOST, 0.02)
    good = failed = 0
    for i in range(40):
        try:
            registers = await bus.read_input_registers(1, i, 8)
        except DeviceError:
            failed += 1
        else:
            assert registers == expected(1, "input", i, 8)  # CRC keeps corrupt values out
            good += 1
    assert failed > 0 and bus.stats.frames_dropped >= failed
    wire.clear_faults()
    assert await bus.read_input_registers(1, 0, 8) == expected(1, "input", 0, 8)


async def test_late_answer_is_not_taken_for_the_next_one(bus: ModbusBus, line: SimulatedRs485Bus) -> None:
    line.response_delay_s = TIMEOUT_S * 1.2  # answers just after the bus gave up
    with pytest.raises(DeviceError):
        await bus.read_input_registers(1, 0, 2)
    line.response_delay_s = 0.0
    assert await bus.read_input_registers(1, 100, 2) == [1100, 1101]
    assert bus.stats.frames_dropped >= 1  # the late answer was seen and thrown away


async def test_bad_arguments_are_programming_errors(bus: ModbusBus) -> None:
    with pytest.raises(ValueError):
        await bus.read_input_registers(0, 0, 1)  # broadcast cannot be read
    with pytest.raises(ValueError):
        await bus.read_input_registers(1, 0, 126)
    with pytest.raises(ValueError):
        await bus.read_holding_registers(1, 0xFFFF, 2)
    with pytest.raises(ValueError):
        await bus.write_register(1, 0, 0x10000)


async def test_closed_bus_refuses_requests(wire: SerialWire) -> None:
    b = ModbusBus(wire.host_port)
    with pytest.raises(DeviceError, match="not open"):
        await b.read_input_registers(1, 0, 1)


async def test_open_fails_clearly_for_missing_port() -> None:
    b = ModbusBus("/dev/does-not-exist-modbus", timeout_s=0.1)
    with pytest.raises(DeviceError, match="does-not-exist"):
        await b.open()


# --- the receive framer, without a wire -------------------------------------------------------


def answer_frame(unit: int, registers: list[int], function: int = 4) -> bytes:
    body = bytes([unit, function, 2 * len(registers)]) + struct.pack(f">{len(registers)}H", *registers)
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


class Counted:
    def __init__(self) -> None:
        self.frames = 0
        self.drops = 0

    def framer(self, unit: int, count: int) -> RtuResponseFramer:
        framer = RtuResponseFramer(DecodePDU(False), FramerEvents(self.on_frame, self.on_drop))
        framer.buildFrame(ReadInputRegistersRequest(address=0, count=count, dev_id=unit))
        return framer

    def on_frame(self) -> None:
        self.frames += 1

    def on_drop(self, why: str) -> None:
        self.drops += 1


def feed(framer: RtuResponseFramer, data: bytes, unit: int) -> tuple[list[list[int]], int]:
    """Offer ``data`` as pymodbus does (cutting what the framer consumed); return PDUs and leftover."""
    found: list[list[int]] = []
    while data:
        used, pdu = framer.handleFrame(data, unit, 0)
        assert 0 <= used <= len(data)
        data = data[used:]
        if pdu is None:
            break
        found.append(list(pdu.registers))
    return found, len(data)


def test_framer_finds_the_answer_behind_junk_and_counts_the_junk() -> None:
    c = Counted()
    framer = c.framer(5, 2)
    found, leftover = feed(framer, b"\x00\xff\x05" + answer_frame(5, [1, 2]), 5)
    assert found == [[1, 2]] and leftover == 0 and c.frames == 1 and c.drops == 1


def test_framer_drops_other_units_and_wrong_functions() -> None:
    c = Counted()
    framer = c.framer(5, 2)
    data = answer_frame(6, [9, 9]) + answer_frame(5, [9, 9], function=3) + answer_frame(5, [3, 4])
    found, _ = feed(framer, data, 5)
    assert found == [[3, 4]] and c.drops == 2


def test_framer_waits_for_the_rest_of_a_split_answer() -> None:
    c = Counted()
    framer = c.framer(5, 3)
    frame = answer_frame(5, [7, 8, 9])
    used, pdu = framer.handleFrame(frame[:6], 5, 0)
    assert pdu is None and used == 0 and framer.pending == 6
    used, pdu = framer.handleFrame(frame, 5, 0)
    assert pdu is not None and list(pdu.registers) == [7, 8, 9] and used == len(frame)
    assert c.drops == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_framer_random_bytes_never_raise(data: bytes) -> None:
    c = Counted()
    framer = c.framer(5, 2)
    found, _ = feed(framer, data, 5)
    assert len(found) <= c.frames


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=60).map(lambda b: bytes(x for x in b if x != 5)),
       registers=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20))
def test_framer_recovers_the_answer_after_any_junk(junk: bytes, registers: list[int]) -> None:
    c = Counted()
    framer = c.framer(5, len(registers))
    found, _ = feed(framer, junk + answer_frame(5, registers), 5)
    assert found == [registers]
    assert (c.drops > 0) == bool(junk)
