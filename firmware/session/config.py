"""Behaviour switches of the session machine: the settings both OCPP versions expose, by our names.

Each field notes the OCPP 1.6 configuration key and the OCPP 2.0.1 variable that set it, so the
adapters can keep the machine's config in step with what the CSMS configures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from firmware.session.id_token import IdToken, require_token
from hal.duty_cycle import MAX_CURRENT_A, MIN_CURRENT_A
from hal.types import FaultCode

#: Faults that stop charging (power off, transaction stopped, status Faulted) unless the event says
#: otherwise. ``LINK_LOST`` is not here: a lost meter or card reader only warns, while the agent
#: raises a lost *board* link with ``blocking=True`` (it knows which device went silent).
DEFAULT_BLOCKING_FAULTS: frozenset[FaultCode] = frozenset({
    FaultCode.RCD_TRIP,
    FaultCode.OVERTEMPERATURE,
    FaultCode.DIODE_FAILURE,
    FaultCode.CONTACTOR_WELDED,
    FaultCode.CONTACTOR_FAILED_TO_CLOSE,
    FaultCode.VENTILATION_REQUIRED,
    FaultCode.CONNECTOR_LOCK_FAILURE,
    FaultCode.DEVICE_ERROR,
})


@dataclass(frozen=True)
class SessionConfig:
    #: Rated current of the connector (A): the most ever offered, whatever the limit says.
    max_current_amps: float = 32.0
    #: 1.6 ``ConnectionTimeOut`` / 2.0.1 ``TxCtrlr.EVConnectionTimeOut``: seconds an identified
    #: user has to plug in before the connector returns to Available.
    connection_timeout_s: float = 60.0
    #: 1.6 ``AuthorizeRemoteTxRequests`` / 2.0.1 ``AuthCtrlr.AuthorizeRemoteStart``.
    authorize_remote_tx_requests: bool = False
    #: 1.6 ``StopTransactionOnEVSideDisconnect`` / 2.0.1 ``TxCtrlr.StopTxOnEVSideDisconnect``.
    stop_transaction_on_ev_side_disconnect: bool = True
    #: 1.6 ``StopTransactionOnInvalidId`` / 2.0.1 ``TxCtrlr.StopTxOnInvalidId``: when the CSMS
    #: rejects the id of a started transaction, stop it (True) or only stop energy (False).
    stop_transaction_on_invalid_id: bool = True
    #: Unlock during a transaction: 1.6 stops it with reason UnlockCommand and unlocks (True);
    #: 2.0.1 (F05.FR.02) refuses with OngoingAuthorizedTransaction (False).
    unlock_stops_transaction: bool = True
    #: The socket has a cable lock actuator (False: a tethered cable or a socket without a lock; unlock is
    #: NotSupported). The agent sets it from the connector's ``cable`` setting (docs/configuration.md).
    cable_lock: bool = True
    #: 1.6 ``UnlockConnectorOnEVSideDisconnect`` / 2.0.1 ``OCPPCommCtrlr.UnlockOnEVSideDisconnect``: when the EV
    #: unplugs and that ends the transaction, open the lock (True) or keep the cable locked for its owner
    #: (False: the owner's id or an unlock command releases it, as after a DeAuthorized stop).
    unlock_on_ev_side_disconnect: bool = True
    #: The EV is connected by a cable fixed to the station (IEC 61851-1 case C), not a socket-outlet: nothing stays in
    #: the station once the EV leaves. The agent sets it from the connector's ``cable`` setting.
    tethered_cable: bool = False
    #: A transaction an unplug left open (``stop_transaction_on_ev_side_disconnect`` False) on a tethered cable ends
    #: (StopReason Timeout, trigger EVConnectTimeout) when the EV is not back within ``connection_timeout_s``:
    #: 2.0.1 E10.FR.02 (True). 1.6 (False): ConnectionTimeOut only bounds the wait from Preparing to a transaction's
    #: start; a suspended transaction waits for its EV, its owner's id or a remote stop.
    ev_reconnect_timeout: bool = False
    #: After a transaction stopped with the EV still connected (Finishing), a new one waits for the EV to leave: a
    #: tap is refused (``RefusalReason.UNPLUG_FIRST``), so is a remote start. 1.6 (False): a tap in Finishing starts
    #: a new transaction (§4.9 F2). 2.0.1 with TxStopPoint EVConnected alone (True): the transaction goes on until the
    #: unplug (E06.FR.02), and a second authorization must not start another session inside it.
    unplug_before_next_transaction: bool = False
    #: Charging without authorization means (1.6 §4.9 A3): plugging in starts a transaction for
    #: this id token at once. ``None``: every transaction needs an authorized id. A configured 1.6
    #: idTag is ``IdToken(tag, Local)`` (the station's own id); 2.0.1 has ``NoAuthorization`` with "".
    free_vend_id_token: IdToken | None = None
    #: 2.0.1 ``AuthCtrlr.MasterPassGroupId`` (1.6 has none): an id accepted with this parent (group) id is a master
    #: pass — it starts nothing (C16.FR.03) and stops the transaction here (stoppedReason MasterPass; the charger
    #: stops the others, C16.FR.02). While set, another id presented during a transaction is always authorized
    #: (it may be a master pass), not only when the transaction has a group. ``None``: no master pass.
    master_pass_group: IdToken | None = None
    #: Faults that stop charging; others are reported as warnings while charging continues.
    blocking_faults: frozenset[FaultCode] = field(default=DEFAULT_BLOCKING_FAULTS)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_current_amps) and MIN_CURRENT_A <= self.max_current_amps
                <= MAX_CURRENT_A):
            raise ValueError(f"max_current_amps: expected {MIN_CURRENT_A}..{MAX_CURRENT_A} A, "
                             f"got {self.max_current_amps!r}")
        if not (math.isfinite(self.connection_timeout_s) and self.connection_timeout_s > 0):
            raise ValueError(f"connection_timeout_s: expected > 0 s, got {self.connection_timeout_s!r}")
        require_token(self.free_vend_id_token, "free_vend_id_token", optional=True)
        require_token(self.master_pass_group, "master_pass_group", optional=True)
