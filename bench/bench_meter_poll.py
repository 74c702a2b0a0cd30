"""Meter polling: requests per full poll vs the map's minimum, and full-poll time over a pty.

Pseudo-terminals ignore the baud rate, so the measured times are the software path (driver, pymodbus,
kernel tty layer, simulated meter) without line time; the on-wire time a real 9600-baud line adds is
computed from the frame sizes and printed beside it.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from hal.meter_modbus import ModbusMeter, load_register_map
from hal.modbus_bus import ModbusBus
from hal.registermap import BlockRead, RegisterMap, minimum_requests, plan_reads
from sim.devices.interfaces import ElectricalState
from sim.devices.meters import SimulatedModbusMeter
from sim.devices.rs485_bus import SimulatedRs485Bus
from sim.devices.serial_wire import SerialWire

MODELS = ("sdm630", "sdm120", "abb_b23")
POLLS = 200
BAUD = 9600
BITS_PER_CHAR = 10  # 8N1: start + 8 data + stop (8E1 would be 11)


def wire_ms(plan: list[BlockRead], baud: int = BAUD) -> float:
    """Line time of one poll: request (8 bytes) and response (5 + 2n bytes) per block, each frame
    followed by the 3.5-character silence RTU requires. The meter's turnaround time (per request,
    typically tens of milliseconds) comes on top."""
    chars = sum((8 + 3.5) + (5 + 2 * b.count + 3.5) for b in plan)
    return chars * BITS_PER_CHAR / baud * 1000


def one_per_quantity(m: RegisterMap) -> list[BlockRead]:
    return [BlockRead(q.function, q.address, q.count, (q.name,)) for q in m.quantities.values()]


async def timed_polls(meter: ModbusMeter, polls: int) -> list[float]:
    durations = []
    for _ in range(polls):
        start = time.perf_counter()
        await meter.read()
        durations.append((time.perf_counter() - start) * 1000)
    return durations


def summary(durations: list[float]) -> str:
    p95 = statistics.quantiles(durations, n=20)[18]
    return f"mean {statistics.fmean(durations):.3f} ms, p95 {p95:.3f} ms"


async def run() -> None:
    print(f"{'model':8} {'requests/poll':>13} {'minimum':>8} {'one-per-value':>13} {'registers':>9} "
          f"{'wire@9600 ms':>12} {'naive wire ms':>13}")
    for model in MODELS:
        m = load_register_map(model)
        plan = plan_reads(m)
        naive = one_per_quantity(m)
        print(f"{model:8} {len(plan):>13} {minimum_requests(m):>8} {len(naive):>13} "
              f"{sum(b.count for b in plan):>9} {wire_ms(plan):>12.1f} {wire_ms(naive):>13.1f}")

    async with SerialWire(seed=1) as wire:
        line = SimulatedRs485Bus(wire.device_port, baudrate=BAUD)
        sim = SimulatedModbusMeter(1, "sdm630")
        sim.update(ElectricalState(current_a=(16.0, 16.0, 16.0), energy_import_wh=123_456.0))
        line.attach(sim)
        await line.start()
        bus = ModbusBus(wire.host_port, baudrate=BAUD, timeout_s=0.5, name="bench-line")
        await bus.open()
        try:
            meter = ModbusMeter("bench-sdm630", bus, 1, load_register_map("sdm630"))
            await timed_polls(meter, 10)  # warm-up
            before = line.requests
            durations = await timed_polls(meter, POLLS)
            per_poll = (line.requests - before) / POLLS
            print(f"sdm630 over a pty, {POLLS} full polls ({per_poll:.0f} requests/poll, {BAUD}-baud settings): "
                  f"{summary(durations)}; a real {BAUD}-baud line adds {wire_ms(list(meter.plan)):.1f} ms")
            naive_meter = ModbusMeter("bench-naive", bus, 1, load_register_map("sdm630"))
            naive_meter.plan = tuple(one_per_quantity(naive_meter.register_map))
            naive_durations = await timed_polls(naive_meter, POLLS)
            print(f"sdm630 one request per value ({len(naive_meter.plan)} requests/poll) for comparison: "
                  f"{summary(naive_durations)}; a real {BAUD}-baud line adds {wire_ms(list(naive_meter.plan)):.1f} ms")
            print(f"line counters: {bus.stats}")
        finally:
            await bus.close()
            await line.close()


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
