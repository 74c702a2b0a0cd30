"""What is published, as plain dicts (encoded by :mod:`firmware.telemetry.codec`). Pure.

Times are ISO 8601 UTC strings; energies in Wh, powers in W, currents in A (docs/mqtt.md).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from firmware.session import StatusChanged, TransactionStarted, TransactionStopped
from firmware.session.machine import mask_token
from hal.interfaces import MeterReading


def _ts(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def status(connector: int, change: StatusChanged, at: datetime, offered_a: float) -> dict[str, Any]:
    return {"connector": connector, "status": change.status.value, "ev_connected": change.ev_connected,
            "error_code": change.error.value if change.error else "NoError", "info": change.info,
            "offered_a": offered_a, "ts": _ts(at)}


def _num(value: float, digits: int) -> float | None:
    """A meter value as published: rounded; NaN or infinite (a meter's garbage) becomes null."""
    return round(value, digits) if math.isfinite(value) else None


def meter(connector: int, reading: MeterReading) -> dict[str, Any]:
    out: dict[str, Any] = {"connector": connector, "energy_wh": _num(reading.energy_import_wh, 1),
                           "power_w": _num(reading.power_w, 1),
                           "current_a": [_num(a, 2) for a in reading.current_a],
                           "voltage_v": [_num(v, 1) for v in reading.voltage_v], "ts": _ts(reading.taken_at)}
    if reading.frequency_hz is not None:
        out["frequency_hz"] = _num(reading.frequency_hz, 2)
    return out


def session_started(connector: int, started: TransactionStarted, at: datetime,
                    meter_start_wh: float | None) -> dict[str, Any]:
    return {"event": "started", "connector": connector, "session": started.local_id,
            "id_token": mask_token(started.id_token), "meter_start_wh": meter_start_wh, "ts": _ts(at)}


def session_stopped(connector: int, stopped: TransactionStopped, at: datetime, *, meter_stop_wh: float | None,
                    meter_start_wh: float | None, started_at: datetime | None) -> dict[str, Any]:
    """``energy_wh`` and ``duration_s`` are None when the start is unknown (e.g. the agent lost it)."""
    energy = None if meter_stop_wh is None or meter_start_wh is None else round(meter_stop_wh - meter_start_wh, 1)
    duration = None if started_at is None else round((at - started_at).total_seconds(), 1)
    return {"event": "stopped", "connector": connector, "session": stopped.local_id,
            "id_token": mask_token(stopped.id_token), "reason": stopped.reason.value,
            "meter_stop_wh": meter_stop_wh, "energy_wh": energy, "duration_s": duration, "ts": _ts(at)}


def limit(connector: int, amps: float, sources: dict[str, float], charger_sources: dict[str, float],
          failsafe: bool, at: datetime, next_change: datetime | None = None) -> dict[str, Any]:
    """``next_change``: when the ``ocpp`` source (charging profiles) changes next, None when it will not."""
    return {"connector": connector, "limit_a": amps, "sources": sources, "charger_sources": charger_sources,
            "failsafe": failsafe, "next_change": None if next_change is None else _ts(next_change), "ts": _ts(at)}


def reply(topic: str, accepted: bool, reason: str, at: datetime) -> dict[str, Any]:
    return {"topic": topic, "accepted": accepted, "reason": reason, "ts": _ts(at)}
