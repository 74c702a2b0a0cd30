"""MinimumStatusDuration (OCPP 1.6 §4.9, §9.1): report a status only once it has lasted that long.

"To limit the number of transitions, the Charge Point MAY omit sending a StatusNotification.req if it was
active for less time than defined in the optional configuration key MinimumStatusDuration." Here, per
connector (0 included): a new status waits ``MinimumStatusDuration`` seconds; a newer one arriving
meanwhile replaces it (the latest wins), and the waiting one is never reported. When the time is up
the status is handed on with the timestamp of the moment it began; the caller still drops it if it
repeats what the CSMS was last told (so a brief excursion and back reports nothing at all). 0 reports
at once. After a reconnect the current statuses are reported at once: that resync tells the CSMS where
things are, not a transition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class StatusHold:
    def __init__(self, report: Callable[[dict[str, Any]], None]) -> None:
        self._report = report
        self._waiting: dict[int, asyncio.TimerHandle] = {}

    def offer(self, payload: dict[str, Any], hold_s: float) -> None:
        """A StatusNotification payload for ``payload["connectorId"]``, reported after ``hold_s`` unless a
        newer one for the same connector comes first."""
        connector = int(payload["connectorId"])
        waiting = self._waiting.pop(connector, None)
        if waiting is not None:
            waiting.cancel()
        if hold_s <= 0:
            self._report(payload)
            return
        self._waiting[connector] = asyncio.get_running_loop().call_later(hold_s, self._due, connector, payload)

    def _due(self, connector: int, payload: dict[str, Any]) -> None:
        self._waiting.pop(connector, None)
        self._report(payload)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def clear(self) -> None:
        """Forget every waiting status (the connection ended; the next one starts with a resync)."""
        for handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
