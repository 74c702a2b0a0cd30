"""StatusNotification for OCPP 1.6: what the CSMS is told about the charge point (connector 0) and each
connector, and when.

* A status change is reported while online; MinimumStatusDuration holds it back until it has lasted
  (:class:`~firmware.ocpp.v16.status_hold.StatusHold`). Only news is sent: a new status or error code, or new
  info — the session machine also reports plug-state changes alone, for which 1.6 has no field.
* After each (re)connection the *current* status of connector 0 and of every connector is sent once, not
  the history of the offline period (§4.9).
* Connector 0 is Unavailable once the CSMS made the whole charge point Inoperative and every connector has
  applied it (a connector in a transaction has it scheduled; the charge point follows, §5.2). That choice
  is kept in the database across restarts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from firmware.charger.connector import ConnectorController
from firmware.ocpp.rpc import CallErrorReceived, InvalidResponse
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.keys import DAY_S, KeyDefinition, KeyType
from firmware.ocpp.v16.status_hold import StatusHold
from firmware.session import StatusChanged
from firmware.session.status import ConnectorStatus
from firmware.storage import Database
from firmware.storage.settings import Settings
from hal.interfaces import FaultCode, utcnow

if TYPE_CHECKING:
    from firmware.ocpp.v16.configuration import ConfigurationKeys

log = logging.getLogger(__name__)

#: Database setting: the CSMS made the whole charge point (connector 0) Inoperative.
CHARGE_POINT_INOPERATIVE_KEY = "agent.charge_point_inoperative"

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

KEYS = (KeyDefinition("MinimumStatusDuration", KeyType.INT, "0", minimum=0, maximum=DAY_S),)  # status_hold.py


class StatusReporter:
    """Decides which StatusNotifications go out and sends them, in order, one at a time."""

    def __init__(self, connectors: dict[int, ConnectorController], keys: ConfigurationKeys, db: Database,
                 vendor_id: str) -> None:
        self.connectors = connectors
        self.keys = keys
        self._settings = Settings(db)
        self.vendor_id = vendor_id
        self.online = False  # connected and accepted: changes are reported (else the resync says it all)
        self._queue: list[dict[str, Any]] = []
        self._hold = StatusHold(self._report)  # MinimumStatusDuration
        # per connector: the (status, errorCode, vendorErrorCode) and info last queued
        self._last: dict[int, tuple[tuple[str, str, str | None], str | None]] = {}
        self._wake = asyncio.Event()
        self._charge_point_inoperative = self._settings.get(CHARGE_POINT_INOPERATIVE_KEY) == "1"

    # --- what happened ----------------------------------------------------------------------------------

    def connector_changed(self, ctrl: ConnectorController, e: StatusChanged) -> None:
        if self.online:  # on reconnect the current status is sent, not the history
            self._offer(self._payload(ctrl, e.status, e.error, e.info, utcnow()))
        self.charge_point_changed()

    def charge_point_changed(self) -> None:
        """Connector 0 may have changed (a connector applied an availability change, or the CSMS made one)."""
        if self.online:
            self._offer(self._connector0_payload(utcnow()))

    def charge_point_error(self, error_code: str, info: str) -> bool:
        """An error of the charge point itself (connector 0) that is an event, not a state — LocalListConflict
        (§3.5.2): reported at once with connector 0's current status, whatever MinimumStatusDuration says, and
        every time it happens. The next report of connector 0 (NoError) is news again. Offline there is no
        one to tell (False): after the reconnect the current status is sent, not this history."""
        if not self.online:
            return False
        payload = {**self._connector0_payload(utcnow()), "errorCode": error_code, "info": info[:50]}
        self._is_news(payload)
        self._queue.append(payload)
        self._wake.set()
        return True

    def set_charge_point_operative(self, operative: bool) -> None:
        """ChangeAvailability on connector 0, kept across restarts."""
        self._charge_point_inoperative = not operative
        self._settings.put(CHARGE_POINT_INOPERATIVE_KEY, "0" if operative else "1")

    # --- connection ---------------------------------------------------------------------------------------

    def connected(self) -> None:
        """After (re)connecting and being accepted: the current status of the charge point and of every
        connector, once."""
        now = utcnow()
        self._hold.clear()
        self._last.clear()
        self._queue = [self._connector0_payload(now)]
        self._queue += [self._current_payload(ctrl, now) for ctrl in self.connectors.values()]
        for payload in self._queue:
            self._is_news(payload)
        self.online = True
        self._wake.set()

    def triggered(self, connector_ids: list[int]) -> list[dict[str, Any]]:
        """TriggerMessage (§5.17): the current status of each of ``connector_ids`` (0: the charge point), reported
        even if it tells the CSMS nothing new and without waiting for MinimumStatusDuration. While online they are
        queued behind what is queued, so an older status never arrives after them; otherwise (BootNotification
        still pending: there is no status worker yet) they are returned for the caller to send."""
        now = utcnow()
        payloads = [self._connector0_payload(now) if c == 0 else self._current_payload(self.connectors[c], now)
                    for c in connector_ids]
        for payload in payloads:
            self._is_news(payload)  # the CSMS is told: later reports compare with this
        if not self.online:
            return payloads
        self._queue += payloads
        self._wake.set()
        return []

    def disconnected(self) -> None:
        self.online = False
        self._hold.clear()

    async def send(self, call: Call) -> None:
        """The connection's StatusNotification worker: sends what is queued; a timeout resends it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                payload = self._queue[0]
                try:
                    await call("StatusNotification", payload)
                except (CallErrorReceived, InvalidResponse) as exc:
                    log.warning("StatusNotification not accepted", extra={"error": str(exc)})
                except TimeoutError:
                    log.warning("StatusNotification timed out; resending")
                    continue
                self._queue.pop(0)

    # --- payloads -------------------------------------------------------------------------------------------

    def _offer(self, payload: dict[str, Any]) -> None:
        self._hold.offer(payload, self.keys.get_int("MinimumStatusDuration"))

    def _report(self, payload: dict[str, Any]) -> None:
        """A status that lasted MinimumStatusDuration (or at once, with 0): sent if it is news to the CSMS."""
        if self.online and self._is_news(payload):
            self._queue.append(payload)
            self._wake.set()

    def _is_news(self, payload: dict[str, Any]) -> bool:
        """Whether a report tells the CSMS something: a new status or error code, or new info. The machine
        also reports a change of the plug state alone (e.g. an EV unplugged from a Faulted connector), which
        1.6 has no field for; repeating the same status and error would only be noise (docs/session.md)."""
        key = (payload["status"], payload["errorCode"], payload.get("vendorErrorCode"))
        last = self._last.get(payload["connectorId"])
        info = payload.get("info")
        self._last[payload["connectorId"]] = (key, info or (last[1] if last and last[0] == key else None))
        return last is None or last[0] != key or (info is not None and info != last[1])

    def _payload(self, ctrl: ConnectorController, status: ConnectorStatus, error: FaultCode | None, info: str,
                 now: datetime) -> dict[str, Any]:
        source = ""
        if error is not None:
            source = next((f.source for f in ctrl.machine.faults if f.code == error), "")
        code, vendor_code = mapping.error_code(error, source)
        payload: dict[str, Any] = {"connectorId": ctrl.id, "errorCode": code, "status": status.value,
                                   "timestamp": mapping.timestamp(now)}
        if info:
            payload["info"] = info[:50]
        if vendor_code is not None:
            payload["vendorId"] = self.vendor_id
            payload["vendorErrorCode"] = vendor_code[:50]
        return payload

    def _current_payload(self, ctrl: ConnectorController, now: datetime) -> dict[str, Any]:
        m = ctrl.machine
        return self._payload(ctrl, m.status, m.current_error, "", now)

    def _connector0_payload(self, now: datetime) -> dict[str, Any]:
        unavailable = self._charge_point_inoperative and not any(c.machine.operative
                                                                 for c in self.connectors.values())
        status = "Unavailable" if unavailable else "Available"
        return {"connectorId": 0, "errorCode": "NoError", "status": status, "timestamp": mapping.timestamp(now)}
