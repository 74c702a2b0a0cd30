"""G01 Status Notification: each connector's ``ConnectorStatusEnumType``, per EVSE and connector.

This charger's connector *n* is EVSE *n* with one connector (``connectorId`` 1). Once the CSMS accepted us, the
current status of every connector is sent after the boot and after a reconnect that followed more than
OCPPCommCtrlr.OfflineThreshold seconds offline; after a shorter one only the statuses that changed meanwhile.
Afterwards a status goes out when it changes — the machine's nine statuses fold into five, so most of
its changes (Preparing → Charging) are no news here and are not sent (a status is reported when it changes). Errors
are not StatusNotification's in 2.0.1 (they are NotifyEvent's, not in this slice): Faulted says enough.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.ocpp.session_context import send_in_order
from firmware.ocpp.v201 import mapping
from firmware.session import StatusChanged
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

Call = Callable[[str, dict[str, Any]], Any]


class StatusReporter:
    def __init__(self, connectors: dict[int, ConnectorController], offline_threshold_s: Callable[[], float]) -> None:
        self.connectors = connectors
        self._offline_threshold_s = offline_threshold_s
        self._offline_since: float | None = None  # loop time the last connection ended (None: never connected)
        self.online = False  # connected and accepted: changes are reported (else the resync says it all)
        self._queue: list[dict[str, Any]] = []
        self._last: dict[int, str] = {}  # EVSE id -> the status last queued
        self._wake = asyncio.Event()

    def connector_changed(self, ctrl: ConnectorController, e: StatusChanged) -> None:
        if self.online:  # on reconnect the current status is sent, not the history
            self._offer(ctrl.id, mapping.connector_status(e.status, e.ev_connected, ctrl.machine.config.tethered_cable))

    def connected(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._offline_since is None or now - self._offline_since > self._offline_threshold_s():
            self._last.clear()  # everything is news
        self._queue.clear()
        self.online = True
        for ctrl in self.connectors.values():
            self._offer(ctrl.id, mapping.connector_status(ctrl.machine.status, ctrl.machine.ev_connected,
                                                          ctrl.machine.config.tethered_cable))

    def triggered(self, evse_ids: list[int]) -> None:
        """TriggerMessage: the current status of each EVSE, sent even if it is no news."""
        for evse_id in evse_ids:
            ctrl = self.connectors[evse_id]
            self._last.pop(evse_id, None)
            self._offer(evse_id, mapping.connector_status(ctrl.machine.status, ctrl.machine.ev_connected,
                                                          ctrl.machine.config.tethered_cable))

    def disconnected(self) -> None:
        if self.online:
            self._offline_since = asyncio.get_running_loop().time()
        self.online = False

    def _offer(self, evse_id: int, status: str) -> None:
        if self._last.get(evse_id) == status:
            return
        self._last[evse_id] = status
        self._queue.append({"timestamp": mapping.timestamp(utcnow()), "connectorStatus": status,
                            "evseId": evse_id, "connectorId": 1})
        self._wake.set()

    async def send(self, call: Call) -> None:
        """The connection's StatusNotification worker: sends what is queued, in order; a timeout resends it."""
        await send_in_order(call, "StatusNotification", self._queue, self._wake)
