"""Everything a connector's session remembers besides its status, and its snapshot form.

Kept apart from the machine so the persisted shape is in one place: :meth:`SessionContext.to_dict`
gives plain JSON types (str, int, float, bool, None, lists, dicts; datetimes as ISO 8601; id tokens
as ``{"value", "type"}``), and :meth:`SessionContext.from_dict` checks every field, raising
:class:`SnapshotError` on anything malformed, so a corrupt file on flash is refused rather than
half-trusted. It also reads the first format (version 1, id tokens as bare strings), which an upgraded
charger finds on flash: those tokens come back as :meth:`IdToken.from_ocpp16` makes them (Central),
since nothing recorded their kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from firmware.session.effects import AuthPurpose, Trigger
from firmware.session.events import AuthSource
from firmware.session.id_token import IdToken, IdTokenType
from firmware.session.status import ConnectorStatus
from hal.types import FaultCode, PilotState

E = TypeVar("E", bound=StrEnum)

#: Snapshot format versions :meth:`SessionContext.from_dict` reads: 1 had id tokens as strings, 2 typed.
FIRST_FORMAT, TYPED_TOKENS_FORMAT = 1, 2


class SnapshotError(ValueError):
    """A snapshot cannot be restored; the message names the field and what was wrong."""


@dataclass(frozen=True)
class Transaction:
    local_id: int
    id_token: IdToken
    parent_id_token: IdToken | None
    trigger: Trigger
    auth_source: AuthSource | None
    reservation_id: int | None
    remote_start: bool
    started_at: datetime
    energy_allowed: bool = True  # False once the CSMS rejected the id and StopTransactionOnInvalidId is off


@dataclass(frozen=True)
class Authorization:
    """An accepted id waiting for the EV to be plugged in (identify-first)."""

    id_token: IdToken
    parent_id_token: IdToken | None
    source: AuthSource | None
    remote_start: bool
    reservation_id: int | None = None


@dataclass(frozen=True)
class PendingAuthorization:
    id_token: IdToken
    purpose: AuthPurpose


@dataclass(frozen=True)
class Reservation:
    reservation_id: int
    id_token: IdToken
    parent_id_token: IdToken | None
    expiry: datetime


@dataclass(frozen=True)
class ActiveFault:
    code: FaultCode
    source: str
    detail: str
    blocking: bool


@dataclass(frozen=True)
class Reported:
    """The last status report, so a change of error or plug alone is reported too."""

    status: ConnectorStatus
    ev_connected: bool
    error: FaultCode | None


@dataclass
class SessionContext:
    limit_amps: float
    pilot: PilotState = PilotState.A
    operative: bool = True
    scheduled_operative: bool | None = None  # an availability change waiting for the session to end
    faults: list[ActiveFault] = field(default_factory=list)
    emergency_stop: str | None = None  # detail while the emergency stop is latched
    transaction: Transaction | None = None
    authorization: Authorization | None = None
    pending: PendingAuthorization | None = None
    reservation: Reservation | None = None
    finishing: bool = False  # a transaction ended and the EV has not been unplugged since
    cable_held_for: IdToken | None = None  # owner's id after a DeAuthorized stop: the cable stays locked for them
    reset_pending: bool = False
    next_local_id: int = 1
    timers: dict[str, datetime] = field(default_factory=dict)  # running timer -> deadline
    # what the hardware was last told (the machine only emits changes)
    power_on: bool = False
    offered_amps: float = 0.0
    locked: bool = False
    reported: Reported | None = None

    def to_dict(self) -> dict[str, Any]:
        tx, auth, pend, res, rep = (self.transaction, self.authorization, self.pending,
                                    self.reservation, self.reported)
        return {
            "limit_amps": self.limit_amps,
            "pilot": self.pilot.value,
            "operative": self.operative,
            "scheduled_operative": self.scheduled_operative,
            "faults": [{"code": f.code.value, "source": f.source, "detail": f.detail, "blocking": f.blocking}
                       for f in self.faults],
            "emergency_stop": self.emergency_stop,
            "transaction": None if tx is None else {
                "local_id": tx.local_id, "id_token": _token(tx.id_token),
                "parent_id_token": _opt_token(tx.parent_id_token),
                "trigger": tx.trigger.value,
                "auth_source": None if tx.auth_source is None else tx.auth_source.value,
                "reservation_id": tx.reservation_id, "remote_start": tx.remote_start,
                "started_at": tx.started_at.isoformat(), "energy_allowed": tx.energy_allowed,
            },
            "authorization": None if auth is None else {
                "id_token": _token(auth.id_token), "parent_id_token": _opt_token(auth.parent_id_token),
                "source": None if auth.source is None else auth.source.value,
                "remote_start": auth.remote_start, "reservation_id": auth.reservation_id,
            },
            "pending": None if pend is None else {"id_token": _token(pend.id_token), "purpose": pend.purpose.value},
            "reservation": None if res is None else {
                "reservation_id": res.reservation_id, "id_token": _token(res.id_token),
                "parent_id_token": _opt_token(res.parent_id_token), "expiry": res.expiry.isoformat(),
            },
            "finishing": self.finishing,
            "cable_held_for": _opt_token(self.cable_held_for),
            "reset_pending": self.reset_pending,
            "next_local_id": self.next_local_id,
            "timers": {name: deadline.isoformat() for name, deadline in self.timers.items()},
            "power_on": self.power_on,
            "offered_amps": self.offered_amps,
            "locked": self.locked,
            "reported": None if rep is None else {
                "status": rep.status.value, "ev_connected": rep.ev_connected,
                "error": None if rep.error is None else rep.error.value,
            },
        }

    @classmethod
    def from_dict(cls, data: object, version: int = TYPED_TOKENS_FORMAT) -> SessionContext:
        """``version``: the snapshot's format (:data:`FIRST_FORMAT` or :data:`TYPED_TOKENS_FORMAT`)."""
        r = _Reader(data, "context", typed_tokens=version >= TYPED_TOKENS_FORMAT)
        tx = r.sub("transaction")
        auth = r.sub("authorization")
        pend = r.sub("pending")
        res = r.sub("reservation")
        rep = r.sub("reported")
        timers = r.mapping("timers")
        return cls(
            limit_amps=r.number("limit_amps"),
            pilot=r.enum("pilot", PilotState),
            operative=r.flag("operative"),
            scheduled_operative=r.opt_flag("scheduled_operative"),
            faults=[ActiveFault(code=f.enum("code", FaultCode), source=f.text("source"),
                                detail=f.text("detail"), blocking=f.flag("blocking"))
                    for f in r.list_of_mappings("faults")],
            emergency_stop=r.opt_text("emergency_stop"),
            transaction=None if tx is None else Transaction(
                local_id=tx.integer("local_id"), id_token=tx.token("id_token"),
                parent_id_token=tx.opt_token("parent_id_token"), trigger=tx.enum("trigger", Trigger),
                auth_source=tx.opt_enum("auth_source", AuthSource), reservation_id=tx.opt_integer("reservation_id"),
                remote_start=tx.flag("remote_start"), started_at=tx.timestamp("started_at"),
                energy_allowed=tx.flag("energy_allowed")),
            authorization=None if auth is None else Authorization(
                id_token=auth.token("id_token"), parent_id_token=auth.opt_token("parent_id_token"),
                source=auth.opt_enum("source", AuthSource), remote_start=auth.flag("remote_start"),
                reservation_id=auth.opt_integer("reservation_id")),
            pending=None if pend is None else PendingAuthorization(
                id_token=pend.token("id_token"), purpose=pend.enum("purpose", AuthPurpose)),
            reservation=None if res is None else Reservation(
                reservation_id=res.integer("reservation_id"), id_token=res.token("id_token"),
                parent_id_token=res.opt_token("parent_id_token"), expiry=res.timestamp("expiry")),
            finishing=r.flag("finishing"),
            cable_held_for=r.opt_token("cable_held_for", added_later=True),
            reset_pending=r.flag("reset_pending"),
            next_local_id=r.integer("next_local_id"),
            timers={name: timers.timestamp(name) for name in timers.keys()},
            power_on=r.flag("power_on"),
            offered_amps=r.number("offered_amps"),
            locked=r.flag("locked"),
            reported=None if rep is None else Reported(
                status=rep.enum("status", ConnectorStatus), ev_connected=rep.flag("ev_connected"),
                error=rep.opt_enum("error", FaultCode)),
        )


def _token(token: IdToken) -> dict[str, str]:
    return {"value": token.value, "type": token.type.value}


def _opt_token(token: IdToken | None) -> dict[str, str] | None:
    return None if token is None else _token(token)


class _Reader:
    """Typed, path-reporting access to one mapping of a snapshot. ``typed_tokens``: id tokens are
    ``{"value", "type"}`` objects (format 2); else bare strings (format 1)."""

    def __init__(self, data: object, path: str, *, typed_tokens: bool = True) -> None:
        if not isinstance(data, Mapping):
            raise SnapshotError(f"{path}: expected an object, got {type(data).__name__}")
        self._data = data
        self._path = path
        self._typed_tokens = typed_tokens

    def keys(self) -> list[str]:
        return [str(k) for k in self._data]

    def _get(self, key: str) -> object:
        if key not in self._data:
            raise SnapshotError(f"{self._path}.{key}: missing")
        return self._data[key]

    def _fail(self, key: str, expected: str, got: object) -> SnapshotError:
        return SnapshotError(f"{self._path}.{key}: expected {expected}, got {got!r}")

    def text(self, key: str) -> str:
        v = self._get(key)
        if not isinstance(v, str):
            raise self._fail(key, "a string", v)
        return v

    def opt_text(self, key: str) -> str | None:
        return None if self._get(key) is None else self.text(key)

    def token(self, key: str) -> IdToken:
        if not self._typed_tokens:
            return IdToken.from_ocpp16(self.text(key))  # format 1: only the string was kept
        t = self.mapping(key)
        return IdToken(t.text("value"), t.enum("type", IdTokenType))

    def opt_token(self, key: str, *, added_later: bool = False) -> IdToken | None:
        """``added_later``: a field newer than the first snapshot format; a snapshot written before it
        existed restores with None (an upgrade must not lose the transaction a power cut interrupted)."""
        if added_later and key not in self._data:
            return None
        return None if self._get(key) is None else self.token(key)

    def flag(self, key: str) -> bool:
        v = self._get(key)
        if not isinstance(v, bool):
            raise self._fail(key, "true or false", v)
        return v

    def opt_flag(self, key: str) -> bool | None:
        return None if self._get(key) is None else self.flag(key)

    def integer(self, key: str) -> int:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._fail(key, "an integer", v)
        return v

    def opt_integer(self, key: str) -> int | None:
        return None if self._get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self._fail(key, "a number", v)
        return float(v)

    def enum(self, key: str, kind: type[E]) -> E:
        v = self._get(key)
        if not isinstance(v, str):
            raise self._fail(key, f"one of {', '.join(m.value for m in kind)}", v)
        try:
            return kind(v)
        except (ValueError, TypeError):
            raise self._fail(key, f"one of {', '.join(m.value for m in kind)}", v) from None

    def opt_enum(self, key: str, kind: type[E]) -> E | None:
        return None if self._get(key) is None else self.enum(key, kind)

    def timestamp(self, key: str) -> datetime:
        v = self.text(key)
        try:
            when = datetime.fromisoformat(v)
        except ValueError:
            raise self._fail(key, "an ISO 8601 timestamp", v) from None
        if when.tzinfo is None:
            raise self._fail(key, "a timestamp with a UTC offset", v)
        return when

    def sub(self, key: str) -> _Reader | None:
        v = self._get(key)
        return None if v is None else _Reader(v, f"{self._path}.{key}", typed_tokens=self._typed_tokens)

    def mapping(self, key: str) -> _Reader:
        return _Reader(self._get(key), f"{self._path}.{key}", typed_tokens=self._typed_tokens)

    def list_of_mappings(self, key: str) -> list[_Reader]:
        v = self._get(key)
        if not isinstance(v, list):
            raise self._fail(key, "a list", v)
        return [_Reader(item, f"{self._path}.{key}[{i}]", typed_tokens=self._typed_tokens)
                for i, item in enumerate(v)]
