"""OCPP 1.6 configuration (§9): the keys every feature declared, persisted, and GetConfiguration /
ChangeConfiguration served exactly as the spec asks.

``Rejected`` for a value that is not valid for the key (or a read-only key), ``NotSupported`` for a key we
do not know, ``RebootRequired`` when the new value only takes effect after a reboot. Changed values are
written to the database before the answer goes out, so a CSMS never sees Accepted for a change a power cut
could undo. Values are kept as their OCPP string form (what GetConfiguration returns) and exposed typed
(:meth:`ConfigurationKeys.get_int` and friends); a feature that applies a key live subscribes to it with
:meth:`ConfigurationKeys.on_change`.

Which keys exist is not written here: each feature module declares its own ``KEYS``
(:mod:`~firmware.ocpp.v16.features` gathers them), as MicroOcpp's services own theirs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.v16 import features
from firmware.ocpp.v16.keys import ChangeResult, KeyDefinition, KeyType
from firmware.storage import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

SETTING_PREFIX = "ocpp16."

KEYS = (
    KeyDefinition("GetConfigurationMaxKeys", KeyType.INT, "64", readonly=True),
    KeyDefinition("SupportedFeatureProfiles", KeyType.CSL,
                  "Core,FirmwareManagement,LocalAuthListManagement,RemoteTrigger,Reservation,SmartCharging",
                  readonly=True),
    KeyDefinition("SupportedFeatureProfilesMaxLength", KeyType.INT, "6", readonly=True),
)


def check_preset(key: str, value: str, number_of_connectors: int) -> str | None:
    """Why a first-boot preset is unacceptable (``None`` if it is fine): used where a configuration is loaded,
    so a bad preset is a configuration error with the file and key named, not a crash at start."""
    defs = {d.name.lower(): d for d in [*features.key_definitions(number_of_connectors), *KEYS]}
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
                 extra: Iterable[KeyDefinition] = (), presets: dict[str, str] | None = None,
                 fixed: dict[str, str] | None = None) -> None:
        """``fixed``: values of read-only keys that the charger's own configuration decides (e.g.
        ReserveConnectorZeroSupported from ``[ocpp] reserve_connector_zero``), applied at every start."""
        self._settings = Settings(db)
        declared = [*features.key_definitions(number_of_connectors), *KEYS, *extra]
        self._defs = {d.name: d for d in sorted(declared, key=lambda d: d.name)}
        self._lower = {name.lower(): name for name in self._defs}
        self._values = {name: d.default for name, d in self._defs.items()}
        self._listeners: list[tuple[frozenset[str] | None, Callable[[str, str], None]]] = []
        self._guards: dict[str, Callable[[str, str], bool]] = {}
        for name, value in (fixed or {}).items():
            fixed_def = self._defs[name]
            normalized = fixed_def.validate(value)
            if not fixed_def.readonly or normalized is None:
                raise ValueError(f"not a read-only key with a valid value: {name}={value!r}")
            self._values[name] = normalized
        self._apply_presets(presets or {})
        for key, value in self._settings.with_prefix(SETTING_PREFIX).items():
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
            if self._settings.get(SETTING_PREFIX + d.name) is None:
                self._settings.put(SETTING_PREFIX + d.name, normalized)

    def definition(self, key: str) -> KeyDefinition | None:
        name = self._lower.get(key.lower())
        return None if name is None else self._defs[name]

    def on_change(self, listener: Callable[[str, str], None], keys: Iterable[str] | None = None) -> None:
        """Call ``listener(key, value)`` after each accepted change of one of ``keys`` (all without), to apply
        it live."""
        self._listeners.append((frozenset(keys) if keys is not None else None, listener))

    def add_guard(self, key: str, guard: Callable[[str, str], bool]) -> None:
        """``guard(current, new)`` (both normalized) may refuse a ChangeConfiguration the key's type allows
        (Rejected): what a value means to its feature, e.g. SecurityProfile only upward, with its prerequisites."""
        d = self.definition(key)
        if d is None:
            raise KeyError(key)
        self._guards[d.name] = guard

    def set_local(self, key: str, value: str) -> None:
        """Set a key from the charge point's side (commissioning, a security profile fallback): stored, without
        the guards and the listeners a change by the CSMS goes through."""
        d = self.definition(key)
        if d is None:
            raise KeyError(key)
        self._settings.put(SETTING_PREFIX + d.name, value)
        self._values[d.name] = value

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
        guard = self._guards.get(d.name)
        if normalized is None or (guard is not None and not guard(self._values[d.name], normalized)):
            log.info("configuration change rejected", extra={"key": d.name, "value": "***" if d.secret else value})
            return ChangeResult.REJECTED
        self._settings.put(SETTING_PREFIX + d.name, normalized)  # durable before we answer
        self._values[d.name] = normalized
        log.info("configuration changed", extra={"key": d.name, "value": "***" if d.secret else normalized})
        for wanted, listener in self._listeners:
            if wanted is None or d.name in wanted:
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


class Configuration:
    """GetConfiguration and ChangeConfiguration (Core, §5.8, §5.3)."""

    def __init__(self, keys: ConfigurationKeys) -> None:
        self.keys = keys

    def max_items(self, action: str) -> int | None:
        """GetConfiguration: at most GetConfigurationMaxKeys keys, as announced. The answer repeats every key, escaped:
        9,500 unknown keys of 50 "é" (980 KB) made a 2.9 MB CALLRESULT, and the CSMS closed the connection."""
        return self.keys.get_int("GetConfigurationMaxKeys") if action == Action.get_configuration else None

    @handles(Action.get_configuration)
    async def _get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        entries, unknown = self.keys.get(key)
        return call_result.GetConfiguration(configuration_key=entries or None, unknown_key=unknown or None)

    @handles(Action.change_configuration)
    async def _change_configuration(self, key: str, value: str, **_: Any) -> Any:
        return call_result.ChangeConfiguration(status=self.keys.change(key, value).value)


__all__ = ["ChangeResult", "ConfigurationKeys", "KeyDefinition", "KeyType", "check_preset"]
