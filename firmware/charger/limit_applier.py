"""Applies :class:`~firmware.charger.limits.ChargingLimits` to the connectors' session machines.

Whoever changes a limit (the site control over MQTT, later OCPP smart charging) calls
:meth:`LimitApplier.set` / :meth:`~LimitApplier.clear` with its source; one worker then sends
``ChargingLimitChanged`` to each connector whose effective limit moved. A worker, not a direct call:
limits also change from inside a connector's ``notify`` (an EV plugged in changes the shares), which
runs under that connector's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from firmware.charger.connector import ConnectorController
from firmware.charger.limits import ChargingLimits
from firmware.session import Effect, StatusChanged
from firmware.session.events import ChargingLimitChanged
from hal.interfaces import MeterReading

log = logging.getLogger(__name__)


class LimitApplier:
    """Connector observer (for the EV-present set the shares depend on) and the worker that applies limits."""

    def __init__(self, connectors: dict[int, ConnectorController], ratings: dict[int, float] | None = None) -> None:
        """``ratings``: each connector's rating in A (default: from the connectors' machines, which then must
        exist; the agent passes them from the configuration, so the applier exists before the connectors)."""
        self.connectors = connectors
        self.limits = ChargingLimits(ratings if ratings is not None else
                                     {cid: c.config.max_current_amps for cid, c in connectors.items()})
        self.applied: dict[int, float] = {}
        #: called with (connector, amps) after a connector's machine took a new effective limit
        self.listeners: list[Callable[[int, float], None]] = []
        #: called (no arguments) after any source's limit was set or cleared, before it is applied: who reports
        #: the external sources (firmware/charger/external_limits.py) reads them then
        self.source_listeners: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._ev_present: set[int] = set()

    def set(self, source: str, amps: float, connector: int | None = None) -> None:
        """``source`` limits ``connector`` (the whole charger: None) to ``amps``; applied by the worker."""
        self.limits.set(source, amps, connector)
        self._sources_changed()

    def clear(self, source: str, connector: int | None = None) -> None:
        self.limits.clear(source, connector)
        self._sources_changed()

    def clear_everywhere(self, source: str) -> None:
        self.limits.clear_everywhere(source)
        self._sources_changed()

    def _sources_changed(self) -> None:
        self._wake.set()
        for listener in self.source_listeners:
            listener()

    def changed(self) -> None:
        self._wake.set()

    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        return None

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                present = set(self._ev_present)
                (present.add if e.ev_connected else present.discard)(connector.id)
                if present != self._ev_present:
                    self._ev_present = present
                    self.limits.set_sharing(present)
                    self.changed()

    async def apply_now(self) -> None:
        """Send each connector its effective limit if the machine does not hold it already."""
        for cid, amps in self.limits.effective().items():
            ctrl = self.connectors[cid]
            if self.applied.get(cid) == amps and ctrl.machine.limit_amps == amps:
                continue
            if ctrl.machine.limit_amps != amps:
                log.info("charging limit", extra={"connector": cid, "amps": amps,
                                                  "sources": self.limits.sources(cid),
                                                  "charger_sources": self.limits.sources(None)})
                await ctrl.handle(ChargingLimitChanged(amps))
            self.applied[cid] = amps
            for listener in self.listeners:
                listener(cid, amps)

    async def run(self) -> None:
        """Apply at start (a snapshot may hold a limit from before the restart), then on every change."""
        self._ev_present = {cid for cid, c in self.connectors.items() if c.machine.ev_connected}
        self.limits.set_sharing(self._ev_present)
        while True:
            await self.apply_now()
            await self._wake.wait()
            self._wake.clear()
