"""N07 Alert Event: NotifyEvent for what changed on an EVSE — its AvailabilityState and its problems.

2.0.1 has no error code in StatusNotification (Faulted says only that): the detail 1.6 puts in a
StatusNotification's errorCode / vendorErrorCode goes into NotifyEvent here. Each EVSE's facts are compared, in the
connector's commit (:meth:`NotifyEvents.record`), with the facts last reported:

* AvailabilityState (as StatusNotification reports it) changed: an event for the EVSE and one for its connector
  (``evse.id``, ``connectorId`` 1), ``actualValue`` the new state.
* A problem appeared — a fault of the session machine (the charger layer's: a meter or board link lost, a board
  fault, the cable lock, ...; the same sources 1.6 maps to errorCode / vendorErrorCode) or the emergency stop: an
  event on the EVSE's Problem (a lock failure: on the Problem of the connector's ConnectorPlugRetentionLock,
  G05.FR.02), ``actualValue`` "true", ``techCode`` the fault's code (1.6's vendorErrorCode),
  ``techInfo`` its detail and source. Gone: the same with ``cleared`` true, ``actualValue`` whether another
  problem is still there.

Every event is ``trigger`` Delta, ``eventNotificationType`` HardWiredNotification (no monitoring here), with an
``eventId`` counted on disk; one NotifyEvent per change (``seqNo`` 0, ``tbc`` false), queued in the durable outbox
in the same commit as the machine's new state, so it goes out in order with the TransactionEvents and survives a
power cut. The facts last reported are kept in the settings store (``v201.events.<evse>``): a restart reports
only what differs (the machine forgets its faults at a restart; the devices report them again); an EVSE never
reported before counts as Available without problems. The facts are compared when the connector's machine gave
effects (a fault raised or cleared changes the status or its error, with two exceptions: one of two faults with
the same code, or one that is not the reported one, is told with the next step that has effects).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.storage.settings import Settings
from hal.types import FaultCode

log = logging.getLogger(__name__)

ACTION = "NotifyEvent"
_FACTS_KEY = "v201.events.{}"
_NEXT_ID_KEY = "v201.events.next_id"
#: techCode of the emergency stop (not a device fault: the machine latches it apart)
EMERGENCY_STOP = "emergency_stop"
#: G05.FR.02: a lock failure is the Problem of the connector's ConnectorPlugRetentionLock; every other one the EVSE's
LOCK_COMPONENT = "ConnectorPlugRetentionLock"
#: components addressed with the connector (``connectorId`` 1) as well as the EVSE
CONNECTOR_TIER = ("Connector", LOCK_COMPONENT)
TECH_CODE_MAX = 50
TECH_INFO_MAX = 500


@dataclass(frozen=True, order=True)
class Problem:
    code: str  # techCode
    source: str  # who reported it (``board:board1``, ``meter:meter1``, ``session``, ...)
    detail: str

    @property
    def component(self) -> str:
        """The component whose Problem it is."""
        return LOCK_COMPONENT if self.code == FaultCode.CONNECTOR_LOCK_FAILURE.value else "EVSE"

    @property
    def tech_info(self) -> str:
        return (f"{self.detail} ({self.source})" if self.source else self.detail)[:TECH_INFO_MAX]


@dataclass(frozen=True)
class EvseFacts:
    """What NotifyEvent reports of one EVSE."""

    state: str  # AvailabilityState
    problems: frozenset[Problem] = frozenset()

    def to_json(self) -> str:
        return json.dumps({"state": self.state, "problems": [[p.code, p.source, p.detail]
                                                             for p in sorted(self.problems)]})

    @staticmethod
    def from_json(text: str) -> EvseFacts | None:
        try:
            raw = json.loads(text)
            return EvseFacts(str(raw["state"]), frozenset(Problem(str(c), str(s), str(d))
                                                          for c, s, d in raw["problems"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Change:
    """One event, before it has an id and a time: the component (EVSE or Connector of ``evse``), the variable."""

    component: str
    variable: str
    actual_value: str
    cleared: bool = False
    problem: Problem | None = None


def changes(previous: EvseFacts, current: EvseFacts) -> list[Change]:
    """The events that tell the change from ``previous`` to ``current`` (pure): the state first, then each
    problem gone, then each new one, in a stable order."""
    out: list[Change] = []
    if current.state != previous.state:
        out += [Change("EVSE", "AvailabilityState", current.state),
                Change("Connector", "AvailabilityState", current.state)]
    gone = sorted(previous.problems - current.problems)
    new = sorted(current.problems - previous.problems)
    for p in gone:  # the component's Problem once this change is done: another problem of it may stay
        after = "true" if any(q.component == p.component for q in current.problems) else "false"
        out.append(Change(p.component, "Problem", after, cleared=True, problem=p))
    out += [Change(p.component, "Problem", "true", problem=p) for p in new]
    return out


def event_data(change: Change, evse: int, event_id: int, timestamp: str, max_value: int) -> dict[str, Any]:
    """One ``EventDataType`` (``actualValue`` no longer than the reporting value size)."""
    component: dict[str, Any] = {"name": change.component, "evse": {"id": evse}}
    if change.component in CONNECTOR_TIER:
        component["evse"]["connectorId"] = 1
    data: dict[str, Any] = {"eventId": event_id, "timestamp": timestamp, "trigger": "Delta",
                            "actualValue": change.actual_value[:max_value],
                            "eventNotificationType": "HardWiredNotification",
                            "component": component, "variable": {"name": change.variable}}
    if change.cleared:
        data["cleared"] = True
    if change.problem is not None:
        data["techCode"] = change.problem.code[:TECH_CODE_MAX]
        if change.problem.tech_info:
            data["techInfo"] = change.problem.tech_info
    return data


def facts_of(ctrl: ConnectorController) -> EvseFacts:
    """An EVSE's facts now: its AvailabilityState and its problems (the machine's faults, the emergency stop)."""
    m = ctrl.machine
    problems = {Problem(f.code.value, f.source, f.detail) for f in m.faults}
    if m.emergency_stop_active:
        problems.add(Problem(EMERGENCY_STOP, "", "emergency stop"))
    return EvseFacts(mapping.connector_status(m.status, m.ev_connected, m.config.tethered_cable), frozenset(problems))


class NotifyEvents:
    """Queues the NotifyEvents of each change of an EVSE's facts, in the connector's commit."""

    def __init__(self, ctx: V201Context) -> None:
        self.ctx = ctx
        self._settings = Settings(ctx.db)
        self._last: dict[int, EvseFacts] = {}  # the facts last reported, per EVSE, once read from the store

    def _previous(self, evse: int) -> EvseFacts:
        """The facts last reported: kept, stored by an earlier run, or (never reported) an idle EVSE's."""
        if evse not in self._last:
            stored = self._settings.get(_FACTS_KEY.format(evse))
            facts = EvseFacts.from_json(stored) if stored is not None else None
            self._last[evse] = facts if facts is not None else EvseFacts("Available")
        return self._last[evse]

    def has_problem(self, evse: int, component: str = "EVSE") -> bool:
        """The Problem variable of ``component`` of the EVSE: a problem of it is active (for the EVSE: a fault
        other than the lock's, the emergency stop)."""
        ctrl = self.ctx.connectors.get(evse)
        return ctrl is not None and any(p.component == component for p in facts_of(ctrl).problems)

    def record(self, ctrl: ConnectorController, now: datetime) -> None:
        """After the connector's effects were recorded (inside its commit): the events of what changed."""
        current = facts_of(ctrl)
        previous = self._previous(ctrl.id)
        found = changes(previous, current)
        self._last[ctrl.id] = current
        if not found:
            return
        self._settings.put(_FACTS_KEY.format(ctrl.id), current.to_json())
        self._queue(ctrl.id, found, now)

    def _queue(self, evse: int, found: Iterable[Change], now: datetime) -> None:
        first = int(self._settings.get(_NEXT_ID_KEY) or "1")
        stamp = mapping.timestamp(now)
        size = self.ctx.variables.reporting_value_size()
        data = [event_data(c, evse, first + n, stamp, size) for n, c in enumerate(found)]
        self._settings.put(_NEXT_ID_KEY, str(first + len(data)))
        self.ctx.outbox.queue(ACTION, {"generatedAt": stamp, "seqNo": 0, "tbc": False, "eventData": data},
                              connector=evse, created_at=now)
        log.info("NotifyEvent queued", extra={"evse": evse, "events": [
            {"variable": d["variable"]["name"], "value": d["actualValue"], "techCode": d.get("techCode"),
             "cleared": d.get("cleared", False)} for d in data]})
        self.ctx.wake_delivery()
