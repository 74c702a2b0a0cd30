"""End to end: the disk under the agent's database fills up while it runs.

Whichever part of the agent writes next — a configuration change from the CSMS, the metering task queueing
meter values, a connector event — the agent stops with exit code 74 and names the database, instead of
going on without being able to keep billing data (docs/storage.md). The database lives on a small tmpfs
mounted by the test, filled up with a plain file once the agent runs: a real "database or disk is full".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.exitcodes import ExitCode
from tests.station import CP_ID, Station


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> None:
    """Write a filler file until the filesystem refuses more (ENOSPC)."""
    with contextlib.suppress(OSError), (disk / "filler").open("wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)


def _storage_error(s: Station) -> bool:
    text = s.log_path.read_text(errors="replace")
    return f"storage error: {s.storage_dir / 'agent.db'}" in text


@pytest.mark.parametrize("writer", ["configuration", "metering"])
async def test_disk_full_stops_the_agent_with_74_whoever_writes(tmp_path: Path, small_disk: Path,
                                                                writer: str) -> None:
    presets = {"MeterValueSampleInterval": 1} if writer == "metering" else {}
    async with Station(tmp_path, connectors=1, storage_dir=small_disk, presets=presets) as s:
        s.csms.behaviour.id_tags.accept("04A1B2C3")
        await s.start_agent()
        if writer == "metering":
            s.ev(1).plug()
            await s.tap("04A1B2C3")
            await s.wait_status(1, "Charging")
        _fill(small_disk)
        if writer == "configuration":
            with contextlib.suppress(Exception):  # the answer does not matter; the agent must stop
                await s.csms.call(CP_ID, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "77"},
                                  timeout_s=3)
        code = await s.wait_exit()
        assert code == ExitCode.STORAGE, s.log_path.read_text(errors="replace")[-3000:]
        assert _storage_error(s)
        critical = [e for e in s.log() if e.get("msg") == "storage failed; stopping"]
        assert critical and "full" in critical[0]["error"]
