"""Real file servers for the transfer tests: an HTTP server (the standard library's, in a thread) and vsftpd (Debian's
FTP server, scripts/ensure-system-packages.sh), both on loopback, each serving one directory and taking uploads.

The HTTP server answers ``Range`` requests (206) and ``PUT`` uploads, and can be told to misbehave: cut the
connection after N bytes of a body (once or always), answer a status instead of the file. vsftpd runs in the
foreground with a configuration of ours: anonymous, passive mode, downloads from the root and uploads into
``upload/``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


@dataclass
class FtpServer:
    root: Path  # files to download; readable by vsftpd's anonymous user
    uploads: Path  # root/upload: where uploads land
    port: int

    def url(self, name: str) -> str:
        return f"ftp://127.0.0.1:{self.port}/{name}"


class FtpUnavailable(Exception):
    pass


@contextlib.contextmanager
def running_vsftpd(where: Path) -> Iterator[FtpServer]:
    """vsftpd serving ``where/root`` (made world-readable; ``upload/`` writable by the FTP user)."""
    exe = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not Path(exe).exists():
        raise FtpUnavailable("vsftpd is not installed (scripts/ensure-system-packages.sh installs it)")
    try:
        ftp_user = pwd.getpwnam("ftp")
    except KeyError:
        raise FtpUnavailable("the system has no 'ftp' user (Debian's vsftpd package creates it)") from None
    root = where / "root"
    uploads = root / "upload"
    uploads.mkdir(parents=True, exist_ok=True)
    for p in (where, root):
        p.chmod(0o755)
    os.chown(uploads, ftp_user.pw_uid, ftp_user.pw_gid)
    empty = where / "empty"
    empty.mkdir(exist_ok=True)
    empty.chmod(0o555)
    port, pasv = free_port(), free_port()
    config = where / "vsftpd.conf"
    config.write_text(f"""listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root={root}
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_other_write_enable=YES
anon_umask=022
allow_writeable_chroot=YES
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasv}
pasv_max_port={pasv + 20 if pasv < 65000 else pasv}
secure_chroot_dir={empty}
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
xferlog_enable=NO
dual_log_enable=NO
syslog_enable=NO
vsftpd_log_file={where / "vsftpd.log"}
""")
    config.chmod(0o600)
    proc = subprocess.Popen([exe, str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise FtpUnavailable(f"vsftpd exited with {proc.returncode}: {out.strip()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"220"):
                    break
            if time.monotonic() > deadline:
                raise FtpUnavailable("vsftpd did not answer within 10 s")
            time.sleep(0.05)
        yield FtpServer(root, uploads, port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
