"""The charge point's certificate store: the root certificates the CSMS installs (CentralSystemRootCertificate,
ManufacturerRootCertificate), next to the CSMS root(s) commissioned with the configuration.

Installed certificates are PEM files under ``<state dir>/certs/<use>/``, named by their SHA-256 fingerprint,
mode 0600. They are identified as the 1.6 security whitepaper (edition 3) identifies them, by
:class:`CertificateHashData`: the hash of the issuer's distinguished name (DER), the hash of the issuer's public
key (the key's bits, as in OCSP's CertID) and the serial number in hexadecimal without leading zeros. A root is
its own issuer. The ``cryptography`` package does the X.509 work.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

log = logging.getLogger(__name__)

CSMS_ROOT = "CentralSystemRootCertificate"
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
_DIRS = {CSMS_ROOT: "central-system-roots", MANUFACTURER_ROOT: "manufacturer-roots"}
_HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}


class InstallResult(StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"  # not a valid root certificate, or the store is full
    FAILED = "Failed"  # valid, but it could not be stored


class DeleteResult(StrEnum):
    ACCEPTED = "Accepted"
    FAILED = "Failed"  # the CSMS root in use, or a commissioned one
    NOT_FOUND = "NotFound"


@dataclass(frozen=True)
class CertificateHashData:
    hash_algorithm: str
    issuer_name_hash: str
    issuer_key_hash: str
    serial_number: str

    def to_ocpp(self) -> dict[str, str]:
        return {"hashAlgorithm": self.hash_algorithm, "issuerNameHash": self.issuer_name_hash,
                "issuerKeyHash": self.issuer_key_hash, "serialNumber": self.serial_number}

    @classmethod
    def from_ocpp(cls, data: dict[str, str]) -> CertificateHashData:
        return cls(data["hashAlgorithm"], data["issuerNameHash"].lower(), data["issuerKeyHash"].lower(),
                   data["serialNumber"].lower().lstrip("0") or "0")


def _key_bits(key: object) -> bytes:
    """The public key as the BIT STRING of its SubjectPublicKeyInfo holds it (what OCSP's issuerKeyHash hashes)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    raise ValueError(f"unsupported key type {type(key).__name__}")


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None,
              algorithm: str = "SHA256") -> CertificateHashData:
    """Edition 3's identification of ``cert``; ``issuer`` defaults to ``cert`` itself (a root)."""
    h = _HASHES[algorithm]
    issuer = issuer or cert
    return CertificateHashData(algorithm, h(cert.issuer.public_bytes()).hexdigest(),
                               h(_key_bits(issuer.public_key())).hexdigest(), format(cert.serial_number, "x"))


def _is_root(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and cert.issuer == cert.subject


@dataclass(frozen=True)
class Installed:
    use: str
    path: Path
    cert: x509.Certificate
    commissioned: bool  # from the configuration (the technician's), not installed over OCPP


class CertificateStore:
    def __init__(self, directory: str | Path, *, max_certificates: int = 20,
                 commissioned_csms_roots: str | Path | None = None) -> None:
        self.directory = Path(directory)
        self.max_certificates = max_certificates
        self.commissioned = Path(commissioned_csms_roots) if commissioned_csms_roots is not None else None

    def _dir(self, use: str) -> Path:
        return self.directory / _DIRS[use]

    def installed(self, use: str | None = None) -> list[Installed]:
        out: list[Installed] = []
        for u in ([use] if use is not None else list(_DIRS)):
            paths: list[tuple[Path, bool]] = []
            if u == CSMS_ROOT and self.commissioned is not None:
                base = self.commissioned
                paths += [(p, True) for p in (sorted(base.glob("*.pem")) + sorted(base.glob("*.crt"))
                                              if base.is_dir() else [base]) if p.is_file()]
            d = self._dir(u)
            if d.is_dir():
                paths += [(p, False) for p in sorted(d.glob("*.pem")) if p.resolve() not in
                          {q.resolve() for q, _ in paths}]
            for path, commissioned in paths:
                try:
                    certs = x509.load_pem_x509_certificates(path.read_bytes())
                except (OSError, ValueError) as exc:
                    log.warning("unreadable certificate in the store", extra={"path": str(path), "error": str(exc)})
                    continue
                out += [Installed(u, path, c, commissioned) for c in certs]
        return out

    def csms_roots_pem(self) -> str:
        """Every CentralSystemRootCertificate as PEM text (what TLS trusts for profiles 2 and 3)."""
        return "".join(i.cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
                       for i in self.installed(CSMS_ROOT))

    def invalid(self, pem: str, now: datetime | None = None) -> str | None:
        """Why ``pem`` is not a root certificate the store takes (``None``: it is one)."""
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return "not a PEM certificate"
        now = now or datetime.now(UTC)
        if not _is_root(cert):
            return "not a root (self-signed CA) certificate"
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return "not valid now"
        return None

    def install(self, use: str, pem: str, now: datetime | None = None) -> InstallResult:
        if use not in _DIRS or self.invalid(pem, now) is not None:
            return InstallResult.REJECTED
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()
        path = self._dir(use) / f"{fingerprint}.pem"
        if path.exists():
            return InstallResult.ACCEPTED  # already there: nothing to do
        if len(self.installed()) >= self.max_certificates:
            return InstallResult.REJECTED  # CertificateStoreMaxLength
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.error("certificate not stored", extra={"path": str(path), "error": str(exc)})
            return InstallResult.FAILED
        return InstallResult.ACCEPTED

    def ids(self, use: str) -> list[CertificateHashData]:
        """Each certificate once (a commissioned root may also have been installed over OCPP)."""
        return list(dict.fromkeys(hash_data(i.cert) for i in self.installed(use)))

    def delete(self, wanted: CertificateHashData, *, in_use: x509.Certificate | None = None,
               keep_one_csms_root: bool = False) -> DeleteResult:
        """``in_use``: the CSMS's certificate on the current connection; ``keep_one_csms_root``: a TLS profile is
        active. ``Failed`` when the deletion would leave no root for the CSMS in use (no other installed root of
        the same subject as its issuer), no CSMS root at all while TLS is on, or when only a commissioned copy
        matches (the technician's, replaced by commissioning). An installed copy of a commissioned root can go."""
        if wanted.hash_algorithm not in _HASHES:
            return DeleteResult.NOT_FOUND
        everything = self.installed()
        matches = [i for i in everything if hash_data(i.cert, algorithm=wanted.hash_algorithm) == wanted]
        if not matches:
            return DeleteResult.NOT_FOUND
        deletable = [i for i in matches if not i.commissioned]
        if not deletable:
            return DeleteResult.FAILED
        target = deletable[0]
        if target.use == CSMS_ROOT:
            left = [i for i in everything if i.use == CSMS_ROOT and i.path != target.path]
            if in_use is not None and in_use.issuer == target.cert.subject and \
                    not any(i.cert.subject == in_use.issuer for i in left):
                return DeleteResult.FAILED
            if keep_one_csms_root and not left:
                return DeleteResult.FAILED
        try:
            target.path.unlink()
        except OSError as exc:
            log.error("certificate not deleted", extra={"path": str(target.path), "error": str(exc)})
            return DeleteResult.FAILED
        return DeleteResult.ACCEPTED
