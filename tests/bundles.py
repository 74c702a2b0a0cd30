"""Small signed firmware bundles (a few files, no wheels: quick to make) and a controller root with a first install,
for the update pipeline's tests (the full bundles the technician's tool builds: tests/test_flash.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from firmware.maintenance import slots
from firmware.maintenance.bundle import load_certificate, load_private_key, write_bundle
from tests.pki import Signer
from tests.station import Station


def small_bundle(out: Path, signer: Signer, version: str) -> Path:
    """A signed bundle of a few files (no wheels): enough for the slots, quick to make."""
    src = out.parent / f"src-{version}"
    (src / "firmware").mkdir(parents=True, exist_ok=True)
    (src / "firmware/VERSION").write_text(version + "\n")
    (src / "firmware/__init__.py").write_text(f"VERSION = {version!r}\n")
    (src / "filler.bin").write_bytes(os.urandom(300_000))
    write_bundle(out, {"app/firmware/VERSION": src / "firmware/VERSION",
                       "app/firmware/__init__.py": src / "firmware/__init__.py", "app/filler.bin": src / "filler.bin"},
                 version=version, hardware_revisions=["rev-c"], python="cp311", platform="x86_64",
                 key=load_private_key(signer.key), certificate=load_certificate(signer.cert))
    return out


def install_first(root: Path, bundle: Path) -> None:
    """Slot a holds 1.0.0 and runs, as a technician's first flash leaves it."""
    sha, size = slots.sha256_file(bundle), bundle.stat().st_size
    shutil.copyfile(bundle, slots.prepare_upload(str(root), sha, size)["path"])
    slots.install(str(root), sha, size)
    slots.activate(str(root), "a")


@asynccontextmanager
async def slot_station(root: Path, first: Path, signer: Signer, files: Path, *, firmware_extra: str = "",
                       **station_args: Any) -> AsyncIterator[Station]:
    """A station whose agent runs out of the A/B slots of the controller root ``root`` (``first`` installed, hardware
    revision rev-c, the updates trusted from ``signer``, the CSMS serving ``files``), started as systemd would;
    ``s.root`` is the root."""
    (root / "etc/evse-agent").mkdir(parents=True)
    (root / "etc/evse-agent/hardware-revision").write_text("rev-c\n")
    install_first(root, first)
    firmware = (f'\n[firmware]\ntrust = "{signer.ca_cert}"\nslots_root = "{root}"\nhealth_timeout_s = 8\n'
                f"transfer_timeout_s = 5\n{firmware_extra}")
    async with Station(root / "etc/evse-agent", storage_dir=root / "var/lib/evse-agent", extra_config=firmware,
                       csms_files=files, **station_args) as s:
        s.root = root  # type: ignore[attr-defined]
        await s.start_agent(supervised=True)
        yield s
