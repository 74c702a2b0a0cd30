"""Limits an external system puts on the charger, as the CSMS is to hear of them (pure, no I/O).

The site's energy manager (over MQTT, docs/mqtt.md) sets the ``site`` source of
:class:`~firmware.charger.limits.ChargingLimits`, and its fail-safe the ``failsafe`` source while the energy manager
is silent: neither comes from the CSMS, yet both bound what the charger offers. OCPP 2.0.1 reports such limits
(K11-K13: NotifyChargingLimit, ClearedChargingLimit; ChargingStationExternalConstraints in GetChargingProfiles and
in the composite schedule); this module says which are in force, which changes are worth reporting, and the caps
they put on the composite schedule — the adapter only translates.

A change is worth reporting when a limit appears, disappears, or moves by more than the significance (percent of
the limit last reported, K12.FR.02: SmartChargingCtrlr.LimitChangeSignificance); smaller moves are not, and the
limit last reported stays the reference, so that many small steps still add up to a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from firmware.charger.limits import ChargingLimits

#: the site's energy manager (MQTT)
SITE = "site"
#: the configured safe limit while the energy manager is silent
FAILSAFE = "failsafe"
#: ChargingLimits' sources an external system (not the CSMS, not the charger's rating) decides, in report order
EXTERNAL_SOURCES = (SITE, FAILSAFE)

#: (source, connector or None for the whole charger)
Scope = tuple[str, int | None]


@dataclass(frozen=True)
class ExternalLimit:
    source: str  # one of EXTERNAL_SOURCES
    connector: int | None  # None: the whole charger
    amps: float  # per phase (a whole-charger limit: shared among the connectors, as ChargingLimits does)

    @property
    def scope(self) -> Scope:
        return self.source, self.connector


@dataclass(frozen=True)
class ExternalCaps:
    """The lowest external limit of the whole charger and of each connector (absent: none)."""

    charger: float | None = None
    connectors: Mapping[int, float] | None = None

    def connector(self, cid: int) -> float | None:
        return None if self.connectors is None else self.connectors.get(cid)


@dataclass(frozen=True)
class LimitChange:
    """One thing to tell the CSMS: ``limit`` set (or moved significantly), or its scope's limit cleared."""

    limit: ExternalLimit
    cleared: bool = False


def external_limits(limits: ChargingLimits) -> tuple[ExternalLimit, ...]:
    """The external limits in force: the whole charger's first, then by connector; by source within each."""
    out = [ExternalLimit(s, None, limits.sources(None)[s]) for s in EXTERNAL_SOURCES if s in limits.sources(None)]
    for cid in sorted(limits.ratings):
        own = limits.sources(cid)
        out += [ExternalLimit(s, cid, own[s]) for s in EXTERNAL_SOURCES if s in own]
    return tuple(out)


def caps(limits: Iterable[ExternalLimit]) -> ExternalCaps:
    charger: float | None = None
    connectors: dict[int, float] = {}
    for limit in limits:
        if limit.connector is None:
            charger = limit.amps if charger is None else min(charger, limit.amps)
        else:
            connectors[limit.connector] = min(connectors.get(limit.connector, limit.amps), limit.amps)
    return ExternalCaps(charger, connectors)


def changes(reported: Mapping[Scope, float], now: Iterable[ExternalLimit],
            significance_percent: float) -> list[LimitChange]:
    """What to report, given what was ``reported`` last (by scope) and the limits in force ``now``: new limits and
    moves beyond ``significance_percent`` of the reported value, then the cleared ones (in the order given)."""
    out: list[LimitChange] = []
    present: set[Scope] = set()
    for limit in now:
        present.add(limit.scope)
        before = reported.get(limit.scope)
        if before is None or _significant(before, limit.amps, significance_percent):
            out.append(LimitChange(limit))
    for scope, amps in reported.items():
        if scope not in present:
            out.append(LimitChange(ExternalLimit(scope[0], scope[1], amps), cleared=True))
    return out


def _significant(before: float, after: float, percent: float) -> bool:
    if before == after:
        return False
    if before <= 0:
        return True  # from nothing: any offer is a change
    return abs(after - before) * 100 > percent * before
