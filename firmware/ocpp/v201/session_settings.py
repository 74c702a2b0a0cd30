"""The session machine's settings that 2.0.1 variables control (TxCtrlr, AuthCtrlr, OCPPCommCtrlr), applied at start
and live.

The machine knows no OCPP (docs/session.md); the same fields the 1.6 keys steer are steered here by their 2.0.1
variables. An unlock during a transaction is refused with OngoingAuthorizedTransaction. AuthCtrlr.MasterPassGroupId
(2.0.1 only; empty: none) is the machine's ``master_pass_group`` (C16, :mod:`firmware.charger.master_pass`).
"""

from __future__ import annotations

from dataclasses import replace

from firmware.charger.connector import ConnectorController
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey
from firmware.ocpp.v201.transaction_points import TxPoint, parse_points
from firmware.session import IdToken, IdTokenType, SessionConfig

_LIVE = frozenset({VariableKey("TxCtrlr", "EVConnectionTimeOut"), VariableKey("TxCtrlr", "StopTxOnEVSideDisconnect"),
                   VariableKey("TxCtrlr", "StopTxOnInvalidId"), VariableKey("AuthCtrlr", "AuthorizeRemoteStart"),
                   VariableKey("OCPPCommCtrlr", "UnlockOnEVSideDisconnect"), VariableKey("TxCtrlr", "TxStopPoint"),
                   VariableKey("AuthCtrlr", "MasterPassGroupId")})


def session_config(base: SessionConfig, variables: DeviceModel) -> SessionConfig:
    """``base`` (the connector's rating) with the settings the variables control."""
    group = variables.get("AuthCtrlr", "MasterPassGroupId")
    return replace(base,
                   master_pass_group=IdToken(group, IdTokenType.CENTRAL) if group else None,  # the CSMS names groups
                   connection_timeout_s=float(variables.get_int("TxCtrlr", "EVConnectionTimeOut")),
                   stop_transaction_on_ev_side_disconnect=variables.get_bool("TxCtrlr", "StopTxOnEVSideDisconnect"),
                   stop_transaction_on_invalid_id=variables.get_bool("TxCtrlr", "StopTxOnInvalidId"),
                   authorize_remote_tx_requests=variables.get_bool("AuthCtrlr", "AuthorizeRemoteStart"),
                   unlock_on_ev_side_disconnect=variables.get_bool("OCPPCommCtrlr", "UnlockOnEVSideDisconnect"),
                   unlock_stops_transaction=False,
                   # E10.FR.02: a tethered cable's EV has EVConnectionTimeOut to come back to a suspended transaction
                   ev_reconnect_timeout=True,
                   # E06.FR.02: with EVConnected the only stop point the transaction outlives a local stop until the
                   # unplug; no second session may begin inside it
                   unplug_before_next_transaction=parse_points(variables.get_list("TxCtrlr", "TxStopPoint"))
                   == {TxPoint.EV_CONNECTED})


class SessionSettings:
    def __init__(self, variables: DeviceModel, connectors: dict[int, ConnectorController]) -> None:
        self.variables = variables
        self.connectors = connectors
        variables.on_change(self._changed, _LIVE)

    def _changed(self, key: VariableKey, value: str) -> None:
        for ctrl in self.connectors.values():
            ctrl.configure(session_config(ctrl.machine.config, self.variables))
