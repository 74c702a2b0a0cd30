"""OCPP 2.0.1 A Security, M certificate management and P DataTransfer end to end: the agent process with
``[ocpp] version = "2.0.1"``, simulated devices on ptys, and the simulated 2.0.1 CSMS (every message checked against
the library's 2.0.1 schemas) serving wss:// with a test PKI generated here (sim/harness/pki.py).

The logic is the one 1.6 uses (tests/test_e2e_security.py covers its rules in depth); these tests check the 2.0.1
translation. Two stations are shared by the tests of this module, each test named after the OCTT 2.0.1 test case it
stands for: one with security profile 2 (TLS + Basic auth), one with profile 3 (a client certificate). The tests
of a station run in the order written: each leaves it as the next expects.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.x509.oid import NameOID

from firmware.security.certstore import hash_data
from sim.csms.server import server_tls_context
from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from sim.harness.pki import TlsPki, issue_server_cert, make_ca, make_tls_pki, sign_csr
from tests.security_station import connects as _connects
from tests.security_station import ocpp_lines
from tests.security_station import wait_connect as _wait_connect
from tests.station import CP_ID, WAIT_S, Station
from tests.tls_faults import NO_SHARED_CIPHER_ALERT, TlsFaultFront, tls11_server_hello

pytestmark = pytest.mark.asyncio(loop_scope="module")

PASSWORD = "correct-horse-battery"  # 21 characters of identifierString
NEW_PASSWORD = "00112233445566778899aabbccddeeff0a0b0c0d"  # 40 characters: in 2.0.1 sent as this text (no hex rule)
SECURITY = {"name": "SecurityCtrlr"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return make_tls_pki(tmp_path_factory.mktemp("pki"), charge_point_serial=CP_ID)


def _ocpp(profile: int, pki: TlsPki, *, password: str | None = PASSWORD, cp_cert: bool = False) -> str:
    return ocpp_lines(profile, pki, password=password, cp_cert=cp_cert)


async def _get(s: Station, variable: str) -> dict[str, Any]:
    answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
        {"component": SECURITY, "variable": {"name": variable}}]}, timeout_s=WAIT_S)
    return dict(answer["getVariableResult"][0])


async def _set(s: Station, variable: str, value: str) -> dict[str, Any]:
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [
        {"component": SECURITY, "variable": {"name": variable}, "attributeValue": value}]}, timeout_s=WAIT_S)
    return dict(answer["setVariableResult"][0])


def _events(s: Station) -> list[str]:
    return [e["type"] for e in s.csms.state(CP_ID).security_events]


COMM = {"name": "OCPPCommCtrlr"}
CARD = "04A1B2C3"


async def _comm(s: Station, variable: str, value: str | None = None) -> dict[str, Any]:
    """OCPPCommCtrlr.``variable``: set to ``value`` (the SetVariableResult), or read (the GetVariableResult)."""
    if value is None:
        answer = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
            {"component": COMM, "variable": {"name": variable}}]}, timeout_s=WAIT_S)
        return dict(answer["getVariableResult"][0])
    answer = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [
        {"component": COMM, "variable": {"name": variable}, "attributeValue": value}]}, timeout_s=WAIT_S)
    return dict(answer["setVariableResult"][0])


def _logged(event: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("msg") == "security event" and e.get("event") == event


def _network_profile(url: str, security_profile: int, message_timeout: int = 30) -> dict[str, Any]:
    return {"ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": url,
            "messageTimeout": message_timeout, "securityProfile": security_profile, "ocppInterface": "Wired0"}


async def test_profile_1_basic_auth_over_ws_a_refused_password_logged(tmp_path: Path, pki: TlsPki) -> None:
    """Profile 1 (TC_A_01_CS over ws://): while the CSMS expects another password each attempt is refused (HTTP 401)
    and logged as FailedToAuthenticateAtCsms (the 2.0.1 name; not a critical event: logged, not sent); with the
    expected one the station connects without TLS and boots."""
    async with Station(tmp_path, ocpp="2.0.1", connectors=1, ocpp_extra=_ocpp(1, pki)) as s:
        s.profile.password = "another-password-16"
        await s.start_agent(wait_boot=False)
        await s.wait_log(lambda e: e.get("msg") == "security event" and e.get("event") == "FailedToAuthenticateAtCsms",
                         what="the refused password")
        assert [e for e in s.csms.transcript.entries if e.kind is EntryKind.REFUSED]
        s.profile.password = PASSWORD
        await s.wait_booted()
        assert "tls" not in _connects(s)[-1].detail
        assert "FailedToAuthenticateAtCsms" in (tmp_path / "security.log").read_text()
        await s.wait_until(lambda: "StartupOfTheDevice" in _events(s), what="StartupOfTheDevice")
        assert "FailedToAuthenticateAtCsms" not in _events(s)


# --- security profile 2: TLS with Basic auth ---------------------------------------------------------------


@pytest.fixture(scope="module")
def front() -> TlsFaultFront:
    """The p2 station reaches its CSMS through this front (the commissioned URL): it may answer a ClientHello as a
    CSMS the station must refuse (TLS 1.1, no common cipher suite); the CSMS's own URL is another endpoint for the
    migration cases (TC_B_45/46_CS)."""
    return TlsFaultFront()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def p2(tmp_path_factory: pytest.TempPathFactory, pki: TlsPki, front: TlsFaultFront) -> AsyncIterator[Station]:
    """Profile 2 (with a station certificate installed, for TC_A_19_CS's upgrade to 3; the CSMS takes client
    certificates but does not ask for them); the CSMS first presents an expired certificate (TC_A_05_CS), then its
    valid one. Supervised: a Reset restarts the agent."""
    tmp = tmp_path_factory.mktemp("p2")
    expired = issue_server_cert(pki.csms_root, tmp / "expired", expired=True)
    server = server_tls_context(expired.cert, expired.key, client_ca=pki.csms_root.path)
    server.verify_mode = ssl.CERT_OPTIONAL  # one endpoint for profiles 2 and 3
    async with Station(tmp, ocpp="2.0.1", connectors=1, csms_ssl=server,
                       ocpp_extra=_ocpp(2, pki, cp_cert=True)) as s, front:
        front.target = ("127.0.0.1", s.csms.port)
        s.config_path.write_text(s.config_path.read_text().replace(
            f'csms_url = "{s.csms.url}"', f'csms_url = "{front.url(s.csms.url)}"'))
        s.profile.password = PASSWORD
        await s.start_agent(wait_boot=False, supervised=True)
        await s.wait_log(lambda e: e.get("msg") == "security event" and e.get("event") == "InvalidCsmsCertificate",
                         what="the expired certificate refused")
        server.load_cert_chain(pki.csms.cert, pki.csms.key)  # the CSMS's certificate is renewed
        await s.wait_booted()
        yield s


async def test_tc_a_05_cs_invalid_server_certificate_refused_and_reported(p2: Station) -> None:
    """TC_A_05_CS (A00.FR.309-311, 412-414): an expired CSMS certificate ends each attempt; once the CSMS has a
    valid one the station connects, and the SecurityEventNotifications it queued arrive through the outbox:
    StartupOfTheDevice first, then InvalidCsmsCertificate (the 2.0.1 name) once per failed attempt."""
    s = p2
    failed = [e for e in s.log() if e.get("msg") == "CSMS connection failed"]
    assert failed and all("certificate has expired" in e["error"] for e in failed)
    await s.wait_until(lambda: len(_events(s)) >= len(failed) + 1, what="one event per failed attempt")
    events = s.csms.state(CP_ID).security_events
    assert _events(s)[:len(failed) + 1] == ["StartupOfTheDevice"] + ["InvalidCsmsCertificate"] * len(failed)
    assert all("expired" in e["techInfo"] for e in events[1:len(failed) + 1])
    logged = [json.loads(line) for line in (s.state_dir / "security.log").read_text().splitlines()]
    assert [e["type"] for e in logged][:len(failed) + 1] == _events(s)[:len(failed) + 1]


async def test_tc_a_01_cs_tc_a_04_cs_basic_auth_over_tls_and_the_security_variables(p2: Station) -> None:
    """TC_A_01_CS: the station authenticates with Basic auth (the simulated CSMS checks the header: identity and
    password, as text); TC_A_04_CS: over TLS >= 1.2 with the CSMS's valid certificate, without a client
    certificate. SecurityCtrlr says profile 2 and the identity, and never gives the password (WriteOnly: Rejected)."""
    s = p2
    connect = _connects(s)[-1]
    assert connect.detail["tls"] in ("TLSv1.2", "TLSv1.3") and connect.detail["client_certificate"] is None
    assert not [e for e in s.csms.transcript.entries if e.kind is EntryKind.REFUSED]
    assert (await _get(s, "SecurityProfile"))["attributeValue"] == "2"
    assert (await _get(s, "Identity"))["attributeValue"] == CP_ID
    password = await _get(s, "BasicAuthPassword")
    assert password["attributeStatus"] == "Rejected" and "attributeValue" not in password
    assert (await _set(s, "SecurityProfile", "3"))["attributeStatus"] == "Rejected"  # ReadOnly in 2.0.1


async def test_tc_a_10_cs_password_too_short_rejected(p2: Station) -> None:
    """TC_A_10_CS (A01.FR.11): a BasicAuthPassword under 16 characters is Rejected and kept out; the station stays
    on its connection (TC_A_09_CS below sees exactly one reconnect, with the new password)."""
    result = await _set(p2, "BasicAuthPassword", "too-short")
    assert result["attributeStatus"] == "Rejected"
    assert result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    assert "too-short" not in json.dumps(result)
    bad = await _set(p2, "BasicAuthPassword", "has spaces, not identifierString")
    assert bad["attributeStatus"] == "Rejected"


async def test_tc_a_09_cs_new_password_accepted_and_used_at_once(p2: Station) -> None:
    """TC_A_09_CS (A01.FR.01, A01.FR.12): a new BasicAuthPassword is Accepted; the station reconnects with it at
    once (the CSMS expects only the new one: no refused attempt), sent as its text — 40 hex digits are not
    decoded as 1.6 TC_085 would — and boots no second time (once per run)."""
    s = p2
    s.profile.password = NEW_PASSWORD
    mark = s.mark()
    assert (await _set(s, "BasicAuthPassword", NEW_PASSWORD))["attributeStatus"] == "Accepted"
    await _wait_connect(s, mark, "a connection with the new password")
    await s.csms.wait_connected(CP_ID)
    assert not [e for e in s.csms.transcript.entries if e.kind is EntryKind.REFUSED and e.seq >= mark]
    assert len(_connects(s, mark)) == 1 and not s.calls("BootNotification", mark)
    assert "ReconfigurationOfSecurityParameters" in (s.state_dir / "security.log").read_text()


async def test_tc_m_01_cs_tc_m_02_cs_tc_m_17_cs_install_and_list_root_certificates(
        p2: Station, tmp_path_factory: pytest.TempPathFactory) -> None:
    """TC_M_01_CS, TC_M_02_CS (M05): a CSMSRootCertificate and a ManufacturerRootCertificate are installed
    (Accepted; an ISO 15118 root Rejected: no ISO 15118 here). TC_M_17_CS (M03): GetInstalledCertificateIds of
    both kinds gives each installed root's hash data (SHA256 of the issuer name and key, serial in hex) under its
    2.0.1 type; SecurityCtrlr.CertificateEntries counts them."""
    s = p2
    where = tmp_path_factory.mktemp("roots")
    csms_root, maker = make_ca(where, "Second CSMS root"), make_ca(where, "Manufacturer root")
    for kind, ca in (("CSMSRootCertificate", csms_root), ("ManufacturerRootCertificate", maker)):
        answer = await s.csms.call(CP_ID, "InstallCertificate", {"certificateType": kind,
                                                                 "certificate": ca.path.read_text()})
        assert answer == {"status": "Accepted"}
    v2g = await s.csms.call(CP_ID, "InstallCertificate", {"certificateType": "V2GRootCertificate",
                                                          "certificate": maker.path.read_text()})
    assert v2g["status"] == "Rejected"
    answer = await s.csms.call(CP_ID, "GetInstalledCertificateIds",
                               {"certificateType": ["CSMSRootCertificate", "ManufacturerRootCertificate"]})
    assert answer["status"] == "Accepted"
    chain = {(c["certificateType"], c["certificateHashData"]["serialNumber"]): c["certificateHashData"]
             for c in answer["certificateHashDataChain"]}
    assert set(chain) == {("CSMSRootCertificate", format(c.serial_number, "x"))
                          for c in (csms_root.cert, _commissioned_root(s))} | {
        ("ManufacturerRootCertificate", format(maker.cert.serial_number, "x"))}
    expected = hash_data(maker.cert).to_ocpp()
    assert chain[("ManufacturerRootCertificate", expected["serialNumber"])] == expected
    assert (await _get(s, "CertificateEntries"))["attributeValue"] == "3"
    only_v2g = await s.csms.call(CP_ID, "GetInstalledCertificateIds", {"certificateType": ["V2GRootCertificate"]})
    assert only_v2g == {"status": "NotFound"}


def _commissioned_root(s: Station) -> x509.Certificate:
    line = next(x for x in s.config_path.read_text().splitlines() if x.startswith("csms_ca"))
    return x509.load_pem_x509_certificate(Path(line.split('"')[1]).read_bytes())


async def test_tc_m_20_cs_tc_m_22_cs_delete_certificates(p2: Station) -> None:
    """TC_M_20_CS (M04): a root installed over OCPP is deleted by its hash data (Accepted, then not listed);
    TC_M_22_CS: hash data of no installed certificate is NotFound; the CSMS root in use (here the commissioned
    one) is never deleted (Failed)."""
    s = p2
    listed = await s.csms.call(CP_ID, "GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]})
    in_use = hash_data(_commissioned_root(s)).to_ocpp()
    second = next(c["certificateHashData"] for c in listed["certificateHashDataChain"]
                  if c["certificateHashData"] != in_use)
    assert await s.csms.call(CP_ID, "DeleteCertificate", {"certificateHashData": second}) == {"status": "Accepted"}
    after = await s.csms.call(CP_ID, "GetInstalledCertificateIds", {"certificateType": ["CSMSRootCertificate"]})
    assert [c["certificateHashData"] for c in after["certificateHashDataChain"]] == [in_use]
    unknown = {**second, "serialNumber": "1234abcd"}
    assert await s.csms.call(CP_ID, "DeleteCertificate", {"certificateHashData": unknown}) == {"status": "NotFound"}
    assert await s.csms.call(CP_ID, "DeleteCertificate", {"certificateHashData": in_use}) == {"status": "Failed"}


async def test_tc_p_01_cs_data_transfer_to_the_station(p2: Station) -> None:
    """TC_P_01_CS (P01.FR.05/06): another vendorId is UnknownVendorId, an unknown messageId of ours
    UnknownMessageId, both without data; our Diagnostics (the same hook as 1.6) answers the station's state as
    JSON text, its security part without the password."""
    s = p2
    other = await s.csms.call(CP_ID, "DataTransfer", {"vendorId": "org.openchargealliance.octt", "messageId": "x"})
    assert other == {"status": "UnknownVendorId"}
    unknown = await s.csms.call(CP_ID, "DataTransfer", {"vendorId": "evse-agent", "messageId": "NoSuchMessage"})
    assert unknown == {"status": "UnknownMessageId"}
    diagnostics = await s.csms.call(CP_ID, "DataTransfer", {"vendorId": "EVSE-Agent", "messageId": "Diagnostics"})
    assert diagnostics["status"] == "Accepted"
    data = json.loads(diagnostics["data"])
    assert data["security"]["securityProfile"] == 2 and data["security"]["authorizationKeySet"] is True
    assert data["connectors"][0]["connector"] == 1
    assert NEW_PASSWORD not in diagnostics["data"] and PASSWORD not in diagnostics["data"]


async def test_tc_p_02_cs_data_transfer_to_the_csms(p2: Station) -> None:
    """TC_P_02_CS (P02): the station's own DataTransfer — the Hardware report of 1.6, once per run after the
    accepted boot — goes out with our vendorId and messageId; the CSMS's UnknownVendorId changes nothing."""
    s = p2
    transfer = await s.wait_call("DataTransfer")
    assert transfer.payload["vendorId"] == "evse-agent" and transfer.payload["messageId"] == "Hardware"
    boot = s.calls("BootNotification")[-1]
    assert boot.seq < transfer.seq
    summary = json.loads(transfer.payload["data"])
    assert [c["connector"] for c in summary["connectors"]] == [1]
    assert s.csms.transcript.response_to(transfer).payload["status"] == "UnknownVendorId"
    assert len(s.calls("DataTransfer")) == 1  # once per run: not again after TC_A_09_CS's reconnect


async def test_the_password_is_never_shown(p2: Station) -> None:
    """Neither password appears in anything the station says: its frames to the CSMS (a FullInventory report
    included: BasicAuthPassword without a value), its log, its security log."""
    s = p2
    assert (await s.csms.call(CP_ID, "GetBaseReport", {"requestId": 7, "reportBase": "FullInventory"}))[
        "status"] == "Accepted"
    await s.wait_call("NotifyReport", lambda e: e.payload["requestId"] == 7 and not e.payload.get("tbc"))
    reported = [item for e in s.calls("NotifyReport") for item in e.payload.get("reportData", [])
                if item["variable"]["name"] == "BasicAuthPassword"]
    assert reported and all("value" not in a for item in reported for a in item["variableAttribute"])
    sent = "".join(e.raw or "" for e in s.csms.transcript.entries if e.direction is Direction.FROM_CP)
    texts = [sent, s.log_path.read_text(), (s.state_dir / "security.log").read_text()]
    assert all(secret not in text for secret in (PASSWORD, NEW_PASSWORD) for text in texts)


async def test_tc_a_06_cs_tls_version_too_low_and_no_common_cipher_suite_refused_while_charging(
        p2: Station, front: TlsFaultFront) -> None:
    """TC_A_06_CS (A00.FR.314/316, NetworkProfileConnectionAttempts 1 — ReadWrite, as its configuration state
    asks): a CSMS that answers with TLS 1.1 is refused and reported as InvalidTLSVersion; A00.FR.317 (no OCTT case
    of its own): one that shares no cipher suite with the station, InvalidTLSCipherSuite. Each event arrives
    through the outbox once the station is connected to a good CSMS again; the transaction running all along keeps
    charging (no Ended, the contactor closed)."""
    s = p2
    assert (await _comm(s, "NetworkProfileConnectionAttempts", "1"))["attributeStatus"] == "Accepted"
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    s.ev(1).plug()
    await s.tap(CARD)
    await s.wait_until(lambda: s.charger.connector_state(1)["contactor_closed"], what="charging")
    for reply, event in ((tls11_server_hello(), "InvalidTLSVersion"),
                         (NO_SHARED_CIPHER_ALERT, "InvalidTLSCipherSuite")):
        front.reply, refused, since = reply, front.refused, s.mark()
        await s.csms.disconnect(CP_ID)
        await s.wait_log(_logged(event), what=f"{event} logged")
        assert front.refused > refused and not _connects(s, since)  # refused in the handshake: never reached
        front.reply = None
        await _wait_connect(s, since, "a connection to the good CSMS again")
        await s.wait_call("SecurityEventNotification", lambda e, ev=event: e.payload["type"] == ev, since=since)
        assert s.charger.connector_state(1)["contactor_closed"]
    assert not [e for e in s.calls("TransactionEvent", mark) if e.payload["eventType"] == "Ended"]
    assert (await _comm(s, "NetworkProfileConnectionAttempts", "3"))["attributeStatus"] == "Accepted"
    s.ev(1).unplug()
    await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)


async def test_tc_a_19_cs_security_profile_upgraded_through_a_network_profile(
        p2: Station, front: TlsFaultFront) -> None:
    """TC_A_19_CS (A05): SetNetworkProfile of a higher security profile into slot 1 is Accepted (a lower one, slot
    0, slot 999 (TC_B_43_CS), a VPN and a URL that is no WebSocket URL are Rejected); NetworkConfigurationPriority
    "1,0" is RebootRequired; after the Reset (ResetOrReboot reported) the station boots with profile 3 — its client
    certificate, no Basic auth — and SecurityCtrlr.SecurityProfile says 3."""
    s = p2
    def profile(security_profile: int, **extra: Any) -> dict[str, Any]:
        return {**_network_profile(front.url(s.csms.url), security_profile), **extra}
    for slot, data in ((1, profile(1)), (0, profile(3)), (999, profile(3)),  # TC_B_43_CS: slot 999
                       (1, profile(3, vpn={"server": "vpn.example", "user": "u", "password": "p", "key": "k",
                                           "type": "IPSec"})),  # no VPN client here
                       (1, profile(3, ocppCsmsUrl="https://csms.example/ocpp"))):
        answer = await s.csms.call(CP_ID, "SetNetworkProfile", {"configurationSlot": slot, "connectionData": data})
        assert answer["status"] == "Rejected" and answer["statusInfo"]["additionalInfo"]
    answer = await s.csms.call(CP_ID, "SetNetworkProfile", {"configurationSlot": 1, "connectionData": profile(3)})
    assert answer == {"status": "Accepted"}
    priority = await s.csms.call(CP_ID, "SetVariables", {"setVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "NetworkConfigurationPriority"},
         "attributeValue": "1,0"}]})
    assert priority["setVariableResult"][0]["attributeStatus"] == "RebootRequired"
    s.profile.password = None  # profile 3: the CSMS knows the station by its certificate
    mark = s.mark()
    assert (await s.csms.call(CP_ID, "Reset", {"type": "Immediate"})) == {"status": "Accepted"}
    boot = await s.wait_call("BootNotification", since=mark)
    assert boot.payload["reason"] == "RemoteReset"
    connect = _connects(s, mark)[-1]
    assert connect.detail["client_certificate"] == CP_ID
    await s.wait_booted(since=mark)
    assert (await _get(s, "SecurityProfile"))["attributeValue"] == "3"
    await s.wait_until(lambda: "ResetOrReboot" in _events(s), what="ResetOrReboot delivered")


def _closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _reset(s: Station) -> int:
    mark = s.mark()
    assert (await s.csms.call(CP_ID, "Reset", {"type": "Immediate"})) == {"status": "Accepted"}
    await s.wait_booted(since=mark)
    return mark


async def test_tc_b_46_cs_an_unreachable_network_profile_falls_back_to_the_next(
        p2: Station, front: TlsFaultFront) -> None:
    """TC_B_46_CS (B10.FR.03/04): a network profile whose CSMS cannot be reached, first in
    NetworkConfigurationPriority "2,1,0": after the Reset the station tries it NetworkProfileConnectionAttempts (2)
    times, then takes the next slot (1: the commissioned CSMS at profile 3) and boots there;
    OCPPCommCtrlr.ActiveNetworkProfile says 1."""
    s = p2
    unreachable = _network_profile(f"wss://127.0.0.1:{_closed_port()}/ocpp", 3)
    answer = await s.csms.call(CP_ID, "SetNetworkProfile", {"configurationSlot": 2, "connectionData": unreachable})
    assert answer == {"status": "Accepted"}
    assert (await _comm(s, "NetworkProfileConnectionAttempts", "2"))["attributeStatus"] == "Accepted"
    assert (await _comm(s, "NetworkConfigurationPriority", "2,1,0"))["attributeStatus"] == "RebootRequired"
    log_mark, forwarded = len(s.log()), front.forwarded
    await _reset(s)
    moved = await s.wait_log(lambda e: e.get("msg") == "network profile cannot connect; next one",
                             since=log_mark, what="the fallback")
    assert moved["slot"] == "2" and moved["attempts"] == 2
    failed = [e for e in s.log()[log_mark:] if e.get("msg") == "CSMS connection failed"]
    assert len(failed) == 2 and front.forwarded > forwarded  # two attempts at slot 2, then slot 1 through the front
    assert (await _comm(s, "ActiveNetworkProfile"))["attributeValue"] == "1"
    assert (await _get(s, "SecurityProfile"))["attributeValue"] == "3"


async def test_tc_b_45_cs_migration_to_another_csms_url(p2: Station, front: TlsFaultFront) -> None:
    """TC_B_45_CS (B09.FR.01, B10.FR.01/04/06): a network profile naming another CSMS URL (the CSMS's own endpoint,
    not the commissioned front) with its messageTimeout, first in NetworkConfigurationPriority "2,1": after the
    Reset the station connects there and boots; ActiveNetworkProfile says 2 and MessageTimeout the profile's 7 s."""
    s = p2
    answer = await s.csms.call(CP_ID, "SetNetworkProfile", {"configurationSlot": 2, "connectionData":
                                                            _network_profile(s.csms.url, 3, message_timeout=7)})
    assert answer == {"status": "Accepted"}
    assert (await _comm(s, "NetworkConfigurationPriority", "2,1"))["attributeStatus"] == "RebootRequired"
    forwarded = front.forwarded
    mark = await _reset(s)
    assert front.forwarded == forwarded and _connects(s, mark)  # straight to the new URL, not through the front
    assert (await _comm(s, "ActiveNetworkProfile"))["attributeValue"] == "2"
    timeout = await s.csms.call(CP_ID, "GetVariables", {"getVariableData": [
        {"component": COMM, "variable": {"name": "MessageTimeout", "instance": "Default"}}]})
    assert timeout["getVariableResult"][0]["attributeValue"] == "7"


# --- security profile 3: the station's own certificate ------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def p3(tmp_path_factory: pytest.TempPathFactory, pki: TlsPki) -> AsyncIterator[Station]:
    tmp = tmp_path_factory.mktemp("p3")
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    async with Station(tmp, ocpp="2.0.1", connectors=1, csms_ssl=server,
                       ocpp_extra=_ocpp(3, pki, password=None, cp_cert=True)
                       + "additional_root_certificate_check = true\n") as s:
        await s.start_agent()
        yield s


async def test_tc_a_07_cs_client_certificate(p3: Station) -> None:
    """TC_A_07_CS (A00.FR.401/402/415/416): with profile 3 the station presents its certificate (CN = its serial
    number / identity; the CSMS requires one, issued by its root) over TLS >= 1.2, without Basic auth, and boots;
    SecurityCtrlr.SecurityProfile says 3."""
    connect = _connects(p3)[0]
    assert connect.detail["client_certificate"] == CP_ID and connect.detail["tls"] in ("TLSv1.2", "TLSv1.3")
    assert (await _get(p3, "SecurityProfile"))["attributeValue"] == "3"


async def _certificate_signed(s: Station, since: int) -> tuple[TranscriptEntry, str]:
    """The CSMS's CertificateSigned after ``since`` and the station's answer to it."""
    def answered() -> tuple[TranscriptEntry, str] | None:
        for e in s.csms.transcript.entries[since:]:
            if e.kind is EntryKind.CALL and e.direction is Direction.TO_CP and e.action == "CertificateSigned":
                answer = s.csms.transcript.response_to(e)
                return (e, answer.payload["status"]) if answer is not None else None
        return None
    await s.wait_until(lambda: answered() is not None, what="CertificateSigned answered")
    found = answered()
    assert found is not None
    return found


async def _trigger_signing(s: Station) -> TranscriptEntry:
    mark = s.mark()
    answer = await s.csms.call(CP_ID, "TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"})
    assert answer == {"status": "Accepted"}
    return await s.wait_call("SignCertificate", since=mark)


async def test_tc_a_15_cs_sign_certificate_rejected_by_the_csms(p3: Station) -> None:
    """TC_A_15_CS (A02, F06): TriggerMessage SignChargingStationCertificate is Accepted and a SignCertificate
    follows — certificateType ChargingStationCertificate, a CSR of a key made on the controller (CN = serial
    number); the CSMS's Rejected ends it: the station keeps its certificate and connection."""
    s = p3
    s.csms.behaviour.sign_certificate_status = "Rejected"
    mark = s.mark()
    request = await _trigger_signing(s)
    s.csms.behaviour.sign_certificate_status = "Accepted"
    assert request.payload["certificateType"] == "ChargingStationCertificate"
    csr = x509.load_pem_x509_csr(request.payload["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CP_ID
    assert (s.state_dir / "certs/charge-point-key.pending.pem").stat().st_mode & 0o777 == 0o600
    assert not [e for e in s.csms.transcript.entries[mark:] if e.action == "CertificateSigned"]
    assert not _connects(s, mark)


async def test_sign_certificate_repeated_after_cert_signing_wait_minimum(p3: Station) -> None:
    """A02.FR.17-19: a SignCertificate the CSMS accepted but did not follow by a CertificateSigned within
    SecurityCtrlr.CertSigningWaitMinimum is sent again, at most CertSigningRepeatTimes times."""
    s = p3
    assert (await _set(s, "CertSigningWaitMinimum", "1"))["attributeStatus"] == "Accepted"
    assert (await _set(s, "CertSigningRepeatTimes", "1"))["attributeStatus"] == "Accepted"
    mark = s.mark()
    await _trigger_signing(s)  # the CSMS has no CA: Accepted, but no CertificateSigned
    await s.wait_until(lambda: len(s.calls("SignCertificate", mark)) == 2, what="the SignCertificate repeated")
    assert (await _set(s, "CertSigningRepeatTimes", "0"))["attributeStatus"] == "Accepted"


async def test_tc_a_14_cs_invalid_certificate_rejected_and_reported(
        p3: Station, tmp_path_factory: pytest.TempPathFactory) -> None:
    """TC_A_14_CS (A02): a CertificateSigned whose certificate does not chain to an installed CSMS root is
    Rejected and reported by SecurityEventNotification InvalidChargingStationCertificate (the 2.0.1 name); the
    station stays on its certificate."""
    s = p3
    stranger = make_ca(tmp_path_factory.mktemp("stranger"), "Stranger CA")
    s.csms.csr_signer = lambda csr: sign_csr(stranger, csr)
    mark = s.mark()
    await _trigger_signing(s)
    _, status = await _certificate_signed(s, mark)
    assert status == "Rejected"
    await s.wait_until(lambda: "InvalidChargingStationCertificate" in _events(s), what="the security event")
    event = s.csms.state(CP_ID).security_events[_events(s).index("InvalidChargingStationCertificate")]
    assert "CSMS root" in event["techInfo"]
    assert not _connects(s, mark)


async def test_tc_a_11_cs_renewed_certificate_accepted_and_used(p3: Station, pki: TlsPki) -> None:
    """TC_A_11_CS (A02.FR.02/03/06/08/09): with the CSMS's CA signing, CertificateSigned is Accepted and the
    station reconnects at once presenting the new certificate (CN = serial, O = SecurityCtrlr.OrganizationName),
    kept 0600 with its key."""
    s = p3
    assert (await _set(s, "OrganizationName", "Example CPO"))["attributeStatus"] == "Accepted"
    s.csms.csr_signer = lambda csr: sign_csr(pki.csms_root, csr)
    mark = s.mark()
    request = await _trigger_signing(s)
    csr = x509.load_pem_x509_csr(request.payload["csr"].encode())
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example CPO"
    signed, status = await _certificate_signed(s, mark)
    assert status == "Accepted"
    serial = x509.load_pem_x509_certificate(signed.payload["certificateChain"].encode()).serial_number
    connect = await _wait_connect(s, mark, "a connection with the renewed certificate")
    assert int(connect.detail["client_certificate_serial"], 16) == serial
    assert connect.detail["client_certificate"] == CP_ID
    assert (s.state_dir / "certs/charge-point-renewed.pem").stat().st_mode & 0o777 == 0o600
    await s.csms.wait_connected(CP_ID)


async def test_tc_m_23_cs_the_station_certificate_cannot_be_deleted(p3: Station) -> None:
    """TC_M_23_CS (M04.FR.06): DeleteCertificate with the hash data of the station's own certificate is NotFound
    (it is never in the store of roots the CSMS manages) and the station keeps using it."""
    s = p3
    renewed = x509.load_pem_x509_certificates((s.state_dir / "certs/charge-point-renewed.pem").read_bytes())
    own = hash_data(renewed[0], _commissioned_root(s)).to_ocpp()
    assert await s.csms.call(CP_ID, "DeleteCertificate", {"certificateHashData": own}) == {"status": "NotFound"}
    assert (s.state_dir / "certs/charge-point-renewed.pem").exists()
    assert s.csms.is_connected(CP_ID)


async def test_additional_root_certificate_check_replaces_the_csms_root_after_a_connection_with_it(
        p3: Station, pki: TlsPki, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SecurityCtrlr.AdditionalRootCertificateCheck (ReadOnly, commissioned true here; M05): a CSMS root not issued
    by the installed one is Rejected with InvalidCsmsCertificate; one issued by it is Accepted and replaces it once a
    connection anchored by the new root is accepted (the commissioned root is kept: it is never removed)."""
    s = p3
    assert (await _get(s, "AdditionalRootCertificateCheck"))["attributeValue"] == "true"
    assert (await _set(s, "AdditionalRootCertificateCheck", "false"))["attributeStatus"] == "Rejected"
    where = tmp_path_factory.mktemp("roots-check")
    mark = s.mark()
    stranger = make_ca(where, "Stranger root")
    answer = await s.csms.call(CP_ID, "InstallCertificate", {"certificateType": "CSMSRootCertificate",
                                                             "certificate": stranger.path.read_text()})
    assert answer["status"] == "Rejected"
    await s.wait_call("SecurityEventNotification", lambda e: e.payload["type"] == "InvalidCsmsCertificate"
                      and "AdditionalRootCertificateCheck" in e.payload.get("techInfo", ""), since=mark)
    new = make_ca(where, "New CSMS root", signed_by=pki.csms_root)
    answer = await s.csms.call(CP_ID, "InstallCertificate", {"certificateType": "CSMSRootCertificate",
                                                             "certificate": new.path.read_text()})
    assert answer == {"status": "Accepted"}
    moved = issue_server_cert(new, where, "moved")
    assert s.csms.ssl_context is not None
    s.csms.ssl_context.load_cert_chain(moved.cert, moved.key)  # the CSMS moves to a certificate of the new root
    log_mark, mark = len(s.log()), s.mark()
    await s.csms.disconnect(CP_ID)
    await _wait_connect(s, mark, "a connection anchored by the new root")
    await s.csms.wait_connected(CP_ID)
    confirmed = await s.wait_log(lambda e: e.get("msg") == "new CSMS root confirmed by a connection; "
                                 "fallback removed", since=log_mark, what="the replacement confirmed")
    assert confirmed["kept_commissioned"] == 1
