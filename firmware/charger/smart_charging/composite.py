"""The composite schedule: what the installed profiles allow, at every instant of a window (pure, no I/O).

At each instant, per purpose, the valid profile with the highest stack level that is *running* at that instant
wins (a profile is running from its start until its duration ends — never before its start, nor after its
duration, nor outside validFrom/validTo; without a duration it never ends). On a tie the profile set on the
connector itself beats the one set on connector 0. For one connector:

* its own limit is the TxProfile of its running transaction where one runs, else the TxDefaultProfile (its own or
  connector 0's) — the TxProfile wins whatever its stack level;
* its composite is the lowest of its own limit, the ChargePointMaxProfile, and its rating.

For connector 0 (the whole charger's expected draw, libocpp #1062/#1112) it is the sum of every connector's own
limit (capped by its rating) — or the ChargePointMaxProfile where that is lower.

External limits (an energy manager's, :mod:`firmware.charger.external_limits`), where given, bound it too, as they
bind what the charger offers: a connector's as a lower rating, the whole charger's as a second maximum (they have
no schedule: in force for the whole window, as things stand).

Kinds: Absolute runs from startSchedule; Recurring restarts every 24 h / 7 days at startSchedule's time (and
weekday), before and after it (validFrom says from when it counts), and runs at most one recurrence; Relative runs
from the start of the connector's transaction — on a connector without one, from the start of the window (what a
transaction starting now would get). Time is whole seconds (OCPP's periods are); fractions of a second are
dropped. Units: :mod:`.units`.

Besides the schedule for GetCompositeSchedule, :func:`limits_at` gives what the agent applies now — each
connector's own limit (the source ``ocpp`` of that connector) and the ChargePointMaxProfile (the whole charger's
``ocpp`` source, shared among connectors by :class:`~firmware.charger.limits.ChargingLimits`) — and the next
instant either changes, so that the scheduler knows when to wake.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from firmware.charger.external_limits import ExternalCaps
from firmware.charger.smart_charging.installed import InstalledProfile, RunningTransaction
from firmware.charger.smart_charging.profiles import ChargingProfile, ProfileKind, ProfilePurpose, RateUnit
from firmware.charger.smart_charging.units import ChargerSetup, ConnectorSetup, from_amps, to_amps

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
#: "Never ends" on the seconds axis (beyond any datetime).
FOREVER = 2**62
#: :func:`limits_at` looks for the next change this far ahead; beyond it the scheduler just wakes and looks again.
NEXT_CHANGE_HORIZON_S = 8 * 86_400
#: ... and looks at no more boundaries than this (profiles hidden under a higher one change nothing).
NEXT_CHANGE_MAX_STEPS = 500
_MAX_EPOCH = (datetime.max.replace(tzinfo=UTC) - EPOCH) // _SECOND


def floor_limit(limit: float) -> float:
    """A limit as OCPP reports it (one decimal: 1.6's ``multipleOf`` 0.1, 2.0.1's "at most one digit fraction"),
    rounded down, so that a reported limit never exceeds the one applied."""
    return math.floor(round(limit * 10, 6)) / 10


def epoch_seconds(when: datetime) -> int:
    """Whole seconds since 1970 (floored: an instant within a second counts as that second)."""
    return (when - EPOCH) // _SECOND


def from_epoch(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


class CompositePeriod(NamedTuple):
    start: int  # seconds from the schedule's start
    limit: float  # in the schedule's unit
    number_phases: int  # the phases in use


@dataclass(frozen=True)
class CompositeSchedule:
    connector: int
    start: datetime  # whole seconds
    duration: int
    unit: RateUnit
    periods: tuple[CompositePeriod, ...]  # the first starts at 0; none at or after ``duration`` (but the first)

    def limit_at(self, offset: int) -> CompositePeriod:
        """The period in force ``offset`` seconds after the start."""
        return self.periods[max(0, bisect_right([p.start for p in self.periods], offset) - 1)]


@dataclass(frozen=True)
class RuntimeLimits:
    """What the agent applies now, in amperes per phase; None where no profile speaks (the source is cleared)."""

    connectors: Mapping[int, float | None]  # each connector's own limit (TxProfile, else TxDefaultProfile)
    charger: float | None  # the ChargePointMaxProfile, for the whole charger
    next_change: datetime | None  # when either changes next (None: never, as things stand)


#: What one profile's period says: (limit, unit, numberPhases or 3). A plain tuple: the engine makes thousands.
_Level = tuple[float, RateUnit, int]


_Piece = tuple[int, int, _Level]  # [from, to) on the seconds axis


def composite_schedule(installed: Iterable[InstalledProfile], connector: int, start: datetime, duration: int,
                       unit: RateUnit, setup: ChargerSetup, running: Mapping[int, RunningTransaction],
                       external: ExternalCaps | None = None) -> CompositeSchedule:
    """The composite schedule of ``connector`` (0: the whole charger) over [start, start + duration], in ``unit``;
    ``external``: the external limits in force, bounding it too.

    Raises KeyError for a connector the charger does not have, ValueError for a negative duration. A duration of
    0 gives the limit in force at ``start`` (libocpp #1169 gave the defaults)."""
    if connector != 0 and connector not in setup.connectors:
        raise KeyError(f"no connector {connector}")
    if duration < 0:
        raise ValueError(f"duration must be >= 0; got {duration}")
    cap = None
    if external is not None:
        setup = _capped(setup, external)
        cap = external.charger
    engine = _Engine(installed, setup, running)
    a = epoch_seconds(start)
    b = a + max(duration, 1)
    periods: list[CompositePeriod] = []
    last_limit, last_phases = -1.0, 0
    for t, limit, phases in (_whole_charger(engine, a, b, unit, cap) if connector == 0
                             else _one_connector(engine, connector, a, b, unit, cap)):
        if limit != last_limit or phases != last_phases:
            periods.append(CompositePeriod(t - a, float(limit), phases))
            last_limit, last_phases = limit, phases
    return CompositeSchedule(connector, from_epoch(a), duration, unit, tuple(periods))


def _capped(setup: ChargerSetup, external: ExternalCaps) -> ChargerSetup:
    """``setup`` with each connector's rating lowered to its external limit (an external limit binds as one)."""
    connectors = {}
    for cid, spec in setup.connectors.items():
        cap = external.connector(cid)
        connectors[cid] = spec if cap is None or cap >= spec.rating_amps else ConnectorSetup(cap, spec.phases)
    return ChargerSetup(connectors, setup.nominal_voltage)


def _one_connector(engine: _Engine, connector: int, a: int, b: int, unit: RateUnit, cap: float | None
                   ) -> Iterator[tuple[int, float, int]]:
    """(instant, limit, phases in use) where either the connector's own limit or the charger's maximum changes;
    ``cap``: the whole charger's external limit in amperes, if any.
    The conversions are :func:`~.units.to_amps` / :func:`~.units.from_amps`, inlined (the loop runs per period)."""
    spec = engine.setup.connectors[connector]
    voltage, rating, wired = engine.setup.nominal_voltage, spec.rating_amps, spec.phases
    watts = RateUnit.WATTS
    for t, cp, own in _pairs(_steps(engine.charger_max(a, b), a, b, None),
                             _steps(engine.own(connector, a, b), a, b, None)):
        phases = wired if own is None or own[2] >= wired else own[2]
        amps = rating
        for level in (own, cp):
            if level is not None:
                x = level[0] / (phases * voltage) if level[1] is watts else level[0]
                if x < amps:
                    amps = x
        if cap is not None and cap < amps:
            amps = cap
        yield t, amps * phases * voltage if unit is watts else amps, phases


def _whole_charger(engine: _Engine, a: int, b: int, unit: RateUnit, cap: float | None
                   ) -> Iterator[tuple[int, float, int]]:
    """(instant, limit, phases in use) for connector 0: the connectors' own limits (each capped by its rating)
    added up, or the charger's maximum (or ``cap``, its external limit in amperes) where that is lower."""
    setup = engine.setup
    voltage = setup.nominal_voltage
    watts = unit is RateUnit.WATTS
    events: list[tuple[int, int, Any]] = []  # (instant, connector index or -1 for the maximum, its value from then)
    ids = list(setup.connectors)
    for j, cid in enumerate(ids):
        spec = setup.connectors[cid]
        pieces = []
        for t0, t1, (limit, own_unit, own_phases) in engine.own(cid, a, b):
            phases = min(spec.phases, own_phases)
            amps = min(spec.rating_amps, to_amps(limit, own_unit, phases, voltage))
            pieces.append((t0, t1, (amps * phases * voltage if watts else amps, phases)))
        rated = (spec.rating_amps * spec.phases * voltage if watts else spec.rating_amps, spec.phases)
        starts, values = _steps(pieces, a, b, rated)
        events += zip(starts, [j] * len(starts), values, strict=True)
    cp_phases = setup.phases
    maxima = []
    for t0, t1, (limit, cp_unit, phases) in engine.charger_max(a, b):
        phases = min(cp_phases, phases)
        maxima.append((t0, t1, from_amps(to_amps(limit, cp_unit, phases, voltage), unit, phases, voltage)))
    cp_starts, cp_values = _steps(maxima, a, b, None)
    events += zip(cp_starts, [-1] * len(cp_starts), cp_values, strict=True)
    events.sort(key=lambda e: e[0])
    draws: list[tuple[float, int]] = [(0.0, cp_phases)] * len(ids)
    maximum: float | None = None
    last = len(events) - 1
    for i, (t, j, value) in enumerate(events):
        if j < 0:
            maximum = value
        else:
            draws[j] = value
        if i < last and events[i + 1][0] == t:
            continue  # more changes at the same instant
        total, in_use = 0.0, 0
        for amount, phases in draws:
            total += amount
            if phases > in_use:
                in_use = phases
        value = total if maximum is None or total <= maximum else maximum
        if cap is not None:
            value = min(value, from_amps(cap, unit, in_use or cp_phases, voltage))
        yield t, value, in_use or cp_phases


def limits_at(installed: Iterable[InstalledProfile], now: datetime, setup: ChargerSetup,
              running: Mapping[int, RunningTransaction]) -> RuntimeLimits:
    """The limits to apply at ``now``, and when they change next."""
    engine = _Engine(installed, setup, running)
    t = epoch_seconds(now)
    connectors, charger = engine.values_at(t)
    return RuntimeLimits(connectors, charger, engine.next_change(t, (connectors, charger)))


class _Entry:
    """One installed profile, as the engine reads it: its times in seconds and its periods ready to emit."""

    __slots__ = ("anchor", "every", "kind", "levels", "profile", "span", "starts", "tx_start", "valid_from",
                 "valid_to")

    def __init__(self, profile: ChargingProfile, tx_start: int | None,
                 periods: tuple[list[int], list[_Level]] | None = None) -> None:
        s = profile.schedule
        self.profile = profile
        self.kind = profile.kind
        self.tx_start = tx_start
        self.valid_from = None if profile.valid_from is None else epoch_seconds(profile.valid_from)
        self.valid_to = None if profile.valid_to is None else epoch_seconds(profile.valid_to)
        self.anchor = None if s.start is None else epoch_seconds(s.start)
        self.span = FOREVER if s.duration is None else s.duration
        self.every = 0
        if self.kind is ProfileKind.RECURRING and profile.recurrency is not None and self.anchor is not None:
            self.every = profile.recurrency.seconds
            self.span = min(self.span, self.every)  # what is past the recurrence is not executed: it has restarted
        else:
            self.kind = ProfileKind.RELATIVE if self.kind is ProfileKind.RELATIVE else ProfileKind.ABSOLUTE
        if periods is None:
            periods = [q.start for q in s.periods], [(q.limit, s.unit, q.phases) for q in s.periods]
        self.starts, self.levels = periods

    def origins(self, lo: int, hi: int, window_start: int) -> list[int]:
        """The starts of the runs that may overlap [lo, hi)."""
        if self.kind is ProfileKind.RELATIVE:
            return [window_start if self.tx_start is None else self.tx_start]
        if self.kind is ProfileKind.ABSOLUTE:
            return [window_start if self.anchor is None else self.anchor]
        assert self.anchor is not None
        origin = self.anchor + (lo - self.anchor) // self.every * self.every
        out = []
        while origin < hi:
            out.append(origin)
            origin += self.every
        return out

    def next_boundary(self, t: int, tx_starts: Iterable[int]) -> int | None:
        """The first instant after ``t`` at which the profile may start, change period, or stop (a Relative profile
        on a connector without a transaction moves with the clock: only its validity has boundaries)."""
        candidates = [edge for edge in (self.valid_from, self.valid_to) if edge is not None and edge > t]
        if self.kind is ProfileKind.RELATIVE:
            origins = list(tx_starts)
        elif self.kind is ProfileKind.RECURRING:
            assert self.anchor is not None
            first = self.anchor + (t - self.anchor) // self.every * self.every
            origins = [first, first + self.every]
        else:
            origins = [] if self.anchor is None else [self.anchor]
        for origin in origins:
            if origin > t:
                candidates.append(origin)
                continue
            i = bisect_right(self.starts, t - origin)
            if i < len(self.starts) and self.starts[i] < self.span:
                candidates.append(origin + self.starts[i])
            if self.span < FOREVER and origin + self.span > t:
                candidates.append(origin + self.span)
        return min(candidates, default=None)


class _Engine:
    """The installed profiles, sorted by who wins, evaluated on the seconds axis."""

    def __init__(self, installed: Iterable[InstalledProfile], setup: ChargerSetup,
                 running: Mapping[int, RunningTransaction]) -> None:
        self.setup = setup
        self.tx_start = {cid: epoch_seconds(tx.started_at) for cid, tx in running.items()}
        # highest stack level first; on a tie the connector's own profile before connector 0's
        ranked = sorted(installed, key=lambda p: (p.profile.stack_level, p.connector != 0), reverse=True)
        self.charger_entries = [_Entry(p.profile, None) for p in ranked
                                if p.profile.purpose is ProfilePurpose.CHARGER_MAX]
        self.own_entries: dict[int, list[_Entry]] = {}
        shared: dict[int, _Entry] = {}  # a connector-0 default's periods, read once for every connector
        for cid in setup.connectors:
            tx = running.get(cid)
            start = self.tx_start.get(cid)
            txs = [_Entry(p.profile, start) for p in ranked if p.profile.purpose is ProfilePurpose.TX
                   and p.connector == cid and tx is not None and p.transaction == tx.local_id]
            defaults = []
            for p in ranked:
                if p.profile.purpose is ProfilePurpose.TX_DEFAULT and p.connector in (0, cid):
                    first = shared.get(p.profile.id)
                    entry = _Entry(p.profile, start, None if first is None else (first.starts, first.levels))
                    shared.setdefault(p.profile.id, entry)
                    defaults.append(entry)
            self.own_entries[cid] = txs + defaults  # a TxProfile beats any TxDefaultProfile

    def charger_max(self, a: int, b: int) -> list[_Piece]:
        return _paint(self.charger_entries, a, b)

    def own(self, connector: int, a: int, b: int) -> list[_Piece]:
        return _paint(self.own_entries[connector], a, b)

    def values_at(self, t: int) -> tuple[dict[int, float | None], float | None]:
        """Each connector's own limit and the charger's maximum at ``t``, in amperes per phase."""
        voltage = self.setup.nominal_voltage
        connectors: dict[int, float | None] = {}
        for cid, spec in self.setup.connectors.items():
            pieces = self.own(cid, t, t + 1)
            if pieces:
                limit, unit, phases = pieces[0][2]
                connectors[cid] = float(to_amps(limit, unit, min(spec.phases, phases), voltage))
            else:
                connectors[cid] = None
        pieces = self.charger_max(t, t + 1)
        charger = None
        if pieces:
            limit, unit, phases = pieces[0][2]
            charger = float(to_amps(limit, unit, min(self.setup.phases, phases), voltage))
        return connectors, charger

    def next_change(self, t: int, now: tuple[dict[int, float | None], float | None]) -> datetime | None:
        """The first boundary of any profile after ``t`` where the values differ from ``now``; past the horizon,
        or after too many boundaries that change nothing, the boundary reached (to wake at and look again)."""
        probe = t
        for _ in range(NEXT_CHANGE_MAX_STEPS):
            candidates = [b for b in self._boundaries_after(probe) if b is not None]
            if not candidates:
                return None
            probe = min(candidates)
            if probe > _MAX_EPOCH:
                return None
            if self.values_at(probe) != now or probe - t > NEXT_CHANGE_HORIZON_S:
                return from_epoch(probe)
        return from_epoch(probe)

    def _boundaries_after(self, t: int) -> Iterator[int | None]:
        for entry in self.charger_entries:
            yield entry.next_boundary(t, ())
        for cid, entries in self.own_entries.items():
            starts = () if cid not in self.tx_start else (self.tx_start[cid],)
            for entry in entries:
                yield entry.next_boundary(t, starts)


def _paint(ranked: Sequence[_Entry], a: int, b: int) -> list[_Piece]:
    """Which profile speaks when in [a, b): each, in rank order, fills what the better ones left free."""
    free = [(a, b)]
    out: list[_Piece] = []
    for entry in ranked:
        lo_v = a if entry.valid_from is None else max(a, entry.valid_from)
        hi_v = b if entry.valid_to is None else min(b, entry.valid_to)
        if lo_v >= hi_v:
            continue
        for origin in entry.origins(lo_v, hi_v, a):
            lo, hi = max(lo_v, origin), min(hi_v, origin + entry.span)
            if lo >= hi:
                continue
            still: list[tuple[int, int]] = []
            for f0, f1 in free:
                x0, x1 = max(f0, lo), min(f1, hi)
                if x0 >= x1:
                    still.append((f0, f1))
                    continue
                _periods(entry, origin, x0, x1, out)
                if f0 < x0:
                    still.append((f0, x0))
                if x1 < f1:
                    still.append((x1, f1))
            free = still
            if not free:
                break
        if not free:
            break
    out.sort(key=lambda piece: piece[0])
    return out


def _periods(entry: _Entry, origin: int, x0: int, x1: int, out: list[_Piece]) -> None:
    """The periods of ``entry``'s run starting at ``origin``, cut to [x0, x1)."""
    starts, levels = entry.starts, entry.levels
    last = len(starts) - 1
    i = bisect_right(starts, x0 - origin) - 1
    t = x0
    while t < x1:
        e = x1 if i == last else min(origin + starts[i + 1], x1)
        out.append((t, e, levels[i]))
        t = e
        i += 1


V = TypeVar("V")


def _steps(pieces: Sequence[tuple[int, int, V]], a: int, b: int, fill: V | None) -> tuple[list[int], list[V | None]]:
    """Sorted, disjoint pieces of [a, b) as a step function over all of it: the instants it changes and its values,
    ``fill`` in the gaps."""
    starts: list[int] = []
    values: list[V | None] = []
    t = a
    for t0, t1, value in pieces:
        if t0 > t:
            starts.append(t)
            values.append(fill)
        starts.append(t0)
        values.append(value)
        t = t1
    if t < b:
        starts.append(t)
        values.append(fill)
    return starts, values


def _pairs(first: tuple[list[int], list[Any]], second: tuple[list[int], list[Any]]) -> Iterator[tuple[int, Any, Any]]:
    """Two step functions over the same window, together: each instant either changes, with both values."""
    s0, v0 = first
    s1, v1 = second
    i = j = 0
    n0, n1 = len(s0) - 1, len(s1) - 1
    while True:
        yield max(s0[i], s1[j]), v0[i], v1[j]
        next0 = s0[i + 1] if i < n0 else None
        next1 = s1[j + 1] if j < n1 else None
        if next0 is None and next1 is None:
            return
        if next1 is None or (next0 is not None and next0 <= next1):
            i += 1
        if next0 is None or (next1 is not None and next1 <= next0):
            j += 1
