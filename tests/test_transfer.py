"""firmware/maintenance/transfer.py against real servers on loopback: the standard library's HTTP server (with cut
connections and error statuses) and vsftpd (tests/file_servers.py): download, resume after a cut, the size limit,
uploads, and errors that name the location without its password."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.maintenance import transfer
from firmware.maintenance.transfer import TransferError, download, redact, upload
from tests.controller import traversable_dir
from tests.file_servers import FtpServer, FtpUnavailable, HttpFileServer, http_file_server, running_vsftpd

PAYLOAD = os.urandom(700_000)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[HttpFileServer]:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/fw.bin").write_bytes(PAYLOAD)
    with http_file_server(tmp_path / "srv") as server:
        yield server


@pytest.fixture(scope="module")
def ftp() -> Iterator[FtpServer]:
    with traversable_dir("evse-ftp-") as where:
        try:
            with running_vsftpd(where) as server:
                (server.root / "fw.bin").write_bytes(PAYLOAD)
                (server.root / "fw.bin").chmod(0o644)
                yield server
        except FtpUnavailable as exc:
            pytest.fail(str(exc))


def test_http_download_resumes_after_a_cut(http: HttpFileServer, tmp_path: Path) -> None:
    http.faults.cut_after, http.faults.cuts_left = 200_000, 1
    part = tmp_path / "dl/fw.part"
    with pytest.raises(TransferError, match="connection closed after 200000 bytes"):
        download(http.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5)
    assert part.stat().st_size == 200_000  # kept for the next attempt
    got = download(http.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5)
    assert got.resumed_from == 200_000 and part.read_bytes() == PAYLOAD
    assert http.faults.requests[-1] == ("GET", "/fw.bin", "bytes=200000-")
    again = download(http.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5)  # complete: 416, nothing fetched
    assert again.size == len(PAYLOAD)


def test_http_errors_and_the_size_limit(http: HttpFileServer, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="HTTP 404") as exc:
        download(http.url("missing.bin"), tmp_path / "a.part", max_bytes=10 << 20, timeout_s=5)
    assert exc.value.resumable  # it may be published by the next try
    with pytest.raises(TransferError, match="larger than the 100000 bytes allowed") as exc:
        download(http.url("fw.bin"), tmp_path / "b.part", max_bytes=100_000, timeout_s=5)
    assert not exc.value.resumable
    with pytest.raises(TransferError, match="scheme 'gopher' is not supported"):
        download("gopher://x/y", tmp_path / "c.part", max_bytes=1, timeout_s=5)
    with pytest.raises(TransferError, match="ConnectionRefusedError"):
        download("http://127.0.0.1:1/fw.bin", tmp_path / "d.part", max_bytes=1, timeout_s=5)


def test_http_upload(http: HttpFileServer, tmp_path: Path) -> None:
    archive = tmp_path / "diag.tar.gz"
    archive.write_bytes(b"logs" * 1000)
    assert upload(f"http://127.0.0.1:{http.port}/in/", archive, timeout_s=5).endswith("/in/diag.tar.gz")
    assert (http.uploads / "diag.tar.gz").read_bytes() == archive.read_bytes()
    http.faults.status = 500
    with pytest.raises(TransferError, match="HTTP 500"):
        upload(http.url("x/"), archive, timeout_s=5)


def test_ftp_download_resume_and_upload(ftp: FtpServer, tmp_path: Path) -> None:
    part = tmp_path / "fw.part"
    part.write_bytes(PAYLOAD[:123_456])  # what an earlier, cut attempt left
    got = download(ftp.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5)
    assert got.resumed_from == 123_456 and part.read_bytes() == PAYLOAD
    with pytest.raises(TransferError, match="550"):
        download(ftp.url("missing.bin"), tmp_path / "m.part", max_bytes=10 << 20, timeout_s=5)
    archive = tmp_path / "diag.tar.gz"
    archive.write_bytes(b"diagnostics" * 999)
    upload(ftp.url("upload/"), archive, timeout_s=5)
    assert (ftp.uploads / "diag.tar.gz").read_bytes() == archive.read_bytes()


def test_an_upload_refused_names_why_and_is_not_retried(http: HttpFileServer, ftp: FtpServer, tmp_path: Path) -> None:
    """What a server says about a refused upload becomes the log status OCPP reports (PermissionDenied,
    NotSupportedOperation, BadMessage), final; any other failure stays resumable."""
    archive = tmp_path / "diag.tar.gz"
    archive.write_bytes(b"logs" * 100)
    for status, refusal in ((401, transfer.PERMISSION_DENIED), (403, transfer.PERMISSION_DENIED),
                            (405, transfer.NOT_SUPPORTED), (501, transfer.NOT_SUPPORTED),
                            (400, transfer.BAD_MESSAGE), (500, None), (503, None)):
        http.faults.status = status
        with pytest.raises(TransferError, match=f"HTTP {status}") as exc:
            upload(http.url("in/"), archive, timeout_s=5)
        assert (exc.value.refusal, exc.value.resumable) == (refusal, refusal is None), status
    with pytest.raises(TransferError, match="553") as exc:  # vsftpd: no such directory to create the file in
        upload(ftp.url("no/such/dir/"), archive, timeout_s=5)
    assert exc.value.refusal == transfer.PERMISSION_DENIED and not exc.value.resumable
    with pytest.raises(TransferError, match="ConnectionRefusedError") as exc:
        upload("ftp://127.0.0.1:1/in/", archive, timeout_s=5)
    assert exc.value.refusal is None and exc.value.resumable


def test_passwords_never_in_messages(tmp_path: Path) -> None:
    assert redact("ftp://tech:s3cret@host:2121/fw.bin") == "ftp://tech:***@host:2121/fw.bin"
    with pytest.raises(TransferError) as exc:
        download("ftp://tech:s3cret@127.0.0.1:1/fw.bin", tmp_path / "x.part", max_bytes=1, timeout_s=2)
    assert "s3cret" not in str(exc.value)
