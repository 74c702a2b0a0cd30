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
here.

An upload is a durable job (:class:`UploadJob`, one JSON file per kind in the state directory, written like the
update job: beside, fsynced, renamed): a GetLog's (``log``) and a 1.6 GetDiagnostics' (``diagnostics``, the same
upload with DiagnosticsStatusNotification's statuses). It is recorded before the upload starts, its failed attempts
and its outcome as they happen, and it is forgotten once the outcome was reported (the adapter's final
notification waits until the CSMS answered it). After a stop (kill -9, power cut) :meth:`LogUploads.resume` takes
it up again: an outcome not yet reported is reported; an upload under way is started again (Uploading again, then
the remaining attempts: an attempt the stop cut short is not counted as failed, and the interval a stop
interrupted is not waited again), so each upload ends with exactly one final status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.maintenance import transfer
from firmware.maintenance.diagnostics import DiagnosticsSources, build_archive, build_security_archive
from firmware.storage.files import write_json_durably

log = logging.getLogger(__name__)

DIAGNOSTICS_DIR = "diagnostics"
DIAGNOSTICS_LOG = "DiagnosticsLog"
SECURITY_LOG = "SecurityLog"
LOG_JOB = "log"  # a GetLog's upload (both versions)
DIAGNOSTICS_JOB = "diagnostics"  # a 1.6 GetDiagnostics' upload
JOB_FILES = {LOG_JOB: "log-upload.json", DIAGNOSTICS_JOB: "diagnostics-upload.json"}  # in the state directory


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


@dataclass
class UploadJob:
    """The durable state of one upload (until its outcome was reported)."""

    kind: str  # LOG_JOB or DIAGNOSTICS_JOB
    request_id: int  # GetLog's requestId (GetDiagnostics has none: 0)
    location: str
    archive: str  # the archive's path (built when the request came)
    retries: int  # attempts after the first
    interval_s: float
    failed: int = 0  # attempts that failed (one a stop cut short is not one)
    outcome: str = ""  # the final LogUploadStatus, once known

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadJob:
        return cls(**data)


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
        self.state_dir = state_dir
        self._tasks: dict[str, asyncio.Task[None]] = {}  # by kind: the upload under way
        self.status = LogUploadStatus.IDLE  # what a triggered LogStatusNotification says (GetLog's upload)
        self.request_id: int | None = None  # the GetLog upload under way's (None while Idle)

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
              notify: StatusSink, kind: str = LOG_JOB) -> bool:
        """Upload ``archive`` in the background, recorded first; True when it cancelled one of its kind under way
        (a GetLog's: reported AcceptedCanceled under its own request id)."""
        running = self._tasks.get(kind)
        previous = running if running is not None and not running.done() else None
        canceled_id = self.request_id if kind == LOG_JOB and previous is not None else None
        if previous is not None:
            previous.cancel()
        job = UploadJob(kind, request_id, location, str(archive), max(0, retries), max(0.0, interval_s))
        self._save(job)
        self._tasks[kind] = asyncio.create_task(self._run(job, notify, canceled_id))
        return previous is not None

    def resume(self, kind: str, notify: StatusSink) -> UploadJob | None:
        """After a restart: the upload of ``kind`` a stop interrupted, taken up again (its outcome reported if it
        was known but not yet answered); None when there is none."""
        job = self.pending(kind)
        if job is None or (kind in self._tasks and not self._tasks[kind].done()):
            return None
        log.info("log upload resumed", extra={"kind": kind, "request_id": job.request_id,
                                              "location": transfer.redact(job.location), "failed": job.failed,
                                              "outcome": job.outcome or None})
        self._tasks[kind] = asyncio.create_task(self._run(job, notify, None))
        return job

    def pending(self, kind: str) -> UploadJob | None:
        path = self.state_dir / JOB_FILES[kind]
        try:
            return UploadJob.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:  # a damaged file must not stop the agent
            log.warning("log upload state unreadable; forgotten", extra={"path": str(path), "error": str(exc)})
            path.unlink(missing_ok=True)
            return None

    def _save(self, job: UploadJob) -> None:
        write_json_durably(self.state_dir / JOB_FILES[job.kind], asdict(job))

    async def _run(self, job: UploadJob, notify: StatusSink, canceled_id: int | None) -> None:
        await asyncio.sleep(0)  # the answer (with the file name) goes out first
        me = asyncio.current_task()
        if canceled_id is not None:
            await notify(LogUploadStatus.CANCELED, canceled_id)
        if job.outcome:
            outcome = LogUploadStatus(job.outcome)  # known before a stop, not reported yet
        else:
            if job.kind == LOG_JOB:
                self.status, self.request_id = LogUploadStatus.UPLOADING, job.request_id
            try:
                await notify(LogUploadStatus.UPLOADING, job.request_id)
                outcome = await self.send(job.location, Path(job.archive), job.retries, job.interval_s, job)
            finally:
                if job.kind == LOG_JOB and self._tasks.get(LOG_JOB) is me:  # not when replaced: the next one's
                    self.status, self.request_id = LogUploadStatus.IDLE, None
            job.outcome = outcome.value
            self._save(job)
        await notify(outcome, job.request_id)  # a final status: returns once the CSMS answered it
        if self._tasks.get(job.kind) is me:  # not replaced meanwhile (then the file is the next one's)
            (self.state_dir / JOB_FILES[job.kind]).unlink(missing_ok=True)

    async def send(self, location: str, archive: Path, retries: int, interval_s: float,
                   job: UploadJob | None = None) -> LogUploadStatus:
        """Upload with ``retries`` more attempts after the first, ``interval_s`` apart: Uploaded once it went;
        the server's refusal (PermissionDenied, NotSupportedOperation, BadMessage) at once; else UploadFailure
        after the last attempt. ``job``: its failed attempts counted (and recorded) from where it stood."""
        failed = job.failed if job is not None else 0
        while True:
            try:
                where = await asyncio.to_thread(transfer.upload, location, archive, timeout_s=self.transfer_timeout_s,
                                              tls=self.tls)
            except transfer.TransferError as exc:
                failed += 1
                if job is not None:
                    job.failed = failed
                    self._save(job)
                log.warning("log upload failed", extra={"attempt": failed, "attempts_left": retries + 1 - failed,
                                                        "error": str(exc), "refusal": exc.refusal})
                if exc.refusal is not None:
                    return LogUploadStatus(exc.refusal)
                if not exc.resumable or failed > retries:
                    return LogUploadStatus.UPLOAD_FAILURE
                await asyncio.sleep(interval_s)
                continue
            log.info("log uploaded", extra={"location": where})
            return LogUploadStatus.UPLOADED
