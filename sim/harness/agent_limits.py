"""The charging limits the agent says it applies, read from its JSON log: what ``GET /state`` shows per connector.

The agent logs two lines (firmware/charger/limit_applier.py, firmware/charger/smart_charging/scheduler.py):

* ``{"msg": "charging limit", "connector": n, "amps": A, "sources": {...}, "charger_sources": {...}}`` each time a
  connector's applied limit changes: the limit and every source limiting that connector or the whole charger;
* ``{"msg": "smart charging limits", "connectors": {"n": A | null}, "charger": A | null, "next_change": ...}`` each
  time the smart charging (OCPP) limits change: the ``ocpp`` source's values and when they change next.

Read from the output like the connector statuses (:class:`~sim.harness.agent_supervisor.AgentOutput`), so it works
whatever CSMS the agent talks to. The agent logs changes only: until its first line a connector offers its rating.
"""

from __future__ import annotations

import math
from typing import Any

LIMIT_MSG = "charging limit"
SMART_CHARGING_MSG = "smart charging limits"
_SAME = 1e-6  # amperes: a source "at" the limit


def limited_by(amps: float, sources: dict[str, float], charger_sources: dict[str, float],
               rating_a: float | None) -> list[str]:
    """Which sources hold the connector at ``amps``: its own sources at that value (``"ocpp"``, ``"site"``,
    ``"failsafe"``), the connector's rating (``"rating"``), whole-charger sources at that value
    (``"charger:<source>"``); else the lowest whole-charger sources, whose limit is shared among the connectors
    with an EV (the connector got its share); else nothing known (``[]``)."""
    found = sorted(name for name, value in sources.items() if abs(value - amps) <= _SAME)
    if rating_a is not None and abs(rating_a - amps) <= _SAME:
        found.append("rating")
    found += sorted(f"charger:{name}" for name, value in charger_sources.items() if abs(value - amps) <= _SAME)
    if not found and charger_sources:
        lowest = min(charger_sources.values())
        found = sorted(f"charger:{name}" for name, value in charger_sources.items() if value == lowest)
    return found


def _amps(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _source_table(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    out = {str(k): _amps(v) for k, v in value.items()}
    return None if any(v is None for v in out.values()) else {k: v for k, v in out.items() if v is not None}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _connector(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


class AgentLimits:
    """The last ``charging limit`` line per connector and the last ``smart charging limits`` line; a line that does
    not have the expected shape is ignored (the agent's log is not ours to trust)."""

    def __init__(self) -> None:
        self.applied: dict[int, dict[str, Any]] = {}
        self.smart_charging: dict[str, Any] | None = None

    def feed(self, obj: dict[str, Any]) -> None:
        msg = obj.get("msg")
        if msg == LIMIT_MSG:
            self._record_limit(obj)
        elif msg == SMART_CHARGING_MSG:
            self._record_smart_charging(obj)

    def _record_limit(self, obj: dict[str, Any]) -> None:
        n, amps = _connector(obj.get("connector")), _amps(obj.get("amps"))
        sources, charger_sources = _source_table(obj.get("sources", {})), _source_table(obj.get("charger_sources", {}))
        if n is None or amps is None or sources is None or charger_sources is None:
            return
        self.applied[n] = {"amps": amps, "sources": sources, "charger_sources": charger_sources,
                            "at": _text(obj.get("ts"))}

    def _record_smart_charging(self, obj: dict[str, Any]) -> None:
        connectors = obj.get("connectors")
        if not isinstance(connectors, dict):
            return
        per_connector: dict[int, float | None] = {}
        for key, value in connectors.items():
            n = _connector(key)
            if n is not None:
                per_connector[n] = _amps(value)
        self.smart_charging = {"connectors": per_connector, "charger": _amps(obj.get("charger")),
                               "next_change": _text(obj.get("next_change")), "at": _text(obj.get("ts"))}

    def view(self, connector: int, rating_a: float | None = None) -> dict[str, Any] | None:
        """What ``GET /state`` shows as the connector's ``limit``; None until the agent logged either line."""
        applied = self.applied.get(connector)
        smart = self.smart_charging
        if applied is None and smart is None:
            return None
        out: dict[str, Any] = {"amps": None, "limited_by": None, "sources": None, "charger_sources": None,
                               "at": None}
        if applied is not None:
            out.update(applied)
            out["limited_by"] = limited_by(applied["amps"], applied["sources"], applied["charger_sources"], rating_a)
        out["ocpp"] = None if smart is None else {
            "amps": smart["connectors"].get(connector), "charger_amps": smart["charger"],
            "next_change": smart["next_change"], "at": smart["at"]}
        return out
