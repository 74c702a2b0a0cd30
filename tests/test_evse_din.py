"""EVSE-DIN driver against the simulated board over a real pty pair, plus the pure register decoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.events import Subscription
from hal.evse_din.codec import (
    STATUS_BLOCK_COUNT,
    ConfigBits,
    EvseDinError,
    EvseDinStatus,
    StatusBits,
    VehicleState,
    active_faults,
    amps_to_register,
    decode_status,
    register_to_amps,
    relay_expected,
)
from hal.evse_din.driver import EvseDinBoard
from hal.interfaces import (
    BoardEvent,
    ContactorChanged,
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    EvseBoard,
    FaultCode,
    LockUnsupportedError,
    MeterReading,
    PilotChanged,
    PilotState,
)
from hal.meter_modbus import ModbusMeter, load_register_map
from hal.modbus_bus import ModbusBus, ModbusExceptionResponse
from sim.devices.evse_din import DEFAULT_CONFIG_BITS, SimulatedEvseDin
from sim.devices.interfaces import BoardFault, ElectricalState, SimulatedBoard
from sim.devices.meters import SimulatedModbusMeter
from sim.devices.rs485_bus import SimulatedRs485Bus
from sim.devices.serial_wire import Direction, SerialWire

UNIT = 7
POLL_S = 0.03
SETTLE_S = 0.15

# --- pure decoding ----------------------------------------------------------------------------------

# Status block 1000-1007 of a board with firmware 18, nothing plugged in, 32 A configured, as published
# with the ESPHome evse-wallbox component (response data of "read 1000..1009").
PUBLISHED_IDLE_FRAME = [0x0020, 0x0000, 0x0001, 0x0005, 0x0000, 0x0012, 0x0001, 0x0000]


def status(**kw: int) -> EvseDinStatus:
    base = dict(amps_config=16, amps_output=16, vehicle_state=3, cable_limit_a=32, command_bits=0,
                firmware=18, evse_state=2, status_bits=0)
    base.update(kw)
    return EvseDinStatus(**base)


def test_decode_published_idle_frame() -> None:
    s = decode_status(PUBLISHED_IDLE_FRAME)
    assert (s.amps_config, s.amps_output, s.cable_limit_a, s.firmware) == (32, 0, 5, 18)
    assert s.pilot is PilotState.A
    assert s.evse_state == 1 and not s.relay_on
    assert active_faults(s) == {}


@pytest.mark.parametrize(("vehicle", "pilot"), [(1, PilotState.A), (2, PilotState.B), (3, PilotState.C),
                                                 (4, PilotState.D), (5, None), (0, None), (9, None)])
def test_vehicle_state_to_pilot(vehicle: int, pilot: PilotState | None) -> None:
    assert status(vehicle_state=vehicle).pilot is pilot


@pytest.mark.parametrize(("vehicle", "bits", "expected"), [
    (3, 0, set()),
    (5, StatusBits.DIODE_CHECK_FAIL, {FaultCode.DIODE_FAILURE}),
    (4, StatusBits.VENT_REQUIRED_FAIL, {FaultCode.VENTILATION_REQUIRED}),
    (5, StatusBits.RCD_CHECK_ERROR, {FaultCode.RCD_TRIP}),
    (5, StatusBits.RCD_BIT4, {FaultCode.RCD_TRIP}),  # older register list: bit 4 is the RCD error
    (3, StatusBits.RCD_BIT4, set()),  # newer list: bit 4 = RCD test in progress, not a fault
    (5, 0, {FaultCode.DEVICE_ERROR}),  # failure without a reason bit (e.g. pilot shorted)
    (0, 0, {FaultCode.DEVICE_ERROR}),  # undocumented vehicle state
    (3, StatusBits.WAITING_FOR_PILOT_RELEASE | StatusBits.RELAY_ON, set()),
])
def test_active_faults(vehicle: int, bits: int, expected: set[FaultCode]) -> None:
    assert set(active_faults(status(vehicle_state=vehicle, status_bits=int(bits)))) == expected


def test_relay_expected_follows_the_documented_rule() -> None:
    d_on = int(ConfigBits.CHARGE_IN_STATE_D)
    assert relay_expected(status(), power_allowed=True, config_bits=0)
    assert not relay_expected(status(), power_allowed=False, config_bits=0)
    assert not relay_expected(status(evse_state=1), power_allowed=True, config_bits=0)
    assert not relay_expected(status(vehicle_state=2), power_allowed=True, config_bits=0)
    assert relay_expected(status(vehicle_state=4), power_allowed=True, config_bits=d_on)
    assert not relay_expected(status(vehicle_state=4), power_allowed=True, config_bits=0)
    assert not relay_expected(status(status_bits=int(StatusBits.RCD_CHECK_ERROR)), power_allowed=True,
                              config_bits=0)


@pytest.mark.parametrize(("amps", "hr", "raw"), [(0, False, 0), (5.99, False, 0), (6, False, 6),
                                                 (16.7, False, 16), (80, False, 80), (120, False, 80),
                                                 (16.75, True, 1675), (5.5, True, 0), (float("nan"), False, 0)])
def test_amps_to_register(amps: float, hr: bool, raw: int) -> None:
    assert amps_to_register(amps, hr) == raw


@given(st.lists(st.integers(-70000, 140000), max_size=12))
def test_decode_random_registers_never_raises_anything_else(regs: list[int]) -> None:
    try:
        s = decode_status(regs)
    except EvseDinError:
        assert len(regs) != STATUS_BLOCK_COUNT or any(not 0 <= r <= 0xFFFF for r in regs)
        return
    assert s.relay_on == bool(regs[7] & 1)
    active_faults(s)  # any documented or undocumented value is mapped, never raises


@given(st.floats(min_value=-10, max_value=200, allow_nan=False), st.booleans())
def test_offer_never_exceeds_the_request(amps: float, hr: bool) -> None:
    raw = amps_to_register(amps, hr)
    offered = register_to_amps(raw, hr)
    assert offered <= amps or raw == 0
    assert raw == 0 or 6 <= offered <= 80
    if 6 <= amps <= 80:
        assert amps - offered < (0.01 if hr else 1.0) + 1e-9


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4)),
                max_size=6),
       st.sampled_from(list(PilotState)))
def test_simulated_board_answers_any_request_with_values_or_an_exception_code(
        writes: list[tuple[int, list[int]]], pilot: PilotState) -> None:
    sim = SimulatedEvseDin()
    sim.set_ev_pilot(pilot)
    for address, values in writes:
        assert sim.write_registers(address, values) in (None, 2, 3)
        result = sim.read_registers("holding", address, len(values))
        assert result == 2 or (isinstance(result, list) and all(0 <= v <= 0xFFFF for v in result))
    block = sim.read_registers("holding", 1000, 11)
    assert isinstance(block, list)
    assert (block[7] & StatusBits.RELAY_ON != 0) == sim.contactor_closed


# --- driver <-> simulated board over a pty pair ------------------------------------------------------


@dataclass
class Rig:
    wire: SerialWire
    line: SimulatedRs485Bus
    sim: SimulatedEvseDin
    bus: ModbusBus
    board: EvseDinBoard
    events: Subscription[BoardEvent]

    async def until(self, match: Callable[[BoardEvent], bool], within_s: float = 2.0) -> BoardEvent:
        """Consume events until one matches."""
        seen: list[BoardEvent] = []

        async def hunt() -> BoardEvent:
            while True:
                event = await self.events.get()
                seen.append(event)
                if match(event):
                    return event

        try:
            return await asyncio.wait_for(hunt(), within_s)
        except TimeoutError:
            raise AssertionError(f"no matching event within {within_s}s; saw {seen}") from None

    async def pilot(self, state: PilotState) -> None:
        self.sim.set_ev_pilot(state)
        await self.until(lambda e: isinstance(e, PilotChanged) and e.state is state)

    async def contactor(self, closed: bool) -> None:
        await self.until(lambda e: isinstance(e, ContactorChanged) and e.closed is closed)

    async def fault(self, code: FaultCode) -> DeviceFault:
        e = await self.until(lambda e: isinstance(e, DeviceFault) and e.code is code)
        assert isinstance(e, DeviceFault)
        return e

    async def recovered(self, code: FaultCode) -> None:
        await self.until(lambda e: isinstance(e, DeviceRecovered) and e.code is code)

    async def polls(self, n: int = 3) -> None:
        """Let the driver complete ``n`` more polls."""
        start = self.board.stats.frames_received
        for _ in range(100):
            if self.board.stats.frames_received >= start + n:
                return
            await asyncio.sleep(POLL_S / 2)
        raise AssertionError(f"the driver did not complete {n} polls")


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(wire: SerialWire) -> AsyncIterator[RigFactory]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(*, fail_after: int = 3, **sim_kw: Any) -> Rig:
        sim = SimulatedEvseDin(unit=UNIT, **sim_kw)
        line = SimulatedRs485Bus(wire.device_port)
        line.attach(sim)
        await line.start()
        cleanups.append(line.close)
        bus = ModbusBus(wire.host_port, timeout_s=0.08, name="rs485-test")
        await bus.open()
        cleanups.append(bus.close)
        board = EvseDinBoard("board1", bus, UNIT, poll_interval_s=POLL_S, fail_after=fail_after,
                             contactor_settle_s=SETTLE_S)
        events = board.events.subscribe()
        cleanups.append(board.close)  # also when start() raises: polling goes on until closed
        await board.start()
        return Rig(wire, line, sim, bus, board, events)

    yield make
    for cleanup in reversed(cleanups):
        with contextlib.suppress(Exception):
            await cleanup()


async def charging(rig: Rig, amps: float = 16) -> None:
    """EV plugged in, power allowed, current offered, EV in C, relay closed."""
    await rig.pilot(PilotState.B)
    await rig.board.allow_power(True)
    await rig.board.set_offered_current(amps)
    await rig.pilot(PilotState.C)
    await rig.contactor(True)


def test_driver_and_sim_implement_the_interfaces() -> None:
    board = EvseDinBoard("b", ModbusBus("/dev/null"), 1)
    assert isinstance(board, EvseBoard)
    sim: SimulatedBoard = SimulatedEvseDin()
    assert sim.offered_current_a == 0.0


async def test_the_evse_din_says_it_has_no_cable_lock() -> None:
    """No lock output or feedback in its registers: the driver says so without a bus transaction, and the
    simulated board refuses a stuck-lock fault."""
    board = EvseDinBoard("board1", ModbusBus("/dev/null"), 1)
    assert not board.lock_supported and board.lock_state is None
    with pytest.raises(LockUnsupportedError, match="EVSE-DIN board has no cable lock"):
        await board.set_cable_lock(True)
    with pytest.raises(ValueError, match="no cable lock"):
        SimulatedEvseDin().inject(BoardFault.LOCK_STUCK)


async def test_start_reports_pilot_and_takes_the_board_to_the_safe_state(make_rig: RigFactory) -> None:
    rig = await make_rig()  # the simulated board boots with 1000 = 2000 = 32 A
    first = await rig.until(lambda e: isinstance(e, PilotChanged))
    assert first == PilotChanged("board1", PilotState.A, first.at)
    assert rig.board.pilot_state is PilotState.A and rig.board.firmware_revision == 18
    assert rig.sim.holding(1000) == 0  # no offer until the host asks, power denied
    rig.sim.set_ev_pilot(PilotState.B)
    await rig.polls()
    assert rig.sim.offered_current_a == 0.0 and rig.sim.holding(1006) == 1  # steady +12 V


async def test_plug_in_charge_unplug_sequence(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig, 16)
    assert rig.sim.offered_current_a == 16.0 and rig.board.output_current_a == 16.0
    assert rig.board.contactor_closed and rig.sim.contactor_closed
    await rig.pilot(PilotState.B)  # EV pauses: the board opens its relay by itself
    await rig.contactor(False)
    await rig.pilot(PilotState.C)
    await rig.contactor(True)
    await rig.pilot(PilotState.A)  # unplugged while charging (pilot is reported before the relay)
    await rig.contactor(False)
    await rig.polls()
    assert not any(isinstance(e, DeviceFault) for e in _drain(rig.events))


async def test_offered_current_reaches_the_board(make_rig: RigFactory) -> None:
    rig = await make_rig(cable_limit_a=0)
    await rig.pilot(PilotState.B)
    await rig.board.allow_power(True)
    for amps, register, offered in [(10.9, 10, 10.0), (5.9, 0, 0.0), (32, 32, 32.0), (100, 80, 80.0)]:
        await rig.board.set_offered_current(amps)
        assert rig.sim.holding(1000) == register
        assert rig.sim.offered_current_a == offered
    await rig.board.set_offered_current(0)
    assert rig.sim.holding(1006) == 1  # 0 = off: steady +12 V (X1)


async def test_cable_limit_caps_the_pwm_output(make_rig: RigFactory) -> None:
    rig = await make_rig(cable_limit_a=20)
    await charging(rig, 32)
    assert rig.sim.holding(1000) == 32 and rig.sim.offered_current_a == 20.0
    await rig.polls()
    assert rig.board.output_current_a == 20.0


async def test_high_resolution_board_gets_hundredths(make_rig: RigFactory) -> None:
    rig = await make_rig(config_bits=DEFAULT_CONFIG_BITS | ConfigBits.HIGH_RESOLUTION_CURRENT)
    await charging(rig, 16.57)
    assert rig.sim.holding(1000) == 1657 and rig.sim.offered_current_a == pytest.approx(16.57)


async def test_allow_power_false_opens_the_relay_and_true_closes_it_again(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig)
    await rig.board.allow_power(False)
    assert not rig.sim.contactor_closed and rig.sim.offered_current_a == 0.0
    assert rig.sim.counters.extra["commands"] == 1  # "turn off charging now" was sent
    await rig.contactor(False)
    await rig.pilot(PilotState.B)  # the EV sees the PWM gone
    await rig.board.set_offered_current(20)  # remembered, not offered while denied
    assert rig.sim.holding(1000) == 0 and rig.sim.offered_current_a == 0.0
    await rig.pilot(PilotState.C)
    await rig.polls()
    assert not rig.sim.contactor_closed  # 1000 = 0 keeps the board from restarting by itself
    await rig.board.allow_power(True)
    assert rig.sim.holding(1000) == 20
    await rig.contactor(True)
    await rig.polls()
    assert not any(isinstance(e, DeviceFault) for e in _drain(rig.events))


async def test_set_unavailable_disables_the_evse(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig)
    await rig.board.set_unavailable(True)
    assert rig.sim.holding(2005) == DEFAULT_CONFIG_BITS | ConfigBits.DISABLE_EVSE
    assert rig.sim.holding(1006) == 3 and not rig.sim.contactor_closed  # EVSE state OFF
    assert rig.sim.offered_current_a == 0.0
    await rig.contactor(False)
    await rig.board.set_unavailable(False)
    assert rig.sim.holding(2005) == DEFAULT_CONFIG_BITS
    await rig.contactor(True)


async def test_unavailable_survives_a_board_reboot_and_commands_are_rewritten(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig, 13)
    rig.sim.power_cycle()  # 1000 back to the power-on default 32 A
    await rig.polls(3)
    assert rig.sim.holding(1000) == 13
    await rig.board.set_unavailable(True)
    rig.sim.power_cycle()
    await rig.polls(2)
    assert rig.sim.holding(2005) & ConfigBits.DISABLE_EVSE  # persistent configuration


async def test_board_does_not_answer_at_start(make_rig: RigFactory, wire: SerialWire) -> None:
    wire.set_silent(Direction.TO_HOST)
    with pytest.raises(DeviceError, match="does not answer"):
        await make_rig(fail_after=2)


@pytest.mark.parametrize(("fault", "code", "legacy"), [
    (BoardFault.RCD_TRIP, FaultCode.RCD_TRIP, False),
    (BoardFault.RCD_TRIP, FaultCode.RCD_TRIP, True),
    (BoardFault.DIODE_FAILURE, FaultCode.DIODE_FAILURE, False),
])
async def test_board_faults_raised_and_cleared(make_rig: RigFactory, fault: BoardFault, code: FaultCode,
                                               legacy: bool) -> None:
    rig = await make_rig(legacy_status_bits=legacy)
    await charging(rig)
    rig.sim.inject(fault)
    raised = await rig.fault(code)
    assert raised.device == "board1" and raised.detail
    await rig.contactor(False)  # the board opens its relay on a failure
    assert rig.sim.holding(1002) == VehicleState.FAILURE
    rig.sim.inject(fault, False)
    await rig.recovered(code)
    await rig.contactor(True)  # charging resumes
    assert not any(isinstance(e, DeviceFault) for e in _drain(rig.events))


async def test_ventilation_required_when_state_d_is_not_enabled(make_rig: RigFactory) -> None:
    rig = await make_rig(config_bits=DEFAULT_CONFIG_BITS & ~ConfigBits.CHARGE_IN_STATE_D)
    await rig.pilot(PilotState.B)
    await rig.board.allow_power(True)
    await rig.board.set_offered_current(16)
    rig.sim.set_ev_pilot(PilotState.D)
    await rig.fault(FaultCode.VENTILATION_REQUIRED)
    assert not rig.sim.contactor_closed
    await rig.pilot(PilotState.C)
    await rig.recovered(FaultCode.VENTILATION_REQUIRED)
    await rig.contactor(True)


async def test_ventilation_charges_in_d_when_enabled(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await rig.pilot(PilotState.B)
    await rig.board.allow_power(True)
    await rig.board.set_offered_current(16)
    await rig.pilot(PilotState.D)
    await rig.contactor(True)


async def test_shorted_pilot_is_a_device_error(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await rig.pilot(PilotState.B)
    rig.sim.set_ev_pilot(PilotState.E)
    fault = await rig.fault(FaultCode.DEVICE_ERROR)
    assert "vehicle state 5" in fault.detail
    assert rig.board.pilot_state is PilotState.B  # "failure" is no pilot state: the last one is kept
    rig.sim.set_ev_pilot(PilotState.B)
    await rig.recovered(FaultCode.DEVICE_ERROR)
    await rig.pilot(PilotState.C)


def test_overtemperature_is_not_representable() -> None:
    with pytest.raises(ValueError, match="OVERTEMPERATURE is not representable"):
        SimulatedEvseDin().inject(BoardFault.OVERTEMPERATURE)


async def test_welded_relay_detected_when_power_is_denied(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig)
    rig.sim.inject(BoardFault.WELDED)
    await rig.board.allow_power(False)
    fault = await rig.fault(FaultCode.CONTACTOR_WELDED)
    assert "expected False" in fault.detail
    assert rig.board.contactor_closed
    rig.sim.inject(BoardFault.WELDED, False)
    await rig.contactor(False)
    await rig.recovered(FaultCode.CONTACTOR_WELDED)


async def test_stuck_open_relay_is_a_failure_to_close(make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.sim.inject(BoardFault.STUCK_OPEN)
    await rig.pilot(PilotState.B)
    await rig.board.allow_power(True)
    await rig.board.set_offered_current(16)
    await rig.pilot(PilotState.C)
    await rig.fault(FaultCode.CONTACTOR_FAILED_TO_CLOSE)
    rig.sim.inject(BoardFault.STUCK_OPEN, False)
    await rig.contactor(True)
    await rig.recovered(FaultCode.CONTACTOR_FAILED_TO_CLOSE)


@pytest.mark.parametrize("how", ["board", "line"])
async def test_silence_is_link_lost_then_recovered(make_rig: RigFactory, how: str) -> None:
    rig = await make_rig()
    await charging(rig, 10)
    if how == "board":
        rig.sim.inject(BoardFault.SILENT)
    else:
        rig.wire.set_silent(Direction.TO_HOST)
    fault = await rig.fault(FaultCode.LINK_LOST)
    assert "no valid answer" in fault.detail and rig.board.link_lost
    assert rig.board.stats.timeouts >= 3
    with pytest.raises(DeviceError):
        await rig.board.set_offered_current(12)  # a command to a silent board fails loudly...
    rig.sim.power_cycle()  # ...and the board reboots meanwhile (1000 back to 32 A)
    if how == "board":
        rig.sim.inject(BoardFault.SILENT, False)
    else:
        rig.wire.set_silent(Direction.TO_HOST, False)
    await rig.recovered(FaultCode.LINK_LOST)
    await rig.polls(2)
    assert rig.sim.holding(1000) == 12  # resynchronised with the last command, not the boot default
    assert not rig.board.link_lost


@pytest.mark.parametrize("damage", ["garbage", "truncate", "noise"])
async def test_damaged_answers_are_dropped_counted_and_the_next_poll_is_good(
        make_rig: RigFactory, damage: str) -> None:
    rig = await make_rig()
    await rig.pilot(PilotState.B)
    dropped = rig.board.stats.frames_dropped
    for _ in range(3):
        if damage == "garbage":
            rig.wire.inject_garbage(Direction.TO_HOST, 12)
        elif damage == "truncate":
            rig.wire.truncate_next(Direction.TO_HOST)
        else:
            rig.wire.set_noise(Direction.TO_HOST, 0.05)
        await rig.polls(1)
    rig.wire.clear_faults()
    assert rig.board.stats.frames_dropped > dropped
    await rig.pilot(PilotState.C)  # still tracking the board
    assert not any(isinstance(e, DeviceFault) and e.code is FaultCode.LINK_LOST for e in _drain(rig.events))


async def test_refused_write_is_a_clear_error(make_rig: RigFactory) -> None:
    rig = await make_rig(min_amps=10)  # installer's minimum above the requested offer
    await rig.board.allow_power(True)
    await rig.board.set_offered_current(16)
    with pytest.raises(EvseDinError, match=r"refused writing 8 to register 1000: .*exception 3"):
        await rig.board.set_offered_current(8)
    assert rig.sim.holding(1000) == 16
    await rig.polls(2)
    assert rig.sim.holding(1000) == 16  # the refused command is not retried
    assert rig.board.stats.exceptions == 1


async def test_commands_the_board_refuses_after_a_reboot_are_a_device_error(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig, 8)
    await rig.bus.write_registers(UNIT, 2002, [10])  # an installer raises the board's minimum...
    rig.sim.power_cycle()  # ...and the board reboots with 32 A: 8 A cannot be written back
    fault = await rig.fault(FaultCode.DEVICE_ERROR)
    assert "host commands not applied" in fault.detail and "exception 3" in fault.detail
    await rig.pilot(PilotState.B)  # the status is still reported meanwhile
    await rig.board.set_offered_current(12)
    await rig.recovered(FaultCode.DEVICE_ERROR)
    assert rig.sim.holding(1000) == 12


class NotAnEvseDin:
    """A device on the unit that has none of the EVSE-DIN's registers."""

    unit = UNIT
    silent = False

    def read_registers(self, kind: str, address: int, count: int) -> list[int] | int:
        return 2

    def write_registers(self, address: int, values: list[int]) -> int | None:
        return 2


async def test_a_device_without_the_registers_is_refused_not_lost(wire: SerialWire) -> None:
    async with SimulatedRs485Bus(wire.device_port) as line, ModbusBus(wire.host_port, timeout_s=0.08) as bus:
        line.attach(NotAnEvseDin())
        board = EvseDinBoard("board1", bus, UNIT, poll_interval_s=POLL_S)
        events = board.events.subscribe()
        try:
            with pytest.raises(DeviceError, match=r"refuses: .*exception 2"):
                await board.start()
            fault = events.get_nowait()
            assert isinstance(fault, DeviceFault) and fault.code is FaultCode.DEVICE_ERROR
            assert board.pilot_state is None and not board.link_lost
        finally:
            await board.close()


async def test_simulated_board_exceptions(make_rig: RigFactory) -> None:
    rig = await make_rig()
    with pytest.raises(ModbusExceptionResponse) as read_only:
        await rig.bus.write_registers(UNIT, 1002, [3])
    assert read_only.value.code == 2
    with pytest.raises(ModbusExceptionResponse) as missing:
        await rig.bus.read_holding_registers(UNIT, 1011, 1)
    assert missing.value.code == 2
    with pytest.raises(ModbusExceptionResponse) as fc4:
        await rig.bus.read_input_registers(UNIT, 1000, 8)
    assert fc4.value.code == 1
    assert await rig.bus.read_holding_registers(UNIT, 2000, 18) == [
        32, UNIT, 5, 1, 0, DEFAULT_CONFIG_BITS, 0, 0, 0, 3, 6, 10, 16, 25, 32, 48, 63, 80]


async def test_shares_the_line_with_a_meter(make_rig: RigFactory) -> None:
    rig = await make_rig()
    meter_sim = SimulatedModbusMeter(unit=1, model="sdm630")
    rig.line.attach(meter_sim)
    meter_sim.update(ElectricalState(current_a=(16.0, 16.0, 16.0)))
    meter = ModbusMeter("meter1", rig.bus, 1, load_register_map("sdm630"), poll_interval_s=POLL_S)
    await meter.start()

    async def read() -> MeterReading:
        """A read that is answered: the line's 80 ms budget is real, and a loaded test machine can miss one."""
        for _ in range(10):
            with contextlib.suppress(DeviceError):
                return await meter.read()
        raise AssertionError("the meter never answered")

    try:
        await charging(rig)
        reading = await read()
        assert reading.current_a == pytest.approx((16.0, 16.0, 16.0))
        rig.sim.inject(BoardFault.SILENT)  # the board dies, the meter on the same line does not
        await rig.fault(FaultCode.LINK_LOST)
        assert (await read()).power_w == pytest.approx(3 * 230 * 16, rel=1e-3)
        rig.sim.inject(BoardFault.SILENT, False)
        await rig.recovered(FaultCode.LINK_LOST)
        assert rig.bus.unit_stats(UNIT).timeouts >= 3  # the silent board's timeouts count against its unit
        assert meter_sim.counters.requests > 0
        assert rig.board.stats.requests + meter.stats.requests == rig.bus.stats.requests
    finally:
        await meter.close()


async def test_close_leaves_the_board_off(make_rig: RigFactory) -> None:
    rig = await make_rig()
    await charging(rig)
    await rig.board.close()
    assert rig.sim.holding(1000) == 0 and not rig.sim.contactor_closed


def _drain(sub: Subscription[BoardEvent]) -> list[BoardEvent]:
    out: list[BoardEvent] = []
    while sub.pending():
        out.append(sub.get_nowait())
    return out
