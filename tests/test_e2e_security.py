"""Security profiles end to end: the agent as a process, the simulated CSMS serving wss:// with a test PKI
generated here, the security keys changed over OCPP (TC_073, TC_083, TC_084, TC_085, TC_086, TC_087) and the
security events delivered through the outbox."""

from __future__ import annotations

import base64
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from sim.csms.server import CallErrorReceived, server_tls_context
from sim.csms.transcript import EntryKind, TranscriptEntry
from sim.harness.pki import TlsPki, issue_charge_point_cert, issue_server_cert, make_tls_pki
from tests.station import CP_ID, Station

KEY = "correct-horse-battery"  # 21 characters: sent as its text
NEW_KEY = "00112233445566778899aabbccddeeff0a0b0c0d"  # 40 hex digits: sent as the 20 bytes they encode


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return make_tls_pki(tmp_path_factory.mktemp("pki"), charge_point_serial=CP_ID)


def _connects(s: Station, since: int = 0) -> list[TranscriptEntry]:
    return [e for e in s.csms.transcript.entries if e.kind is EntryKind.CONNECT and e.seq >= since]


async def _wait_connect(s: Station, since: int, what: str) -> TranscriptEntry:
    await s.wait_until(lambda: bool(_connects(s, since)), what=what)
    return _connects(s, since)[0]


def _ocpp(profile: int, pki: TlsPki, *, password: str | None = KEY, cp_cert: bool = False) -> str:
    lines = [f"security_profile = {profile}", f'csms_ca = "{pki.csms_root.path}"']
    if password is not None:
        lines.append(f'password = "{password}"')
    if cp_cert:
        assert pki.charge_point is not None
        lines += [f'cp_cert = "{pki.charge_point.cert}"', f'cp_key = "{pki.charge_point.key}"']
    return "\n".join(lines) + "\n"


async def test_profile_2_a_bad_server_certificate_is_refused_and_reported_once_per_attempt(
        tmp_path: Path, pki: TlsPki) -> None:
    """TC_086/TC_087: an expired CSMS certificate ends each attempt with InvalidCentralSystemCertificate; once
    the CSMS has a valid one the agent connects and the queued events arrive, one per failed attempt, after
    StartupOfTheDevice and in order."""
    expired = issue_server_cert(pki.csms_root, tmp_path / "expired", expired=True)
    server = server_tls_context(expired.cert, expired.key)
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(2, pki)) as s:
        s.profile.password = KEY
        await s.start_agent(wait_boot=False)
        await s.wait_log(lambda e: e.get("msg") == "security event"
                         and e.get("event") == "InvalidCentralSystemCertificate", what="the refused certificate")
        assert not _connects(s)
        server.load_cert_chain(pki.csms.cert, pki.csms.key)  # the CSMS's certificate is renewed
        await s.wait_booted()
        connect = _connects(s)[0]
        assert connect.detail["tls"] in ("TLSv1.2", "TLSv1.3") and connect.detail["client_certificate"] is None
        failed = [e for e in s.log() if e.get("msg") == "CSMS connection failed"]
        assert failed and all("certificate has expired" in e["error"] for e in failed)
        await s.wait_until(lambda: len(s.csms.state(CP_ID).security_events) == len(failed) + 1,
                           what="StartupOfTheDevice and one event per failed attempt")
        events = s.csms.state(CP_ID).security_events
        assert events[0]["type"] == "StartupOfTheDevice"
        assert [e["type"] for e in events[1:]] == ["InvalidCentralSystemCertificate"] * len(failed)
        assert all("expired" in e["techInfo"] for e in events[1:])
        logged = [json.loads(line) for line in (tmp_path / "security.log").read_text().splitlines()]
        assert [e["type"] for e in logged] == [e["type"] for e in events]


async def test_profile_raised_to_3_over_ocpp_never_lowered(tmp_path: Path, pki: TlsPki) -> None:
    """TC_084: a lower SecurityProfile is Rejected. TC_083: a higher one with its prerequisites is Accepted and
    the agent reconnects with it at once (profile 3: its own certificate, no Basic auth)."""
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    server.verify_mode = ssl.CERT_OPTIONAL  # one endpoint for profiles 2 and 3
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(2, pki, cp_cert=True)) as s:
        s.profile.password = KEY
        await s.start_agent()
        assert _connects(s)[0].detail["client_certificate"] is None
        assert (await s.csms.change_configuration(CP_ID, "SecurityProfile", "1"))["status"] == "Rejected"
        assert (await s.csms.change_configuration(CP_ID, "SecurityProfile", "0"))["status"] == "Rejected"
        s.profile.password = None  # profile 3: the CSMS knows the charge point by its certificate
        mark = s.mark()
        assert (await s.csms.change_configuration(CP_ID, "SecurityProfile", "3"))["status"] == "Accepted"
        connect = await _wait_connect(s, mark, "a connection with profile 3")
        assert connect.detail["client_certificate"] == CP_ID
        await s.csms.wait_connected(CP_ID)
        answer = await s.csms.get_configuration(CP_ID, ["SecurityProfile"])
        assert answer["configurationKey"] == [{"key": "SecurityProfile", "readonly": False, "value": "3"}]


async def test_profile_raise_without_prerequisites_is_rejected(tmp_path: Path, pki: TlsPki) -> None:
    """Profile 2 without a charge point certificate: 3 is Rejected (nothing to present)."""
    server = server_tls_context(pki.csms.cert, pki.csms.key)
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(2, pki)) as s:
        s.profile.password = KEY
        await s.start_agent()
        assert (await s.csms.change_configuration(CP_ID, "SecurityProfile", "3"))["status"] == "Rejected"
        answer = await s.csms.get_configuration(CP_ID, ["SecurityProfile"])
        assert answer["configurationKey"][0]["value"] == "2"


async def test_a_raised_profile_that_cannot_connect_falls_back(tmp_path: Path, pki: TlsPki) -> None:
    """TC_083's other side: raised to 2 while the CSMS still serves ws:// only, the agent cannot connect and,
    never having connected with 2, goes back to 1 — never cut off."""
    async with Station(tmp_path, connectors=1, ocpp_extra=_ocpp(1, pki)) as s:
        s.profile.password = KEY
        await s.start_agent()
        mark = s.mark()
        assert (await s.csms.change_configuration(CP_ID, "SecurityProfile", "2"))["status"] == "Accepted"
        await s.wait_log(lambda e: e.get("msg") == "security profile cannot connect; falling back", what="fallback")
        connect = await _wait_connect(s, mark, "a connection with profile 1 again")
        assert "tls" not in connect.detail
        await s.csms.wait_connected(CP_ID)
        answer = await s.csms.get_configuration(CP_ID, ["SecurityProfile"])
        assert answer["configurationKey"][0]["value"] == "1"


async def test_authorization_key_change_reconnects_and_the_key_is_never_shown(tmp_path: Path, pki: TlsPki) -> None:
    """TC_073 and TC_085: a new AuthorizationKey is Accepted, the agent reconnects with it at once (the decoded
    bytes of a hex key as the password); neither key appears in GetConfiguration, the diagnostics, the agent's
    log or the security log."""
    async with Station(tmp_path, connectors=1, ocpp_extra=_ocpp(1, pki)) as s:
        s.profile.password = KEY
        await s.start_agent()
        assert (await s.csms.change_configuration(CP_ID, "AuthorizationKey", "too-short"))["status"] == "Rejected"
        s.profile.password = NEW_KEY  # the CSMS expects the new key from the next connection on
        mark = s.mark()
        assert (await s.csms.change_configuration(CP_ID, "AuthorizationKey", NEW_KEY))["status"] == "Accepted"
        await _wait_connect(s, mark, "a connection with the new key")
        await s.csms.wait_connected(CP_ID)
        refused = [e for e in s.csms.transcript.entries if e.kind is EntryKind.REFUSED and e.seq >= mark]
        assert not refused, refused  # the first attempt already used the new key
        answers: list[Any] = [await s.csms.get_configuration(CP_ID), await s.csms.get_configuration(
            CP_ID, ["AuthorizationKey"]), await s.csms.data_transfer(CP_ID, "evse-agent", message_id="Diagnostics")]
        assert not any(e["key"] == "AuthorizationKey" for e in answers[0]["configurationKey"])
        assert "configurationKey" not in answers[1]
        security = json.loads(answers[2]["data"])["security"]
        assert security["securityProfile"] == 1 and security["authorizationKeySet"] is True
        texts = [json.dumps(a) for a in answers] + [(tmp_path / "agent.log").read_text(),
                                                   (tmp_path / "security.log").read_text()]
        header_tokens = [base64.b64encode(f"{CP_ID}:".encode() + p).decode()
                         for p in (KEY.encode(), bytes.fromhex(NEW_KEY))]
        for secret in (KEY, NEW_KEY, *header_tokens):
            assert not any(secret in t for t in texts), "a key leaked"
        assert "ReconfigurationOfSecurityParameters" in texts[-1]


def test_charge_point_certificate_names_the_charge_point(pki: TlsPki, tmp_path: Path) -> None:
    """The test PKI's charge point certificate is what the whitepaper asks (CN = serial number, O = CpoName)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    issued = issue_charge_point_cert(pki.csms_root, tmp_path, "SERIAL-9", "Example CPO")
    cert = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "SERIAL-9"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example CPO"
    assert issued.key.stat().st_mode & 0o777 == 0o600


async def test_certificates_installed_listed_and_deleted_over_ocpp(tmp_path: Path, pki: TlsPki) -> None:
    """TC_075/TC_076/TC_077-style: a new CSMS root installed over OCPP is trusted from the next connection (the
    CSMS moves to a certificate from it); GetInstalledCertificateIds lists both with edition 3's hash data; the
    root in use and the commissioned one cannot be deleted; a manufacturer root comes and goes."""
    from cryptography import x509

    from firmware.security.certstore import hash_data
    from sim.harness.pki import make_ca

    server = server_tls_context(pki.csms.cert, pki.csms.key)
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(2, pki)) as s:
        s.profile.password = KEY
        await s.start_agent()
        ids = await s.csms.get_installed_certificate_ids(CP_ID, "CentralSystemRootCertificate")
        assert ids == {"status": "Accepted", "certificateHashData": [hash_data(pki.csms_root.cert).to_ocpp()]}
        assert (await s.csms.get_installed_certificate_ids(CP_ID, "ManufacturerRootCertificate")) == {
            "status": "NotFound"}
        new_root = make_ca(tmp_path / "new", "New CSMS root")
        answer = await s.csms.install_certificate(CP_ID, "CentralSystemRootCertificate", new_root.path.read_text())
        assert answer == {"status": "Accepted"}
        bad = await s.csms.install_certificate(CP_ID, "CentralSystemRootCertificate", pki.csms.cert.read_text())
        assert bad == {"status": "Rejected"}  # a server certificate, not a root
        await s.wait_until(lambda: any(e["type"] == "InvalidCentralSystemCertificate" and "root" in e["techInfo"]
                                       for e in s.csms.state(CP_ID).security_events), what="TC_078's event")
        ids = await s.csms.get_installed_certificate_ids(CP_ID, "CentralSystemRootCertificate")
        assert len(ids["certificateHashData"]) == 2
        assert (tmp_path / "certs/central-system-roots").stat().st_mode & 0o777 == 0o700

        # the CSMS moves to a certificate from the new root: the agent's next connection trusts it
        moved = issue_server_cert(new_root, tmp_path / "new", "moved")
        server.load_cert_chain(moved.cert, moved.key)
        mark = s.mark()
        await s.csms.disconnect(CP_ID)
        await _wait_connect(s, mark, "a connection to the CSMS's new certificate")
        await s.csms.wait_connected(CP_ID)
        in_use = hash_data(new_root.cert).to_ocpp()
        assert (await s.csms.delete_certificate(CP_ID, in_use)) == {"status": "Failed"}
        commissioned = hash_data(pki.csms_root.cert).to_ocpp()
        assert (await s.csms.delete_certificate(CP_ID, commissioned)) == {"status": "Failed"}

        maker = make_ca(tmp_path / "maker", "Manufacturer root")
        assert (await s.csms.install_certificate(CP_ID, "ManufacturerRootCertificate", maker.path.read_text())) == {
            "status": "Accepted"}
        maker_id = hash_data(x509.load_pem_x509_certificate(maker.path.read_bytes())).to_ocpp()
        assert (await s.csms.delete_certificate(CP_ID, maker_id)) == {"status": "Accepted"}
        assert (await s.csms.delete_certificate(CP_ID, maker_id)) == {"status": "NotFound"}


async def test_charge_point_certificate_renewed_through_sign_certificate(tmp_path: Path, pki: TlsPki) -> None:
    """TC_074: ExtendedTriggerMessage SignChargePointCertificate -> SignCertificate with a CSR for a key made on
    the controller (CN = serial, O = CpoName) -> CertificateSigned -> a reconnect presenting the new certificate.
    A certificate for another key is Rejected with InvalidChargePointCertificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from sim.harness.pki import sign_csr

    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(3, pki, password=None,
                                                                                 cp_cert=True)) as s:
        await s.start_agent()
        first = _connects(s)[0].detail
        assert first["client_certificate"] == CP_ID
        assert (await s.csms.change_configuration(CP_ID, "CpoName", "Example CPO"))["status"] == "Accepted"
        # another key's certificate, before any request: refused
        stranger = sign_csr(pki.csms_root, _csr_of_another_key())
        assert (await s.csms.certificate_signed(CP_ID, stranger)) == {"status": "Rejected"}
        # CertificateSignedMaxChainSize (10000, the schema's maxLength): a longer chain is refused unread
        with pytest.raises(CallErrorReceived) as refused:
            await s.csms.call(CP_ID, "CertificateSigned", {"certificateChain": stranger + "\n" * 10_000},
                              validate=False)
        assert refused.value.code == "TypeConstraintViolation"  # maxLength, as the 1.6 dialect maps it

        answer = await s.csms.extended_trigger_message(CP_ID, "SignChargePointCertificate")
        assert answer == {"status": "Accepted"}
        await s.wait_until(lambda: bool(s.csms.state(CP_ID).csrs), what="SignCertificate")
        csr = x509.load_pem_x509_csr(s.csms.state(CP_ID).csrs[0].encode())
        assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP_ID
        assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example CPO"
        pending = tmp_path / "certs/charge-point-key.pending.pem"
        assert pending.stat().st_mode & 0o777 == 0o600

        signed = sign_csr(pki.csms_root, s.csms.state(CP_ID).csrs[0])
        serial = x509.load_pem_x509_certificate(signed.encode()).serial_number
        mark = s.mark()
        assert (await s.csms.certificate_signed(CP_ID, signed)) == {"status": "Accepted"}
        connect = await _wait_connect(s, mark, "a connection with the renewed certificate")
        assert int(connect.detail["client_certificate_serial"], 16) == serial
        renewed = tmp_path / "certs/charge-point-renewed.pem"
        assert renewed.stat().st_mode & 0o777 == 0o600 and not pending.exists()
        logged = (tmp_path / "security.log").read_text()
        assert "InvalidChargePointCertificate" in logged
        assert (await s.csms.extended_trigger_message(CP_ID, "BootNotification")) == {"status": "NotImplemented"}


def _csr_of_another_key() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CP_ID)])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def test_a_certificate_expiring_within_a_month_is_renewed_by_itself(tmp_path: Path, pki: TlsPki) -> None:
    expiring = issue_charge_point_cert(pki.csms_root, tmp_path / "expiring", CP_ID, valid_days=20)
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    ocpp = (f'security_profile = 3\ncsms_ca = "{pki.csms_root.path}"\ncp_cert = "{expiring.cert}"\n'
            f'cp_key = "{expiring.key}"\n')
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=ocpp) as s:
        await s.start_agent()
        await s.wait_until(lambda: bool(s.csms.state(CP_ID).csrs), what="SignCertificate a month before expiry")
        assert len(s.calls("SignCertificate")) == 1
