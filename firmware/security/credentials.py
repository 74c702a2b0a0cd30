"""The charge point's own certificate and key (security profile 3), and their renewal.

The key pair is generated on the controller (ECDSA P-256) and never leaves it: written with mode 0600 before the
certificate signing request (CN = the charge point's serial number, O = CpoName) goes to the CSMS. A certificate
the CSMS sends back is taken only if it is for that key, currently valid, and chains up to an installed CSMS
root; it then replaces the current one — chain and key in one file, ``<state dir>/certs/charge-point-renewed.pem``
(0600), replaced atomically, so a power cut never leaves a certificate without its key — and the link uses it
from the next connection. Until a certificate has been renewed this way the commissioned
files (``[ocpp] cp_cert``/``cp_key``) are the current ones.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RENEW_BEFORE = timedelta(days=30)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ChargePointCredentials:
    def __init__(self, directory: str | Path, commissioned_cert: str | None = None,
                 commissioned_key: str | None = None) -> None:
        self.directory = Path(directory)
        self.renewed_path = self.directory / "charge-point-renewed.pem"  # chain, then its key
        self.pending_key_path = self.directory / "charge-point-key.pending.pem"
        self._commissioned = (commissioned_cert, commissioned_key)

    def files(self) -> tuple[str, str] | None:
        """The current certificate and key files (renewed ones first), or ``None``."""
        if self.renewed_path.is_file():
            return str(self.renewed_path), str(self.renewed_path)
        cert, key = self._commissioned
        return (cert, key) if cert is not None and key is not None else None

    def current(self) -> x509.Certificate | None:
        files = self.files()
        if files is None:
            return None
        try:
            return x509.load_pem_x509_certificate(Path(files[0]).read_bytes())
        except (OSError, ValueError):
            return None

    def renewal_due(self, now: datetime | None = None) -> bool:
        cert = self.current()
        return cert is not None and cert.not_valid_after_utc - (now or datetime.now(UTC)) <= RENEW_BEFORE

    def new_request(self, serial_number: str, organization: str | None) -> str:
        """A fresh key pair (the private key written 0600, pending) and its CSR as PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(self.pending_key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, serial_number)]
        if organization:
            attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes)).sign(key, hashes.SHA256())
        return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def accept_signed(self, chain_pem: str, roots: list[x509.Certificate], now: datetime | None = None) -> str | None:
        """Take the certificate (chain) the CSMS signed; ``None`` when it was taken, else why not."""
        try:
            chain = x509.load_pem_x509_certificates(chain_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            return "not a PEM certificate chain"
        try:
            pending = serialization.load_pem_private_key(self.pending_key_path.read_bytes(), None)
        except (OSError, ValueError):
            return "no certificate signing request is pending"
        leaf = chain[0]
        now = now or datetime.now(UTC)
        if leaf.public_key() != pending.public_key():
            return "the certificate is not for the key of the pending request"
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                return f"not valid now: {cert.subject.rfc4514_string()}"
        try:
            for cert, issuer in itertools.pairwise(chain):
                cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return "the chain does not hold together"
        top = chain[-1]
        if not any(_issued_by(top, root) for root in roots):
            return "the chain does not lead to an installed CSMS root"
        key_pem = self.pending_key_path.read_bytes()
        _write_private(self.renewed_path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + key_pem)
        self.pending_key_path.unlink()
        return None


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    if cert == root:
        return True
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
