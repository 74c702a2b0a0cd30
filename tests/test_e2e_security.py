"""Security profiles end to end: the agent as a process, the simulated CSMS serving wss:// with a test PKI
generated here, the security keys changed over OCPP (TC_073, TC_083, TC_084, TC_085), TLS as the OCTT checks it
(TC_086, TC_087), certificates (TC_074, TC_075_1/_2, TC_076, TC_077, TC_078) and the security events delivered
through the outbox."""

from __future__ import annotations

import base64
import json
import ssl
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sim.csms.server import CallErrorReceived, server_tls_context
from sim.csms.transcript import EntryKind
from sim.harness.pki import TlsPki, issue_charge_point_cert, issue_server_cert, make_tls_pki
from tests.security_station import connects as _connects
from tests.security_station import ocpp_lines
from tests.security_station import wait_connect as _wait_connect
from tests.station import CP_ID, Station

KEY = "correct-horse-battery"  # 21 characters: sent as its text
NEW_KEY = "00112233445566778899aabbccddeeff0a0b0c0d"  # 40 hex digits: sent as the 20 bytes they encode


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return make_tls_pki(tmp_path_factory.mktemp("pki"), charge_point_serial=CP_ID)


def _ocpp(profile: int, pki: TlsPki, *, password: str | None = KEY, cp_cert: bool = False) -> str:
    return ocpp_lines(profile, pki, password=password, cp_cert=cp_cert)


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
    bytes of a hex key as the password); neither key appears in GetConfiguration, the diagnostics (DataTransfer and
    the GetDiagnostics archive), the agent's log or the security log."""
    async with Station(tmp_path, connectors=1, ocpp_extra=_ocpp(1, pki), csms_files=tmp_path / "csms-files") as s:
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
        archive = (await s.csms.get_diagnostics(CP_ID, s.csms.file_url("uploads/")))["fileName"]
        uploaded = tmp_path / "csms-files" / "uploads" / archive
        await s.wait_until(lambda: any(e.payload.get("status") == "Uploaded"
                                       for e in s.calls("DiagnosticsStatusNotification", mark)), what="uploaded")
        with tarfile.open(uploaded) as tar:  # every member of the archive the technician gets
            members = [tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()]  # type: ignore
        assert any('"msg": "agent running"' in m for m in members)
        texts = [json.dumps(a) for a in answers] + members + [(tmp_path / "agent.log").read_text(),
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
        assert (await s.csms.get_installed_certificate_ids(CP_ID, "ManufacturerRootCertificate")) == {
            "status": "Accepted", "certificateHashData": [maker_id]}  # TC_075_1
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
        assert len(s.csms.state(CP_ID).csrs) == 1  # one ExtendedTriggerMessage, one SignCertificate


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
        # no CertificateSigned comes: neither a reconnect nor a restart sends a new CSR (with a new key) before
        # the back-off has passed
        mark = s.mark()
        await s.csms.disconnect(CP_ID)
        await _wait_connect(s, mark, "a reconnect")
        await s.csms.wait_connected(CP_ID)
        await s.kill_agent()
        mark = s.mark()
        await s.start_agent(wait_boot=False)
        await s.wait_booted(since=mark)
        await s.quiet(0.5)
        assert len(s.calls("SignCertificate")) == 1
        assert any(e.get("msg") == "certificate renewal due; waiting for the retry time" for e in s.log())


def test_renewal_retry_back_off() -> None:
    from datetime import timedelta

    from firmware.ocpp.v16.certificates import renewal_retry_after

    assert [renewal_retry_after(n) for n in (1, 2, 3)] == [timedelta(hours=1), timedelta(hours=2),
                                                           timedelta(hours=4)]
    assert renewal_retry_after(40) == timedelta(days=1)


async def test_tc_077_a_certificate_from_another_ca_is_rejected_and_reported(tmp_path: Path, pki: TlsPki) -> None:
    """TC_077: ExtendedTriggerMessage SignChargePointCertificate -> SignCertificate -> CertificateSigned with a
    certificate for the right key signed by a CA the charge point does not trust -> Rejected, and a
    SecurityEventNotification InvalidChargePointCertificate; the connection keeps the old certificate."""
    from sim.harness.pki import make_ca, sign_csr

    stranger_ca = make_ca(tmp_path / "stranger", "Not the CSMS root")
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(3, pki, password=None,
                                                                                 cp_cert=True)) as s:
        await s.start_agent()
        assert (await s.csms.extended_trigger_message(CP_ID, "SignChargePointCertificate")) == {"status": "Accepted"}
        await s.wait_until(lambda: bool(s.csms.state(CP_ID).csrs), what="SignCertificate")
        mark = s.mark()
        signed = sign_csr(stranger_ca, s.csms.state(CP_ID).csrs[0])
        assert (await s.csms.certificate_signed(CP_ID, signed)) == {"status": "Rejected"}
        event = await s.wait_call("SecurityEventNotification",
                                  lambda e: e.payload["type"] == "InvalidChargePointCertificate", since=mark)
        assert event.payload["techInfo"]
        assert not (tmp_path / "certs/charge-point-renewed.pem").exists()
        assert not _connects(s, mark)  # no reconnect: nothing new to present


async def test_tc_086_tc_087_tls_as_the_octt_checks_it(tmp_path: Path) -> None:
    """TC_086 (profile 2): TLS 1.2 with only the whitepaper's suites on the CSMS side, Basic auth
    ``<ChargePointId>:<AuthorizationKey>``. TC_087 (profile 3): the client certificate's CN is the charge point's
    serial number (not its id), with its serial, over TLS 1.2."""
    serial = "SN-0042"
    pki = make_tls_pki(tmp_path / "pki", charge_point_serial=serial)
    whitepaper = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-GCM-SHA384"
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path,
                                maximum=ssl.TLSVersion.TLSv1_2, ciphers=whitepaper)
    server.verify_mode = ssl.CERT_OPTIONAL  # profile 2 first, then 3 on the same endpoint
    async with Station(tmp_path, connectors=1, csms_ssl=server,
                       ocpp_extra=_ocpp(2, pki, cp_cert=True)) as s:
        s.profile.password = KEY  # the CSMS checks the header byte for byte (refuses anything else with 401)
        await s.start_agent()
        first = _connects(s)[0].detail
        assert first["tls"] == "TLSv1.2" and first["cipher"] in ("ECDHE-ECDSA-AES128-GCM-SHA256",
                                                                 "ECDHE-ECDSA-AES256-GCM-SHA384")
        assert first["client_certificate"] is None
        assert not [e for e in s.csms.transcript.entries if e.kind is EntryKind.REFUSED]
        s.profile.password = None
        mark = s.mark()
        assert (await s.csms.change_configuration(CP_ID, "SecurityProfile", "3"))["status"] == "Accepted"
        connect = await _wait_connect(s, mark, "a connection with profile 3")
        assert connect.detail["tls"] == "TLSv1.2" and connect.detail["client_certificate"] == serial
        assert connect.detail["client_certificate_serial"]
        await s.csms.wait_connected(CP_ID)


async def test_memory_exhaustion_is_sent_when_the_storage_runs_short(tmp_path: Path) -> None:
    """[storage] min_free_mb above what the disk has free: the agent reports MemoryExhaustion (critical: through
    the outbox) right after StartupOfTheDevice, once."""
    async with Station(tmp_path, connectors=1) as s:
        text = s.config_path.read_text()
        s.config_path.write_text(text.replace("[storage]\n", "[storage]\nmin_free_mb = 1099511627776\n", 1))
        await s.start_agent()
        await s.wait_until(lambda: len(s.csms.state(CP_ID).security_events) >= 2, what="two security events")
        events = s.csms.state(CP_ID).security_events
        assert [e["type"] for e in events] == ["StartupOfTheDevice", "MemoryExhaustion"]
        assert "MiB free, below" in events[1]["techInfo"]


async def test_additional_root_certificate_check_replaces_a_root_through_a_fallback(
        tmp_path: Path, pki: TlsPki) -> None:
    """AdditionalRootCertificateCheck true: a new CSMS root must be signed by the installed one (a self-signed one is
    Rejected with InvalidCentralSystemCertificate); the old root stays trusted as the fallback until a connection
    is anchored by the new one, then it is removed."""
    from cryptography import x509

    from firmware.security.certstore import hash_data
    from sim.harness.pki import make_ca

    server = server_tls_context(pki.csms.cert, pki.csms.key)
    async with Station(tmp_path, connectors=1, csms_ssl=server, ocpp_extra=_ocpp(2, pki)) as s:
        s.profile.password = KEY
        await s.start_agent()
        old = make_ca(tmp_path / "old", "Old CSMS root")  # installed over OCPP (the commissioned one stays)
        assert (await s.csms.install_certificate(CP_ID, "CentralSystemRootCertificate", old.path.read_text())) == {
            "status": "Accepted"}
        assert (await s.csms.change_configuration(CP_ID, "AdditionalRootCertificateCheck", "true")) == {
            "status": "Accepted"}
        stranger = make_ca(tmp_path / "stranger", "Stranger root")
        mark = s.mark()
        assert (await s.csms.install_certificate(CP_ID, "CentralSystemRootCertificate",
                                                 stranger.path.read_text())) == {"status": "Rejected"}
        await s.wait_call("SecurityEventNotification", lambda e: "AdditionalRootCertificateCheck" in
                          e.payload.get("techInfo", ""), since=mark)
        new = make_ca(tmp_path / "new", "New CSMS root", signed_by=old)
        assert (await s.csms.install_certificate(CP_ID, "CentralSystemRootCertificate", new.path.read_text())) == {
            "status": "Accepted"}
        ids = (await s.csms.get_installed_certificate_ids(CP_ID, "CentralSystemRootCertificate"))[
            "certificateHashData"]
        old_id = hash_data(old.cert).to_ocpp()
        new_cert = x509.load_pem_x509_certificate(new.path.read_bytes())
        assert old_id in ids and len(ids) == 3  # commissioned, old (the fallback), new
        assert hash_data(new_cert, old.cert).to_ocpp() in ids  # edition 3: the issuer's name and key

        # a connection still anchored by the commissioned root: the replacement is not confirmed, old stays
        mark = s.mark()
        await s.csms.disconnect(CP_ID)
        await _wait_connect(s, mark, "a reconnect")
        await s.csms.wait_connected(CP_ID)
        await s.wait_log(lambda e: e.get("msg") == "connected through the fallback CSMS root; the new one is not "
                         "confirmed yet", what="no confirmation yet")
        # the CSMS moves to a certificate from the new root: that connection confirms it, the old root goes
        moved = issue_server_cert(new, tmp_path / "new", "moved")
        server.load_cert_chain(moved.cert, moved.key)
        mark = s.mark()
        await s.csms.disconnect(CP_ID)
        await _wait_connect(s, mark, "a connection anchored by the new root")
        await s.csms.wait_connected(CP_ID)
        await s.wait_log(lambda e: e.get("msg") == "new CSMS root confirmed by a connection; fallback removed",
                         what="the fallback removed")
        ids = (await s.csms.get_installed_certificate_ids(CP_ID, "CentralSystemRootCertificate"))[
            "certificateHashData"]
        assert old_id not in ids and len(ids) == 2
        assert hash_data(new_cert).to_ocpp() in ids  # its issuer gone: identified with its own key
        # the new root alone (its issuer gone) still anchors the next connection
        mark = s.mark()
        await s.csms.disconnect(CP_ID)
        await _wait_connect(s, mark, "a connection with the new root alone")
        await s.csms.wait_connected(CP_ID)
