"""What the 1.6 features share: one context, as EVerest's functional blocks share theirs.

The client builds it once; each feature module gets it instead of reaching into the client or into another
feature. ``call`` sends a CALL on the current connection (``ConnectionLost`` when there is none) and marks the
traffic the heartbeat measures; ``spawn`` runs a short task owned by the client (cancelled when it closes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware.charger.connector import ConnectorController
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.ocpp.rpc import ConnectionLost, RpcChargePoint
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox

if TYPE_CHECKING:
    from firmware.ocpp.v16.configuration import ConfigurationKeys

#: Our vendorId: DataTransfer, and StatusNotification's vendorErrorCode.
VENDOR_ID = "evse-agent"


@dataclass
class V16Context:
    config: AgentConfig
    connectors: dict[int, ConnectorController]
    db: Database
    keys: ConfigurationKeys
    ledger: Ledger  # billing records (the CSMS's transaction ids)
    outbox: Outbox  # messages not yet delivered
    request_exit: Callable[[ExitCode], None]
    cp: RpcChargePoint | None = None  # the current connection's charge point
    online: asyncio.Event = field(default_factory=asyncio.Event)  # connected and accepted
    last_traffic: float = 0.0  # loop time of our last answered CALL (the heartbeat waits on it)
    wake_delivery: Callable[[], None] = lambda: None  # something was queued in the outbox
    # what FirmwareStatusNotification / DiagnosticsStatusNotification would say now (a TriggerMessage asks):
    # Idle while no update or upload is under way; the firmware and diagnostics features set them
    firmware_status: Callable[[], str] = lambda: "Idle"
    diagnostics_status: Callable[[], str] = lambda: "Idle"
    #: ``(type, techInfo)``: a security event (security_events.SecurityEvents.report: logged, and queued if critical)
    report_security_event: Callable[[str, str | None], object] = lambda event, info: None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def response_timeout_s(self) -> float:
        assert self.config.ocpp is not None
        return self.config.ocpp.response_timeout_s

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A CALL on the current connection."""
        cp = self.cp
        if cp is None:
            raise ConnectionLost(f"{action}: not connected")
        return await self.call_on(cp, action, payload)

    async def call_on(self, cp: RpcChargePoint, action: str, payload: dict[str, Any], *,
                      checked: bool = False) -> dict[str, Any]:
        """A CALL on one connection (a connection's workers never send on the next one); ``checked``: see
        :meth:`RpcChargePoint.call_raw`."""
        result = await cp.call_raw(action, payload, checked=checked)
        self.last_traffic = asyncio.get_running_loop().time()
        return result

    def connector(self, connector_id: int | None) -> ConnectorController | None:
        return None if connector_id is None else self.connectors.get(connector_id)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
