"""Security events (1.6 security whitepaper, "Security events/logging"): every event goes to the rolling
security log; the critical ones, and the TLS failures of the CSMS link, are sent as SecurityEventNotification
through the durable outbox — in order with the transaction messages, retried like them, surviving a power cut.

The whitepaper's critical events (it asks for these to be sent): FirmwareUpdated, SettingSystemTime,
StartupOfTheDevice, ResetOrReboot, SecurityLogWasCleared, MemoryExhaustion, TamperDetectionActivated. A failed
TLS handshake (InvalidCentralSystemCertificate, InvalidTLSVersion, InvalidTLSCipherSuite) is queued once per
failed attempt; attempts are spaced by the link's growing back-off, and while :data:`MAX_QUEUED_LINK_EVENTS`
of them are still undelivered (a CSMS that cannot be reached, a clock that makes every certificate look
expired: libocpp #1046, #1155) further ones go to the security log only, counted — the queue is never flooded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from firmware.ocpp.v16.context import V16Context
from firmware.security import tls
from firmware.security.security_log import SecurityLog

log = logging.getLogger(__name__)

ACTION = "SecurityEventNotification"
CRITICAL = frozenset({"FirmwareUpdated", "SettingSystemTime", "StartupOfTheDevice", "ResetOrReboot",
                      "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated"})
LINK_EVENTS = frozenset({tls.INVALID_CSMS_CERTIFICATE, tls.INVALID_TLS_VERSION, tls.INVALID_TLS_CIPHER_SUITE})
MAX_QUEUED_LINK_EVENTS = 20
TECH_INFO_MAX = 255  # SecurityEventNotification.techInfo: CiString255


class SecurityEvents:
    def __init__(self, ctx: V16Context) -> None:
        self.ctx = ctx
        self.log = SecurityLog(Path(ctx.config.state_dir) / "security.log")
        self.not_queued = 0  # link events logged only: the queue already held MAX_QUEUED_LINK_EVENTS

    def report(self, event: str, tech_info: str | None = None) -> bool:
        """Log ``event`` and, if it is to be sent, queue it; True if it was queued."""
        now = datetime.now(UTC)
        info = tech_info[:TECH_INFO_MAX] if tech_info else None
        queue = event in CRITICAL or event in LINK_EVENTS
        if queue and event in LINK_EVENTS and self.ctx.outbox.count(ACTION) >= MAX_QUEUED_LINK_EVENTS:
            queue = False
            self.not_queued += 1
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
