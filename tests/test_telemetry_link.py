"""The broker link on a real mosquitto: commands in, buffering while the broker is away (oldest dropped first,
counted), reconnect, "offline" on a clean stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

from firmware.config import MqttConfig
from firmware.telemetry.link import MqttLink
from firmware.telemetry.topics import Topics
from tests.mqtt_broker import Mosquitto, Subscriber
from tests.station import WAIT_S

TOPICS = Topics("t", "CP")


async def _until(condition: object, timeout_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_buffer_while_the_broker_is_away_keeps_the_newest_in_order_and_counts_the_rest(tmp_path: Path) -> None:
    commands: list[tuple[str, bytes, bool]] = []
    connected = 0

    async def on_command(topic: str, payload: bytes, retained: bool) -> None:
        commands.append((topic, payload, retained))

    def on_connected() -> None:
        nonlocal connected
        connected += 1

    async with Mosquitto(tmp_path / "broker") as broker:
        cfg = MqttConfig(host="127.0.0.1", port=broker.port, buffer_size=3, reconnect_min_s=0.1,
                         reconnect_max_s=0.2)
        link = MqttLink(cfg, "link-test", TOPICS, on_command, on_connected)
        task = asyncio.create_task(link.run())
        try:
            await _until(lambda: connected == 1)
            async with Subscriber(broker, "t/#") as sub:
                link.publish("t/CP/x", b"live")
                await sub.wait_for("t/CP/x", lambda m: m.payload == b"live")
                await sub.publish(TOPICS.connector_limit_command(1), b"10")
                await _until(lambda: commands == [(TOPICS.connector_limit_command(1), b"10", False)])
            await broker.stop()
            await _until(lambda: not link.connected)
            for i in range(10):  # retained, one topic each: what reached the broker can be read back afterwards
                link.publish(f"t/CP/n/{i}", str(i).encode(), retain=True)
            assert link.buffer.stats().queued == 3 and link.buffer.dropped == 7
            await broker.start()
            await _until(lambda: connected == 2 and len(link.buffer) == 0)
            async with Subscriber(broker, "t/CP/n/#") as sub:
                await _until(lambda: len(sub.seen) >= 3)  # the retained ones, in no particular order
                await asyncio.sleep(0.2)  # and no more
                assert sorted(m.payload for m in sub.seen) == [b"7", b"8", b"9"]  # the oldest 7 were dropped
                assert link.connects == 2
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with Subscriber(broker, TOPICS.availability) as late:  # a clean stop said offline
            assert (await late.wait_for(TOPICS.availability)).payload == b"offline"
