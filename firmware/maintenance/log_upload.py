"""Log uploads a CSMS asks for (OCPP 1.6 security whitepaper GetLog, 2.0.1 N01 GetLog), the same for every version:

* the archive is built when the request arrives (:mod:`diagnostics`: a ``DiagnosticsLog`` is the diagnostics
  archive, a ``SecurityLog`` the security log's events), within the request's time window; its name is the
  answer's ``filename``;
* one upload at a time: a new request cancels the one under way (the adapter answers AcceptedCanceled, and the
  cancelled one ends with :attr:`LogUploadStatus.CANCELED` under its own request id);
* the upload (:mod:`transfer`: HTTP(S) PUT, FTP(S) STOR) gets ``retries`` more attempts ``interval_s`` apart,
  between :attr:`~LogUploadStatus.UPLOADING` and the outcome: Uploaded, UploadFailure, or at once the reason a
  server gave for refusing it (PermissionDenied, NotSupportedOperation, BadMessage).

The statuses are the names both versions' UploadLogStatusEnumType use; the adapter turns each into its
LogStatusNotification (1.6 has no AcceptedCanceled: its adapter leaves that one out). Version-agnostic: no OCPP
here. An upload is not resumed after a restart: the CSMS asks again.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from firmware.maintenance import transfer
from firmware.maintenance.diagnostics import DiagnosticsSources, build_archive, build_security_archive

log = logging.getLogger(__name__)

DIAGNOSTICS_DIR = "diagnostics"
DIAGNOSTICS_LOG = "DiagnosticsLog"
SECURITY_LOG = "SecurityLog"


class LogUploadStatus(StrEnum):
    IDLE = "Idle"
    UPLOADING = "Uploading"
    UPLOADED = "Uploaded"
    UPLOAD_FAILURE = "UploadFailure"
    # the server refused it and said why (transfer.TransferError.refusal): final, not retried
    PERMISSION_DENIED = transfer.PERMISSION_DENIED
    NOT_SUPPORTED_OPERATION = transfer.NOT_SUPPORTED
    BAD_MESSAGE = transfer.BAD_MESSAGE
    CANCELED = "AcceptedCanceled"  # 2.0.1: the upload a newer request replaced


#: ``(status, request_id)``: the adapter's LogStatusNotification.
StatusSink = Callable[[LogUploadStatus, int], Awaitable[None]]


@dataclass(frozen=True)
class LogRequestAnswer:
    status: str  # GetLog's answer in both versions: Accepted, AcceptedCanceled, Rejected
    filename: str | None = None  # the archive's name, once accepted
    reason: str | None = None  # why it was rejected


class LogUploads:
    def __init__(self, charge_point_id: str, state_dir: Path, diagnostics: DiagnosticsSources | None,
                 security_log_files: Callable[[], list[Path]] | None, transfer_timeout_s: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> None:
        """``diagnostics``: what a DiagnosticsLog archives (without: refused); ``security_log_files``: the security
        log's files, oldest first (without: a SecurityLog is refused); ``tls``: HTTPS/FTPS servers are checked
        against it (the configured ``[firmware] transfer_ca``; None: the system's CAs)."""
        self.charge_point_id = charge_point_id
        self.dest = state_dir / DIAGNOSTICS_DIR
        self.diagnostics = diagnostics
        self.security_log_files = security_log_files
        self.transfer_timeout_s = transfer_timeout_s
        self.tls = tls
        self._task: asyncio.Task[None] | None = None
        self.status = LogUploadStatus.IDLE  # what a triggered LogStatusNotification says
        self.request_id: int | None = None  # the upload under way's (None while Idle)

    async def request(self, log_type: str, request_id: int, location: str, start: datetime | None,
                      stop: datetime | None, retries: int, interval_s: float, notify: StatusSink) -> LogRequestAnswer:
        """A GetLog: refused, or its archive built and its upload started (cancelling one under way)."""
        reason = self.refusal(log_type, location)
        if reason is None:
            try:
                archive = await self.build(log_type, start, stop)
            except Exception:
                log.exception("GetLog: the archive could not be made")
                reason = "the archive could not be made"
        if reason is not None:
            log.info("GetLog rejected", extra={"log_type": log_type, "reason": reason})
            return LogRequestAnswer("Rejected", reason=reason)
        canceled = self.start(request_id, location, archive, retries, interval_s, notify)
        return LogRequestAnswer("AcceptedCanceled" if canceled else "Accepted", archive.name)

    def refusal(self, log_type: str, location: str) -> str | None:
        """Why this request cannot be taken (None: it can)."""
        why = transfer.check_url(location)
        if why is not None:
            return why
        if log_type == DIAGNOSTICS_LOG:
            return None if self.diagnostics is not None else "no diagnostics sources"
        if log_type == SECURITY_LOG:
            return None if self.security_log_files is not None else "no security log kept"
        return f"log type {log_type!r} is not kept"

    async def build(self, log_type: str, start: datetime | None, stop: datetime | None) -> Path:
        """The archive for ``log_type`` within [start, stop] (after :meth:`refusal` said yes); raises on failure."""
        if log_type == SECURITY_LOG:
            assert self.security_log_files is not None
            return await asyncio.to_thread(build_security_archive, self.charge_point_id, self.security_log_files(),
                                           self.dest, start, stop)
        assert self.diagnostics is not None
        return await asyncio.to_thread(build_archive, self.diagnostics, self.dest, start, stop)

    def start(self, request_id: int, location: str, archive: Path, retries: int, interval_s: float,
              notify: StatusSink) -> bool:
        """Upload ``archive`` in the background; True when it cancelled one under way."""
        previous = self._task if self._task is not None and not self._task.done() else None
        canceled_id = self.request_id
        if previous is not None:
            previous.cancel()
        self._task = asyncio.create_task(self._run(request_id, location, archive, retries, interval_s, notify,
                                                   canceled_id if previous is not None else None))
        return previous is not None

    async def _run(self, request_id: int, location: str, archive: Path, retries: int, interval_s: float,
                   notify: StatusSink, canceled_id: int | None) -> None:
        await asyncio.sleep(0)  # the answer (with the file name) goes out first
        if canceled_id is not None:
            await notify(LogUploadStatus.CANCELED, canceled_id)
        self.status, self.request_id = LogUploadStatus.UPLOADING, request_id
        try:
            await notify(LogUploadStatus.UPLOADING, request_id)
            outcome = await self.send(location, archive, retries, interval_s)
        finally:
            if asyncio.current_task() is self._task:  # not when cancelled by the next one: that one's state
                self.status, self.request_id = LogUploadStatus.IDLE, None
        await notify(outcome, request_id)

    async def send(self, location: str, archive: Path, retries: int, interval_s: float) -> LogUploadStatus:
        """Upload with ``retries`` more attempts after the first, ``interval_s`` apart: Uploaded once it went;
        the server's refusal (PermissionDenied, NotSupportedOperation, BadMessage) at once; else UploadFailure
        after the last attempt."""
        for attempt in range(1, retries + 2):
            try:
                where = await asyncio.to_thread(transfer.upload, location, archive, timeout_s=self.transfer_timeout_s,
                                              tls=self.tls)
            except transfer.TransferError as exc:
                log.warning("log upload failed", extra={"attempt": attempt, "attempts_left": retries + 1 - attempt,
                                                        "error": str(exc), "refusal": exc.refusal})
                if exc.refusal is not None:
                    return LogUploadStatus(exc.refusal)
                if not exc.resumable or attempt > retries:
                    return LogUploadStatus.UPLOAD_FAILURE
                await asyncio.sleep(interval_s)
                continue
            log.info("log uploaded", extra={"location": where})
            return LogUploadStatus.UPLOADED
        return LogUploadStatus.UPLOAD_FAILURE
