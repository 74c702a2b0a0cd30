"""I/O board protocol: command -> ACK round trip over a real pty pair, and codec cost per frame.

Driver, wire relay and simulated board share one event loop here, so the figures are an upper
bound on what the host side adds; a real board at 115200 baud adds ~2.6 ms of line time for a
SET_PWM frame and its ACK (about 30 bytes at 10 bits per byte).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from hal.interfaces import PilotState
from hal.ioboard.codec import FrameDecoder, encode_frame
from hal.ioboard.driver import IoBoard
from hal.ioboard.messages import PwmMode, StateReport, decode_message, encode_message
from sim.devices.ioboard import SimulatedIoBoard
from sim.devices.serial_wire import SerialWire

COMMANDS = 1000
CODEC_ROUNDS = 20_000


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[index]


async def _round_trips(n: int) -> tuple[list[float], int, int]:
    wire = SerialWire("bench")
    await wire.start()
    sim = SimulatedIoBoard(wire.device_port)
    await sim.start()
    board = IoBoard("bench", wire.host_port)
    try:
        await board.start()
        for _ in range(20):  # warm-up
            await board.set_offered_current(16.0)
        samples: list[float] = []
        for i in range(n):
            amps = 16.0 if i % 2 else 32.0
            t0 = time.perf_counter()
            await board.set_offered_current(amps)  # one SET_PWM -> one ACK
            samples.append((time.perf_counter() - t0) * 1000.0)
        return samples, board.stats.timeouts, board.stats.frames_dropped
    finally:
        await board.close()
        await sim.close()
        wire.close()


def _codec_cost(rounds: int) -> tuple[float, float, int]:
    report = StateReport(PilotState.C, PwmMode.PWM, 267, True, True, temperature_dc=312)
    t0 = time.perf_counter()
    frames = [encode_frame(encode_message(i % 256, report)) for i in range(rounds)]
    encode_us = (time.perf_counter() - t0) / rounds * 1e6
    decoder = FrameDecoder()
    stream = b"".join(frames)
    t0 = time.perf_counter()
    decoded = [decode_message(p) for p in decoder.feed(stream)]
    decode_us = (time.perf_counter() - t0) / rounds * 1e6
    assert len(decoded) == rounds
    return encode_us, decode_us, len(frames[0])


def main() -> None:
    samples, timeouts, dropped = asyncio.run(_round_trips(COMMANDS))
    ordered = sorted(samples)
    print(f"ioboard command->ack round trip over pty, {len(samples)} SET_PWM commands:")
    print(f"  mean {statistics.fmean(samples):.3f} ms  p50 {_percentile(ordered, 0.50):.3f} ms  "
          f"p99 {_percentile(ordered, 0.99):.3f} ms  max {ordered[-1]:.3f} ms  "
          f"(retransmissions {timeouts}, frames dropped {dropped})")
    encode_us, decode_us, frame_len = _codec_cost(CODEC_ROUNDS)
    print(f"ioboard codec, STATE report ({frame_len} bytes on the wire): encode {encode_us:.1f} us, "
          f"deframe+decode {decode_us:.1f} us per frame")


if __name__ == "__main__":
    main()
