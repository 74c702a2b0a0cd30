"""OCPP 1.6 configuration keys as data (§9): what a key is, and how a value is checked and normalized.

Each feature module declares the keys it owns (``KEYS``) with these; :mod:`~firmware.ocpp.v16.configuration`
stores and serves them. Pure: no database, no OCPP messages.
"""

from __future__ import annotations

import re
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
            return ",".join(items)
        if self.choices is not None and value not in self.choices:
            return None
        if self.maximum is not None and len(value) > self.maximum:
            return None
        return value
