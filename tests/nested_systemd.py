"""A real systemd (the machine's, Debian 12: 252) as PID 1 of its own pid, mount and cgroup namespaces, to run
the units tools/flash.py installs exactly as a controller runs them, on a machine where systemd is not PID 1 (or
is, and must not be touched).

Its world: this machine's file systems (its mount namespace is private: a tmpfs on /run, the controller root's
account files bound over /etc/passwd and /etc/group so that ``User=evse-agent`` resolves), its own cgroup (a
child of the machine's cgroup2 tree, torn down with ``cgroup.kill``), and a unit path of the test's units, then
the ones systemd ships (``exit.target``, ``reboot.target``...) but not /etc/systemd/system: nothing the machine
enables comes along. It starts only ``check.target``; the test's units need ``DefaultDependencies=no`` (no
system boot around them). Its console goes nowhere: what a
unit prints goes where its ``StandardOutput=`` says.

Needs root with CAP_SYS_ADMIN, unshare(1) and a cgroup2 hierarchy we may add to; :func:`unavailable` says why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")


class NestedSystemdUnavailable(RuntimeError):
    """This machine could not host it (not a fault of the units it was to run)."""


def cgroup2_root() -> Path | None:
    """The machine's cgroup2 hierarchy: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid)."""
    for p in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (p / "cgroup.controllers").exists():
            return p
    return None


def unavailable() -> str | None:
    """Why a nested systemd cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root"
    if not SYSTEMD.exists() or shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "needs systemd, unshare and nsenter (Debian: systemd, util-linux)"
    if cgroup2_root() is None:
        return "no cgroup2 hierarchy"
    return None


@dataclass
class NestedSystemd:
    cgroup: Path
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int | None:
        """The nested systemd, as this machine numbers it (None once it has exited)."""
        try:
            procs = (self.cgroup / "init.scope/cgroup.procs").read_text().split()
        except OSError:
            return None
        return int(procs[0]) if procs else None

    async def unit_pids(self, unit: str) -> list[int]:
        try:
            return [int(p) for p in (self.cgroup / "system.slice" / unit / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    async def systemctl(self, *args: str) -> str:
        """systemctl in its namespaces (its /run/systemd/private); stdout."""
        pid = self.pid
        assert pid is not None, "the nested systemd is not running"
        proc = await asyncio.create_subprocess_exec("nsenter", "-t", str(pid), "-m", "-p", "systemctl", "--no-pager",
                                                    *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return out.decode()

    def path(self, inside: str) -> Path:
        """A path as the nested systemd sees it (its /run is its own)."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")


@contextlib.asynccontextmanager
async def nested_systemd(units: Path, passwd: Path, group: Path, binds: dict[Path, Path], *,
                         ready_timeout_s: float = 30.0) -> AsyncIterator[NestedSystemd]:
    """systemd with ``units`` first on its unit path, starting ``check.target``; ``binds``: target -> source,
    bind-mounted in its mount namespace before it starts (code a unit runs from a directory ProtectHome= would
    hide, say). Yields once it runs; kills it and its cgroup on the way out."""
    root = cgroup2_root()
    assert root is not None
    cgroup = root / f"evse-check-{os.getpid()}-{time.monotonic_ns()}"
    try:
        cgroup.mkdir()
    except OSError as exc:
        raise NestedSystemdUnavailable(f"cannot make a cgroup for it: {exc}") from None
    script = units / "nested-systemd.sh"
    mounts = "".join(f"mount --bind {src} {dst}\n" for dst, src in binds.items())
    script.write_text(f"""#!/bin/sh
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind {passwd} /etc/passwd
mount --bind {group} /etc/group
{mounts}mount --bind /dev/null /dev/console
export container=evse-agent-tests SYSTEMD_UNIT_PATH={units}:/lib/systemd/system
exec {SYSTEMD} --system --unit=check.target --log-level=warning
""")
    script.chmod(0o755)
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec unshare --pid --fork --mount --mount-proc --cgroup "
                    f"{script}", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    nested = NestedSystemd(cgroup, process)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while nested.pid is None or (await nested.systemctl("is-system-running")).strip() not in (
                "running", "degraded"):
            if process.returncode is not None or time.monotonic() > deadline:
                raise NestedSystemdUnavailable(f"it did not come up within {ready_timeout_s:g} s")
            await asyncio.sleep(0.1)
        yield nested
    finally:
        with contextlib.suppress(OSError):
            (cgroup / "cgroup.kill").write_text("1")
        await asyncio.wait_for(process.wait(), 10)
        deadline = time.monotonic() + 10
        while True:
            leftover = sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            with contextlib.suppress(OSError):
                for d in [*leftover, cgroup]:
                    d.rmdir()
            if not cgroup.exists() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
