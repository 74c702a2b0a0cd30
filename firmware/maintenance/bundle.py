"""Firmware bundles: one signed tar file holding the agent, its dependencies as wheels and a manifest.

The same code verifies a bundle in the technician's tool (``tools/flash.py``) and, later, in the agent's own
updater (OCPP SignedUpdateFirmware), so both refuse exactly the same bundles. The signature follows OCPP's
signed firmware update: an X.509 signing certificate (PEM) and an ECDSA signature with SHA-256, base64
encoded. What is signed is the manifest, which lists every payload file with its SHA-256, so one signature
covers every byte that gets installed. Format: docs/bundle-format.md.

Layout of the tar (uncompressed: the wheels are compressed already)::

    manifest.json      canonical JSON (sorted keys, no spaces), the signed bytes
    manifest.sig       base64 of the DER ECDSA-SHA256 signature over manifest.json
    signing-cert.pem   the signing certificate (must be, or be issued by, a trusted certificate)
    payload/...        app/firmware/**, app/hal/**, wheels/*.whl, requirements.txt,
                       bytecode/<cache tag>.zip (format 2: the compiled modules, so the controller need not compile)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from firmware.maintenance.slots import HashingReader, sha256_file

FORMAT = 2  # written when the bundle ships bytecode; without it the bundle is format 1, which every agent reads
FORMATS = (1, 2)  # what this reader installs
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
CERTIFICATE = "signing-cert.pem"
PAYLOAD = "payload/"
_META = (MANIFEST, SIGNATURE, CERTIFICATE)
#: Cap on manifest/signature/certificate member sizes: a hostile bundle must not make us read gigabytes.
_MAX_META_BYTES = 4 << 20


class BundleError(Exception):
    """The bundle is refused; ``str()`` says why and what to do, for the technician."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to payload/, POSIX separators
    sha256: str
    size: int


@dataclass(frozen=True)
class Bytecode:
    """Format 2: the modules compiled at build time (payload ``file``, a zip of ``<dir>/__pycache__/*.pyc`` paths
    relative to the slot) for one interpreter: its ``cache_tag`` and bytecode ``magic`` (hex). The installer uses them
    when the controller's Python has the same tag and magic, and compiles what is missing (all of it otherwise)."""

    file: str
    cache_tag: str  # sys.implementation.cache_tag, e.g. cpython-311
    magic: str  # importlib.util.MAGIC_NUMBER, hex
    invalidation: str = "checked-hash"  # py_compile.PycInvalidationMode, as the pyc headers say

    def to_json(self) -> dict[str, str]:
        return {"file": self.file, "cache_tag": self.cache_tag, "magic": self.magic,
                "invalidation": self.invalidation}


@dataclass(frozen=True)
class Manifest:
    version: str
    built_at: str  # ISO 8601 UTC
    hardware_revisions: tuple[str, ...]  # controller hardware revisions this bundle is built for
    python: str  # interpreter tag the wheels are built for, e.g. cp311
    platform: str  # machine the binary wheels are for, e.g. x86_64, aarch64
    files: tuple[FileEntry, ...]
    bytecode: Bytecode | None = None

    @property
    def format(self) -> int:
        """2 with bytecode; 1 without, so that a bundle without bytecode still installs with an older agent."""
        return FORMAT if self.bytecode is not None else 1

    def to_json(self) -> bytes:
        """Canonical bytes (what is signed)."""
        data: dict[str, Any] = {
            "format": self.format, "version": self.version, "built_at": self.built_at,
            "hardware_revisions": list(self.hardware_revisions), "python": self.python, "platform": self.platform,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files]}
        if self.bytecode is not None:
            data["bytecode"] = self.bytecode.to_json()
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            if data["format"] not in FORMATS:
                raise BundleError(f"bundle format {data['format']} is not supported (this tool reads formats "
                                  f"{', '.join(map(str, FORMATS))}); use a matching tool version")
            files = tuple(FileEntry(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in data["files"])
            bytecode = None
            if data["format"] >= 2 and data.get("bytecode") is not None:
                b = data["bytecode"]
                bytecode = Bytecode(str(b["file"]), str(b["cache_tag"]), str(b["magic"]), str(b["invalidation"]))
                if bytecode.file not in {f.path for f in files}:
                    raise BundleError(f"{MANIFEST} names bytecode {bytecode.file!r}, which is not one of its files; "
                                      "the bundle is damaged: build it again")
            manifest = cls(version=str(data["version"]), built_at=str(data["built_at"]),
                           hardware_revisions=tuple(str(h) for h in data["hardware_revisions"]),
                           python=str(data["python"]), platform=str(data["platform"]), files=files,
                           bytecode=bytecode)
            if manifest.format != data["format"]:
                raise BundleError(f"{MANIFEST} says format {data['format']} but holds "
                                  f"{'no ' if bytecode is None else ''}bytecode; the bundle is damaged: build it again")
            return manifest
        except (ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{MANIFEST} is malformed ({exc!r}); the bundle is damaged: build it again") from None

    @property
    def payload_bytes(self) -> int:
        return sum(f.size for f in self.files)


def safe_relative(path: str) -> bool:
    """A relative POSIX path without ``..`` or backslashes: it stays inside the slot."""
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path


# --- signing (build side) ----------------------------------------------------------------------------


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BundleError(f"{path}: expected an EC (ECDSA) private key in PEM, got {type(key).__name__}")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise BundleError(f"{path}: expected an X.509 certificate in PEM ({exc})") from None


def sign(data: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def write_bundle(out: Path, files: Mapping[str, Path], *, version: str, hardware_revisions: Iterable[str],
                 python: str, platform: str, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
                 built_at: datetime | None = None, bytecode: Bytecode | None = None) -> Manifest:
    """Write a signed bundle of ``files`` (payload path -> source file) to ``out``; ``bytecode`` describes the one
    of ``files`` that holds the compiled modules (format 2)."""
    cert_key = certificate.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or \
            cert_key.public_numbers() != key.public_key().public_numbers():
        raise BundleError("the signing key does not belong to the signing certificate")
    entries = []
    for rel in sorted(files):
        if not safe_relative(rel):
            raise BundleError(f"payload path {rel!r} is not a relative path inside the bundle")
        src = files[rel]
        entries.append(FileEntry(rel, sha256_file(src), src.stat().st_size))
    manifest = Manifest(version=version, built_at=(built_at or datetime.now(UTC)).isoformat(timespec="seconds"),
                        hardware_revisions=tuple(hardware_revisions), python=python, platform=platform,
                        files=tuple(entries), bytecode=bytecode)
    if bytecode is not None and bytecode.file not in files:
        raise BundleError(f"bytecode {bytecode.file!r} is not one of the payload files")
    raw = manifest.to_json()
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, raw)
        _add_bytes(tar, SIGNATURE, sign(raw, key).encode())
        _add_bytes(tar, CERTIFICATE, certificate.public_bytes(serialization.Encoding.PEM))
        for e in entries:
            info = tar.gettarinfo(str(files[e.path]), PAYLOAD + e.path)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0  # reproducible: the same inputs give the same payload bytes
            with files[e.path].open("rb") as f:
                tar.addfile(info, f)
    tmp.replace(out)
    return manifest


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


# --- verification (tool and agent) -------------------------------------------------------------------


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number}"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    public = issuer.public_key()
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def check_certificate(cert: x509.Certificate, trusted: Iterable[x509.Certificate], where: str,
                      now: datetime | None = None) -> None:
    """``cert`` must be one of ``trusted`` or directly issued by one of them, and valid ``now``."""
    now = now or datetime.now(UTC)
    trusted = list(trusted)
    names = "; ".join(_describe(t) for t in trusted) or "no trusted certificate given"
    if not any(cert == t or _signed_by(cert, t) for t in trusted):
        raise BundleError(f"signature does not verify against the trusted certificate ({names}): the bundle is "
                          f"signed by '{_describe(cert)}'. Use a bundle signed with your organisation's key, or "
                          f"pass the right --trust certificate")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise BundleError(f"{where}: signing certificate '{_describe(cert)}' is not valid now (valid "
                          f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}); "
                          "check the laptop's clock, or sign with a current certificate")


def verify_signature(data: bytes, signature_b64: str, cert: x509.Certificate, where: str) -> None:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise BundleError(f"{where}: signing certificate holds a {type(public).__name__}, expected an ECDSA key")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise BundleError(f"{where}: signature does not verify against the signing certificate "
                          f"'{_describe(cert)}': the bundle was altered after signing. Do not install it; "
                          "get the original bundle again") from None


@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    manifest: Manifest
    signer: str  # subject of the signing certificate
    sha256: str  # of the whole bundle file, to check the copy on the controller
    size: int
    certificate: x509.Certificate  # the signing certificate (the agent checks it against the root's CRL too)


def _read_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(info)
    if f is None or info.size > _MAX_META_BYTES:
        raise BundleError(f"{info.name} is not a regular file of sensible size; the bundle is damaged")
    return f.read()


def verify_bundle(path: Path, trusted: Iterable[x509.Certificate], *, hardware_revision: str | None = None,
                  now: datetime | None = None, sha256: str | None = None) -> VerifiedBundle:
    """Check everything before anything is written anywhere: the signing certificate against ``trusted``,
    the signature over the manifest, every payload file against its SHA-256 (and no file missing or added),
    and — when given — that the bundle is built for ``hardware_revision``. Raises :class:`BundleError`.

    One sequential read of the file (:class:`slots.HashingReader`): the whole file's
    SHA-256 (:attr:`VerifiedBundle.sha256`, what the install checks its copy against) is computed over the very
    bytes whose members were checked, so it names exactly the verified content. ``sha256``: the digest the
    download computed on the way (what a file signature from the CSMS was checked over); the file must still
    hash to it, else it changed after the download and is refused."""
    where = str(path)
    meta: dict[str, bytes] = {}
    payload: list[tuple[str, str, int]] = []  # (path in payload/, SHA-256, size), in the tar's order
    try:
        with path.open("rb") as raw_file:
            reader = HashingReader(raw_file)
            with tarfile.open(fileobj=reader, mode="r:") as tar:  # type: ignore[call-overload]
                for m in tar:  # member by member, in file order
                    if m.name in _META and m.name not in meta:
                        meta[m.name] = _read_member(tar, m)
                        continue
                    rel = m.name[len(PAYLOAD):] if m.name.startswith(PAYLOAD) else None
                    if rel is None or not m.isfile() or any(rel == seen for seen, _, _ in payload):
                        raise BundleError(f"{where}: unexpected member {m.name!r} (not in the signed manifest): the "
                                          "bundle was altered after signing. Do not install it")
                    f = tar.extractfile(m)
                    assert f is not None
                    payload.append((rel, _hash_stream(f), m.size))
            digest = reader.finish()
    except (tarfile.TarError, EOFError) as exc:
        raise BundleError(f"{where}: not a readable tar file ({exc}); the download may be incomplete") from None
    except OSError as exc:
        raise BundleError(f"{where}: cannot read the bundle ({exc.strerror or exc})") from None
    for name in _META:
        if name not in meta:
            raise BundleError(f"{where}: {name} is missing: this is not a firmware bundle (or it is damaged)")
    signature = meta[SIGNATURE].decode("ascii", "replace").strip()
    try:
        cert = x509.load_pem_x509_certificate(meta[CERTIFICATE])
    except ValueError as exc:
        raise BundleError(f"{where}: {CERTIFICATE} is not a PEM certificate ({exc})") from None
    check_certificate(cert, trusted, where, now)
    verify_signature(meta[MANIFEST], signature, cert, where)
    manifest = Manifest.from_json(meta[MANIFEST])
    if hardware_revision is not None and hardware_revision not in manifest.hardware_revisions:
        raise BundleError(f"{where}: bundle {manifest.version} is built for hardware revision(s) "
                          f"{', '.join(manifest.hardware_revisions)}, the controller is "
                          f"{hardware_revision!r}: use the bundle for {hardware_revision}")
    _check_payload(payload, manifest, where)
    if sha256 is not None and digest != sha256:
        raise BundleError(f"{where}: the file changed after it was downloaded (its SHA-256 is not the download's): "
                          "do not install it; download it again")
    return VerifiedBundle(path, manifest, _describe(cert), digest, reader.size, cert)


def _check_payload(payload: list[tuple[str, str, int]], manifest: Manifest, where: str) -> None:
    expected = {f.path: f for f in manifest.files}
    for rel, digest, size in payload:
        if rel not in expected:
            raise BundleError(f"{where}: unexpected member {PAYLOAD + rel!r} (not in the signed manifest): the "
                              "bundle was altered after signing. Do not install it")
        if digest != expected[rel].sha256 or size != expected[rel].size:
            raise BundleError(f"{where}: {rel} does not match its SHA-256 in the signed manifest: the bundle was "
                              "altered after signing. Do not install it; get the original bundle again")
    missing = sorted(set(expected) - {rel for rel, _, _ in payload})
    if missing:
        raise BundleError(f"{where}: {len(missing)} file(s) of the manifest missing, e.g. {missing[0]}: the bundle "
                          "is incomplete")


def _hash_stream(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    return {"version": manifest.version, "built_at": manifest.built_at,
            "hardware_revisions": list(manifest.hardware_revisions), "python": manifest.python,
            "platform": manifest.platform, "files": len(manifest.files), "payload_bytes": manifest.payload_bytes,
            "format": manifest.format,
            "bytecode": manifest.bytecode.cache_tag if manifest.bytecode is not None else None}


def verify_file_signature(path: Path, signature_b64: str, cert: x509.Certificate, *, sha256: str | None = None) -> None:
    """OCPP SignedUpdateFirmware: ``signature`` (base64 DER ECDSA, or RSA PKCS#1 v1.5, with SHA-256) over the whole
    downloaded file, by the signing certificate's key. ``sha256``: the file's digest as the download computed it
    (no read of the file then; :func:`verify_bundle` given the same digest then proves the bytes it verified are
    these); else the file is hashed in chunks. Raises :class:`BundleError`."""
    digest = bytes.fromhex(sha256 if sha256 is not None else sha256_file(path))
    public = cert.public_key()
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        else:
            raise BundleError(f"the signing certificate holds a {type(public).__name__}: not ECDSA or RSA")
    except (InvalidSignature, ValueError):
        raise BundleError(f"the signature does not verify over the downloaded file with the signing certificate "
                          f"'{_describe(cert)}'") from None
