"""What the 2.0.1 features share: one context, as the 1.6 features share theirs.

The client builds it once; each feature module gets it instead of reaching into the client or into another
feature. ``call`` sends a CALL on the current connection (``ConnectionLost`` when there is none) and marks the
traffic the heartbeat measures; ``spawn`` runs a short task owned by the client (cancelled when it closes) —
:class:`~firmware.ocpp.session_context.CsmsConnectionMixin`, the same for 1.6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from firmware.charger.connector import ConnectorController
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
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
    #: the active network profile's messageTimeout (B09; None: ``[ocpp] response_timeout_s``, the commissioned one)
    message_timeout_s: float | None = None

    @property
    def response_timeout_s(self) -> float:
        """How long a CALL of ours waits for its answer on the next connection (OCPPCommCtrlr.MessageTimeout)."""
        return self.message_timeout_s if self.message_timeout_s is not None else super().response_timeout_s
