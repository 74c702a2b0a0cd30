"""IoBoard driver against the simulated I/O board over a real pty pair (the ``wire`` fixture)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import serial

from hal.events import Subscription
from hal.interfaces import (
    BoardEvent,
    ContactorChanged,
    DeviceError,
    DeviceFault,
    DeviceRecovered,
    EvseBoard,
    FaultCode,
    LockChanged,
    LockState,
    LockUnsupportedError,
    PilotChanged,
    PilotState,
)
from hal.ioboard import IoBoard
from hal.ioboard.codec import FrameDecoder, encode_frame
from hal.ioboard.driver import contactor_expected
from hal.ioboard.messages import (
    Ack,
    AllowContactor,
    FaultBit,
    HostHello,
    Message,
    Nack,
    NackReason,
    PwmMode,
    RequestState,
    SetLock,
    SetPwm,
    StateReport,
    decode_message,
    encode_message,
)
from sim.devices.interfaces import BoardFault, SimulatedBoard
from sim.devices.ioboard import SimulatedIoBoard
from sim.devices.ioboard_mcu import McuIoBoard
from sim.devices.serial_wire import Direction, SerialWire

KEEPALIVE_TIMEOUT_S = 0.3
REPORT_INTERVAL_S = 0.1
LINK_TIMEOUT_S = 0.4
SETTLE_S = 0.1
C1_TIMEOUT_S = 0.5  # T_c1, shortened from the 6 s of IEC 61851-1 so a test can wait for it


#: The far end of the pty: the CPython simulation of the board, and the board's MicroPython firmware
#: (mcu/ioboard/) running in a real MicroPython interpreter. The driver must not tell them apart.
Board = SimulatedIoBoard | McuIoBoard


@pytest.fixture(params=["sim", "mcu"])
async def sim(wire: SerialWire, request: pytest.FixtureRequest) -> AsyncIterator[Board]:
    board: Board
    if request.param == "sim":
        board = SimulatedIoBoard(wire.device_port, keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
                                 report_interval_s=REPORT_INTERVAL_S, c1_timeout_s=C1_TIMEOUT_S)
    else:
        board = McuIoBoard(wire.device_port, keepalive_timeout_s=KEEPALIVE_TIMEOUT_S,
                           report_interval_s=REPORT_INTERVAL_S, c1_timeout_s=C1_TIMEOUT_S)
    await board.start()
    try:
        yield board
    finally:
        await board.close()
    if isinstance(board, McuIoBoard):
        assert not board.crashes, "the firmware died"


def make_driver(wire: SerialWire) -> IoBoard:
    return IoBoard("ioboard", wire.host_port, keepalive_s=0.05, link_timeout_s=LINK_TIMEOUT_S,
                   contactor_settle_s=SETTLE_S)


@pytest.fixture
async def board(wire: SerialWire, sim: Board) -> AsyncIterator[IoBoard]:
    drv = make_driver(wire)
    await drv.start()
    try:
        yield drv
    finally:
        await drv.close()


async def until(predicate: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def expect(sub: Subscription[BoardEvent], predicate: Callable[[BoardEvent], bool],
                 within: float = 2.0) -> BoardEvent:
    """The next event matching ``predicate`` (others are skipped)."""
    async with asyncio.timeout(within):
        while True:
            event = await sub.get()
            if predicate(event):
                return event


def drain(sub: Subscription[BoardEvent]) -> list[BoardEvent]:
    """The events already queued, without waiting."""
    return [sub.get_nowait() for _ in range(sub.pending())]


def fault(code: FaultCode) -> Callable[[BoardEvent], bool]:
    return lambda e: isinstance(e, DeviceFault) and e.code is code


def recovered(code: FaultCode) -> Callable[[BoardEvent], bool]:
    return lambda e: isinstance(e, DeviceRecovered) and e.code is code


async def charging(board: IoBoard, sim: Board, amps: float = 16.0) -> None:
    """EV in C with PWM offered and the contactor closed."""
    sim.set_ev_pilot(PilotState.B)
    await board.set_offered_current(amps)
    sim.set_ev_pilot(PilotState.C)
    await until(lambda: board.pilot_state is PilotState.C)
    await board.allow_power(True)
    await until(lambda: board.contactor_closed and sim.contactor_closed)


# --- hello / version ----------------------------------------------------------------------------------


async def test_hello_exchange_reports_versions_and_first_state(board: IoBoard, sim: Board) -> None:
    assert isinstance(board, EvseBoard)
    as_sim_board: SimulatedBoard = sim  # statically checked: the sim fits the EV-side interface
    assert as_sim_board.offered_current_a == 0.0
    hello = board.board_hello
    assert hello is not None
    assert (hello.proto_major, hello.proto_minor) == (1, 1)
    expected = ("sim-1.1.0", "SIM-A") if isinstance(sim, SimulatedIoBoard) else ("1.1.0", "SIM-MCU")
    assert (hello.firmware_version, hello.hardware_revision) == expected
    assert hello.keepalive_timeout_ms == 300
    assert sim.linked
    assert board.pilot_state is PilotState.A
    assert board.contactor_closed is False
    assert board.stats.frames_received >= 3 and board.stats.frames_dropped == 0


async def test_incompatible_major_version_is_refused_clearly(wire: SerialWire) -> None:
    sim = SimulatedIoBoard(wire.device_port, protocol_version=(2, 1), firmware_version="fw-2.1.0")
    await sim.start()
    drv = make_driver(wire)
    try:
        with pytest.raises(DeviceError, match=r"speaks protocol 2\.1 .*fw-2\.1\.0.*supports 1\.x only"):
            await drv.start()
        assert not sim.linked
        assert sim.pwm.mode is PwmMode.X1
    finally:
        await drv.close()
        await sim.close()


async def test_start_without_a_board_fails_with_a_clear_error(wire: SerialWire) -> None:
    drv = make_driver(wire)
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="did not acknowledge HostHello"):
        await drv.start()
    assert time.monotonic() - t0 < 1.0
    assert drv.stats.timeouts == 4


async def test_start_on_a_missing_port_fails_clearly() -> None:
    drv = IoBoard("ioboard", "/dev/does-not-exist")
    with pytest.raises(DeviceError, match="cannot open I/O board port /dev/does-not-exist"):
        await drv.start()


# --- pilot and PWM --------------------------------------------------------------------------------------


async def test_pilot_sequence_is_reported_as_events(board: IoBoard, sim: Board) -> None:
    with board.events.subscribe() as sub:
        for state in (PilotState.B, PilotState.C, PilotState.B, PilotState.A):
            sim.set_ev_pilot(state)
            await until(lambda: board.pilot_state is sim.pilot)
        changes = []
        while sub.pending():
            event = sub.get_nowait()
            if isinstance(event, PilotChanged):
                changes.append(event.state)
    assert changes == [PilotState.B, PilotState.C, PilotState.B, PilotState.A]


@pytest.mark.parametrize(("amps", "duty_permille", "seen_a"), [
    (6.0, 100, 6.0), (16.0, 267, 16.02), (32.0, 533, 31.98), (63.0, 892, 63.0), (80.0, 960, 80.0),
])
async def test_offered_current_becomes_duty_on_the_board(board: IoBoard, sim: Board, amps: float,
                                                         duty_permille: int, seen_a: float) -> None:
    await board.set_offered_current(amps)
    assert sim.pwm == SetPwm(PwmMode.PWM, duty_permille)
    assert sim.offered_current_a == pytest.approx(seen_a, abs=0.01)
    await until(lambda: board.state is not None and board.state.duty_permille == duty_permille)


async def test_below_6a_is_x1_and_unavailable_is_f(board: IoBoard, sim: Board) -> None:
    await board.set_offered_current(20.0)
    await board.set_offered_current(5.0)
    assert sim.pwm == SetPwm(PwmMode.X1) and sim.offered_current_a == 0.0
    await board.set_offered_current(20.0)
    await board.set_unavailable(True)
    assert sim.pwm == SetPwm(PwmMode.F) and sim.offered_current_a == 0.0
    await until(lambda: board.pilot_state is PilotState.F)
    await board.set_unavailable(False)
    assert sim.pwm == SetPwm(PwmMode.PWM, 333)
    assert sim.offered_current_a == pytest.approx(20.0, abs=0.05)


# --- contactor ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("permission", "pilot", "faults", "closed"), [
    (True, PilotState.C, FaultBit(0), True),
    (True, PilotState.D, FaultBit.MCU_WATCHDOG, True),  # information only, not blocking
    (True, PilotState.B, FaultBit(0), False),  # permission held, EV not requesting: open, no fault
    (True, PilotState.A, FaultBit(0), False),
    (True, PilotState.F, FaultBit(0), False),
    (False, PilotState.C, FaultBit(0), False),
    (True, PilotState.C, FaultBit.RCD_TRIP, False),
    (True, PilotState.C, FaultBit.HOST_TIMEOUT, False),
    (True, PilotState.E, FaultBit.PILOT_SHORT, False),
])
def test_expected_contactor_state_is_permission_and_c2_or_d2_and_no_blocking_fault(
        permission: bool, pilot: PilotState, faults: FaultBit, closed: bool) -> None:
    for coil in (False, True):  # with the PWM running the board's own coil output does not count
        report = StateReport(pilot, PwmMode.PWM, 267, coil, coil, faults)
        assert contactor_expected(report, permission) is closed
        # C1/D1 (PWM stopped): never closed unless C2/D2 would be, then what the board holds (<= T_c1, B8)
        c1 = StateReport(pilot, PwmMode.X1, None, coil, coil, faults)
        assert contactor_expected(c1, permission) is (closed and coil)
        f = StateReport(PilotState.F, PwmMode.F, None, coil, coil, faults)  # F: open
        assert contactor_expected(f, permission) is False


async def test_permission_in_b_closes_nothing_until_the_ev_goes_to_c(board: IoBoard,
                                                                     sim: Board) -> None:
    sim.set_ev_pilot(PilotState.B)
    await board.set_offered_current(16.0)
    await until(lambda: board.pilot_state is PilotState.B)
    with board.events.subscribe() as sub:
        await board.allow_power(True)  # accepted in B: a permission, not a "close now"
        assert sim.permission and board.power_allowed
        await asyncio.sleep(3 * SETTLE_S)  # well past the settle time: B with permission is no fault
        assert not sim.contactor_cmd and not sim.contactor_closed and not board.contactor_closed
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))
        commands = board.stats.requests
        sim.set_ev_pilot(PilotState.C)  # the board closes by itself
        event = await expect(sub, lambda e: isinstance(e, ContactorChanged))
        assert isinstance(event, ContactorChanged) and event.closed
    assert sim.contactor_closed and board.stats.requests == commands
    assert board.stats.exceptions == 0


async def test_ev_pause_opens_keeps_the_permission_and_resume_closes_again(board: IoBoard,
                                                                           sim: Board) -> None:
    await charging(board, sim)
    commands = board.stats.requests
    with board.events.subscribe() as sub:
        t0 = time.monotonic()
        sim.set_ev_pilot(PilotState.B)  # EV pauses: the board opens, no host command involved
        event = await expect(sub, lambda e: isinstance(e, ContactorChanged))
        assert isinstance(event, ContactorChanged) and not event.closed
        assert time.monotonic() - t0 < 0.1  # IEC 61851-1: open within 100 ms of leaving C
        assert sim.permission and not sim.contactor_cmd
        await asyncio.sleep(2 * SETTLE_S)
        sim.set_ev_pilot(PilotState.C)  # EV resumes: closed again, still no host command
        event = await expect(sub, lambda e: isinstance(e, ContactorChanged))
        assert isinstance(event, ContactorChanged) and event.closed
        await asyncio.sleep(2 * SETTLE_S)
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))
    assert sim.contactor_closed and board.power_allowed
    assert board.stats.requests == commands


async def test_withdrawn_permission_opens_and_keeps_the_contactor_open_in_c(board: IoBoard,
                                                                            sim: Board) -> None:
    await charging(board, sim)
    await board.allow_power(False)
    await until(lambda: not sim.contactor_closed and not board.contactor_closed)
    assert not sim.permission and not board.power_allowed
    sim.set_ev_pilot(PilotState.B)
    sim.set_ev_pilot(PilotState.C)
    await asyncio.sleep(3 * REPORT_INTERVAL_S)
    assert not sim.contactor_cmd and not sim.contactor_closed


def board_states(wire: SerialWire) -> list[StateReport]:
    """Every STATE the board sends from now on, in order."""
    decoder, states = FrameDecoder(), []

    def seen(direction: Direction, data: bytes) -> None:
        if direction is Direction.TO_HOST:
            states.extend(m for m in (decode_message(p).message for p in decoder.feed(data))
                          if isinstance(m, StateReport))
    wire.observers.append(seen)
    return states


async def test_pwm_stopped_in_c_opens_after_t_c1_keeps_the_permission_and_pwm_closes_again(
        board: IoBoard, sim: Board, wire: SerialWire) -> None:
    await charging(board, sim)
    commands = board.stats.requests
    states = board_states(wire)
    with board.events.subscribe() as sub:
        t0 = time.monotonic()
        await board.set_offered_current(0.0)  # X1 with the EV staying in C: C2 -> C1 (B8)
        event = await expect(sub, lambda e: isinstance(e, ContactorChanged), within=C1_TIMEOUT_S + 2.0)
        assert isinstance(event, ContactorChanged) and not event.closed
        assert time.monotonic() - t0 >= C1_TIMEOUT_S  # the EV was given T_c1 to go to B ...
        c1 = [s for s in states if s.pwm_mode is PwmMode.X1]
        assert c1[0].pilot is PilotState.C and c1[0].contactor_cmd  # ... in C1 with the coil still on
        assert sim.permission and board.power_allowed and board.pilot_state is PilotState.C
        await board.set_offered_current(16.0)  # C2 again: closed by the board, no ALLOW_CONTACTOR
        event = await expect(sub, lambda e: isinstance(e, ContactorChanged))
        assert isinstance(event, ContactorChanged) and event.closed
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))  # C1 with the coil on: no contactor fault
    assert board.stats.requests == commands + 2


@pytest.mark.parametrize("how", ["ev_to_b", "f"])
async def test_pwm_stopped_then_ev_to_b_or_f_opens_at_once(board: IoBoard, sim: Board, how: str) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        if how == "ev_to_b":
            await board.set_offered_current(0.0)  # C1: the EV stops drawing current and goes to B (B8)
            sim.set_ev_pilot(PilotState.B)
        else:
            await board.set_unavailable(True)  # F: the EV cannot be seen, open now (B8)
        pilot = await expect(sub, lambda e: isinstance(e, PilotChanged | ContactorChanged), within=C1_TIMEOUT_S)
        # the pilot's change is seen first, so it opened the contactor, not T_c1 running out
        assert isinstance(pilot, PilotChanged) and pilot.state is (PilotState.B if how == "ev_to_b" else PilotState.F)
        event = await expect(sub, lambda e: isinstance(e, ContactorChanged))
        assert isinstance(event, ContactorChanged) and not event.closed
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))
    assert sim.permission and board.power_allowed


async def test_welded_contactor_is_detected_when_the_ev_stops(board: IoBoard, sim: Board) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        sim.inject(BoardFault.WELDED)
        sim.set_ev_pilot(PilotState.B)  # the board opens by itself; the contacts stay closed
        event = await expect(sub, fault(FaultCode.CONTACTOR_WELDED))
        assert isinstance(event, DeviceFault) and "should be open" in event.detail
        assert not sim.contactor_cmd and board.contactor_closed
        sim.inject(BoardFault.WELDED, False)
        await expect(sub, recovered(FaultCode.CONTACTOR_WELDED))


async def test_welded_contactor_is_detected_from_the_mirror_contact(board: IoBoard,
                                                                    sim: Board) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        sim.inject(BoardFault.WELDED)
        await board.allow_power(False)
        event = await expect(sub, fault(FaultCode.CONTACTOR_WELDED))
        assert board.contactor_closed and not sim.contactor_cmd
        sim.inject(BoardFault.WELDED, False)
        await expect(sub, recovered(FaultCode.CONTACTOR_WELDED))
        assert not board.contactor_closed
    assert isinstance(event, DeviceFault) and event.device == "ioboard"


async def test_contactor_that_does_not_close_is_detected(board: IoBoard, sim: Board) -> None:
    sim.inject(BoardFault.STUCK_OPEN)
    sim.set_ev_pilot(PilotState.B)
    await board.set_offered_current(16.0)
    await board.allow_power(True)
    await asyncio.sleep(2 * SETTLE_S)  # in B nothing is expected to close
    with board.events.subscribe() as sub:
        t0 = time.monotonic()
        sim.set_ev_pilot(PilotState.C)
        await expect(sub, fault(FaultCode.CONTACTOR_FAILED_TO_CLOSE))
        assert time.monotonic() - t0 >= SETTLE_S  # not before the contactor had time to move
        assert sim.contactor_cmd and not board.contactor_closed
        sim.inject(BoardFault.STUCK_OPEN, False)
        await expect(sub, recovered(FaultCode.CONTACTOR_FAILED_TO_CLOSE))
        assert board.contactor_closed


# --- the board's keepalive watchdog ------------------------------------------------------------------------


async def test_silent_host_makes_the_board_drop_the_permission_and_the_driver_restores_it(
        board: IoBoard, sim: Board, wire: SerialWire) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        t0 = time.monotonic()
        wire.set_silent(Direction.TO_DEVICE)
        await until(lambda: not sim.contactor_closed, within=2 * KEEPALIVE_TIMEOUT_S)
        elapsed = time.monotonic() - t0
        assert KEEPALIVE_TIMEOUT_S * 0.9 <= elapsed <= KEEPALIVE_TIMEOUT_S + 0.1
        assert sim.keepalive_trips == 1
        assert not sim.permission  # the host timeout takes the permission with it
        assert sim.pwm == SetPwm(PwmMode.X1) and sim.offered_current_a == 0.0
        assert sim.faults & FaultBit.HOST_TIMEOUT
        event = await expect(sub, fault(FaultCode.DEVICE_ERROR))  # reports still reach the host
        assert isinstance(event, DeviceFault) and "keepalive" in event.detail
        assert board.power_allowed  # the firmware's decision stands: the link failed, not the EV
        wire.set_silent(Direction.TO_DEVICE, False)
        await expect(sub, recovered(FaultCode.DEVICE_ERROR))  # the driver cleared HOST_TIMEOUT
        # ... re-applied the offer and granted the permission again: the EV in C gets power back
        await until(lambda: sim.pwm == SetPwm(PwmMode.PWM, 267) and sim.permission and sim.contactor_closed)
        await asyncio.sleep(2 * SETTLE_S)
        assert not any(fault(FaultCode.CONTACTOR_FAILED_TO_CLOSE)(e) or fault(FaultCode.CONTACTOR_WELDED)(e)
                       for e in drain(sub))
    assert not sim.faults & FaultBit.HOST_TIMEOUT


async def test_stopped_keepalive_task_trips_the_board(board: IoBoard, sim: Board) -> None:
    await charging(board, sim)
    for task in board._tasks:
        if task.get_name().endswith("keepalive"):
            task.cancel()
    t0 = time.monotonic()
    # The trip's coil-off window can be shorter than a poll: the driver's receive side is alive and
    # re-syncs (permission included) within milliseconds, so the trip counter is what to watch.
    await until(lambda: sim.keepalive_trips >= 1, within=2 * KEEPALIVE_TIMEOUT_S)
    assert time.monotonic() - t0 <= KEEPALIVE_TIMEOUT_S + 0.1
    # With no keepalives, every re-sync is followed by another trip T_ka after its last command.
    await until(lambda: sim.keepalive_trips >= 2, within=3 * KEEPALIVE_TIMEOUT_S)
    assert board.power_allowed  # the link's failures do not take the firmware's decision away


async def test_unanswered_permission_is_delivered_when_the_link_is_back(
        board: IoBoard, sim: Board, wire: SerialWire) -> None:
    sim.set_ev_pilot(PilotState.C)
    await board.set_offered_current(16.0)
    wire.set_silent(Direction.TO_DEVICE)
    with pytest.raises(DeviceError, match="did not acknowledge AllowContactor"):
        await board.allow_power(True)
    assert board.power_allowed and not sim.permission  # the firmware's decision, not yet the board's
    wire.set_silent(Direction.TO_DEVICE, False)
    await until(lambda: sim.permission and sim.contactor_closed)
    assert sim.pwm == SetPwm(PwmMode.PWM, 267)


# --- faults reported by the board ------------------------------------------------------------------------


@pytest.mark.parametrize(("injected", "code"), [
    (BoardFault.OVERTEMPERATURE, FaultCode.OVERTEMPERATURE),
    (BoardFault.DIODE_FAILURE, FaultCode.DIODE_FAILURE),
])
async def test_blocking_fault_drops_the_permission_until_the_host_grants_it_again(
        board: IoBoard, sim: Board, injected: BoardFault, code: FaultCode) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        sim.inject(injected)
        await expect(sub, fault(code))
        await until(lambda: not sim.contactor_closed)  # a blocking fault opens the contactor
        assert not sim.permission and not board.power_allowed
        with pytest.raises(DeviceError, match=rf"permission to energize while a blocking fault is active "
                                              rf"\({injected.name}\): FAULT_ACTIVE"):
            await board.allow_power(True)
        if injected is BoardFault.OVERTEMPERATURE:
            assert board.state is not None and board.state.temperature_c == 85.0
        sim.inject(injected, False)
        await expect(sub, recovered(code))
        await asyncio.sleep(2 * SETTLE_S)  # EV still in C: stays open, and that is no contactor fault
        assert not sim.contactor_cmd and not sim.contactor_closed
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))
    await board.allow_power(True)
    await until(lambda: sim.contactor_closed)


async def test_blocking_fault_in_b_drops_the_permission_too(board: IoBoard, sim: Board) -> None:
    sim.set_ev_pilot(PilotState.B)
    await board.set_offered_current(16.0)
    await board.allow_power(True)
    sim.inject(BoardFault.OVERTEMPERATURE)
    await until(lambda: not board.power_allowed)
    sim.inject(BoardFault.OVERTEMPERATURE, False)
    sim.set_ev_pilot(PilotState.C)
    await until(lambda: board.state is not None and board.state.pilot is PilotState.C and not board.state.faults)
    await asyncio.sleep(2 * REPORT_INTERVAL_S)
    assert not sim.permission and not sim.contactor_closed


async def test_rcd_trip_is_latched_until_the_host_clears_it(board: IoBoard, sim: Board) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        sim.inject(BoardFault.RCD_TRIP)
        await expect(sub, fault(FaultCode.RCD_TRIP))
        await until(lambda: not sim.contactor_closed)
        assert not sim.permission and not board.power_allowed
        await board.clear_faults()  # residual current still there: stays latched
        assert sim.faults & FaultBit.RCD_TRIP
        sim.inject(BoardFault.RCD_TRIP, False)
        await asyncio.sleep(2 * REPORT_INTERVAL_S)
        assert sim.faults & FaultBit.RCD_TRIP
        assert not any(recovered(FaultCode.RCD_TRIP)(e) for e in drain(sub))
        with pytest.raises(DeviceError, match=r"\(RCD_TRIP\): FAULT_ACTIVE"):
            await board.allow_power(True)
        await board.clear_faults()
        await expect(sub, recovered(FaultCode.RCD_TRIP))
    await asyncio.sleep(2 * REPORT_INTERVAL_S)  # cleared, EV in C: still open until granted again
    assert not sim.contactor_closed
    await board.allow_power(True)
    await until(lambda: sim.contactor_closed)


async def test_pilot_short_is_a_device_error(board: IoBoard, sim: Board) -> None:
    with board.events.subscribe() as sub:
        sim.set_ev_pilot(PilotState.E)
        event = await expect(sub, fault(FaultCode.DEVICE_ERROR))
        assert isinstance(event, DeviceFault) and "pilot short" in event.detail
        assert board.pilot_state is PilotState.E
        sim.set_ev_pilot(PilotState.A)
        await expect(sub, recovered(FaultCode.DEVICE_ERROR))


# --- a noisy line --------------------------------------------------------------------------------------------


async def test_garbage_and_truncation_are_dropped_counted_and_survived(
        board: IoBoard, sim: Board, wire: SerialWire) -> None:
    with board.events.subscribe() as sub:
        for _ in range(5):
            wire.inject_garbage(Direction.TO_HOST, 40)
            wire.inject_garbage(Direction.TO_DEVICE, 40)
            await asyncio.sleep(0.02)
        wire.truncate_next(Direction.TO_HOST, 3)
        wire.truncate_next(Direction.TO_DEVICE, 2)
        await board.set_offered_current(10.0)  # retransmitted until it gets through
        await board.set_offered_current(12.0)
        await asyncio.sleep(3 * REPORT_INTERVAL_S)
        assert not any(fault(FaultCode.LINK_LOST)(e) for e in drain(sub))
    assert sim.pwm == SetPwm(PwmMode.PWM, 200)
    assert board.stats.frames_dropped >= 3
    assert sim.bad_frames >= 2
    assert board.decoder.stats.dropped == board.stats.frames_dropped  # all at the framing level
    assert board.link_up
    good_before = board.stats.frames_received
    await board.set_offered_current(32.0)
    assert sim.offered_current_a == pytest.approx(32.0, abs=0.05)
    assert board.stats.frames_received > good_before


async def test_bit_noise_costs_retransmissions_not_commands(board: IoBoard, sim: Board,
                                                            wire: SerialWire) -> None:
    wire.set_noise(Direction.TO_HOST, 0.003)
    wire.set_noise(Direction.TO_DEVICE, 0.003)
    for amps in (10.0, 13.0, 16.0, 20.0, 25.0, 32.0) * 3:
        await board.set_offered_current(amps)
        assert sim.offered_current_a == pytest.approx(amps, abs=0.05)
        await asyncio.sleep(0.02)
    wire.clear_faults()
    assert board.link_up
    assert board.stats.requests >= 18
    assert board.stats.frames_dropped + sim.bad_frames > 0  # the noise did hit frames


# --- a silent board --------------------------------------------------------------------------------------------


async def test_silent_board_is_link_lost_then_recovered(board: IoBoard, sim: Board) -> None:
    await board.set_offered_current(16.0)
    with board.events.subscribe() as sub:
        t0 = time.monotonic()
        sim.inject(BoardFault.SILENT)
        event = await expect(sub, fault(FaultCode.LINK_LOST))
        assert LINK_TIMEOUT_S <= time.monotonic() - t0 <= LINK_TIMEOUT_S + 0.2
        assert isinstance(event, DeviceFault) and board.port in event.detail
        assert not board.link_up
        with pytest.raises(DeviceError, match="did not acknowledge SetPwm"):
            await board.set_offered_current(20.0)
        sim.inject(BoardFault.SILENT, False)
        await expect(sub, recovered(FaultCode.LINK_LOST))
    assert board.link_up
    await until(lambda: sim.pwm == SetPwm(PwmMode.PWM, 333))


async def test_line_cut_towards_the_host_is_link_lost_then_recovered(board: IoBoard, sim: Board,
                                                                     wire: SerialWire) -> None:
    with board.events.subscribe() as sub:
        wire.set_silent(Direction.TO_HOST)
        await expect(sub, fault(FaultCode.LINK_LOST))
        assert sim.keepalive_trips == 0  # the board still hears the host
        wire.set_silent(Direction.TO_HOST, False)
        await expect(sub, recovered(FaultCode.LINK_LOST))


# --- board restarts ------------------------------------------------------------------------------------------


# --- the cable lock (1.1: SET_LOCK, STATE key 9, B15, B16) ----------------------------------------------


async def test_lock_and_unlock_wait_for_the_feedback(board: IoBoard, sim: Board) -> None:
    """B15: MOVING while the actuator travels, then the position its switch confirms; set_cable_lock returns
    only then, and the driver publishes each change."""
    assert board.lock_supported and board.lock_state is LockState.UNLOCKED and not sim.cable_locked
    with board.events.subscribe() as sub:
        assert await board.set_cable_lock(True) is LockState.LOCKED
        assert sim.cable_locked
        states = [e.state for e in drain(sub) if isinstance(e, LockChanged)]
        assert states == [LockState.MOVING, LockState.LOCKED]
        assert await board.set_cable_lock(True) is LockState.LOCKED  # already there: nothing moves
        assert await board.set_cable_lock(False) is LockState.UNLOCKED
        assert not sim.cable_locked and board.lock_state is LockState.UNLOCKED


async def test_stuck_lock_is_a_fault_and_no_energy_flows_until_it_locks(board: IoBoard, sim: Board) -> None:
    """B15/B16: a lock that does not engage within T_lock reports FAULT and the drive stops; with the lock
    asked for and not LOCKED the board keeps the contactor open whatever the permission (and the driver's
    supervision expects it open: no contactor fault). A new SET_LOCK once it moves again closes it."""
    sim.inject(BoardFault.LOCK_STUCK)
    started = time.monotonic()
    assert await board.set_cable_lock(True) is LockState.FAULT
    assert 0.9 <= time.monotonic() - started <= 2.0  # T_lock = 1 s on both boards
    assert not sim.cable_locked
    with board.events.subscribe() as sub:
        sim.set_ev_pilot(PilotState.B)
        await board.set_offered_current(16.0)
        sim.set_ev_pilot(PilotState.C)
        await until(lambda: board.pilot_state is PilotState.C)
        await board.allow_power(True)  # a permission is taken (B7) ...
        await asyncio.sleep(3 * SETTLE_S)
        assert sim.permission and not sim.contactor_cmd and not sim.contactor_closed  # ... but no coil (B16)
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))
        sim.inject(BoardFault.LOCK_STUCK, False)
        assert await board.set_cable_lock(True) is LockState.LOCKED  # a new attempt
        await until(lambda: sim.contactor_closed and board.contactor_closed)


async def test_lock_is_re_sent_after_a_board_restart(board: IoBoard, sim: Board) -> None:
    """The lock stays engaged over a restart (B15); the re-sync asks for it again before the permission, so the
    restarted board enforces B16 again: a stuck lock then keeps it open."""
    assert await board.set_cable_lock(True) is LockState.LOCKED
    await charging(board, sim)
    sim.reboot()
    await until(lambda: sim.linked and sim.permission and sim.contactor_closed)
    assert sim.cable_locked and board.lock_state is LockState.LOCKED


async def test_board_without_a_lock_says_so(wire: SerialWire) -> None:
    """A board without CABLE_LOCK: the driver refuses the lock without a command; the board NACKs SET_LOCK with
    UNSUPPORTED and sends no lock in STATE."""
    async with SimulatedIoBoard(wire.device_port, cable_lock=False) as sim:
        drv = make_driver(wire)
        await drv.start()
        try:
            assert not drv.lock_supported and drv.lock_state is None
            with pytest.raises(LockUnsupportedError, match="no cable lock"):
                await drv.set_cable_lock(True)
            assert sim.lock_state is None and drv.state is not None and drv.state.lock is None
        finally:
            await drv.close()
        host = RawHost(wire.host_port)
        try:
            host.send(0, HostHello())
            assert await host.answer(0) == Ack(0)
            host.send(1, SetLock(True))
            answer = await host.answer(1)
            assert isinstance(answer, Nack) and answer.reason is NackReason.UNSUPPORTED
        finally:
            host.ser.close()


async def test_board_restart_is_detected_and_state_re_applied(board: IoBoard, sim: Board) -> None:
    sim.set_ev_pilot(PilotState.B)
    await board.set_offered_current(16.0)
    sim.reboot()
    assert not sim.linked and sim.pwm.mode is PwmMode.X1
    await until(lambda: sim.linked and sim.pwm == SetPwm(PwmMode.PWM, 267))
    assert board.link_up
    assert not sim.permission  # never granted, so not re-granted


async def test_board_restart_while_charging_re_grants_the_last_permission(board: IoBoard,
                                                                          sim: Board) -> None:
    await charging(board, sim)
    with board.events.subscribe() as sub:
        sim.reboot()
        assert not sim.permission and not sim.contactor_cmd  # B1: a restarted board is safe
        await until(lambda: sim.linked and sim.permission and sim.contactor_closed)  # no call from the test
        assert sim.pwm == SetPwm(PwmMode.PWM, 267)
        await asyncio.sleep(2 * SETTLE_S)
        assert not any(isinstance(e, DeviceFault) for e in drain(sub))
    assert board.power_allowed


async def test_board_restart_after_a_blocking_fault_does_not_re_grant(board: IoBoard,
                                                                      sim: Board) -> None:
    await charging(board, sim)
    sim.inject(BoardFault.OVERTEMPERATURE)
    await until(lambda: not board.power_allowed)
    sim.inject(BoardFault.OVERTEMPERATURE, False)
    sim.reboot()
    await until(lambda: sim.linked and sim.pwm == SetPwm(PwmMode.PWM, 267))
    await asyncio.sleep(2 * REPORT_INTERVAL_S)
    assert not sim.permission and not sim.contactor_closed


async def test_reset_command_restarts_the_board_and_the_driver_follows(board: IoBoard,
                                                                       sim: Board) -> None:
    await board.set_unavailable(True)
    await board.reset_board()
    await until(lambda: sim.counters.extra["resets"] == 1)
    await until(lambda: sim.linked and sim.pwm.mode is PwmMode.F)
    hello = board.board_hello
    assert hello is not None and hello.reset_reason.name == "HOST_REQUEST"


async def test_close_leaves_the_board_safe(wire: SerialWire, sim: Board) -> None:
    drv = make_driver(wire)
    await drv.start()
    await charging(drv, sim)
    await drv.close()
    assert not sim.contactor_cmd and sim.pwm.mode is PwmMode.X1
    await drv.close()  # idempotent


# --- the board side of the spec, driven by hand -------------------------------------------------------


class RawHost:
    """A bare host on the host port: writes frames, collects whatever the board answers."""

    def __init__(self, port: str) -> None:
        self.ser = serial.Serial(port, 115200, timeout=0)
        self.decoder = FrameDecoder()

    def send(self, seq: int, msg: Message | bytes) -> None:
        payload = msg if isinstance(msg, bytes) else encode_message(seq, msg)
        self.ser.write(b"\x00" + encode_frame(payload))

    async def answer(self, seq: int) -> Ack | Nack:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for payload in self.decoder.feed(self.ser.read(4096)):
                msg = decode_message(payload).message
                if isinstance(msg, Ack | Nack) and msg.ack_seq == seq:
                    return msg
            await asyncio.sleep(0.005)
        raise AssertionError(f"no answer to seq {seq}")

    async def request_state(self, seq: int) -> StateReport:
        """REQUEST_STATE: the STATE that follows its ACK (B10). Feeds the board's watchdog too."""
        self.send(seq, RequestState())
        acked = False
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            for payload in self.decoder.feed(self.ser.read(4096)):
                msg = decode_message(payload).message
                acked = acked or (isinstance(msg, Ack) and msg.ack_seq == seq)
                if acked and isinstance(msg, StateReport):
                    return msg
            await asyncio.sleep(0.005)
        raise AssertionError(f"no STATE after REQUEST_STATE seq {seq}")

    async def poll_state(self, seq: int, predicate: Callable[[StateReport], bool], within: float = 2.0
                         ) -> tuple[int, StateReport]:
        """REQUEST_STATE until a STATE satisfies ``predicate``: (next free seq, that STATE)."""
        deadline = time.monotonic() + within
        while True:
            state = await self.request_state(seq)
            seq += 1
            if predicate(state):
                return seq, state
            assert time.monotonic() < deadline, f"no such STATE; last {state}"
            await asyncio.sleep(0.01)


async def test_board_answers_duplicates_without_executing_again_and_nacks_bad_commands(
        wire: SerialWire, sim: Board) -> None:
    import cbor2

    host = RawHost(wire.host_port)
    try:
        host.send(0, HostHello())
        assert await host.answer(0) == Ack(0)
        host.send(1, SetPwm(PwmMode.PWM, 267))
        assert await host.answer(1) == Ack(1)
        host.send(1, SetPwm(PwmMode.PWM, 500))  # same seq: a retransmission, not a new command
        assert await host.answer(1) == Ack(1)
        assert sim.pwm == SetPwm(PwmMode.PWM, 267)
        assert sim.counters.extra["duplicates"] == 1
        host.send(2, cbor2.dumps({0: 3, 1: 2, 2: 1, 3: 990}))  # duty beyond 97 %
        answer = await host.answer(2)
        assert isinstance(answer, Nack) and answer.reason is NackReason.OUT_OF_RANGE
        host.send(3, cbor2.dumps({0: 42, 1: 3}))
        answer = await host.answer(3)
        assert isinstance(answer, Nack) and answer.reason is NackReason.UNKNOWN_TYPE
        assert sim.bad_frames == 2
    finally:
        host.ser.close()


async def test_board_refuses_pwm_and_permission_before_hello(wire: SerialWire, sim: Board) -> None:
    host = RawHost(wire.host_port)
    try:
        host.send(9, SetPwm(PwmMode.PWM, 267))
        answer = await host.answer(9)
        assert isinstance(answer, Nack) and answer.reason is NackReason.NOT_LINKED
        assert sim.pwm.mode is PwmMode.X1
        host.send(10, AllowContactor(True))
        answer = await host.answer(10)
        assert isinstance(answer, Nack) and answer.reason is NackReason.NOT_LINKED
        assert not sim.permission
        host.send(11, SetLock(True))
        answer = await host.answer(11)
        assert isinstance(answer, Nack) and answer.reason is NackReason.NOT_LINKED
        await asyncio.sleep(0.3)
        assert not sim.cable_locked  # nothing was driven
        host.send(12, HostHello())
        assert await host.answer(12) == Ack(12)
        host.send(13, SetLock(True))  # linked: taken, and the feedback is in STATE key 9
        assert await host.answer(13) == Ack(13)
        await host.poll_state(14, lambda s: s.lock is LockState.LOCKED)
        assert sim.cable_locked
    finally:
        host.ser.close()


async def test_board_takes_the_permission_in_any_pilot_state_and_hello_withdraws_it(
        wire: SerialWire, sim: Board) -> None:
    host = RawHost(wire.host_port)
    try:
        host.send(0, HostHello())
        assert await host.answer(0) == Ack(0)
        assert sim.pilot is PilotState.A
        host.send(1, AllowContactor(True))  # no EV yet: accepted, nothing closes
        assert await host.answer(1) == Ack(1)
        assert sim.permission and not sim.contactor_cmd
        sim.set_ev_pilot(PilotState.C)  # with X1 on the pilot: state C1, no supply (B7)
        seq, state = await host.poll_state(2, lambda s: s.pilot is PilotState.C)
        assert state.pwm_mode is PwmMode.X1 and not state.contactor_cmd and not sim.contactor_cmd
        host.send(seq, SetPwm(PwmMode.PWM, 267))  # C2: the board closes by itself
        assert await host.answer(seq) == Ack(seq)
        await until(lambda: sim.contactor_cmd)  # after the board's pilot debounce with the PWM running
        sim.set_ev_pilot(PilotState.A)  # unplugged: open, permission kept (withdrawing it is the host's call)
        await until(lambda: not sim.contactor_cmd)
        assert sim.permission
        host.send(seq + 1, HostHello())  # a new host session starts without permission (and with X1)
        assert await host.answer(seq + 1) == Ack(seq + 1)
        assert not sim.permission
        host.send(seq + 2, SetPwm(PwmMode.PWM, 267))
        assert await host.answer(seq + 2) == Ack(seq + 2)
        sim.set_ev_pilot(PilotState.C)
        first, state = await host.poll_state(seq + 3, lambda s: s.pilot is PilotState.C)
        for seq in range(first, first + 5):  # well past the debounce, C2 without permission: still open
            assert not (await host.request_state(seq)).contactor_cmd
            await asyncio.sleep(REPORT_INTERVAL_S / 2)
        assert not sim.contactor_cmd
    finally:
        host.ser.close()


async def test_board_refuses_another_major_version_and_stays_unlinked(wire: SerialWire, sim: Board) -> None:
    host = RawHost(wire.host_port)
    try:
        host.send(0, HostHello(proto_major=2, proto_minor=3))
        answer = await host.answer(0)
        assert isinstance(answer, Nack) and answer.reason is NackReason.VERSION_MISMATCH and "2.3" in answer.text
        assert not sim.linked
        host.send(1, SetPwm(PwmMode.PWM, 267))
        answer = await host.answer(1)
        assert isinstance(answer, Nack) and answer.reason is NackReason.NOT_LINKED
        assert sim.pwm.mode is PwmMode.X1
    finally:
        host.ser.close()
