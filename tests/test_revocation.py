"""Revocation of the firmware signing certificate (firmware/security/revocation.py, firmware/maintenance/signing.py):
the manufacturer root's CRL, and the rule for a CRL that is expired, not yet valid, unreadable or not the root's
(fail closed: the certificate is refused as invalid); a newer CRL fetched from crl_url (a real HTTP server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from firmware.maintenance.signing import FETCHED_CRL, Judgement, Verdict, judge_signing_certificate
from firmware.maintenance.updater import UpdaterSettings
from tests.file_servers import http_file_server
from tests.pki import Signer, another_signing_cert, make_crl, make_signer


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signer, Signer, Signer]:
    """The manufacturer's CA with a good and a revoked signing certificate, and a stranger's CA."""
    where = tmp_path_factory.mktemp("pki")
    good = make_signer(where / "good")
    return good, another_signing_cert(good, where / "revoked"), make_signer(where / "stranger", "Someone else")


def settings(signer: Signer, crl: Path | None = None, crl_url: str | None = None) -> UpdaterSettings:
    roots = tuple(x509.load_pem_x509_certificates(signer.ca_cert.read_bytes()))
    return UpdaterSettings(roots, None, 1 << 20, 5.0, 30.0, crl=crl, crl_url=crl_url)


async def judge(signer: Signer, s: UpdaterSettings, state: Path) -> Judgement:
    return await judge_signing_certificate(signer.cert.read_text(), s, state, datetime.now(UTC))


async def test_a_listed_certificate_is_revoked_others_valid(pki: tuple[Signer, Signer, Signer],
                                                            tmp_path: Path) -> None:
    good, revoked, _ = pki
    for der in (False, True):  # PEM or DER
        crl = make_crl(good, tmp_path / f"root-{der}.crl", [revoked.cert], der=der)
        s = settings(good, crl)
        assert (await judge(good, s, tmp_path)).verdict is Verdict.VALID
        judged = await judge(revoked, s, tmp_path)
        assert judged.verdict is Verdict.REVOKED and "was revoked on" in judged.reason
    assert (await judge(revoked, settings(good), tmp_path)).verdict is Verdict.VALID  # no CRL: not checked


async def test_the_rule_for_an_unusable_crl_is_fail_closed(pki: tuple[Signer, Signer, Signer],
                                                          tmp_path: Path) -> None:
    good, revoked, stranger = pki
    now = datetime.now(UTC)
    expired = make_crl(good, tmp_path / "expired.crl", [revoked.cert], this_update=now - timedelta(days=10),
                       next_update=now - timedelta(days=3))
    s = settings(good, expired)
    judged = await judge(good, s, tmp_path)
    assert judged.verdict is Verdict.INVALID and "expired on" in judged.reason and "status unknown" in judged.reason
    assert (await judge(revoked, s, tmp_path)).verdict is Verdict.REVOKED  # an old list still proves a revocation

    future = make_crl(good, tmp_path / "future.crl", [], this_update=now + timedelta(days=2))
    assert "not valid yet" in (await judge(good, settings(good, future), tmp_path)).reason

    foreign = make_crl(stranger, tmp_path / "foreign.crl", [revoked.cert])  # listing it, but not the root's
    judged = await judge(revoked, settings(good, foreign), tmp_path)
    assert judged.verdict is Verdict.INVALID and "not signed by the root" in judged.reason

    (tmp_path / "garbage.crl").write_bytes(b"not a CRL")
    judged = await judge(good, settings(good, tmp_path / "garbage.crl"), tmp_path)
    assert judged.verdict is Verdict.INVALID and "not an X.509 CRL" in judged.reason
    judged = await judge(good, settings(good, tmp_path / "missing.crl"), tmp_path)
    assert judged.verdict is Verdict.INVALID and "cannot be read" in judged.reason
    judged = await judge(stranger, settings(good, expired), tmp_path)  # not the root's at all: invalid first
    assert judged.verdict is Verdict.INVALID and "signature does not verify" in judged.reason


async def test_an_expired_crl_is_refreshed_from_crl_url(pki: tuple[Signer, Signer, Signer], tmp_path: Path) -> None:
    """The configured CRL expired: a newer one is fetched from crl_url (and kept in the state directory); it
    decides. Nothing served: the status stays unknown."""
    good, revoked, _ = pki
    now = datetime.now(UTC)
    expired = make_crl(good, tmp_path / "expired.crl", [], this_update=now - timedelta(days=10),
                       next_update=now - timedelta(days=3))
    (tmp_path / "srv").mkdir()
    state = tmp_path / "state"
    state.mkdir()
    with http_file_server(tmp_path / "srv") as server:
        s = settings(good, expired, server.url("root.crl"))
        judged = await judge(good, s, state)
        assert judged.verdict is Verdict.INVALID and "expired on" in judged.reason  # 404: nothing newer
        make_crl(good, tmp_path / "srv/root.crl", [revoked.cert], der=True)
        assert (await judge(good, s, state)).verdict is Verdict.VALID
        assert (state / FETCHED_CRL).is_file()
        fetched = len(server.faults.requests)
        assert (await judge(revoked, s, state)).verdict is Verdict.REVOKED
        assert len(server.faults.requests) == fetched  # the fetched copy is current: not fetched again
