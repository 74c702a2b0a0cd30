"""The session machine's settings that OCPP 1.6 configuration keys control, applied at start and live.

The machine knows no OCPP (docs/session.md); this feature owns the five keys that steer it and turns them into
its :class:`~firmware.session.SessionConfig`. A change reaches every connector under its own lock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from firmware.charger.connector import ConnectorController
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.session import SessionConfig

if TYPE_CHECKING:
    from firmware.ocpp.v16.configuration import ConfigurationKeys

KEYS = (
    KeyDefinition("AuthorizeRemoteTxRequests", KeyType.BOOL, "true"),
    KeyDefinition("ConnectionTimeOut", KeyType.INT, "60", minimum=1, maximum=3600),
    KeyDefinition("StopTransactionOnEVSideDisconnect", KeyType.BOOL, "true"),
    KeyDefinition("StopTransactionOnInvalidId", KeyType.BOOL, "true"),
    KeyDefinition("UnlockConnectorOnEVSideDisconnect", KeyType.BOOL, "true"),
)
_LIVE = frozenset({"ConnectionTimeOut", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId",
                   "AuthorizeRemoteTxRequests", "UnlockConnectorOnEVSideDisconnect"})


def session_config_from_keys(base: SessionConfig, keys: ConfigurationKeys) -> SessionConfig:
    """``base`` (the connector's rating) with the settings the keys control."""
    return replace(base,
                   connection_timeout_s=float(keys.get_int("ConnectionTimeOut")),
                   stop_transaction_on_ev_side_disconnect=keys.get_bool("StopTransactionOnEVSideDisconnect"),
                   stop_transaction_on_invalid_id=keys.get_bool("StopTransactionOnInvalidId"),
                   authorize_remote_tx_requests=keys.get_bool("AuthorizeRemoteTxRequests"),
                   unlock_on_ev_side_disconnect=keys.get_bool("UnlockConnectorOnEVSideDisconnect"))


class SessionSettings:
    def __init__(self, keys: ConfigurationKeys, connectors: dict[int, ConnectorController]) -> None:
        self.keys = keys
        self.connectors = connectors
        keys.on_change(self._changed, _LIVE)

    def _changed(self, key: str, value: str) -> None:
        for ctrl in self.connectors.values():
            ctrl.configure(session_config_from_keys(ctrl.machine.config, self.keys))
