"""TxCtrlr.TxStartPoint / TxStopPoint: where an OCPP 2.0.1 transaction begins and ends (E01, E06), decided from
what an EVSE shows before and after one of its session machine's steps. Pure: no I/O, no OCPP messages.

The session machine knows no OCPP version: its own transaction is "an id authorized and the EV connected" (what
2.0.1 calls PowerPathClosed, and 1.6's only kind). A 2.0.1 transaction may begin earlier (the EV connected, an id
authorized while no EV is there yet) or later (energy flowing), and end earlier (energy stopped) or later (the EV
gone, after a local stop) than the machine's; :mod:`~firmware.ocpp.v201.transactions` keeps it from these rules:

* it starts at the first start point reached: the EV connected (EVConnected), an id authorized (Authorized), both
  (PowerPathClosed), or the EVSE charging (EnergyTransfer);
* it ends at the first stop point reached: the EV disconnected (EVConnected), the authorization ended — a local or
  remote stop, a deauthorization, the EV connection timeout (Authorized), either of those (PowerPathClosed), or the
  energy transfer stopped (EnergyTransfer);
* and in any case once the EVSE has neither an EV nor an authorization: nothing could continue it.

ParkingBayOccupancy and DataSigned are not available on this hardware (no parking bay sensor, no signed meter
data): the device model does not list them, so a SetVariables with them is Rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from firmware.session import ConnectorStatus, SessionMachine


class TxPoint(StrEnum):
    EV_CONNECTED = "EVConnected"
    AUTHORIZED = "Authorized"
    POWER_PATH_CLOSED = "PowerPathClosed"
    ENERGY_TRANSFER = "EnergyTransfer"


#: TxStartPoint / TxStopPoint values of 2.0.1 this hardware cannot observe.
NOT_ON_THIS_HARDWARE = ("ParkingBayOccupancy", "DataSigned")
_DEFAULT = frozenset({TxPoint.POWER_PATH_CLOSED})


def parse_points(members: list[str]) -> frozenset[TxPoint]:
    """A MemberList's points; an empty list (or only unknown members) as the default PowerPathClosed."""
    points = frozenset(TxPoint(m) for m in members if m in TxPoint.__members__.values())
    return points or _DEFAULT


@dataclass(frozen=True)
class EvseFacts:
    """What the start and stop points are about, at one moment."""

    ev: bool = False  # an EV connected (pilot B, C or D)
    authorized: bool = False  # an id authorized here: held for the EV, or the machine's transaction
    power_path: bool = False  # the machine's transaction with the EV connected
    energy: bool = False  # the EVSE is charging

    @classmethod
    def of(cls, machine: SessionMachine) -> EvseFacts:
        tx = machine.transaction is not None
        return cls(ev=machine.ev_connected, authorized=tx or machine.authorization is not None,
                   power_path=tx and machine.ev_connected, energy=machine.status is ConnectorStatus.CHARGING)


def start_point_reached(points: frozenset[TxPoint], before: EvseFacts, after: EvseFacts) -> TxPoint | None:
    """The start point this step reached, if any (in the order they usually come)."""
    rose = {TxPoint.EV_CONNECTED: after.ev and not before.ev,
            TxPoint.AUTHORIZED: after.authorized and not before.authorized,
            TxPoint.POWER_PATH_CLOSED: after.power_path and not before.power_path,
            TxPoint.ENERGY_TRANSFER: after.energy and not before.energy}
    return next((p for p in TxPoint if p in points and rose[p]), None)


def stop_point_reached(points: frozenset[TxPoint], before: EvseFacts, after: EvseFacts) -> TxPoint | None:
    """The stop point this step reached, if any; a transaction with neither EV nor authorization left ends too
    (reported as PowerPathClosed: both conditions are gone)."""
    ev_lost = before.ev and not after.ev
    auth_ended = before.authorized and not after.authorized
    fell = {TxPoint.EV_CONNECTED: ev_lost, TxPoint.AUTHORIZED: auth_ended,
            TxPoint.POWER_PATH_CLOSED: ev_lost or auth_ended,
            TxPoint.ENERGY_TRANSFER: before.energy and not after.energy}
    reached = next((p for p in TxPoint if p in points and fell[p]), None)
    if reached is None and not after.ev and not after.authorized:
        return TxPoint.POWER_PATH_CLOSED
    return reached
