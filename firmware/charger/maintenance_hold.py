"""The connectors held idle while the charger is updated (OCPP 1.6 errata 3.49: "the Charge Point SHALL set the
connectors that are not in use to Unavailable while waiting for transactions to end" — and a transaction is never
cut for an update).

:meth:`MaintenanceHold.hold` makes every connector Unavailable through the coordinator, as a ChangeAvailability
would: idle ones at once, busy ones when their transaction ends (the machine schedules it), so no new transaction
starts meanwhile. Availability is part of each connector's durable snapshot, so the hold survives a restart; the
updater records which connectors are operative (:meth:`MaintenanceHold.operative`) before it holds them, and
releases exactly those when it is done — also after a power cut in the middle of the hold.
"""

from __future__ import annotations

from collections.abc import Iterable

from firmware.charger.connector import ConnectorController
from firmware.charger.coordinator import Coordinator


class MaintenanceHold:
    def __init__(self, coordinator: Coordinator, connectors: dict[int, ConnectorController]) -> None:
        self.coordinator = coordinator
        self.connectors = connectors

    def busy(self) -> bool:
        """A transaction runs on some connector."""
        return any(c.machine.transaction is not None for c in self.connectors.values())

    def operative(self) -> list[int]:
        """The connectors operative now (and not about to be made inoperative): those a hold would take."""
        return [c.id for c in self.connectors.values()
                if c.machine.operative and c.machine.scheduled_operative is not False]

    async def hold(self) -> list[int]:
        """Every connector Unavailable (busy ones once their transaction ends); those operative before."""
        was = self.operative()
        await self.coordinator.set_available(list(self.connectors.values()), False)
        return was

    async def release(self, ids: Iterable[int]) -> None:
        targets = [self.connectors[i] for i in ids if i in self.connectors]
        if targets:
            await self.coordinator.set_available(targets, True)
