"""Safety invariants of the I/O board firmware (MicroPython, behind the pty) under random event sequences.

A real host (hal/ioboard's driver) and the EV side take random turns: plug, C, pause, D, pilot short,
RCD, overtemperature, a missing diode, the host falling silent, permission on and off, PWM on, off and F,
faults cleared.
Afterwards everything the firmware did is checked against docs/ioboard-protocol.md B7/B8 and §4.4.

The evidence is the chip's own record (``McuIoBoard.trace``): its input samples, pilot output and coil
changes, the bytes its UART read and wrote, and its restarts, in the order the firmware made them, all
taken on the interpreter's thread. The permission is followed from those bytes, so no time taken on one
thread is compared with a time taken on another. (An earlier version timed the host's commands where the
wire relays them, on the event loop's thread; the firmware, on its own thread, could read an ALLOW_CONTACTOR
on and switch the coil before the relay's thread got round to taking the time, and the model then saw the
coil go on 1 ms before the permission was granted.)

- The coil goes on only in state C2/D2: with the PWM on the pilot, in a pass whose sample shows the pilot
  at C or D with the negative half of a good diode, no residual current and no overtemperature, once the
  host drives the cable lock only while its last SET_LOCK asked for the lock and the sample shows it engaged
  (B16), and only while the host's permission stands: granted by an
  ALLOW_CONTACTOR on that the firmware read, carried out (not a retransmission, B5) and acknowledged;
  withdrawn by an ALLOW_CONTACTOR off or a HOST_HELLO it read, by a sample with residual current or
  overtemperature, by a STATE that shows a new blocking fault (host watchdog trip included), by a restart.
- An answer to ALLOW_CONTACTOR off or HOST_HELLO, and a STATE, leave only after the coil is where they say
  (an ACK means "done"; STATE ``contactor_cmd`` is the coil).
- A sample with residual current or overtemperature while the coil is on is followed by the coil going off
  in the same pass (before the next sample); the pilot leaving C/D within the debounce time plus one pass;
  the pilot driven to F only after the coil went off; the PWM stopped (X1) with the coil on (C1/D1) within
  T_c1 plus one pass; a sample with the lock not engaged while it is asked for, in the same pass; the answer
  to a SET_LOCK false leaves only after the coil went off.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from typing import Any

import pytest

from hal.interfaces import DeviceError, PilotState
from hal.ioboard import IoBoard
from hal.ioboard.codec import FrameDecoder
from hal.ioboard.messages import (
    BLOCKING_FAULTS,
    Ack,
    AllowContactor,
    Envelope,
    FaultBit,
    HostHello,
    MessageError,
    Nack,
    SetLock,
    StateReport,
    decode_message,
)
from sim.devices.interfaces import BoardFault
from sim.devices.ioboard_mcu import McuIoBoard
from sim.devices.serial_wire import Direction, SerialWire

KEEPALIVE_TIMEOUT_S = 0.3
C1_TIMEOUT_S = 0.2  # T_c1 shortened from 6 s so that it runs out within the random sessions
DEBOUNCE_S = 0.010  # iob/safety.py DEBOUNCE_MS
TEMP_LIMIT_DC = 800  # iob/safety.py TEMP_LIMIT_DC

Event = tuple[float, str, Any]


def _sample_ok(sample: Any) -> bool:
    """C or D with the PWM running (a negative half) and the EV's diode in it, no residual current, not
    too hot."""
    high, low, rcd, temp, _lock = sample
    return 1500 <= high < 7500 and low <= -10500 and not rcd and temp <= TEMP_LIMIT_DC


def _pwm(permille: int) -> bool:
    return 0 < permille < 1000  # 1000: X1 (steady +12 V), 0: F (steady -12 V)


def firmware_io(trace: list[tuple[float, str, object]]) -> list[Event]:
    """The chip's trace with the UART bytes decoded into messages (``rx``: host commands, ``tx``: what the
    firmware sent), one event per message."""
    decoders = {"rx": FrameDecoder(), "tx": FrameDecoder()}
    events: list[Event] = []
    for t, kind, value in trace:
        if kind in decoders:
            assert isinstance(value, bytes)
            for payload in decoders[kind].feed(value):
                with contextlib.suppress(MessageError):
                    events.append((t, kind, decode_message(payload)))
            continue
        if kind == "boot":  # the new chip starts with an empty receive buffer
            decoders = {"rx": FrameDecoder(), "tx": FrameDecoder()}
        events.append((t, kind, value))
    return events


def answered_commands(events: list[Event]) -> dict[int, tuple[int, Envelope, bool]]:
    """For each ACK/NACK the firmware sent (by event index): the command it answers (its event index and
    envelope) and whether that command was carried out or was a retransmission (B5: the command right
    before had the same ``seq``; a HOST_HELLO is always carried out). The firmware answers the commands it
    reads in order, so answers pair with commands first in, first out."""
    waiting: deque[tuple[int, Envelope, bool]] = deque()
    last_seq: int | None = None
    pairs: dict[int, tuple[int, Envelope, bool]] = {}
    for i, (_, kind, value) in enumerate(events):
        if kind == "boot":
            waiting.clear()
            last_seq = None
        elif kind == "rx":
            executed = isinstance(value.message, HostHello) or value.seq != last_seq
            last_seq = value.seq
            waiting.append((i, value, executed))
        elif kind == "tx" and isinstance(value.message, Ack | Nack):
            assert waiting, f"an answer to seq {value.message.ack_seq} with no command read before it"
            j, command, executed = waiting.popleft()
            assert value.message.ack_seq == command.seq, (value, command)
            pairs[i] = (j, command, executed)
    return pairs


def _withdraws(command: Envelope) -> bool:
    msg = command.message
    return isinstance(msg, HostHello) or (isinstance(msg, AllowContactor) and not msg.on)


def safety_problems(trace: list[tuple[float, str, object]]) -> tuple[list[tuple[float, str]], int, int]:
    """What the firmware did against B7/B8/B16/§4.4, how often it switched the coil on, and how often with the cable
    lock asked for (B16 had its say)."""
    events = firmware_io(trace)
    answers = answered_commands(events)
    grants = {j for i, (j, cmd, executed) in answers.items()
              if executed and isinstance(cmd.message, AllowContactor) and cmd.message.on
              and isinstance(events[i][2].message, Ack)}
    withdrawals = {j for j, cmd, executed in answers.values() if executed and _withdraws(cmd)}
    lock_requests = {j: cmd.message.locked for j, cmd, executed in answers.values()
                     if executed and isinstance(cmd.message, SetLock)}
    lock_wanted: bool | None = None  # the last SET_LOCK the firmware carried out since its start (B16)

    coil = False
    coil_ons = locked_ons = 0
    out = 1000
    c1_since: float | None = None  # the PWM stopped with the coil on (C1/D1)
    samples_past_c1 = 0
    permission = False
    reported = FaultBit(0)
    last_sample: Any = None
    bad_since: float | None = None  # first sample of an unbroken run where the pilot is not C/D
    samples_since_debounced = 0
    must_be_off_by_next_sample = False
    problems: list[tuple[float, str]] = []
    for i, (t, kind, value) in enumerate(events):
        if kind == "boot":  # the pins' reset state: coil off, X1; a restarted board holds no permission (B1)
            coil = permission = must_be_off_by_next_sample = False
            reported, out, c1_since, lock_wanted = FaultBit(0), 1000, None, None
        elif kind == "out":
            out = value
            if coil and out <= 0:
                problems.append((t, "pilot driven to F with the coil on"))
            if coil and out >= 1000:
                c1_since, samples_past_c1 = t, 0
            elif _pwm(out):
                c1_since = None
        elif kind == "rx":
            if i in grants:
                permission = True
            elif i in withdrawals:
                permission = False
            elif i in lock_requests:
                lock_wanted = lock_requests[i]
        elif kind == "tx":
            msg = value.message
            if i in answers and answers[i][2] and _withdraws(answers[i][1]) and coil:
                problems.append((t, f"coil still on when the answer to {answers[i][1].message} left"))
            if i in answers and answers[i][2] and answers[i][1].message == SetLock(False) and coil:
                problems.append((t, "coil still on when the answer to SET_LOCK false left"))
            if isinstance(msg, StateReport):
                if msg.contactor_cmd != coil:
                    problems.append((t, f"STATE says coil {msg.contactor_cmd}, the coil is {coil}"))
                if msg.faults & BLOCKING_FAULTS & ~reported:
                    permission = False  # B8: a new blocking fault (the host watchdog's too) takes it
                reported = msg.faults
        elif kind == "s":
            if coil and must_be_off_by_next_sample:
                problems.append((t, "coil still on a pass after residual current, overtemperature or the lock "
                                    "not engaged"))
            high, _low, rcd, temp, engaged = value
            last_sample = value
            if coil and lock_wanted is not None and not (lock_wanted and engaged):
                must_be_off_by_next_sample = True  # B16: the lock let go (or is being released)
            if coil and c1_since is not None and t - c1_since >= C1_TIMEOUT_S:
                samples_past_c1 += 1  # the firmware's pass that sees T_c1 run out may have begun just before
                if samples_past_c1 > 1:
                    problems.append((t, "coil on past T_c1 after the PWM stopped in C/D"))
            if rcd or temp > TEMP_LIMIT_DC:
                permission = False  # the fault latches on this very sample and takes the permission (B8)
                must_be_off_by_next_sample = coil
            if 1500 <= high < 7500:
                bad_since, samples_since_debounced = None, 0
            elif bad_since is None:
                bad_since = t
            elif t - bad_since >= DEBOUNCE_S + 0.002:
                samples_since_debounced += 1
                if coil and samples_since_debounced > 2:
                    problems.append((t, "coil on past the debounce after the pilot left C/D"))
        elif kind == "coil" and bool(value) != coil:
            coil = bool(value)
            must_be_off_by_next_sample = False
            c1_since = None
            if coil:
                coil_ons += 1
                locked_ons += lock_wanted is True
                if last_sample is None or not _sample_ok(last_sample):
                    problems.append((t, f"coil on with sample {last_sample}"))
                if not _pwm(out):
                    problems.append((t, f"coil on without PWM (pilot output {out})"))
                if not permission:
                    problems.append((t, "coil on without a standing permission"))
                if lock_wanted is not None and not (lock_wanted and last_sample is not None and last_sample[4]):
                    problems.append((t, f"coil on with the lock asked {lock_wanted}, sample {last_sample}"))
    return problems, coil_ons, locked_ons


async def _random_session(board: IoBoard, mcu: McuIoBoard, wire: SerialWire, rng: random.Random) -> None:
    for _ in range(60):
        action = rng.choice(["charge", "charge", "charge", "pilot", "pilot", "pilot", "allow", "deny", "pwm", "pwm",
                             "f", "fault", "clear", "silence", "lock", "lock", "stuck"])
        with contextlib.suppress(DeviceError):
            match action:
                case "charge":  # what a session does: faults gone, lock, offer current, grant, the EV goes to C
                    if rng.random() < 0.5:
                        await board.set_cable_lock(True)
                    if rng.random() < 0.5:
                        for fault in (BoardFault.RCD_TRIP, BoardFault.OVERTEMPERATURE, BoardFault.DIODE_FAILURE):
                            mcu.inject(fault, False)
                        await board.clear_faults()
                    if rng.random() < 0.8:
                        await board.set_offered_current(rng.choice([10.0, 16.0, 32.0]))
                    if rng.random() < 0.8:
                        await board.allow_power(True)
                    mcu.set_ev_pilot(rng.choice([PilotState.C, PilotState.C, PilotState.D]))
                case "pilot":
                    mcu.set_ev_pilot(rng.choice([PilotState.A, PilotState.B, PilotState.C, PilotState.C,
                                                 PilotState.D, PilotState.E]))
                case "allow":
                    await board.allow_power(True)
                case "deny":
                    await board.allow_power(False)
                case "pwm":
                    await board.set_offered_current(rng.choice([0.0, 0.0, 10.0, 16.0, 32.0]))
                case "f":  # F for a while, then back to the offer
                    await board.set_unavailable(True)
                    await asyncio.sleep(rng.uniform(0.0, 0.1))
                    await board.set_unavailable(False)
                case "fault":
                    fault = rng.choice([BoardFault.RCD_TRIP, BoardFault.OVERTEMPERATURE, BoardFault.DIODE_FAILURE])
                    mcu.inject(fault, rng.random() < 0.6)
                case "clear":
                    for fault in (BoardFault.RCD_TRIP, BoardFault.OVERTEMPERATURE, BoardFault.DIODE_FAILURE):
                        mcu.inject(fault, False)
                    await board.clear_faults()
                case "lock":  # the cable lock (B15/B16): engaged, released, or FAULT after T_lock when stuck
                    await board.set_cable_lock(rng.random() < 0.7)
                case "stuck":
                    mcu.inject(BoardFault.LOCK_STUCK, rng.random() < 0.5)
                case "silence":
                    wire.set_silent(Direction.TO_DEVICE)
                    await asyncio.sleep(KEEPALIVE_TIMEOUT_S + rng.uniform(-0.1, 0.15))
                    wire.set_silent(Direction.TO_DEVICE, False)
        await asyncio.sleep(rng.uniform(0.02, 0.08))


@pytest.mark.parametrize("seed", [1, 4, 5])
async def test_contactor_only_with_permission_c_or_d_and_no_fault_and_opens_within_a_pass(seed: int) -> None:
    async with SerialWire() as wire:
        mcu = McuIoBoard(wire.device_port, keepalive_timeout_s=KEEPALIVE_TIMEOUT_S, report_interval_s=0.1,
                         c1_timeout_s=C1_TIMEOUT_S)
        mcu.trace = []
        await mcu.start()
        board = IoBoard("ioboard", wire.host_port, keepalive_s=0.05, link_timeout_s=0.4, contactor_settle_s=0.1)
        try:
            await board.start()
            await _random_session(board, mcu, wire, random.Random(seed))
        finally:
            await board.close()
            await mcu.close()
    assert not mcu.crashes
    problems, coil_ons, locked_ons = safety_problems(mcu.trace)
    assert coil_ons >= 1, "the random session should have charged at least once"
    assert locked_ons >= 1, "... and at least once with the cable lock asked for"
    assert not problems, problems[:5]
