"""The simulated CSMS's file server: firmware files to download and a place for diagnostics uploads, over HTTP on
loopback (the standard library's server, in a thread): ``GET /<name>`` serves a file of the directory, answering
``Range`` requests (206) so that a cut download resumes; ``PUT /<anything>/<name>`` stores an upload in
``uploads/``. For fault tests it can cut a body after N bytes (a number of times) or answer a status instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class HttpFaults:
    cut_after: int | None = None  # bytes of a GET body, then the connection is closed
    cuts_left: int = 0  # how many GETs are cut (then served whole)
    status: int | None = None  # answer every GET with this status instead
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header)


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

    def __init__(self, root: Path, uploads: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root, self.uploads, self.faults = root, uploads, HttpFaults()


@dataclass
class HttpFileServer:
    root: Path
    uploads: Path
    port: int
    faults: HttpFaults

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


@contextlib.contextmanager
def http_file_server(root: Path) -> Iterator[HttpFileServer]:
    uploads = root / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    server = _Server(root, uploads)
    thread = threading.Thread(target=server.serve_forever, name="http-file-server", daemon=True)
    thread.start()
    try:
        yield HttpFileServer(root, uploads, server.server_address[1], server.faults)
    finally:
        server.shutdown()
        server.server_close()
