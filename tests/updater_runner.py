"""The update pipeline as a process of its own, for tests/test_updater.py's kill -9 at every step: the real
FirmwareUpdater, SlotsInstaller and job file, with a file for the statuses and the held connectors.

``python -m tests.updater_runner DIR KILL_AT``: DIR holds ``settings.json`` (the slots root, trust, the job to
start if none). The process kills itself with SIGKILL right after the job's step KILL_AT was written (once: a
marker file), which is a power cut after the durable write and before the step is acted on; KILL_AT ``holding``:
right after the connectors were made Unavailable (in the middle of the step waiting_idle). A restart the
pipeline asks for ends the process with 75, as the agent does.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from firmware.maintenance.installers import SlotsInstaller, apply_pending_switch
from firmware.maintenance.updater import FirmwareStatus, FirmwareUpdater, JobStore, UpdateJob, UpdaterSettings


class FileHold:
    """Connectors 1 and 2, their availability in a file (what the real hold keeps in the connectors' snapshots)."""

    def __init__(self, path: Path, kill_after_hold: Path | None = None) -> None:
        """``kill_after_hold``: a marker file; while it does not exist, the process is killed (SIGKILL) right after
        the connectors were made Unavailable, before the updater could note what it holds (and it is created)."""
        self.path = path
        self.kill_after_hold = kill_after_hold
        if not path.exists():
            self._write({"1": True, "2": True})

    def _read(self) -> dict[str, bool]:
        return json.loads(self.path.read_text())  # type: ignore[no-any-return]

    def _write(self, data: dict[str, bool]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def busy(self) -> bool:
        return False

    def operative(self) -> list[int]:
        return [int(k) for k, v in self._read().items() if v]

    async def hold(self) -> list[int]:
        data = self._read()
        was = [int(k) for k, v in data.items() if v]
        self._write({k: False for k in data})
        if self.kill_after_hold is not None and not self.kill_after_hold.exists():
            self.kill_after_hold.write_text("")
            os.kill(os.getpid(), signal.SIGKILL)
        return was

    async def release(self, ids: Iterable[int]) -> None:
        data = self._read()
        for i in ids:
            data[str(i)] = True
        self._write(data)


def main(directory: str, kill_at: str) -> int:
    where = Path(directory)
    cfg = json.loads((where / "settings.json").read_text())
    state = Path(cfg["state"])
    apply_pending_switch(cfg["root"], state)
    marker = where / f"killed-at-{kill_at}"
    save = JobStore.save

    def save_then_die(store: JobStore, job: UpdateJob) -> None:
        save(store, job)
        if job.step.value == kill_at and not marker.exists():
            marker.write_text("")
            os.kill(os.getpid(), signal.SIGKILL)
    JobStore.save = save_then_die  # type: ignore[method-assign]

    async def status(s: FirmwareStatus) -> None:
        with (where / "statuses.txt").open("a") as f:
            f.write(s.value + "\n")

    async def healthy(timeout_s: float) -> str | None:
        return cfg.get("health_problem")

    def restart() -> None:
        os._exit(75)

    trust = tuple(x509.load_pem_x509_certificates(Path(cfg["trust"]).read_bytes()))
    hold = FileHold(where / "connectors.json", marker if kill_at == "holding" else None)
    updater = FirmwareUpdater(state, UpdaterSettings(trust, "rev-c", 50 << 20, 5.0, 5.0),
                              SlotsInstaller(cfg["root"], state), hold, restart, status, healthy)
    if updater.job is None:
        updater.start(cfg["location"], 0.0, retries=cfg.get("retries", 0), retry_interval_s=0.2,
                      request_id=cfg.get("request_id"))  # a request id without a certificate: 2.0.1's L02
    asyncio.run(updater.run_job())
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
