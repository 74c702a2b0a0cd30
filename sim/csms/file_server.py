"""The simulated CSMS's file server: firmware files to download and a place for diagnostics uploads, over HTTP on
loopback (the standard library's server, in a thread): ``GET /<name>`` serves a file of the directory, answering
``Range`` requests (206) so that a cut download resumes; ``PUT /<anything>/<name>`` stores an upload in
``uploads/``. For fault tests it can cut a body after N bytes (a number of times), hold a body after N bytes until
released (a download caught half-way, for a power cut then), or answer a status instead. With an ``ssl`` context
it serves HTTPS. ``rate_bps`` paces every GET body at that many bits per second (a charger's uplink: the figures of
bench/bench_firmware_update.py), the sender sleeping between small writes on a real TCP connection, so the client
reads as it would from a slow link and does nothing different.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class HttpFaults:
    cut_after: int | None = None  # bytes of a GET body, then the connection is closed
    cuts_left: int = 0  # how many GETs are cut (then served whole)
    status: int | None = None  # answer every GET with this status instead
    hold_after: int | None = None  # bytes of the next GET body, then the server waits for ``release`` (once)
    holding: threading.Event = field(default_factory=threading.Event)  # set once those bytes are sent
    release: threading.Event = field(default_factory=threading.Event)  # then the connection is closed
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)
    rate_bps: int | None = None  # GET bodies sent at this many bits per second (None: as fast as loopback goes)


#: What a paced body is written in: small enough that the pace is even (16 KiB at 10 Mbit/s is 13 ms).
PACE_CHUNK = 16 * 1024


def _paced_write(write: Callable[[memoryview], object], body: bytes, rate_bps: int) -> None:
    """``body`` at ``rate_bps``: each chunk is written once the link would have carried it whole, so the last byte
    arrives ``len(body) * 8 / rate_bps`` seconds after the first was due."""
    start = time.monotonic()
    view = memoryview(body)
    for offset in range(0, len(body), PACE_CHUNK):
        chunk = view[offset:offset + PACE_CHUNK]
        delay = start + (offset + len(chunk)) * 8 / rate_bps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        write(chunk)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        faults = self.server.faults
        faults.requests.append(("GET", self.path, self.headers.get("Range", "")))
        if faults.status is not None:
            self.send_error(faults.status)
            return
        path = self.server.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if faults.cut_after is not None and faults.cuts_left > 0:
            faults.cuts_left -= 1
            self.wfile.write(body[:faults.cut_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if faults.hold_after is not None:
            held, faults.hold_after = faults.hold_after, None
            self.wfile.write(body[:held])
            self.wfile.flush()
            faults.holding.set()
            faults.release.wait(60)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if faults.rate_bps:
            _paced_write(self.wfile.write, body, faults.rate_bps)
            return
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.server.faults.requests.append(("PUT", self.path, ""))
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if self.server.faults.status is not None:
            self.send_error(self.server.faults.status)
            return
        dest = self.server.uploads / os.path.basename(self.path)
        dest.write_bytes(body)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, uploads: Path, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.uploads, self.faults = root, uploads, HttpFaults()
        self.tls = tls

    def get_request(self) -> tuple[socket.socket, object]:
        """HTTPS: the handshake in the request's thread (a client that never finishes it holds no one else up)."""
        conn, addr = super().get_request()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):  # a client that refused our certificate: nothing to serve
                return
        super().finish_request(request, client_address)


@dataclass
class HttpFileServer:
    root: Path
    uploads: Path
    port: int
    faults: HttpFaults
    scheme: str = "http"

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def http_file_server(root: Path, tls: ssl.SSLContext | None = None) -> Iterator[HttpFileServer]:
    """Serves ``root`` on a free loopback port; ``tls``: HTTPS with this server context."""
    uploads = root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    server = _Server(root, uploads, tls)
    thread = threading.Thread(target=server.serve_forever, name="http-file-server", daemon=True)
    thread.start()
    try:
        yield HttpFileServer(root, uploads, server.server_address[1], server.faults,
                             "https" if tls is not None else "http")
    finally:
        server.faults.release.set()
        server.shutdown()
        server.server_close()
