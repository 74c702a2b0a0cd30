"""What can happen to a connector: the inputs of :class:`~firmware.session.machine.SessionMachine`.

Small frozen dataclasses, independent of any OCPP version. The agent translates board and reader
events (``hal.interfaces``), CSMS requests and answers (the OCPP adapters) and timer expiries
into these. Requests from the CSMS are answered by effects (``RemoteStartResult`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from firmware.session.id_token import IdToken, require_token
from hal.types import FaultCode, PilotState


class AuthStatus(StrEnum):
    """Outcome of authorizing an id token (1.6 ``AuthorizationStatus`` plus 2.0.1's ``Unknown``)."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"
    UNKNOWN = "Unknown"


class AuthSource(StrEnum):
    """Who vouched for an id token; carried into ``TransactionStarted`` for the adapters' records."""

    ONLINE = "online"
    CACHE = "cache"
    LOCAL_LIST = "local_list"
    OFFLINE_ALLOWED = "offline_allowed"  # unknown id accepted while offline (AllowOfflineTxForUnknownId)


# --- from the hardware ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PilotChanged:
    """The control pilot state sensed by the board changed (IEC 61851-1 A..F)."""

    state: PilotState


@dataclass(frozen=True)
class CardPresented:
    """An id token was presented at this connector's reader (the card's UID, typed by the reader's technology)."""

    id_token: IdToken

    def __post_init__(self) -> None:
        require_token(self.id_token, "CardPresented.id_token")


@dataclass(frozen=True)
class FaultRaised:
    """A fault became active. ``source`` names the device so equal codes from two devices stay
    apart; ``blocking`` overrides :attr:`SessionConfig.blocking_faults` (``None``: use the config)."""

    code: FaultCode
    detail: str = ""
    source: str = ""
    blocking: bool | None = None


@dataclass(frozen=True)
class FaultCleared:
    code: FaultCode
    source: str = ""


@dataclass(frozen=True)
class EmergencyStop:
    """The emergency stop was pressed: power off now, transaction stopped, status Faulted."""

    detail: str = ""


@dataclass(frozen=True)
class EmergencyStopReleased:
    pass


@dataclass(frozen=True)
class PowerRestored:
    """First event after a restore from a snapshot taken before the power went away (or a reboot).

    ``pilot`` is the pilot state sensed now, if the board already reported it. ``reboot`` says the
    restart was commanded (firmware update, local reboot) rather than a loss of supply.
    """

    pilot: PilotState | None = None
    reboot: bool = False


# --- from authorization ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizationResult:
    """Answer to a ``RequestAuthorization`` effect (local list, cache, CSMS or offline policy)."""

    id_token: IdToken
    status: AuthStatus
    parent_id_token: IdToken | None = None
    source: AuthSource = AuthSource.ONLINE
    #: a reservation of the charger as a whole (1.6 connector 0) this id (or its group) holds: a transaction it
    #: starts here uses it (``TransactionStarted.reservation_id``). Set by the charger, which keeps those.
    reservation_id: int | None = None

    def __post_init__(self) -> None:
        require_token(self.id_token, "AuthorizationResult.id_token")
        require_token(self.parent_id_token, "AuthorizationResult.parent_id_token", optional=True)


# --- from the CSMS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteStartRequested:
    id_token: IdToken  # 1.6: the idTag as Central (IdToken.from_ocpp16); 2.0.1: the request's idToken
    parent_id_token: IdToken | None = None  # 2.0.1 groupIdToken, when the request carries one
    reservation_id: int | None = None  # as AuthorizationResult.reservation_id

    def __post_init__(self) -> None:
        require_token(self.id_token, "RemoteStartRequested.id_token")
        require_token(self.parent_id_token, "RemoteStartRequested.parent_id_token", optional=True)


@dataclass(frozen=True)
class RemoteStopRequested:
    pass


@dataclass(frozen=True)
class MasterPassPresented:
    """An id of the master pass group was accepted at the charger (2.0.1 C16.FR.02: a charger without a user
    interface stops every ongoing transaction): stop this connector's, and end an authorization waiting for its EV.
    The connector it was presented at acts on its own ``AuthorizationResult`` first (stops its transaction, or
    refuses to start one and then gets this event too)."""

    id_token: IdToken

    def __post_init__(self) -> None:
        require_token(self.id_token, "MasterPassPresented.id_token")


@dataclass(frozen=True)
class AvailabilityChanged:
    operative: bool


@dataclass(frozen=True)
class ChargingLimitChanged:
    """The effective current limit (smart charging and site cap combined), in amperes."""

    amps: float


@dataclass(frozen=True)
class UnlockRequested:
    pass


@dataclass(frozen=True)
class ResetRequested:
    hard: bool


@dataclass(frozen=True)
class TransactionAccepted:
    """The CSMS accepted the id of a started transaction (1.6 StartTransaction.conf idTagInfo,
    2.0.1 TransactionEventResponse idTokenInfo). ``local_id`` names the transaction it answers."""

    local_id: int | None = None
    parent_id_token: IdToken | None = None  # the group, if the CSMS's answer names one

    def __post_init__(self) -> None:
        require_token(self.parent_id_token, "TransactionAccepted.parent_id_token", optional=True)


@dataclass(frozen=True)
class TransactionRejected:
    """The CSMS answered a started transaction with an id status other than Accepted."""

    status: AuthStatus
    local_id: int | None = None


@dataclass(frozen=True)
class ReservationMade:
    reservation_id: int
    id_token: IdToken
    expiry: datetime
    parent_id_token: IdToken | None = None

    def __post_init__(self) -> None:
        require_token(self.id_token, "ReservationMade.id_token")
        require_token(self.parent_id_token, "ReservationMade.parent_id_token", optional=True)


@dataclass(frozen=True)
class ReservationCancelled:
    reservation_id: int


# --- from the timers the machine asked for --------------------------------------------------------


@dataclass(frozen=True)
class TimerExpired:
    name: str


Event = (
    PilotChanged | CardPresented | FaultRaised | FaultCleared | EmergencyStop | EmergencyStopReleased
    | PowerRestored | AuthorizationResult | RemoteStartRequested | RemoteStopRequested
    | AvailabilityChanged | ChargingLimitChanged | UnlockRequested | ResetRequested
    | TransactionAccepted | TransactionRejected | ReservationMade | ReservationCancelled | TimerExpired
    | MasterPassPresented
)

#: Every event type, in the order the transition table and docs list them.
EVENT_TYPES: tuple[type[Event], ...] = (
    PilotChanged, CardPresented, AuthorizationResult, RemoteStartRequested, RemoteStopRequested,
    AvailabilityChanged, FaultRaised, FaultCleared, EmergencyStop, EmergencyStopReleased,
    ChargingLimitChanged, TimerExpired, UnlockRequested, ResetRequested, TransactionAccepted,
    TransactionRejected, ReservationMade, ReservationCancelled, PowerRestored, MasterPassPresented,
)
