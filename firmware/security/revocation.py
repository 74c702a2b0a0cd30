"""Revocation of the firmware signing certificate: an X.509 CRL issued by the manufacturer root.

The 1.6 security whitepaper's SignedUpdateFirmware answers RevokedCertificate when the signing certificate has been
revoked; the charger learns that from the CRL its manufacturer root publishes, configured beside the root
(``[firmware] crl``, docs/configuration.md; refreshed from ``[firmware] crl_url`` by the caller,
firmware/maintenance/updater.py). Version-agnostic: the OCPP adapters only map the verdict onto their answers.

The rule, in one place (docs/firmware-update.md):

* the CRL counts only if its signature verifies with the key of the root that issued the certificate (one of the
  trust anchors) and it names that root as its issuer; anything else is unusable;
* the certificate is listed (its serial number) -> :class:`CertificateRevoked`, also when the CRL is past its
  nextUpdate: a revocation is never undone, an old list still proves it;
* not listed, and the CRL is current (thisUpdate <= now <= nextUpdate, or it names no nextUpdate) -> not revoked;
* not listed, but the CRL is expired, not yet valid, missing, unreadable or not issued by the root ->
  :class:`RevocationUnknown`: fail closed, the certificate is refused as invalid, saying why — a charger that cannot
  tell whether its update was signed with a stolen key must not install it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

#: A CRL file larger than this is not read (a manufacturer's list of revoked signing certificates is small).
MAX_CRL_BYTES = 4 << 20


class RevocationUnknown(Exception):
    """Whether the certificate is revoked cannot be told; the message says why (the certificate is refused)."""


class CertificateRevoked(Exception):
    """The certificate is on its issuer's CRL; the message names it and when it was revoked."""


@dataclass(frozen=True)
class CrlInfo:
    issuer: str
    this_update: datetime
    next_update: datetime | None
    revoked: int  # entries listed

    def expired(self, now: datetime) -> bool:
        return self.next_update is not None and now > self.next_update


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in PEM or DER; raises :class:`RevocationUnknown` when it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise RevocationUnknown(f"the revocation list is not an X.509 CRL in PEM or DER ({exc})") from None


def read_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CRL_BYTES + 1)
    except OSError as exc:
        raise RevocationUnknown(f"the revocation list {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_CRL_BYTES:
        raise RevocationUnknown(f"the revocation list {path} is larger than {MAX_CRL_BYTES} bytes")
    return load_crl(data)


def _issued_by(crl: x509.CertificateRevocationList, root: x509.Certificate) -> bool:
    public = root.public_key()
    if crl.issuer != root.subject or not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return False
    return crl.is_signature_valid(public)


def crl_info(crl: x509.CertificateRevocationList) -> CrlInfo:
    return CrlInfo(crl.issuer.rfc4514_string(), crl.last_update_utc, crl.next_update_utc, len(list(crl)))


def crl_issuer(cert: x509.Certificate, crl: x509.CertificateRevocationList,
               roots: Iterable[x509.Certificate]) -> x509.Certificate | None:
    """The root among ``roots`` that issued both ``cert`` and ``crl`` (the CRL's signature checked), or None."""
    return next((r for r in roots if r.subject == cert.issuer and _issued_by(crl, r)), None)


def check_revocation(cert: x509.Certificate, crl: x509.CertificateRevocationList,
                     roots: Iterable[x509.Certificate], now: datetime | None = None) -> CrlInfo:
    """Apply the rule above to ``cert`` (issued by one of ``roots``) and ``crl``: returns what the CRL is when the
    certificate is not revoked; raises :class:`CertificateRevoked` or :class:`RevocationUnknown`."""
    now = now or datetime.now(UTC)
    if crl_issuer(cert, crl, roots) is None:
        raise RevocationUnknown(f"the revocation list (issuer '{crl.issuer.rfc4514_string()}') is not signed by the "
                                f"root that issued the certificate ('{cert.issuer.rfc4514_string()}')")
    info = crl_info(crl)
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is not None:
        raise CertificateRevoked(f"the signing certificate '{cert.subject.rfc4514_string()}' (serial "
                                 f"{cert.serial_number:x}) was revoked on {entry.revocation_date_utc:%Y-%m-%d %H:%M} "
                                 f"UTC (CRL of '{info.issuer}', {info.this_update:%Y-%m-%d})")
    if now < info.this_update:
        raise RevocationUnknown(f"the revocation list is not valid yet (thisUpdate "
                                f"{info.this_update:%Y-%m-%d %H:%M} UTC): check the charger's clock")
    if info.expired(now):
        assert info.next_update is not None
        raise RevocationUnknown(f"the revocation list expired on {info.next_update:%Y-%m-%d %H:%M} UTC (nextUpdate) "
                                "and no newer one is installed: the certificate's status is unknown")
    return info
