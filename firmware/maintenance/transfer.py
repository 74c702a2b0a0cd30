"""File transfers for firmware updates and diagnostics: download with resume, upload; HTTP(S) and FTP(S).

Standard library only (``http.client``, ``ftplib``): what a field library has to do here is small, and the
controller's Python has both. Blocking functions, run by the callers in a thread (``asyncio.to_thread``).

* **Download** into ``dest`` (a ``.part`` file the caller keeps across attempts and restarts): an existing part
  is resumed — HTTP ``Range: bytes=N-`` (a server that answers 200 instead of 206 sends the whole file, which
  then starts over), FTP ``REST N``. Every chunk is flushed; the file is fsynced at the end. A size limit stops a
  hostile or mistaken server from filling the disk. The file's SHA-256 is computed on the way, over exactly the
  bytes written (a resumed part's bytes read back once first): :attr:`Downloaded.sha256`, so that the file
  signature and the bundle's verification need no extra pass over the file for it.
* **Upload** of one file: HTTP(S) ``PUT`` to the URL, FTP(S) ``STOR`` into the URL's path (the file name appended
  when the path ends in /). Neither OCPP 1.6 (GetDiagnostics), its security whitepaper (GetLog: FTP(S)
  recommended, for resuming) nor 2.0.1 (N01) names an HTTP method; PUT of the bare file is what EVerest's
  uploader sends (``curl -T``) and what a plain web server takes. Not multipart/form-data POST.
* FTP is passive mode (the charger is behind NAT); ``ftps://`` is explicit TLS (AUTH TLS, protected data
  channel resuming the control connection's TLS session). The URL's path is relative to the login directory
  (RFC 1738). Credentials come from the URL (``ftp://user:pass@host/path``), anonymous otherwise; they are never
  logged (:func:`redact`).
* TLS servers are checked against the CAs the caller gives (:func:`tls_context`: ``[firmware] transfer_ca``), else
  the system's; a certificate that is not trusted fails at once, saying so (not retried).
"""

from __future__ import annotations

import ftplib
import hashlib
import http.client
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit, urlunsplit

CHUNK = 64 * 1024
SCHEMES = ("http", "https", "ftp", "ftps")
#: What SupportedFileTransferProtocols reports (OCPP 2.0.1 names; 1.6 has no such key but the Diagnostics show it).
PROTOCOLS = ("HTTP", "HTTPS", "FTP", "FTPS")


#: Why a server refused an upload, when it said so (:attr:`TransferError.refusal`): the log statuses of OCPP.
PERMISSION_DENIED = "PermissionDenied"  # HTTP 401/403, FTP 530/532/550/553
NOT_SUPPORTED = "NotSupportedOperation"  # HTTP 405/501, FTP 502/504
BAD_MESSAGE = "BadMessage"  # HTTP 400, FTP 500/501
_HTTP_REFUSALS = {401: PERMISSION_DENIED, 403: PERMISSION_DENIED, 405: NOT_SUPPORTED, 501: NOT_SUPPORTED,
                  400: BAD_MESSAGE}
_FTP_REFUSALS = {"530": PERMISSION_DENIED, "532": PERMISSION_DENIED, "550": PERMISSION_DENIED,
                 "553": PERMISSION_DENIED, "502": NOT_SUPPORTED, "504": NOT_SUPPORTED, "500": BAD_MESSAGE,
                 "501": BAD_MESSAGE}


class TransferError(Exception):
    """The transfer failed; the message says why (never a password). ``resumable``: trying again may help (False
    for what another try cannot change: a location we cannot use, a file over the size limit, an upload the
    server refused for a reason it named: ``refusal``)."""

    def __init__(self, message: str, resumable: bool = True, refusal: str | None = None) -> None:
        super().__init__(message)
        self.resumable = resumable and refusal is None
        self.refusal = refusal


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    resumed_from: int  # bytes already there when this attempt started
    sha256: str  # hex, of the file's bytes as written (computed on the way)


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> str | None:
    """Why ``url`` cannot be used (None: it can)."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        return f"scheme {parts.scheme or '(none)'!r} is not supported (use {', '.join(SCHEMES)})"
    if not parts.hostname:
        return "no host in the location"
    return None


def _tls(context: ssl.SSLContext | None) -> ssl.SSLContext:
    return context or ssl.create_default_context()


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """HTTPS and FTPS servers checked against ``ca_file`` (PEM) only, not the system's CAs; None: the system's. A
    file that cannot be read leaves no CA at all: every TLS transfer then fails, none falls back to other CAs."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)  # with a cafile, the system's CAs are not loaded
    except (OSError, ssl.SSLError, ValueError) as exc:
        logging.getLogger(__name__).error("file transfer CA unreadable: every HTTPS/FTPS transfer will fail",
                                          extra={"ca_file": ca_file, "error": str(exc)})
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host, trusts nothing


def _refused_certificate(url: str, exc: ssl.SSLCertVerificationError) -> TransferError:
    """A server whose certificate is not trusted: said plainly; another try cannot change it."""
    return TransferError(f"{redact(url)}: the server's TLS certificate is not trusted ({exc.verify_message}): it "
                         "must be issued by a CA the charger trusts ([firmware] transfer_ca, else the system's CAs) "
                         "and name the host", resumable=False)


def download(url: str, dest: Path, *, max_bytes: int, timeout_s: float = 30.0,
             tls: ssl.SSLContext | None = None, progress: Callable[[int], None] | None = None) -> Downloaded:
    """Fetch ``url`` into ``dest``, resuming what is there. Raises :class:`TransferError`."""
    why = check_url(url)
    if why is not None:
        raise TransferError(why, resumable=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = dest.stat().st_size if dest.exists() else 0
    scheme = urlsplit(url).scheme
    try:
        if scheme in ("http", "https"):
            digest = _http_get(url, dest, have, max_bytes, timeout_s, tls, progress)
        else:
            digest = _ftp_get(url, dest, have, max_bytes, timeout_s, tls, progress)
    except TransferError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise _refused_certificate(url, exc) from None
    except (OSError, EOFError, http.client.HTTPException, ftplib.Error) as exc:
        raise TransferError(f"{redact(url)}: {exc.__class__.__name__}: {exc}") from None
    with dest.open("rb") as f:
        os.fsync(f.fileno())
        if digest is None:  # nothing was left to fetch: the part is the whole file, hashed now
            digest = _hash_prefix(f, None)
    return Downloaded(dest, dest.stat().st_size, have, digest.hexdigest())


def _hash_prefix(f: BinaryIO, length: int | None) -> hashlib._Hash:
    """SHA-256 of the first ``length`` bytes of ``f`` (None: all of it)."""
    h = hashlib.sha256()
    left = length
    while left is None or left > 0:
        chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
        if not chunk:
            break
        h.update(chunk)
        if left is not None:
            left -= len(chunk)
    return h


def _append(dest: Path, have: int, restart: bool) -> tuple[int, BinaryIO, hashlib._Hash]:
    """Where the body goes, and the SHA-256 of what is before it (a resumed part's bytes, read once)."""
    if restart:
        return 0, dest.open("wb"), hashlib.sha256()
    with dest.open("rb") as f:
        h = _hash_prefix(f, have)
    return have, dest.open("ab"), h


def _http_connection(url: str, timeout_s: float, tls: ssl.SSLContext | None) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout_s, context=_tls(tls))
    return http.client.HTTPConnection(host, port, timeout=timeout_s)


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _http_get(url: str, dest: Path, have: int, max_bytes: int, timeout_s: float, tls: ssl.SSLContext | None,
              progress: Callable[[int], None] | None) -> hashlib._Hash | None:
    conn = _http_connection(url, timeout_s, tls)
    try:
        headers = {"Range": f"bytes={have}-"} if have else {}
        conn.request("GET", _target(url), headers=headers)
        resp = conn.getresponse()
        if resp.status == 416 and have:  # what we have is the whole file already (or more: start over)
            length = resp.getheader("Content-Range", "").rpartition("/")[2]
            if length.isdigit() and int(length) == have:
                return None
            dest.unlink()
            raise TransferError(f"{redact(url)}: the partial download does not fit the file; starting over")
        if resp.status not in (200, 206):
            raise TransferError(f"{redact(url)}: HTTP {resp.status} {resp.reason}")  # may be published later
        offset, f, h = _append(dest, have, restart=resp.status == 200)
        _copy(resp.read, f, h, offset, max_bytes, url, progress)
        expected = resp.getheader("Content-Length")
        if expected is not None and expected.isdigit() and dest.stat().st_size != offset + int(expected):
            raise TransferError(f"{redact(url)}: connection closed after {dest.stat().st_size} bytes")
        return h
    finally:
        conn.close()


def _copy(read: Callable[[int], bytes], f: BinaryIO, h: hashlib._Hash, offset: int, max_bytes: int, url: str,
          progress: Callable[[int], None] | None) -> None:
    total = offset
    with f:
        while chunk := read(CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise TransferError(f"{redact(url)}: larger than the {max_bytes} bytes allowed", resumable=False)
            f.write(chunk)
            h.update(chunk)  # the very bytes written (a failed write raises before: the digest is not used then)
            f.flush()
            if progress is not None:
                progress(total)


class _FtpTls(ftplib.FTP_TLS):
    """Explicit FTPS whose data connections resume the control connection's TLS session: servers require it by
    default (vsftpd's ``require_ssl_reuse``, RFC 4217 section 10.2's advice against a stolen data connection), and
    the standard library's client does not do it (it answers ``522 SSL connection failed: session reuse
    required``)."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            session = self.sock.session if isinstance(self.sock, ssl.SSLSocket) else None
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size


def _ftp(url: str, timeout_s: float, tls: ssl.SSLContext | None) -> ftplib.FTP:
    parts = urlsplit(url)
    ftp: ftplib.FTP
    if parts.scheme == "ftps":
        ftp = _FtpTls(context=_tls(tls), timeout=timeout_s)
    else:
        ftp = ftplib.FTP(timeout=timeout_s)
    ftp.connect(parts.hostname or "", parts.port or 21)
    ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or "anonymous@"))
    if isinstance(ftp, ftplib.FTP_TLS):
        ftp.prot_p()
    ftp.set_pasv(True)
    ftp.voidcmd("TYPE I")
    return ftp


def _ftp_path(url: str) -> str:
    """The file's path as the FTP server takes it: relative to the login directory (RFC 1738 section 3.2.2: the
    URL's first ``/`` only separates it from the host; ``%2F`` makes it absolute). A user who logs in to a
    home directory, or a server that does not chroot, finds ``ftp://host/fw.bin`` there, not at ``/fw.bin``."""
    path = urlsplit(url).path
    return unquote(path[1:] if path.startswith("/") else path)


def _ftp_get(url: str, dest: Path, have: int, max_bytes: int, timeout_s: float, tls: ssl.SSLContext | None,
             progress: Callable[[int], None] | None) -> hashlib._Hash | None:
    path = _ftp_path(url)
    ftp = _ftp(url, timeout_s, tls)
    try:
        try:
            size = ftp.size(path)
        except ftplib.error_perm as exc:
            raise TransferError(f"{redact(url)}: {exc}") from None  # 550: may be published later
        if size is not None and have == size:
            return None
        if size is not None and have > size:
            have = 0
        offset, f, h = _append(dest, have, restart=have == 0)
        conn = ftp.transfercmd(f"RETR {path}", rest=offset or None)
        try:
            _copy(conn.recv, f, h, offset, max_bytes, url, progress)
        finally:
            conn.close()
        ftp.voidresp()
        if size is not None and dest.stat().st_size != size:
            raise TransferError(f"{redact(url)}: connection closed after {dest.stat().st_size} of {size} bytes")
        return h
    finally:
        _quit(ftp)


def _quit(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        ftp.close()


def upload(url: str, source: Path, *, timeout_s: float = 30.0, tls: ssl.SSLContext | None = None) -> str:
    """Send ``source`` to ``url``; the URL it went to (password redacted). Raises :class:`TransferError`."""
    why = check_url(url)
    if why is not None:
        raise TransferError(why, resumable=False)
    parts = urlsplit(url)
    if parts.path.endswith("/") or not parts.path:
        url = urlunsplit(parts._replace(path=(parts.path or "/") + source.name))
    try:
        if parts.scheme in ("http", "https"):
            _http_put(url, source, timeout_s, tls)
        else:
            _ftp_put(url, source, timeout_s, tls)
    except TransferError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise _refused_certificate(url, exc) from None
    except ftplib.error_perm as exc:
        raise TransferError(f"{redact(url)}: {exc}", refusal=_FTP_REFUSALS.get(str(exc)[:3])) from None
    except (OSError, EOFError, http.client.HTTPException, ftplib.Error) as exc:
        raise TransferError(f"{redact(url)}: {exc.__class__.__name__}: {exc}") from None
    return redact(url)


def _http_put(url: str, source: Path, timeout_s: float, tls: ssl.SSLContext | None) -> None:
    conn = _http_connection(url, timeout_s, tls)
    try:
        with source.open("rb") as f:
            conn.request("PUT", _target(url), body=f, headers={"Content-Length": str(source.stat().st_size),
                                                               "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 201, 204):
            raise TransferError(f"{redact(url)}: HTTP {resp.status} {resp.reason}",
                                refusal=_HTTP_REFUSALS.get(resp.status))
    finally:
        conn.close()


def _ftp_put(url: str, source: Path, timeout_s: float, tls: ssl.SSLContext | None) -> None:
    ftp = _ftp(url, timeout_s, tls)
    try:
        with source.open("rb") as f:
            ftp.storbinary(f"STOR {_ftp_path(url)}", f, blocksize=CHUNK)
    finally:
        _quit(ftp)
