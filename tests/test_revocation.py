"""Revocation of the firmware signing certificate (firmware/security/revocation.py, firmware/maintenance/signing.py):
the manufacturer root's CRL, and the rule for a CRL that is expired, not yet valid, unreadable or not the root's
(fail closed: the certificate is refused as invalid); a newer CRL fetched from crl_url (a real HTTP server); and in
the update pipeline (firmware/maintenance/updater.py, a real HTTP server): the CSMS's signing certificate judged
again after the download, the bundle's own signing certificate judged when the bundle is verified."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from firmware.maintenance.bundle import load_private_key
from firmware.maintenance.installers import SlotsInstaller
from firmware.maintenance.signing import FETCHED_CRL, Judgement, Verdict, judge_signing_certificate
from firmware.maintenance.updater import FirmwareStatus, FirmwareUpdater, UpdaterSettings
from tests.bundles import small_bundle
from tests.file_servers import http_file_server
from tests.pki import Signer, another_signing_cert, make_crl, make_signer
from tests.updater_runner import FileHold


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


# --- after the download: the CSMS's signing certificate again, and the bundle's own -------------------------------


async def run_update(s: UpdaterSettings, where: Path, location: str, **start: Any) -> tuple[list[str], str]:
    """The pipeline (real updater, slots installer and job file) on one job up to its reported outcome: the statuses
    and the job's detail."""
    seen: list[str] = []

    async def report(status: FirmwareStatus) -> None:
        seen.append(status.value)
    (where / "state").mkdir(parents=True, exist_ok=True)
    updater = FirmwareUpdater(where / "state", s, SlotsInstaller(str(where / "controller"), where / "state"),
                              FileHold(where / "connectors.json"), lambda: None, report)
    updater.start(location, 0.0, **start)
    await asyncio.wait_for(updater.run_job(), 30)
    assert updater.job is not None
    return seen, updater.job.detail


def signed(signer: Signer, file: Path) -> dict[str, Any]:
    signature = load_private_key(signer.key).sign(file.read_bytes(), ec.ECDSA(hashes.SHA256()))
    return {"signing_certificate": signer.cert.read_text(), "signature": base64.b64encode(signature).decode()}


async def test_a_crl_refreshed_after_the_request_revokes_the_signing_certificate_invalid_signature(
        pki: tuple[Signer, Signer, Signer], tmp_path: Path) -> None:
    """The signing certificate was good when the request came (the adapter judged it, Accepted); the root's CRL is
    refreshed while the download runs and now lists it: after the download it is judged again, and a signature by a
    revoked key counts for nothing — InvalidSignature (neither 1.6 security nor 2.0.1 has a status of its own for
    it), saying why; nothing verified further, the download dropped."""
    good, revoked, _ = pki
    (tmp_path / "srv").mkdir()
    bundle = small_bundle(tmp_path / "srv/v2.bundle", good, "1.1.0")
    crl = make_crl(good, tmp_path / "root.crl", [])
    s = settings(good, crl)
    assert (await judge(revoked, s, tmp_path)).verdict is Verdict.VALID  # when the request came
    make_crl(good, crl, [revoked.cert])  # refreshed meanwhile
    with http_file_server(tmp_path / "srv") as server:
        seen, detail = await run_update(s, tmp_path, server.url("v2.bundle"), request_id=5, **signed(revoked, bundle))
    assert seen == ["Downloading", "Downloaded", "InvalidSignature"], seen
    assert detail.startswith("refused: the signing certificate: the signing certificate") and "was revoked on" in detail
    assert not list((tmp_path / "state/firmware-download").glob("*"))


async def test_the_bundles_own_signing_certificate_is_checked_against_the_crl(pki: tuple[Signer, Signer, Signer],
                                                                              tmp_path: Path) -> None:
    """A bundle signed with a certificate the root's CRL lists (its manifest signature is fine): refused at its
    verification — InstallationFailed for 1.6 Core's UpdateFirmware, InstallVerificationFailed with the extended
    statuses — and a CRL that no longer tells (expired) refuses it too (fail closed); a bundle of a certificate
    not listed passes on to the install (Installing, then the slot it cannot reach here)."""
    good, revoked, _ = pki
    (tmp_path / "srv").mkdir()
    small_bundle(tmp_path / "srv/revoked.bundle", revoked, "6.6.7")
    small_bundle(tmp_path / "srv/good.bundle", good, "1.1.0")
    listing = settings(good, make_crl(good, tmp_path / "root.crl", [revoked.cert]))
    now = datetime.now(UTC)
    expired = settings(good, make_crl(good, tmp_path / "expired.crl", [], this_update=now - timedelta(days=10),
                                      next_update=now - timedelta(days=3)))
    with http_file_server(tmp_path / "srv") as server:
        seen, detail = await run_update(listing, tmp_path / "plain", server.url("revoked.bundle"))
        assert seen == ["Downloading", "Downloaded", "Installing", "InstallationFailed"], seen
        assert "the bundle's signing certificate: the signing certificate" in detail and "was revoked on" in detail
        seen, detail = await run_update(listing, tmp_path / "extended", server.url("revoked.bundle"), request_id=6)
        assert seen == ["Downloading", "Downloaded", "InstallVerificationFailed"], seen
        seen, detail = await run_update(expired, tmp_path / "expired", server.url("good.bundle"))
        assert seen[-1] == "InstallationFailed" and "revocation status unknown" in detail, (seen, detail)
        seen, detail = await run_update(listing, tmp_path / "good", server.url("good.bundle"))
        assert seen[:3] == ["Downloading", "Downloaded", "Installing"] and "revocation" not in detail, (seen, detail)
