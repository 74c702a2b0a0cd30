"""OCPP 1.6 Firmware Management: UpdateFirmware (§5.19) with FirmwareStatusNotification (§4.5), GetDiagnostics (§5.9)
with DiagnosticsStatusNotification (§4.4), and the security whitepaper's GetLog (DiagnosticsLog: the diagnostics
archive; SecurityLog: the security log, firmware/security/security_log.py) with LogStatusNotification.

The update itself is the version-agnostic pipeline (firmware/maintenance/updater.py: download, verify, install into
the inactive slot, wait for no transaction, switch, restart, check, keep or roll back); this module turns the
request into a job and the job's statuses into FirmwareStatusNotification. Intermediate statuses (Downloading,
Downloaded, Installing) are sent when the CSMS is connected, or connects within
``session_context.INTERMEDIATE_WAIT_S`` (an agent resuming a job right after a restart), and skipped otherwise; the
final one (DownloadFailed, Installed after the restart into the new version, InstallationFailed after a rollback)
waits for the connection, and the job keeps it until it was answered, across restarts. Once Installed was answered,
the security event FirmwareUpdated (critical: queued in the durable outbox) says which version replaced which,
exactly once per update: it is queued in the same database commit that records it as raised for that job (a
setting), so the Installed that a restart reports again (it was answered but not yet recorded as such) does not
raise it again, and a stop before that commit raises it then.

GetDiagnostics builds the archive at once (firmware/maintenance/diagnostics.py), answers with its file name
(none when it could not be made), then uploads it (HTTP PUT or FTP STOR, firmware/maintenance/transfer.py) with
the request's retries, between Uploading and Uploaded / UploadFailed; a new GetDiagnostics replaces one under way.
GetLog is the version-agnostic upload of firmware/maintenance/log_upload.py (the 2.0.1 adapter's too). Both are
durable jobs there: after a restart the upload a stop interrupted is done again (:meth:`resume_uploads`), and its
final status (Uploaded / UploadFailed, LogStatusNotification's outcome) waits for the CSMS's answer like the
firmware's, so each upload ends with exactly one.

``V16Context.firmware_status`` / ``signed_firmware_status`` / ``firmware_request_id``, ``diagnostics_status`` and
``log_status`` / ``log_request_id`` give what a (Extended)TriggerMessage's notification reports: the state of a
running job or upload and its requestId; Idle (and no requestId) otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.maintenance import transfer
from firmware.maintenance.log_upload import DIAGNOSTICS_JOB, DIAGNOSTICS_LOG, LOG_JOB, LogUploads, LogUploadStatus
from firmware.maintenance.updater import FINAL_STATUSES, FirmwareStatus, FirmwareUpdater
from firmware.ocpp.firmware_signing import refused_signing_certificate
from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.security_events import firmware_updated_once
from firmware.ocpp.timestamps import parse_timestamp, unix_seconds
from firmware.ocpp.v16.context import V16Context

log = logging.getLogger(__name__)

#: FirmwareStatusNotification (1.6 Core) knows fewer statuses than a signed update goes through.
PLAIN = {FirmwareStatus.DOWNLOADING: "Downloading", FirmwareStatus.DOWNLOADED: "Downloaded",
         FirmwareStatus.DOWNLOAD_FAILED: "DownloadFailed", FirmwareStatus.INSTALLING: "Installing",
         FirmwareStatus.INSTALLED: "Installed", FirmwareStatus.INSTALLATION_FAILED: "InstallationFailed",
         FirmwareStatus.INSTALL_VERIFICATION_FAILED: "InstallationFailed",
         FirmwareStatus.INVALID_SIGNATURE: "InstallationFailed", FirmwareStatus.IDLE: "Idle"}


class FirmwareManagement:
    def __init__(self, ctx: V16Context, updater: FirmwareUpdater | None, uploads: LogUploads) -> None:
        """``uploads``: GetDiagnostics' and GetLog's archives and uploads (firmware/maintenance/log_upload.py)."""
        self.ctx = ctx
        self.updater = updater
        self.uploads = uploads
        self._diagnostics_status = "Idle"
        ctx.firmware_status = self._firmware_status
        ctx.signed_firmware_status = lambda: self._job_status().value
        ctx.firmware_request_id = self._firmware_request_id
        ctx.diagnostics_status = lambda: self._diagnostics_status
        ctx.log_status = lambda: uploads.status.value
        ctx.log_request_id = lambda: uploads.request_id
        if uploads.diagnostics is not None:  # the keys as GetConfiguration reports them (write-only ones left out)
            uploads.diagnostics.keys = lambda: {str(e["key"]): e["value"] for e in ctx.keys.get(None)[0]}
        if updater is not None:
            updater.on_status = self.report_firmware_status
            updater.health = ctx.accepted_within

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
        self.updater.start(location, unix_seconds(retrieve_date), retries=retries or 0,
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
        await self.ctx.notify_status(action, payload, final=status in FINAL_STATUSES)
        if status is FirmwareStatus.INSTALLED and job is not None:
            firmware_updated_once(self.ctx.db, self.ctx.report_security_event, job)

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
        refused = await refused_signing_certificate(pem, updater.settings, Path(self.ctx.config.state_dir),
                                                    self.ctx.report_security_event, action="SignedUpdateFirmware",
                                                    request_id=request_id)
        if refused is not None:
            return call_result.SignedUpdateFirmware(status=refused)
        outcome = updater.start(str(firmware.get("location", "")), unix_seconds(firmware.get("retrieve_date_time")),
                                retries=retries or 0, retry_interval_s=float(retry_interval or 60),
                                request_id=request_id, signing_certificate=pem,
                                signature=str(firmware.get("signature", "")),
                                install_at=unix_seconds(firmware.get("install_date_time")))
        status = {"accepted": "Accepted", "replaced": "AcceptedCanceled"}.get(outcome, "Rejected")
        return call_result.SignedUpdateFirmware(status=status)

    # --- GetDiagnostics ------------------------------------------------------------------------------

    @handles(Action.get_diagnostics)
    async def _get_diagnostics(self, location: str, retries: int | None = None, retry_interval: int | None = None,
                               start_time: str | None = None, stop_time: str | None = None, **_: Any) -> Any:
        why = self.uploads.refusal(DIAGNOSTICS_LOG, location)
        if why is not None:
            log.warning("GetDiagnostics: nothing to upload", extra={"location": transfer.redact(location),
                                                                    "reason": why})
            return call_result.GetDiagnostics()
        try:
            archive = await self.uploads.build(DIAGNOSTICS_LOG, parse_timestamp(start_time),
                                               parse_timestamp(stop_time))
        except Exception:
            log.exception("GetDiagnostics: the archive could not be made")
            return call_result.GetDiagnostics()
        self.uploads.start(0, location, archive, retries or 0, float(retry_interval or 60), self._diagnostics_status_of,
                           kind=DIAGNOSTICS_JOB)
        return call_result.GetDiagnostics(file_name=archive.name)

    def resume_uploads(self) -> None:
        """At start: the GetDiagnostics and GetLog uploads a stop interrupted, taken up again."""
        self.uploads.resume(DIAGNOSTICS_JOB, self._diagnostics_status_of)
        self.uploads.resume(LOG_JOB, self._log_status)

    async def _diagnostics_status_of(self, status: LogUploadStatus, _request_id: int) -> None:
        """The upload's statuses as DiagnosticsStatusNotification: Uploading when connected, the outcome (Uploaded,
        else UploadFailed) until the CSMS answered it."""
        final = status is not LogUploadStatus.UPLOADING
        self._diagnostics_status = "Idle" if final else "Uploading"
        outcome = "Uploaded" if status is LogUploadStatus.UPLOADED else "UploadFailed"
        await self.ctx.notify_status("DiagnosticsStatusNotification", {"status": outcome if final else "Uploading"},
                                     final=final)

    # --- GetLog (OCPP 1.6 security whitepaper) ---------------------------------------------------------

    @handles(Action.get_log)
    async def _get_log(self, log_type: str, request_id: int, log: dict[str, Any], retries: int | None = None,
                       retry_interval: int | None = None, **_: Any) -> Any:
        """DiagnosticsLog: the diagnostics archive; SecurityLog: the security log's events (an archive of the same
        form, firmware/maintenance/diagnostics.py); either within oldestTimestamp / latestTimestamp, uploaded
        between LogStatusNotification Uploading and Uploaded / UploadFailure (with the requestId)."""
        answer = await self.uploads.request(
            log_type, request_id, str(log.get("remote_location", "")), parse_timestamp(log.get("oldest_timestamp")),
            parse_timestamp(log.get("latest_timestamp")), retries or 0, float(retry_interval or 60), self._log_status)
        return call_result.GetLog(status=answer.status, filename=answer.filename)

    async def _log_status(self, status: LogUploadStatus, request_id: int) -> None:
        """Uploading when connected; the outcome until the CSMS answered it (1.6's UploadLogStatusEnumType has no
        AcceptedCanceled: not sent)."""
        if status is not LogUploadStatus.CANCELED:
            await self.ctx.notify_status("LogStatusNotification", {"status": status.value, "requestId": request_id},
                                         final=status is not LogUploadStatus.UPLOADING)
