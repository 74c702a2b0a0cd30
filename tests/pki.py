"""Test PKI: a firmware-signing CA and signing certificates (ECDSA P-256), written as PEM files, and the CA's
certificate revocation list (CRL) of revoked signing certificates; and the file servers' TLS certificates (HTTPS /
FTPS servers the charger checks against ``[firmware] transfer_ca``)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sim.harness.pki import Ca, Issued, issue_server_cert, make_ca


@dataclass(frozen=True)
class Signer:
    ca_cert: Path  # what a controller / technician trusts
    key: Path  # the signing key
    cert: Path  # the signing certificate, issued by the CA
    ca_key: Path | None = None  # the CA's key: to issue more signing certificates and its CRL


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evse-agent tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_signer(directory: Path, org: str = "Firmware", *, valid_days: int = 30) -> Signer:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{org} CA")).issuer_name(_name(f"{org} CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + timedelta(days=valid_days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(f"{org} signing")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = Signer(directory / "ca.pem", directory / "signing-key.pem", directory / "signing-cert.pem",
                   directory / "ca-key.pem")
    paths.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(paths.key, key)
    assert paths.ca_key is not None
    _write_key(paths.ca_key, ca_key)
    return paths


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _ca(signer: Signer) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    assert signer.ca_key is not None, "a signer made by make_signer keeps its CA's key"
    key = serialization.load_pem_private_key(signer.ca_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate(signer.ca_cert.read_bytes()), key


def another_signing_cert(signer: Signer, directory: Path, name: str = "second signing") -> Signer:
    """A further signing certificate (and key) issued by ``signer``'s CA: one to revoke without touching the first."""
    ca, ca_key = _ca(signer)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(ca.not_valid_after_utc)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out = Signer(signer.ca_cert, directory / "signing-key.pem", directory / "signing-cert.pem", signer.ca_key)
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out.key, key)
    return out


def make_crl(signer: Signer, out: Path, revoked: list[Path], *, this_update: datetime | None = None,
             next_update: datetime | None = None, der: bool = False) -> Path:
    """The CA's CRL listing the certificates ``revoked`` (PEM files), current for a day unless told otherwise."""
    ca, ca_key = _ca(signer)
    this_update = this_update or datetime.now(UTC) - timedelta(minutes=5)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(this_update)
               .next_update(next_update or this_update + timedelta(days=1)))
    for path in revoked:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(this_update).build())
    crl = builder.sign(ca_key, hashes.SHA256())
    out.write_bytes(crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    return out


@dataclass(frozen=True)
class FilesPki:
    """The file servers' TLS: HTTPS / FTPS servers the charger checks against ``[firmware] transfer_ca``."""

    ca: Ca  # what the charger is configured with ([firmware] transfer_ca)
    server: Issued  # the file servers' certificate, issued by it (localhost, 127.0.0.1)
    stranger: Issued  # a certificate for the same hosts from a CA the charger does not know


def make_files_pki(where: Path) -> FilesPki:
    ca = make_ca(where, "Files CA")
    stranger = issue_server_cert(make_ca(where, "Other CA"), where, "other")
    return FilesPki(ca, issue_server_cert(ca, where, "files"), stranger)


def server_context(issued: Issued) -> ssl.SSLContext:
    """An HTTPS server's context (for :func:`http_file_server`'s ``tls``) presenting ``issued``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(issued.cert, issued.key)
    return ctx
