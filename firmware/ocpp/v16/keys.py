"""OCPP 1.6 configuration keys as data (§9): what a key is, and how a value is checked and normalized.

Each feature module declares the keys it owns (``KEYS``) with these; :mod:`~firmware.ocpp.v16.configuration`
stores and serves them. Pure: no database, no OCPP messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

#: Measurands this agent can sample (it reads them from the energy meter / the board).
SUPPORTED_MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Current.Import",
    "Current.Offered",
    "Voltage",
    "Frequency",
)
CSL_MAX_LENGTH = 8  # *MaxLength of the measurand lists: at most this many entries
_INTEGER = re.compile(r"-?[0-9]+")
DAY_S = 86400

class ChangeResult(StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    NOT_SUPPORTED = "NotSupported"


class KeyType(StrEnum):
    BOOL = "boolean"
    INT = "integer"
    CSL = "comma separated list"
    STRING = "string"


@dataclass(frozen=True)
class KeyDefinition:
    name: str
    type: KeyType
    default: str
    readonly: bool = False
    reboot_required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] | None = None  # CSL: allowed members; STRING: allowed values
    max_items: int | None = None  # CSL: MaxLength
    secret: bool = False  # write-only: never returned by GetConfiguration, never logged
    #: CSL: the items as they are stored (normalized), or None if together they are not a valid value
    items: Callable[[list[str]], list[str] | None] | None = None

    def validate(self, value: str) -> str | None:
        """Normalized OCPP string form of ``value``, or ``None`` if it is not valid for this key."""
        if self.type is KeyType.BOOL:
            low = value.strip().lower()
            return low if low in ("true", "false") else None
        if self.type is KeyType.INT:
            text = value.strip()
            # ASCII digits only: str.isdigit() also takes "²" (int() then raises) and lstrip("-") took "--5"
            if not _INTEGER.fullmatch(text):
                return None
            number = int(text)
            if (self.minimum is not None and number < self.minimum) or \
                    (self.maximum is not None and number > self.maximum):
                return None
            return str(number)
        if self.type is KeyType.CSL:
            items = [x.strip() for x in value.split(",") if x.strip()] if value.strip() else []
            if self.choices is not None and any(x not in self.choices for x in items):
                return None
            if self.max_items is not None and len(items) > self.max_items:
                return None
            if self.items is not None:
                checked = self.items(items)
                if checked is None:
                    return None
                items = checked
            return ",".join(items)
        if self.choices is not None and value not in self.choices:
            return None
        if self.maximum is not None and len(value) > self.maximum:
            return None
        return value


#: ConnectorPhaseRotation per connector (§9.1.7): R, S, T are L1, L2, L3 as the connector's meter sees them.
PHASE_ROTATIONS = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")


def phase_rotation_items(number_of_connectors: int) -> Callable[[list[str]], list[str] | None]:
    """ConnectorPhaseRotation's items: ``<connectorId>.<rotation>`` (``0.RST,1.RTS,2.Unknown``), each connector at
    most once, from 0 (the grid connection against the main meter) to the last connector; or ``NotApplicable`` /
    ``Unknown`` alone, for the whole charge point. Connector ids are normalized (``01.RST`` is ``1.RST``)."""

    def check(items: list[str]) -> list[str] | None:
        if items in (["NotApplicable"], ["Unknown"]):
            return items
        out: list[str] = []
        seen: set[int] = set()
        for item in items:
            connector, dot, rotation = item.partition(".")
            if not dot or not connector.isascii() or not connector.isdigit() or rotation not in PHASE_ROTATIONS:
                return None
            cid = int(connector)
            if cid > number_of_connectors or cid in seen:
                return None
            seen.add(cid)
            out.append(f"{cid}.{rotation}")
        return out or None

    return check
