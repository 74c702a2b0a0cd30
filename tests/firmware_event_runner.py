"""The end of an update as a process of its own, for tests/test_updater.py's kill -9 around the security event
FirmwareUpdated: the real FirmwareUpdater (job file), the 1.6 adapter (firmware/ocpp/v16/firmware_management.py),
SecurityEvents and the durable outbox on a real database; the CSMS's side of the link is a file of the CALLs it
answered (every one answered at once).

``python -m tests.firmware_event_runner DIR KILL_AT``: DIR holds the job (step done, outcome Installed, not yet
reported). KILL_AT (once: a marker file) — ``answered``: SIGKILL right after the CSMS answered Installed, before
the event; ``queued``: right before the job is recorded as reported, after the event was queued; ``never``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from firmware.config import parse_config
from firmware.maintenance.installers import SlotsInstaller
from firmware.maintenance.log_upload import LogUploads
from firmware.maintenance.updater import FirmwareUpdater, JobStore, Step, UpdateJob, UpdaterSettings
from firmware.ocpp.security_events import SecurityEvents
from firmware.ocpp.v16.configuration import ConfigurationKeys
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.firmware_management import FirmwareManagement
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox
from tests.updater_runner import FileHold

CONFIG = """
[charge_point]
id = "CP-FW"

[storage]
dir = "{dir}"

[[connectors]]
id = 1
board = {{ driver = "ioboard", port = "/dev/ttyS1" }}

[ocpp]
csms_url = "ws://csms/ocpp"
"""


def main(directory: str, kill_at: str) -> int:
    where = Path(directory)
    marker = where / "killed"

    def die() -> None:
        marker.write_text(kill_at)
        os.kill(os.getpid(), signal.SIGKILL)

    config = parse_config(CONFIG.format(dir=where), "agent.toml")
    db = Database(where / "agent.db")
    outbox = Outbox(db)
    ctx = V16Context(config, {}, db, ConfigurationKeys(db, 1), Ledger(db), outbox, lambda code: None)
    ctx.report_security_event = SecurityEvents(ctx).report

    async def call(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        with (where / "answered.jsonl").open("a") as f:
            f.write(json.dumps([action, payload]) + "\n")
        if kill_at == "answered" and payload.get("status") == "Installed" and not marker.exists():
            die()
        return {}
    ctx.call = call  # type: ignore[method-assign]

    save = JobStore.save

    def save_or_die(store: JobStore, job: UpdateJob) -> None:
        if kill_at == "queued" and job.step is Step.DONE and job.reported and not marker.exists():
            die()
        save(store, job)
    JobStore.save = save_or_die  # type: ignore[method-assign]

    updater = FirmwareUpdater(where, UpdaterSettings((), None, 1 << 20, 5.0, 5.0), SlotsInstaller(str(where), where),
                              FileHold(where / "connectors.json"), lambda: None)
    FirmwareManagement(ctx, updater, LogUploads(config.charge_point_id, where, None, None))

    async def run() -> None:
        ctx.online.set()
        await updater.run_job()
    asyncio.run(run())
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
