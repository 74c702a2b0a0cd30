"""A loopback TCP proxy for link-failure tests: ``blackhole()`` makes the connections open now swallow every
byte in both directions without closing them — a link that died silently (a cut cable, a NAT that forgot
the flow), which only a keep-alive can notice. New connections are forwarded normally."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Pair:
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    blackholed: bool = False


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._pairs: list[_Pair] = []
        self.port = 0

    @property
    def connections(self) -> int:
        return len(self._pairs)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        for pair in self._pairs:
            pair.blackholed = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pair = _Pair(writers=[writer, up_writer])
        self._pairs.append(pair)
        pair.tasks = [asyncio.create_task(self._pump(reader, up_writer, pair)),
                      asyncio.create_task(self._pump(up_reader, writer, pair))]

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, pair: _Pair) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                if not pair.blackholed:
                    dst.write(data)
                    await dst.drain()
        if not pair.blackholed:  # an orderly close passes through; a black hole never closes anything
            with contextlib.suppress(ConnectionError, RuntimeError):
                dst.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in self._pairs:
            for task in pair.tasks:
                task.cancel()
            for w in pair.writers:
                w.close()
        await asyncio.gather(*(t for p in self._pairs for t in p.tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
