"""What a technician reads in the journal about connectors and devices: one structured line per status change,
session event and device event. Id tokens and card UIDs identify people: only their last 4 characters appear."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from firmware.charger.connector import ConnectorController
from firmware.session import (
    Effect,
    IdToken,
    IdTokenRefused,
    ReservationEnded,
    StatusChanged,
    TransactionStarted,
    TransactionStopped,
)
from firmware.session.machine import mask_token
from hal.events import EventStream
from hal.interfaces import DeviceFault, MeterReading

log = logging.getLogger("firmware.agent")  # the logger name these lines have always carried


def event_fields(event: object) -> dict[str, Any]:
    """An event's fields for a log line, id tokens and UIDs masked. An :class:`IdToken` field (``asdict`` would
    spell it out as a dict) is masked to the same string."""
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        fields = dataclasses.asdict(event)
        for key in fields:
            value = getattr(event, key)
            if isinstance(value, IdToken) or (
                    isinstance(value, str) and (key == "uid" or key.endswith("id_token") or key == "stopped_by")):
                fields[key] = mask_token(value)
        return {"event": type(event).__name__, **fields}
    return {"event": repr(event)}


class StatusLog:
    """Connector observer that writes one structured line per status change and session event."""

    def record(self, connector: ConnectorController, effects: list[Effect], reading: MeterReading | None,
               now: Any) -> None:
        return None

    async def notify(self, connector: ConnectorController, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, StatusChanged):
                log.info("connector status", extra={"connector": connector.id, "status": e.status.value,
                                                    "error_code": e.error.value if e.error else "NoError",
                                                    "info": e.info, "ev_connected": e.ev_connected})
            elif isinstance(e, TransactionStarted | TransactionStopped | IdTokenRefused | ReservationEnded):
                log.info("session", extra={"connector": connector.id, **event_fields(e)})


async def log_device_events(stream: EventStream[Any]) -> None:
    """A device's events worth a technician's attention, to the log (meter readings only at DEBUG)."""
    with stream.subscribe() as sub:
        async for event in sub:
            if isinstance(event, MeterReading):
                if log.isEnabledFor(logging.DEBUG):  # a reading a second per meter: not built to be dropped
                    log.debug("device event", extra=event_fields(event))
            elif isinstance(event, DeviceFault):
                log.warning("device fault", extra=event_fields(event))
            else:
                log.info("device event", extra=event_fields(event))
