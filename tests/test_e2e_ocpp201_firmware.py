"""OCPP 2.0.1 L Firmware management and N GetLog end to end: the agent process with ``[ocpp] version = "2.0.1"``,
simulated devices on ptys, the simulated 2.0.1 CSMS (every message checked against the library's 2.0.1 schemas)
serving the firmware over HTTP and taking the uploads (HTTPS: the same server wrapped in ssl, checked against
``[firmware] transfer_ca``), and A/B slots in a controller root the agent may write, as
tests/test_e2e_firmware.py runs them for 1.6 (the agent is supervised as systemd would: the restart the update
asks for is done; the version it reports is the active slot's).

The pipeline and the uploads are the ones 1.6 uses (tested in depth there and in tests/test_updater.py); these
tests check the 2.0.1 translation. Each test names the OCTT 2.0.1 test case(s) it stands for.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.maintenance import slots
from firmware.maintenance.bundle import load_private_key
from firmware.ocpp.timestamps import timestamp
from sim.csms.transcript import EntryKind, TranscriptEntry
from tests.bundles import slot_station, small_bundle
from tests.file_servers import http_file_server
from tests.pki import FilesPki, Signer, make_files_pki, make_signer, server_context
from tests.station import CP_ID, WAIT_S, Station

FINAL = ("Installed", "InstallationFailed", "DownloadFailed", "InvalidSignature", "InstallVerificationFailed")


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, signer: Signer) -> Path:
    """What the CSMS offers: v1 (installed first), v2, and a bundle signed by a stranger."""
    where = tmp_path_factory.mktemp("files")
    small_bundle(where / "v1.bundle", signer, "1.0.0")
    small_bundle(where / "v2.bundle", signer, "1.1.0")
    small_bundle(where / "stranger.bundle", make_signer(where / "stranger", "Someone else"), "6.6.6")
    return where


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> FilesPki:
    """The HTTPS file servers' certificates: the charger trusts the files CA ([firmware] transfer_ca)."""
    return make_files_pki(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def station(tmp_path: Path, files: Path, signer: Signer, tls: FilesPki) -> AsyncIterator[Station]:
    async with slot_station(tmp_path / "controller", files / "v1.bundle", signer, files, ocpp="2.0.1",
                            firmware_extra=f'transfer_ca = "{tls.ca.path}"\n') as s:
        yield s


def at(seconds: float = 0) -> str:
    return timestamp(datetime.now(UTC) + timedelta(seconds=seconds))


def secure(location: str, file: Path, signer: Signer, *, signature_of: Path | None = None) -> dict[str, Any]:
    """UpdateFirmware's firmware field for L01: the signing certificate and an ECDSA-SHA256 signature over the file
    (or over another file: a wrong signature)."""
    signature = load_private_key(signer.key).sign((signature_of or file).read_bytes(), ec.ECDSA(hashes.SHA256()))
    return {"location": location, "retrieveDateTime": at(), "signingCertificate": signer.cert.read_text(),
            "signature": base64.b64encode(signature).decode()}


async def update(s: Station, request_id: int, firmware: dict[str, Any], **extra: Any) -> str:
    answer = await s.csms.call(CP_ID, "UpdateFirmware", {"requestId": request_id, "firmware": firmware, **extra},
                               timeout_s=WAIT_S)
    return str(answer["status"])


def notifications(s: Station, since: int, action: str = "FirmwareStatusNotification") -> list[dict[str, Any]]:
    return [dict(e.payload) for e in s.calls(action, since)]


async def until_final(s: Station, since: int, action: str = "FirmwareStatusNotification",
                      final: tuple[str, ...] = FINAL) -> list[str]:
    await s.wait_call(action, lambda e: e.payload["status"] in final, since=since, timeout_s=60)
    return [p["status"] for p in notifications(s, since, action)]


def boots(s: Station, since: int) -> list[TranscriptEntry]:
    return s.calls("BootNotification", since)


async def triggered(s: Station, message: str, evse: dict[str, Any] | None = None) -> dict[str, Any]:
    mark = s.mark()
    request: dict[str, Any] = {"requestedMessage": message} | ({} if evse is None else {"evse": evse})
    answer = await s.csms.call(CP_ID, "TriggerMessage", request, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    return dict((await s.wait_call(message, since=mark)).payload)


def active(s: Station) -> str | None:
    return slots.active_slot(str(s.root))  # type: ignore[attr-defined]


# --- L Firmware management ------------------------------------------------------------------------------------


async def _installed_over_https(s: Station, location: str, files: Path, signer: Signer) -> None:
    """TC_L_01_CS's update from ``location``, to Installed and Idle again."""
    mark = s.mark()
    assert await update(s, 31, secure(location, files / "v2.bundle", signer)) == "Accepted"
    seen = await until_final(s, mark)
    assert seen == ["Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting",
                    "Installed"], seen
    assert {p.get("requestId") for p in notifications(s, mark)} == {31}
    for evse in (1, 2):
        await s.wait_status(evse, "Unavailable", since=mark)
    booted = boots(s, mark)
    assert [(b.payload["reason"], b.payload["chargingStation"]["firmwareVersion"]) for b in booted] == [
        ("FirmwareUpdate", "1.1.0")]
    installed = next(e for e in s.calls("FirmwareStatusNotification", mark) if e.payload["status"] == "Installed")
    rebooting = next(e for e in s.calls("FirmwareStatusNotification", mark)
                     if e.payload["status"] == "InstallRebooting")
    assert rebooting.seq < booted[0].seq < installed.seq
    for evse in (1, 2):
        await s.wait_status(evse, "Available", since=installed.seq)
    assert active(s) == "b" and s.exit_codes == [75]
    assert await triggered(s, "FirmwareStatusNotification") == {"status": "Idle"}  # TC_F_18_CS
    assert await triggered(s, "FirmwareStatusNotification", {"id": 1}) == {"status": "Idle"}  # TC_F_17_CS


async def test_tc_l_01_cs_secure_firmware_update_installed(station: Station, files: Path, signer: Signer, tls: FilesPki,
                                                           tmp_path: Path) -> None:
    """TC_L_01_CS, from an https:// location (the server's certificate checked against [firmware] transfer_ca):
    Accepted; Downloading, Downloaded, SignatureVerified, Installing, InstallRebooting with the requestId; the EVSEs
    Unavailable meanwhile; the restart into the new version boots with reason FirmwareUpdate, then Installed, then the
    EVSEs Available again; a triggered FirmwareStatusNotification then says Idle (TC_F_18_CS), also when the trigger
    names an EVSE (TC_F_17_CS: the EVSE is not relevant to it). Then a server whose certificate another CA issued:
    DownloadFailed after the first attempt whatever the retries, nothing asked of it."""
    s = station
    assert boots(s, 0)[-1].payload["chargingStation"]["firmwareVersion"] == "1.0.0"
    assert boots(s, 0)[-1].payload["reason"] == "PowerUp"
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv/v2.bundle").write_bytes((files / "v2.bundle").read_bytes())
    with (http_file_server(tmp_path / "srv", tls=server_context(tls.server)) as https,
          http_file_server(tmp_path / "srv", tls=server_context(tls.stranger)) as stranger):
        await _installed_over_https(s, https.url("v2.bundle"), files, signer)
        mark = s.mark()
        firmware = secure(stranger.url("v2.bundle"), files / "v2.bundle", signer)
        assert await update(s, 32, firmware, retries=3, retryInterval=1) == "Accepted"
        assert await until_final(s, mark) == ["Downloading", "DownloadFailed"]
        assert stranger.faults.requests == [] and not boots(s, mark)


async def test_tc_l_03_cs_download_scheduled_then_tc_l_10_cs_accepted_canceled_by_tc_l_02_cs_install_scheduled(
        station: Station, files: Path, signer: Signer) -> None:
    """TC_L_03_CS: a retrieveDateTime in the future is DownloadScheduled (a TriggerMessage says so, with the
    requestId). TC_L_10_CS: a second UpdateFirmware replaces it — AcceptedCanceled — and every later notification is
    the second's. TC_L_02_CS: the second has an installDateTime a moment ahead: InstallScheduled after
    SignatureVerified, then Installing, InstallRebooting and Installed."""
    s = station
    mark = s.mark()
    later = secure(s.csms.file_url("v2.bundle"), files / "v2.bundle", signer) | {"retrieveDateTime": at(3600)}
    assert await update(s, 41, later) == "Accepted"
    await s.wait_call("FirmwareStatusNotification", lambda e: e.payload == {"status": "DownloadScheduled",
                                                                             "requestId": 41}, since=mark)
    assert await triggered(s, "FirmwareStatusNotification") == {"status": "DownloadScheduled", "requestId": 41}
    second = s.mark()
    soon = secure(s.csms.file_url("v2.bundle"), files / "v2.bundle", signer) | {"installDateTime": at(2)}
    assert await update(s, 42, soon, retries=1, retryInterval=1) == "AcceptedCanceled"
    seen = await until_final(s, second)
    assert seen == ["Downloading", "Downloaded", "SignatureVerified", "InstallScheduled", "Installing",
                    "InstallRebooting", "Installed"], seen
    assert {p.get("requestId") for p in notifications(s, second)} == {42}
    assert boots(s, second)[-1].payload["chargingStation"]["firmwareVersion"] == "1.1.0"


async def test_tc_l_05_cs_invalid_certificate(station: Station, files: Path, signer: Signer, tmp_path: Path) -> None:
    """TC_L_05_CS: a signing certificate not issued by the manufacturer root is InvalidCertificate before anything
    is downloaded, and the security event InvalidFirmwareSigningCertificate is logged (in the security log; not a
    critical event, so no SecurityEventNotification); a signature without a certificate is Rejected."""
    s = station
    mark = s.mark()
    stranger = make_signer(tmp_path / "stranger", "Someone else")
    assert await update(s, 51, secure(s.csms.file_url("v2.bundle"), files / "v2.bundle", stranger)) == \
        "InvalidCertificate"
    unsigned = secure(s.csms.file_url("v2.bundle"), files / "v2.bundle", signer)
    del unsigned["signingCertificate"]
    assert await update(s, 52, unsigned) == "Rejected"
    await triggered(s, "FirmwareStatusNotification")  # Idle: nothing started
    assert notifications(s, mark) == [{"status": "Idle"}]
    assert not s.csms.files.faults.requests  # type: ignore[union-attr]
    security_log = s.root / "var/lib/evse-agent/security.log"  # type: ignore[attr-defined]
    assert "InvalidFirmwareSigningCertificate" in [json.loads(line)["type"]
                                                   for line in security_log.read_text().splitlines()]


async def test_tc_l_06_cs_invalid_signature_nothing_installed(station: Station, files: Path, signer: Signer) -> None:
    """TC_L_06_CS: a signature that is not over the file: Downloading, Downloaded, InvalidSignature; nothing
    installed, no restart, the old version keeps running."""
    s = station
    mark = s.mark()
    wrong = secure(s.csms.file_url("v2.bundle"), files / "v2.bundle", signer, signature_of=files / "v1.bundle")
    assert await update(s, 61, wrong) == "Accepted"
    assert await until_final(s, mark) == ["Downloading", "Downloaded", "InvalidSignature"]
    assert {p.get("requestId") for p in notifications(s, mark)} == {61}
    assert active(s) == "a" and not boots(s, mark) and s.exit_codes == []


async def test_tc_l_07_cs_download_failed_after_the_retries(station: Station) -> None:
    """TC_L_07_CS (here with L02, no signature): a location that keeps failing: Downloading on each of the 1 + retries
    attempts, then DownloadFailed; a FirmwareStatusNotification triggered meanwhile says Downloading with the
    requestId (TC_F_19_CS)."""
    s = station
    mark = s.mark()
    answer = await s.csms.update_firmware(CP_ID, s.csms.file_url("missing.bundle"), at(), retries=2, retry_interval=1,
                                          request_id=71)  # the CSMS's typed command: L02 in 2.0.1
    assert answer == {"status": "Accepted"}
    await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Downloading", since=mark)
    downloading = await triggered(s, "FirmwareStatusNotification")  # TC_F_19_CS
    assert downloading == {"status": "Downloading", "requestId": 71}
    assert await until_final(s, mark) == ["Downloading"] * 4 + ["DownloadFailed"]  # the triggered one among them
    assert {p.get("requestId") for p in notifications(s, mark)} == {71}
    assert [r[:2] for r in s.csms.files.faults.requests] == [("GET", "/missing.bundle")] * 3  # type: ignore[union-attr]
    assert not boots(s, mark)


async def test_tc_l_08_cs_install_verification_failed(station: Station, files: Path, signer: Signer) -> None:
    """TC_L_08_CS: the signature over the file verifies, but the bundle itself is not signed by the manufacturer
    root: SignatureVerified, then InstallVerificationFailed; nothing installed."""
    s = station
    mark = s.mark()
    firmware = secure(s.csms.file_url("stranger.bundle"), files / "stranger.bundle", signer)
    assert await update(s, 81, firmware) == "Accepted"
    assert await until_final(s, mark) == ["Downloading", "Downloaded", "SignatureVerified",
                                          "InstallVerificationFailed"]
    assert active(s) == "a" and not boots(s, mark)


async def test_l01_new_version_not_accepted_rolled_back_installation_failed(station: Station, files: Path,
                                                                           signer: Signer) -> None:
    """L01 InstallationFailed (TC_L_08_CS's other outcome): the new version comes up but the CSMS does not accept it
    within the health timeout; the pipeline switches back, the old version boots (reason FirmwareUpdate, its own
    version) and reports InstallationFailed with the requestId."""
    s = station
    mark = s.mark()
    assert await update(s, 91, secure(s.csms.file_url("v2.bundle"), files / "v2.bundle", signer)) == "Accepted"
    await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Installing", since=mark)
    s.profile.boot_statuses = ["Rejected"]  # the CSMS will not have the new version
    await s.wait_call("BootNotification", lambda e: e.payload["chargingStation"]["firmwareVersion"] == "1.1.0",
                      since=mark)
    new_boot = s.mark()
    await s.wait_call("BootNotification", lambda e: e.payload["chargingStation"]["firmwareVersion"] == "1.0.0",
                      since=new_boot, timeout_s=60)
    s.profile.boot_statuses = ["Accepted"]  # the old version is welcome again
    seen = await until_final(s, mark)
    assert seen[-1] == "InstallationFailed" and "Installed" not in seen, seen
    assert {p.get("requestId") for p in notifications(s, mark)} == {91}
    assert {b.payload["reason"] for b in boots(s, mark)} == {"FirmwareUpdate"}
    assert active(s) == "a" and s.exit_codes == [75, 75]  # into the new version, and back


async def test_tc_l_15_cs_installs_once_the_transaction_ended(station: Station) -> None:
    """TC_L_15_CS (here with L02, no signature): during a transaction the firmware is downloaded and verified, the
    idle EVSE is Unavailable at once (L01 rules: no new session meanwhile), the charging one keeps charging; once
    its transaction ended it is Unavailable too, and only then InstallRebooting and the restart; Installed, and
    both EVSEs Available again."""
    s = station
    s.csms.behaviour.id_tags.accept("04A1B2C3")
    mark = s.mark()
    s.ev(1).plug()
    await s.tap("04A1B2C3")
    await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
    update_mark = s.mark()
    plain = {"location": s.csms.file_url("v2.bundle"), "retrieveDateTime": at()}
    assert await update(s, 151, plain) == "Accepted"
    await s.wait_status(2, "Unavailable", since=update_mark)
    await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] == "Installing", since=update_mark)
    job = s.root / "var/lib/evse-agent/firmware-update.json"  # type: ignore[attr-defined]
    await s.wait_until(lambda: json.loads(job.read_text())["step"] == "waiting_idle", WAIT_S, "waiting for idle")
    assert "InstallRebooting" not in [p["status"] for p in notifications(s, update_mark)]
    assert "Unavailable" not in s.statuses(1, update_mark)

    s.ev(1).unplug()
    ended = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=update_mark)
    seen = await until_final(s, update_mark)
    assert seen == ["Downloading", "Downloaded", "Installing", "InstallRebooting", "Installed"], seen
    unavailable_1 = await s.wait_status(1, "Unavailable", since=update_mark)
    rebooting = next(e for e in s.calls("FirmwareStatusNotification", update_mark)
                     if e.payload["status"] == "InstallRebooting")
    assert ended.seq < unavailable_1.seq < rebooting.seq < boots(s, update_mark)[0].seq
    installed = next(e for e in s.calls("FirmwareStatusNotification", update_mark)
                     if e.payload["status"] == "Installed")
    for evse in (1, 2):
        await s.wait_status(evse, "Available", since=installed.seq)


# --- N GetLog -------------------------------------------------------------------------------------------------


def archive_members(s: Station, name: str) -> dict[str, bytes]:
    uploads: Path = s.csms.files.uploads  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO((uploads / name).read_bytes())) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


async def get_log(s: Station, log_type: str, request_id: int, location: str, **extra: Any) -> dict[str, Any]:
    log = {"remoteLocation": location, **{k: extra.pop(k) for k in ("oldestTimestamp", "latestTimestamp")
                                          if k in extra}}
    return await s.csms.call(CP_ID, "GetLog", {"logType": log_type, "requestId": request_id, "log": log, **extra},
                             timeout_s=WAIT_S)


async def test_tc_n_25_cs_diagnostics_log_uploaded(station: Station) -> None:
    """TC_N_25_CS: GetLog DiagnosticsLog Accepted with the filename; LogStatusNotification Uploading then Uploaded
    with the requestId; the archive holds the agent's log, its configuration with the 2.0.1 variables, the live
    self-test and the storage summary. A triggered LogStatusNotification afterwards says Idle (TC_F_15_CS)."""
    s = station
    mark = s.mark()
    answer = await get_log(s, "DiagnosticsLog", 251, s.csms.file_url("logs/"))
    assert answer["status"] == "Accepted" and answer["filename"].startswith(f"diagnostics-{CP_ID}-")
    seen = await until_final(s, mark, "LogStatusNotification", ("Uploaded", "UploadFailure"))
    assert seen == ["Uploading", "Uploaded"]
    assert {p["requestId"] for p in notifications(s, mark, "LogStatusNotification")} == {251}
    members = archive_members(s, answer["filename"])
    assert sorted(members) == ["configuration.json", "log.jsonl", "selftest.json", "storage.json"]
    assert b'"msg": "agent running"' in members["log.jsonl"]
    keys = json.loads(members["configuration.json"])["keys"]
    assert keys["OCPPCommCtrlr.HeartbeatInterval"] == "300"
    assert keys["OCPPCommCtrlr.FileTransferProtocols"] == "FTP,FTPS,HTTP,HTTPS"
    assert await triggered(s, "LogStatusNotification") == {"status": "Idle"}  # TC_F_15_CS


async def test_tc_n_36_cs_second_request_cancels_the_first_then_tc_n_26_cs_upload_failed(station: Station) -> None:
    """TC_N_36_CS: an upload that keeps failing (a triggered LogStatusNotification says Uploading and its requestId
    while it waits for its retry: TC_F_16_CS) is replaced by a second GetLog: AcceptedCanceled, LogStatusNotification
    AcceptedCanceled for the first requestId, then Uploading and Uploaded for the second. TC_N_26_CS: an upload that
    fails on every retry: Uploading, UploadFailure; one the server refuses saying why: PermissionDenied (403),
    NotSupportedOperation (405), at once."""
    s = station
    mark = s.mark()
    first = await get_log(s, "DiagnosticsLog", 361, "ftp://127.0.0.1:1/", retries=5, retryInterval=60)
    assert first["status"] == "Accepted"
    await s.wait_call("LogStatusNotification", lambda e: e.payload == {"status": "Uploading", "requestId": 361},
                      since=mark)
    assert await triggered(s, "LogStatusNotification") == {"status": "Uploading", "requestId": 361}
    second = s.mark()
    answer = await get_log(s, "DiagnosticsLog", 362, s.csms.file_url("logs/"))
    assert answer["status"] == "AcceptedCanceled"
    await s.wait_call("LogStatusNotification", lambda e: e.payload == {"status": "Uploaded", "requestId": 362},
                      since=second)
    assert notifications(s, second, "LogStatusNotification") == [
        {"status": "AcceptedCanceled", "requestId": 361}, {"status": "Uploading", "requestId": 362},
        {"status": "Uploaded", "requestId": 362}]

    failing = s.mark()
    answer = await get_log(s, "DiagnosticsLog", 261, "http://127.0.0.1:1/logs/", retries=1, retryInterval=1)
    assert answer["status"] == "Accepted"
    assert await until_final(s, failing, "LogStatusNotification", ("Uploaded", "UploadFailure")) == [
        "Uploading", "UploadFailure"]
    files = s.csms.files
    assert files is not None
    for request_id, (refused_with, status) in enumerate(((403, "PermissionDenied"), (405, "NotSupportedOperation")),
                                                        262):
        files.faults.status, refused = refused_with, s.mark()  # the server says why: final at once, no retry
        assert (await get_log(s, "DiagnosticsLog", request_id, s.csms.file_url("logs/"), retries=3,
                              retryInterval=60))["status"] == "Accepted"
        await s.wait_call("LogStatusNotification", lambda e, r=request_id, st=status: e.payload == {
            "status": st, "requestId": r}, since=refused)
        assert [r[0] for r in files.faults.requests].count("PUT") == 1 + request_id - 261  # one each


async def test_tc_n_35_cs_security_log_uploaded_within_its_window(tmp_path: Path) -> None:
    """TC_N_35_CS: GetLog SecurityLog: the security log's events within oldestTimestamp / latestTimestamp in the
    uploaded archive, Uploading then Uploaded with the requestId. A location that cannot be used is Rejected.
    Monitoring (SetMonitoringLevel and its kin) is not built: NotSupported."""
    files = tmp_path / "files"
    files.mkdir()
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, csms_files=files) as s:
        older, newer = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
        (tmp_path / "security.log").write_text(  # what an earlier run of the agent logged
            json.dumps({"timestamp": older.isoformat(), "type": "StartupOfTheDevice"}) + "\n"
            + json.dumps({"timestamp": newer.isoformat(), "type": "FirmwareUpdated", "techInfo": "1.0 -> 1.1"}) + "\n")
        await s.start_agent()
        mark = s.mark()
        answer = await get_log(s, "SecurityLog", 351, s.csms.file_url("logs/"),
                               oldestTimestamp=timestamp(newer - timedelta(days=1)), latestTimestamp=at())
        assert answer["status"] == "Accepted" and answer["filename"].startswith(f"securitylog-{CP_ID}-")
        seen = await until_final(s, mark, "LogStatusNotification", ("Uploaded", "UploadFailure"))
        assert seen == ["Uploading", "Uploaded"]
        assert {p["requestId"] for p in notifications(s, mark, "LogStatusNotification")} == {351}
        events = [json.loads(line) for line in archive_members(s, answer["filename"])["security.jsonl"].splitlines()]
        # the earlier run's StartupOfTheDevice is outside the window; this run's own one (now) is inside it
        assert [e["type"] for e in events] == ["FirmwareUpdated", "StartupOfTheDevice"]
        assert datetime.fromisoformat(events[1]["timestamp"]) > newer
        assert (await get_log(s, "SecurityLog", 353, "gopher://example/"))["status"] == "Rejected"
        monitoring = s.mark()  # N's monitoring is not built: its requests are NotSupported
        await s.send_raw(json.dumps([2, "m1", "SetMonitoringLevel", {"severity": 5}]))
        reply = await s.wait_reply("m1", since=monitoring)
        assert (reply.kind, reply.error_code) == (EntryKind.CALLERROR, "NotSupported")
