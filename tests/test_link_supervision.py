"""Connection supervision: a CSMS link that goes silent (no FIN, no RST: a black hole in the path) is noticed
through WebSocketPingInterval and replaced by a new connection; a reconnect is not a reboot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from firmware.ocpp.link import Backoff, OcppLink
from tests.station import CP_ID, Station
from tests.tcp_proxy import BlackholeProxy

CARD = "04A1B2C3"


async def test_silent_link_is_detected_by_pings_and_replaced() -> None:
    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        proxy = BlackholeProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        await proxy.start()
        link = OcppLink(f"ws://127.0.0.1:{proxy.port}/ocpp", "CP1", "ocpp1.6", ping_interval_s=0.2,
                        close_timeout_s=0.2, backoff=Backoff(initial_s=0.05, maximum_s=0.1))
        ended: list[float] = []

        async def session(conn: Any) -> None:
            try:
                await conn.wait_closed()
            finally:
                ended.append(asyncio.get_running_loop().time())

        task = asyncio.create_task(link.run(session))
        try:
            await asyncio.wait_for(link.connected.wait(), 5)
            await asyncio.sleep(0.5)  # pings answered meanwhile: the healthy link stays
            assert link.connections == 1 and not ended
            cut = asyncio.get_running_loop().time()
            proxy.blackhole()
            link.connected.clear()
            await asyncio.wait_for(link.connected.wait(), 5)  # set again by the next connection
            assert link.connections == 2
            # noticed within ping interval + ping timeout + close timeout, not after a TCP timeout of minutes
            assert ended and ended[0] - cut < 1.0
            assert proxy.connections == 2
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await proxy.close()


async def test_a_changed_ping_interval_applies_to_the_open_connection() -> None:
    """WebSocketPingInterval takes effect at once (the key never answers RebootRequired): pings off on a connection,
    switched on while it is open; a black hole is then noticed within the new interval, not never."""
    async def handler(conn: ServerConnection) -> None:
        await conn.wait_closed()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:  # type: ignore[list-item]
        proxy = BlackholeProxy("127.0.0.1", server.sockets[0].getsockname()[1])
        await proxy.start()
        link = OcppLink(f"ws://127.0.0.1:{proxy.port}/ocpp", "CP1", "ocpp1.6", ping_interval_s=None,
                        close_timeout_s=0.2, backoff=Backoff(initial_s=0.05, maximum_s=0.1))
        ended: list[float] = []

        async def session(conn: Any) -> None:
            try:
                await conn.wait_closed()
            finally:
                ended.append(asyncio.get_running_loop().time())

        task = asyncio.create_task(link.run(session))
        try:
            await asyncio.wait_for(link.connected.wait(), 5)
            proxy.blackhole()
            await asyncio.sleep(0.8)
            assert not ended  # no pings: nothing notices the dead link
            changed = asyncio.get_running_loop().time()
            link.set_ping_interval(0.2)  # the key changed: on this very connection
            link.connected.clear()
            await asyncio.wait_for(link.connected.wait(), 5)  # a new connection replaced the dead one
            assert ended and ended[0] - changed < 1.5 and link.connections == 2
            link.set_ping_interval(0)  # off again, and no harm without a ping task
            assert link.ping_interval_s is None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await proxy.close()


async def test_agent_reconnects_over_a_silent_link_without_rebooting(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1, presets={"WebSocketPingInterval": 1}) as s:
        proxy = BlackholeProxy("127.0.0.1", s.csms.port)
        await proxy.start()
        text = s.config_path.read_text()
        s.config_path.write_text(text.replace(s.csms.url, f"ws://127.0.0.1:{proxy.port}/ocpp"))
        try:
            await s.start_agent()
            tx_id = await s.start_session(1, CARD)
            connections = s.csms.state(CP_ID).connection_count
            mark = s.mark()
            proxy.blackhole()
            await s.tap(CARD)  # the stop happens while the link is dead: it is queued
            await s.wait_until(lambda: s.csms.state(CP_ID).connection_count > connections, 15, "a new connection")
            stop = await s.wait_call("StopTransaction", since=mark, timeout_s=10)
            assert stop.payload["transactionId"] == tx_id
            await s.wait_status(1, "Finishing", since=mark)
            assert not s.calls("BootNotification", mark)  # a new connection, not a reboot
            assert s.csms.state(CP_ID).transactions[tx_id].stop_count == 1
        finally:
            await s.stop_agent()
            await proxy.close()
