"""Firmware bundles: signing and verification (firmware/maintenance/bundle.py), on real files and real certificates."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from firmware.maintenance.bundle import (
    BundleError,
    load_certificate,
    load_private_key,
    verify_bundle,
    write_bundle,
)
from firmware.maintenance.slots import HashingReader
from tests.pki import Signer, make_signer


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("pki-other"), "Someone else")


def build(tmp: Path, signer: Signer, revisions: tuple[str, ...] = ("rev-c",)) -> Path:
    src = tmp / "src"
    (src / "app/firmware").mkdir(parents=True, exist_ok=True)
    (src / "app/firmware/__init__.py").write_text("")
    (src / "app/firmware/agent.py").write_text("print('agent')\n")
    (src / "requirements.txt").write_text("ocpp==2.1.0\n")
    files = {p.relative_to(src).as_posix(): p for p in src.rglob("*") if p.is_file()}
    out = tmp / "bundle.tar"
    write_bundle(out, files, version="1.2.3", hardware_revisions=revisions, python="cp311", platform="x86_64",
                 key=load_private_key(signer.key), certificate=load_certificate(signer.cert))
    return out


def test_a_signed_bundle_verifies_against_its_ca_and_its_own_cert(tmp_path: Path, signer: Signer) -> None:
    out = build(tmp_path, signer)
    verified = verify_bundle(out, [load_certificate(signer.ca_cert)], hardware_revision="rev-c")
    assert verified.manifest.version == "1.2.3"
    assert {f.path for f in verified.manifest.files} == {"app/firmware/__init__.py", "app/firmware/agent.py",
                                                         "requirements.txt"}
    assert "Firmware signing" in verified.signer
    assert verified.sha256 == hashlib.sha256(out.read_bytes()).hexdigest() and verified.size == out.stat().st_size
    assert verify_bundle(out, [load_certificate(signer.cert)]).manifest.version == "1.2.3"


def test_a_bundle_that_is_not_the_downloaded_file_is_refused_though_it_is_signed(tmp_path: Path,
                                                                                signer: Signer) -> None:
    """The download's digest (what a CSMS file signature was checked over) binds the verification to that file: a
    validly signed bundle that is not those bytes (the file replaced after the download) is refused."""
    out = build(tmp_path / "one", signer)
    downloaded = hashlib.sha256(out.read_bytes()).hexdigest()
    trusted = [load_certificate(signer.ca_cert)]
    assert verify_bundle(out, trusted, sha256=downloaded).sha256 == downloaded
    other = tmp_path / "other.tar"  # the same signed members, other bytes (more end padding)
    other.write_bytes(out.read_bytes() + b"\0" * 512)
    assert verify_bundle(other, trusted).manifest.version == "1.2.3"
    with pytest.raises(BundleError, match="changed after it was downloaded"):
        verify_bundle(other, trusted, sha256=downloaded)


def test_wrong_signer_is_refused_naming_the_trusted_certificate(tmp_path: Path, signer: Signer,
                                                                stranger: Signer) -> None:
    out = build(tmp_path, stranger)
    with pytest.raises(BundleError, match=r"signature does not verify against the trusted certificate "
                                          r"\(CN=Firmware CA.*signed by 'CN=Someone else signing"):
        verify_bundle(out, [load_certificate(signer.ca_cert)])


def _rewrite(src: Path, dst: Path, change: dict[str, bytes | None]) -> None:
    """Copy a tar, replacing (or dropping, None) the named members' content."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read()  # type: ignore[union-attr]
            if m.name in change:
                if change[m.name] is None:
                    continue
                data = change[m.name]  # type: ignore[assignment]
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))


def test_tampered_payload_manifest_or_extra_file_refused(tmp_path: Path, signer: Signer) -> None:
    out = build(tmp_path, signer)
    trusted = [load_certificate(signer.ca_cert)]
    bad = tmp_path / "bad.tar"
    _rewrite(out, bad, {"payload/app/firmware/agent.py": b"print('evil')\n"})
    with pytest.raises(BundleError, match=r"app/firmware/agent.py does not match its SHA-256"):
        verify_bundle(bad, trusted)
    with tarfile.open(out) as t:
        manifest = t.extractfile("manifest.json").read()  # type: ignore[union-attr]
    _rewrite(out, bad, {"manifest.json": manifest.replace(b"1.2.3", b"9.9.9")})
    with pytest.raises(BundleError, match="signature does not verify against the signing certificate"):
        verify_bundle(bad, trusted)
    _rewrite(out, bad, {"payload/requirements.txt": None})
    with pytest.raises(BundleError, match=r"missing, e\.g\. requirements\.txt"):
        verify_bundle(bad, trusted)
    with tarfile.open(out, "a") as t:
        info = tarfile.TarInfo("payload/app/firmware/backdoor.py")
        info.size = 4
        t.addfile(info, io.BytesIO(b"pass"))
    with pytest.raises(BundleError, match=r"backdoor\.py.*not in the signed manifest"):
        verify_bundle(out, trusted)


def test_other_hardware_revision_and_truncated_file_refused(tmp_path: Path, signer: Signer) -> None:
    out = build(tmp_path, signer, ("rev-a", "rev-b"))
    trusted = [load_certificate(signer.ca_cert)]
    with pytest.raises(BundleError, match=r"built for hardware revision\(s\) rev-a, rev-b, the controller is 'rev-c'"):
        verify_bundle(out, trusted, hardware_revision="rev-c")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(out.read_bytes()[:1500])
    with pytest.raises(BundleError):
        verify_bundle(cut, trusted)
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        (tmp_path / "empty.tar").write_bytes(b"\0" * 1024)
        verify_bundle(tmp_path / "empty.tar", trusted)


def test_key_must_match_certificate(tmp_path: Path, signer: Signer, stranger: Signer) -> None:
    with pytest.raises(BundleError, match="does not belong to the signing certificate"):
        write_bundle(tmp_path / "x.tar", {}, version="1", hardware_revisions=["r"], python="cp311",
                     platform="x86_64", key=load_private_key(stranger.key), certificate=load_certificate(signer.cert))


def test_the_hashing_reader_hands_out_only_bytes_of_its_one_hashed_read() -> None:
    """slots.HashingReader, what verification and unpacking read a bundle through: skipped bytes are hashed, a read
    back is served from the bytes already read (never from the file again), and one further back is refused."""
    data = bytes(range(256)) * 1024
    reader = HashingReader(io.BytesIO(data))
    assert reader.read(100) == data[:100]
    reader.seek(1000)  # skipped: 100..999 are hashed all the same
    assert reader.read(10) == data[1000:1010]
    reader.seek(1009)
    assert reader.read(3) == data[1009:1012]  # one byte back, then on
    reader.seek(HashingReader.KEPT + 5000)
    reader.read(1)
    reader.seek(0)
    with pytest.raises(OSError, match="front to back"):
        reader.read(1)
    assert reader.finish() == hashlib.sha256(data).hexdigest() and reader.size == len(data)
