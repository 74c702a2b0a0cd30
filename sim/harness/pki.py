"""A test PKI for OCPP security profiles 2 and 3: a CSMS root CA, the CSMS's server certificate, and a
charge point certificate (ECDSA P-256, as the 1.6 security whitepaper's ECDHE-ECDSA suites want), as PEM files.

What a newcomer gets from ``python -m sim up --security-profile 2`` (generated under the state directory when
no ``--csms-ca`` is given) and what the tests build their good and bad certificates from: an expired server
certificate, one issued for another host, one from an unknown CA (:func:`issue_server_cert` with a different
:class:`Ca`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path  # the CA certificate as PEM (what a charge point installs as CentralSystemRootCertificate)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class TlsPki:
    csms_root: Ca  # CentralSystemRootCertificate
    csms: Issued  # the CSMS's server certificate (localhost, 127.0.0.1, ::1)
    charge_point: Issued | None  # profile 3: the charge point's client certificate (CN = its serial / id)


def _name(cn: str, org: str = "evse-agent tests") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def make_ca(directory: Path, name: str = "CSMS root", *, valid_days: int = 365) -> Ca:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name.replace(' ', '-').lower()}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / f"{name.replace(' ', '-').lower()}-key.pem", key)
    return Ca(cert, key, path)


def _issue(ca: Ca, directory: Path, stem: str, subject: x509.Name, *, usage: x509.ObjectIdentifier,
           san: list[x509.GeneralName] | None, valid_from: datetime, valid_to: datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(valid_from).not_valid_after(valid_to)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    issued = Issued(directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(issued.key, key)
    return issued


def issue_server_cert(ca: Ca, directory: Path, stem: str = "csms", *, hosts: tuple[str, ...] = (
        "localhost", "127.0.0.1", "::1"), expired: bool = False) -> Issued:
    """The CSMS's TLS server certificate for ``hosts`` (names, IP addresses); ``expired``: ended an hour ago."""
    now = datetime.now(UTC)
    valid_from, valid_to = (now - timedelta(days=30), now - timedelta(hours=1)) if expired else \
        (now - timedelta(minutes=5), now + timedelta(days=365))
    san: list[x509.GeneralName] = []
    for h in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            san.append(x509.DNSName(h))
    return _issue(ca, directory, stem, _name(hosts[0]), usage=ExtendedKeyUsageOID.SERVER_AUTH, san=san,
                  valid_from=valid_from, valid_to=valid_to)


def issue_charge_point_cert(ca: Ca, directory: Path, serial_number: str, cpo_name: str = "evse-agent tests",
                            stem: str = "charge-point", *, valid_days: int = 365) -> Issued:
    """The charge point's client certificate as the whitepaper names it: CN = serial number, O = CpoName."""
    now = datetime.now(UTC)
    return _issue(ca, directory, stem, _name(serial_number, cpo_name), usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                  san=None, valid_from=now - timedelta(minutes=5), valid_to=now + timedelta(days=valid_days))


def make_tls_pki(directory: Path, charge_point_serial: str | None = None) -> TlsPki:
    """A CSMS root, the CSMS's server certificate and (with a serial number) a charge point certificate."""
    root = make_ca(directory)
    csms = issue_server_cert(root, directory)
    cp = issue_charge_point_cert(root, directory, charge_point_serial) if charge_point_serial else None
    return TlsPki(root, csms, cp)


def sign_csr(ca: Ca, csr_pem: str, *, valid_days: int = 365) -> str:
    """What a CSMS's CA does with a charge point's SignCertificate: the certificate for the CSR's key and subject
    (client authentication), as PEM."""
    csr = x509.load_pem_x509_csr(csr_pem.encode("ascii"))
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.cert.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")

