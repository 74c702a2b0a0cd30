"""Whether a signing certificate may be used: issued by the manufacturer root and valid now (bundle.py
:func:`check_certificate`), and not revoked by the root's CRL (firmware/security/revocation.py) when one is configured.
Version-agnostic. Judged three times for an update (docs/firmware-update.md): the certificate a signed update brings
(1.6 security whitepaper SignedUpdateFirmware; 2.0.1 UpdateFirmware) when the request arrives — an adapter maps the
:class:`Verdict` onto its answer (Accepted, InvalidCertificate, RevokedCertificate) — and again after the download,
before its signature counts; and the bundle's own signing certificate when the bundle is verified (updater.py): a CRL
refreshed meanwhile decides then.

The CRL: ``[firmware] crl`` (root's, beside the trust anchor) and, when ``[firmware] crl_url`` is set, a copy
fetched from there into the state directory (``firmware-crl.der``) whenever the best CRL at hand is unusable or
past its nextUpdate. Of the two, the one issued by the root with the latest thisUpdate counts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from firmware.maintenance import transfer
from firmware.maintenance.bundle import BundleError, check_certificate
from firmware.security.revocation import (
    CertificateRevoked,
    RevocationUnknown,
    check_revocation,
    crl_issuer,
    read_crl,
)
from firmware.storage.files import write_durably

if TYPE_CHECKING:  # the updater judges certificates with this module: no import of it at run time
    from firmware.maintenance.updater import UpdaterSettings

log = logging.getLogger(__name__)

FETCHED_CRL = "firmware-crl.der"  # in the state directory: the copy fetched from [firmware] crl_url
#: A CRL fetch is made while the CSMS waits for the answer: bounded well below its call timeout.
FETCH_TIMEOUT_S = 10.0


class Verdict(StrEnum):
    VALID = "valid"
    INVALID = "invalid"  # not issued by the root, not valid now, or its revocation status cannot be told
    REVOKED = "revoked"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""


def _candidates(settings: UpdaterSettings, state_dir: Path) -> list[Path]:
    found = [settings.crl] if settings.crl is not None else []
    if settings.crl_url is not None:
        found.append(state_dir / FETCHED_CRL)
    return found


def _best(cert: x509.Certificate, settings: UpdaterSettings,
          state_dir: Path) -> tuple[x509.CertificateRevocationList | None, str]:
    """The CRL issued by the root with the latest thisUpdate (None, and why, when there is none); a CRL that lists
    the certificate wins at once: nothing newer undoes a revocation."""
    best: x509.CertificateRevocationList | None = None
    why = "no revocation list installed"
    for path in _candidates(settings, state_dir):
        try:
            crl = read_crl(path)
        except RevocationUnknown as exc:
            why = str(exc)
            continue
        if crl_issuer(cert, crl, settings.trust) is None:
            why = (f"the revocation list {path} is not signed by the root that issued the certificate "
                   f"('{cert.issuer.rfc4514_string()}')")
            continue
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            return crl, ""
        if best is None or crl.last_update_utc > best.last_update_utc:
            best = crl
    return best, why


def _fetch(url: str, settings: UpdaterSettings, dest: Path) -> None:
    """The CRL at ``url`` into ``dest`` (DER), replacing it only with a CRL that parses."""
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    try:
        transfer.download(url, part, max_bytes=4 << 20, timeout_s=min(settings.transfer_timeout_s, FETCH_TIMEOUT_S),
                          tls=settings.transfer_tls)
        crl = read_crl(part)
        write_durably(dest, crl.public_bytes(serialization.Encoding.DER), mode=0o644)  # a CRL is public
    finally:
        part.unlink(missing_ok=True)


async def judge_signing_certificate(pem: str, settings: UpdaterSettings, state_dir: Path,
                                    now: datetime | None = None) -> Judgement:
    """The signing certificate a CSMS sent with a signed update (PEM), judged before the update is accepted."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        return Judgement(Verdict.INVALID, str(exc))
    return await judge_certificate(cert, settings, state_dir, now)


async def judge_certificate(cert: x509.Certificate, settings: UpdaterSettings, state_dir: Path,
                            now: datetime | None = None) -> Judgement:
    """``cert`` judged by the rule above, with the best CRL at hand (fetched from crl_url when that is stale)."""
    now = now or datetime.now(UTC)
    try:
        check_certificate(cert, settings.trust, "signingCertificate", now)
    except BundleError as exc:
        return Judgement(Verdict.INVALID, str(exc))
    if settings.crl is None and settings.crl_url is None:
        return Judgement(Verdict.VALID)  # no revocation list configured: nothing to check against
    crl, why = _best(cert, settings, state_dir)
    stale = crl is None or (crl.next_update_utc is not None and now > crl.next_update_utc)
    if stale and settings.crl_url is not None:
        try:
            await asyncio.to_thread(_fetch, settings.crl_url, settings, state_dir / FETCHED_CRL)
            log.info("firmware CRL fetched", extra={"url": transfer.redact(settings.crl_url)})
        except (transfer.TransferError, RevocationUnknown, OSError) as exc:
            log.warning("firmware CRL could not be fetched", extra={"url": transfer.redact(settings.crl_url),
                                                                    "error": str(exc)})
        crl, why = _best(cert, settings, state_dir)
    if crl is None:
        return Judgement(Verdict.INVALID, f"revocation status unknown: {why}")
    try:
        check_revocation(cert, crl, settings.trust, now)
    except CertificateRevoked as exc:
        return Judgement(Verdict.REVOKED, str(exc))
    except RevocationUnknown as exc:
        return Judgement(Verdict.INVALID, f"revocation status unknown: {exc}")
    return Judgement(Verdict.VALID)
