"""What the machine asks the rest of the charger to do: the outputs of ``SessionMachine.handle``.

The executor performs them in list order (the order is part of the contract: power goes off
before a status leaves Charging, the cable locks before current is offered). Effects carry no
meter readings or timestamps: the executor adds those when it turns e.g. ``TransactionStopped``
into an OCPP message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware.session.events import AuthSource, AuthStatus
from firmware.session.id_token import IdToken
from firmware.session.status import ConnectorStatus
from hal.types import FaultCode


class StopReason(StrEnum):
    """Why a transaction stopped: the OCPP 1.6 ``Reason`` values, and MasterPass, which 1.6 has not (2.0.1's
    ``ReasonEnumType``; the 1.6 adapter sends Local for it). Each adapter's mapping in docs/session.md."""

    LOCAL = "Local"
    REMOTE = "Remote"
    EV_DISCONNECTED = "EVDisconnected"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    HARD_RESET = "HardReset"
    SOFT_RESET = "SoftReset"
    DE_AUTHORIZED = "DeAuthorized"
    EMERGENCY_STOP = "EmergencyStop"
    UNLOCK_COMMAND = "UnlockCommand"
    OTHER = "Other"
    TIMEOUT = "Timeout"  # the EV did not come back in time (2.0.1 E10.FR.02); 1.6 has no such Reason: sent as Other
    MASTER_PASS = "MasterPass"  # an id of the master pass group stopped it (2.0.1 C16)


class Trigger(StrEnum):
    """What caused a status change or transaction start/stop. Named like 2.0.1's
    ``TriggerReasonEnumType`` so that adapter maps one-to-one; the 1.6 adapter ignores it."""

    AUTHORIZED = "Authorized"
    REMOTE_START = "RemoteStart"
    CABLE_PLUGGED_IN = "CablePluggedIn"
    EV_COMMUNICATION_LOST = "EVCommunicationLost"  # cable unplugged (2.0.1 uses EVDeparted for parking bays)
    CHARGING_STATE_CHANGED = "ChargingStateChanged"
    CHARGING_RATE_CHANGED = "ChargingRateChanged"
    DEAUTHORIZED = "Deauthorized"
    STOP_AUTHORIZED = "StopAuthorized"
    REMOTE_STOP = "RemoteStop"
    UNLOCK_COMMAND = "UnlockCommand"
    RESET_COMMAND = "ResetCommand"
    ABNORMAL_CONDITION = "AbnormalCondition"
    EV_CONNECT_TIMEOUT = "EVConnectTimeout"


class AuthPurpose(StrEnum):
    START = "start"  # a tap to start charging
    STOP = "stop"  # a different id trying to stop: we need its parent (group) id
    REMOTE_START = "remote_start"  # AuthorizeRemoteTxRequests is on


class RefusalReason(StrEnum):
    """Why an id token was turned away; for the UI (display, buzzer)."""

    NOT_AUTHORIZED = "not_authorized"  # authorization answered other than Accepted
    NOT_OWNER = "not_owner"  # neither the id nor its group started the running transaction
    RESERVED = "reserved"  # the connector is reserved for another id
    UNAVAILABLE = "unavailable"
    FAULTED = "faulted"
    UNPLUG_FIRST = "unplug_first"  # the last transaction's EV is still connected: a new one waits for the unplug
    MASTER_PASS = "master_pass"  # an id of the master pass group: it stops transactions, never starts one


class UnlockStatus(StrEnum):
    UNLOCKED = "Unlocked"  # unlock commanded; the executor reports UnlockFailed if the actuator fails
    UNLOCK_FAILED = "UnlockFailed"  # never emitted by the machine: the executor's verdict on the lock's feedback
    NOT_SUPPORTED = "NotSupported"  # tethered cable
    ONGOING_TRANSACTION = "OngoingAuthorizedTransaction"  # 2.0.1 behaviour, unlock_stops_transaction off


class ReservationStatus(StrEnum):
    """Answer to a reservation request (1.6 ``ReservationStatus`` / 2.0.1 ``ReserveNowStatusEnumType``)."""

    ACCEPTED = "Accepted"
    OCCUPIED = "Occupied"
    FAULTED = "Faulted"
    UNAVAILABLE = "Unavailable"
    REJECTED = "Rejected"


class ReservationEndReason(StrEnum):
    USED = "used"  # the reserved id (or its group) started using the connector
    EXPIRED = "expired"
    CANCELLED = "cancelled"  # by the CSMS
    REMOVED = "removed"  # by the charger: the connector was made inoperative


class TimerName(StrEnum):
    CONNECTION_TIMEOUT = "ConnectionTimeOut"
    RESERVATION_EXPIRY = "ReservationExpiry"


# --- hardware -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferCurrent:
    """Pilot PWM offering ``amps``; 0 means no PWM (steady +12 V)."""

    amps: float


@dataclass(frozen=True)
class AllowPower:
    """Grant (``on``) or withdraw the permission to energize: ``EvseBoard.allow_power``, IEC 61851
    "ready to supply" (x2). With it the board closes the contactor while the EV is in C/D and opens
    it in B; without it the contactor stays open. Granted exactly while ``OfferCurrent`` >= 6 A."""

    on: bool


@dataclass(frozen=True)
class LockCable:
    locked: bool


# --- reporting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusChanged:
    """The connector's status (or its error, or whether an EV is plugged in) changed."""

    status: ConnectorStatus
    ev_connected: bool = False
    error: FaultCode | None = None
    info: str = ""
    trigger: Trigger | None = None


@dataclass(frozen=True)
class TransactionStarted:
    local_id: int  # per connector, increasing, survives restore: pairs Started with Stopped
    id_token: IdToken
    trigger: Trigger
    parent_id_token: IdToken | None = None
    auth_source: AuthSource | None = None  # None: remote start without authorization, or free vend
    reservation_id: int | None = None
    remote_start: bool = False


@dataclass(frozen=True)
class TransactionStopped:
    local_id: int
    reason: StopReason
    trigger: Trigger
    id_token: IdToken  # who started it
    stopped_by: IdToken | None = None  # the id that stopped it (Local stops); None when the charger did
    fault: FaultCode | None = None  # the fault that stopped it, if any


# --- authorization and user feedback --------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizationHeld:
    """An id was authorized here and waits for the EV (identify-first): no transaction yet. For an adapter whose
    transaction may begin at the authorization (2.0.1 TxStartPoint Authorized); 1.6 ignores it."""

    id_token: IdToken
    trigger: Trigger  # Authorized, or RemoteStart
    reservation_id: int | None = None


@dataclass(frozen=True)
class AuthorizationDropped:
    """A held authorization ended without a transaction: the EV did not come in time (EVConnectTimeout), the same
    id was presented again (StopAuthorized), the connector was made inoperative or failed (AbnormalCondition)."""

    id_token: IdToken
    trigger: Trigger
    reason: StopReason | None = None  # who ended it when it was not its own id (MasterPass); None: the trigger says


@dataclass(frozen=True)
class RequestAuthorization:
    """Authorize ``id_token``; answer with an ``AuthorizationResult`` event.

    ``group``: the connector is reserved for this parent id (and ``id_token`` is not the reserved id): only a
    member of the group may use it. The executor may answer from what it already knows of the id's parent
    (1.6: the Local Authorization List or the Authorization Cache) without asking the CSMS; the machine
    compares the answer's parent id with the group either way."""

    id_token: IdToken
    purpose: AuthPurpose
    group: IdToken | None = None


@dataclass(frozen=True)
class IdTokenRefused:
    """An id token was turned away; tells the UI why."""

    id_token: IdToken
    reason: RefusalReason
    auth_status: AuthStatus | None = None


# --- timers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartTimer:
    """(Re)start the named timer; when it runs out, feed ``TimerExpired(name)``."""

    name: TimerName
    seconds: float


@dataclass(frozen=True)
class CancelTimer:
    name: TimerName


# --- answers to CSMS requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class AvailabilityApplied:
    operative: bool


@dataclass(frozen=True)
class AvailabilityScheduled:
    """Accepted, but applies when the running transaction (or reservation) ends."""

    operative: bool


@dataclass(frozen=True)
class RemoteStartResult:
    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class RemoteStopResult:
    accepted: bool
    reason: str = ""


@dataclass(frozen=True)
class UnlockResult:
    status: UnlockStatus


@dataclass(frozen=True)
class ReservationResult:
    reservation_id: int
    status: ReservationStatus


@dataclass(frozen=True)
class ReservationEnded:
    """A reservation ended; a ``CANCELLED`` one is the acceptance of ``ReservationCancelled``."""

    reservation_id: int
    reason: ReservationEndReason


Effect = (
    OfferCurrent | AllowPower | LockCable | StatusChanged | TransactionStarted | TransactionStopped
    | RequestAuthorization | AuthorizationHeld | AuthorizationDropped | IdTokenRefused
    | StartTimer | CancelTimer | AvailabilityApplied
    | AvailabilityScheduled | RemoteStartResult | RemoteStopResult | UnlockResult | ReservationResult
    | ReservationEnded
)
