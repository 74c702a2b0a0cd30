"""The master pass across the charger (OCPP 2.0.1 C16, "Stop Transaction with a Master Pass"): an id of the master pass
group stops every ongoing transaction and starts none.

The session machine of the connector the id was presented at decides, from its ``SessionConfig.master_pass_group``:
it refuses to start (C16.FR.03) or stops its own transaction with reason MasterPass. This charger has no user
interface to choose transactions with, so it stops them all (C16.FR.02): :class:`MasterPass`, an observer of every
connector, sees that decision in the connector's effects and hands ``MasterPassPresented`` to each other connector —
and, when the first one only refused it, to that one too: an id authorized there and waiting for its EV (a 2.0.1
transaction begun at Authorized) ends as well — in order of id, after the first connector's step is done (a task:
the first connector's lock is not held meanwhile, so two master passes at once cannot wait on each other). No OCPP
here: the group reaches the machines through their session configuration (the 2.0.1 adapter sets it from
AuthCtrlr.MasterPassGroupId; 1.6 has none).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from firmware.charger.connector import ConnectorController
from firmware.session import (
    Effect,
    IdToken,
    IdTokenRefused,
    MasterPassPresented,
    RefusalReason,
    StopReason,
    TransactionStopped,
    mask_token,
)
from hal.interfaces import MeterReading

log = logging.getLogger(__name__)


def master_pass_used(effects: list[Effect]) -> tuple[IdToken, bool] | None:
    """The master pass a connector's step acted on, and whether it stopped the transaction there (else it refused to
    start one with it); None when the step did neither."""
    for e in effects:
        if isinstance(e, IdTokenRefused) and e.reason is RefusalReason.MASTER_PASS:
            return e.id_token, False
        if isinstance(e, TransactionStopped) and e.reason is StopReason.MASTER_PASS and e.stopped_by is not None:
            return e.stopped_by, True
    return None


class MasterPass:
    """Stops the other connectors' transactions when one connector's machine acted on a master pass."""

    def __init__(self, connectors: dict[int, ConnectorController]) -> None:
        self.connectors = connectors
        self._relaying: set[int] = set()  # connectors handed MasterPassPresented right now: their stop is ours
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, ctrl: ConnectorController) -> None:
        ctrl.observers.append(self)

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """Nothing durable of its own: each connector's stop is recorded in that connector's step."""

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        used = master_pass_used(effects)
        if used is None or ctrl.id in self._relaying:
            return
        token, stopped_here = used
        log.info("master pass: ending every transaction", extra={"connector": ctrl.id, "id_token": mask_token(token)})
        task = asyncio.create_task(self._stop_all(token, ctrl.id if stopped_here else None), name="master-pass")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop_all(self, token: IdToken, done: int | None) -> None:
        """``MasterPassPresented`` to every connector but ``done`` (the one whose transaction it already stopped)."""
        for cid in sorted(self.connectors):
            if cid == done:
                continue
            self._relaying.add(cid)
            try:
                await self.connectors[cid].handle(MasterPassPresented(token))
            except Exception:  # one connector's failure must not keep the others charging
                log.exception("master pass: a connector was not stopped", extra={"connector": cid})
            finally:
                self._relaying.discard(cid)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
