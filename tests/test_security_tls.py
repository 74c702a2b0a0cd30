"""Security profiles 1-3 over real TLS: the link against the simulated CSMS serving wss://, with a test PKI
generated here. Each refused handshake is named as the 1.6 security whitepaper's event names it."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from firmware.ocpp.link import LinkSettings, OcppLink
from firmware.security import tls
from firmware.security.authorization_key import basic_auth_header, basic_auth_password, is_valid_authorization_key
from sim.csms.behaviour import ChargePointProfile
from sim.csms.server import SimulatedCsms, server_tls_context
from sim.harness.pki import TlsPki, issue_charge_point_cert, issue_server_cert, make_ca, make_tls_pki
from tests.tls_faults import NO_SHARED_CIPHER_ALERT, TlsFaultFront, tls11_server_hello

CP = "CP-TLS-1"
HEX_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 hex digits: a 20-byte password (TC_085)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsPki:
    return make_tls_pki(tmp_path_factory.mktemp("pki"), charge_point_serial=CP)


async def _attempt(server: ssl.SSLContext | None, settings: LinkSettings, password: str | None = None,
                   seen: list[Any] | None = None) -> tls.TlsFailure | str:
    """One connection attempt of the link; the agreed subprotocol, or the TLS failure it ended with."""
    async with SimulatedCsms(ssl_context=server, ping_interval_s=None) as csms:
        csms.behaviour.profiles[CP] = ChargePointProfile(password=password)
        base = csms.url if settings.base_url == "" else settings.base_url.replace("PORT", str(csms.port))
        link = OcppLink(base, CP, "ocpp1.6", settings=lambda: LinkSettings(
            base, settings.password, settings.ssl_context))
        try:
            return await link.probe()
        except Exception as exc:  # what run() would count as a failed attempt
            failure = tls.classify_failure(exc, over_tls=settings.ssl_context is not None)
            assert failure is not None, f"not a TLS failure: {exc!r}"
            return failure
        finally:
            if seen is not None:
                seen.extend(csms.transcript.entries)


def test_basic_auth_header_byte_for_byte() -> None:
    """TC_085: 32..40 hex digits are the hex form of the password (sent decoded); 16..20 characters are text."""
    assert basic_auth_password(HEX_KEY) == bytes.fromhex(HEX_KEY) and len(basic_auth_password(HEX_KEY)) == 20
    assert basic_auth_header("CP1", HEX_KEY) == "Basic Q1AxOgEjRWeJq83vASNFZ4mrze8BI0Vn"
    assert basic_auth_header("CP1", "plain-text-key-16") == "Basic Q1AxOnBsYWluLXRleHQta2V5LTE2"
    # 33 characters, odd: not a hex form, sent as its text
    assert basic_auth_password("0123456789abcdef0123456789abcdef0") == b"0123456789abcdef0123456789abcdef0"
    assert is_valid_authorization_key("x" * 16) and is_valid_authorization_key("x" * 40)
    assert not is_valid_authorization_key("x" * 15) and not is_valid_authorization_key("x" * 41)
    assert not is_valid_authorization_key("sixteen-chars\n..")


async def test_profile_1_basic_auth_with_a_hex_key() -> None:
    assert await _attempt(None, LinkSettings("", HEX_KEY), password=HEX_KEY) == "ocpp1.6"


async def test_profile_1_wrong_key_is_refused() -> None:
    async with SimulatedCsms(ping_interval_s=None) as csms:
        csms.behaviour.profiles[CP] = ChargePointProfile(password=HEX_KEY)
        link = OcppLink(csms.url, CP, "ocpp1.6", password="0123456789abcdef0123456789abcdef01234568")
        with pytest.raises(Exception, match="401"):
            await link.probe()


async def test_profile_2_connects_with_the_installed_root_only(pki: TlsPki, tmp_path: Path) -> None:
    server = server_tls_context(pki.csms.cert, pki.csms.key)
    assert await _attempt(server, LinkSettings("", HEX_KEY, tls.client_context(pki.csms_root.path)),
                          password=HEX_KEY) == "ocpp1.6"
    roots = tmp_path / "roots"  # a directory of roots, another CA's first
    roots.mkdir()
    other = make_ca(tmp_path / "other", "Other root")
    (roots / "a-other.pem").write_bytes(other.path.read_bytes())
    (roots / "b-csms.pem").write_bytes(pki.csms_root.path.read_bytes())
    assert await _attempt(server, LinkSettings("", HEX_KEY, tls.client_context(roots)),
                          password=HEX_KEY) == "ocpp1.6"
    # the host name counts: "localhost" is in the certificate as well
    assert await _attempt(server, LinkSettings("wss://localhost:PORT/ocpp", HEX_KEY,
                                               tls.client_context(pki.csms_root.path)), password=HEX_KEY) == "ocpp1.6"


async def test_profile_3_connects_with_the_charge_point_certificate(pki: TlsPki) -> None:
    assert pki.charge_point is not None
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    ctx = tls.client_context(pki.csms_root.path, pki.charge_point.cert, pki.charge_point.key)
    assert await _attempt(server, LinkSettings("", None, ctx)) == "ocpp1.6"


async def test_profile_3_missing_or_wrong_client_certificate_is_refused(pki: TlsPki, tmp_path: Path) -> None:
    server = server_tls_context(pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path)
    seen: list[Any] = []
    missing = await _attempt(server, LinkSettings("", None, tls.client_context(pki.csms_root.path)), seen=seen)
    assert isinstance(missing, tls.TlsFailure) and missing.client_certificate_refused and missing.event is None
    stranger = make_ca(tmp_path / "stranger", "Stranger root")
    wrong = issue_charge_point_cert(stranger, tmp_path / "stranger", CP)
    failure = await _attempt(server, LinkSettings("", None, tls.client_context(pki.csms_root.path, wrong.cert,
                                                                                 wrong.key)), seen=seen)
    assert isinstance(failure, tls.TlsFailure) and failure.client_certificate_refused, failure
    assert not [e for e in seen if e.kind.value == "connect"]


@pytest.mark.parametrize("case", ["expired", "other host", "unknown CA"])
async def test_a_bad_server_certificate_is_invalid_central_system_certificate(
        pki: TlsPki, tmp_path: Path, case: str) -> None:
    if case == "expired":
        cert = issue_server_cert(pki.csms_root, tmp_path, "expired", expired=True)
        words = "expired"
    elif case == "other host":
        cert = issue_server_cert(pki.csms_root, tmp_path, "other", hosts=("csms.example.com",))
        words = "mismatch"
    else:
        cert = issue_server_cert(make_ca(tmp_path / "rogue", "Rogue root"), tmp_path, "rogue")
        words = "unable to get local issuer"
    seen: list[Any] = []
    failure = await _attempt(server_tls_context(cert.cert, cert.key),
                             LinkSettings("", HEX_KEY, tls.client_context(pki.csms_root.path)), HEX_KEY, seen)
    assert isinstance(failure, tls.TlsFailure)
    assert failure.event == "InvalidCentralSystemCertificate" and words in failure.detail.lower(), failure
    assert not [e for e in seen if e.kind.value == "connect"]


async def _refused_by(reply: bytes, pki: TlsPki) -> BaseException:
    """One attempt of the link against a server that answers our ClientHello with ``reply``."""
    async with TlsFaultFront(reply=reply) as front:
        link = OcppLink(f"wss://127.0.0.1:{front.port}/ocpp", CP, "ocpp1.6",
                        ssl_context=tls.client_context(pki.csms_root.path))
        with pytest.raises(ssl.SSLError) as raised:
            await link.probe()
    assert front.refused == 1
    return raised.value


async def test_tls_1_1_only_is_invalid_tls_version(pki: TlsPki) -> None:
    failure = tls.classify_failure(await _refused_by(tls11_server_hello(), pki), over_tls=True)
    assert failure is not None and failure.event == "InvalidTLSVersion", failure


async def test_no_shared_cipher_suite_is_invalid_tls_cipher_suite(pki: TlsPki) -> None:
    failure = tls.classify_failure(await _refused_by(NO_SHARED_CIPHER_ALERT, pki), over_tls=True)
    assert failure is not None and failure.event == "InvalidTLSCipherSuite", failure


def test_client_context_refuses_what_the_whitepaper_forbids(pki: TlsPki, tmp_path: Path) -> None:
    ctx = tls.client_context(pki.csms_root.path)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(tls.WHITEPAPER_TLS12_CIPHERS)
    assert len(ctx.get_ca_certs()) == 1  # the installed root, not the system's store
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    with pytest.raises(tls.TlsSetupError, match="no PEM certificate"):
        tls.client_context(tmp_path / "empty.pem")


async def test_selftest_checks_the_csms_over_the_commissioned_profile(pki: TlsPki, tmp_path: Path) -> None:
    """The technician's self-test connects as the agent will: profile 2 with the CSMS root, and it names a refused
    TLS handshake (here an expired CSMS certificate) instead of "cannot connect"."""
    from firmware.config import parse_config
    from firmware.maintenance.selftest import _csms

    expired = issue_server_cert(pki.csms_root, tmp_path / "expired", expired=True)
    for server, expect in ((server_tls_context(pki.csms.cert, pki.csms.key), "security profile 2, basic auth"),
                           (server_tls_context(expired.cert, expired.key), "InvalidCentralSystemCertificate")):
        async with SimulatedCsms(ssl_context=server, ping_interval_s=None) as csms:
            csms.behaviour.profiles[CP] = ChargePointProfile(password=HEX_KEY)
            config = parse_config(
                f'[charge_point]\nid = "{CP}"\n[storage]\ndir = "{tmp_path}"\n[[connectors]]\nid = 1\n'
                'board = { driver = "ioboard", port = "/dev/null" }\n'
                f'[ocpp]\ncsms_url = "{csms.url}"\nsecurity_profile = 2\npassword = "{HEX_KEY}"\n'
                f'csms_ca = "{pki.csms_root.path}"\n', "agent.toml")
            try:
                result = await _csms(config, 5.0)
            except RuntimeError as exc:
                result = str(exc)
            assert expect in result, result
