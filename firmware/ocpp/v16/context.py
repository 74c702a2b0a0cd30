"""What the 1.6 features share: one context, as EVerest's functional blocks share theirs.

The client builds it once; each feature module gets it instead of reaching into the client or into another
feature. ``call`` sends a CALL on the current connection (``ConnectionLost`` when there is none) and marks the
traffic the heartbeat measures; ``spawn`` runs a short task owned by the client (cancelled when it closes) —
:class:`~firmware.ocpp.session_context.CsmsConnectionMixin`, the same for 2.0.1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from firmware.charger.connector import ConnectorController
from firmware.config import AgentConfig
from firmware.exitcodes import ExitCode
from firmware.ocpp.data_transfer import VENDOR_ID
from firmware.ocpp.session_context import CsmsConnectionMixin
from firmware.storage import Database
from firmware.storage.ledger import Ledger
from firmware.storage.outbox import Outbox

if TYPE_CHECKING:
    from firmware.ocpp.v16.configuration import ConfigurationKeys

__all__ = ["VENDOR_ID", "V16Context"]  # VENDOR_ID: DataTransfer's, and StatusNotification's vendorErrorCode


@dataclass
class V16Context(CsmsConnectionMixin):
    config: AgentConfig
    connectors: dict[int, ConnectorController]
    db: Database
    keys: ConfigurationKeys
    ledger: Ledger  # billing records (the CSMS's transaction ids)
    outbox: Outbox  # messages not yet delivered
    request_exit: Callable[[ExitCode], None]
    # what FirmwareStatusNotification / DiagnosticsStatusNotification would say now (a TriggerMessage asks):
    # Idle while no update or upload is under way; the firmware and diagnostics features set them
    firmware_status: Callable[[], str] = lambda: "Idle"
    diagnostics_status: Callable[[], str] = lambda: "Idle"
    # ExtendedTriggerMessage's (security whitepaper): the status of a GetLog upload (LogStatusNotification) and the
    # requestId of the GetLog / SignedUpdateFirmware under way (None while Idle: the message then has none)
    log_status: Callable[[], str] = lambda: "Idle"
    log_request_id: Callable[[], int | None] = lambda: None
    firmware_request_id: Callable[[], int | None] = lambda: None
    signed_firmware_status: Callable[[], str] = lambda: "Idle"  # SignedFirmwareStatusNotification's statuses

    def connector(self, connector_id: int | None) -> ConnectorController | None:
        return None if connector_id is None else self.connectors.get(connector_id)
