"""Safety invariants of the I/O board firmware (MicroPython, behind the pty) under random event sequences.

A real host (hal/ioboard's driver) and the EV side take random turns: plug, C, pause, D, pilot short,
RCD, overtemperature, a missing diode, the host falling silent, permission on and off, faults cleared.
Afterwards the firmware's every input sample and coil output (McuIoBoard.trace) and every frame on
the wire are checked against docs/ioboard-protocol.md B7/B8 and §4.4:

- the coil goes on only in a pass whose sample shows the pilot at C or D, no residual current, no
  overtemperature and a good diode, and only while the host's last permission stands (granted by an
  ACKed ALLOW_CONTACTOR on, not withdrawn by an ACKed off or HOST_HELLO, not dropped by a blocking
  fault or a host watchdog trip since);
- a sample with residual current or overtemperature while the coil is on is followed by the coil
  going off in the same pass (before the next sample); the pilot leaving C/D within the debounce time
  plus one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

from hal.interfaces import DeviceError, PilotState
from hal.ioboard import IoBoard
from hal.ioboard.codec import FrameDecoder
from hal.ioboard.messages import (
    Ack,
    AllowContactor,
    FaultBit,
    HostHello,
    Message,
    MessageError,
    Nack,
    StateReport,
    decode_message,
)
from sim.devices.interfaces import BoardFault
from sim.devices.ioboard_mcu import McuIoBoard
from sim.devices.serial_wire import Direction, SerialWire

KEEPALIVE_TIMEOUT_S = 0.3
DEBOUNCE_S = 0.010  # iob/safety.py DEBOUNCE_MS
TEMP_LIMIT_DC = 800  # iob/safety.py TEMP_LIMIT_DC
BLOCKING_SAMPLE = "blocking sample"


def _sample_ok(sample: Any) -> bool:
    """C or D, no residual current, not too hot, and the diode good where it can be seen (PWM running:
    a negative half exists). B7 as written in 1.0 does not ask for the PWM itself (see the note in
    docs/ioboard-firmware.md on state C1)."""
    high, low, rcd, temp = sample
    return 1500 <= high < 7500 and (low <= -10500 or low == high) and not rcd and temp <= TEMP_LIMIT_DC


class WireLog:
    """Host commands and board answers on the wire, decoded, with their times."""

    def __init__(self, wire: SerialWire) -> None:
        self.events: list[tuple[float, str, Message, int]] = []
        self._decoders = {Direction.TO_DEVICE: FrameDecoder(), Direction.TO_HOST: FrameDecoder()}
        wire.observers.append(self._seen)

    def _seen(self, direction: Direction, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        for payload in self._decoders[direction].feed(data):
            with contextlib.suppress(MessageError):
                env = decode_message(payload)
                self.events.append((now, direction.value, env.message, env.seq))


def _permission_events(log: WireLog) -> list[tuple[float, bool]]:
    """(time, permission) changes the host's frames and the board's answers make (B7, B8, B4, §4.4).

    The board acts on a command before its ACK leaves, so a grant counts from the command's first
    transmission and a withdrawal from the ACK: the model never blames the board for the wire's delay."""
    pending: dict[int, tuple[float, Message]] = {}
    out = []
    for t, direction, msg, seq in log.events:
        if direction == "to_device":
            if seq not in pending or pending[seq][1] != msg:
                pending[seq] = (t, msg)
        elif isinstance(msg, Ack | Nack):
            sent, cmd = pending.get(msg.ack_seq, (t, None))
            if isinstance(cmd, AllowContactor) and isinstance(msg, Ack):
                out.append((sent if cmd.on else t, cmd.on))
            elif isinstance(cmd, HostHello):
                out.append((t, False))
        elif isinstance(msg, StateReport) and msg.faults & FaultBit.HOST_TIMEOUT:
            out.append((t, False))
    return sorted(out, key=lambda e: e[0])


async def _random_session(board: IoBoard, mcu: McuIoBoard, wire: SerialWire, rng: random.Random) -> None:
    for _ in range(60):
        action = rng.choice(["pilot", "pilot", "pilot", "allow", "allow", "allow", "deny", "pwm", "fault", "clear",
                             "clear", "silence"])
        with contextlib.suppress(DeviceError):
            match action:
                case "pilot":
                    mcu.set_ev_pilot(rng.choice([PilotState.A, PilotState.B, PilotState.C, PilotState.C,
                                                 PilotState.D, PilotState.E]))
                case "allow":
                    await board.allow_power(True)
                case "deny":
                    await board.allow_power(False)
                case "pwm":
                    await board.set_offered_current(rng.choice([0.0, 10.0, 16.0, 32.0]))
                case "fault":
                    fault = rng.choice([BoardFault.RCD_TRIP, BoardFault.OVERTEMPERATURE, BoardFault.DIODE_FAILURE])
                    mcu.inject(fault, rng.random() < 0.6)
                case "clear":
                    for fault in (BoardFault.RCD_TRIP, BoardFault.OVERTEMPERATURE, BoardFault.DIODE_FAILURE):
                        mcu.inject(fault, False)
                    await board.clear_faults()
                case "silence":
                    wire.set_silent(Direction.TO_DEVICE)
                    await asyncio.sleep(KEEPALIVE_TIMEOUT_S + rng.uniform(-0.1, 0.15))
                    wire.set_silent(Direction.TO_DEVICE, False)
        await asyncio.sleep(rng.uniform(0.02, 0.08))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_contactor_only_with_permission_c_or_d_and_no_fault_and_opens_within_a_pass(seed: int) -> None:
    async with SerialWire() as wire:
        mcu = McuIoBoard(wire.device_port, keepalive_timeout_s=KEEPALIVE_TIMEOUT_S, report_interval_s=0.1)
        mcu.trace = []
        log = WireLog(wire)
        await mcu.start()
        board = IoBoard("ioboard", wire.host_port, keepalive_s=0.05, link_timeout_s=0.4, contactor_settle_s=0.1)
        try:
            await board.start()
            await _random_session(board, mcu, wire, random.Random(seed))
        finally:
            await board.close()
            await mcu.close()
    assert not mcu.crashes
    trace = mcu.trace
    permissions = _permission_events(log)
    # the wire observer runs on the event loop's clock, the trace on time.monotonic(): the same clock
    coil_ons = sum(1 for _, kind, on in trace if kind == "coil" and on)
    assert coil_ons >= 1, "the random session should have charged at least once"

    coil = False
    last_sample: Any = None
    granted = False
    p_iter = iter(permissions)
    next_p = next(p_iter, None)
    bad_since: float | None = None  # first sample of an unbroken run where the pilot is not C/D
    must_be_off_by_next_sample = False
    samples_since_debounced = 0
    problems = []
    for t, kind, value in trace:
        while next_p is not None and next_p[0] <= t:
            granted = next_p[1]
            next_p = next(p_iter, None)
        if kind == "s":
            if coil and must_be_off_by_next_sample:
                problems.append((t, "coil still on a pass after residual current / overtemperature"))
            high, _low, rcd, temp = value  # type: ignore[misc]
            last_sample = value
            if rcd or temp > TEMP_LIMIT_DC:
                granted = False  # a blocking fault takes the permission with it (B8)
                must_be_off_by_next_sample = coil
            pilot_cd = 1500 <= high < 7500
            if pilot_cd:
                bad_since, samples_since_debounced = None, 0
            elif bad_since is None:
                bad_since = t
            elif t - bad_since >= DEBOUNCE_S + 0.002:
                samples_since_debounced += 1
                if coil and samples_since_debounced > 2:
                    problems.append((t, "coil on past the debounce after the pilot left C/D"))
        else:
            coil = bool(value)
            must_be_off_by_next_sample = False
            if coil:
                if last_sample is None or not _sample_ok(last_sample):
                    problems.append((t, f"coil on with sample {last_sample}"))
                if not granted:
                    problems.append((t, "coil on without a standing permission"))
    assert not problems, problems[:5]
