"""Per-connector charging session logic, pure and OCPP-version-agnostic (see docs/session.md).

``SessionMachine(connector_id, config).handle(event, now) -> list[Effect]``: no I/O, no clock, no
asyncio. The agent feeds it board/reader/CSMS/timer events and performs the effects it returns;
the OCPP 1.6 and 2.0.1 adapters map effects to their messages.
"""

from firmware.session.config import DEFAULT_BLOCKING_FAULTS, SessionConfig
from firmware.session.context import SnapshotError, Transaction
from firmware.session.effects import (
    AllowPower,
    AuthorizationDropped,
    AuthorizationHeld,
    AuthPurpose,
    AvailabilityApplied,
    AvailabilityScheduled,
    CancelTimer,
    Effect,
    IdTokenRefused,
    LockCable,
    OfferCurrent,
    RefusalReason,
    RemoteStartResult,
    RemoteStopResult,
    RequestAuthorization,
    ReservationEnded,
    ReservationEndReason,
    ReservationResult,
    ReservationStatus,
    StartTimer,
    StatusChanged,
    StopReason,
    TimerName,
    TransactionStarted,
    TransactionStopped,
    Trigger,
    UnlockResult,
    UnlockStatus,
)
from firmware.session.events import (
    AuthorizationResult,
    AuthSource,
    AuthStatus,
    AvailabilityChanged,
    CardPresented,
    ChargingLimitChanged,
    EmergencyStop,
    EmergencyStopReleased,
    Event,
    FaultCleared,
    FaultRaised,
    MasterPassPresented,
    PilotChanged,
    PowerRestored,
    RemoteStartRequested,
    RemoteStopRequested,
    ReservationCancelled,
    ReservationMade,
    ResetRequested,
    TimerExpired,
    TransactionAccepted,
    TransactionRejected,
    UnlockRequested,
)
from firmware.session.id_token import IdToken, IdTokenType, mask_token, same_token
from firmware.session.machine import TRANSITIONS, SessionMachine, Transition
from firmware.session.status import PERMITTED, ConnectorStatus

__all__ = [
    "DEFAULT_BLOCKING_FAULTS", "PERMITTED", "TRANSITIONS", "AllowPower", "AuthPurpose", "AuthSource",
    "AuthStatus", "AuthorizationDropped",
    "AuthorizationHeld", "AuthorizationResult", "AvailabilityApplied", "AvailabilityChanged", "AvailabilityScheduled",
    "CancelTimer", "CardPresented", "ChargingLimitChanged", "ConnectorStatus", "Effect", "EmergencyStop",
    "EmergencyStopReleased", "Event", "FaultCleared", "FaultRaised", "IdToken", "IdTokenRefused", "IdTokenType",
    "LockCable", "MasterPassPresented", "OfferCurrent", "PilotChanged", "PowerRestored", "RefusalReason",
    "RemoteStartRequested", "RemoteStartResult", "RemoteStopRequested", "RemoteStopResult", "RequestAuthorization",
    "ReservationCancelled", "ReservationEndReason", "ReservationEnded", "ReservationMade",
    "ReservationResult", "ReservationStatus", "ResetRequested", "SessionConfig", "SessionMachine",
    "SnapshotError", "StartTimer", "StatusChanged", "StopReason", "TimerExpired", "TimerName", "Transaction",
    "TransactionAccepted", "TransactionRejected", "TransactionStarted", "TransactionStopped", "Transition",
    "Trigger", "UnlockRequested", "UnlockResult", "UnlockStatus", "mask_token", "same_token",
]
