"""Reservations of the charger: ReserveNow / CancelReservation routed to the connectors, and the reservation of
the charger as a whole (OCPP 1.6 connector 0, 2.0.1 a reservation without an EVSE), for any front end.

A reservation of one connector lives in that connector's session machine (status Reserved, its expiry timer,
its snapshot). A reservation of the whole charger ("connector 0") names no connector: the charger keeps one
connector free for its id (1.6 §5.13: "at any time during the validity of the reservation, one connector
remains available for the reserved idTag"). It is kept here:

* while two or more connectors are free (Available) it is held here only: every connector shows Available and
  anybody may start, since one stays free;
* once only one is left, that connector gets it as an ordinary reservation (ReservationMade): it shows Reserved
  and admits only the id or its group (MicroOcpp #434, OCTT TC_049); when a second connector becomes free again
  it is withdrawn (the connector shows Available);
* the id (or an id of its group) starting anywhere uses it: :meth:`Reservations.amend` marks the event that
  starts that session with the reservation's id (the transaction carries it), and the reservation ends;
* it expires on time (its own timer, re-armed after a restart) and ends when the whole charger is Unavailable or
  Faulted. One at a time: another charger-wide reservation while one is held is Occupied.

A reservation that ends unused — expired, or removed by the charger (its connector, or the whole charger for the
charger-wide one, made Unavailable or Faulted) — is told to :attr:`Reservations.end_listeners` once, with the
reservation's id and why (OCPP 2.0.1 reports it with ReservationStatusUpdate; 1.6 has no such message). One the
CSMS cancelled or a session used is not: the CSMS knows.

Durable: the charger-wide reservation is in the settings store (with the machines' snapshots, in the connector's
commit where a machine uses it), so it survives a power cut and still expires on time. No OCPP types here: the
adapter maps :class:`~firmware.session.ReservationStatus` to its protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from firmware.charger.connector import ConnectorController
from firmware.session import (
    AuthorizationResult,
    AuthStatus,
    ConnectorStatus,
    Effect,
    IdToken,
    RemoteStartRequested,
    ReservationCancelled,
    ReservationEnded,
    ReservationEndReason,
    ReservationMade,
    ReservationResult,
    ReservationStatus,
    SnapshotError,
    same_token,
)
from firmware.session.events import Event
from firmware.session.id_token import IdTokenType, mask_token
from firmware.storage import Database
from firmware.storage.settings import Settings
from hal.interfaces import MeterReading, utcnow

log = logging.getLogger(__name__)

#: The charger-wide reservation, as JSON (absent or "": none).
SETTING_KEY = "reservation.charger"

_UNUSED = (ReservationEndReason.EXPIRED, ReservationEndReason.REMOVED)


@dataclass(frozen=True)
class ChargerReservation:
    reservation_id: int
    id_token: IdToken
    parent_id_token: IdToken | None
    expiry: datetime

    def admits(self, id_token: IdToken, parent_id_token: IdToken | None) -> bool:
        """The reserved id, or an id of the reservation's group."""
        return same_token(id_token, self.id_token) or (
            self.parent_id_token is not None and same_token(parent_id_token, self.parent_id_token))

    def to_json(self) -> str:
        def tok(t: IdToken | None) -> dict[str, str] | None:
            return None if t is None else {"value": t.value, "type": t.type.value}
        return json.dumps({"reservation_id": self.reservation_id, "id_token": tok(self.id_token),
                           "parent_id_token": tok(self.parent_id_token), "expiry": self.expiry.isoformat()})

    @classmethod
    def from_json(cls, raw: str) -> ChargerReservation:
        """Raises :class:`SnapshotError` for anything malformed (a corrupt record is dropped, never half-used)."""
        try:
            data = json.loads(raw)
            if not isinstance(data, Mapping):
                raise TypeError("not an object")

            def tok(v: object) -> IdToken | None:
                if v is None:
                    return None
                if not isinstance(v, Mapping) or not isinstance(v.get("value"), str):
                    raise TypeError(f"bad id token {v!r}")
                return IdToken(v["value"], IdTokenType(str(v.get("type"))))
            rid, expiry = data["reservation_id"], datetime.fromisoformat(data["expiry"])
            token = tok(data["id_token"])
            if isinstance(rid, bool) or not isinstance(rid, int) or token is None or expiry.tzinfo is None:
                raise TypeError("bad reservation id, id token or expiry")
            return cls(rid, token, tok(data.get("parent_id_token")), expiry)
        except (ValueError, TypeError, KeyError) as exc:
            raise SnapshotError(f"charger reservation: {exc}") from None


# --- the rules (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorState:
    """What the rules need of one connector."""

    id: int
    status: ConnectorStatus
    reservation_id: int | None  # the reservation its machine holds, if any


def charger_wide_answer(connectors: list[ConnectorState], held: ChargerReservation | None,
                        reservation_id: int) -> ReservationStatus:
    """ReserveNow for the whole charger: Accepted while a connector is free for it (Available, or holding a
    reservation with this very id, which the new one replaces); else the most telling reason none is: Occupied
    when a connector is in use or reserved, Faulted when all that is left is faulted, else Unavailable. Another
    charger-wide reservation already held: Occupied (one at a time)."""
    if held is not None and held.reservation_id != reservation_id:
        return ReservationStatus.OCCUPIED
    if any(c.status is ConnectorStatus.AVAILABLE or c.reservation_id == reservation_id for c in connectors):
        return ReservationStatus.ACCEPTED
    if not connectors or all(c.status is ConnectorStatus.UNAVAILABLE for c in connectors):
        return ReservationStatus.UNAVAILABLE
    if any(c.status not in (ConnectorStatus.FAULTED, ConnectorStatus.UNAVAILABLE) for c in connectors):
        return ReservationStatus.OCCUPIED
    return ReservationStatus.FAULTED


def placement(connectors: list[ConnectorState], held: ChargerReservation) -> tuple[int | None, int | None]:
    """Where the charger-wide reservation should show: ``(place_on, withdraw_from)``. It shows on the last free
    connector (Reserved), and is withdrawn from it when another one is free again."""
    placed = next((c.id for c in connectors if c.reservation_id == held.reservation_id), None)
    free = [c.id for c in connectors if c.status is ConnectorStatus.AVAILABLE and c.reservation_id is None]
    if placed is None and len(free) == 1:
        return free[0], None
    if placed is not None and free:
        return None, placed
    return None, None


def charger_out_of_service(connectors: list[ConnectorState]) -> bool:
    """Every connector Unavailable or Faulted: the charger as a whole is, and a charger-wide reservation ends."""
    return all(c.status in (ConnectorStatus.UNAVAILABLE, ConnectorStatus.FAULTED) for c in connectors)


# --- the glue -----------------------------------------------------------------------------------------


class Reservations:
    """The charger's reservations (see the module docstring). A connector observer and event amender of every
    connector it is :meth:`attach`-ed to."""

    def __init__(self, connectors: dict[int, ConnectorController], db: Database) -> None:
        self.connectors = connectors
        self._settings = Settings(db)
        self.held: ChargerReservation | None = self._load()
        self._timer: asyncio.TimerHandle | None = None
        self._lock = asyncio.Lock()  # one reservation change or re-plan at a time
        self._tasks: set[asyncio.Task[None]] = set()
        self._stale: set[int] = set()  # ended charger-wide reservations a connector may still show
        self._offered: dict[int, int] = {}  # connector -> the charger-wide reservation amend gave its event
        #: told (reservation id, EXPIRED or REMOVED) when a reservation ends unused (see the module docstring)
        self.end_listeners: list[Callable[[int, ReservationEndReason], None]] = []

    def _load(self) -> ChargerReservation | None:
        raw = self._settings.get(SETTING_KEY)
        if not raw:
            return None
        try:
            return ChargerReservation.from_json(raw)
        except SnapshotError as exc:
            log.error("charger reservation unusable, dropped", extra={"error": str(exc)})
            return None

    def attach(self, ctrl: ConnectorController) -> None:
        ctrl.observers.append(self)
        ctrl.amenders.append(self.amend)

    async def start(self) -> None:
        """After the connectors restored their machines: expire a charger-wide reservation whose time passed during
        the outage, re-arm the timer of one that still holds, and place it where it belongs."""
        if self.held is not None:
            log.info("charger reservation restored", extra={"reservation_id": self.held.reservation_id,
                                                            "expiry": self.held.expiry.isoformat()})
            self._arm()
        await self.replan()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def states(self) -> list[ConnectorState]:
        out = []
        for cid in sorted(self.connectors):
            m = self.connectors[cid].machine
            out.append(ConnectorState(cid, m.status, None if m.reservation is None else m.reservation.reservation_id))
        return out

    def find(self, reservation_id: int) -> int | None:
        """Where a reservation is: 0 for the charger-wide one (even while a connector shows it), a connector's id,
        or None."""
        if self.held is not None and self.held.reservation_id == reservation_id:
            return 0
        return next((c.id for c in self.states() if c.reservation_id == reservation_id), None)

    # --- requests -------------------------------------------------------------------------------------

    async def reserve(self, connector_id: int, reservation_id: int, id_token: IdToken, expiry: datetime,
                      parent_id_token: IdToken | None = None) -> ReservationStatus:
        """ReserveNow. ``connector_id`` 0: the whole charger; else a connector that exists (the caller checks).
        A reservation with the same id replaces the old one, wherever it was (1.6 §5.13); a new one that cannot be
        made leaves the old one in place."""
        async with self._lock:
            self._stale.discard(reservation_id)  # an id given out again: a connector still showing it is replaced
            if connector_id == 0:
                status = await self._reserve_charger(reservation_id, id_token, expiry, parent_id_token)
            else:
                status = await self._reserve_connector(connector_id, reservation_id, id_token, expiry,
                                                       parent_id_token)
        log.info("reservation requested", extra={"connector": connector_id, "reservation_id": reservation_id,
                                                 "id_token": mask_token(id_token), "expiry": expiry.isoformat(),
                                                 "status": status.value})
        self._schedule_replan()
        return status

    async def _reserve_connector(self, connector_id: int, reservation_id: int, id_token: IdToken,
                                 expiry: datetime, parent: IdToken | None) -> ReservationStatus:
        where = self.find(reservation_id)
        placed = next((c.id for c in self.states() if c.reservation_id == reservation_id), None)
        effects = await self.connectors[connector_id].handle(ReservationMade(reservation_id, id_token, expiry, parent))
        result = next((e for e in effects if isinstance(e, ReservationResult)), None)
        status = result.status if result is not None else ReservationStatus.REJECTED
        if status is ReservationStatus.ACCEPTED and where is not None:
            # the old one with this id is replaced: the charger-wide record is dropped, and the connector that
            # held or showed it (unless it is the one that now holds the new one) lets it go
            if where == 0:
                self._store(None)
            if placed is not None and placed != connector_id:
                await self.connectors[placed].handle(ReservationCancelled(reservation_id))
        return status

    async def _reserve_charger(self, reservation_id: int, id_token: IdToken, expiry: datetime,
                               parent: IdToken | None) -> ReservationStatus:
        if expiry <= utcnow():
            return ReservationStatus.REJECTED
        status = charger_wide_answer(self.states(), self.held, reservation_id)
        if status is not ReservationStatus.ACCEPTED:
            return status
        where = self.find(reservation_id)
        new = ChargerReservation(reservation_id, id_token, parent, expiry)
        placed = next((c.id for c in self.states() if c.reservation_id == reservation_id), None)
        self._store(new)
        self._arm()
        if placed is not None and where == 0:
            # the connector showing the old one shows the new one (same id: the machine replaces it, no status)
            await self.connectors[placed].handle(ReservationMade(reservation_id, id_token, expiry, parent))
        elif placed is not None:
            # the same id was a connector's own reservation: replaced by this one, which names no connector
            await self.connectors[placed].handle(ReservationCancelled(reservation_id))
        return status

    async def cancel(self, reservation_id: int) -> bool:
        """CancelReservation: True (Accepted) if a reservation with this id was held and is gone."""
        async with self._lock:
            where = self.find(reservation_id)
            ok = where is not None and await self._remove(reservation_id, where)
        log.info("reservation cancel requested", extra={"reservation_id": reservation_id, "cancelled": ok})
        self._schedule_replan()
        return ok

    async def _remove(self, reservation_id: int, where: int) -> bool:
        if where == 0:
            self._store(None)
            placed = next((c.id for c in self.states() if c.reservation_id == reservation_id), None)
            if placed is not None:
                await self.connectors[placed].handle(ReservationCancelled(reservation_id))
            return True
        effects = await self.connectors[where].handle(ReservationCancelled(reservation_id))
        return any(isinstance(e, ReservationEnded) and e.reason is ReservationEndReason.CANCELLED for e in effects)

    # --- the charger-wide reservation at work ---------------------------------------------------------

    def amend(self, ctrl: ConnectorController, event: Event) -> Event:
        """An accepted id (or a remote start) at a connector that does not itself hold the charger-wide
        reservation: if the id holds it, the session it starts uses it."""
        self._offered.pop(ctrl.id, None)
        held = self.held
        if held is None or held.expiry <= utcnow():
            return event
        own = ctrl.machine.reservation
        if own is not None and own.reservation_id == held.reservation_id:
            return event  # the machine has it as its own reservation
        amended: AuthorizationResult | RemoteStartRequested
        if isinstance(event, AuthorizationResult) and event.status is AuthStatus.ACCEPTED:
            amended = replace(event, reservation_id=held.reservation_id)
        elif isinstance(event, RemoteStartRequested):
            amended = replace(event, reservation_id=held.reservation_id)
        else:
            return event
        if not held.admits(event.id_token, event.parent_id_token):
            return event
        self._offered[ctrl.id] = held.reservation_id  # record() sees whether the machine took it
        return amended

    def record(self, ctrl: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: datetime) -> None:
        """In the connector's commit: a session that took the charger-wide reservation, or its expiry where a
        connector showed it, ends it (durably, with the machine's snapshot)."""
        offered = self._offered.pop(ctrl.id, None)
        held = self.held
        if held is None:
            return
        m = ctrl.machine
        claimed = offered == held.reservation_id and any(
            (x is not None and x.reservation_id == held.reservation_id) for x in (m.authorization, m.transaction))
        ended = any(isinstance(e, ReservationEnded) and e.reservation_id == held.reservation_id
                    and e.reason in (ReservationEndReason.USED, ReservationEndReason.EXPIRED) for e in effects)
        if claimed or ended:
            self._store(None)
            self._stale.add(held.reservation_id)  # withdrawn from the connector showing it, if another took it
            log.info("charger reservation ended", extra={"reservation_id": held.reservation_id,
                                                         "connector": ctrl.id, "used": claimed})

    async def notify(self, ctrl: ConnectorController, effects: list[Effect]) -> None:
        held = self.held
        for e in effects:
            # a connector's reservation ended unused; the charger-wide one shown there is not over while still held
            if (isinstance(e, ReservationEnded) and e.reason in _UNUSED
                    and (held is None or held.reservation_id != e.reservation_id)):
                self._tell_ended(e.reservation_id, e.reason)
        if any(not isinstance(e, ReservationResult) for e in effects):
            self._schedule_replan()  # nothing to do without a charger-wide reservation held or just ended

    def _schedule_replan(self) -> None:
        if self.held is None and not self._stale:
            return
        task = asyncio.get_running_loop().create_task(self.replan(), name="charger-reservation-replan")
        self._tasks.add(task)
        task.add_done_callback(self._replanned)

    def _replanned(self, task: asyncio.Task[None]) -> None:
        """A short task of its own (not a supervised loop); a failure is logged here, and the next connector
        event plans again (a storage failure has already told the agent to stop)."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("charger reservation re-plan failed", exc_info=task.exception())

    async def replan(self) -> None:
        """Bring where the charger-wide reservation shows in line with which connectors are free (see the module
        docstring); end it when the charger is out of service or its time is up."""
        async with self._lock:
            await self._withdraw_stale()
            held = self.held
            if held is None:
                return
            states = self.states()
            placed = next((c.id for c in states if c.reservation_id == held.reservation_id), None)
            ended = None
            if held.expiry <= utcnow():
                ended = "expired"
            elif charger_out_of_service(states):
                ended = "charger out of service"
            if ended is not None:
                self._store(None)
                log.info("charger reservation ended", extra={"reservation_id": held.reservation_id, "why": ended})
                if placed is not None:
                    await self.connectors[placed].handle(ReservationCancelled(held.reservation_id))
                self._tell_ended(held.reservation_id, ReservationEndReason.EXPIRED if ended == "expired"
                                 else ReservationEndReason.REMOVED)
                return
            place_on, withdraw_from = placement(states, held)
            if withdraw_from is not None:
                log.info("charger reservation no longer shown on a connector",
                         extra={"reservation_id": held.reservation_id, "connector": withdraw_from})
                await self.connectors[withdraw_from].handle(ReservationCancelled(held.reservation_id))
            if place_on is not None:
                log.info("charger reservation shown on the last free connector",
                         extra={"reservation_id": held.reservation_id, "connector": place_on})
                await self.connectors[place_on].handle(ReservationMade(held.reservation_id, held.id_token,
                                                                       held.expiry, held.parent_id_token))

    async def _withdraw_stale(self) -> None:
        stale, self._stale = self._stale, set()
        for c in self.states():
            if c.reservation_id is not None and c.reservation_id in stale:
                log.info("ended charger reservation withdrawn from a connector",
                         extra={"reservation_id": c.reservation_id, "connector": c.id})
                await self.connectors[c.id].handle(ReservationCancelled(c.reservation_id))

    def _tell_ended(self, reservation_id: int, reason: ReservationEndReason) -> None:
        for listener in self.end_listeners:
            try:
                listener(reservation_id, reason)
            except Exception:  # a front end's failure must not stop the charger's reservations
                log.exception("reservation end listener failed", extra={"reservation_id": reservation_id})

    # --- storage and timer ----------------------------------------------------------------------------

    def _store(self, reservation: ChargerReservation | None) -> None:
        """Durable first: written before anybody is told (a commit of its own, or the caller's)."""
        self._settings.put(SETTING_KEY, "" if reservation is None else reservation.to_json())
        self.held = reservation
        if reservation is None and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        held = self.held
        if self._timer is not None:
            self._timer.cancel()
        if held is None:
            return
        # a hair late rather than early: the loop's clock and the wall clock need not agree to the millisecond
        delay = max(0.0, (held.expiry - utcnow()).total_seconds()) + 0.05
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired, held.reservation_id)

    def _expired(self, reservation_id: int) -> None:
        self._timer = None
        if self.held is not None and self.held.reservation_id == reservation_id:
            self._schedule_replan()  # replan ends it (expired) and withdraws it from a connector

