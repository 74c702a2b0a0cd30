"""The certificate store: edition 3's hash data (checked against the OCSP CertID the ``cryptography`` package
computes), what InstallCertificate accepts, and what DeleteCertificate refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from firmware.security.certstore import (
    CSMS_ROOT,
    MANUFACTURER_ROOT,
    CertificateHashData,
    CertificateStore,
    DeleteResult,
    InstallResult,
    hash_data,
)
from sim.harness.pki import issue_server_cert, make_ca


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _root(serial: int, *, expired: bool = False) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"root {serial}")])
    now = datetime.now(UTC)
    start, end = (now - timedelta(days=10), now - timedelta(days=1)) if expired else (now - timedelta(hours=1),
                                                                                      now + timedelta(days=30))
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def test_hash_data_is_the_ocsp_cert_id_and_the_serial_has_no_leading_zeros(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = x509.load_pem_x509_certificate(issue_server_cert(ca, tmp_path).cert.read_bytes())
    ours = hash_data(leaf, ca.cert)
    req = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca.cert, hashes.SHA256()).build()
    assert ours.issuer_name_hash == req.issuer_name_hash.hex()
    assert ours.issuer_key_hash == req.issuer_key_hash.hex()
    assert ours.serial_number == format(req.serial_number, "x") and ours.hash_algorithm == "SHA256"
    assert hash_data(_root(0x0ABC)).serial_number == "abc"
    sha384 = hash_data(leaf, ca.cert, "SHA384")
    assert len(sha384.issuer_name_hash) == 96
    assert CertificateHashData.from_ocpp({**ours.to_ocpp(), "serialNumber": "000" + ours.serial_number.upper(),
                                          "issuerNameHash": ours.issuer_name_hash.upper()}) == ours


def test_install_accepts_current_roots_only_and_is_bounded(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs", max_certificates=2)
    ca = make_ca(tmp_path / "ca")
    leaf = issue_server_cert(ca, tmp_path / "ca").cert.read_text()
    assert store.install(CSMS_ROOT, "not a certificate") is InstallResult.REJECTED
    assert store.install(CSMS_ROOT, leaf) is InstallResult.REJECTED  # not a root
    assert store.install(CSMS_ROOT, _pem(_root(7, expired=True))) is InstallResult.REJECTED
    assert store.install(CSMS_ROOT, _pem(ca.cert)) is InstallResult.ACCEPTED
    assert store.install(CSMS_ROOT, _pem(ca.cert)) is InstallResult.ACCEPTED  # already there
    assert store.install(MANUFACTURER_ROOT, _pem(_root(8))) is InstallResult.ACCEPTED
    assert store.install(MANUFACTURER_ROOT, _pem(_root(9))) is InstallResult.REJECTED  # store full
    assert [d.serial_number for d in store.ids(CSMS_ROOT)] == [format(ca.cert.serial_number, "x")]
    files = list((tmp_path / "certs").rglob("*.pem"))
    assert len(files) == 2 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_delete_refuses_the_root_in_use_and_the_commissioned_ones(tmp_path: Path) -> None:
    commissioned = make_ca(tmp_path / "commissioned", "Commissioned root")
    store = CertificateStore(tmp_path / "certs", commissioned_csms_roots=commissioned.path)
    other = make_ca(tmp_path / "other", "Other root")
    spare = _root(0x42)
    assert store.install(CSMS_ROOT, _pem(other.cert)) is InstallResult.ACCEPTED
    assert store.install(CSMS_ROOT, _pem(spare)) is InstallResult.ACCEPTED
    assert len(store.ids(CSMS_ROOT)) == 3 and store.csms_roots_pem().count("BEGIN CERTIFICATE") == 3
    server = x509.load_pem_x509_certificate(issue_server_cert(other, tmp_path / "other").cert.read_bytes())
    assert store.delete(hash_data(other.cert), in_use=server) is DeleteResult.FAILED  # the root in use
    assert store.delete(hash_data(commissioned.cert)) is DeleteResult.FAILED  # the technician's
    # TC_076: a copy of the commissioned root installed over OCPP can be deleted again (the commissioned one stays)
    assert store.install(CSMS_ROOT, _pem(commissioned.cert)) is InstallResult.ACCEPTED
    assert store.delete(hash_data(commissioned.cert)) is DeleteResult.ACCEPTED
    assert store.delete(hash_data(commissioned.cert)) is DeleteResult.FAILED
    assert store.delete(hash_data(spare)) is DeleteResult.ACCEPTED
    assert store.delete(hash_data(spare)) is DeleteResult.NOT_FOUND
    assert store.delete(hash_data(other.cert)) is DeleteResult.ACCEPTED  # no longer in use
    alone = CertificateStore(tmp_path / "alone")
    assert alone.install(CSMS_ROOT, _pem(spare)) is InstallResult.ACCEPTED
    assert alone.delete(hash_data(spare), keep_one_csms_root=True) is DeleteResult.FAILED  # the last one, TLS on


def test_a_signed_certificate_is_taken_only_for_the_pending_key_valid_and_chained(tmp_path: Path) -> None:
    from firmware.security.credentials import ChargePointCredentials
    from sim.harness.pki import issue_charge_point_cert, sign_csr

    root = make_ca(tmp_path / "root", "CSMS root")
    other = make_ca(tmp_path / "other", "Other root")
    soon = issue_charge_point_cert(root, tmp_path / "soon", "CP-9", valid_days=10)
    creds = ChargePointCredentials(tmp_path / "certs", str(soon.cert), str(soon.key))
    assert creds.files() == (str(soon.cert), str(soon.key)) and creds.renewal_due()
    assert creds.accept_signed(sign_csr(root, _any_csr()), [root.cert]) == "no certificate signing request is pending"
    csr = creds.new_request("CP-9", None)
    assert creds.pending_key_path.stat().st_mode & 0o777 == 0o600
    assert creds.accept_signed(sign_csr(root, _any_csr()), [root.cert]) == \
        "the certificate is not for the key of the pending request"
    assert creds.accept_signed(sign_csr(other, csr), [root.cert]) == \
        "the chain does not lead to an installed CSMS root"
    assert "not valid now" in (creds.accept_signed(sign_csr(root, csr), [root.cert],
                                                   now=datetime.now(UTC) + timedelta(days=400)) or "")
    assert creds.accept_signed("garbage", [root.cert]) == "not a PEM certificate chain"
    assert creds.accept_signed(sign_csr(root, csr), [other.cert, root.cert]) is None
    assert creds.files() == (str(creds.renewed_path),) * 2 and not creds.renewal_due()
    assert creds.renewed_path.stat().st_mode & 0o777 == 0o600
    import ssl
    ssl.create_default_context().load_cert_chain(creds.renewed_path)  # chain and key in one file, matching


def _any_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, "x")])).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
