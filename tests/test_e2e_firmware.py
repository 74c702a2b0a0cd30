"""OCPP 1.6 Firmware Management end to end (OCTT TC_044_1, TC_044_2, TC_044_3, TC_045_1, TC_045_2), over HTTP (the
simulated CSMS's file server), HTTPS (the same server wrapped in ssl, checked against ``[firmware] transfer_ca``) and
FTP (vsftpd): the agent runs as a process against the simulated charger and CSMS, supervised as systemd would (a
restart it asks for is done), with A/B slots in a controller root it may write (``[firmware] slots_root``: the
simulator does not yet run the agent's code out of the slots, so the slot's version is what the agent reports as its
firmware version, and what the pipeline checks after the restart).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.maintenance import slots
from firmware.maintenance.bundle import load_private_key
from firmware.maintenance.updater import JOB_FILE
from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from tests.bundles import slot_station, small_bundle
from tests.controller import traversable_dir
from tests.file_servers import FtpServer, FtpUnavailable, http_file_server, running_vsftpd
from tests.pki import FilesPki, Signer, another_signing_cert, make_crl, make_files_pki, make_signer, server_context
from tests.station import CP_ID, Station

FINAL = ("Installed", "InstallationFailed", "DownloadFailed")


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def revoked(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> Signer:
    """A second signing certificate of the manufacturer's CA, listed in the CA's CRL (the charger is given it)."""
    return another_signing_cert(signer, tmp_path_factory.mktemp("revoked"), "Revoked signing")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, signer: Signer, revoked: Signer) -> Path:
    """What the CSMS offers: v1 (installed first), v2, and a bundle signed by a stranger (invalid firmware); and the
    manufacturer CA's CRL, revoking the second signing certificate."""
    where = tmp_path_factory.mktemp("files")
    small_bundle(where / "v1.bundle", signer, "1.0.0")
    small_bundle(where / "v2.bundle", signer, "1.1.0")
    small_bundle(where / "invalid.bundle", make_signer(where / "stranger", "Someone else"), "6.6.6")
    make_crl(signer, where / "firmware-ca.crl", [revoked.cert])
    return where


@pytest.fixture(scope="module")
def ftp(files: Path) -> Iterator[FtpServer]:
    with traversable_dir("evse-ftp-") as where:
        try:
            with running_vsftpd(where) as server:
                for name in ("v2.bundle", "invalid.bundle"):
                    (server.root / name).write_bytes((files / name).read_bytes())
                    (server.root / name).chmod(0o644)
                yield server
        except FtpUnavailable as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> FilesPki:
    """The HTTPS file servers' certificates: the charger trusts the files CA ([firmware] transfer_ca)."""
    return make_files_pki(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def station(tmp_path: Path, files: Path, signer: Signer, tls: FilesPki) -> AsyncIterator[Station]:
    async with slot_station(tmp_path / "controller", files / "v1.bundle", signer, files,
                            firmware_extra=f'crl = "{files / "firmware-ca.crl"}"\n'
                                           f'transfer_ca = "{tls.ca.path}"\n') as s:
        yield s


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def location(station: Station, ftp: FtpServer | None, name: str) -> str:
    return ftp.url(name) if ftp is not None else station.csms.file_url(name)


def calls(s: Station, action: str, since: int) -> list[TranscriptEntry]:
    return [e for e in s.csms.transcript.messages(CP_ID, action=action, since=since)
            if e.kind == EntryKind.CALL and e.direction == Direction.FROM_CP]


async def statuses_until_final(s: Station, since: int, action: str = "FirmwareStatusNotification",
                               final: tuple[str, ...] = FINAL) -> list[str]:
    await s.wait_call(action, lambda e: e.payload["status"] in final, since=since, timeout_s=60)
    return [e.payload["status"] for e in calls(s, action, since)]


def boots(s: Station, since: int) -> list[TranscriptEntry]:
    return calls(s, "BootNotification", since)


@pytest.fixture(params=["http", "ftp"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_tc_044_1_download_install_reboot_installed(station: Station, protocol: str,
                                                          request: pytest.FixtureRequest) -> None:
    s = station
    server = request.getfixturevalue("ftp") if protocol == "ftp" else None
    assert boots(s, 0)[-1].payload["firmwareVersion"] == "1.0.0"  # what slot a holds
    mark = s.csms.transcript.mark()
    assert await s.csms.update_firmware(CP_ID, location(s, server, "v2.bundle"), now()) == {}
    seen = await statuses_until_final(s, mark)
    assert seen == ["Downloading", "Downloaded", "Installing", "Installed"], seen
    # idle connectors Unavailable while installing; the charger restarted into the new version; Available again
    for connector in (1, 2):
        await s.wait_status(connector, "Unavailable", since=mark)
    booted = boots(s, mark)
    assert [b.payload["firmwareVersion"] for b in booted] == ["1.1.0"]
    installed = next(e for e in calls(s, "FirmwareStatusNotification", mark) if e.payload["status"] == "Installed")
    assert installed.seq > booted[0].seq  # Installed after the restart
    # the security whitepaper's critical event FirmwareUpdated, once, after Installed, naming both versions
    updated = await s.wait_call("SecurityEventNotification", lambda e: e.payload["type"] == "FirmwareUpdated",
                                since=mark)
    assert updated.seq > installed.seq and updated.payload["techInfo"] == "firmware 1.0.0 -> 1.1.0 (slot b)"
    for connector in (1, 2):
        await s.wait_status(connector, "Available", since=installed.seq)
    root: Path = s.root  # type: ignore[attr-defined]
    assert slots.active_slot(str(root)) == "b" and slots.info(str(root))["slots"]["b"]["health"] == "passed"
    assert s.exit_codes == [75]  # one restart, asked for by the pipeline
    assert [e.payload["type"] for e in calls(s, "SecurityEventNotification", mark)].count("FirmwareUpdated") == 1


async def test_tc_044_1_over_https_and_a_server_not_trusted_fails_at_once(station: Station, files: Path, tls: FilesPki,
                                                                         tmp_path: Path) -> None:
    """TC_044_1 with an https:// location: the server's certificate checked against [firmware] transfer_ca, then the
    same pipeline (Installed after the restart into the new version). A server whose certificate another CA issued:
    DownloadFailed after the first attempt, whatever the retries (another try cannot make it trusted), and nothing
    asked of it."""
    s = station
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/v2.bundle").write_bytes((files / "v2.bundle").read_bytes())
    with (http_file_server(tmp_path / "srv", tls=server_context(tls.server)) as https,
          http_file_server(tmp_path / "srv", tls=server_context(tls.stranger)) as stranger):
        mark = s.csms.transcript.mark()
        assert await s.csms.update_firmware(CP_ID, https.url("v2.bundle"), now()) == {}
        seen = await statuses_until_final(s, mark)
        assert seen == ["Downloading", "Downloaded", "Installing", "Installed"], seen
        assert [r[:2] for r in https.faults.requests] == [("GET", "/v2.bundle")]
        booted = boots(s, mark)
        assert [b.payload["firmwareVersion"] for b in booted] == ["1.1.0"]
        installed = next(e for e in calls(s, "FirmwareStatusNotification", mark) if e.payload["status"] == "Installed")
        assert installed.seq > booted[0].seq and s.exit_codes == [75]

        mark = s.csms.transcript.mark()
        await s.csms.update_firmware(CP_ID, stranger.url("v2.bundle"), now(), retries=3, retry_interval=1)
        seen = await statuses_until_final(s, mark)
        assert seen == ["Downloading", "DownloadFailed"], seen
        assert stranger.faults.requests == [] and not boots(s, mark)
    root: Path = s.root  # type: ignore[attr-defined]
    job = json.loads((root / "var/lib/evse-agent" / JOB_FILE).read_text())
    assert "the server's TLS certificate is not trusted" in job["detail"], job["detail"]


async def test_tc_044_2_download_failed_after_the_retries(station: Station, protocol: str) -> None:
    s = station
    url = "ftp://127.0.0.1:1/v2.bundle" if protocol == "ftp" else s.csms.file_url("missing.bundle")
    mark = s.csms.transcript.mark()
    await s.csms.update_firmware(CP_ID, url, now(), retries=2, retry_interval=1)
    seen = await statuses_until_final(s, mark)
    assert seen == ["Downloading"] * 3 + ["DownloadFailed"], seen
    assert not boots(s, mark) and s.exit_codes == []  # nothing installed, no restart
    if protocol == "http":
        assert [r[:2] for r in s.csms.files.faults.requests] == [("GET", "/missing.bundle")] * 3  # type: ignore[union-attr]


async def test_tc_044_3_invalid_firmware_installation_failed_nothing_installed(station: Station) -> None:
    s = station
    mark = s.csms.transcript.mark()
    await s.csms.update_firmware(CP_ID, s.csms.file_url("invalid.bundle"), now())
    seen = await statuses_until_final(s, mark)
    assert seen == ["Downloading", "Downloaded", "Installing", "InstallationFailed"], seen
    root: Path = s.root  # type: ignore[attr-defined]
    assert slots.active_slot(str(root)) == "a" and not slots.info(str(root))["slots"]["b"]["installed"]
    assert not boots(s, mark)  # the old version kept running
    job = json.loads((root / "var/lib/evse-agent" / JOB_FILE).read_text())
    assert "signature does not verify" in job["detail"]


async def test_tc_044_3_new_version_not_accepted_rolls_back_and_the_old_version_says_so(station: Station) -> None:
    """The new version comes up but the CSMS does not accept it within the health timeout: the pipeline switches
    back (the database restored if the schema moved), the old version boots, reports its own version and
    InstallationFailed."""
    s = station
    mark = s.csms.transcript.mark()
    await s.csms.update_firmware(CP_ID, s.csms.file_url("v2.bundle"), now())
    await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Installing", since=mark)
    s.profile.boot_statuses = ["Rejected"]  # the CSMS will not have the new version
    await s.wait_call("BootNotification", lambda e: e.payload["firmwareVersion"] == "1.1.0", since=mark)
    new_boot = s.csms.transcript.mark()
    await s.wait_call("BootNotification", lambda e: e.payload["firmwareVersion"] == "1.0.0", since=new_boot,
                      timeout_s=60)
    s.profile.boot_statuses = ["Accepted"]  # the old version is welcome again
    seen = await statuses_until_final(s, mark)
    assert seen[:3] == ["Downloading", "Downloaded", "Installing"] and seen[-1] == "InstallationFailed", seen
    assert "Installed" not in seen
    root: Path = s.root  # type: ignore[attr-defined]
    assert slots.active_slot(str(root)) == "a"
    assert s.exit_codes == [75, 75]  # into the new version, and back
    job = json.loads((root / "var/lib/evse-agent" / JOB_FILE).read_text())
    assert job["detail"] == "not accepted by the CSMS within 8 s; rolled back to 1.0.0 (slot a)"


async def test_tc_045_1_diagnostics_uploaded(station: Station, protocol: str, request: pytest.FixtureRequest) -> None:
    s = station
    server: FtpServer | None = request.getfixturevalue("ftp") if protocol == "ftp" else None
    mark = s.csms.transcript.mark()
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat(timespec="seconds").replace("+00:00", "Z")
    answer = await s.csms.get_diagnostics(CP_ID, location(s, server, "upload/"), start_time=since, stop_time=until)
    name = answer["fileName"]
    assert name.startswith(f"diagnostics-{CP_ID}-") and name.endswith(".tar.gz")
    seen = await statuses_until_final(s, mark, "DiagnosticsStatusNotification", ("Uploaded", "UploadFailed"))
    assert seen == ["Uploading", "Uploaded"]
    uploads = server.uploads if server is not None else s.csms.files.uploads  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO((uploads / name).read_bytes())) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert sorted(members) == ["configuration.json", "log.jsonl", "selftest.json", "storage.json"]
    assert b'"msg": "agent running"' in members["log.jsonl"]
    config = json.loads(members["configuration.json"])
    assert config["agent"]["charge_point"]["id"] == CP_ID and "connectors" in json.loads(members["selftest.json"])
    assert config["keys"]["HeartbeatInterval"] == "300"  # the OCPP keys, as GetConfiguration reports them
    assert json.loads(members["storage.json"])["schema"] >= 6
    assert s.profile.password is None or s.profile.password.encode() not in members["configuration.json"]

    mark = s.csms.transcript.mark()  # a window before the agent started: no log lines, the rest as before
    answer = await s.csms.get_diagnostics(CP_ID, location(s, server, "upload/"), start_time="2020-01-01T00:00:00Z",
                                          stop_time="2020-01-02T00:00:00Z")
    await statuses_until_final(s, mark, "DiagnosticsStatusNotification", ("Uploaded", "UploadFailed"))
    with tarfile.open(fileobj=io.BytesIO((uploads / answer["fileName"]).read_bytes())) as tar:
        assert tar.extractfile("log.jsonl").read() == b"\n"  # type: ignore[union-attr]


async def test_tc_045_2_diagnostics_upload_failed(station: Station, protocol: str) -> None:
    s = station
    url = "ftp://127.0.0.1:1/upload/" if protocol == "ftp" else "http://127.0.0.1:1/upload/"
    mark = s.csms.transcript.mark()
    answer = await s.csms.get_diagnostics(CP_ID, url, retries=1, retry_interval=1)
    assert answer["fileName"].endswith(".tar.gz")
    seen = await statuses_until_final(s, mark, "DiagnosticsStatusNotification", ("Uploaded", "UploadFailed"))
    assert seen == ["Uploading", "UploadFailed"]


async def test_a_diagnostics_upload_cut_by_a_kill_9_is_done_again_after_the_restart(station: Station) -> None:
    """The upload is a durable job: its first attempt fails (HTTP 500) and its retry waits 60 s; SIGKILL then. The
    restarted agent takes it up at once (Uploading again) and it ends with exactly one final status, Uploaded; the
    job is forgotten once the CSMS answered."""
    s = station
    files = s.csms.files
    assert files is not None
    files.faults.status = 500
    mark = s.csms.transcript.mark()
    answer = await s.csms.get_diagnostics(CP_ID, s.csms.file_url("upload/"), retries=2, retry_interval=60)
    root: Path = s.root  # type: ignore[attr-defined]
    job_file = root / "var/lib/evse-agent/diagnostics-upload.json"
    await s.wait_until(lambda: job_file.exists() and json.loads(job_file.read_text())["failed"] == 1, 30,
                       "the first attempt failed")
    await s.kill_agent()
    files.faults.status = None
    await s.start_agent(supervised=True, wait_boot=False)
    seen = await statuses_until_final(s, mark, "DiagnosticsStatusNotification", ("Uploaded", "UploadFailed"))
    assert seen == ["Uploading", "Uploading", "Uploaded"], seen
    assert (files.uploads / answer["fileName"]).is_file()
    assert [r[0] for r in files.faults.requests] == ["PUT", "PUT"]
    await s.wait_until(lambda: not job_file.exists(), 10, "the job forgotten")
    assert [e.payload["status"] for e in calls(s, "DiagnosticsStatusNotification", mark)].count("Uploaded") == 1


async def test_the_update_waits_for_the_transaction_and_resumes_a_cut_download(station: Station) -> None:
    """A transaction runs: the idle connector is Unavailable at once, the charging one keeps charging and is
    Unavailable once its transaction ends; only then the switch. The first download is cut half-way and the
    second attempt resumes it (HTTP Range)."""
    s = station
    files = s.csms.files
    assert files is not None
    tx_id = await s.start_session(1)
    files.faults.cut_after, files.faults.cuts_left = 200_000, 1
    mark = s.csms.transcript.mark()
    await s.csms.update_firmware(CP_ID, s.csms.file_url("v2.bundle"), now(), retries=1, retry_interval=1)
    await s.wait_status(2, "Unavailable", since=mark)
    await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Installing", since=mark)
    gets = [r for r in files.faults.requests if r[:2] == ("GET", "/v2.bundle")]
    assert [r[2] for r in gets] == ["", "bytes=200000-"]  # cut, then resumed where it stopped
    root: Path = s.root  # type: ignore[attr-defined]
    job_file = root / "var/lib/evse-agent" / JOB_FILE
    await s.wait_until(lambda: json.loads(job_file.read_text())["step"] == "waiting_idle", 30, "waiting for idle")

    stop_mark = s.csms.transcript.mark()
    s.ev(1).unplug()
    stop = await s.wait_call("StopTransaction", since=stop_mark)
    assert stop.payload["transactionId"] == tx_id and stop.payload.get("reason", "Local") != "PowerLoss"
    seen = await statuses_until_final(s, mark)
    assert seen[-1] == "Installed", seen
    unavailable_1 = [e for e in calls(s, "StatusNotification", mark)
                     if e.payload["connectorId"] == 1 and e.payload["status"] == "Unavailable"]
    new_boot = boots(s, mark)[-1]
    assert new_boot.payload["firmwareVersion"] == "1.1.0"
    assert stop.seq < unavailable_1[0].seq < new_boot.seq  # the transaction ended, then the hold, then the switch
    installed = next(e for e in calls(s, "FirmwareStatusNotification", mark) if e.payload["status"] == "Installed")
    for connector in (1, 2):
        await s.wait_status(connector, "Available", since=installed.seq)


async def test_a_power_cut_while_the_update_waits_for_a_transaction(station: Station) -> None:
    """SIGKILL while the update waits: the restarted agent ends the transaction as a power loss does (PowerLoss),
    the job resumes where it stood and installs."""
    s = station
    tx_id = await s.start_session(1)
    mark = s.csms.transcript.mark()
    await s.csms.update_firmware(CP_ID, s.csms.file_url("v2.bundle"), now())
    root: Path = s.root  # type: ignore[attr-defined]
    job_file = root / "var/lib/evse-agent" / JOB_FILE
    await s.wait_until(lambda: job_file.exists() and json.loads(job_file.read_text())["step"] == "waiting_idle", 30,
                       "waiting for idle")
    await s.kill_agent()
    assert slots.active_slot(str(root)) == "a"
    await s.start_agent(supervised=True, wait_boot=False)
    stop = await s.wait_call("StopTransaction", since=mark)
    assert (stop.payload["transactionId"], stop.payload["reason"]) == (tx_id, "PowerLoss")
    seen = await statuses_until_final(s, mark)
    assert seen[-1] == "Installed" and slots.active_slot(str(root)) == "b", seen


async def _triggered_log_status(s: Station) -> dict:  # type: ignore[type-arg]
    """ExtendedTriggerMessage LogStatusNotification: what the agent then says of its log upload."""
    mark = s.csms.transcript.mark()
    assert (await s.csms.extended_trigger_message(CP_ID, "LogStatusNotification"))["status"] == "Accepted"
    return dict((await s.wait_call("LogStatusNotification", since=mark)).payload)


async def test_get_log_diagnostics_uploaded_with_the_request_id_and_triggered_status(station: Station) -> None:
    """The 1.6 security whitepaper's GetLog: a DiagnosticsLog is the diagnostics archive, its LogStatusNotifications
    carry the requestId; a LogStatusNotification asked for by ExtendedTriggerMessage says Uploading and the
    requestId while an upload runs, Idle without one otherwise."""
    s = station
    mark = s.csms.transcript.mark()
    answer = await s.csms.call(CP_ID, "GetLog", {"logType": "DiagnosticsLog", "requestId": 7, "retries": 0,
                                                 "log": {"remoteLocation": s.csms.file_url("logs/")}})
    assert answer["status"] == "Accepted" and answer["filename"].endswith(".tar.gz")
    seen = await statuses_until_final(s, mark, "LogStatusNotification", ("Uploaded", "UploadFailure"))
    assert seen == ["Uploading", "Uploaded"]
    assert {e.payload["requestId"] for e in calls(s, "LogStatusNotification", mark)} == {7}
    assert (s.csms.files.uploads / answer["filename"]).is_file()  # type: ignore[union-attr]
    mark = s.csms.transcript.mark()  # one that keeps failing, replaced by the next: AcceptedCanceled
    slow = await s.csms.call(CP_ID, "GetLog", {"logType": "DiagnosticsLog", "requestId": 9, "retries": 5,
                                               "retryInterval": 60, "log": {"remoteLocation": "ftp://127.0.0.1:1/"}})
    assert slow["status"] == "Accepted"
    await s.wait_call("LogStatusNotification", lambda e: e.payload == {"status": "Uploading", "requestId": 9},
                      since=mark)
    assert await _triggered_log_status(s) == {"status": "Uploading", "requestId": 9}  # waiting for its retry
    answer = await s.csms.call(CP_ID, "GetLog", {"logType": "DiagnosticsLog", "requestId": 10,
                                                 "log": {"remoteLocation": s.csms.file_url("logs/")}})
    assert answer["status"] == "AcceptedCanceled"
    await s.wait_call("LogStatusNotification", lambda e: e.payload == {"status": "Uploaded", "requestId": 10},
                      since=mark)
    assert await _triggered_log_status(s) == {"status": "Idle"}  # nothing under way: no requestId


async def test_tc_079_security_log_uploaded(station: Station) -> None:
    """OCTT TC_079 (Get Security Log): GetLog SecurityLog Accepted, LogStatusNotification Uploading then Uploaded
    with the requestId, and the security log's events (this start's StartupOfTheDevice) in the uploaded archive;
    oldestTimestamp / latestTimestamp bound them."""
    s = station
    await s.wait_call("SecurityEventNotification", lambda e: e.payload["type"] == "StartupOfTheDevice")
    mark = s.csms.transcript.mark()
    answer = await s.csms.call(CP_ID, "GetLog", {"logType": "SecurityLog", "requestId": 8,
                                                 "log": {"remoteLocation": s.csms.file_url("logs/")}})
    assert answer["status"] == "Accepted" and answer["filename"].startswith(f"securitylog-{CP_ID}-")
    seen = await statuses_until_final(s, mark, "LogStatusNotification", ("Uploaded", "UploadFailure"))
    assert seen == ["Uploading", "Uploaded"]
    assert {e.payload["requestId"] for e in calls(s, "LogStatusNotification", mark)} == {8}
    uploads: Path = s.csms.files.uploads  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO((uploads / answer["filename"]).read_bytes())) as tar:
        assert tar.getnames() == ["security.jsonl"]
        events = [json.loads(line) for line in tar.extractfile("security.jsonl").read().splitlines()]  # type: ignore[union-attr]
    assert "StartupOfTheDevice" in [e["type"] for e in events]
    assert all("timestamp" in e for e in events)

    mark = s.csms.transcript.mark()  # a window before the agent started: an empty log
    answer = await s.csms.call(CP_ID, "GetLog", {"logType": "SecurityLog", "requestId": 11, "log": {
        "remoteLocation": s.csms.file_url("logs/"), "oldestTimestamp": "2020-01-01T00:00:00Z",
        "latestTimestamp": "2020-01-02T00:00:00Z"}})
    assert answer["status"] == "Accepted"
    await s.wait_call("LogStatusNotification", lambda e: e.payload == {"status": "Uploaded", "requestId": 11},
                      since=mark)
    with tarfile.open(fileobj=io.BytesIO((uploads / answer["filename"]).read_bytes())) as tar:
        assert tar.extractfile("security.jsonl").read() == b"\n"  # type: ignore[union-attr]


def signed_firmware(location: str, file: Path, signer: Signer, *,
                    signature_of: Path | None = None) -> dict:  # type: ignore[type-arg]
    """SignedUpdateFirmware's firmware field: the signing certificate and an ECDSA-SHA256 signature over the file
    (or over another file: a wrong signature)."""
    key = load_private_key(signer.key)
    signature = key.sign((signature_of or file).read_bytes(), ec.ECDSA(hashes.SHA256()))
    return {"location": location, "retrieveDateTime": now(), "signingCertificate": signer.cert.read_text(),
            "signature": base64.b64encode(signature).decode()}


async def test_tc_080_signed_update_installed(station: Station, files: Path, signer: Signer) -> None:
    s = station
    mark = s.csms.transcript.mark()
    answer = await s.csms.call(CP_ID, "SignedUpdateFirmware", {"requestId": 21, "firmware": signed_firmware(
        s.csms.file_url("v2.bundle"), files / "v2.bundle", signer)})
    assert answer == {"status": "Accepted"}
    seen = await statuses_until_final(s, mark, "SignedFirmwareStatusNotification",
                                      ("Installed", "InstallationFailed", "InvalidSignature", "DownloadFailed"))
    assert seen == ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting", "Installed"]
    assert {e.payload["requestId"] for e in calls(s, "SignedFirmwareStatusNotification", mark)} == {21}
    assert not calls(s, "FirmwareStatusNotification", mark)
    assert boots(s, mark)[-1].payload["firmwareVersion"] == "1.1.0"


async def test_a_triggered_signed_firmware_status_says_the_scheduled_update_and_its_request_id(
        station: Station, files: Path, signer: Signer) -> None:
    """ExtendedTriggerMessage FirmwareStatusNotification while a signed update waits for its retrieveDateTime: the
    SignedFirmwareStatusNotification says DownloadScheduled with the update's requestId."""
    s = station
    mark = s.csms.transcript.mark()
    firmware = signed_firmware(s.csms.file_url("v2.bundle"), files / "v2.bundle", signer)
    firmware["retrieveDateTime"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat(timespec="seconds")
    answer = await s.csms.call(CP_ID, "SignedUpdateFirmware", {"requestId": 25, "firmware": firmware})
    assert answer == {"status": "Accepted"}
    await s.wait_call("SignedFirmwareStatusNotification", lambda e: e.payload["status"] == "DownloadScheduled",
                      since=mark)
    mark = s.csms.transcript.mark()
    assert (await s.csms.extended_trigger_message(CP_ID, "FirmwareStatusNotification"))["status"] == "Accepted"
    triggered = await s.wait_call("SignedFirmwareStatusNotification", since=mark)
    assert triggered.payload == {"status": "DownloadScheduled", "requestId": 25}


async def test_tc_081_invalid_signature_nothing_installed_and_an_untrusted_certificate(
        station: Station, files: Path, signer: Signer, tmp_path: Path) -> None:
    s = station
    mark = s.csms.transcript.mark()
    answer = await s.csms.call(CP_ID, "SignedUpdateFirmware", {"requestId": 22, "firmware": signed_firmware(
        s.csms.file_url("v2.bundle"), files / "v2.bundle", signer, signature_of=files / "v1.bundle")})
    assert answer == {"status": "Accepted"}
    seen = await statuses_until_final(s, mark, "SignedFirmwareStatusNotification",
                                      ("Installed", "InstallationFailed", "InvalidSignature", "DownloadFailed"))
    assert seen == ["Downloading", "Downloaded", "InvalidSignature"]
    root: Path = s.root  # type: ignore[attr-defined]
    assert slots.active_slot(str(root)) == "a" and not slots.info(str(root))["slots"]["b"]["installed"]
    assert not boots(s, mark)  # the old version keeps running
    stranger = make_signer(tmp_path / "stranger", "Someone else")
    answer = await s.csms.call(CP_ID, "SignedUpdateFirmware", {"requestId": 23, "firmware": signed_firmware(
        s.csms.file_url("v2.bundle"), files / "v2.bundle", stranger)})
    assert answer == {"status": "InvalidCertificate"}


async def test_tc_080_with_a_revoked_signing_certificate_is_refused_nothing_downloaded_and_the_crl_judged_again(
        station: Station, files: Path, signer: Signer, revoked: Signer, tmp_path: Path) -> None:
    """OCTT TC_080's request (and 2.0.1 TC_L_05_CS's answer) with a signing certificate that the manufacturer CA's CRL
    ([firmware] crl) lists: RevokedCertificate before anything is fetched; no status notification, nothing installed,
    the refusal in the security log (InvalidFirmwareSigningCertificate). The same CA's other certificate is accepted
    with the same CRL (test_tc_080_signed_update_installed).

    Then the CRL counts again later: a bundle whose own signing certificate it lists, asked for by 1.6 Core's
    UpdateFirmware, is refused at its verification (InstallationFailed); and a signed update accepted while its
    certificate was good, whose CRL is refreshed during the download to list it, ends InvalidSignature."""
    s = station
    mark = s.csms.transcript.mark()
    signed = small_bundle(files / "revoked.bundle", revoked, "6.6.7")
    answer = await s.csms.call(CP_ID, "SignedUpdateFirmware", {"requestId": 24, "firmware": signed_firmware(
        s.csms.file_url("revoked.bundle"), signed, revoked)})
    assert answer == {"status": "RevokedCertificate"}
    assert not calls(s, "SignedFirmwareStatusNotification", mark)
    assert not [r for r in s.csms.files.faults.requests if r[1] == "/revoked.bundle"]  # type: ignore[union-attr]
    assert (await s.csms.extended_trigger_message(CP_ID, "FirmwareStatusNotification"))["status"] == "Accepted"
    triggered = await s.wait_call("SignedFirmwareStatusNotification", since=mark)
    assert triggered.payload == {"status": "Idle"}  # no update runs
    root: Path = s.root  # type: ignore[attr-defined]
    assert slots.active_slot(str(root)) == "a" and not slots.info(str(root))["slots"]["b"]["installed"]
    security_log = (root / "var/lib/evse-agent/security.log").read_text()
    assert "InvalidFirmwareSigningCertificate" in security_log and "was revoked on" in security_log

    mark = s.csms.transcript.mark()  # the bundle's own signer is revoked: refused when the bundle is verified
    await s.csms.update_firmware(CP_ID, s.csms.file_url("revoked.bundle"), now())
    seen = await statuses_until_final(s, mark)
    assert seen == ["Downloading", "Downloaded", "Installing", "InstallationFailed"], seen
    assert "the bundle's signing certificate" in json.loads((root / "var/lib/evse-agent" / JOB_FILE).read_text())[
        "detail"]

    later = another_signing_cert(signer, tmp_path / "later", "Later revoked")  # good when the request comes
    crl, before = files / "firmware-ca.crl", (files / "firmware-ca.crl").read_bytes()
    faults = s.csms.files.faults  # type: ignore[union-attr]
    faults.hold_after = 100_000  # the download waits there while the CRL is refreshed, then is cut and resumed
    mark = s.csms.transcript.mark()
    try:
        answer = await s.csms.call(CP_ID, "SignedUpdateFirmware", {"requestId": 26, "retries": 1, "retryInterval": 1,
                                   "firmware": signed_firmware(s.csms.file_url("v2.bundle"), files / "v2.bundle",
                                                               later)})
        assert answer == {"status": "Accepted"}
        assert await asyncio.to_thread(faults.holding.wait, 30)
        make_crl(signer, crl, [revoked.cert, later.cert])
        faults.release.set()
        seen = await statuses_until_final(s, mark, "SignedFirmwareStatusNotification",
                                          ("Installed", "InstallationFailed", "InvalidSignature", "DownloadFailed"))
    finally:
        crl.write_bytes(before)  # the module's other stations have the first CRL
    assert seen[-2:] == ["Downloaded", "InvalidSignature"] and "SignatureVerified" not in seen, seen
    assert slots.active_slot(str(root)) == "a" and not boots(s, mark)
