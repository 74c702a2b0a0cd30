"""L Firmware management (L01 secure update, L02 update without a signature) and N01 GetLog over OCPP 2.0.1: a
translation of the requests and statuses onto the version-agnostic pieces 1.6 uses too.

* **UpdateFirmware** becomes a job of the update pipeline (firmware/maintenance/updater.py: download with
  ``retries`` / ``retryInterval``, verify, install into the inactive slot, wait until no transaction runs with
  the EVSEs held Unavailable, switch, restart, check, keep or roll back). With a ``signingCertificate`` (L01) the
  certificate is checked against the manufacturer root (``[firmware] trust``) and its CRL (``[firmware] crl``)
  before the answer — InvalidCertificate if it is not issued by it, not valid now or its revocation status is
  unknown, RevokedCertificate if the CRL lists it (firmware/ocpp/firmware_signing.py) — and again after the
  download, with the ``signature`` over the file (SignatureVerified / InvalidSignature); without one (L02) the
  bundle's own signature by the same root (its certificate also judged by the CRL) is what is verified. Accepted;
  AcceptedCanceled when it replaces an update that has not switched slots yet; Rejected while one is being
  installed (switching, checking, rolling back) or when this charger cannot update itself.
* **FirmwareStatusNotification** carries each status of the job (2.0.1's names are the pipeline's) and its
  ``requestId``: DownloadScheduled, Downloading, Downloaded, SignatureVerified, InstallScheduled, Installing,
  InstallRebooting, then after the restart Installed (the boot's reason FirmwareUpdate) or InstallationFailed
  (after a rollback); DownloadFailed, InvalidSignature, InstallVerificationFailed end it early. Intermediate ones
  go when the CSMS is connected, the final one waits for it and is kept until answered, across restarts.
  A TriggerMessage FirmwareStatusNotification says the running job's last status and its requestId, Idle (no
  requestId) when none runs.
* **GetLog** (DiagnosticsLog, SecurityLog) is the upload of firmware/maintenance/log_upload.py: the archive built
  at once within oldestTimestamp / latestTimestamp (its name is the answer's ``filename``), uploaded between
  LogStatusNotification Uploading and Uploaded / UploadFailure — or the server's refusal, PermissionDenied,
  NotSupportedOperation, BadMessage — with the ``requestId``; a new GetLog while one uploads is AcceptedCanceled,
  and the cancelled one ends with LogStatusNotification AcceptedCanceled under its own requestId (OCTT
  TC_N_36_CS). A TriggerMessage LogStatusNotification says Uploading and the requestId while an upload runs, Idle
  otherwise. The upload is a durable job (log_upload.py): one a stop interrupted is done again after the restart
  (:meth:`FirmwareManagement.resume_uploads`), its outcome sent once. OCPPCommCtrlr.FileTransferProtocols says
  what the transfers speak.

Security events (FirmwareUpdated after Installed, InvalidFirmwareSigningCertificate, InvalidFirmwareSignature) go
to ``V201Context.report_security_event`` (for now: the security log only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.maintenance import transfer
from firmware.maintenance.log_upload import LOG_JOB, LogUploads, LogUploadStatus
from firmware.maintenance.updater import FINAL_STATUSES, FirmwareStatus, FirmwareUpdater
from firmware.ocpp.firmware_signing import refused_signing_certificate
from firmware.ocpp.rpc import handles
from firmware.ocpp.security_events import firmware_updated_once
from firmware.ocpp.timestamps import parse_timestamp, unix_seconds
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey

log = logging.getLogger(__name__)

_ANSWER = {"accepted": "Accepted", "replaced": "AcceptedCanceled"}


class FirmwareManagement:
    def __init__(self, ctx: V201Context, updater: FirmwareUpdater | None, uploads: LogUploads) -> None:
        self.ctx = ctx
        self.updater = updater
        self.uploads = uploads
        ctx.variables.provide(VariableKey("OCPPCommCtrlr", "FileTransferProtocols"),
                              lambda: ",".join(sorted(transfer.PROTOCOLS)))
        if uploads.diagnostics is not None:  # the variables as GetVariables reports them (write-only ones left out)
            uploads.diagnostics.keys = lambda: {str(key): got.value for key in ctx.variables.definitions
                                                if (got := ctx.variables.get_variable(key)).status == "Accepted"}
        if updater is not None:
            updater.on_status = self.report_firmware_status
            updater.health = ctx.accepted_within

    # --- L01 / L02 UpdateFirmware --------------------------------------------------------------------

    @handles(Action.update_firmware)
    async def _update_firmware(self, request_id: int, firmware: dict[str, Any], retries: int | None = None,
                               retry_interval: int | None = None, **_: Any) -> Any:
        updater = self.updater
        location = str(firmware.get("location", ""))
        if updater is None:
            log.warning("UpdateFirmware: this charger cannot update itself", extra={
                "location": transfer.redact(location)})
            return call_result.UpdateFirmware(status="Rejected")
        pem, signature = str(firmware.get("signing_certificate") or ""), str(firmware.get("signature") or "")
        if signature and not pem:  # a signature nothing can check
            return call_result.UpdateFirmware(status="Rejected", status_info={
                "reasonCode": "MissingCertificate", "additionalInfo": "signature without signingCertificate"})
        if pem:
            refused = await refused_signing_certificate(pem, updater.settings, Path(self.ctx.config.state_dir),
                                                        self.ctx.report_security_event, action="UpdateFirmware",
                                                        request_id=request_id)
            if refused is not None:
                return call_result.UpdateFirmware(status=refused)
        outcome = updater.start(location, unix_seconds(firmware.get("retrieve_date_time")), retries=retries or 0,
                                retry_interval_s=float(retry_interval if retry_interval is not None else 60),
                                request_id=request_id, signing_certificate=pem, signature=signature,
                                install_at=unix_seconds(firmware.get("install_date_time")))
        return call_result.UpdateFirmware(status=_ANSWER.get(outcome, "Rejected"))

    def _payload(self, status: FirmwareStatus) -> dict[str, Any]:
        job = self.updater.job if self.updater is not None else None
        payload: dict[str, Any] = {"status": status.value}
        if job is not None and job.request_id is not None:
            payload["requestId"] = job.request_id
        return payload

    async def report_firmware_status(self, status: FirmwareStatus) -> None:
        """The pipeline's statuses as FirmwareStatusNotification; after Installed the security event
        FirmwareUpdated, after InvalidSignature InvalidFirmwareSignature."""
        await self.ctx.notify_status("FirmwareStatusNotification", self._payload(status),
                                     final=status in FINAL_STATUSES)
        job = self.updater.job if self.updater is not None else None
        if status is FirmwareStatus.INSTALLED and job is not None:
            firmware_updated_once(self.ctx.db, self.ctx.report_security_event, job)
        elif status is FirmwareStatus.INVALID_SIGNATURE and job is not None:
            self.ctx.report_security_event("InvalidFirmwareSignature", job.detail[:255] or None)

    def triggered_firmware_status(self) -> dict[str, Any]:
        """TriggerMessage FirmwareStatusNotification: the running job's last status and requestId; Idle without a
        requestId when none runs."""
        if self.updater is None or not self.updater.busy:
            return {"status": FirmwareStatus.IDLE.value}
        return self._payload(self.updater.status())

    # --- N01 GetLog ------------------------------------------------------------------------------------

    @handles(Action.get_log)
    async def _get_log(self, log_type: str, request_id: int, log: dict[str, Any], retries: int | None = None,
                       retry_interval: int | None = None, **_: Any) -> Any:
        answer = await self.uploads.request(
            log_type, request_id, str(log.get("remote_location", "")), parse_timestamp(log.get("oldest_timestamp")),
            parse_timestamp(log.get("latest_timestamp")), retries or 0,
            float(retry_interval if retry_interval is not None else 60), self._log_status)
        info = {"reasonCode": "InvalidValue", "additionalInfo": answer.reason[:512]} if answer.reason else None
        return call_result.GetLog(status=answer.status, filename=answer.filename, status_info=info)

    def resume_uploads(self) -> None:
        """At start: the GetLog upload a stop interrupted, taken up again."""
        self.uploads.resume(LOG_JOB, self._log_status)

    async def _log_status(self, status: LogUploadStatus, request_id: int) -> None:
        """The outcome of an upload is kept until answered; Uploading, and the AcceptedCanceled of the upload a new
        request replaced (the new one's upload waits for it), only when connected."""
        await self.ctx.notify_status("LogStatusNotification", {"status": status.value, "requestId": request_id},
                                     final=status not in (LogUploadStatus.UPLOADING, LogUploadStatus.CANCELED))

    def triggered_log_status(self) -> dict[str, Any]:
        """TriggerMessage LogStatusNotification: Uploading and the requestId while an upload runs, else Idle."""
        if self.uploads.request_id is None:
            return {"status": LogUploadStatus.IDLE.value}
        return {"status": self.uploads.status.value, "requestId": self.uploads.request_id}
