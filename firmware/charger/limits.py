"""Which current each connector may offer: the lowest of every limit source (pure, no I/O).

Sources are named: ``"ocpp"`` (smart charging, set by the OCPP adapter once it implements
SetChargingProfile), ``"site"`` (the site's energy manager over MQTT), ``"failsafe"`` (the configured
safe limit while the energy manager is silent). A source can limit one connector or the whole charger.

A whole-charger limit is shared among the connectors that have an EV plugged in, fairly with
redistribution ("water filling"): a connector capped lower by its own limits or rating leaves the rest
to the others. A connector without an EV is given the share it would get if an EV arrived now, so a
plug-in never offers more than the charger's limit allows before the shares are recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class ChargingLimits:
    def __init__(self, ratings: dict[int, float]) -> None:
        self.ratings = dict(ratings)
        self._connector: dict[int, dict[str, float]] = {cid: {} for cid in ratings}
        self._charger: dict[str, float] = {}
        self._sharing: frozenset[int] = frozenset()

    def set(self, source: str, amps: float, connector: int | None = None) -> None:
        """Set ``source``'s limit for one connector, or for the whole charger (``connector=None``)."""
        if not math.isfinite(amps) or amps < 0:
            raise ValueError(f"a limit is a finite number of amperes >= 0; got {amps!r}")
        self._table(connector)[source] = float(amps)

    def clear(self, source: str, connector: int | None = None) -> None:
        self._table(connector).pop(source, None)

    def clear_everywhere(self, source: str) -> None:
        """Remove ``source`` from the whole charger and from every connector."""
        self._charger.pop(source, None)
        for table in self._connector.values():
            table.pop(source, None)

    def sources(self, connector: int | None = None) -> dict[str, float]:
        return dict(self._table(connector))

    def set_sharing(self, connectors: Iterable[int]) -> None:
        """The connectors with an EV plugged in: they share a whole-charger limit."""
        self._sharing = frozenset(c for c in connectors if c in self.ratings)

    @property
    def charger_limit(self) -> float | None:
        return min(self._charger.values(), default=None)

    def own_cap(self, connector: int) -> float:
        """The connector's limit from its rating and its own sources, before any whole-charger share."""
        return min([self.ratings[connector], *self._connector[connector].values()])

    def effective(self) -> dict[int, float]:
        """Each connector's effective limit in amperes."""
        total = self.charger_limit
        out: dict[int, float] = {}
        for cid in self.ratings:
            cap = self.own_cap(cid)
            if total is not None:
                group = self._sharing | {cid}
                cap = min(cap, _water_fill(total, {c: self.own_cap(c) for c in group})[cid])
            out[cid] = cap
        return out

    def _table(self, connector: int | None) -> dict[str, float]:
        if connector is None:
            return self._charger
        if connector not in self._connector:
            raise KeyError(f"no connector {connector}")
        return self._connector[connector]


def _water_fill(total: float, caps: dict[int, float]) -> dict[int, float]:
    """Share ``total`` among connectors fairly, none above its cap; what a capped one leaves goes to the rest."""
    shares: dict[int, float] = {}
    remaining = total
    pending = sorted(caps, key=lambda c: caps[c])
    while pending:
        fair = remaining / len(pending)
        cid = pending.pop(0)
        shares[cid] = min(caps[cid], fair)
        remaining -= shares[cid]
    return shares
