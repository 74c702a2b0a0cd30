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

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from firmware.charger.smart_charging.installed import InstalledProfile, RunningTransaction
from firmware.charger.smart_charging.profiles import ChargingProfile, ProfileKind, ProfilePurpose, RateUnit
from firmware.charger.smart_charging.units import ChargerSetup, from_amps, to_amps

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
#: "Never ends" on the seconds axis (beyond any datetime).
FOREVER = 2**62
#: :func:`limits_at` looks for the next change this far ahead; beyond it the scheduler just wakes and looks again.
NEXT_CHANGE_HORIZON_S = 8 * 86_400
#: ... and looks at no more boundaries than this (profiles hidden under a higher one change nothing).
NEXT_CHANGE_MAX_STEPS = 500
_MAX_EPOCH = (datetime.max.replace(tzinfo=UTC) - EPOCH) // _SECOND


def epoch_seconds(when: datetime) -> int:
    """Whole seconds since 1970 (floored: an instant within a second counts as that second)."""
    return (when - EPOCH) // _SECOND


def from_epoch(seconds: int) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


@dataclass(frozen=True)
class CompositePeriod:
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


@dataclass(frozen=True, slots=True)
class _Level:
    """What one profile's period says."""

    limit: float
    unit: RateUnit
    phases: int  # numberPhases (default 3)


_Piece = tuple[int, int, _Level]  # [from, to) on the seconds axis


def composite_schedule(installed: Iterable[InstalledProfile], connector: int, start: datetime, duration: int,
                       unit: RateUnit, setup: ChargerSetup, running: Mapping[int, RunningTransaction]
                       ) -> CompositeSchedule:
    """The composite schedule of ``connector`` (0: the whole charger) over [start, start + duration], in ``unit``.

    Raises KeyError for a connector the charger does not have, ValueError for a negative duration. A duration of
    0 gives the limit in force at ``start`` (libocpp #1169 gave the defaults)."""
    if connector != 0 and connector not in setup.connectors:
        raise KeyError(f"no connector {connector}")
    if duration < 0:
        raise ValueError(f"duration must be >= 0; got {duration}")
    engine = _Engine(installed, setup, running)
    a = epoch_seconds(start)
    b = a + max(duration, 1)
    voltage = setup.nominal_voltage
    periods: list[CompositePeriod] = []

    def emit(t: int, limit: float, phases: int) -> None:
        if periods and periods[-1].limit == limit and periods[-1].number_phases == phases:
            return
        periods.append(CompositePeriod(t - a, float(limit), phases))

    if connector == 0:
        ids = sorted(setup.connectors)
        for t0, _, (cp, *owns) in _overlay(a, b, [engine.charger_max(a, b), *(engine.own(c, a, b) for c in ids)]):
            total_a = total_w = 0.0
            in_use = 0
            for cid, own in zip(ids, owns, strict=True):
                spec = setup.connectors[cid]
                phases = min(spec.phases, own.phases) if own is not None else spec.phases
                amps = spec.rating_amps if own is None else min(spec.rating_amps,
                                                                to_amps(own.limit, own.unit, phases, voltage))
                total_a += amps
                total_w += amps * phases * voltage
                in_use = max(in_use, phases)
            total = total_a if unit is RateUnit.AMPERES else total_w
            if cp is not None:
                cp_phases = min(setup.phases, cp.phases)
                total = min(total, from_amps(to_amps(cp.limit, cp.unit, cp_phases, voltage), unit, cp_phases,
                                             voltage))
            emit(t0, total, in_use or setup.phases)
    else:
        spec = setup.connectors[connector]
        for t0, _, (cp, own) in _overlay(a, b, [engine.charger_max(a, b), engine.own(connector, a, b)]):
            phases = min(spec.phases, own.phases) if own is not None else spec.phases
            amps = spec.rating_amps
            for level in (own, cp):
                if level is not None:
                    amps = min(amps, to_amps(level.limit, level.unit, phases, voltage))
            emit(t0, from_amps(amps, unit, phases, voltage), phases)
    return CompositeSchedule(connector, from_epoch(a), duration, unit, tuple(periods))


def limits_at(installed: Iterable[InstalledProfile], now: datetime, setup: ChargerSetup,
              running: Mapping[int, RunningTransaction]) -> RuntimeLimits:
    """The limits to apply at ``now``, and when they change next."""
    engine = _Engine(installed, setup, running)
    t = epoch_seconds(now)
    connectors, charger = engine.values_at(t)
    return RuntimeLimits(connectors, charger, engine.next_change(t, (connectors, charger)))


class _Engine:
    """The installed profiles, sorted by who wins, evaluated on the seconds axis."""

    def __init__(self, installed: Iterable[InstalledProfile], setup: ChargerSetup,
                 running: Mapping[int, RunningTransaction]) -> None:
        self.setup = setup
        self.tx_start = {cid: epoch_seconds(tx.started_at) for cid, tx in running.items()}
        held = list(installed)
        # highest stack level first; on a tie the connector's own profile before connector 0's
        ranked = sorted(held, key=lambda p: (p.profile.stack_level, p.connector != 0), reverse=True)
        self.charger_profiles = [p.profile for p in ranked if p.profile.purpose is ProfilePurpose.CHARGER_MAX]
        self.own_profiles: dict[int, list[tuple[ChargingProfile, int | None]]] = {}
        for cid in setup.connectors:
            tx = running.get(cid)
            start = self.tx_start.get(cid)
            txs = [(p.profile, start) for p in ranked if p.profile.purpose is ProfilePurpose.TX
                   and p.connector == cid and tx is not None and p.transaction == tx.local_id]
            defaults = [(p.profile, start) for p in ranked if p.profile.purpose is ProfilePurpose.TX_DEFAULT
                        and p.connector in (0, cid)]
            self.own_profiles[cid] = txs + defaults  # a TxProfile beats any TxDefaultProfile

    def charger_max(self, a: int, b: int) -> list[_Piece]:
        return _paint([(p, None) for p in self.charger_profiles], a, b)

    def own(self, connector: int, a: int, b: int) -> list[_Piece]:
        return _paint(self.own_profiles[connector], a, b)

    def values_at(self, t: int) -> tuple[dict[int, float | None], float | None]:
        """Each connector's own limit and the charger's maximum at ``t``, in amperes per phase."""
        voltage = self.setup.nominal_voltage
        connectors: dict[int, float | None] = {}
        for cid, spec in self.setup.connectors.items():
            pieces = self.own(cid, t, t + 1)
            if pieces:
                level = pieces[0][2]
                connectors[cid] = float(to_amps(level.limit, level.unit, min(spec.phases, level.phases), voltage))
            else:
                connectors[cid] = None
        pieces = self.charger_max(t, t + 1)
        charger = None
        if pieces:
            level = pieces[0][2]
            charger = float(to_amps(level.limit, level.unit, min(self.setup.phases, level.phases), voltage))
        return connectors, charger

    def next_change(self, t: int, now: tuple[dict[int, float | None], float | None]) -> datetime | None:
        """The first boundary of any profile after ``t`` where the values differ from ``now``; past the horizon,
        the boundary reached (to wake at and look again)."""
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
        for p in self.charger_profiles:
            yield _next_boundary(p, t, ())
        for cid, profiles in self.own_profiles.items():
            for p, _ in profiles:
                yield _next_boundary(p, t, () if cid not in self.tx_start else (self.tx_start[cid],))


def _origins(p: ChargingProfile, lo: int, hi: int, tx_start: int | None, window_start: int) -> tuple[list[int], int]:
    """The starts of ``p``'s schedule runs that may overlap [lo, hi), and how long each runs."""
    s = p.schedule
    span = FOREVER if s.duration is None else s.duration
    if p.kind is ProfileKind.RELATIVE:
        return [window_start if tx_start is None else tx_start], span
    if p.kind is ProfileKind.ABSOLUTE or p.recurrency is None or s.start is None:
        return [window_start if s.start is None else epoch_seconds(s.start)], span
    period = p.recurrency.seconds
    span = min(span, period)  # what is past the recurrence is not executed: the schedule has restarted
    anchor = epoch_seconds(s.start)
    k = (lo - anchor) // period
    origins = []
    while anchor + k * period < hi:
        origins.append(anchor + k * period)
        k += 1
    return origins, span


def _validity(p: ChargingProfile, a: int, b: int) -> tuple[int, int]:
    lo = a if p.valid_from is None else max(a, epoch_seconds(p.valid_from))
    hi = b if p.valid_to is None else min(b, epoch_seconds(p.valid_to))
    return lo, hi


def _paint(ranked: Sequence[tuple[ChargingProfile, int | None]], a: int, b: int) -> list[_Piece]:
    """Which profile speaks when in [a, b): each, in rank order, fills what the better ones left free."""
    free = [(a, b)]
    out: list[_Piece] = []
    for p, tx_start in ranked:
        lo_v, hi_v = _validity(p, a, b)
        if lo_v >= hi_v:
            continue
        origins, span = _origins(p, lo_v, hi_v, tx_start, a)
        for origin in origins:
            lo, hi = max(lo_v, origin), min(hi_v, origin + span)
            if lo >= hi:
                continue
            still: list[tuple[int, int]] = []
            for f0, f1 in free:
                x0, x1 = max(f0, lo), min(f1, hi)
                if x0 >= x1:
                    still.append((f0, f1))
                    continue
                _periods(p, origin, x0, x1, out)
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


def _periods(p: ChargingProfile, origin: int, x0: int, x1: int, out: list[_Piece]) -> None:
    """``p``'s periods of the run starting at ``origin``, cut to [x0, x1)."""
    periods = p.schedule.periods
    starts = [q.start for q in periods]
    i = bisect_right(starts, x0 - origin) - 1
    t = x0
    while t < x1:
        q = periods[i]
        end = origin + starts[i + 1] if i + 1 < len(periods) else FOREVER
        e = min(end, x1)
        out.append((t, e, _Level(q.limit, p.schedule.unit, q.phases)))
        t = e
        i += 1


def _next_boundary(p: ChargingProfile, t: int, tx_starts: Iterable[int]) -> int | None:
    """The first instant after ``t`` at which ``p`` may start, change period, or stop (a Relative profile on a
    connector without a transaction moves with the clock: only its validity has boundaries)."""
    candidates: list[int] = []
    for edge in (p.valid_from, p.valid_to):
        if edge is not None and epoch_seconds(edge) > t:
            candidates.append(epoch_seconds(edge))
    s = p.schedule
    span = FOREVER if s.duration is None else s.duration
    origins: list[int]
    if p.kind is ProfileKind.RELATIVE:
        origins = list(tx_starts)
    elif p.kind is ProfileKind.RECURRING and p.recurrency is not None and s.start is not None:
        period = p.recurrency.seconds
        span = min(span, period)
        anchor = epoch_seconds(s.start)
        k = (t - anchor) // period
        origins = [anchor + k * period, anchor + (k + 1) * period]
    else:
        origins = [] if s.start is None else [epoch_seconds(s.start)]
    for origin in origins:
        if origin > t:
            candidates.append(origin)
            continue
        for q in s.periods:
            if q.start >= span:
                break
            if origin + q.start > t:
                candidates.append(origin + q.start)
                break
        if span < FOREVER and origin + span > t:
            candidates.append(origin + span)
    return min(candidates, default=None)


def _overlay(a: int, b: int, lists: Sequence[Sequence[_Piece]]) -> Iterator[tuple[int, int, list[_Level | None]]]:
    """[a, b) cut wherever any list changes, with each list's level there (None: a gap)."""
    cuts = {a, b}
    for pieces in lists:
        for t0, t1, _ in pieces:
            cuts.add(t0)
            cuts.add(t1)
    bounds = sorted(c for c in cuts if a <= c <= b)
    index = [0] * len(lists)
    for t0, t1 in pairwise(bounds):
        levels: list[_Level | None] = []
        for j, pieces in enumerate(lists):
            k = index[j]
            while k < len(pieces) and pieces[k][1] <= t0:
                k += 1
            index[j] = k
            levels.append(pieces[k][2] if k < len(pieces) and pieces[k][0] <= t0 else None)
        yield t0, t1, levels
