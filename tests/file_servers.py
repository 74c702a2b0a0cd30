"""Real file servers for the transfer tests, on loopback: the simulated CSMS's HTTP file server
(sim/csms/file_server.py: Range requests, PUT uploads, cut or held connections, HTTPS with an ``ssl`` context) and
vsftpd (Debian's FTP server, scripts/ensure-system-packages.sh) in the foreground with a configuration of ours:
anonymous, passive mode, downloads from the root and uploads into ``upload/``; with a certificate, explicit FTPS
(AUTH TLS required for the login and every data connection, the TLS session reused on the data connection, as
vsftpd requires by default). Run as root it chroots the anonymous user (``ftp``) into the root, as installed; run
as any other user it runs as that user (``run_as_launching_user``: no chroot, no user switch), so the tests also
run without root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sim.csms.file_server import HttpFaults, HttpFileServer, http_file_server

__all__ = ["FtpServer", "FtpUnavailable", "HttpFaults", "HttpFileServer", "free_port", "http_file_server",
           "running_vsftpd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FtpServer:
    root: Path  # files to download; readable by vsftpd's anonymous user
    uploads: Path  # root/upload: where uploads land
    port: int

    scheme: str = "ftp"

    def url(self, name: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{name}"


class FtpUnavailable(Exception):
    pass


@contextlib.contextmanager
def running_vsftpd(where: Path, tls: tuple[Path, Path] | None = None, max_rate: int = 0) -> Iterator[FtpServer]:
    """vsftpd serving ``where/root`` (made world-readable; ``upload/`` writable by the FTP user). ``tls``: (the
    server's certificate, its key) as PEM files: explicit FTPS only (``ftps://`` URLs). ``max_rate``: bytes/s per
    transfer (0: unlimited), for a download that can be caught half-way."""
    exe = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
    if not Path(exe).exists():
        raise FtpUnavailable("vsftpd is not installed (scripts/ensure-system-packages.sh installs it)")
    as_root = os.geteuid() == 0
    root = where / "root"
    uploads = root / "upload"
    uploads.mkdir(parents=True, exist_ok=True)
    for p in (where, root):
        p.chmod(0o755)
    if as_root:
        try:
            ftp_user = pwd.getpwnam("ftp")
        except KeyError:
            raise FtpUnavailable("the system has no 'ftp' user (Debian's vsftpd package creates it)") from None
        os.chown(uploads, ftp_user.pw_uid, ftp_user.pw_gid)
        who = f"secure_chroot_dir={where / 'empty'}\n"
    else:  # vsftpd cannot chroot nor switch users: it serves as we are (the root is ours anyway)
        who = "run_as_launching_user=YES\n"
    tls_conf = ""
    if tls is not None:
        cert, key = tls
        tls_conf = (f"ssl_enable=YES\nallow_anon_ssl=YES\nforce_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\n"
                    f"rsa_cert_file={cert}\nrsa_private_key_file={key}\nssl_ciphers=HIGH\nrequire_ssl_reuse=YES\n"
                    "ssl_sslv2=NO\nssl_sslv3=NO\nssl_tlsv1=YES\n")
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
{who}{tls_conf}anon_max_rate={max_rate}
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
        yield FtpServer(root, uploads, port, "ftps" if tls is not None else "ftp")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
