"""The Modbus energy meter driver against simulated meters on a simulated RS-485 line (real ptys)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from hal.events import Subscription
from hal.interfaces import (
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    EnergyMeter,
    FaultCode,
    MeterEvent,
    MeterReading,
)
from hal.meter_modbus import InvalidMeterValue, ModbusMeter, load_register_map
from hal.modbus_bus import ModbusBus, ModbusExceptionResponse
from hal.registermap import RegisterMapError, load_map_file, minimum_requests, parse_map
from sim.devices.interfaces import ElectricalState
from sim.devices.meters import SimulatedModbusMeter
from sim.devices.rs485_bus import SimulatedRs485Bus
from sim.devices.serial_wire import Direction, SerialWire

MAPS = Path(__file__).resolve().parents[1] / "hal" / "maps"
TIMEOUT_S = 0.1
POLL_S = 0.02
E = TypeVar("E")

STATE = ElectricalState(
    voltage_v=(229.5, 230.1, 231.2),
    current_a=(16.02, 15.98, 16.5),
    frequency_hz=49.98,
    energy_import_wh=1_234_570.0,  # 1234.57 kWh: a multiple of the ABB's 0.01 kWh resolution
    energy_export_wh=120.0,
    power_factor=0.98,
)
RESOLUTION = {"sdm630": 1e-6, "sdm120": 1e-6, "abb_b23": 1e-4}  # relative; float32 vs 0.01 steps


@pytest.fixture
async def line(wire: SerialWire) -> AsyncIterator[SimulatedRs485Bus]:
    sim = SimulatedRs485Bus(wire.device_port)
    for unit, model in ((1, "sdm630"), (2, "sdm120"), (3, "abb_b23")):
        meter = SimulatedModbusMeter(unit, model)
        meter.update(STATE)
        sim.attach(meter)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.close()


@pytest.fixture
async def bus(wire: SerialWire, line: SimulatedRs485Bus) -> AsyncIterator[ModbusBus]:
    b = ModbusBus(wire.host_port, timeout_s=TIMEOUT_S, name="meter-line")
    await b.open()
    try:
        yield b
    finally:
        await b.close()


def sim_meter(line: SimulatedRs485Bus, unit: int) -> SimulatedModbusMeter:
    device = line.devices[unit]
    assert isinstance(device, SimulatedModbusMeter)
    return device


def make_meter(bus: ModbusBus, unit: int, model: str, fail_after: int = 3) -> ModbusMeter:
    return ModbusMeter(f"meter-{model}", bus, unit, load_register_map(model), poll_interval_s=POLL_S,
                       fail_after=fail_after)


async def next_of(sub: Subscription[MeterEvent], kind: type[E]) -> E:
    async with asyncio.timeout(3.0):
        while True:
            event = await sub.get()
            if isinstance(event, kind):
                return event


@pytest.mark.parametrize(("unit", "model", "phases"), [(1, "sdm630", 3), (2, "sdm120", 1), (3, "abb_b23", 3)])
async def test_each_model_reads_the_simulated_state(
    bus: ModbusBus, line: SimulatedRs485Bus, unit: int, model: str, phases: int
) -> None:
    meter = make_meter(bus, unit, model)
    assert isinstance(meter, EnergyMeter)
    reading = await meter.read()
    rel = RESOLUTION[model]
    assert reading.device == f"meter-{model}"
    assert reading.voltage_v == pytest.approx(STATE.voltage_v[:phases], rel=rel)
    assert reading.current_a == pytest.approx(STATE.current_a[:phases], rel=rel)
    expected_power = STATE.power_w if phases == 3 else 229.5 * 16.02 * 0.98
    assert reading.power_w == pytest.approx(expected_power, rel=rel)
    assert reading.frequency_hz == pytest.approx(49.98, rel=rel)
    assert reading.energy_import_wh == pytest.approx(1_234_570.0, rel=rel)
    assert reading.energy_export_wh == pytest.approx(120.0, rel=rel)
    assert reading.taken_at.tzinfo is not None
    assert meter.latest is reading
    # a few requests per poll, as planned, not one per value
    assert len(meter.plan) == minimum_requests(meter.register_map) < len(meter.register_map.quantities)
    before_line, before_meter = line.requests, sim_meter(line, unit).counters.requests
    await meter.read()
    assert line.requests - before_line == len(meter.plan)
    assert sim_meter(line, unit).counters.requests - before_meter == len(meter.plan)
    assert meter.stats.requests == 2 * len(meter.plan) and meter.stats.timeouts == 0


async def test_two_meters_on_one_line_each_see_their_own_values(
    bus: ModbusBus, line: SimulatedRs485Bus
) -> None:
    other = ElectricalState(voltage_v=(240.0, 0.0, 0.0), current_a=(6.0, 0.0, 0.0), energy_import_wh=5000.0)
    sim_meter(line, 2).update(other)
    three_phase, single_phase = make_meter(bus, 1, "sdm630"), make_meter(bus, 2, "sdm120")
    a, b = await asyncio.gather(three_phase.read(), single_phase.read())
    assert a.voltage_v == pytest.approx(STATE.voltage_v, rel=1e-6)
    assert b.voltage_v == pytest.approx((240.0,)) and b.current_a == pytest.approx((6.0,))
    assert b.energy_import_wh == pytest.approx(5000.0)
    assert three_phase.stats is bus.unit_stats(1) and single_phase.stats is bus.unit_stats(2)
    assert three_phase.stats.requests == len(three_phase.plan) == 2
    assert single_phase.stats.requests == len(single_phase.plan) == 2


async def test_poll_loop_publishes_readings_that_follow_the_state(
    bus: ModbusBus, line: SimulatedRs485Bus
) -> None:
    meter = make_meter(bus, 3, "abb_b23")
    with meter.events.subscribe() as sub:
        await meter.start()
        first = await next_of(sub, MeterReading)
        state = ElectricalState(current_a=(32.0, 32.0, 32.0), energy_import_wh=first.energy_import_wh + 10.0)
        sim_meter(line, 3).update(state)
        while (reading := await next_of(sub, MeterReading)).current_a[0] != pytest.approx(32.0):
            pass
        assert reading.energy_import_wh == pytest.approx(first.energy_import_wh + 10.0)
        assert reading.power_w == pytest.approx(3 * 230.0 * 32.0)
        await meter.close()
    assert await bus.read_holding_registers(3, 0x5B2C, 1) == [5000]  # closing the meter left the line open


async def test_a_cancelled_read_is_never_swallowed(bus: ModbusBus) -> None:
    """Two meters sharing the line, their reads cancelled at many different instants: every cancellation
    comes back as CancelledError (pymodbus turns some into its own errors; swallowed, a poll loop would
    never end and the agent would hang on its way out)."""
    meters = [make_meter(bus, 1, "sdm630"), make_meter(bus, 2, "sdm120")]
    for step in range(400):
        tasks = [asyncio.create_task(m.read()) for m in meters]
        await asyncio.sleep((step % 40) * 0.0001)
        requested = [t.cancel() for t in tasks]  # False: that read had already finished
        async with asyncio.timeout(2.0):
            await asyncio.gather(*tasks, return_exceptions=True)
        for t, cancel_requested in zip(tasks, requested, strict=True):
            assert t.cancelled() or not cancel_requested, f"cancellation swallowed: {t.result()!r}"


async def test_silent_meter_raises_link_lost_once_then_recovers(bus: ModbusBus, line: SimulatedRs485Bus) -> None:
    meter = make_meter(bus, 1, "sdm630", fail_after=3)
    with meter.events.subscribe() as sub:
        await meter.start()
        await next_of(sub, MeterReading)
        sim_meter(line, 1).set_silent(True)
        fault = await next_of(sub, DeviceFault)
        assert fault.code is FaultCode.LINK_LOST and fault.device == "meter-sdm630"
        assert "unit 1" in fault.detail
        timeouts_at_fault = meter.stats.timeouts
        assert timeouts_at_fault >= 3
        await asyncio.sleep(4 * (TIMEOUT_S + POLL_S))  # still silent: more failures, no second fault
        sim_meter(line, 1).set_silent(False)
        recovered = await next_of(sub, DeviceRecovered)
        assert recovered.code is FaultCode.LINK_LOST
        await next_of(sub, MeterReading)
        await meter.close()
    events: list[MeterEvent] = []
    while sub.pending():
        events.append(sub.get_nowait())
    assert not any(isinstance(e, DeviceFault) for e in events)
    assert meter.stats.timeouts > timeouts_at_fault


@pytest.mark.parametrize("fault", ["garbage", "truncate", "noise"])
async def test_bad_bytes_on_the_line_are_dropped_counted_and_next_poll_succeeds(
    wire: SerialWire, bus: ModbusBus, fault: str
) -> None:
    meter = make_meter(bus, 3, "abb_b23")
    await meter.read()
    if fault == "garbage":
        wire.inject_garbage(Direction.TO_HOST, 32)
        wire.faults[Direction.TO_HOST].garbage_next = 11  # and more glued to the next answer
    elif fault == "truncate":
        wire.truncate_next(Direction.TO_HOST)
    else:
        wire.set_noise(Direction.TO_HOST, 0.03)
    outcomes = []
    for _ in range(5 if fault == "noise" else 1):
        try:
            reading = await meter.read()
        except DeviceError as exc:
            assert not isinstance(exc, ModbusExceptionResponse)
            outcomes.append("failed")
        else:
            assert reading.voltage_v == pytest.approx(STATE.voltage_v, rel=1e-4)  # never a wrong value
            outcomes.append("ok")
    wire.clear_faults()
    assert bus.stats.frames_dropped >= 1
    if fault != "garbage":
        assert "failed" in outcomes and meter.stats.frames_dropped >= 1
    reading = await meter.read()  # the next poll succeeds
    assert reading.current_a == pytest.approx(STATE.current_a, rel=1e-4)


async def test_exception_answer_is_a_clear_error_and_a_device_fault(
    bus: ModbusBus, line: SimulatedRs485Bus, caplog: pytest.LogCaptureFixture
) -> None:
    meter = make_meter(bus, 2, "sdm120", fail_after=2)
    sim_meter(line, 2).inject_exception(4)
    with meter.events.subscribe() as sub:
        with pytest.raises(ModbusExceptionResponse) as err:
            await meter.read()
        message = str(err.value)
        assert "unit 2" in message and "address 0 (0x0000)" in message
        assert "exception 4 (SERVER DEVICE FAILURE)" in message
        assert any("SERVER DEVICE FAILURE" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
        assert meter.stats.exceptions == 1 and meter.stats.timeouts == 0
        with pytest.raises(ModbusExceptionResponse):
            await meter.read()
        fault = sub.get_nowait()
        assert isinstance(fault, DeviceFault) and fault.code is FaultCode.DEVICE_ERROR
        sim_meter(line, 2).inject_exception(None)
        await meter.read()
        recovered = sub.get_nowait()
        assert isinstance(recovered, DeviceRecovered) and recovered.code is FaultCode.DEVICE_ERROR


async def test_map_that_disagrees_with_the_meter_gets_illegal_address(
    tmp_path: Path, bus: ModbusBus
) -> None:
    data = json.loads((MAPS / "abb_b23.json").read_text())
    data["quantities"]["frequency"]["address"] = "0x5B2E"  # not where the B23 keeps it
    path = tmp_path / "abb_b23.json"
    path.write_text(json.dumps(data))
    meter = ModbusMeter("wrong-map", bus, 3, load_map_file(path))
    with pytest.raises(ModbusExceptionResponse) as err:
        await meter.read()
    assert err.value.code == 2 and err.value.address == 0x5B2E
    assert "unit 3" in str(err.value) and "0x5B2E" in str(err.value) and "ILLEGAL DATA ADDRESS" in str(err.value)


async def test_not_a_number_is_rejected_not_reported(bus: ModbusBus, line: SimulatedRs485Bus) -> None:
    sim_meter(line, 1).update(ElectricalState(frequency_hz=math.nan))
    meter = make_meter(bus, 1, "sdm630")
    with pytest.raises(InvalidMeterValue, match="frequency at address 70 \\(0x0046\\)"):
        await meter.read()
    assert meter.latest is None


async def test_meter_map_must_describe_a_meter(bus: ModbusBus) -> None:
    single = {"model": "half", "phases": 3, "function": "input", "word_order": "big", "quantities": {
        "voltage_l1": {"address": 0, "type": "float32", "unit": "V"},
        "power_total": {"address": 2, "type": "float32", "unit": "W"},
        "energy_import": {"address": 4, "type": "float32", "unit": "kWh"},
    }}
    with pytest.raises(RegisterMapError, match="needs voltage_l2, voltage_l3, current_l1"):
        ModbusMeter("x", bus, 1, parse_map(single, "half.json"))
    wrong_unit = json.loads(json.dumps(single))
    wrong_unit["phases"] = 1
    wrong_unit["quantities"]["current_l1"] = {"address": 6, "type": "float32", "unit": "V"}
    with pytest.raises(RegisterMapError, match=r"half.json: quantities.current_l1.unit: expected A"):
        ModbusMeter("x", bus, 1, parse_map(wrong_unit, "half.json"))


async def test_simulated_meter_answers_like_the_real_one(bus: ModbusBus) -> None:
    # a read of half a float, of an undocumented address, or of too many registers is refused
    with pytest.raises(ModbusExceptionResponse) as half:
        await bus.read_input_registers(1, 0x0001, 2)
    assert half.value.code == 2
    with pytest.raises(ModbusExceptionResponse) as undocumented:
        await bus.read_input_registers(1, 0x0050, 2)
    assert undocumented.value.code == 2
    with pytest.raises(ModbusExceptionResponse) as too_many:
        await bus.read_input_registers(1, 0x0000, 82)
    assert too_many.value.code == 3
    with pytest.raises(ModbusExceptionResponse) as wrong_kind:
        await bus.read_holding_registers(1, 0x0000, 2)  # the SDM keeps measurements in input registers
    assert wrong_kind.value.code == 2
    assert await bus.read_input_registers(1, 0x0000, 2) == [0x4365, 0x8000]  # 229.5 V as IEEE 754
