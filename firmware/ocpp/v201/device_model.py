"""The OCPP 2.0.1 device model (part B): components and variables described as data, their values persisted.

``device_model.json`` beside this module describes every variable — component (and instance), name (and
instance), data type, mutability, the Actual attribute's default, limits, unit, whether a new value needs a
reboot. :class:`DeviceModel` keeps the values in the settings store (``v201.<component>.<variable>``), checks a
new value against its description, and answers GetVariables / SetVariables item by item with the attribute
statuses of B06/B05 (Accepted, Rejected, UnknownComponent, UnknownVariable, NotSupportedAttributeType,
RebootRequired). Only the Actual attribute exists here: Target, MinSet and MaxSet are NotSupportedAttributeType.

No code per variable: a feature reads its variables by name (``get_int("OCPPCommCtrlr", "HeartbeatInterval")``)
and may be told of a change (:meth:`DeviceModel.on_change`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.storage import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = Path(__file__).with_name("device_model.json")
_PREFIX = "v201."

#: 2.0.1 ``AttributeEnumType``; only Actual is kept.
ATTRIBUTE_TYPES = frozenset({"Actual", "Target", "MinSet", "MaxSet"})
#: Longest attribute value (``attributeValue``: string[0..2500] in SetVariables, 1000 in the GetVariables result).
MAX_VALUE_LENGTH = 1000


class Mutability(StrEnum):
    READ_ONLY = "ReadOnly"
    READ_WRITE = "ReadWrite"
    WRITE_ONLY = "WriteOnly"


class DataType(StrEnum):
    """2.0.1 ``DataEnumType``."""

    STRING = "string"
    DECIMAL = "decimal"
    INTEGER = "integer"
    DATE_TIME = "dateTime"
    BOOLEAN = "boolean"
    OPTION_LIST = "OptionList"
    SEQUENCE_LIST = "SequenceList"
    MEMBER_LIST = "MemberList"


@dataclass(frozen=True)
class VariableKey:
    """Where a variable lives: the component (and its instance) and the variable (and its instance). EVSE
    scoped components are not in this slice."""

    component: str
    variable: str
    component_instance: str | None = None
    variable_instance: str | None = None

    def __str__(self) -> str:
        c = self.component + (f"[{self.component_instance}]" if self.component_instance else "")
        v = self.variable + (f"[{self.variable_instance}]" if self.variable_instance else "")
        return f"{c}.{v}"


@dataclass(frozen=True)
class VariableDefinition:
    key: VariableKey
    data_type: DataType
    mutability: Mutability
    default: str
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    values_list: tuple[str, ...] = ()
    unit: str | None = None
    reboot_required: bool = False

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a valid Actual value of this variable, or None."""
        if len(value) > (self.max_length or MAX_VALUE_LENGTH):
            return f"longer than {self.max_length or MAX_VALUE_LENGTH} characters"
        t = self.data_type
        if t is DataType.BOOLEAN:
            return None if value in ("true", "false") else "not a boolean (true or false)"
        if t in (DataType.INTEGER, DataType.DECIMAL):
            try:
                number = int(value) if t is DataType.INTEGER else float(value)
            except ValueError:
                return f"not {'an integer' if t is DataType.INTEGER else 'a decimal'}"
            if not math.isfinite(number):
                return "not a finite number"
            if (self.minimum is not None and number < self.minimum) or (
                    self.maximum is not None and number > self.maximum):
                return f"outside {self.minimum}..{self.maximum}"
            return None
        if t is DataType.DATE_TIME:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return "not a date-time"
            return None
        if t is DataType.OPTION_LIST:
            return None if value in self.values_list else f"not one of {','.join(self.values_list)}"
        if t in (DataType.MEMBER_LIST, DataType.SEQUENCE_LIST):
            members = [m.strip() for m in value.split(",")] if value else []
            unknown = [m for m in members if m not in self.values_list]
            if unknown:
                return f"{unknown[0]!r} is not one of {','.join(self.values_list)}"
            if len(set(members)) != len(members):
                return "a member is listed twice"
            return None
        return None


def _definition(component: Mapping[str, Any], v: Mapping[str, Any]) -> VariableDefinition:
    key = VariableKey(str(component["name"]), str(v["name"]), component.get("instance"), v.get("instance"))
    values = str(v.get("valuesList", ""))
    return VariableDefinition(
        key=key, data_type=DataType(v["dataType"]), mutability=Mutability(v["mutability"]), default=str(v["default"]),
        minimum=v.get("min"), maximum=v.get("max"), max_length=v.get("maxLength"),
        values_list=tuple(x for x in values.split(",") if x), unit=v.get("unit"),
        reboot_required=bool(v.get("rebootRequired", False)))


def load_description(path: Path = DESCRIPTION) -> dict[VariableKey, VariableDefinition]:
    """The variables ``path`` describes; a default that breaks its own description is a bug in the file."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: dict[VariableKey, VariableDefinition] = {}
    for component in raw["components"]:
        for v in component["variables"]:
            d = _definition(component, v)
            if d.key in out:
                raise ValueError(f"{path}: {d.key} described twice")
            problem = d.problem(d.default)
            if problem is not None:
                raise ValueError(f"{path}: {d.key}: default {d.default!r} {problem}")
            out[d.key] = d
    return out


def preset_key(name: str) -> VariableKey | None:
    """``Component.Variable`` or ``Component.Variable[instance]`` (an ``[ocpp.presets]`` name) as a key."""
    component, dot, variable = name.partition(".")
    if not dot or not component or not variable:
        return None
    instance = None
    if variable.endswith("]") and "[" in variable:
        variable, _, rest = variable.partition("[")
        instance = rest[:-1]
    return VariableKey(component, variable, None, instance)


def check_preset(name: str, value: str, definitions: Mapping[VariableKey, VariableDefinition] | None = None
                 ) -> str | None:
    """Why ``[ocpp.presets] name = value`` cannot configure this device model, or None."""
    definitions = definitions if definitions is not None else load_description()
    key = preset_key(name)
    d = definitions.get(key) if key is not None else None
    if d is None:
        return "a variable of the OCPP 2.0.1 device model, as Component.Variable or Component.Variable[instance]"
    if d.mutability is Mutability.READ_ONLY:
        return f"a writable variable ({d.key} is ReadOnly)"
    problem = d.problem(value)
    return None if problem is None else f"a valid value for {d.key}: {problem}"


Listener = Callable[[VariableKey, str], None]
#: ``check(current, new)``: why a feature refuses a new value its description allows (None: it takes it).
Check = Callable[[str, str], str | None]


@dataclass(frozen=True)
class GetResult:
    status: str  # Accepted | Rejected | UnknownComponent | UnknownVariable | NotSupportedAttributeType
    value: str | None = None


@dataclass(frozen=True)
class SetResult:
    status: str  # Accepted | Rejected | UnknownComponent | UnknownVariable | NotSupportedAttributeType | RebootRequired
    reason: str = ""


class DeviceModel:
    """The device model's variables, their Actual values persisted in the settings store."""

    def __init__(self, db: Database, presets: Mapping[str, str] | None = None,
                 definitions: Mapping[VariableKey, VariableDefinition] | None = None) -> None:
        """``presets`` (``Component.Variable`` -> value, checked by :func:`check_preset`) are written once, at the
        first start on this database; after that the CSMS owns the values."""
        self.definitions = dict(definitions if definitions is not None else load_description())
        self._components = {k.component for k in self.definitions}
        self._settings = Settings(db)
        self._listeners: list[tuple[Listener, frozenset[VariableKey] | None]] = []
        self._readers: dict[VariableKey, Callable[[], str]] = {}
        self._checks: dict[VariableKey, Check] = {}
        if presets and self._settings.get(_PREFIX + "seeded") is None:
            with db.transaction():
                for name, value in presets.items():
                    key = preset_key(name)
                    if key is not None and key in self.definitions:
                        self._settings.put(self._storage_key(key), value)
                self._settings.put(_PREFIX + "seeded", "1")

    def fix(self, component: str, variable: str, value: str) -> None:
        """A ReadOnly variable whose value the agent's configuration decides (not the CSMS, not a preset): stored
        at each start, so GetVariables and the reports say what the station does."""
        key = VariableKey(component, variable, None, None)
        d = self.definitions[key]
        assert d.mutability is Mutability.READ_ONLY and d.problem(value) is None, (key, value)
        if self._settings.get(self._storage_key(key)) != value:
            self._settings.put(self._storage_key(key), value)

    @staticmethod
    def _storage_key(key: VariableKey) -> str:
        return _PREFIX + str(key)

    def store(self, component: str, variable: str, value: str) -> None:
        """The station's own write of any variable (commissioning a WriteOnly password, a security profile put
        back): checked against its description, stored, without the listeners a SetVariables goes through."""
        key = VariableKey(component, variable, None, None)
        d = self.definitions[key]
        assert d.problem(value) is None, (key, "invalid value")  # never the value itself: it may be a secret
        self._settings.put(self._storage_key(key), value)

    def add_check(self, key: VariableKey, check: Check) -> None:
        """A feature's rule on a writable variable beyond its description (a password's length, a profile only
        upward): a SetVariables it refuses is Rejected with the reason."""
        assert self.definitions[key].mutability is not Mutability.READ_ONLY
        self._checks[key] = check

    def on_change(self, listener: Listener, keys: Iterable[VariableKey] | None = None) -> None:
        self._listeners.append((listener, None if keys is None else frozenset(keys)))

    def provide(self, key: VariableKey, read: Callable[[], str]) -> None:
        """A ReadOnly variable whose Actual value is a fact the station measures (LocalAuthListCtrlr.Entries), read
        when asked rather than stored."""
        assert self.definitions[key].mutability is Mutability.READ_ONLY
        self._readers[key] = read

    # --- reading, for the features ----------------------------------------------------------------

    def get(self, component: str, variable: str, instance: str | None = None) -> str:
        d = self.definitions[VariableKey(component, variable, None, instance)]
        read = self._readers.get(d.key)
        if read is not None:
            return read()
        stored = self._settings.get(self._storage_key(d.key))
        return d.default if stored is None else stored

    def get_int(self, component: str, variable: str, instance: str | None = None) -> int:
        return int(self.get(component, variable, instance))

    def get_bool(self, component: str, variable: str, instance: str | None = None) -> bool:
        return self.get(component, variable, instance) == "true"

    def get_list(self, component: str, variable: str, instance: str | None = None) -> list[str]:
        return [m.strip() for m in self.get(component, variable, instance).split(",") if m.strip()]

    # --- GetVariables / SetVariables, item by item --------------------------------------------------

    def _find(self, key: VariableKey) -> tuple[VariableDefinition | None, str | None]:
        """The variable, or the status that says why there is none."""
        d = self.definitions.get(key)
        if d is not None:
            return d, None
        if key.component not in self._components or (key.component_instance is not None and not any(
                k.component == key.component and k.component_instance == key.component_instance
                for k in self.definitions)):
            return None, "UnknownComponent"
        return None, "UnknownVariable"

    def get_variable(self, key: VariableKey, attribute: str = "Actual") -> GetResult:
        d, missing = self._find(key)
        if d is None:
            assert missing is not None
            return GetResult(missing)
        if attribute != "Actual":
            return GetResult("NotSupportedAttributeType")
        if d.mutability is Mutability.WRITE_ONLY:
            return GetResult("Rejected")
        return GetResult("Accepted", self.get(key.component, key.variable, key.variable_instance))

    def set_variable(self, key: VariableKey, value: str, attribute: str = "Actual") -> SetResult:
        """Checks and stores one value (B05). Listeners run after the store; a failing one is logged, never
        undoes the value the CSMS was told is Accepted."""
        d, missing = self._find(key)
        if d is None:
            assert missing is not None
            return SetResult(missing)
        if attribute != "Actual":
            return SetResult("NotSupportedAttributeType")
        if d.mutability is Mutability.READ_ONLY:
            return SetResult("Rejected", "ReadOnly")
        problem = d.problem(value)
        if problem is None and (check := self._checks.get(d.key)) is not None:
            problem = check(self.get(key.component, key.variable, key.variable_instance), value)
        if problem is not None:
            return SetResult("Rejected", problem)
        self._settings.put(self._storage_key(d.key), value)
        log.info("variable set", extra={"variable": str(d.key),
                                        "value": "***" if d.mutability is Mutability.WRITE_ONLY else value})
        for listener, keys in self._listeners:
            if keys is None or d.key in keys:
                try:
                    listener(d.key, value)
                except Exception:
                    log.exception("variable change not applied", extra={"variable": str(d.key)})
        return SetResult("RebootRequired" if d.reboot_required else "Accepted")


def markdown_table(definitions: Mapping[VariableKey, VariableDefinition] | None = None) -> str:
    """The device model as the Markdown table in docs/ocpp201.md (a test keeps the two the same)."""
    definitions = definitions if definitions is not None else load_description()
    rows = ["| component | variable | type | mutability | default | limits | reboot |", "|---|---|---|---|---|---|---|"]
    for d in definitions.values():
        k = d.key
        variable = k.variable + (f" [{k.variable_instance}]" if k.variable_instance else "")
        limits = ""
        if d.minimum is not None or d.maximum is not None:
            limits = f"{d.minimum if d.minimum is not None else ''}..{d.maximum if d.maximum is not None else ''}"
        if d.values_list:
            limits = ", ".join(d.values_list)
        if d.unit:
            limits = f"{limits} {d.unit}".strip()
        rows.append(f"| {k.component} | {variable} | {d.data_type.value} | {d.mutability.value} | "
                    f"`{d.default}` | {limits} | {'yes' if d.reboot_required else ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m firmware.ocpp.v201.device_model: the table for docs/ocpp201.md
    print(markdown_table(), end="")
