"""The WebSocket link to the CSMS, kept up for as long as the agent runs (OCPP-J transport).

Version-agnostic: the OCPP version is only the WebSocket subprotocol it asks for. The link connects to
``<base URL>/<charge point identity>`` as OCPP-J prescribes, authenticates with HTTP Basic auth when a
password is configured (security profile 1/2), detects a stale link with WebSocket pings
(WebSocketPingInterval, applied to the open connection when it changes: a ping unanswered for one interval closes
the connection), and reconnects with
exponential back-off and jitter so that a fleet of chargers does not hammer a CSMS that has just come back.

The back-off is not reset by a successful handshake: a CSMS that accepts the WebSocket and closes it at once
(or refuses our BootNotification) would otherwise be hit about once a second forever. It grows across such
short connections and is reset only by a connection that the session has marked as accepted
(:meth:`OcppLink.mark_accepted`, after BootNotification) and that then stayed up for ``stable_after_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from firmware.security.authorization_key import basic_auth_header

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


@dataclass(frozen=True)
class LinkSettings:
    """What one connection attempt uses: chosen afresh for each attempt, so a new AuthorizationKey or security
    profile applies from the next connection. ``password``: the AuthorizationKey (Basic auth, profiles 1/2)."""

    base_url: str
    password: str | None = None
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    label: str = ""  # for logs, e.g. "security profile 2"
    hex_rule: bool = True  # 1.6 TC_085: a hex key stands for the bytes it encodes (2.0.1: no, sent as text)

    def __repr__(self) -> str:  # never the key
        return f"LinkSettings(base_url={self.base_url!r}, password={'***' if self.password else None}, " \
               f"tls={self.ssl_context is not None}, label={self.label!r})"


class LinkRefused(Exception):
    """The CSMS answered but would not speak our subprotocol (or refused us)."""


class OcppLink:
    """Keeps a WebSocket to the CSMS. ``run(session)`` calls ``session(connection)`` for each
    connection and returns to reconnecting when it ends: closed by either side, stale, or failed with any
    exception (logged with its traceback) — only cancellation ends ``run``."""

    def __init__(self, base_url: str, identity: str, subprotocol: str, *, password: str | None = None,
                 backoff: Backoff | None = None, ping_interval_s: float | None = 60.0,
                 open_timeout_s: float = 10.0, close_timeout_s: float = 2.0,
                 ssl_context: ssl.SSLContext | None = None, stable_after_s: float = 60.0,
                 settings: Callable[[], LinkSettings] | None = None,
                 on_attempt_failed: Callable[[BaseException], None] | None = None) -> None:
        """``stable_after_s``: how long a connection must stay up after :meth:`mark_accepted` before its end
        resets the back-off. ``settings``: asked before each attempt (default: ``base_url``, ``password`` and
        ``ssl_context`` as given); ``on_attempt_failed(exc)``: told of each failed attempt (the adapter turns
        a TLS failure into a security event)."""
        self.identity = identity
        self.subprotocol = subprotocol
        fixed = LinkSettings(base_url, password, ssl_context)
        self._settings = settings or (lambda: fixed)
        self.url = charge_point_url(base_url, identity)
        self._on_attempt_failed = on_attempt_failed
        self.backoff = backoff or Backoff()
        self.ping_interval_s = ping_interval_s
        self.open_timeout_s = open_timeout_s
        # How long a close waits for the peer's close frame. A stale link (pings unanswered, a CALL unanswered)
        # will never send one: waiting websockets' default 10 s would only delay the reconnect.
        self.close_timeout_s = close_timeout_s
        self.stable_after_s = stable_after_s
        self._accepted_at: float | None = None  # loop time the current connection was accepted
        self._conn: ClientConnection | None = None  # the connection open now
        self._reconnect_now = False
        self.connected = asyncio.Event()
        self.connections = 0  # successful connections so far
        self.failures = 0  # failed connection attempts so far
        self.session_failures = 0  # sessions that ended with an exception of ours (each logged with its traceback)

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

    def mark_accepted(self) -> None:
        """The session on the current connection is accepted by the CSMS (BootNotification Accepted, or a
        reconnect after one): from now on, staying up ``stable_after_s`` makes the connection count as stable."""
        if self._accepted_at is None:
            self._accepted_at = asyncio.get_running_loop().time()

    def _was_stable(self) -> bool:
        accepted = self._accepted_at
        return accepted is not None and asyncio.get_running_loop().time() - accepted >= self.stable_after_s

    async def reconnect(self) -> None:
        """Close the current connection and connect again at once, with fresh :class:`LinkSettings` (a new
        AuthorizationKey or security profile: TC_073, TC_083)."""
        self._reconnect_now = True
        conn = self._conn
        if conn is not None:
            await conn.close(1000, "reconnecting with new credentials")

    async def _open(self) -> ClientConnection:
        settings = self._settings()
        self.url = charge_point_url(settings.base_url, self.identity)
        headers = {}
        if settings.password is not None:
            headers["Authorization"] = basic_auth_header(self.identity, settings.password,
                                                          hex_rule=settings.hex_rule)
        conn = await connect(
            self.url, subprotocols=[self.subprotocol],  # type: ignore[list-item]
            additional_headers=headers, open_timeout=self.open_timeout_s,
            ping_interval=self.ping_interval_s, ping_timeout=self.ping_interval_s, close_timeout=self.close_timeout_s,
            ssl=settings.ssl_context if self.url.startswith("wss://") else None, max_size=MAX_WEBSOCKET_FRAME,
            compression=None,
        )
        if conn.subprotocol != self.subprotocol:
            await conn.close()
            raise LinkRefused(f"CSMS did not agree to subprotocol {self.subprotocol} (got {conn.subprotocol})")
        return conn

    def peer_certificate(self) -> bytes | None:
        """The CSMS's certificate (DER) on the current connection, if it is over TLS."""
        conn = self._conn
        sslobj = conn.transport.get_extra_info("ssl_object") if conn is not None else None
        return sslobj.getpeercert(binary_form=True) if sslobj is not None else None

    async def open_connection(self) -> ClientConnection:
        """One connection attempt with the current settings, without the reconnect loop (self-test, benchmarks).
        Raises what a failed attempt raises in :meth:`run`."""
        return await self._open()

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
                if self._on_attempt_failed is not None:
                    self._on_attempt_failed(exc)
                delay = self.backoff.next_delay()
                log.warning("CSMS connection failed", extra={"url": self.url, "error": str(exc) or type(exc).__name__,
                                                             "retry_in_s": round(delay, 2)})
                await asyncio.sleep(delay)
                continue
            self.connections += 1
            self._accepted_at = None
            self._reconnect_now = False  # asked for before this connection: it already has the new settings
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
            stable = self._was_stable()
            self._accepted_at = None
            if stable:
                self.backoff.reset()
            if self._reconnect_now:  # asked for (new credentials): no back-off, this is not the CSMS failing
                self._reconnect_now = False
                log.info("reconnecting to CSMS with new settings")
                continue
            delay = self.backoff.next_delay()
            log.info("reconnecting to CSMS", extra={"retry_in_s": round(delay, 2), "after_stable_connection": stable})
            await asyncio.sleep(delay)
