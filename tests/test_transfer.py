"""firmware/maintenance/transfer.py against real servers on loopback: the standard library's HTTP server (with cut
connections and error statuses; HTTPS when wrapped in ssl) and vsftpd (plain FTP, and explicit FTPS with ssl_enable)
(tests/file_servers.py): download, resume after a cut (also over TLS), the size limit, uploads, a server certificate
checked against the configured CA (another CA's refused plainly: DownloadFailed), and errors that name the location
without its password."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import parse_config
from firmware.maintenance import transfer
from firmware.maintenance.installers import SlotsInstaller, updater_settings
from firmware.maintenance.transfer import TransferError, download, redact, tls_context, upload
from firmware.maintenance.updater import FirmwareStatus, FirmwareUpdater
from sim.harness.pki import issue_server_cert, make_ca
from tests.controller import agent_python, traversable_dir
from tests.file_servers import FtpServer, FtpUnavailable, HttpFileServer, http_file_server, running_vsftpd
from tests.pki import FilesPki, make_files_pki, server_context
from tests.updater_runner import FileHold

PAYLOAD = os.urandom(700_000)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
REPO = Path(__file__).resolve().parents[1]


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
    assert got.sha256 == DIGEST  # hashed on the way, the resumed part's bytes included
    assert http.faults.requests[-1] == ("GET", "/fw.bin", "bytes=200000-")
    again = download(http.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5)  # complete: 416, nothing fetched
    assert (again.size, again.sha256) == (len(PAYLOAD), DIGEST)


def test_a_rate_limited_server_paces_the_body_and_the_client_gets_it_whole(http: HttpFileServer,
                                                                           tmp_path: Path) -> None:
    """The simulated CSMS's file server as a slow uplink (the firmware bench's links): 700 kB at 8 Mbit/s cannot
    arrive in less than 0.7 s (a loaded machine only makes it slower)."""
    http.faults.rate_bps = 8_000_000
    t0 = time.monotonic()
    got = download(http.url("fw.bin"), tmp_path / "fw.part", max_bytes=10 << 20, timeout_s=10)
    assert time.monotonic() - t0 >= len(PAYLOAD) * 8 / 8_000_000
    assert (got.size, got.sha256) == (len(PAYLOAD), DIGEST)


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
    assert got.resumed_from == 123_456 and part.read_bytes() == PAYLOAD and got.sha256 == DIGEST
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


# --- TLS: HTTPS (the standard library's server wrapped in ssl) and explicit FTPS (vsftpd, AUTH TLS) -----------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FilesPki:
    return make_files_pki(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https(tmp_path: Path, pki: FilesPki) -> Iterator[HttpFileServer]:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/fw.bin").write_bytes(PAYLOAD)
    with http_file_server(tmp_path / "srv", tls=server_context(pki.server)) as server:
        yield server


@contextlib.contextmanager
def ftps_server(where: Path, pki: FilesPki, max_rate: int = 0) -> Iterator[FtpServer]:
    """vsftpd with ssl_enable and the files CA's certificate, offering fw.bin."""
    try:
        with running_vsftpd(where, tls=(pki.server.cert, pki.server.key), max_rate=max_rate) as server:
            (server.root / "fw.bin").write_bytes(PAYLOAD)
            (server.root / "fw.bin").chmod(0o644)
            yield server
    except FtpUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def ftps(pki: FilesPki) -> Iterator[FtpServer]:
    with traversable_dir("evse-ftps-") as where, ftps_server(where, pki) as server:
        yield server


def test_https_download_checked_against_the_configured_ca_and_resumed_after_a_cut(https: HttpFileServer, pki: FilesPki,
                                                                                  tmp_path: Path) -> None:
    tls = tls_context(str(pki.ca.path))
    https.faults.cut_after, https.faults.cuts_left = 200_000, 1
    part = tmp_path / "dl/fw.part"
    with pytest.raises(TransferError, match="connection closed after 200000 bytes") as exc:
        download(https.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5, tls=tls)
    assert exc.value.resumable and part.stat().st_size == 200_000
    got = download(https.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5, tls=tls)
    assert got.resumed_from == 200_000 and part.read_bytes() == PAYLOAD
    assert https.faults.requests[-1] == ("GET", "/fw.bin", "bytes=200000-")
    archive = tmp_path / "diag.tar.gz"
    archive.write_bytes(b"logs" * 999)
    assert upload(https.url("in/"), archive, timeout_s=5, tls=tls).startswith("https://")
    assert (https.uploads / "diag.tar.gz").read_bytes() == archive.read_bytes()
    assert tls_context(None) is None  # not configured: the system's CAs
    with pytest.raises(TransferError, match="not trusted"):  # a CA file that cannot be read trusts nothing at all
        download(https.url("fw.bin"), tmp_path / "y.part", max_bytes=10 << 20, timeout_s=5,
                 tls=tls_context(str(tmp_path / "missing.pem")))


def test_https_server_of_another_ca_is_refused_plainly(tmp_path: Path, pki: FilesPki) -> None:
    """A server certificate the configured CA did not issue: refused at once (another try cannot help), saying why;
    without a configured CA the system's CAs do not know the test CA either."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/fw.bin").write_bytes(PAYLOAD)
    with http_file_server(tmp_path / "srv", tls=server_context(pki.stranger)) as stranger:
        for tls in (tls_context(str(pki.ca.path)), None):
            with pytest.raises(TransferError, match="the server's TLS certificate is not trusted "
                                                    r"\(unable to get local issuer certificate\)") as exc:
                download(stranger.url("fw.bin"), tmp_path / "x.part", max_bytes=10 << 20, timeout_s=5, tls=tls)
            assert not exc.value.resumable
        assert stranger.faults.requests == []  # nothing was asked of a server that was not trusted
    assert not (tmp_path / "x.part").exists() or (tmp_path / "x.part").stat().st_size == 0


def test_ftps_download_resumed_upload_and_another_ca_refused(ftps: FtpServer, pki: FilesPki, tmp_path: Path) -> None:
    """Explicit FTPS against vsftpd with ssl_enable (AUTH TLS, protected data channel, the TLS session reused on
    the data connection as vsftpd requires): a cut download resumed (REST), an upload, and the server refused when
    checked against another CA."""
    tls = tls_context(str(pki.ca.path))
    part = tmp_path / "fw.part"
    part.write_bytes(PAYLOAD[:123_456])  # what an earlier, cut attempt left
    got = download(ftps.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=5, tls=tls)
    assert ftps.url("fw.bin").startswith("ftps://")
    assert got.resumed_from == 123_456 and part.read_bytes() == PAYLOAD
    archive = tmp_path / "diag.tar.gz"
    archive.write_bytes(b"diagnostics" * 999)
    upload(ftps.url("upload/"), archive, timeout_s=5, tls=tls)
    assert (ftps.uploads / "diag.tar.gz").read_bytes() == archive.read_bytes()
    other = make_ca(tmp_path / "other", "Other CA")
    with pytest.raises(TransferError, match="the server's TLS certificate is not trusted") as exc:
        download(ftps.url("fw.bin"), tmp_path / "y.part", max_bytes=10 << 20, timeout_s=5,
                 tls=tls_context(str(other.path)))
    assert not exc.value.resumable


def test_ftps_download_cut_by_a_power_cut_resumes(pki: FilesPki, tmp_path: Path) -> None:
    """A download over FTPS in a process killed (SIGKILL) half-way, as a power cut does; the next attempt resumes
    the part file over a new TLS session (REST) and the file is whole."""
    with traversable_dir("evse-ftps-slow-") as where, ftps_server(where, pki, max_rate=200_000) as server:
        part = tmp_path / "fw.part"
        code = ("import sys; from pathlib import Path; from firmware.maintenance.transfer import download, "
                "tls_context; download(sys.argv[1], Path(sys.argv[2]), max_bytes=10 << 20, timeout_s=5, "
                "tls=tls_context(sys.argv[3]))")
        proc = subprocess.Popen([sys.executable, "-c", code, server.url("fw.bin"), str(part), str(pki.ca.path)],
                                cwd=REPO)
        try:
            deadline = time.monotonic() + 30
            while not (part.exists() and part.stat().st_size >= 100_000):
                assert proc.poll() is None and time.monotonic() < deadline, "the download did not get going"
                time.sleep(0.02)
        finally:
            proc.kill()
            proc.wait()
        cut_at = part.stat().st_size
        assert 0 < cut_at < len(PAYLOAD)
        got = download(server.url("fw.bin"), part, max_bytes=10 << 20, timeout_s=10, tls=tls_context(str(pki.ca.path)))
        assert got.resumed_from == cut_at and part.read_bytes() == PAYLOAD


async def test_the_update_ends_download_failed_when_the_server_is_not_trusted(tmp_path: Path, pki: FilesPki) -> None:
    """The pipeline with the configured CA ([firmware] transfer_ca through updater_settings): a server of another
    CA gives Downloading, then DownloadFailed at once (no retry), with the reason in the job."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/fw.bin").write_bytes(PAYLOAD)
    root, state = tmp_path / "controller", tmp_path / "state"
    state.mkdir()
    config = parse_config(f'[charge_point]\nid = "CP"\n[storage]\ndir = "{state}"\n[buses.rs485]\nport = "/dev/null"\n'
                          '[[connectors]]\nid = 1\nboard = { driver = "ioboard", port = "/dev/null" }\n'
                          'meter = { model = "sdm630", bus = "rs485", unit = 1 }\n'
                          f'[firmware]\nslots_root = "{root}"\ntransfer_ca = "{pki.ca.path}"\ntransfer_timeout_s = 5\n',
                          "agent.toml")
    seen: list[str] = []

    async def report(status: FirmwareStatus) -> None:
        seen.append(status.value)
    updater = FirmwareUpdater(state, updater_settings(config), SlotsInstaller(str(root), state),
                              FileHold(tmp_path / "connectors.json"), lambda: None, report)
    with http_file_server(tmp_path / "srv", tls=server_context(pki.stranger)) as stranger:
        updater.start(stranger.url("fw.bin"), 0.0, retries=3, retry_interval_s=0.0)
        await asyncio.wait_for(updater.run_job(), 30)
    assert seen == ["Downloading", "DownloadFailed"]
    assert updater.job is not None and "the server's TLS certificate is not trusted" in updater.job.detail


_AS_USER = """
import os, sys
from pathlib import Path
from tests.file_servers import running_vsftpd
from firmware.maintenance.transfer import download, tls_context
pki, where = Path(sys.argv[1]), Path(sys.argv[2])
with running_vsftpd(where, tls=(pki / "files.pem", pki / "files-key.pem")) as server:
    (server.root / "fw.bin").write_bytes(b"x" * 100_000)
    got = download(server.url("fw.bin"), where / "fw.part", max_bytes=1 << 20, timeout_s=5,
                   tls=tls_context(str(pki / "files-ca.pem")))
    print(os.geteuid(), got.size)
"""


def test_vsftpd_with_tls_also_runs_as_a_normal_user(tmp_path: Path) -> None:
    """CI runs the tests as root (vsftpd chroots its anonymous user); a developer runs them as themselves
    (run_as_launching_user). Run as root here, the same FTPS server and download are tried as ``nobody``, from a copy
    of the few stdlib-only modules they need (the checkout may be where ``nobody`` cannot go)."""
    if os.geteuid() != 0:
        pytest.skip("run as a normal user already: the other tests here are the check")
    with traversable_dir("evse-ftps-as-user-") as where:
        for rel in ("firmware/__init__.py", "firmware/maintenance/__init__.py", "firmware/maintenance/transfer.py",
                    "sim/__init__.py", "sim/csms/__init__.py", "sim/csms/file_server.py", "tests/__init__.py",
                    "tests/file_servers.py"):
            (where / "code" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, where / "code" / rel)
        ca = make_ca(where / "pki", "Files CA")
        issue_server_cert(ca, where / "pki", "files")
        for path in [where / "code", where / "pki", *(where / "code").rglob("*"), *(where / "pki").iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (where / "script.py").write_text(_AS_USER)
        (where / "script.py").chmod(0o644)
        nobody = pwd.getpwnam("nobody")
        (where / "run").mkdir()
        os.chown(where / "run", nobody.pw_uid, nobody.pw_gid)
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", agent_python(), "-S",
                   str(where / "script.py"), str(where / "pki"), str(where / "run")]
        env = {"PYTHONPATH": str(where / "code"), "PYTHONDONTWRITEBYTECODE": "1",
               "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=where, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == [str(nobody.pw_uid), "100000"]
