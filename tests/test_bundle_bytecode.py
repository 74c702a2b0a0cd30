"""Bundle format 2: bytecode compiled once by ``flash.py build`` (tools/flashing/build.py), covered by the signature,
used by the installer (firmware/maintenance/slots.py) when it was made for the controller's Python, compiled at
install otherwise; format-1 bundles still install. Small real bundles (a package and a tiny wheel), real installs
into a controller root, and the installed agent's modules imported by a real interpreter."""

from __future__ import annotations

import importlib.util
import io
import json
import marshal
import os
import py_compile
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from firmware.maintenance import slots
from firmware.maintenance.bundle import (
    BundleError,
    Bytecode,
    Manifest,
    load_certificate,
    load_private_key,
    verify_bundle,
    write_bundle,
)
from tests.pki import Signer, make_signer
from tools.flashing.build import build_bytecode

TAG = sys.implementation.cache_tag
MAGIC = importlib.util.MAGIC_NUMBER.hex()


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return make_signer(tmp_path_factory.mktemp("pki"))


def sources(tmp: Path) -> tuple[dict[str, Path], Path]:
    """The agent's files (payload path -> file) and a wheel, as build gathers them."""
    src = tmp / "src"
    (src / "app/firmware").mkdir(parents=True, exist_ok=True)
    (src / "app/firmware/__init__.py").write_text("")
    (src / "app/firmware/mod.py").write_text("from tinylib import ANSWER\nVALUE = ANSWER + 1\n")
    (src / "app/firmware/data.json").write_text("{}")
    wheel = tmp / "tinylib-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tinylib/__init__.py", "ANSWER = 41\n")
        z.writestr("tinylib/py2only.py", "print 'not Python 3'\n")  # does not compile: no bytecode, no error
        z.writestr("tinylib/stored.txt", "kept as it is\n", compress_type=zipfile.ZIP_STORED)
        z.writestr("tinylib-1.0.dist-info/METADATA", "Name: tinylib\nVersion: 1.0\n")
    files = {p.relative_to(src).as_posix(): p for p in src.rglob("*") if p.is_file()}
    files["wheels/" + wheel.name] = wheel
    return files, wheel


def bundle(tmp: Path, signer: Signer, bytecode: Bytecode | None, archive: Path | None = None) -> Path:
    files, _ = sources(tmp)
    if bytecode is not None:
        assert archive is not None
        files[bytecode.file] = archive
    out = tmp / "bundle.tar"
    write_bundle(out, files, version="2.0.0", hardware_revisions=["rev-c"], python="cp311", platform="x86_64",
                 key=load_private_key(signer.key), certificate=load_certificate(signer.cert), bytecode=bytecode)
    return out


def built(tmp: Path, signer: Signer) -> Path:
    """A bundle with the bytecode build makes, for this Python."""
    files, wheel = sources(tmp)
    archive = tmp / "bytecode.zip"
    bytecode = build_bytecode({k: v for k, v in files.items() if k.startswith("app/")}, [wheel], archive)
    return bundle(tmp, signer, bytecode, archive)


def install(tmp: Path, path: Path) -> Path:
    """Installed into the inactive slot of a controller whose slot a runs; the new slot."""
    root = tmp / "controller"
    (root / "opt/evse-agent/slots/a").mkdir(parents=True, exist_ok=True)
    (root / "opt/evse-agent/slots/a/manifest.json").write_text('{"version": "1.0.0"}')
    slots.activate(str(root), "a")
    sha, size = slots.sha256_file(path), path.stat().st_size
    shutil.copyfile(path, slots.prepare_upload(str(root), sha, size)["path"])
    assert slots.install(str(root), sha, size)["slot"] == "b"
    return root / "opt/evse-agent/slots/b"


def imports(slot: Path) -> str:
    """Import the agent's module as the service runs it (``-S``, the slot's paths); ``-v`` says where each module's
    code came from. Bytecode is not written (``-B``): the agent's user could not write it either."""
    env = {**os.environ, "PYTHONPATH": f"{slot / 'app'}:{slot / 'lib'}"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([sys.executable, "-S", "-B", "-v", "-c", "import firmware.mod as m; print(m.VALUE)"],
                          capture_output=True, text=True, env=env, check=True, cwd=slot)
    assert proc.stdout.strip() == "42"
    return proc.stderr


def pyc(slot: Path, rel: str) -> Path:
    path = Path(rel)
    return slot / path.parent / "__pycache__" / f"{path.stem}.{TAG}.pyc"


def test_bytecode_built_once_is_signed_installed_as_shipped_and_used(tmp_path: Path, signer: Signer,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = built(tmp_path, signer)
    verified = verify_bundle(path, [load_certificate(signer.ca_cert)])
    assert verified.manifest.format == 2
    assert verified.manifest.bytecode == Bytecode(f"bytecode/{TAG}.zip", TAG, MAGIC, "checked-hash")
    with tarfile.open(path) as tar:
        shipped = zipfile.ZipFile(io.BytesIO(tar.extractfile(f"payload/bytecode/{TAG}.zip").read()))  # type: ignore[union-attr]
    assert sorted(shipped.namelist()) == [f"app/firmware/__pycache__/__init__.{TAG}.pyc",
                                          f"app/firmware/__pycache__/mod.{TAG}.pyc",
                                          f"lib/tinylib/__pycache__/__init__.{TAG}.pyc"]
    compiled: list[str] = []
    real = py_compile.compile

    def spy(file: str, *args: Any, **kwargs: Any) -> Any:
        compiled.append(file)
        return real(file, *args, **kwargs)
    monkeypatch.setattr(py_compile, "compile", spy)
    slot = install(tmp_path, path)
    assert compiled == [str(slot.with_name("b.new") / "lib/tinylib/py2only.py")]  # only what has no bytecode
    for rel in ("app/firmware/mod.py", "lib/tinylib/__init__.py"):
        data = pyc(slot, rel).read_bytes()
        assert data == shipped.read(pyc(Path(), rel).as_posix())  # the shipped bytes, not compiled again
        assert int.from_bytes(data[4:8], "little") == 0b11  # hash-based, checked against its source
    assert not (slot / "wheels").exists() and not (slot / "bytecode").exists()  # unpacked, not kept
    assert (slot / "lib/tinylib/stored.txt").read_text() == "kept as it is\n"  # a stored member, a deflated one:
    assert (slot / "lib/tinylib-1.0.dist-info/METADATA").read_text() == "Name: tinylib\nVersion: 1.0\n"
    assert not pyc(slot, "lib/tinylib/py2only.py").exists()
    trace = imports(slot)
    assert f"code object from '{pyc(slot, 'app/firmware/mod.py')}'" in trace
    assert f"code object from '{pyc(slot, 'lib/tinylib/__init__.py')}'" in trace


@pytest.mark.parametrize("tag, magic", [("cpython-39", "610d0d0a"), (TAG, "00000000")],
                         ids=["another cache tag", "another bytecode magic"])
def test_bytecode_for_another_python_is_not_used_the_modules_are_compiled(
        tmp_path: Path, signer: Signer, tag: str, magic: str) -> None:
    """Another tag: placed (the controller may be another Python than the one writing its card), and this Python's
    compiled beside it. This tag with another magic: not placed (this Python would reject it at every start)."""
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"app/firmware/__pycache__/mod.{tag}.pyc", b"not bytecode for this Python")
    path = bundle(tmp_path, signer, Bytecode(f"bytecode/{tag}.zip", tag, magic), archive)
    assert verify_bundle(path, [load_certificate(signer.ca_cert)]).manifest.format == 2
    slot = install(tmp_path, path)
    if tag != TAG:
        assert (slot / f"app/firmware/__pycache__/mod.{tag}.pyc").read_bytes() == b"not bytecode for this Python"
    for rel in ("app/firmware/__init__.py", "app/firmware/mod.py", "lib/tinylib/__init__.py"):
        assert pyc(slot, rel).read_bytes()[:4] == importlib.util.MAGIC_NUMBER  # compiled here, for this Python
    assert f"code object from '{pyc(slot, 'app/firmware/mod.py')}'" in imports(slot)


def test_a_format_1_bundle_still_installs_and_is_compiled(tmp_path: Path, signer: Signer) -> None:
    path = bundle(tmp_path, signer, None)
    with tarfile.open(path) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["format"] == 1 and "bytecode" not in manifest  # the bytes an older tool wrote
    slot = install(tmp_path, path)
    assert f"code object from '{pyc(slot, 'lib/tinylib/__init__.py')}'" in imports(slot)


def _rewrite(src: Path, dst: Path, name: str, data: bytes) -> None:
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for m in tin.getmembers():
            content = tin.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == name:
                content, m.size = data, len(data)
            tout.addfile(m, io.BytesIO(content))


def test_a_tampered_pyc_fails_verification_it_is_covered_by_the_signature(tmp_path: Path, signer: Signer) -> None:
    path = built(tmp_path, signer)
    member = f"payload/bytecode/{TAG}.zip"
    with tarfile.open(path) as tar:
        original = zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read()))  # type: ignore[union-attr]
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        for name in original.namelist():
            data = original.read(name)
            if name.endswith(f"mod.{TAG}.pyc"):
                data = data[:16] + marshal.dumps(compile("VALUE = 666\n", "mod.py", "exec"))  # same header
            z.writestr(name, data)
    bad = tmp_path / "bad.tar"
    _rewrite(path, bad, member, evil.getvalue())
    with pytest.raises(BundleError, match=rf"bytecode/{TAG}\.zip does not match its SHA-256 in the signed manifest"):
        verify_bundle(bad, [load_certificate(signer.ca_cert)])


def test_bytecode_may_hold_only_bytecode_and_the_format_must_match(tmp_path: Path, signer: Signer) -> None:
    archive = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(archive, "w") as z:  # signed, but a bytecode archive must not replace a source
        z.writestr("app/firmware/mod.py", "VALUE = 666\n")
    path = bundle(tmp_path, signer, Bytecode(f"bytecode/{TAG}.zip", TAG, MAGIC), archive)
    with pytest.raises(slots.SlotError, match="not a module's bytecode"):
        install(tmp_path, path)
    assert not (tmp_path / "controller/opt/evse-agent/slots/b").exists()  # nothing installed

    entries = Manifest("1", "2026-01-01T00:00:00+00:00", ("rev-c",), "cp311", "x86_64", ())
    raw = json.loads(entries.to_json())
    for change, why in (({"format": 2}, "says format 2 but holds no bytecode"),
                        ({"format": 3}, "bundle format 3 is not supported"),
                        ({"format": 2, "bytecode": {"file": "bytecode/x.zip", "cache_tag": TAG, "magic": MAGIC,
                                                    "invalidation": "checked-hash"}}, "not one of its files")):
        with pytest.raises(BundleError, match=why):
            Manifest.from_json(json.dumps({**raw, **change}).encode())


def test_a_re_packed_bundle_with_the_bytecode_before_the_manifest_installs_alike(tmp_path: Path,
                                                                                  signer: Signer) -> None:
    path = built(tmp_path, signer)
    repacked = tmp_path / "repacked.tar"
    with tarfile.open(path) as tin, tarfile.open(repacked, "w") as tout:  # the signature covers no order
        members = sorted(tin.getmembers(), key=lambda m: not m.name.startswith("payload/bytecode/"))
        for m in members:
            tout.addfile(m, tin.extractfile(m))
    assert verify_bundle(repacked, [load_certificate(signer.ca_cert)]).manifest.format == 2
    slot = install(tmp_path, repacked)
    assert pyc(slot, "app/firmware/mod.py").is_file() and not (slot / "bytecode").exists()
    assert f"code object from '{pyc(slot, 'lib/tinylib/__init__.py')}'" in imports(slot)


def test_a_copy_that_is_not_the_verified_bundle_is_refused_and_nothing_is_installed(tmp_path: Path,
                                                                                   signer: Signer) -> None:
    """The bytes unpacked are hashed as they are read: a copy that is not the verified bundle is refused before
    its slot is renamed into place, and what it left in ``slots/b.new`` is removed."""
    path = built(tmp_path, signer)
    root = tmp_path / "controller"
    (root / "opt/evse-agent/slots/a").mkdir(parents=True)
    (root / "opt/evse-agent/slots/a/manifest.json").write_text('{"version": "1.0.0"}')
    slots.activate(str(root), "a")
    size = path.stat().st_size
    wrong = "0" * 64
    shutil.copyfile(path, slots.prepare_upload(str(root), wrong, size)["path"])
    with pytest.raises(slots.SlotError, match="does not match the verified bundle"):
        slots.install(str(root), wrong, size)
    assert sorted(p.name for p in (root / "opt/evse-agent/slots").iterdir()) == ["a"]  # no b, no b.new
    assert not (root / "opt/evse-agent/incoming" / f"{wrong}.part").exists()
