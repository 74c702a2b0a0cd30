"""Security events (1.6 security whitepaper, "Security events/logging"; the same list in OCPP 2.0.1, appendix
"Security events", some renamed): every event goes to the rolling security log; the critical ones, and the TLS
failures of the CSMS link, are sent as SecurityEventNotification through the durable outbox — in order with the
transaction messages, retried like them, surviving a power cut.

The whitepaper's critical events (it asks for these to be sent): FirmwareUpdated, SettingSystemTime,
StartupOfTheDevice, ResetOrReboot, SecurityLogWasCleared, MemoryExhaustion, TamperDetectionActivated. A failed
TLS handshake (InvalidCentralSystemCertificate, InvalidTLSVersion, InvalidTLSCipherSuite) is queued once per
failed attempt; attempts are spaced by the link's growing back-off, and while :data:`MAX_QUEUED_LINK_EVENTS`
of them are still undelivered (a CSMS that cannot be reached, a clock that makes every certificate look
expired: libocpp #1046, #1155) further ones go to the security log only, counted — the queue is never flooded.
InvalidChargePointCertificate (a CertificateSigned refused, OCTT TC_077) is sent under the same cap.

The critical events this module itself raises (:meth:`SecurityEvents.started`, :meth:`SecurityEvents.watch`):
StartupOfTheDevice at each start; SecurityLogWasCleared when the security log, written before, is found gone at a
start (the agent itself never clears it: only someone with the controller's file system can); MemoryExhaustion
when the state directory's free space goes below ``[storage] min_free_mb``; SettingSystemTime when the wall clock
steps (:mod:`firmware.security.device_watch`). The others come from the features that cause them.

Version-agnostic: the features raise the whitepaper's names; a version that renamed an event (2.0.1:
InvalidCsmsCertificate, InvalidChargingStationCertificate, FailedToAuthenticateAtCsms) gives ``names``, and the
event is logged and sent under its name in that version. The payload (``type``, ``timestamp``, ``techInfo``) is
the same in 1.6 and 2.0.1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from firmware.config import AgentConfig
from firmware.maintenance.updater import UpdateJob
from firmware.security import tls
from firmware.security.device_watch import ClockStepWatch, FreeSpaceWatch
from firmware.security.security_log import FILE_NAME, SecurityLog
from firmware.storage import Database
from firmware.storage.outbox import Outbox
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

ACTION = "SecurityEventNotification"
CRITICAL = frozenset({"FirmwareUpdated", "SettingSystemTime", "StartupOfTheDevice", "ResetOrReboot",
                      "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated"})
LINK_EVENTS = frozenset({tls.INVALID_CSMS_CERTIFICATE, tls.INVALID_TLS_VERSION, tls.INVALID_TLS_CIPHER_SUITE})
#: Not critical in the whitepaper's table, but its certificate use case (and OCTT TC_077) has the charge point send
#: it when it refuses a CertificateSigned; capped like the link's events (a CSMS can send any number of those).
INVALID_CP_CERTIFICATE = "InvalidChargePointCertificate"
CAPPED = LINK_EVENTS | {INVALID_CP_CERTIFICATE}
MAX_QUEUED_LINK_EVENTS = 20
TECH_INFO_MAX = 255  # SecurityEventNotification.techInfo: CiString255
WATCH_INTERVAL_S = 60.0  # free space and clock steps are checked this often
CLOCK_STEP_TOLERANCE_S = 60.0
_LOG_STARTED = "security.log_started"  # set once the security log has been written: its absence later is news


#: OCPP 2.0.1's names of the whitepaper's events that 2.0.1 renamed.
OCPP201_NAMES = {tls.INVALID_CSMS_CERTIFICATE: "InvalidCsmsCertificate",
                 "InvalidChargePointCertificate": "InvalidChargingStationCertificate",
                 "FailedToAuthenticateAtCentralSystem": "FailedToAuthenticateAtCsms"}


#: Setting: the id of the update job whose FirmwareUpdated event is queued (committed with the event's row).
FIRMWARE_UPDATED_FOR = "firmware.updated_event_job"


def firmware_updated_once(db: Database, report: Callable[[str, str | None], object], job: UpdateJob) -> None:
    """FirmwareUpdated once per update job across any stop: the event's row in the outbox and the record that it was
    raised for this job are one commit (the outbox's write joins this transaction), so the Installed a restart
    reports again (answered, but not yet recorded as such) does not raise it twice, and a stop before the commit
    raises it then."""
    settings = Settings(db)
    with db.transaction():
        if settings.get(FIRMWARE_UPDATED_FOR) == job.id:
            log.info("FirmwareUpdated already raised for this update", extra={"job": job.id})
            return
        report("FirmwareUpdated", f"firmware {job.previous_version or 'unknown'} -> {job.version} (slot {job.slot})")
        settings.put(FIRMWARE_UPDATED_FOR, job.id)


class EventsContext(Protocol):
    """What :class:`SecurityEvents` uses of an adapter's feature context (``V16Context``, ``V201Context``)."""

    config: AgentConfig
    db: Database
    outbox: Outbox

    def wake_delivery(self) -> None: ...


class SecurityEvents:
    def __init__(self, ctx: EventsContext, names: Mapping[str, str] | None = None) -> None:
        """``names``: the version's names of renamed events (:data:`OCPP201_NAMES`); the whitepaper's otherwise."""
        self.ctx = ctx
        self._names = dict(names or {})
        self.log = SecurityLog(Path(ctx.config.state_dir) / FILE_NAME)
        self.not_queued = 0  # link events logged only: the queue already held MAX_QUEUED_LINK_EVENTS
        self.space = FreeSpaceWatch(ctx.config.state_dir, ctx.config.min_free_mb * 1024 * 1024)
        self.clock = ClockStepWatch(CLOCK_STEP_TOLERANCE_S)

    def started(self, what: str) -> None:
        """At each start: StartupOfTheDevice; SecurityLogWasCleared if the log written by an earlier run is gone;
        MemoryExhaustion if the storage is already short of space."""
        settings = Settings(self.ctx.db)
        cleared = settings.get(_LOG_STARTED) is not None and not self.log.files()
        self.report("StartupOfTheDevice", what)
        if cleared:
            self.report("SecurityLogWasCleared", "the security log written before was gone at start-up")
        settings.put(_LOG_STARTED, "1")
        self.check_device()

    def check_device(self) -> None:
        """MemoryExhaustion and SettingSystemTime, each once per occurrence."""
        if (low := self.space.check()) is not None:
            self.report("MemoryExhaustion", low)
        if (step := self.clock.check()) is not None:
            self.report("SettingSystemTime", f"system clock stepped by {step:+.0f} s")

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            self.check_device()

    def report(self, event: str, tech_info: str | None = None) -> bool:
        """Log ``event`` and, if it is to be sent, queue it; True if it was queued."""
        now = datetime.now(UTC)
        info = tech_info[:TECH_INFO_MAX] if tech_info else None
        queue = event in CRITICAL or event in CAPPED
        if queue and event in CAPPED and self.ctx.outbox.count(ACTION) >= MAX_QUEUED_LINK_EVENTS:
            queue = False
            self.not_queued += 1
        event = self._names.get(event, event)  # the rules above go by the whitepaper's name
        self.log.write(event, now, info, sent=queue)
        # an attack, a fault or a refusal is a WARNING; the device's own life (start, reset, reconfiguration) INFO
        level = logging.WARNING if event in LINK_EVENTS or event.startswith(("Invalid", "Failed", "Tamper",
                                                                              "Memory", "Attempted")) else logging.INFO
        log.log(level, "security event", extra={"event": event, "tech_info": info, "queued": queue})
        if queue:
            payload = {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z")}
            if info:
                payload["techInfo"] = info
            self.ctx.outbox.queue(ACTION, payload, created_at=now)
            self.ctx.wake_delivery()
        return queue
