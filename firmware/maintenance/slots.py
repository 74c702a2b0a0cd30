"""A/B slots on the controller: install a bundle into the inactive slot, switch atomically, roll back.

This module runs ON THE CONTROLLER and uses the standard library only: ``tools/flash.py`` sends its source
(and that of :mod:`access`, which it imports) over SSH and runs it there as ``python3 -S - OPERATION JSON``
(so the controller needs nothing installed but a Python), or calls it in-process for a ``dir://`` target.
The agent's own updater will reuse it. Every operation takes the controller's root directory (``/`` on a
controller; a mounted SD card, or a test directory) and answers one JSON object. Layout (docs/technician-guide.md)::

    <root>/opt/evse-agent/slots/{a,b}/   app/ (firmware, hal), lib/ (unpacked wheels), manifest.json, ...
    <root>/opt/evse-agent/current        symlink -> slots/a: the active slot, switched by rename(2)
    <root>/opt/evse-agent/state.json     slot versions, the last health check, a short history
    <root>/opt/evse-agent/incoming/      <sha256>.part: a bundle being transferred (resumable)
    <root>/opt/evse-agent/snapshots/     before-<slot>.db: the agent's database before that slot first ran
    <root>/etc/evse-agent/               agent.toml (commissioning), hardware-revision

Everything here is root's and read-only to the agent, which runs as its own user (:mod:`access`); the one
operation the agent can ask for itself is :func:`apply_switch_request`, run by a privileged unit
(:mod:`firmware.maintenance.privileged`).

The active slot is never written to: a bundle is unpacked into ``slots/X.new``, checked in that same read
(SHA-256 of the bytes unpacked against the whole file's as verified by the tool or the agent; ``X.new`` removed
when they differ) and only renamed to ``slots/X`` when complete (every file and directory on disk first: one
``syncfs`` of its file system, per-file fsync where there is none), and ``current`` changes with one atomic
rename. A power cut at any moment leaves either the old or the new slot active, each complete.

The agent's database across versions (:mod:`db_rollback`): before a freshly installed slot is activated for the
first time its database is snapshotted; a switch back to the slot that was active then restores that snapshot
with what the new slot recorded carried into it, or is refused (the new slot stays active) when it cannot be.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import importlib.util
import io
import json
import os
import platform
import py_compile
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import tarfile
import time
import tomllib
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from firmware.maintenance import access, db_rollback

BASE = "opt/evse-agent"
ETC = "etc/evse-agent"
SLOTS = ("a", "b")
HISTORY = 20
CODE_DIR_MODE, CODE_FILE_MODE = 0o755, 0o644  # the agent (another user) reads its code; only root writes it
MAX_REQUEST = 64  # bytes of a switch request read: "a" or "b" and a newline


class SlotError(Exception):
    """An operation failed; ``kind`` tells the tool which exit code it is (permission, corrupt, state)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _base(root: str) -> Path:
    return Path(root) / BASE


def _read_state(root: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((_base(root) / "state.json").read_text())
    except FileNotFoundError:
        data = {}
    except ValueError:
        data = {"damaged_state_file": True}  # rebuilt from what is on disk below; never blocks a rollback
    data.setdefault("slots", {})
    data.setdefault("history", [])
    data.setdefault("last_health", None)
    return data


def _write_state(root: str, state: dict[str, Any]) -> None:
    path = _base(root) / "state.json"
    tmp = path.with_name("state.json.tmp")
    state.pop("damaged_state_file", None)
    with tmp.open("w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _log(state: dict[str, Any], event: str, **fields: Any) -> None:
    state["history"] = [*state["history"], {"at": _now(), "event": event, **fields}][-HISTORY:]


def active_slot(root: str) -> str | None:
    link = _base(root) / "current"
    try:
        target = os.readlink(link)
    except OSError:
        return None
    name = PurePosixPath(target).name
    return name if name in SLOTS else None


def _installed(root: str, slot: str) -> bool:
    return (_base(root) / "slots" / slot / "manifest.json").is_file()


def info(root: str) -> dict[str, Any]:
    """What the tool needs before flashing, and what ``status`` shows."""
    state = _read_state(root)
    base = _base(root)
    slots: dict[str, Any] = {}
    for s in SLOTS:
        entry = dict(state["slots"].get(s) or {})
        entry["installed"] = _installed(root, s)
        if entry["installed"] and "version" not in entry:
            try:
                entry["version"] = json.loads((base / "slots" / s / "manifest.json").read_text())["version"]
            except (OSError, ValueError, KeyError):
                entry["version"] = "unknown"
        slots[s] = entry
    incoming = {}
    if (base / "incoming").is_dir():
        incoming = {p.name: p.stat().st_size for p in (base / "incoming").iterdir() if p.is_file()}
    revision_file = Path(root) / ETC / "hardware-revision"
    revision = revision_file.read_text().strip() if revision_file.is_file() else None
    try:
        charging = db_rollback.open_transactions(database_path(root))
    except access.AccessError:  # the configuration cannot be read: commissioning will say so
        charging = []
    return {"root": root, "active": active_slot(root), "slots": slots, "last_health": state["last_health"],
            "open_transactions": charging,
            "history": state["history"], "incoming": incoming, "hardware_revision": revision,
            "commissioned": (Path(root) / ETC / "agent.toml").is_file(),
            "account": account.to_json() if (account := access.read_account(root)) else None,
            "python": f"cp{sys.version_info.major}{sys.version_info.minor}", "machine": platform.machine()}


def prepare_upload(root: str, sha256: str, size: int) -> dict[str, Any]:
    """Where the bundle goes, and from which offset to send it (a bigger or foreign .part starts over)."""
    incoming = _base(root) / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    part = incoming / f"{sha256}.part"
    for other in incoming.iterdir():  # an older, abandoned transfer: free the space
        if other != part:
            other.unlink()
    offset = part.stat().st_size if part.exists() else 0
    if offset > size:
        part.unlink()
        offset = 0
    return {"path": str(part), "offset": offset}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (also the bundle's file hashes: firmware/maintenance/bundle.py)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class HashingReader:
    """A bundle file read once, front to back, hashed on the way, for ``tarfile`` in its random-access mode iterated
    member by member (headers and data in file order): :meth:`finish` gives the SHA-256 of the whole file, and
    every byte handed out comes from that one hashed read — a seek forward hashes the bytes it skips (a member's end
    padding), a read back (tarfile's one-byte end-of-data probe) is served from the last bytes read, never from the
    file again. So what the caller parsed, checked or unpacked is exactly what the digest covers: no second read of
    the file, and no window in which it could change between the read that is hashed and the read that is used.
    (tarfile's stream mode does the same in principle; measured, its buffer copies cost more CPU than this.)"""

    KEPT = 64 * 1024  # the last bytes read, for reads back

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f  # only ever read forward: its position is always self.end
        self.hash = hashlib.sha256()
        self.end = 0  # bytes read from the file (and hashed)
        self.pos = 0  # the position the caller sees
        self.kept = b""

    def _consume(self, n: int) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        self.end += len(data)
        self.kept = data[-self.KEPT:] if len(data) >= self.KEPT else (self.kept + data)[-self.KEPT:]
        return data

    @property
    def size(self) -> int:
        """Bytes read from the file (its size once :meth:`finish` returned)."""
        return self.end

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence not in (0, 1):
            raise OSError("a bundle is read front to back")
        self.pos = offset if whence == 0 else self.pos + offset
        return self.pos

    def read(self, n: int = -1) -> bytes:
        out = b""
        if self.pos < self.end:  # a read back: from the bytes already hashed
            back = self.end - self.pos
            if back > len(self.kept):
                raise OSError(f"a bundle is read front to back (a read {back} bytes back)")
            out = self.kept[len(self.kept) - back:][:n if n >= 0 else None]
            self.pos += len(out)
            if n >= 0:
                n -= len(out)
                if n == 0:
                    return out
        while self.pos > self.end:  # skipped bytes are hashed too
            if not self._consume(min(self.pos - self.end, 1 << 20)):
                return out
        data = self._consume(n)
        self.pos += len(data)
        return out + data

    def finish(self) -> str:
        """Read what is left (a tar's end padding) and return the whole file's hex SHA-256."""
        self.seek(max(self.pos, self.end))
        while self._consume(1 << 20):
            pass
        return self.hash.hexdigest()


def _safe(rel: str) -> bool:
    """A relative POSIX path that stays below where it is joined (strings, not pathlib: called per file)."""
    return bool(rel) and not rel.startswith("/") and ".." not in rel.split("/")


class _NotTheVerifiedBundle(SlotError):
    def __init__(self) -> None:
        super().__init__("corrupt", "the bundle on the controller does not match the verified bundle (SHA-256): "
                         "the copy was damaged in transfer and has been deleted; run flash again")


def _unpack(bundle: Path, dest: Path, sha256: str) -> dict[str, Any]:
    """Regular files only, no path leaving ``dest``: meta files at the top, payload/ below it; all on disk when it
    returns. Raises :class:`_NotTheVerifiedBundle` when the bytes unpacked are not the bundle ``sha256`` names."""
    flush = _TreeFlush(dest)  # opened before the first write: a writeback error from then on is reported
    try:
        manifest = _unpack_files(bundle, dest, sha256)
        flush.wait()
    finally:
        flush.close()
    return manifest


def _unpack_files(bundle: Path, dest: Path, sha256: str) -> dict[str, Any]:
    """The meta files and the agent's own files are written into the slot, each wheel is unpacked into ``lib/``
    straight from the tar (the slot keeps no copy of the wheels), the shipped bytecode (bundle format 2) goes next
    to the modules; then whatever module still has no bytecode for this Python is compiled
    (:func:`_compile_missing`).

    One sequential read of the bundle (:class:`HashingReader`, member by member), hashed on the way: the
    SHA-256 of the very bytes unpacked must be the verified bundle's before anything else happens to the slot
    (compiling, the flush, the rename into place), so what is installed is exactly what was verified, with no
    separate hash pass over the file and no window between a check and the read that is used. Until then the
    files are in ``slots/X.new`` only, which :func:`install` removes when they are not the verified bundle. A
    payload member met before the manifest (the signature covers no order) that may be its bytecode is held in
    memory until the manifest says."""
    sources: list[str] = []  # the modules written, relative to the slot
    compiled: set[str] = set()  # the bytecode files written, relative to the slot
    made: set[str] = set()
    manifest: dict[str, Any] | None = None
    bytecode: str | None = None
    held: list[tuple[str, bytes]] = []  # payload members before the manifest that may be its bytecode

    def place(rel: str, src: IO[bytes] | bytes, payload: bool) -> None:
        if payload and rel == bytecode:
            assert manifest is not None
            compiled.update(_unzip_bytecode(src if isinstance(src, bytes) else src.read(), dest, manifest, made))
        else:
            _write(os.path.join(dest, rel), src, made)
            if rel.endswith(".py"):
                sources.append(rel)

    try:
        with bundle.open("rb") as raw:
            reader = HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r:") as tar:  # type: ignore[call-overload]
                for m in tar:  # member by member, in file order (getmembers() first would read it all twice)
                    payload = m.name.startswith("payload/")
                    rel = m.name[len("payload/"):] if payload else m.name
                    if not m.isfile() or not _safe(rel):
                        raise SlotError("corrupt", f"bundle member {m.name!r} is not a plain relative file")
                    src = _member(tar, m)
                    if m.name == "manifest.json" and manifest is None:
                        data = src.read()
                        manifest = json.loads(data)
                        bytecode = _bytecode_file(manifest)
                        _write(os.path.join(dest, rel), data, made)
                        for held_rel, content in held:
                            place(held_rel, content, True)
                        held.clear()
                    elif payload and rel.startswith("wheels/") and rel.endswith(".whl"):
                        # a wheel without *.data (checked at build time) installs by unpacking it
                        sources += ["lib/" + n for n in _unzip(src.read(), os.path.join(dest, "lib"), made)
                                    if n.endswith(".py")]
                    elif payload and manifest is None:
                        held.append((rel, src.read()))
                    else:
                        place(rel, src, payload)
            digest = reader.finish()
    except (tarfile.TarError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        if sha256_file(bundle) != sha256:  # a verified bundle is a readable tar: this copy is not it
            raise _NotTheVerifiedBundle() from None
        raise SlotError("corrupt", f"the bundle cannot be unpacked ({exc})") from None
    if digest != sha256:
        raise _NotTheVerifiedBundle()
    if manifest is None:
        raise SlotError("corrupt", "the bundle holds no manifest.json")
    _compile_missing(dest, sources, compiled)
    _readable_by_agent(dest)
    return manifest


def _member(tar: tarfile.TarFile, m: tarfile.TarInfo) -> IO[bytes]:
    f = tar.extractfile(m)
    assert f is not None  # regular files only, checked before
    return f


def _bytecode_file(manifest: dict[str, Any]) -> str | None:
    bytecode = manifest.get("bytecode") if manifest.get("format", 1) >= 2 else None
    return str(bytecode["file"]) if isinstance(bytecode, dict) else None


def _unzip_bytecode(archive: bytes, dest: Path, manifest: dict[str, Any], made: set[str]) -> list[str]:
    """The shipped bytecode into the slot, unless it claims this Python's cache tag with another bytecode magic (a
    pre-release's: this interpreter would reject every file, and recompile at each start). Bytecode for another tag
    is placed too: Python ignores it, and it is what the controller runs when this is not the controller (a card
    written on a laptop); :func:`_compile_missing` then compiles for this Python."""
    bytecode = manifest["bytecode"]
    tag = str(bytecode["cache_tag"])
    if tag == sys.implementation.cache_tag and bytecode.get("magic") != importlib.util.MAGIC_NUMBER.hex():
        return []
    return _unzip(archive, str(dest), made, bytecode_of=tag)


def _write(out: str, src: IO[bytes] | bytes, made: set[str]) -> None:
    """``src`` (a file or its bytes) into the new file ``out``, its directory made once (``made``: the directories
    known to exist)."""
    parent = os.path.dirname(out)
    if parent not in made:
        os.makedirs(parent, exist_ok=True)
        made.add(parent)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, CODE_FILE_MODE)
    try:
        chunks = (src,) if isinstance(src, bytes) else iter(lambda: src.read(1 << 20), b"")
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    finally:
        os.close(fd)


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length


def _unzip(archive: bytes, dest: str, made: set[str], bytecode_of: str | None = None) -> list[str]:
    """Every file of the zip ``archive`` under ``dest`` (its names, relative to ``dest``); none may leave it.
    ``bytecode_of``: the archive is the shipped bytecode, and may hold nothing but ``__pycache__/*.<cache tag>.pyc``.

    Each member is inflated in one call from the archive's bytes (not through :class:`zipfile.ZipExtFile`, whose
    per-read overhead and CRC pass took about a third of the unpacking here): the archive is part of a bundle whose
    SHA-256 is checked, so the CRC adds nothing; the sizes still are."""
    names = []
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        for info in z.infolist():
            name = info.filename
            if not _safe(name):
                raise SlotError("corrupt", f"archive member {name!r} leaves the slot")
            if info.is_dir():
                continue
            if bytecode_of is not None and not _is_bytecode_path(name, bytecode_of):
                raise SlotError("corrupt", f"the bundle's bytecode holds {name!r}, which is not a module's bytecode")
            _write(os.path.join(dest, name), _inflate(z, info, archive), made)
            names.append(name)
    return names


def _inflate(z: zipfile.ZipFile, info: zipfile.ZipInfo, archive: bytes) -> bytes:
    signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(archive, info.header_offset)
    if signature != b"PK\x03\x04" or info.flag_bits & 0x1:  # not a local header, or encrypted
        raise zipfile.BadZipFile(f"member {info.filename!r}: no local header where the directory says")
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    raw = archive[start:start + info.compress_size]
    if info.compress_type == zipfile.ZIP_DEFLATED:
        content = zlib.decompress(raw, -15, max(info.file_size, 1))
    elif info.compress_type == zipfile.ZIP_STORED:
        content = raw
    else:  # bzip2, lzma: not in wheels as pip builds them, but zipfile knows how
        content = z.read(info)
    if len(content) != info.file_size:
        raise zipfile.BadZipFile(f"member {info.filename!r}: {len(content)} bytes, the directory says "
                                 f"{info.file_size}")
    return content


def _is_bytecode_path(name: str, cache_tag: str) -> bool:
    parts = name.split("/")
    return parts[0] in ("app", "lib") and len(parts) >= 3 and parts[-2] == "__pycache__" and \
        parts[-1].endswith(f".{cache_tag}.pyc")


def _compile_missing(dest: Path, sources: list[str], compiled: set[str]) -> None:
    """Compile, once, every module without shipped bytecode for this Python (all of them for a format-1 bundle or
    bytecode for another Python): the agent's user may not write its own code, so it could not cache bytecode
    itself and would compile every module at every start. Hash-checked, like the shipped bytecode: valid whatever
    the files' times. A module that does not compile (e.g. a library's file for another Python) is left as
    ``compileall`` leaves it."""
    tag = sys.implementation.cache_tag
    with warnings.catch_warnings():  # a library's SyntaxWarnings are not the installer's output
        warnings.simplefilter("ignore")
        for rel in sources:
            folder, name = os.path.split(rel)
            cached = os.path.join(folder, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            if cached in compiled:
                continue
            try:
                py_compile.compile(os.path.join(dest, rel), cfile=os.path.join(dest, cached), dfile=rel,
                                   doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            except py_compile.PyCompileError:
                continue


def _syncfs_call() -> Any:
    """libc's ``syncfs(fd)`` (Linux), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


class _TreeFlush:
    """Everything written under a directory on disk, before the slot is renamed into place: a power cut after the
    rename must not find a complete-looking slot of empty or torn files.

    One ``syncfs(2)`` of the directory's file system writes back every dirty file, directory and the journal, and
    waits for it (measured: ~40 ms for a full bundle's 1,600 files against ~670 ms for an fsync of each one,
    docs/firmware-update.md). It is opened before the files are written because syncfs reports (Linux >= 5.8) the
    writeback errors of its file system since the descriptor was opened: a failed write is an error here, not a
    silently torn slot. Where there is no syncfs (or it fails as unsupported), each file and directory is
    fsynced."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)

    def wait(self) -> None:
        syncfs = _syncfs_call()
        if syncfs is not None:
            if syncfs(self.fd) == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.ENOSYS, errno.EOPNOTSUPP):
                raise OSError(err, f"syncfs of {self.top}: {os.strerror(err)}")
        _fsync_tree(self.top)

    def close(self) -> None:
        os.close(self.fd)


def _fsync_tree(top: Path) -> None:
    """Every file and directory under ``top`` on disk, one by one (where there is no syncfs)."""
    for dirpath, _, filenames in os.walk(top):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _readable_by_agent(dest: Path) -> None:
    """Explicit modes, whatever the umask of the login that installs: the agent's user must read every file."""
    for dirpath, _, filenames in os.walk(dest):
        os.chmod(dirpath, CODE_DIR_MODE)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), CODE_FILE_MODE)


def install(root: str, sha256: str, size: int, request_id: str | None = None) -> dict[str, Any]:
    """Check the transferred bundle, then unpack it into the inactive slot (never the active one). ``request_id``:
    the agent's (:func:`apply_install_request`), recorded with the outcome."""
    base = _base(root)
    part = base / "incoming" / f"{sha256}.part"
    if not part.is_file() or part.stat().st_size != size:
        got = part.stat().st_size if part.is_file() else 0
        raise SlotError("incomplete", f"the bundle on the controller is incomplete ({got} of {size} bytes): "
                        "run flash again to resume")
    active = active_slot(root)
    slot = next(s for s in SLOTS if s != active)
    target = base / "slots" / slot
    staging = base / "slots" / f"{slot}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.monotonic()
    try:  # checked against sha256 in the same read as it is unpacked: nothing unverified reaches slots/X
        manifest = _unpack(part, staging, sha256)
    except _NotTheVerifiedBundle:
        shutil.rmtree(staging, ignore_errors=True)
        part.unlink()
        raise
    state = _read_state(root)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    part.unlink()
    state["slots"][slot] = {"version": manifest.get("version", "unknown"), "built_at": manifest.get("built_at"),
                            "installed_at": _now(), "bundle_sha256": sha256, "health": "not checked"}
    _log(state, "installed", slot=slot, version=manifest.get("version"),
         **({"request": request_id} if request_id else {}))
    _write_state(root, state)
    return {"slot": slot, "version": manifest.get("version"), "active": active,
            "unpack_s": round(time.monotonic() - started, 2)}


def database_path(root: str) -> Path:
    """The agent's database, as the controller at ``root`` has it (storage.dir of the commissioned configuration)."""
    return access.on_root(root, access.configured_state_dir(root)) / db_rollback.DB_NAME


def _database_for_switch(root: str, state: dict[str, Any], previous: str | None, slot: str) -> dict[str, Any] | None:
    """Before the switch from ``previous`` to ``slot``: the snapshot when ``slot`` runs for the first time since it
    was installed, the restore when ``slot`` is the one the active slot's snapshot was taken from (a rollback).
    Raises :class:`SlotError` ("refused") when the restore cannot be done: the switch must not happen then."""
    entry = state["slots"].get(slot) or {}
    snapshots: dict[str, Any] = state.setdefault("snapshots", {})
    if previous == slot:
        return None
    if not entry.get("activated_at"):
        db = database_path(root)
        folder = _base(root) / "snapshots"
        taken = db_rollback.take_snapshot(db, folder / f"before-{slot}.db")
        snapshots.clear()
        if taken is not None:
            snapshots[slot] = {**taken, "from_slot": previous}
        if folder.is_dir():
            for old in folder.iterdir():  # only the snapshot of the latest first run is kept
                if old.name != f"before-{slot}.db":
                    old.unlink()
        return {"snapshot": taken}
    snap = snapshots.get(str(previous))
    if previous is None or snap is None or snap.get("from_slot") != slot:
        return None
    try:
        restored = db_rollback.restore(database_path(root), snap)
    except db_rollback.RestoreRefused as exc:
        raise SlotError("refused", f"not switching back to slot {slot}: the database cannot be restored for it: "
                        f"{exc}") from None
    if restored["restored"]:
        (state["slots"].get(str(previous)) or {}).pop("activated_at", None)  # it migrates again if switched to
    return {"restore": restored}


def activate(root: str, slot: str, reason: str = "activated") -> dict[str, Any]:
    """Point ``current`` at ``slot`` with one atomic rename, the agent's database made ready for it first
    (:func:`_database_for_switch`). The agent must not be running when this switches back to an older slot."""
    if slot not in SLOTS or not _installed(root, slot):
        raise SlotError("state", f"slot {slot!r} holds no installed agent")
    base = _base(root)
    previous = active_slot(root)
    state = _read_state(root)
    try:
        database = _database_for_switch(root, state, previous, slot)
    except SlotError as exc:
        _log(state, "switch refused", slot=slot, reason=str(exc))
        _write_state(root, state)
        raise
    tmp = base / "current.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(f"slots/{slot}", tmp)
    os.replace(tmp, base / "current")
    _fsync_dir(base)
    state["active"] = slot
    if slot in state["slots"]:
        state["slots"][slot].setdefault("activated_at", _now())
    fields: dict[str, Any] = {}
    if database and database.get("restore", {}).get("restored"):
        r = database["restore"]
        fields = {"database": f"restored schema {r['schema']} (from {r['from_schema']}), carried {r['rows']}"}
    elif database and database.get("snapshot"):
        fields = {"database": f"snapshot of schema {database['snapshot']['schema']} taken"}
    _log(state, reason, slot=slot, previous=previous, version=(state["slots"].get(slot) or {}).get("version"),
         **fields)
    _write_state(root, state)
    return {"active": slot, "previous": previous, "database": database}


def deactivate(root: str, reason: str) -> dict[str, Any]:
    """No slot active (``current`` removed): the unit has nothing to run. Only for a first install that failed its
    check, so that no broken agent runs; the next flash activates what it installs."""
    base = _base(root)
    previous = active_slot(root)
    (base / "current").unlink(missing_ok=True)
    _fsync_dir(base)
    state = _read_state(root)
    state["active"] = None
    _log(state, reason, slot=previous)
    _write_state(root, state)
    return {"active": None, "previous": previous}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rollback(root: str) -> dict[str, Any]:
    """Back to the other slot, if it holds an agent."""
    active = active_slot(root)
    other = next(s for s in SLOTS if s != active)
    if not _installed(root, other):
        raise SlotError("state", f"nothing to roll back to: slot {other} holds no agent (only slot {active} does)")
    return activate(root, other, "rolled back")


def record_health(root: str, slot: str, result: dict[str, Any]) -> dict[str, Any]:
    state = _read_state(root)
    health = {"slot": slot, "version": (state["slots"].get(slot) or {}).get("version"), "at": _now(), **result}
    state["last_health"] = health
    if slot in state["slots"]:
        ok = result.get("ok")
        state["slots"][slot]["health"] = "passed" if ok else "not run" if ok is None else "FAILED"
    _log(state, "health check", slot=slot, ok=result.get("ok"))
    _write_state(root, state)
    return health


def switch_and_check(root: str, slot: str, health_command: str, timeout_s: float,
                     service: str | None = None, helpers: list[str] | None = None) -> dict[str, Any]:
    """Activate ``slot``, run the health check (``health_command`` prints its JSON), record the result, and switch
    back to the previous slot if it failed; then (re)start ``service`` under systemd, if given, and start its
    ``helpers`` (the path units of the privileged requests). All of it here,
    on the controller, in one process that ignores a hang-up: a link to the laptop lost half-way cannot leave an
    unchecked agent active — the controller finishes by itself and ``status`` shows the outcome."""
    previous = active_slot(root)
    activate(root, slot)
    result = _run_health(health_command, timeout_s)
    record_health(root, slot, result)
    rolled_back = refused = database = None
    deactivated = False
    if not result.get("ok") and previous not in (None, slot) and _installed(root, str(previous)):
        try:
            database = activate(root, str(previous), "rolled back (health check failed)")["database"]
            rolled_back = previous
        except SlotError as exc:  # the older agent could not open the database the new one left
            refused = str(exc)
    elif not result.get("ok") and previous is None:  # a failed first install is not left to run
        deactivate(root, "deactivated (first install failed its health check)")
        deactivated = True
    if service is not None and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        subprocess.run(["systemctl", "enable", service], check=False, capture_output=True)
        if not deactivated:
            subprocess.run(["systemctl", "restart", service], check=False)
        for unit in helpers or []:
            subprocess.run(["systemctl", "enable", "--now", unit], check=False, capture_output=True)
    return {"health": result, "rolled_back_to": rolled_back, "previous": previous, "rollback_refused": refused,
            "database": database, "deactivated": deactivated}


def _run_health(command: str, timeout_s: float) -> dict[str, Any]:
    proc = subprocess.Popen(["sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the check and the agent it started: its own process group
        proc.communicate()
        return {"ok": False, "stage": "start", "detail": f"the health check did not finish within {timeout_s:g} s"}
    try:
        data = json.loads(out)
        return {k: data[k] for k in ("ok", "stage", "detail", "ready_after_s", "watchdog_pings")}
    except (ValueError, KeyError, TypeError):
        tail = " | ".join(err.decode(errors="replace").strip().splitlines()[-6:])
        return {"ok": False, "stage": "start", "detail": f"the new agent could not run its health check (exit "
                f"{proc.returncode}): {tail}"}


def _refuse(root: str, why: str) -> dict[str, Any]:
    state = _read_state(root)
    _log(state, "switch refused", reason=why)
    _write_state(root, state)
    return {"switched": False, "refused": why}


def _read_request(path: Path) -> bytes:
    """The request, from a file in a directory the agent owns: not through a link, a regular file, a few bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SlotError("state", "the request is not a plain file")
        return os.read(fd, MAX_REQUEST + 1)
    finally:
        os.close(fd)


CONFIRM_FILE = "slot-confirmed"  # beside the switch request: the new agent's word that it is up and accepted


class AgentService(Protocol):
    """How the agent is stopped and started around a switch when it is not a systemd unit (the simulator's
    supervisor): ``stop`` returns once no agent process runs; ``start`` lets it run again."""

    def stop(self) -> None: ...

    def start(self) -> None: ...


def _stop_agent(service: str | AgentService | None) -> None:
    if isinstance(service, str):
        if shutil.which("systemctl") is not None:
            subprocess.run(["systemctl", "stop", service], check=False)
    elif service is not None:
        service.stop()


def _start_agent(service: str | AgentService | None) -> None:
    if isinstance(service, str):
        if shutil.which("systemctl") is not None:
            subprocess.run(["systemctl", "--no-block", "start", service], check=False)
    elif service is not None:
        service.start()


def apply_switch_request(root: str, request: str, service: str | AgentService | None = None,
                         confirm_timeout_s: float | None = None) -> dict[str, Any]:
    """The privileged half of the agent's A/B switch: ``evse-agent-switch.service`` runs this as root when the agent
    (its user cannot write the slots) has written ``request`` (firmware/maintenance/privileged.py). Narrow on
    purpose: the request names a slot and nothing else; only a slot holding an installed agent that did not fail
    its health check is switched to; then the agent is restarted from it (``service``, if given: a systemd unit, or
    an :class:`AgentService` such as the simulator's supervisor).
    The request is consumed whatever its fate; refusals are in the history (``status``).

    ``confirm_timeout_s``: a slot's first run must be confirmed by the new agent (``slot-confirmed`` beside the
    request, naming the slot) within this time, else it is switched back (database restored) and marked FAILED —
    a new agent that cannot even start, which would otherwise be restarted by systemd forever, is rolled back
    here. A switch request written meanwhile (the new agent giving up on itself) ends the wait the same way."""
    path = Path(request)
    try:
        data = _read_request(path)
    except FileNotFoundError:
        return {"switched": False, "refused": "no request"}
    except (OSError, SlotError) as exc:
        data, error = b"", str(getattr(exc, "strerror", None) or exc)
    else:
        error = ""
    finally:
        path.unlink(missing_ok=True)
    slot = data.decode("ascii", errors="replace").strip()
    if error or slot not in SLOTS or len(data) > MAX_REQUEST:
        return _refuse(root, f"not a request for slot a or b ({error or repr(data[:MAX_REQUEST])})")
    if not _installed(root, slot):
        return _refuse(root, f"slot {slot} holds no installed agent")
    if (_read_state(root)["slots"].get(slot) or {}).get("health") == "FAILED":
        return _refuse(root, f"slot {slot} failed its health check")
    if active_slot(root) == slot:
        return {"switched": False, "refused": f"slot {slot} is already active"}
    path.with_name(CONFIRM_FILE).unlink(missing_ok=True)  # a word from an earlier switch must not confirm this one
    _stop_agent(service)  # a switch back restores the database: the agent must not be writing it meanwhile
    try:
        result = {"switched": True, **activate(root, slot, "switched (requested by the agent)")}
    except (SlotError, access.AccessError) as exc:  # refused; in the history already, or the configuration's
        result = {"switched": False, "refused": str(exc)}
    except (OSError, sqlite3.Error) as exc:  # the database could not be snapshotted: no switch without one
        result = _refuse(root, f"the agent's database could not be snapshotted or restored: {exc}")
    finally:
        _start_agent(service)  # whatever happened, the agent runs again (from whichever slot is active)
    if needs_confirmation(result) and confirm_timeout_s is not None:
        result["confirmed"] = await_confirmation(root, path, slot, str(result.get("previous")), service,
                                                 confirm_timeout_s)
    return result


def needs_confirmation(result: dict[str, Any]) -> bool:
    """A switch (:func:`apply_switch_request`'s result) into a slot's first run since it was installed: its agent
    must confirm itself (:func:`await_confirmation`)."""
    return bool(result.get("switched")) and "snapshot" in (result.get("database") or {})


def await_confirmation(root: str, request: Path, slot: str, previous: str, service: str | AgentService | None,
                       timeout_s: float) -> bool:
    """After a switch into ``slot``'s first run: wait for its agent's ``slot-confirmed`` (beside ``request``); without
    it within ``timeout_s``, or when the agent asks to go back (a new ``request``), stop the agent, switch back to
    ``previous`` (the database restored), mark ``slot`` FAILED and start the agent again. True when confirmed."""
    confirm = request.with_name(CONFIRM_FILE)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not request.exists():
        try:
            if confirm.read_bytes()[:MAX_REQUEST].decode("ascii", errors="replace").strip() == slot:
                confirm.unlink(missing_ok=True)
                record_health(root, slot, {"ok": True, "stage": "passed", "detail": "confirmed by the new agent"})
                return True
        except OSError:
            pass
        time.sleep(0.5)
    detail = ("the new agent asked to go back" if request.exists() else
              f"the new agent did not confirm within {timeout_s:g} s")
    record_health(root, slot, {"ok": False, "stage": "running", "detail": detail})
    if previous not in SLOTS or not _installed(root, previous):
        return False
    _stop_agent(service)
    try:
        activate(root, previous, f"rolled back ({detail})")
    except (SlotError, OSError, sqlite3.Error) as exc:
        state = _read_state(root)
        _log(state, "rollback refused", slot=previous, reason=str(exc))
        _write_state(root, state)
    finally:
        request.unlink(missing_ok=True)  # the agent's own request to go back is done now
        _start_agent(service)
    return False


DOWNLOADS = "firmware-download"  # in the agent's state dir: <sha256>.bundle, what it asks to install
MAX_INSTALL_REQUEST = 128


def _install_refused(root: str, request_id: str, why: str) -> dict[str, Any]:
    state = _read_state(root)
    _log(state, "install refused", request=request_id, reason=why)
    _write_state(root, state)
    return {"installed": False, "request": request_id, "refused": why}


def _copy_out(src: Path, dest: Path) -> None:
    """The agent's file, read through no link, into root's ``dest`` (the agent cannot change it afterwards)."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SlotError("state", f"{src} is not a plain file")
        with os.fdopen(os.dup(fd), "rb") as f, dest.open("wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd)


def apply_install_request(root: str, request: str) -> dict[str, Any]:
    """The privileged half of the agent's install (``evse-agent-install.service``, root): the request names a
    bundle by its SHA-256; the bundle, in the agent's state dir, is copied out of its reach, checked against that
    hash, verified again — signature against the trust anchor the configuration names (``[firmware] trust``,
    root's) and the controller's hardware revision, as the technician's tool does — and unpacked into the inactive
    slot. The outcome is in ``state.json`` (the slot's ``bundle_sha256``, or ``install refused`` and why).
    Needs the slot's libraries (cryptography) on the path: the unit runs it from ``current/app:current/lib``."""
    path = Path(request)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            data = os.read(fd, MAX_INSTALL_REQUEST + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        finally:
            os.close(fd)
    except FileNotFoundError:
        return {"installed": False, "refused": "no request"}
    except OSError as exc:
        data = f"unreadable: {exc.strerror}".encode()
    finally:
        path.unlink(missing_ok=True)
    sha256, _, request_id = data.decode("ascii", errors="replace").strip().partition(" ")
    if not (len(sha256) == 64 and len(request_id) == 32 and all(c in "0123456789abcdef" for c in sha256 + request_id)):
        return _install_refused(root, "", f"not a request naming a bundle by its SHA-256 ({data[:80]!r})")
    from firmware.maintenance.bundle import BundleError, verify_bundle  # the slot's cryptography: only here
    try:
        config = tomllib.loads((Path(root) / access.CONFIG).read_text())
    except (OSError, ValueError) as exc:
        return _install_refused(root, request_id, f"the configuration cannot be read: {exc}")
    trust_path = (config.get("firmware") or {}).get("trust")
    if not isinstance(trust_path, str):
        return _install_refused(root, request_id, "the configuration names no [firmware] trust anchor")
    try:
        from cryptography import x509
        trust = x509.load_pem_x509_certificates(access.on_root(root, trust_path).read_bytes())
    except (OSError, ValueError) as exc:
        return _install_refused(root, request_id, f"the trust anchor {trust_path} cannot be read: {exc}")
    state_dir = access.on_root(root, access.configured_state_dir(root))
    upload = prepare_upload(root, sha256, 1 << 62)
    part = Path(upload["path"])
    try:
        _copy_out(state_dir / DOWNLOADS / f"{sha256}.bundle", part)
    except (OSError, SlotError) as exc:
        return _install_refused(root, request_id, f"the bundle cannot be read: {exc}")
    revision_file = Path(root) / ETC / "hardware-revision"
    revision = revision_file.read_text().strip() if revision_file.is_file() else None
    try:
        verified = verify_bundle(part, trust, hardware_revision=revision)
    except BundleError as exc:
        part.unlink(missing_ok=True)
        return _install_refused(root, request_id, str(exc))
    if verified.sha256 != sha256:
        part.unlink(missing_ok=True)
        return _install_refused(root, request_id, "the bundle does not match the verified bundle the request names "
                                "(SHA-256)")
    try:
        result = install(root, sha256, part.stat().st_size, request_id)
    except SlotError as exc:
        return _install_refused(root, request_id, str(exc))
    return {"installed": True, "request": request_id, **result}


def write_file(root: str, path: str, text: str, mode: int = 0o644, link_from: str | None = None,
               group: str | None = None) -> dict[str, Any]:
    """Write ``<root>/<path>`` atomically (temp file + rename). ``link_from``: also make that symlink point to
    ``/<path>`` (enabling a systemd unit is such a link). ``group``: the file's group, if the controller has it
    (else root's, and no permission for the group: the secret stays root's until :func:`access.secure`)."""
    if not _safe(path):
        raise SlotError("state", f"{path!r} is not a path relative to the root")
    dest = Path(root) / path
    tmp = dest.with_name(dest.name + ".tmp")
    gid = access.group_id(root, group) if group is not None else 0
    if gid is None:
        gid, mode = 0, mode & 0o700
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            os.fchown(f.fileno(), 0, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except PermissionError as exc:  # name the file the technician knows, not our temporary one
        raise PermissionError(exc.errno, exc.strerror, str(dest)) from None
    if link_from is not None:
        link = Path(root) / link_from
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink("/" + path, link)
    return {"written": str(dest)}


def write_files(root: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Several :func:`write_file` in one call (one round trip over SSH)."""
    return {"written": [write_file(root, **f)["written"] for f in files]}


OPERATIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "info": info, "prepare_upload": prepare_upload, "install": install, "activate": activate,
    "rollback": rollback, "record_health": record_health, "write_file": write_file, "write_files": write_files,
    "switch_and_check": switch_and_check, "deactivate": deactivate, "secure": access.secure,
    "apply_switch_request": apply_switch_request, "apply_install_request": apply_install_request}


def call(operation: str, args: dict[str, Any]) -> dict[str, Any]:
    """One operation; failures come back as ``{"ok": false, "kind": ..., "error": ...}``, never a traceback."""
    try:
        return {"ok": True, "result": OPERATIONS[operation](**args)}
    except (SlotError, access.AccessError) as exc:
        return {"ok": False, "kind": exc.kind, "error": str(exc)}
    except PermissionError as exc:
        return {"ok": False, "kind": "permission", "error": f"permission denied writing {exc.filename} on the "
                "controller: log in as a user who may write there (root), or fix its owner"}
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return {"ok": False, "kind": "io", "error": f"cannot write{where} on the controller: {exc.strerror or exc}"}
    except (tarfile.TarError, zipfile.BadZipFile, ValueError) as exc:
        return {"ok": False, "kind": "corrupt", "error": f"the bundle cannot be unpacked: {exc}"}


def main(argv: list[str]) -> int:
    answer = call(argv[0], json.loads(argv[1]))
    print(json.dumps(answer))
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
