"""The OCPP 2.0.1 device model (part B): components and variables described as data, their values persisted.

``device_model.json`` beside this module describes every variable — component (and instance, and the tier it
is repeated on: each EVSE, each EVSE's connector), name (and instance), data type, mutability, the Actual
attribute's default (or ``provided``: the station supplies it when asked), the other attribute types it has
(Target, MinSet, MaxSet), limits, unit, whether a new value needs a reboot — and which OCPP 1.6 configuration key
is the same setting (``ocpp16``). :class:`DeviceModel` keeps the values in the settings store, checks a new value
against its description, and answers GetVariables / SetVariables item by item with the attribute statuses of
B06/B05 (Accepted, Rejected, UnknownComponent, UnknownVariable, NotSupportedAttributeType, RebootRequired).

One store, two views: a variable mapped to a 1.6 key is stored where the 1.6 configuration keeps that key
(``ocpp16.<Key>``), so a value set in one version is the value of the other after a version change; every other
variable is ``v201.<Component>.<Variable>`` (``/<attribute>`` for Target, MinSet, MaxSet). A stored value the
description refuses (set through 1.6, whose limits may be wider) reads as the default.

No code per variable: a feature reads its variables by name (``get_int("OCPPCommCtrlr", "HeartbeatInterval")``)
and may be told of a change (:meth:`DeviceModel.on_change`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from firmware.storage import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = Path(__file__).with_name("device_model.json")
_PREFIX = "v201."
#: Where the 1.6 configuration keeps its keys (firmware/ocpp/v16/configuration.py ``SETTING_PREFIX``; a test keeps
#: the two equal — the adapters do not import each other): a variable mapped to a 1.6 key is stored there.
SHARED_PREFIX = "ocpp16."

ACTUAL = "Actual"
#: 2.0.1 ``AttributeEnumType``.
ATTRIBUTE_TYPES = (ACTUAL, "Target", "MinSet", "MaxSet")
#: Longest attribute value (``attributeValue``: string[0..2500] in SetVariables, 1000 in the GetVariables result).
MAX_VALUE_LENGTH = 1000
#: The tiers a component can be repeated on (Part 1 §4.1): ``evse`` addresses the instance.
TIERS = ("EVSE", "Connector")


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
    """Where a variable lives: the component (its instance; on a tier, the EVSE and connector it belongs to) and
    the variable (and its instance)."""

    component: str
    variable: str
    component_instance: str | None = None
    variable_instance: str | None = None
    evse: int | None = None
    connector: int | None = None

    def __str__(self) -> str:
        c = self.component + (f"[{self.component_instance}]" if self.component_instance else "")
        if self.evse is not None:
            c += f"@{self.evse}" + (f".{self.connector}" if self.connector is not None else "")
        v = self.variable + (f"[{self.variable_instance}]" if self.variable_instance else "")
        return f"{c}.{v}"

    @property
    def component_id(self) -> tuple[str, str | None, int | None, int | None]:
        """The component instance this variable belongs to (what GetReport's componentCriteria judge)."""
        return self.component, self.component_instance, self.evse, self.connector


@dataclass(frozen=True)
class VariableDefinition:
    key: VariableKey
    data_type: DataType
    mutability: Mutability  #: of the Actual attribute
    default: str
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    values_list: tuple[str, ...] = ()
    unit: str | None = None
    reboot_required: bool = False
    #: the tier the component is repeated on (``EVSE``, ``Connector``); None: the station's own
    tier: str | None = None
    #: the station supplies the Actual value when asked (configuration, measurement); nothing is stored
    provided: bool = False
    #: the attribute types besides Actual and the mutability of each (Target, MinSet, MaxSet)
    attributes: Mapping[str, Mutability] = field(default_factory=dict)
    #: the OCPP 1.6 configuration key that is the same setting (one stored value for both)
    ocpp16: str | None = None

    @property
    def attribute_types(self) -> tuple[str, ...]:
        return (ACTUAL, *(a for a in ATTRIBUTE_TYPES if a in self.attributes))

    def mutability_of(self, attribute: str) -> Mutability:
        return self.mutability if attribute == ACTUAL else self.attributes[attribute]

    @property
    def writable(self) -> bool:
        """The CSMS may set some attribute of it (what ConfigurationInventory reports)."""
        return any(self.mutability_of(a) is not Mutability.READ_ONLY for a in self.attribute_types)

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a valid value of this variable, or None."""
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
    tier = component.get("tier")
    if tier is not None and tier not in TIERS:
        raise ValueError(f"{key}: tier {tier!r} is not one of {', '.join(TIERS)}")
    attributes = {str(a): Mutability(m) for a, m in dict(v.get("attributes", {})).items()}
    if set(attributes) - set(ATTRIBUTE_TYPES[1:]):
        raise ValueError(f"{key}: attributes other than Target, MinSet, MaxSet: {sorted(attributes)}")
    return VariableDefinition(
        key=key, data_type=DataType(v["dataType"]), mutability=Mutability(v["mutability"]),
        default=str(v.get("default", "")), minimum=v.get("min"), maximum=v.get("max"), max_length=v.get("maxLength"),
        values_list=tuple(x for x in values.split(",") if x), unit=v.get("unit"),
        reboot_required=bool(v.get("rebootRequired", False)), tier=tier, provided=bool(v.get("provided", False)),
        attributes=attributes)


def load_description(path: Path = DESCRIPTION) -> dict[VariableKey, VariableDefinition]:
    """The variables ``path`` describes (a component on a tier once, its key without ``evse``); a default that
    breaks its own description, or a 1.6 mapping to a variable not described, is a bug in the file."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    out: dict[VariableKey, VariableDefinition] = {}
    for component in raw["components"]:
        for v in component["variables"]:
            d = _definition(component, v)
            if d.key in out:
                raise ValueError(f"{path}: {d.key} described twice")
            if d.provided and d.mutability is not Mutability.READ_ONLY:
                raise ValueError(f"{path}: {d.key}: only a ReadOnly value can be provided by the station")
            problem = None if d.provided else d.problem(d.default)
            if problem is not None:
                raise ValueError(f"{path}: {d.key}: default {d.default!r} {problem}")
            out[d.key] = d
    for ocpp16_key, name in dict(raw.get("ocpp16", {})).items():
        key = preset_key(str(name))
        mapped = out.get(key) if key is not None else None
        if mapped is None or mapped.tier is not None or mapped.provided or mapped.ocpp16 is not None:
            raise ValueError(f"{path}: 1.6 key {ocpp16_key} mapped to {name!r}, not a station-wide stored variable "
                             "mapped once")
        out[mapped.key] = replace(mapped, ocpp16=str(ocpp16_key))
    return out


def instantiate(definitions: Mapping[VariableKey, VariableDefinition], evse_ids: Iterable[int]
                ) -> dict[VariableKey, VariableDefinition]:
    """The description with each tiered component repeated: per EVSE (``evse`` = its id), per connector (this
    charger's EVSEs have one connector each: ``connector`` 1)."""
    evses = sorted(evse_ids)
    out: dict[VariableKey, VariableDefinition] = {}
    for d in definitions.values():
        if d.tier is None:
            out[d.key] = d
            continue
        for evse in evses:
            key = replace(d.key, evse=evse, connector=1 if d.tier == "Connector" else None)
            out[key] = replace(d, key=key)
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


def request_size(payload: Mapping[str, Any]) -> int:
    """How a request is measured against a BytesPerMessage limit (DeviceDataCtrlr, LocalAuthListCtrlr): its
    payload as compact JSON — what the CSMS sent, give or take the spacing it chose."""
    return len(json.dumps(payload, separators=(",", ":")))


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
    """The device model's variables and their attributes, the stored ones persisted in the settings store."""

    def __init__(self, db: Database, presets: Mapping[str, str] | None = None,
                 definitions: Mapping[VariableKey, VariableDefinition] | None = None,
                 evse_ids: Iterable[int] = ()) -> None:
        """``presets`` (``Component.Variable`` -> value, checked by :func:`check_preset`) are written at the first
        start on this database, each only where no value is stored yet (one set through 1.6 stays); after that
        the CSMS owns the values. ``evse_ids``: the EVSEs the tiered components (EVSE, Connector) exist for."""
        self.definitions = instantiate(definitions if definitions is not None else load_description(), evse_ids)
        self._components = {k.component_id for k in self.definitions}
        self._settings = Settings(db)
        self._listeners: list[tuple[Listener, frozenset[VariableKey] | None]] = []
        self._readers: dict[VariableKey, Callable[[], str]] = {}
        self._move_to_shared_store(db)
        self._checks: dict[VariableKey, Check] = {}
        if presets and self._settings.get(_PREFIX + "seeded") is None:
            with db.transaction():
                for name, value in presets.items():
                    key = preset_key(name)
                    if key is not None and key in self.definitions:
                        storage = self._storage_key(self.definitions[key])
                        if self._settings.get(storage) is None:
                            self._settings.put(storage, value)
                self._settings.put(_PREFIX + "seeded", "1")

    def _move_to_shared_store(self, db: Database) -> None:
        """A value a 2.0.1 agent stored before its variable was mapped to a 1.6 key moves to the shared key,
        unless 1.6 has stored one there (the agent ran 1.6 since): once."""
        with db.transaction():
            for d in self.definitions.values():
                if d.ocpp16 is None:
                    continue
                own = _PREFIX + str(d.key)
                value = self._settings.get(own)
                if value is None:
                    continue
                if self._settings.get(SHARED_PREFIX + d.ocpp16) is None:
                    self._settings.put(SHARED_PREFIX + d.ocpp16, value)
                self._settings.delete(own)

    def fix(self, component: str, variable: str, value: str) -> None:
        """A ReadOnly variable whose value the agent's configuration decides (not the CSMS, not a preset): stored
        at each start, so GetVariables and the reports say what the station does."""
        key = VariableKey(component, variable, None, None)
        d = self.definitions[key]
        assert d.mutability is Mutability.READ_ONLY and d.problem(value) is None, (key, value)
        if self._settings.get(self._storage_key(d)) != value:
            self._settings.put(self._storage_key(d), value)

    def characterize(self, key: VariableKey, *, minimum: float | None = None, maximum: float | None = None) -> None:
        """Limits this station's configuration decides (an EVSE's Power maxLimit), reported as its
        variableCharacteristics."""
        d = self.definitions[key]
        self.definitions[key] = replace(d, minimum=d.minimum if minimum is None else minimum,
                                        maximum=d.maximum if maximum is None else maximum)

    @staticmethod
    def _storage_key(d: VariableDefinition, attribute: str = ACTUAL) -> str:
        if attribute == ACTUAL and d.ocpp16 is not None:
            return SHARED_PREFIX + d.ocpp16
        return _PREFIX + str(d.key) + ("" if attribute == ACTUAL else f"/{attribute}")

    def store(self, component: str, variable: str, value: str) -> None:
        """The station's own write of any variable (commissioning a WriteOnly password, a security profile put
        back): checked against its description, stored, without the listeners a SetVariables goes through."""
        key = VariableKey(component, variable, None, None)
        d = self.definitions[key]
        assert d.problem(value) is None, (key, "invalid value")  # never the value itself: it may be a secret
        self._settings.put(self._storage_key(d), value)

    def add_check(self, key: VariableKey, check: Check) -> None:
        """A feature's rule on a writable variable beyond its description (a password's length, a profile only
        upward): a SetVariables it refuses is Rejected with the reason."""
        assert self.definitions[key].mutability is not Mutability.READ_ONLY
        self._checks[key] = check

    def on_change(self, listener: Listener, keys: Iterable[VariableKey] | None = None) -> None:
        """``listener(key, value)`` after each accepted change of an Actual value (of ``keys``; all without)."""
        self._listeners.append((listener, None if keys is None else frozenset(keys)))

    def provide(self, key: VariableKey, read: Callable[[], str]) -> None:
        """A ReadOnly variable whose Actual value is a fact the station measures or is configured with
        (LocalAuthListCtrlr.Entries, an EVSE's AvailabilityState), read when asked rather than stored."""
        assert self.definitions[key].mutability is Mutability.READ_ONLY
        self._readers[key] = read

    # --- reading, for the features ----------------------------------------------------------------

    def value(self, d: VariableDefinition, attribute: str = ACTUAL) -> str:
        """The value of one attribute: provided, stored, or the default (Actual) / unset "" (the others). A stored
        value the description refuses — set through the 1.6 view, whose limits may be wider — reads as unset."""
        if attribute == ACTUAL:
            read = self._readers.get(d.key)
            if read is not None:
                return read()
            if d.provided:
                return ""  # nothing reads it on this station (yet): unknown
        stored = self._settings.get(self._storage_key(d, attribute))
        fallback = d.default if attribute == ACTUAL else ""
        if stored is None or stored == fallback:
            return fallback
        problem = d.problem(stored)
        if problem is not None:
            log.warning("stored value not valid for the variable; its default applies",
                        extra={"variable": str(d.key), "attribute": attribute, "problem": problem})
            return fallback
        return stored

    def get(self, component: str, variable: str, instance: str | None = None, *, evse: int | None = None,
            connector: int | None = None) -> str:
        return self.value(self.definitions[VariableKey(component, variable, None, instance, evse, connector)])

    def get_int(self, component: str, variable: str, instance: str | None = None) -> int:
        return int(self.get(component, variable, instance))

    def get_bool(self, component: str, variable: str, instance: str | None = None) -> bool:
        return self.get(component, variable, instance) == "true"

    def get_list(self, component: str, variable: str, instance: str | None = None) -> list[str]:
        return [m.strip() for m in self.get(component, variable, instance).split(",") if m.strip()]

    # --- value sizes (DeviceDataCtrlr, Part 2 "General") ------------------------------------------------

    def _size(self, variable: str) -> int:
        """DeviceDataCtrlr.``variable``, capped by ValueSize (the limit of every value, B05/B06 and N07): both
        apply, the smaller wins; a description without them (a test's) has the schema's limit."""
        sizes = [int(self.value(d)) for name in ("ValueSize", variable)
                 if (d := self.definitions.get(VariableKey("DeviceDataCtrlr", name))) is not None]
        return min(sizes, default=MAX_VALUE_LENGTH)

    def configuration_value_size(self) -> int:
        """The longest value a SetVariables may set (ConfigurationValueSize, ValueSize)."""
        return self._size("ConfigurationValueSize")

    def reporting_value_size(self) -> int:
        """The longest value reported (ReportingValueSize, ValueSize): GetVariables, NotifyReport, NotifyEvent."""
        return self._size("ReportingValueSize")

    def reported(self, value: str) -> str:
        """``value`` as it is reported: cut at the reporting value size."""
        return value[:self.reporting_value_size()]

    # --- GetVariables / SetVariables, item by item --------------------------------------------------

    def _find(self, key: VariableKey, attribute: str) -> VariableDefinition | str:
        """The variable with that attribute, or the status that says why there is none (B06.FR.06/07/15: no
        component instance with that name, instance, EVSE and connector is UnknownComponent)."""
        d = self.definitions.get(key)
        if d is None:
            return "UnknownVariable" if key.component_id in self._components else "UnknownComponent"
        return d if attribute in d.attribute_types else "NotSupportedAttributeType"

    def get_variable(self, key: VariableKey, attribute: str = ACTUAL) -> GetResult:
        d = self._find(key, attribute)
        if isinstance(d, str):
            return GetResult(d)
        if d.mutability_of(attribute) is Mutability.WRITE_ONLY:
            return GetResult("Rejected")
        # "" for a supported attribute unset (B06.FR.13); no longer than ReportingValueSize
        return GetResult("Accepted", self.reported(self.value(d, attribute)))

    def set_variable(self, key: VariableKey, value: str, attribute: str = ACTUAL) -> SetResult:
        """Checks and stores one value (B05). Listeners run after the store; a failing one is logged, never
        undoes the value the CSMS was told is Accepted."""
        d = self._find(key, attribute)
        if isinstance(d, str):
            return SetResult(d)
        if d.mutability_of(attribute) is Mutability.READ_ONLY:
            return SetResult("Rejected", "ReadOnly")
        size = self.configuration_value_size()
        problem = (f"longer than ConfigurationValueSize ({size} characters)" if len(value) > size
                   else d.problem(value) or self._bounds_problem(d, attribute, value))
        if problem is None and attribute == ACTUAL and (check := self._checks.get(d.key)) is not None:
            problem = check(self.value(d), value)
        if problem is not None:
            return SetResult("Rejected", problem)
        self._settings.put(self._storage_key(d, attribute), value)
        log.info("variable set", extra={"variable": str(d.key), "attribute": attribute,
                                        "value": "***" if d.mutability is Mutability.WRITE_ONLY else value})
        if attribute != ACTUAL:
            return SetResult("Accepted")
        for listener, keys in self._listeners:
            if keys is None or d.key in keys:
                try:
                    listener(d.key, value)
                except Exception:
                    log.exception("variable change not applied", extra={"variable": str(d.key)})
        return SetResult("RebootRequired" if d.reboot_required else "Accepted")

    def _bounds_problem(self, d: VariableDefinition, attribute: str, value: str) -> str | None:
        """Part 1 §4.3: a Target within MinSet..MaxSet, MinSet not above MaxSet (numbers; an unset bound binds
        nothing)."""
        if d.data_type not in (DataType.INTEGER, DataType.DECIMAL) or attribute == ACTUAL:
            return None
        number = float(value)
        low = self.value(d, "MinSet") if "MinSet" in d.attributes and attribute != "MinSet" else ""
        high = self.value(d, "MaxSet") if "MaxSet" in d.attributes and attribute != "MaxSet" else ""
        if low and number < float(low):
            return f"below MinSet {low}"
        if high and number > float(high):
            return f"above MaxSet {high}"
        return None


def markdown_table(definitions: Mapping[VariableKey, VariableDefinition] | None = None) -> str:
    """The device model as the Markdown table in docs/ocpp201.md (a test keeps the two the same)."""
    definitions = definitions if definitions is not None else load_description()
    rows = ["| component | variable | type | mutability | default | limits | reboot | OCPP 1.6 key |",
            "|---|---|---|---|---|---|---|---|"]
    for d in definitions.values():
        k = d.key
        component = k.component + {"EVSE": " (each EVSE)", "Connector": " (each connector)"}.get(d.tier or "", "")
        variable = k.variable + (f" [{k.variable_instance}]" if k.variable_instance else "")
        limits = ""
        if d.minimum is not None or d.maximum is not None:
            limits = f"{d.minimum if d.minimum is not None else ''}..{d.maximum if d.maximum is not None else ''}"
        if d.values_list:
            limits = ", ".join(d.values_list)
        if d.unit:
            limits = f"{limits} {d.unit}".strip()
        mutability = d.mutability.value + "".join(f"; {a} {m.value}" for a, m in d.attributes.items())
        default = "(the station's)" if d.provided else f"`{d.default}`"
        rows.append(f"| {component} | {variable} | {d.data_type.value} | {mutability} | {default} | {limits} | "
                    f"{'yes' if d.reboot_required else ''} | {d.ocpp16 or ''} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # python -m firmware.ocpp.v201.device_model: the table for docs/ocpp201.md
    print(markdown_table(), end="")
