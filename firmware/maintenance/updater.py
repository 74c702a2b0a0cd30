"""The update pipeline, the same whoever asks for it (the CSMS through any OCPP version; docs/firmware-update.md):

    scheduled -> downloading (retries) -> verifying -> staging (inactive slot, fsynced) -> waiting until no
    transaction runs (idle connectors held Unavailable) -> switching (privileged: snapshot, switch, restart)
    -> [the agent restarts] -> checking (the new agent comes up and is accepted) -> installed
                                                     | -> rolling back -> [restart] -> installation failed

Every step is recorded in ``<state dir>/firmware-update.json`` (written to a temporary name, fsynced, renamed)
*before* it is acted on, so a ``kill -9`` or a power cut at any point resumes the job where it stood: a download
resumes from its ``.part`` file, a verification or a staging is done again, the held connectors stay held, and
after a restart the slot that runs tells whether the switch happened. The statuses the CSMS is told
(:class:`FirmwareStatus`) go through ``on_status``; the final one is kept until it was reported, so an
``Installed`` that a power cut interrupted is reported after the next start.

What the pipeline needs from the charger and the controller comes in as small interfaces: an :class:`Installer`
(stage a verified bundle into the inactive slot, switch to it, say what runs), a :class:`Hold` (the connectors
held idle meanwhile; firmware/charger/maintenance_hold.py) and a health check. Version-agnostic: no OCPP here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509

from firmware.maintenance import signing, transfer
from firmware.maintenance.bundle import BundleError, verify_bundle, verify_file_signature
from firmware.storage.files import write_json_durably

log = logging.getLogger(__name__)

JOB_FILE = "firmware-update.json"
DOWNLOAD_DIR = "firmware-download"


class FirmwareStatus(StrEnum):
    """What the CSMS is told: OCPP 1.6 FirmwareStatus, and for a job with a request id (1.6 SignedUpdateFirmware, every
    2.0.1 UpdateFirmware) the security whitepaper's FirmwareStatusEnumType, which adds the rest (2.0.1 has the same
    names, and DownloadPaused, which no job here goes through)."""

    IDLE = "Idle"
    DOWNLOAD_SCHEDULED = "DownloadScheduled"
    DOWNLOADING = "Downloading"
    DOWNLOADED = "Downloaded"
    DOWNLOAD_FAILED = "DownloadFailed"
    SIGNATURE_VERIFIED = "SignatureVerified"
    INVALID_SIGNATURE = "InvalidSignature"
    INSTALL_SCHEDULED = "InstallScheduled"
    INSTALLING = "Installing"
    INSTALL_REBOOTING = "InstallRebooting"
    INSTALLED = "Installed"
    INSTALLATION_FAILED = "InstallationFailed"
    INSTALL_VERIFICATION_FAILED = "InstallVerificationFailed"


#: The statuses that end a job: reported until the CSMS answered them, across restarts.
FINAL_STATUSES = frozenset({FirmwareStatus.DOWNLOAD_FAILED, FirmwareStatus.INSTALLED,
                            FirmwareStatus.INSTALLATION_FAILED, FirmwareStatus.INVALID_SIGNATURE,
                            FirmwareStatus.INSTALL_VERIFICATION_FAILED})


class Step(StrEnum):
    SCHEDULED = "scheduled"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGING = "staging"
    WAITING_IDLE = "waiting_idle"
    SWITCHING = "switching"
    CHECKING = "checking"
    ROLLING_BACK = "rolling_back"
    DONE = "done"


class InstallError(Exception):
    """The installer could not do a step; the message says why."""


class Installer(Protocol):
    def running(self) -> tuple[str | None, str | None]:
        """(active slot, its version); (None, None) when there are no slots."""

    def slot_health(self, slot: str) -> str | None:
        """What the controller recorded about ``slot``: "not checked", "passed", "FAILED", or None."""

    async def stage(self, bundle: Path, sha256: str, size: int) -> str:
        """Unpack the verified bundle into the inactive slot (fsynced); the slot. Raises :class:`InstallError`."""

    async def switch(self, slot: str) -> None:
        """Make ``slot`` active (database snapshot/restore by the controller) and restart the agent from it:
        returns once the request is made; the agent is ended by the caller. Raises :class:`InstallError`."""

    def confirm(self, slot: str) -> None:
        """The new agent is up and accepted: record that the slot passed its check."""


class Hold(Protocol):
    def busy(self) -> bool:
        """A transaction runs on some connector."""

    def operative(self) -> list[int]:
        """The connectors operative now: those :meth:`hold` would take (recorded before it acts)."""

    async def hold(self) -> list[int]:
        """Make every connector Unavailable (at the end of its transaction for busy ones); the ids of those that
        were operative before (to be released)."""

    async def release(self, ids: Iterable[int]) -> None:
        """Make these connectors Operative again."""


@dataclass
class UpdateJob:
    """The durable state of one update."""

    id: str
    location: str
    retrieve_at: float  # UNIX seconds
    retries: int  # attempts after the first
    retry_interval_s: float
    step: Step = Step.SCHEDULED
    attempt: int = 0  # download attempts made
    next_attempt_at: float = 0.0
    sha256: str = ""
    size: int = 0
    version: str = ""  # of the bundle
    slot: str = ""  # the slot it is staged in
    previous_slot: str | None = None
    previous_version: str | None = None
    held: list[int] = field(default_factory=list)  # connectors we made Unavailable
    switch_requests: int = 0  # a switch asked for again after a restart that did not do it: at most twice
    request_id: int | None = None  # 1.6 SignedUpdateFirmware's, 2.0.1 UpdateFirmware's: its statuses carry it
    signing_certificate: str = ""  # PEM: a signed update's file must be signed by its key (none: not checked)
    signature: str = ""  # base64, over the whole file
    install_at: float = 0.0  # UNIX seconds: a signed update's installDateTime (0: as soon as verified)
    outcome: str = ""  # the final FirmwareStatus
    detail: str = ""
    reported: bool = False  # the outcome was reported to the CSMS
    status: str = FirmwareStatus.IDLE.value  # the last status notified

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["step"] = self.step.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UpdateJob:
        data = dict(data)
        data["step"] = Step(data["step"])
        return cls(**data)


class JobStore:
    """The job in one JSON file: replaced atomically, fsynced (file and directory) before ``save`` returns."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOB_FILE

    def load(self) -> UpdateJob | None:
        try:
            return UpdateJob.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:  # a damaged file must not stop the agent
            log.warning("firmware update state unreadable; forgotten", extra={"path": str(self.path),
                                                                               "error": str(exc)})
            return None

    def save(self, job: UpdateJob) -> None:
        write_json_durably(self.path, job.to_json())


@dataclass(frozen=True)
class UpdaterSettings:
    trust: tuple[x509.Certificate, ...]  # a bundle must be signed by one of these (commissioning)
    hardware_revision: str | None
    max_bytes: int
    transfer_timeout_s: float
    health_timeout_s: float
    transfer_tls: ssl.SSLContext | None = None  # HTTPS/FTPS: the configured CAs (None: the system's)
    crl: Path | None = None  # the manufacturer root's CRL (signing.py)
    crl_url: str | None = None  # where a newer one is fetched


StatusSink = Callable[[FirmwareStatus], Awaitable[None]]
#: The new agent's health after the switch: None when it is up and accepted, else why not.
HealthCheck = Callable[[float], Awaitable[str | None]]


async def _no_report(status: FirmwareStatus) -> None:
    return None


async def _healthy(timeout_s: float) -> str | None:
    return None


class FirmwareUpdater:
    """Runs the job (one at a time); :meth:`start` accepts a new one, :meth:`run` drives it, across restarts."""

    def __init__(self, state_dir: Path, settings: UpdaterSettings, installer: Installer, hold: Hold,
                 request_restart: Callable[[], None], on_status: StatusSink | None = None,
                 health: HealthCheck | None = None, clock: Callable[[], float] = time.time) -> None:
        """``on_status`` and ``health`` may be set later, by the protocol adapter that reports and judges."""
        self.store = JobStore(state_dir)
        self.state_dir = state_dir
        self.download_dir = state_dir / DOWNLOAD_DIR
        self.settings = settings
        self.installer = installer
        self.hold = hold
        self.on_status: StatusSink = on_status or _no_report
        self.health: HealthCheck = health or _healthy
        self.request_restart = request_restart
        self.clock = clock
        self.job = self.store.load()
        #: this run of the agent began with a switch of slots for an update (or its rollback): a boot reason
        self.restarted_for_update = self.job is not None and self.job.step in (Step.SWITCHING, Step.ROLLING_BACK)
        self._wake = asyncio.Event()

    # --- what the adapters see ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.step is not Step.DONE

    def status(self) -> FirmwareStatus:
        """For a triggered status notification: the last status while a job runs, Idle otherwise."""
        return FirmwareStatus(self.job.status) if self.busy and self.job is not None else FirmwareStatus.IDLE

    def start(self, location: str, retrieve_at: float, retries: int = 0, retry_interval_s: float = 60.0, *,
              request_id: int | None = None, signing_certificate: str = "", signature: str = "",
              install_at: float = 0.0) -> str:
        """A new update replaces a finished one, and one that runs before it switches slots ("replaced": 1.6
        security's AcceptedCanceled); one that is switching or checking is not ("busy"). "accepted" otherwise."""
        if self.job is not None and self.job.step in (Step.SWITCHING, Step.CHECKING, Step.ROLLING_BACK):
            log.warning("firmware update requested while one is being installed; ignored",
                        extra={"location": transfer.redact(location)})
            return "busy"
        replaced = self.busy
        if self.job is not None and self.job.held:
            held = self.job.held  # released by the new job's end
        else:
            held = []
        self.job = UpdateJob(id=uuid.uuid4().hex, location=location, retrieve_at=retrieve_at,
                             retries=max(0, retries), retry_interval_s=max(0.0, retry_interval_s), held=held,
                             request_id=request_id, signing_certificate=signing_certificate, signature=signature,
                             install_at=install_at)
        self._save()
        for old in self.download_dir.glob("*") if self.download_dir.is_dir() else []:
            old.unlink()
        log.info("firmware update scheduled", extra={"location": transfer.redact(location), "job": self.job.id,
                                                      "retrieve_at": retrieve_at, "retries": retries,
                                                      "request_id": request_id})
        self._wake.set()
        return "replaced" if replaced else "accepted"

    # --- the pipeline --------------------------------------------------------------------------------

    def _save(self) -> None:
        assert self.job is not None
        self.store.save(self.job)

    async def _notify(self, status: FirmwareStatus) -> None:
        assert self.job is not None
        self.job.status = status.value
        self._save()
        await self.on_status(status)

    async def run(self) -> None:
        """Forever: drive the current job, then wait for the next."""
        while True:
            await self.run_job()
            self._wake.clear()
            await self._wake.wait()

    async def run_job(self) -> None:
        """Drive the current job until its outcome is reported (returns at once when there is none to drive)."""
        while (job := self.job) is not None and not (job.step is Step.DONE and job.reported):
            await self._advance(job)

    async def _advance(self, job: UpdateJob) -> None:
        step = job.step
        if step is Step.SCHEDULED:
            if job.request_id is not None and job.retrieve_at > self.clock() and job.status != "DownloadScheduled":
                await self._notify(FirmwareStatus.DOWNLOAD_SCHEDULED)
            await self._sleep_until(job.retrieve_at)
            if self.job is not job:
                return
            await self._goto(Step.DOWNLOADING)
        elif step is Step.DOWNLOADING:
            await self._download(job)
        elif step is Step.VERIFYING:
            await self._verify(job)
        elif step is Step.STAGING:
            await self._stage(job)
        elif step is Step.WAITING_IDLE:
            await self._wait_idle(job)
        elif step is Step.SWITCHING:
            await self._after_switch(job)
        elif step is Step.CHECKING:
            await self._check(job)
        elif step is Step.ROLLING_BACK:
            await self._after_rollback(job)
        elif step is Step.DONE:
            await self._report_outcome(job)

    async def _goto(self, step: Step, **changes: Any) -> None:
        assert self.job is not None
        for name, value in changes.items():
            setattr(self.job, name, value)
        self.job.step = step
        self._save()
        log.info("firmware update step", extra={"job": self.job.id, "step": step.value})

    async def _sleep_until(self, when: float) -> None:
        delay = when - self.clock()
        if delay > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)  # a new job wakes us early
            except TimeoutError:
                pass

    def _part(self, job: UpdateJob) -> Path:
        return self.download_dir / f"{job.id}.part"

    async def _download(self, job: UpdateJob) -> None:
        if job.next_attempt_at:
            await self._sleep_until(job.next_attempt_at)
            if self.job is not job:
                return
        job.attempt += 1
        self._save()
        await self._notify(FirmwareStatus.DOWNLOADING)
        part = self._part(job)
        try:
            got = await asyncio.to_thread(transfer.download, job.location, part, max_bytes=self.settings.max_bytes,
                                          timeout_s=self.settings.transfer_timeout_s, tls=self.settings.transfer_tls)
        except transfer.TransferError as exc:
            if self.job is not job:
                return
            left = job.retries + 1 - job.attempt
            log.warning("firmware download failed", extra={"job": job.id, "attempt": job.attempt,
                                                           "attempts_left": left, "error": str(exc)})
            if left > 0 and exc.resumable:
                job.next_attempt_at = self.clock() + job.retry_interval_s
                self._save()
                return
            await self._finish(FirmwareStatus.DOWNLOAD_FAILED, str(exc))
            return
        if self.job is not job:
            return
        log.info("firmware downloaded", extra={"job": job.id, "bytes": got.size, "resumed_from": got.resumed_from})
        job.sha256, job.size = got.sha256, got.size  # hashed on the way: verifying reads the file once, not twice
        await self._notify(FirmwareStatus.DOWNLOADED)
        await self._goto(Step.VERIFYING)

    async def _verify(self, job: UpdateJob) -> None:
        signed = bool(job.signing_certificate)  # a signature over the file to check (1.6 signed, 2.0.1 L01)
        extended = job.request_id is not None  # the extended statuses (1.6 signed, every 2.0.1 update)
        part = self._part(job)
        if not part.is_file():
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, "the downloaded file is gone")
            return
        # the download's digest (None: a job an older agent recorded): the file signature is checked over it, and
        # verify_bundle proves in its one read that the bytes it verified hash to it — one content throughout
        downloaded = job.sha256 or None
        if signed:  # first the signature the CSMS gave over the whole file, by the certificate it gave
            try:
                cert = x509.load_pem_x509_certificate(job.signing_certificate.encode())
                # judged again: a CRL refreshed since the request may list it now (neither 1.6 security nor 2.0.1
                # has a status for a revoked certificate here: a signature by a revoked key is an invalid one)
                judged = await signing.judge_certificate(cert, self.settings, self.state_dir)
                if judged.verdict is not signing.Verdict.VALID:
                    raise BundleError(f"the signing certificate: {judged.reason}")
                await asyncio.to_thread(verify_file_signature, part, job.signature, cert, sha256=downloaded)
            except (BundleError, ValueError) as exc:
                part.unlink(missing_ok=True)
                await self._finish(FirmwareStatus.INVALID_SIGNATURE, f"refused: {exc}")
                return
            await self._notify(FirmwareStatus.SIGNATURE_VERIFIED)
        elif not extended:
            await self._notify(FirmwareStatus.INSTALLING)
        try:
            verified = await asyncio.to_thread(verify_bundle, part, self.settings.trust,
                                               hardware_revision=self.settings.hardware_revision, sha256=downloaded)
            judged = await signing.judge_certificate(verified.certificate, self.settings, self.state_dir)
            if judged.verdict is not signing.Verdict.VALID:  # the bundle's own signer: the root's CRL counts too
                raise BundleError(f"the bundle's signing certificate: {judged.reason}")
        except BundleError as exc:
            failed = FirmwareStatus.INSTALL_VERIFICATION_FAILED if extended else FirmwareStatus.INSTALLATION_FAILED
            await self._finish(failed, f"refused: {exc}")
            return
        if extended and job.install_at > self.clock():
            await self._notify(FirmwareStatus.INSTALL_SCHEDULED)
            await self._sleep_until(job.install_at)
            if self.job is not job:
                return
        if extended:
            await self._notify(FirmwareStatus.INSTALLING)
        await self._goto(Step.STAGING, sha256=verified.sha256, size=verified.size,
                         version=verified.manifest.version)

    async def _stage(self, job: UpdateJob) -> None:
        slot, version = self.installer.running()
        try:
            staged = await self.installer.stage(self._part(job), job.sha256, job.size)
        except InstallError as exc:
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, str(exc))
            return
        self._part(job).unlink(missing_ok=True)
        await self._goto(Step.WAITING_IDLE, slot=staged, previous_slot=slot, previous_version=version)

    async def _wait_idle(self, job: UpdateJob) -> None:
        # which connectors are taken is on disk before they are: a power cut during the hold finds them held
        # (durably, in their snapshots) and no longer operative, and must still release them at the end
        job.held = sorted(set(job.held) | set(self.hold.operative()))
        self._save()
        held = await self.hold.hold()
        job.held = sorted(set(job.held) | set(held))
        self._save()
        while self.hold.busy():
            await asyncio.sleep(1.0)
            if self.job is not job:
                return
        await self._goto(Step.SWITCHING, switch_requests=job.switch_requests + 1)
        if job.request_id is not None:
            await self._notify(FirmwareStatus.INSTALL_REBOOTING)
        try:
            await self.installer.switch(job.slot)
        except InstallError as exc:
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, str(exc))
            return
        log.info("firmware switch requested; restarting", extra={"job": job.id, "slot": job.slot})
        self.request_restart()
        await asyncio.Event().wait()  # the agent is ending

    async def _after_switch(self, job: UpdateJob) -> None:
        """After the restart (or a kill -9 around the switch): does the new slot run?"""
        slot, _ = self.installer.running()
        if slot == job.slot:
            await self._goto(Step.CHECKING)
            return
        if self.installer.slot_health(job.slot) in (None, "not checked") and job.switch_requests < 2:
            # the switch was not done (a power cut before the request was acted on): ask again
            log.info("firmware switch not done yet; asking again", extra={"job": job.id})
            await self._goto(Step.WAITING_IDLE)
            return
        await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"slot {job.slot} ({job.version}) was not kept: "
                           f"its health check is {self.installer.slot_health(job.slot)}; "
                           f"{job.previous_version} runs")

    async def _check(self, job: UpdateJob) -> None:
        slot, _ = self.installer.running()
        if slot != job.slot:  # the controller switched back meanwhile (root's unit: no confirmation in time)
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"slot {job.slot} ({job.version}) was not kept: "
                               f"its health check is {self.installer.slot_health(job.slot)}; "
                               f"{job.previous_version} runs (slot {slot})")
            return
        problem = await self.health(self.settings.health_timeout_s)
        if problem is None:
            self.installer.confirm(job.slot)
            await self._finish(FirmwareStatus.INSTALLED, f"{job.version} runs in slot {job.slot}")
            return
        log.warning("the new firmware failed its health check; rolling back", extra={"job": job.id,
                                                                                       "problem": problem})
        if job.previous_slot is None:
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"{problem}; no previous slot to go back to")
            return
        await self._goto(Step.ROLLING_BACK, detail=problem, switch_requests=1)
        try:
            await self.installer.switch(job.previous_slot)
        except InstallError as exc:
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"{problem}; the rollback failed: {exc}")
            return
        self.request_restart()
        await asyncio.Event().wait()

    async def _after_rollback(self, job: UpdateJob) -> None:
        slot, _ = self.installer.running()
        if slot == job.slot and job.previous_slot is not None and job.switch_requests < 2:
            # a power cut before the switch back was asked for (or acted on): ask again, once
            log.info("firmware rollback not done yet; asking again", extra={"job": job.id})
            await self._goto(Step.ROLLING_BACK, switch_requests=job.switch_requests + 1)
            try:
                await self.installer.switch(job.previous_slot)
            except InstallError as exc:
                await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"{job.detail}; the rollback failed: {exc}")
                return
            self.request_restart()
            await asyncio.Event().wait()
        if slot != job.previous_slot:
            await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"{job.detail}; the rollback to slot "
                               f"{job.previous_slot} did not happen: {job.version} keeps running")
            return
        await self._finish(FirmwareStatus.INSTALLATION_FAILED, f"{job.detail}; rolled back to "
                           f"{job.previous_version} (slot {job.previous_slot})")

    async def _finish(self, outcome: FirmwareStatus, detail: str) -> None:
        assert self.job is not None
        log.log(logging.INFO if outcome is FirmwareStatus.INSTALLED else logging.WARNING, "firmware update ended",
                extra={"job": self.job.id, "outcome": outcome.value, "detail": detail})
        await self._goto(Step.DONE, outcome=outcome.value, detail=detail, reported=False)
        await self._report_outcome(self.job)

    async def _report_outcome(self, job: UpdateJob) -> None:
        if job.held:
            await self.hold.release(job.held)
            job.held = []
            self._save()
        await self._notify(FirmwareStatus(job.outcome))
        job.reported = True
        self._save()
