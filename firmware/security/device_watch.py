"""What the charge point can see of two of the whitepaper's critical security events without special hardware.

* **MemoryExhaustion** ("the Flash or RAM memory of the Charge Point is getting full"): :class:`FreeSpaceWatch`
  watches the free space of the file system that holds the agent's state (database, outbox, security log); going
  below the limit is one event, and it is raised again only after the space has come back above it.
* **SettingSystemTime** ("the system time was set"): the agent never sets the clock itself (NTP or a technician
  does), but it sees the result: :class:`ClockStepWatch` compares the wall clock with the monotonic clock, and a
  step of more than ``tolerance_s`` between two checks is the system time having been set (a first NTP
  synchronisation after a boot without a real-time clock, a technician's ``date -s``). Slewing (NTP's gradual
  correction) never adds up to that between two checks.

Pure apart from the clocks and ``statvfs`` they are given, so the tests drive them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def free_bytes(path: str | Path) -> int:
    """Free space for an unprivileged writer on the file system of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class FreeSpaceWatch:
    def __init__(self, path: str | Path, min_free_bytes: int,
                 free: Callable[[str | Path], int] = free_bytes) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self._free = free
        self.low = False  # below the limit at the last check

    def check(self) -> str | None:
        """The event's techInfo when the free space has just gone below the limit; else None."""
        if self.min_free_bytes <= 0:
            return None
        try:
            free = self._free(self.path)
        except OSError:
            return None
        was_low, self.low = self.low, free < self.min_free_bytes
        if self.low and not was_low:
            return (f"storage {self.path}: {free // (1024 * 1024)} MiB free, "
                    f"below {self.min_free_bytes // (1024 * 1024)} MiB")
        return None


class ClockStepWatch:
    def __init__(self, tolerance_s: float = 60.0, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.tolerance_s = tolerance_s
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def check(self) -> float | None:
        """The step (seconds, + forward) the wall clock made since the last check, if beyond the tolerance."""
        offset = self._wall() - self._monotonic()
        step, self._offset = offset - self._offset, offset
        return step if abs(step) > self.tolerance_s else None
