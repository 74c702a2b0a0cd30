"""The CSMS link: URL, Basic auth, subprotocol check, back-off and reconnect against a real server."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from firmware.ocpp.link import Backoff, LinkSettings, OcppLink, charge_point_url
from firmware.security.authorization_key import basic_auth_header


def test_backoff_grows_with_jitter_within_bounds() -> None:
    b = Backoff(initial_s=1, maximum_s=30, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    ceilings = [min(30, 2**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays}) == 10  # jittered, not lock-step
    b.reset()
    assert b.next_delay() <= 1


def test_url_and_auth_header() -> None:
    assert charge_point_url("ws://csms:9000/ocpp/", "CP 1/A") == "ws://csms:9000/ocpp/CP%201%2FA"
    assert basic_auth_header("CP1", "secret") == "Basic Q1AxOnNlY3JldA=="


async def test_reconnects_with_backoff_and_sends_auth() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(conn: ServerConnection) -> None:
        assert conn.request is not None
        seen.append({"path": conn.request.path, "auth": conn.request.headers.get("Authorization"),
                     "subprotocol": conn.subprotocol})
        await conn.close()  # drop every connection at once: the client must come back

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        link = OcppLink(f"ws://127.0.0.1:{port}/ocpp", "CP1", "ocpp1.6", password="pw",
                        backoff=Backoff(initial_s=0.05, maximum_s=0.1))
        sessions = 0

        async def session(conn: Any) -> None:
            nonlocal sessions
            sessions += 1
            await conn.wait_closed()

        task = asyncio.create_task(link.run(session))
        for _ in range(100):
            if sessions >= 3:
                break
            await asyncio.sleep(0.05)
        task.cancel()
    assert sessions >= 3 and link.connections >= 3
    assert seen[0] == {"path": "/ocpp/CP1", "auth": basic_auth_header("CP1", "pw"), "subprotocol": "ocpp1.6"}


async def test_server_down_then_up_and_subprotocol_refusal() -> None:
    link = OcppLink("ws://127.0.0.1:1/ocpp", "CP1", "ocpp1.6", backoff=Backoff(initial_s=0.01, maximum_s=0.02))
    task = asyncio.create_task(link.run(lambda conn: asyncio.sleep(0)))
    await asyncio.sleep(0.2)
    task.cancel()
    assert link.failures >= 3 and link.connections == 0

    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:  # type: ignore[list-item]
        port = server.sockets[0].getsockname()[1]
        link = OcppLink(f"ws://127.0.0.1:{port}", "CP1", "ocpp1.6", backoff=Backoff(initial_s=0.01, maximum_s=0.02))
        task = asyncio.create_task(link.run(lambda conn: asyncio.sleep(0)))
        await asyncio.sleep(0.2)
        task.cancel()
    assert link.connections == 0 and link.failures >= 2


async def _connections_until(count: int, handler_after: Any, link: OcppLink, session: Any,
                             server_url: dict[str, str]) -> list[float]:
    """Run ``link`` against a real server (its URL put in ``server_url["url"]``); returns the loop time of each
    of the first ``count`` connections. ``handler_after(index, conn)`` decides what the server does with
    connection ``index`` once accepted."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    enough = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        times.append(loop.time())
        if len(times) >= count:
            enough.set()
        await handler_after(len(times) - 1, conn)

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        server_url["url"] = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        task = asyncio.create_task(link.run(session))
        try:
            await asyncio.wait_for(enough.wait(), 20)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return times


async def test_backoff_grows_across_connections_the_csms_closes_at_once() -> None:
    """A CSMS that accepts the WebSocket and closes it at once sees attempts spaced by the growing back-off
    (it used to be reset by every handshake: about one connection a second, forever)."""
    server: dict[str, str] = {}
    link = OcppLink("ws://unused", "CP1", "ocpp1.6", settings=lambda: LinkSettings(server["url"]),
                    backoff=Backoff(initial_s=0.04, maximum_s=10, rng=random.Random(5)))
    twin = Backoff(initial_s=0.04, maximum_s=10, rng=random.Random(5))  # the same draws, to know each delay

    async def close_at_once(index: int, conn: ServerConnection) -> None:
        await conn.close()

    async def session(conn: Any) -> None:
        link.mark_accepted()  # even a session the CSMS accepted does not count until it has stayed up
        await conn.wait_closed()

    times = await _connections_until(6, close_at_once, link, session, server)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    expected = [twin.next_delay() for _ in gaps]
    assert all(g >= e - 0.005 for g, e in zip(gaps, expected, strict=True)), (gaps, expected)
    assert gaps[-1] >= 0.04 * 2**4 / 2  # the fifth delay is at least half of 16 times the first
    assert link.backoff.attempts == 5 and link.connections >= 5


async def test_backoff_resets_only_after_a_connection_stayed_up() -> None:
    server: dict[str, str] = {}
    link = OcppLink("ws://unused", "CP1", "ocpp1.6", backoff=Backoff(initial_s=0.02, maximum_s=10),
                    stable_after_s=0.2, settings=lambda: LinkSettings(server["url"]))
    accepted = asyncio.Event()
    attempts_at_connect: list[int] = []

    async def server_side(index: int, conn: ServerConnection) -> None:
        attempts_at_connect.append(link.backoff.attempts)
        if index == 3:  # stays up: the session is accepted, then the connection lasts longer than stable_after_s
            await accepted.wait()
            await asyncio.sleep(0.3)
        await conn.close()

    async def session(conn: Any) -> None:
        link.mark_accepted()  # every session is accepted; only the one that stays up counts as stable
        accepted.set()
        await conn.wait_closed()

    await _connections_until(5, server_side, link, session, server)
    # attempts grow across the short connections (0, 1, 2, 3) and are reset by the one that stayed up
    assert attempts_at_connect == [0, 1, 2, 3, 1]
