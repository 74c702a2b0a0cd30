"""The WebSocket link to the CSMS, kept up for as long as the agent runs (OCPP-J transport).

Version-agnostic: the OCPP version is only the WebSocket subprotocol it asks for. The link connects to
``<base URL>/<charge point identity>`` as OCPP-J prescribes, authenticates with HTTP Basic auth when a
password is configured (security profile 1/2), detects a stale link with WebSocket pings
(WebSocketPingInterval, applied to the open connection when it changes: a ping unanswered for one interval closes
the connection), and reconnects with
exponential back-off and jitter so that a fleet of chargers does not hammer a CSMS that has just come back.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

log = logging.getLogger(__name__)


#: WebSocket messages above this close the connection (1009) before they are buffered whole; OCPP frames
#: between ``firmware.ocpp.rpc.MAX_FRAME_BYTES`` and this get a CALLERROR instead.
MAX_WEBSOCKET_FRAME = 4 << 20


@dataclass
class Backoff:
    """Exponential back-off with "equal jitter": the n-th delay lies in [d/2, d], d = initial·factor^n ≤ max."""

    initial_s: float = 1.0
    maximum_s: float = 300.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0


def charge_point_url(base_url: str, identity: str) -> str:
    """OCPP-J: the charge point's identity is the last path segment of the URL it connects to."""
    return f"{base_url.rstrip('/')}/{quote(identity, safe='')}"


def basic_auth_header(identity: str, password: str) -> str:
    token = base64.b64encode(f"{identity}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


class LinkRefused(Exception):
    """The CSMS answered but would not speak our subprotocol (or refused us)."""


class OcppLink:
    """Keeps a WebSocket to the CSMS. ``run(session)`` calls ``session(connection)`` for each
    connection and returns to reconnecting when it ends: closed by either side, stale, or failed with any
    exception (logged with its traceback) — only cancellation ends ``run``."""

    def __init__(self, base_url: str, identity: str, subprotocol: str, *, password: str | None = None,
                 backoff: Backoff | None = None, ping_interval_s: float | None = 60.0,
                 open_timeout_s: float = 10.0, close_timeout_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.url = charge_point_url(base_url, identity)
        self.identity = identity
        self.subprotocol = subprotocol
        self._password = password
        self.backoff = backoff or Backoff()
        self.ping_interval_s = ping_interval_s
        self.open_timeout_s = open_timeout_s
        # How long a close waits for the peer's close frame. A stale link (pings unanswered, a CALL unanswered)
        # will never send one: waiting websockets' default 10 s would only delay the reconnect.
        self.close_timeout_s = close_timeout_s
        self.ssl_context = ssl_context
        self.connected = asyncio.Event()
        self.connections = 0  # successful connections so far
        self.failures = 0  # failed connection attempts so far
        self.session_failures = 0  # sessions that ended with an exception of ours (each logged with its traceback)
        self._conn: ClientConnection | None = None  # the connection open now

    def set_ping_interval(self, seconds: float) -> None:
        """WebSocketPingInterval changed (0 disables pings): it applies to the connection open now, whose keep-alive
        starts over with the new interval (a ping unanswered for one interval still closes it), and to every next
        one — a key that took effect only after a reconnect would have to answer RebootRequired."""
        self.ping_interval_s = seconds or None
        conn = self._conn
        if conn is None:
            return
        conn.ping_interval = conn.ping_timeout = self.ping_interval_s
        if conn.keepalive_task is not None:
            conn.keepalive_task.cancel()
            conn.keepalive_task = None
        if conn.state is State.OPEN:
            conn.start_keepalive()

    async def _open(self) -> ClientConnection:
        headers = {}
        if self._password is not None:
            headers["Authorization"] = basic_auth_header(self.identity, self._password)
        conn = await connect(
            self.url, subprotocols=[self.subprotocol],  # type: ignore[list-item]
            additional_headers=headers, open_timeout=self.open_timeout_s,
            ping_interval=self.ping_interval_s, ping_timeout=self.ping_interval_s, close_timeout=self.close_timeout_s,
            ssl=self.ssl_context, max_size=MAX_WEBSOCKET_FRAME, compression=None,
        )
        if conn.subprotocol != self.subprotocol:
            await conn.close()
            raise LinkRefused(f"CSMS did not agree to subprotocol {self.subprotocol} (got {conn.subprotocol})")
        return conn

    async def probe(self) -> str:
        """Open one connection and close it again (the self-test); returns the agreed subprotocol.
        Raises what a failed attempt raises in :meth:`run` (OSError, TimeoutError, WebSocketException,
        LinkRefused)."""
        conn = await self._open()
        agreed = conn.subprotocol or ""
        await conn.close()
        return agreed

    async def run(self, session: Callable[[ClientConnection], Awaitable[None]]) -> None:
        while True:
            try:
                conn = await self._open()
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException, LinkRefused) as exc:
                self.failures += 1
                delay = self.backoff.next_delay()
                log.warning("CSMS connection failed", extra={"url": self.url, "error": str(exc) or type(exc).__name__,
                                                             "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            self.connections += 1
            self.backoff.reset()
            self._conn = conn
            self.connected.set()
            log.info("CSMS connected", extra={"url": self.url, "subprotocol": conn.subprotocol})
            try:
                await session(conn)
            except websockets.exceptions.ConnectionClosed as exc:
                log.warning("CSMS connection closed", extra={"code": exc.rcvd.code if exc.rcvd else None,
                                                             "reason": exc.rcvd.reason if exc.rcvd else ""})
            except Exception:  # a fault of ours in the session: never a reason to stay off the CSMS
                self.session_failures += 1
                log.exception("OCPP session failed; reconnecting", extra={"url": self.url})
            finally:
                self.connected.clear()
                self._conn = None
                await conn.close()
            delay = self.backoff.next_delay()
            log.info("reconnecting to CSMS", extra={"retry_in_s": round(delay, 2)})
            await asyncio.sleep(delay)
