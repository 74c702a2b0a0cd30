"""TLS handshakes a charge point must refuse, for the security tests of both OCPP versions: a server that speaks
TLS 1.1 at most, and one that shares no cipher suite with us. OpenSSL 3 will not serve either (TLS 1.1 is off at
its default security level; a server refuses a ClientHello without a common suite with an alert Python's asyncio
drops), so each is the server's first answer written here byte by byte.

:class:`TlsFaultFront` is a loopback TCP front for a CSMS: while ``reply`` is set it answers each ClientHello with
it and closes (a CSMS the charge point must refuse); otherwise it forwards the connection byte for byte to the
real CSMS behind it, TLS and all. The unit tests (tests/test_security_tls.py) run it without a CSMS behind; the
end-to-end tests put it in front of the simulated CSMS and point the agent at it.
"""

from __future__ import annotations

import asyncio
import contextlib


def tls11_server_hello() -> bytes:
    """What a server that speaks TLS 1.1 at most answers to our ClientHello: a ServerHello choosing TLS 1.1
    (RFC 4346 7.4.1.3)."""
    body = bytes([0x03, 0x02]) + bytes(range(32)) + b"\x00" + bytes([0xC0, 0x09]) + b"\x00"  # v1.1, random, no
    handshake = b"\x02" + len(body).to_bytes(3, "big") + body  # session id, ECDHE-ECDSA-AES128-SHA, null
    return bytes([0x16, 0x03, 0x02]) + len(handshake).to_bytes(2, "big") + handshake


#: A fatal handshake_failure alert in a TLS 1.2 record: what a TLS 1.2 server sends when it shares no cipher suite
#: with the ClientHello (RFC 5246 7.2.2, 7.4.1.3).
NO_SHARED_CIPHER_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])


class TlsFaultFront:
    """``reply`` set: each connection's ClientHello is answered with it (``refused`` counts them); ``None``: the
    connection goes through to ``target`` (host, port). ``forwarded`` counts those."""

    def __init__(self, target: tuple[str, int] | None = None, reply: bytes | None = None) -> None:
        self.target = target
        self.reply = reply
        self.refused = 0
        self.forwarded = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> TlsFaultFront:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, csms_url: str) -> str:
        """``csms_url`` with this front's port: where a charge point connects to reach the CSMS through it."""
        scheme, _, rest = csms_url.partition("://")
        host, _, path = rest.partition("/")
        return f"{scheme}://{host.rpartition(':')[0]}:{self.port}/{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            reply = self.reply
            if reply is not None or self.target is None:
                record = await reader.read(5)  # the ClientHello's record header
                if record[:1] == b"\x16" and reply is not None:
                    self.refused += 1
                    writer.write(reply)
                    await writer.drain()
                await reader.read(1024)  # the client's alert, or its close
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            self.forwarded += 1
            pumps = [asyncio.create_task(self._pump(reader, up_writer)),
                     asyncio.create_task(self._pump(up_reader, writer))]
            self._tasks.update(pumps)
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for p in pumps:
                p.cancel()
            self._tasks.difference_update(pumps)
            up_writer.close()
            self._writers.discard(up_writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
