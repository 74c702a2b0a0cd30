"""Where the agent is installed: a controller over SSH, or a controller's root filesystem in a directory.

Both run the same controller-side code (:mod:`firmware.maintenance.slots`): over SSH its source is sent to the
controller and run by the controller's Python (``python3 -S - OPERATION JSON``), with the system ``ssh`` client; for a
directory it is called in this process. A directory target is an SD card or a mounted image by default, where
nothing can be *run* (no health check, no self-test); ``--local-exec`` says the directory is a root this
machine can run (same architecture: a container image, a chroot, a test), and then commands run here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from firmware.maintenance import access, db_rollback, slots

CHUNK = 256 * 1024


def controller_script() -> bytes:
    """What ``python3 -S - OPERATION JSON`` runs on the controller: :mod:`slots` and the module it imports
    (standard library only), served to ``import`` from their sources by a finder of their own, then
    ``slots.main``. Nothing is installed on the controller for it."""
    sources = {"firmware": "", "firmware.maintenance": "",
               "firmware.maintenance.access": Path(access.__file__).read_text(),
               "firmware.maintenance.db_rollback": Path(db_rollback.__file__).read_text(),
               "firmware.maintenance.slots": Path(slots.__file__).read_text()}
    return f"""import importlib.abc, importlib.util, sys
SOURCES = {sources!r}
PACKAGES = ("firmware", "firmware.maintenance")
class Sources(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name not in SOURCES:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=name in PACKAGES)
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        exec(compile(SOURCES[module.__name__], "<evse-agent " + module.__name__ + ">", "exec"), module.__dict__)
sys.meta_path.insert(0, Sources())
from firmware.maintenance import slots
sys.exit(slots.main(sys.argv[1:]))
""".encode()


CONTROLLER_SCRIPT = controller_script()


class TargetError(Exception):
    """The controller could not be reached or refused; ``kind`` maps to an exit code (cli.EXIT_FOR_KIND)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Progress:
    """A transfer progress bar on stderr: redrawn in place on a terminal, a line per 25 % otherwise."""

    def __init__(self, total: int, done: int = 0, label: str = "transfer", out: Any = None) -> None:
        self.total, self.done, self.label = max(total, 1), done, label
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.started = time.monotonic()
        self.start_bytes = done
        self._last_draw = 0.0
        self._last_quarter = done * 4 // self.total

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        quarter = self.done * 4 // self.total
        if self.tty and now - self._last_draw >= 0.1:
            self._last_draw = now
            self.out.write("\r" + self.line())
            self.out.flush()
        elif not self.tty and quarter > self._last_quarter:
            self._last_quarter = quarter
            self.out.write(self.line() + "\n")

    def line(self) -> str:
        pct = self.done * 100 // self.total
        bar = "#" * (pct // 4) + " " * (25 - pct // 4)
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = (self.done - self.start_bytes) / elapsed / 1e6
        return f"{self.label} [{bar}] {pct:3d}% {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB {rate:.1f} MB/s"

    def finish(self) -> None:
        if self.tty:
            self.out.write("\r" + self.line() + "\n")
            self.out.flush()


@dataclass
class Target:
    url: str
    root: str  # the controller's "/" as seen by the controller-side code
    python: str = "python3"

    @property
    def can_execute(self) -> bool:
        return True

    @property
    def is_live(self) -> bool:
        """A running controller (not an image): its services can be stopped and started."""
        return self.root == "/"

    def call(self, operation: str, **args: Any) -> dict[str, Any]:
        raise NotImplementedError

    def shell(self, script: str, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        raise NotImplementedError

    def upload(self, local: Path, remote: str, offset: int, progress: Progress) -> None:
        raise NotImplementedError

    def path(self, rel: str) -> str:
        """``rel`` (relative to the root) as a path on the controller."""
        return str(Path(self.root) / rel)

    def firmware_command(self, slot_rel: str, args: list[str], account: dict[str, Any] | None) -> str:
        """A shell command running ``python -m firmware ARGS`` from a slot, with only that slot's code and
        libraries on the path (``-S``: the controller's own site-packages stay out), as the agent's user when the
        controller has it (``account``, from ``info``) with what of its unit applies outside systemd: its groups,
        no capabilities, no new privileges, umask 077. So a health check or self-test leaves nothing root owns in
        the agent's state directory, and fails where the agent would."""
        slot = self.path(slot_rel)
        run_as = ""
        if account is not None:
            groups = (f"--groups={','.join(map(str, account['groups']))}" if account["groups"]
                      else "--clear-groups")
            run_as = (f"setpriv --reuid={int(account['uid'])} --regid={int(account['gid'])} {groups} "
                      "--inh-caps=-all --bounding-set=-all --no-new-privs ")
        return (f"cd {shlex.quote(slot)} && umask 077 && PYTHONPATH={shlex.quote(slot + '/app:' + slot + '/lib')} "
                f"exec {run_as}{shlex.quote(self.python)} -S -m firmware " + " ".join(shlex.quote(a) for a in args))


@dataclass
class DirTarget(Target):
    local_exec: bool = False

    @property
    def can_execute(self) -> bool:
        return self.local_exec

    @property
    def is_live(self) -> bool:
        return False

    def call(self, operation: str, **args: Any) -> dict[str, Any]:
        if not Path(self.root).is_dir():
            raise TargetError("unreachable", f"{self.root} is not a directory: is the SD card mounted there?")
        return _answer(slots.call(operation, {"root": self.root, **args}))

    def shell(self, script: str, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["sh", "-c", script], capture_output=True, timeout=timeout_s, check=False)

    def upload(self, local: Path, remote: str, offset: int, progress: Progress) -> None:
        try:
            with local.open("rb") as src, open(remote, "ab") as dst:
                src.seek(offset)
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    progress.advance(len(chunk))
        except PermissionError:
            raise TargetError("permission", f"permission denied writing {remote}: run as a user who may write "
                              "to the card") from None
        except OSError as exc:
            raise TargetError("interrupted", f"transfer to {remote} failed: {exc.strerror or exc}; run flash again "
                              "to resume") from None
        progress.finish()


@dataclass
class SshTarget(Target):
    user: str = "root"
    host: str = ""
    port: int = 22
    ssh_options: list[str] = field(default_factory=list)  # e.g. ["-i", "key", "-o", "StrictHostKeyChecking=no"]
    connect_timeout_s: int = 10

    def _ssh(self) -> list[str]:
        return ["ssh", "-p", str(self.port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
                *self.ssh_options, f"{self.user}@{self.host}"]

    def _unreachable(self, stderr: bytes) -> TargetError:
        text = stderr.decode(errors="replace").strip().splitlines()
        why = text[-1] if text else "no answer"
        hint = ("check the address, the cable/network and that sshd runs" if "refused" in why or "timed out" in why
                else "check the user and the key (--ssh-key)" if "ermission denied" in why else "check the connection")
        return TargetError("unreachable", f"cannot reach the controller at {self.user}@{self.host}:{self.port}: "
                           f"{why} ({hint})")

    def call(self, operation: str, **args: Any) -> dict[str, Any]:
        # HUP ignored: an operation started on the controller finishes there even if the link drops meanwhile
        remote = "trap '' HUP; exec " + " ".join(shlex.quote(a) for a in (
            self.python, "-S", "-", operation, json.dumps({"root": self.root, **args})))
        try:
            proc = subprocess.run([*self._ssh(), remote], input=CONTROLLER_SCRIPT, capture_output=True, timeout=600,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise TargetError("unreachable", f"the controller did not finish '{operation}' within 600 s") from None
        if proc.returncode == 255:
            raise self._unreachable(proc.stderr)
        if proc.returncode == 127:
            raise TargetError("unreachable", f"'{self.python}' not found on the controller: install Python 3.11 "
                              "there or pass --python PATH")
        lines = proc.stdout.decode(errors="replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (IndexError, ValueError):
            err = proc.stderr.decode(errors="replace").strip()
            raise TargetError("io", f"the controller failed running '{operation}' (exit {proc.returncode}): "
                              f"{err[-500:]}") from None
        return _answer(answer)

    def shell(self, script: str, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run([*self._ssh(), script], capture_output=True, timeout=timeout_s, check=False)
        if proc.returncode == 255 and not proc.stdout:
            raise self._unreachable(proc.stderr)
        return proc

    def upload(self, local: Path, remote: str, offset: int, progress: Progress) -> None:
        proc = subprocess.Popen([*self._ssh(), f"cat >> {shlex.quote(remote)}"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stderr is not None
        try:
            with local.open("rb") as src:
                src.seek(offset)
                _pump(src, proc.stdin, progress)
            proc.stdin.close()
        except (BrokenPipeError, ConnectionError):
            pass  # the exit status and stderr below say why
        code = proc.wait()
        err = proc.stderr.read().decode(errors="replace").strip()
        if code != 0:
            if "ermission denied" in err and "cat:" in err:
                raise TargetError("permission", f"permission denied writing {remote} on the controller: log in "
                                  "as a user who may write there (root)")
            raise TargetError("interrupted", f"transfer interrupted at {progress.done / 1e6:.1f} of "
                              f"{progress.total / 1e6:.1f} MB ({err.splitlines()[-1] if err else f'exit {code}'}): "
                              "the active slot is untouched; run the same flash command again to resume")
        progress.finish()


def _pump(src: BinaryIO, dst: Any, progress: Progress) -> None:
    while chunk := src.read(CHUNK):
        dst.write(chunk)
        progress.advance(len(chunk))


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        raise TargetError(str(answer.get("kind", "io")), str(answer.get("error")))
    result: dict[str, Any] = answer["result"]
    return result


def parse_target(url: str, *, python: str = "python3", ssh_options: list[str] | None = None,
                 local_exec: bool = False) -> Target:
    """``ssh://user@host:port[/root]`` or ``dir:///path``; anything else is a usage error (ValueError)."""
    parts = urlsplit(url)
    if parts.scheme == "dir":
        if parts.netloc or not parts.path:
            raise ValueError(f"{url!r}: a directory target is dir:///absolute/path (three slashes)")
        return DirTarget(url, unquote(parts.path), python, local_exec=local_exec)
    if parts.scheme == "ssh":
        if not parts.hostname:
            raise ValueError(f"{url!r}: expected ssh://user@host[:port][/root-directory]")
        try:
            port = parts.port or 22
        except ValueError:
            raise ValueError(f"{url!r}: the port must be a number") from None
        root = unquote(parts.path) or "/"
        return SshTarget(url, root, python, user=parts.username or "root", host=parts.hostname, port=port,
                         ssh_options=list(ssh_options or []))
    raise ValueError(f"{url!r}: expected ssh://user@host[:port] or dir:///path")
