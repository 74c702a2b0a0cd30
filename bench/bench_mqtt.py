"""MQTT telemetry: site limit -> offered current latency, publish throughput, payload sizes.

* limit latency: a limit command published by an independent client -> the simulated board offering the new
  current (the agent as a real process, a real mosquitto on loopback; ``BENCH_LIMITS`` changes, default 20);
* throughput: ``BENCH_MQTT_MESSAGES`` (default 10,000) meter messages queued at once in the agent's
  :class:`MqttLink`, until the broker acknowledged the last (QoS 1, one in flight);
* the bytes of one meter message as JSON and as CBOR.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from firmware.config import MqttConfig
from firmware.telemetry import payloads
from firmware.telemetry.codec import encode
from firmware.telemetry.link import MqttLink
from firmware.telemetry.topics import Topics
from hal.interfaces import MeterReading
from tests.mqtt_broker import Mosquitto, Subscriber
from tests.station import CP_ID, Station


async def _until(condition: Callable[[], bool], step_s: float) -> None:
    """Poll ``condition`` every ``step_s`` (what is measured changes on the other side of a wire or process)."""
    while True:
        if condition():
            return
        await asyncio.sleep(step_s)


async def _limit_latency(root: Path, changes: int) -> list[float]:
    async with Mosquitto(root / "broker") as broker, Subscriber(broker, f"evse/{CP_ID}/reply") as em:
        section = (f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nreconnect_min_s = 0.1\n'
                   "reconnect_max_s = 0.5\n")
        async with Station(root, connectors=1, extra_config=section) as s:
            await s.start_agent()
            await s.start_session(1, "04A1B2C3")
            board = s.charger.connectors[1].board
            out = []
            for i in range(changes):
                amps = 10.0 if i % 2 == 0 else 16.0
                t0 = time.perf_counter()
                await em.publish(f"evse/{CP_ID}/cmd/connector/1/limit", str(amps))
                await _until(lambda a=amps: abs(board.offered_current_a - a) < 0.1, 0.001)
                out.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)
            return out


async def _throughput(root: Path, count: int) -> tuple[float, int]:
    async with Mosquitto(root / "broker2") as broker:
        cfg = MqttConfig(host="127.0.0.1", port=broker.port, buffer_size=count)
        topics = Topics("bench", "CP")

        async def ignore(topic: str, payload: bytes, retained: bool) -> None:
            return None

        link = MqttLink(cfg, "bench", topics, ignore, lambda: None)
        reading = MeterReading("m", datetime.now(UTC), 123456.7, 7360.0, (32.0, 32.0, 32.0), (230.0,) * 3, 50.0)
        body = encode(payloads.meter(1, reading), "json")
        task = asyncio.create_task(link.run())
        await _until(lambda: link.connected, 0.01)
        await asyncio.sleep(0.1)
        base = link.buffer.published
        t0 = time.perf_counter()
        for _ in range(count):
            link.publish(topics.meter(1), body)
        await _until(lambda: link.buffer.published - base >= count, 0.005)
        elapsed = time.perf_counter() - t0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return elapsed, link.buffer.dropped


def main() -> None:
    changes = int(os.environ.get("BENCH_LIMITS", "20"))
    count = int(os.environ.get("BENCH_MQTT_MESSAGES", "10000"))
    with tempfile.TemporaryDirectory() as tmp:
        lat = asyncio.run(_limit_latency(Path(tmp), changes))
        elapsed, dropped = asyncio.run(_throughput(Path(tmp), count))
    lat_ms = sorted(x * 1000 for x in lat)
    p95 = lat_ms[max(0, round(0.95 * len(lat_ms)) - 1)]
    print(f"site limit -> offered current ({changes} changes): median {statistics.median(lat_ms):.1f} ms, "
          f"p95 {p95:.1f} ms, max {lat_ms[-1]:.1f} ms")
    print(f"publish throughput: {count} meter messages (QoS 1) in {elapsed:.2f} s = {count / elapsed:,.0f}/s, "
          f"dropped {dropped}")
    reading = MeterReading("m", datetime.now(UTC), 123456.7, 7360.0, (32.0, 31.9, 32.1), (230.1, 229.8, 230.4),
                           50.0)
    meter = payloads.meter(1, reading)
    print(f"meter message: {len(encode(meter, 'json'))} bytes JSON, {len(encode(meter, 'cbor'))} bytes CBOR")


if __name__ == "__main__":
    main()
