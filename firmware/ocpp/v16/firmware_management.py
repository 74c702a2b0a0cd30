"""OCPP 1.6 Firmware Management: UpdateFirmware (§5.19) with FirmwareStatusNotification (§4.5), GetDiagnostics
(§5.9) with DiagnosticsStatusNotification (§4.4), and the security whitepaper's GetLog (DiagnosticsLog: the
diagnostics archive; SecurityLog: the security log, firmware/security/security_log.py) with LogStatusNotification.

The update itself is the version-agnostic pipeline (firmware/maintenance/updater.py: download, verify, install
into the inactive slot, wait for no transaction, switch, restart, check, keep or roll back); this module turns
the request into a job and the job's statuses into FirmwareStatusNotification. Intermediate statuses
(Downloading, Downloaded, Installing) are sent when the CSMS is connected, or connects within
``INTERMEDIATE_WAIT_S`` (an agent resuming a job right after a restart), and skipped otherwise; the final
one (DownloadFailed, Installed after the restart into the new version, InstallationFailed after a rollback) waits
for the connection, and the job keeps it until it was answered, across restarts. Once Installed was answered, the
security event FirmwareUpdated (critical: queued in the durable outbox) says which version replaced which; should
the agent stop between the two, the job reports Installed again at the next start, and the event with it (at least
once, never lost).

GetDiagnostics builds the archive at once (firmware/maintenance/diagnostics.py), answers with its file name
(none when it could not be made), then uploads it (HTTP PUT or FTP STOR, firmware/maintenance/transfer.py) with
the request's retries, between Uploading and Uploaded / UploadFailed. An upload is not resumed after a restart
(1.6 does not ask it; the CSMS asks again).

``V16Context.firmware_status`` / ``signed_firmware_status`` / ``firmware_request_id``, ``diagnostics_status`` and
``log_status`` / ``log_request_id`` give what a (Extended)TriggerMessage's notification reports: the state of a
running job or upload and its requestId; Idle (and no requestId) otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.maintenance import transfer
from firmware.maintenance.diagnostics import DiagnosticsSources, build_archive, build_security_archive
from firmware.maintenance.signing import Verdict, judge_signing_certificate
from firmware.maintenance.updater import FirmwareStatus, FirmwareUpdater
from firmware.ocpp.rpc import CallErrorReceived, ConnectionLost, InvalidResponse, after_answering, handles
from firmware.ocpp.v16.context import V16Context
from firmware.security.security_log import SecurityLog

log = logging.getLogger(__name__)

FINAL = (FirmwareStatus.DOWNLOAD_FAILED, FirmwareStatus.INSTALLED, FirmwareStatus.INSTALLATION_FAILED,
         FirmwareStatus.INVALID_SIGNATURE, FirmwareStatus.INSTALL_VERIFICATION_FAILED)
#: FirmwareStatusNotification (1.6 Core) knows fewer statuses than a signed update goes through.
PLAIN = {FirmwareStatus.DOWNLOADING: "Downloading", FirmwareStatus.DOWNLOADED: "Downloaded",
         FirmwareStatus.DOWNLOAD_FAILED: "DownloadFailed", FirmwareStatus.INSTALLING: "Installing",
         FirmwareStatus.INSTALLED: "Installed", FirmwareStatus.INSTALLATION_FAILED: "InstallationFailed",
         FirmwareStatus.INSTALL_VERIFICATION_FAILED: "InstallationFailed",
         FirmwareStatus.INVALID_SIGNATURE: "InstallationFailed", FirmwareStatus.IDLE: "Idle"}
DIAGNOSTICS_DIR = "diagnostics"
#: Between tries of a final status notification while the CSMS does not answer it.
RESEND_S = 5.0
#: How long an intermediate status waits for the CSMS connection before it is skipped: long enough for the agent
#: that resumes a job right after a restart (or a power cut) to connect and be accepted, short enough that an
#: update made offline is not held up for long.
INTERMEDIATE_WAIT_S = 15.0


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class FirmwareManagement:
    def __init__(self, ctx: V16Context, updater: FirmwareUpdater | None,
                 diagnostics: DiagnosticsSources | None, security_log: SecurityLog | None = None) -> None:
        """``security_log``: what GetLog SecurityLog uploads (without: a SecurityLog is Rejected)."""
        self.ctx = ctx
        self.updater = updater
        self.diagnostics = diagnostics
        self.security_log = security_log
        self._diagnostics_status = "Idle"
        self._log_upload: asyncio.Task[None] | None = None
        self._log_status = "Idle"
        self._log_request_id: int | None = None
        ctx.firmware_status = self._firmware_status
        ctx.signed_firmware_status = lambda: self._job_status().value
        ctx.firmware_request_id = self._firmware_request_id
        ctx.diagnostics_status = lambda: self._diagnostics_status
        ctx.log_status = lambda: self._log_status
        ctx.log_request_id = lambda: self._log_request_id
        if diagnostics is not None:  # the keys as GetConfiguration reports them (write-only ones left out)
            diagnostics.keys = lambda: {str(e["key"]): e["value"] for e in ctx.keys.get(None)[0]}
        if updater is not None:
            updater.on_status = self.report_firmware_status
            updater.health = self.accepted_within

    def _job_status(self) -> FirmwareStatus:
        return self.updater.status() if self.updater is not None else FirmwareStatus.IDLE

    def _firmware_status(self) -> str:
        """For a triggered FirmwareStatusNotification (1.6 Core's statuses)."""
        status = self._job_status()
        return PLAIN.get(status, "Installing" if status is not FirmwareStatus.DOWNLOAD_SCHEDULED else "Idle")

    def _firmware_request_id(self) -> int | None:
        """The running signed update's requestId (a triggered SignedFirmwareStatusNotification carries it)."""
        job = self.updater.job if self.updater is not None and self.updater.busy else None
        return job.request_id if job is not None else None

    # --- UpdateFirmware ------------------------------------------------------------------------------

    @handles(Action.update_firmware)
    async def _update_firmware(self, location: str, retrieve_date: str, **_: Any) -> Any:
        return call_result.UpdateFirmware()

    @after_answering(Action.update_firmware)
    def _start_update(self, location: str, retrieve_date: str, retries: int | None = None,
                      retry_interval: int | None = None, **_: Any) -> None:
        if self.updater is None:
            log.warning("UpdateFirmware: this charger cannot update itself", extra={
                "location": transfer.redact(location)})
            return
        when = _parse_time(retrieve_date)
        self.updater.start(location, when.timestamp() if when is not None else 0.0, retries=retries or 0,
                           retry_interval_s=float(retry_interval if retry_interval is not None else 60))

    async def report_firmware_status(self, status: FirmwareStatus) -> None:
        """The updater's statuses to the CSMS: an intermediate one only when connected, a final one until the
        CSMS answered it; after Installed, the security event FirmwareUpdated."""
        job = self.updater.job if self.updater is not None else None
        if job is not None and job.request_id is not None:
            action, payload = "SignedFirmwareStatusNotification", {"status": status.value, "requestId": job.request_id}
        elif status in PLAIN:
            action, payload = "FirmwareStatusNotification", {"status": PLAIN[status]}
        else:
            return
        await self._deliver_status(action, payload, status)
        if status is FirmwareStatus.INSTALLED and job is not None:
            self.ctx.report_security_event("FirmwareUpdated", f"firmware {job.previous_version or 'unknown'} -> "
                                                              f"{job.version} (slot {job.slot})")

    async def _deliver_status(self, action: str, payload: dict[str, Any], status: FirmwareStatus) -> None:
        final = status in FINAL
        while True:
            if not final:
                try:
                    await asyncio.wait_for(self.ctx.online.wait(), INTERMEDIATE_WAIT_S)
                except TimeoutError:
                    return
            await self.ctx.online.wait()
            try:
                await self.ctx.call(action, payload)
                return
            except (ConnectionLost, TimeoutError) as exc:
                log.info("FirmwareStatusNotification not answered", extra={"status": status.value,
                                                                           "error": str(exc)})
                if not final:
                    return
            except (CallErrorReceived, InvalidResponse) as exc:  # the CSMS will not take it: no use insisting
                log.warning("FirmwareStatusNotification refused by the CSMS", extra={"status": status.value,
                                                                                     "error": str(exc)})
                return
            await asyncio.sleep(RESEND_S)

    # --- SignedUpdateFirmware (OCPP 1.6 security whitepaper) -------------------------------------------

    @handles(Action.signed_update_firmware)
    async def _signed_update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int | None = None,
                                      retry_interval: int | None = None, **_: Any) -> Any:
        """The signing certificate is checked against the manufacturer root (``[firmware] trust``) and its CRL
        (``[firmware] crl``, firmware/maintenance/signing.py) before the answer: RevokedCertificate if the CRL
        lists it, InvalidCertificate if it is not issued by the root, not valid now, or its revocation status
        cannot be told. AcceptedCanceled when it replaces an update that has not switched slots yet; Rejected while
        one is being installed. The signature over the file is checked after the download (SignatureVerified /
        InvalidSignature)."""
        updater = self.updater
        if updater is None:
            return call_result.SignedUpdateFirmware(status="Rejected")
        pem = str(firmware.get("signing_certificate", ""))
        judged = await judge_signing_certificate(pem, updater.settings, Path(self.ctx.config.state_dir))
        if judged.verdict is not Verdict.VALID:
            log.warning("SignedUpdateFirmware: signing certificate refused", extra={
                "request_id": request_id, "verdict": judged.verdict.value, "error": judged.reason})
            # the whitepaper's event for it (not critical: the security log keeps it)
            self.ctx.report_security_event("InvalidFirmwareSigningCertificate", judged.reason[:255])
            return call_result.SignedUpdateFirmware(
                status="RevokedCertificate" if judged.verdict is Verdict.REVOKED else "InvalidCertificate")
        retrieve = _parse_time(firmware.get("retrieve_date_time"))
        install = _parse_time(firmware.get("install_date_time"))
        outcome = updater.start(str(firmware.get("location", "")), retrieve.timestamp() if retrieve else 0.0,
                                retries=retries or 0, retry_interval_s=float(retry_interval or 60),
                                request_id=request_id, signing_certificate=pem,
                                signature=str(firmware.get("signature", "")),
                                install_at=install.timestamp() if install else 0.0)
        status = {"accepted": "Accepted", "replaced": "AcceptedCanceled"}.get(outcome, "Rejected")
        return call_result.SignedUpdateFirmware(status=status)

    async def accepted_within(self, timeout_s: float) -> str | None:
        """The new agent's check after the switch: accepted by the CSMS (its BootNotification answered Accepted)
        within ``timeout_s``; the hardware and the tasks were started before the adapter runs."""
        try:
            await asyncio.wait_for(self.ctx.online.wait(), timeout_s)
        except TimeoutError:
            return f"not accepted by the CSMS within {timeout_s:g} s"
        return None

    # --- GetDiagnostics ------------------------------------------------------------------------------

    @handles(Action.get_diagnostics)
    async def _get_diagnostics(self, location: str, retries: int | None = None, retry_interval: int | None = None,
                               start_time: str | None = None, stop_time: str | None = None, **_: Any) -> Any:
        sources = self.diagnostics
        why = transfer.check_url(location)
        if sources is None or why is not None:
            log.warning("GetDiagnostics: nothing to upload", extra={"location": transfer.redact(location),
                                                                    "reason": why or "no diagnostics sources"})
            return call_result.GetDiagnostics()
        try:
            archive = await asyncio.to_thread(build_archive, sources, sources.state_dir / DIAGNOSTICS_DIR,
                                              _parse_time(start_time), _parse_time(stop_time))
        except Exception:
            log.exception("GetDiagnostics: the archive could not be made")
            return call_result.GetDiagnostics()
        self.ctx.spawn(self._upload(location, archive, retries or 0, float(retry_interval or 60)))
        return call_result.GetDiagnostics(file_name=archive.name)

    async def _upload(self, location: str, archive: Path, retries: int, interval_s: float) -> None:
        await asyncio.sleep(0)  # the answer (with the file name) goes out first
        self._diagnostics_status = "Uploading"
        await self._notification("DiagnosticsStatusNotification", {"status": "Uploading"})
        ok = await self._send_archive(location, archive, retries, interval_s)
        self._diagnostics_status = "Idle"
        await self._notification("DiagnosticsStatusNotification", {"status": "Uploaded" if ok else "UploadFailed"})

    async def _send_archive(self, location: str, archive: Path, retries: int, interval_s: float) -> bool:
        """Upload with ``retries`` more attempts after the first, ``interval_s`` apart; True once it went."""
        timeout = self.updater.settings.transfer_timeout_s if self.updater is not None else 30.0
        tls = self.updater.settings.transfer_tls if self.updater is not None else None
        for attempt in range(1, retries + 2):
            try:
                where = await asyncio.to_thread(transfer.upload, location, archive, timeout_s=timeout, tls=tls)
            except transfer.TransferError as exc:
                log.warning("log upload failed", extra={"attempt": attempt, "attempts_left": retries + 1 - attempt,
                                                        "error": str(exc)})
                if not exc.resumable or attempt > retries:
                    return False
                await asyncio.sleep(interval_s)
                continue
            log.info("log uploaded", extra={"location": where})
            return True
        return False

    async def _notification(self, action: str, payload: dict[str, Any]) -> None:
        try:
            await self.ctx.call(action, payload)
        except (ConnectionLost, TimeoutError, CallErrorReceived, InvalidResponse) as exc:
            log.info("status notification not delivered", extra={"action": action, "payload": payload,
                                                                  "error": str(exc)})

    # --- GetLog (OCPP 1.6 security whitepaper) ---------------------------------------------------------

    @handles(Action.get_log)
    async def _get_log(self, log_type: str, request_id: int, log: dict[str, Any], retries: int | None = None,
                       retry_interval: int | None = None, **_: Any) -> Any:
        """DiagnosticsLog: the diagnostics archive; SecurityLog: the security log's events (an archive of the same
        form, firmware/maintenance/diagnostics.py); either within oldestTimestamp / latestTimestamp, uploaded
        between LogStatusNotification Uploading and Uploaded / UploadFailure (with the requestId)."""
        sources, security = self.diagnostics, self.security_log
        location = str(log.get("remote_location", ""))  # the library hands nested fields in snake_case too
        start, stop = _parse_time(log.get("oldest_timestamp")), _parse_time(log.get("latest_timestamp"))
        reason = transfer.check_url(location)
        if log_type == "DiagnosticsLog" and sources is None:
            reason = reason or "no diagnostics sources"
        elif log_type == "SecurityLog" and security is None:
            reason = reason or "no security log kept"
        elif log_type not in ("DiagnosticsLog", "SecurityLog"):
            reason = reason or "unknown log type"
        if reason is not None:
            logging.getLogger(__name__).info("GetLog rejected", extra={"log_type": log_type, "reason": reason})
            return call_result.GetLog(status="Rejected")
        dest = Path(self.ctx.config.state_dir) / DIAGNOSTICS_DIR
        try:
            if log_type == "SecurityLog":
                assert security is not None
                archive = await asyncio.to_thread(build_security_archive, self.ctx.config.charge_point_id,
                                                  security.files(), dest, start, stop)
            else:
                assert sources is not None
                archive = await asyncio.to_thread(build_archive, sources, sources.state_dir / DIAGNOSTICS_DIR,
                                                  start, stop)
        except Exception:
            logging.getLogger(__name__).exception("GetLog: the archive could not be made")
            return call_result.GetLog(status="Rejected")
        canceled = self._log_upload is not None and not self._log_upload.done()
        if canceled:
            assert self._log_upload is not None
            self._log_upload.cancel()
        self._log_upload = asyncio.create_task(self._upload_log(request_id, location, archive, retries or 0,
                                                                float(retry_interval or 60)))
        return call_result.GetLog(status="AcceptedCanceled" if canceled else "Accepted", filename=archive.name)

    async def _upload_log(self, request_id: int, location: str, archive: Path, retries: int,
                          interval_s: float) -> None:
        await asyncio.sleep(0)
        self._log_status, self._log_request_id = "Uploading", request_id
        try:
            await self._notification("LogStatusNotification", {"status": "Uploading", "requestId": request_id})
            ok = await self._send_archive(location, archive, retries, interval_s)
        finally:
            if asyncio.current_task() is self._log_upload:  # not when canceled by the next one: that one's state
                self._log_status, self._log_request_id = "Idle", None
        await self._notification("LogStatusNotification", {"status": "Uploaded" if ok else "UploadFailure",
                                                           "requestId": request_id})
