"""The nine connector statuses and which changes between them may be reported.

The statuses are OCPP 1.6's ``ChargePointStatus`` values (§4.9); 2.0.1's coarser
``ConnectorStatusEnumType`` (Available/Occupied/Reserved/Unavailable/Faulted) and ``ChargingState``
are derived from them by the 2.0.1 adapter (see docs/session.md). :data:`PERMITTED` is the §4.9
transition table: the strictest consumer of our status stream, so the machine never reports a
change it does not list (it routes through Available or Preparing instead, see
:func:`route`).
"""

from __future__ import annotations

from enum import StrEnum


class ConnectorStatus(StrEnum):
    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


_S = ConnectorStatus

#: Statuses in which a transaction is open on the connector.
TRANSACTION_STATUSES = frozenset({_S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE})

#: OCPP 1.6 edition 2, §4.9: from-status -> statuses it may change to (cells A2 ... I8).
PERMITTED: dict[ConnectorStatus, frozenset[ConnectorStatus]] = {
    _S.AVAILABLE: frozenset(
        {_S.PREPARING, _S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.RESERVED, _S.UNAVAILABLE,
         _S.FAULTED}),
    _S.PREPARING: frozenset(
        {_S.AVAILABLE, _S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.FAULTED}),
    _S.CHARGING: frozenset(
        {_S.AVAILABLE, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE, _S.FAULTED}),
    _S.SUSPENDED_EV: frozenset(
        {_S.AVAILABLE, _S.CHARGING, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE, _S.FAULTED}),
    _S.SUSPENDED_EVSE: frozenset(
        {_S.AVAILABLE, _S.CHARGING, _S.SUSPENDED_EV, _S.FINISHING, _S.UNAVAILABLE, _S.FAULTED}),
    _S.FINISHING: frozenset({_S.AVAILABLE, _S.PREPARING, _S.UNAVAILABLE, _S.FAULTED}),
    _S.RESERVED: frozenset({_S.AVAILABLE, _S.PREPARING, _S.UNAVAILABLE, _S.FAULTED}),
    _S.UNAVAILABLE: frozenset(
        {_S.AVAILABLE, _S.PREPARING, _S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FAULTED}),
    _S.FAULTED: frozenset(set(_S) - {_S.FAULTED}),
}

# Where a change the table does not list goes through: "usage ended" (Available) or "usage
# initiated" (Preparing). E.g. Finishing -> Charging is reported Finishing, Preparing, Charging.
_VIA = (_S.AVAILABLE, _S.PREPARING)


def permitted(old: ConnectorStatus, new: ConnectorStatus) -> bool:
    return new in PERMITTED[old]


def route(old: ConnectorStatus, new: ConnectorStatus) -> list[ConnectorStatus]:
    """Statuses to report, in order, to get from ``old`` to ``new`` using permitted changes only.

    ``[]`` when ``old == new``; ``[new]`` when permitted directly; otherwise one intermediate
    status then ``new``. Falls back to ``[new]`` if no one-hop route exists (none does for the
    machine's own changes; the tests check every reported change against :data:`PERMITTED`).
    """
    if old == new:
        return []
    if permitted(old, new):
        return [new]
    for via in _VIA:
        if via not in (old, new) and permitted(old, via) and permitted(via, new):
            return [via, new]
    return [new]
