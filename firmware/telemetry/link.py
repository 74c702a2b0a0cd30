"""The connection to the site's broker: connect, last will, reconnect with back-off, drain the buffer.

Nothing here can stop charging: a broker that is down, refuses us or hangs only delays telemetry.
Publishes go through :class:`~firmware.telemetry.buffer.PublishBuffer` (bounded, oldest dropped
first); after each (re)connect the availability goes ``online`` (retained), the command topics are
subscribed, what queued while away is sent in order, then ``on_connected`` republishes the current
state (retained statuses may have been lost with a broker restart without persistence).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from firmware.config import MqttConfig
from firmware.telemetry.buffer import Outgoing, PublishBuffer
from firmware.telemetry.topics import Topics

log = logging.getLogger(__name__)

ONLINE, OFFLINE = b"online", b"offline"
#: How long one publish may wait for the broker's acknowledgement before the link is considered dead.
PUBLISH_TIMEOUT_S = 5.0


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """mqtts: verify the broker against ``ca_file`` (or the system's CAs), hostname included; TLS 1.2 or later;
    with ``client_cert``/``client_key`` the charger proves itself with its certificate (mutual TLS)."""
    if not config.tls:
        return None
    ctx = ssl.create_default_context(cafile=config.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.client_cert is not None:
        ctx.load_cert_chain(config.client_cert, config.client_key)
    return ctx


class MqttLink:
    def __init__(self, config: MqttConfig, client_id: str, topics: Topics,
                 on_command: Callable[[str, bytes, bool], Awaitable[None]],
                 on_connected: Callable[[], None]) -> None:
        self.config = config
        self.client_id = client_id
        self.topics = topics
        self.buffer = PublishBuffer(config.buffer_size)
        self.connected = False
        self.connects = 0
        self._on_command = on_command
        self._on_connected = on_connected
        self._wake = asyncio.Event()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1) -> None:
        """Queue a publish; never blocks, never fails (the buffer drops its oldest when full)."""
        self.buffer.put(Outgoing(topic, payload, retain, qos))
        self._wake.set()

    def _client(self) -> aiomqtt.Client:
        c = self.config
        return aiomqtt.Client(
            c.host, c.port, username=c.username, password=c.password, identifier=self.client_id,
            will=aiomqtt.Will(self.topics.availability, OFFLINE, qos=1, retain=True),
            keepalive=c.keepalive_s, tls_context=tls_context(c), timeout=PUBLISH_TIMEOUT_S,
            clean_session=True)

    async def run(self) -> None:
        delay = self.config.reconnect_min_s
        while True:
            try:
                async with self._client() as client:
                    self.connected = True
                    self.connects += 1
                    delay = self.config.reconnect_min_s
                    log.info("MQTT broker connected", extra={"host": self.config.host, "port": self.config.port,
                                                             "client_id": self.client_id})
                    try:
                        await client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
                        await client.subscribe(self.topics.command_filter, qos=1)
                        await self._serve(client)
                    except asyncio.CancelledError:
                        # a clean stop: say so (a DISCONNECT does not fire the last will)
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(client.publish(self.topics.availability, OFFLINE, qos=1,
                                                                  retain=True), 1.0)
                        raise
            except (aiomqtt.MqttError, OSError, ValueError) as exc:  # OSError, ValueError: TLS set-up, sockets
                log.warning("MQTT broker unreachable, retrying", extra={
                    "host": self.config.host, "port": self.config.port, "error": str(exc), "retry_in_s": delay,
                    "queued": len(self.buffer), "dropped": self.buffer.dropped})
            except Exception:  # never let telemetry die for good: it is retried like a lost link
                log.exception("MQTT link failed, retrying", extra={"retry_in_s": delay})
            finally:
                self.connected = False
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.config.reconnect_max_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Send and receive until the link breaks (the first MqttError of either ends both)."""
        tasks = [asyncio.create_task(self._drain(client), name="mqtt-drain"),
                 asyncio.create_task(self._receive(client), name="mqtt-receive")]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the MqttError that ended it
            raise aiomqtt.MqttError("MQTT message stream ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, client: aiomqtt.Client) -> None:
        first = True
        while True:
            message = self.buffer.head()
            if message is None:
                if first:  # the backlog is out: now the current state, newer than anything queued
                    first = False
                    self._on_connected()
                    continue
                self._wake.clear()
                await self._wake.wait()
                continue
            await client.publish(message.topic, message.payload, qos=message.qos, retain=message.retain,
                                 timeout=PUBLISH_TIMEOUT_S)
            self.buffer.done(message)

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            data = payload if isinstance(payload, bytes) else str(payload).encode() if payload is not None else b""
            try:
                await self._on_command(str(message.topic), data, bool(message.retain))
            except Exception:  # a bug in handling one command must not take the link down
                log.exception("MQTT command handling failed", extra={"topic": str(message.topic)})
