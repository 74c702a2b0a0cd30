"""OCPP 1.6 configuration keys (§9): typed, validated, read-only where the spec says, persisted.

``ConfigurationKeys`` answers GetConfiguration and ChangeConfiguration exactly as the spec asks:
``Rejected`` for a value that is not valid for the key (or a read-only key), ``NotSupported`` for a key
we do not know, ``RebootRequired`` when the new value only takes effect after a reboot. Changed values are
written to the database before the answer goes out, so a CSMS never sees Accepted for a change a power
cut could undo.

Values are kept as their OCPP string form (what GetConfiguration returns) and exposed typed through
:meth:`ConfigurationKeys.get_int` and friends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from firmware.authorization import LOCAL_AUTH_LIST_MAX_LENGTH, SEND_LOCAL_LIST_MAX_LENGTH
from firmware.storage import Database

log = logging.getLogger(__name__)

SETTING_PREFIX = "ocpp16."

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
SUPPORTED_PROFILES = ("Core",)
CSL_MAX_LENGTH = 8  # *MaxLength of the measurand lists: at most this many entries


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
            if not text.lstrip("-").isdigit():
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


def _core_keys(number_of_connectors: int) -> list[KeyDefinition]:
    """The Core profile's keys this charge point supports, and the Local Auth List Management profile's
    keys the local list storage honours (firmware/authorization.py, docs/authorization.md). Optional keys are
    listed only when the agent honours them. SupportedFeatureProfiles names LocalAuthListManagement only
    once SendLocalList / GetLocalListVersion are served."""
    B, I, C = KeyType.BOOL, KeyType.INT, KeyType.CSL  # noqa: E741 - short names keep the table readable
    day = 86400
    m = SUPPORTED_MEASURANDS
    return [
        KeyDefinition("AllowOfflineTxForUnknownId", B, "false"),
        KeyDefinition("AuthorizationCacheEnabled", B, "true"),
        KeyDefinition("AuthorizeRemoteTxRequests", B, "true"),
        KeyDefinition("ClockAlignedDataInterval", I, "0", minimum=0, maximum=day),
        KeyDefinition("ConnectionTimeOut", I, "60", minimum=1, maximum=3600),
        KeyDefinition("ConnectorPhaseRotation", C, "0.RST", max_items=number_of_connectors + 1),
        KeyDefinition("ConnectorPhaseRotationMaxLength", I, str(number_of_connectors + 1), readonly=True),
        KeyDefinition("GetConfigurationMaxKeys", I, "64", readonly=True),
        KeyDefinition("HeartbeatInterval", I, "300", minimum=0, maximum=day),
        KeyDefinition("LocalAuthListEnabled", B, "true"),
        KeyDefinition("LocalAuthListMaxLength", I, str(LOCAL_AUTH_LIST_MAX_LENGTH), readonly=True),
        KeyDefinition("LocalAuthorizeOffline", B, "true"),
        KeyDefinition("LocalPreAuthorize", B, "false"),
        KeyDefinition("MeterValuesAlignedData", C, "Energy.Active.Import.Register", choices=m,
                      max_items=CSL_MAX_LENGTH),
        KeyDefinition("MeterValuesAlignedDataMaxLength", I, str(CSL_MAX_LENGTH), readonly=True),
        KeyDefinition("MeterValuesSampledData", C, "Energy.Active.Import.Register,Power.Active.Import",
                      choices=m, max_items=CSL_MAX_LENGTH),
        KeyDefinition("MeterValuesSampledDataMaxLength", I, str(CSL_MAX_LENGTH), readonly=True),
        KeyDefinition("MeterValueSampleInterval", I, "60", minimum=0, maximum=day),
        KeyDefinition("MinimumStatusDuration", I, "0", minimum=0, maximum=day),  # v16/status_hold.py
        KeyDefinition("NumberOfConnectors", I, str(number_of_connectors), readonly=True),
        KeyDefinition("ResetRetries", I, "3", minimum=0, maximum=10),
        KeyDefinition("SendLocalListMaxLength", I, str(SEND_LOCAL_LIST_MAX_LENGTH), readonly=True),
        KeyDefinition("StopTransactionOnEVSideDisconnect", B, "true"),
        KeyDefinition("StopTransactionOnInvalidId", B, "true"),
        KeyDefinition("StopTxnAlignedData", C, "", choices=m, max_items=CSL_MAX_LENGTH),
        KeyDefinition("StopTxnAlignedDataMaxLength", I, str(CSL_MAX_LENGTH), readonly=True),
        KeyDefinition("StopTxnSampledData", C, "Energy.Active.Import.Register", choices=m,
                      max_items=CSL_MAX_LENGTH),
        KeyDefinition("StopTxnSampledDataMaxLength", I, str(CSL_MAX_LENGTH), readonly=True),
        KeyDefinition("SupportedFeatureProfiles", C, ",".join(SUPPORTED_PROFILES), readonly=True),
        KeyDefinition("SupportedFeatureProfilesMaxLength", I, "6", readonly=True),
        KeyDefinition("TransactionMessageAttempts", I, "3", minimum=0, maximum=100),
        KeyDefinition("TransactionMessageRetryInterval", I, "60", minimum=0, maximum=day),
        KeyDefinition("UnlockConnectorOnEVSideDisconnect", B, "true"),
        KeyDefinition("WebSocketPingInterval", I, "60", minimum=0, maximum=day),
    ]


def check_preset(key: str, value: str, number_of_connectors: int) -> str | None:
    """Why a first-boot preset is unacceptable (``None`` if it is fine): used by the config validator,
    so a bad preset is a configuration error with the file and key named, not a crash at start."""
    defs = {d.name.lower(): d for d in _core_keys(number_of_connectors)}
    d = defs.get(key.lower())
    if d is None:
        return f"an OCPP 1.6 configuration key this charge point supports (known: {', '.join(sorted(defs))})"
    if d.readonly:
        return f"a writable key ({d.name} is read-only)"
    if d.validate(value) is None:
        return f"a valid {d.type.value} for {d.name}" + (f" from {d.minimum} to {d.maximum}"
                                                          if d.minimum is not None and d.maximum is not None else "")
    return None


class ConfigurationKeys:
    """The charge point's OCPP 1.6 configuration, backed by the database."""

    def __init__(self, db: Database, number_of_connectors: int,
                 extra: Iterable[KeyDefinition] = (), presets: dict[str, str] | None = None) -> None:
        self._db = db
        self._defs = {d.name: d for d in [*_core_keys(number_of_connectors), *extra]}
        self._lower = {name.lower(): name for name in self._defs}
        self._values = {name: d.default for name, d in self._defs.items()}
        self._listeners: list[Callable[[str, str], None]] = []
        self._apply_presets(presets or {})
        for key, value in db.settings(SETTING_PREFIX).items():
            name = key[len(SETTING_PREFIX):]
            d = self._defs.get(name)
            normalized = d.validate(value) if d is not None else None
            if d is None or normalized is None:
                log.warning("ignoring stored configuration value", extra={"key": name})
                continue
            self._values[name] = normalized

    def _apply_presets(self, presets: dict[str, str]) -> None:
        """Factory/commissioning presets: applied only where nothing is stored yet (first boot)."""
        for name, value in presets.items():
            d = self.definition(name)
            if d is None:
                raise ValueError(f"unknown OCPP configuration key {name!r}")
            normalized = d.validate(value)
            if normalized is None:
                raise ValueError(f"invalid value for {name}: {value!r} (expected {d.type.value})")
            if self._db.get_setting(SETTING_PREFIX + d.name) is None:
                self._db.put_setting(SETTING_PREFIX + d.name, normalized)

    def definition(self, key: str) -> KeyDefinition | None:
        name = self._lower.get(key.lower())
        return None if name is None else self._defs[name]

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(key, value)`` after each accepted change (to apply it live)."""
        self._listeners.append(listener)

    # --- GetConfiguration -----------------------------------------------------------------------

    def get(self, keys: list[str] | None) -> tuple[list[dict[str, object]], list[str]]:
        """``(configurationKey entries, unknownKey list)`` as GetConfiguration.conf wants them."""
        names: Iterable[str]
        unknown: list[str] = []
        if not keys:
            names = self._defs
        else:
            found = []
            for k in keys:
                d = self.definition(k)
                if d is None:
                    unknown.append(k)
                else:
                    found.append(d.name)
            names = found
        entries: list[dict[str, object]] = []
        for name in names:
            d = self._defs[name]
            if d.secret:
                continue  # write-only keys are not reported
            entries.append({"key": name, "readonly": d.readonly, "value": self._values[name]})
        return entries, unknown

    # --- ChangeConfiguration ----------------------------------------------------------------

    def change(self, key: str, value: str) -> ChangeResult:
        d = self.definition(key)
        if d is None:
            return ChangeResult.NOT_SUPPORTED
        if d.readonly:
            return ChangeResult.REJECTED
        normalized = d.validate(value)
        if normalized is None:
            log.info("configuration change rejected", extra={"key": d.name, "value": "***" if d.secret else value})
            return ChangeResult.REJECTED
        self._db.put_setting(SETTING_PREFIX + d.name, normalized)  # durable before we answer
        self._values[d.name] = normalized
        log.info("configuration changed", extra={"key": d.name, "value": "***" if d.secret else normalized})
        for listener in self._listeners:
            listener(d.name, normalized)
        return ChangeResult.REBOOT_REQUIRED if d.reboot_required else ChangeResult.ACCEPTED

    # --- typed access ---------------------------------------------------------------------------

    def get_str(self, key: str) -> str:
        d = self.definition(key)
        if d is None:
            raise KeyError(key)
        return self._values[d.name]

    def get_int(self, key: str) -> int:
        return int(self.get_str(key))

    def get_bool(self, key: str) -> bool:
        return self.get_str(key) == "true"

    def get_list(self, key: str) -> list[str]:
        value = self.get_str(key)
        return value.split(",") if value else []
