"""A controller's root filesystem in a directory, and its serial ports, for tests that install the agent there.

The root has what a Debian image has for the agent's account (``etc/passwd``, ``etc/group`` with ``dialout``,
``etc/shadow``, ``etc/gshadow``: commissioning creates the agent's user in them with ``useradd --prefix``), and
lies in a directory every user may pass through, so that the agent's user (a number this machine does not
otherwise know) reaches its slot and state, as it does under ``/`` on a controller. The simulator's serial ports
(ptys) get what udev gives a controller's UARTs: group ``dialout``, mode 0660.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sim.harness.charger import SimulatedCharger

SERIAL_GROUP = "dialout"


def dialout_gid() -> int:
    return grp.getgrnam(SERIAL_GROUP).gr_gid


def make_root(root: Path) -> Path:
    """An empty controller root at ``root``: the account databases only (root, and the serial ports' group)."""
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text(f"root:x:0:\n{SERIAL_GROUP}:x:{dialout_gid()}:\n")
    for name in ("shadow", "gshadow"):
        (root / "etc" / name).write_text("root:*::0:99999:7:::\n" if name == "shadow" else "root:*::\n")
        (root / "etc" / name).chmod(0o640)
    return root


@contextlib.contextmanager
def traversable_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp that other users may pass through (pytest's own are root's alone)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def grant_serial_ports(sim: SimulatedCharger, gid: int | None = None) -> list[str]:
    """The ports the agent opens (the host side of each wire) as udev makes a controller's: root:dialout 0660."""
    gid = dialout_gid() if gid is None else gid
    ports = [w.host_port for w in sim.wires.values()]
    for port in ports:
        os.chown(port, 0, gid)
        os.chmod(port, 0o660)
    return ports


def _others_may_run(path: Path) -> bool:
    real = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in [real, *real.parents])


def agent_python() -> str:
    """An interpreter the agent's user may run: this one, unless it lies where only root may go (pyenv under /root);
    then the system's Python of the same version (Debian's python3)."""
    if _others_may_run(Path(sys.executable)):
        return sys.executable
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists() and _others_may_run(system):
        return str(system)
    raise RuntimeError(f"no Python {sys.version_info.major}.{sys.version_info.minor} that other users may run "
                       f"({sys.executable} is root's alone): install Debian's python3")
