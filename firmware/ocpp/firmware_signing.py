"""A signed update's signing certificate refused alike in every version: 1.6 SignedUpdateFirmware and 2.0.1
UpdateFirmware judge it before answering (firmware/maintenance/signing.py), log the refusal, report the security
whitepaper's event InvalidFirmwareSigningCertificate and answer with the same status names."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from firmware.maintenance.signing import Verdict, judge_signing_certificate
from firmware.maintenance.updater import UpdaterSettings

log = logging.getLogger(__name__)


async def refused_signing_certificate(pem: str, settings: UpdaterSettings, state_dir: Path,
                                      report_security_event: Callable[[str, str | None], object], *,
                                      action: str, request_id: int) -> str | None:
    """None when the certificate may be used; else the answer's status (RevokedCertificate, InvalidCertificate:
    spelled alike in 1.6 and 2.0.1), the refusal logged and its event reported (not critical: the security log keeps
    it)."""
    judged = await judge_signing_certificate(pem, settings, state_dir)
    if judged.verdict is Verdict.VALID:
        return None
    log.warning("%s: signing certificate refused", action, extra={
        "request_id": request_id, "verdict": judged.verdict.value, "error": judged.reason})
    report_security_event("InvalidFirmwareSigningCertificate", judged.reason[:255])
    return "RevokedCertificate" if judged.verdict is Verdict.REVOKED else "InvalidCertificate"
