"""What the 2.0.1 features share: one context, as the 1.6 features share theirs.

The client builds it once; each feature module gets it instead of reaching into the client or into another
feature. ``call`` sends a CALL on the current connection (``ConnectionLost`` when there is none) and marks the
traffic the heartbeat measures; ``spawn`` runs a short task owned by the client (cancelled when it closes) —
:class:`~firmware.ocpp.session_context.CsmsConnectionMixin`, the same for 1.6.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.ocpp.rpc import RpcChargePoint
from firmware.ocpp.session_context import CsmsConnectionMixin
from firmware.ocpp.v201.device_model import DeviceModel
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox


@dataclass
class V201Context(CsmsConnectionMixin):
    config: AgentConfig
    connectors: dict[int, ConnectorController]  # connector n is EVSE n with its connector 1
    db: Database
    variables: DeviceModel
    ledger: Ledger  # billing records; the transaction id is the station's own UUID
    outbox: Outbox  # messages not yet delivered
    request_exit: Callable[[ExitCode], None]
    cp: RpcChargePoint | None = None  # the current connection's charging station
    online: asyncio.Event = field(default_factory=asyncio.Event)  # connected and accepted
    last_traffic: float = 0.0  # loop time of our last answered CALL (the heartbeat waits on it)
    wake_delivery: Callable[[], None] = lambda: None  # something was queued in the outbox
    #: ``(type, techInfo)``: a security event under the whitepaper's name (``firmware.ocpp.security_events``:
    #: logged, queued if critical, sent under its 2.0.1 name)
    report_security_event: Callable[[str, str | None], object] = lambda event, info: None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def response_timeout_s(self) -> float:
        assert self.config.ocpp is not None
        return self.config.ocpp.response_timeout_s
