"""Frames a hostile or broken CSMS could send, and what OCPP-J 1.6 or 2.0.1 says a charge point owes each one.

Used by ``tests/test_e2e_fuzz_ocpp.py``. Three parts, kept apart on purpose:

* **generation** (hypothesis strategies): valid payloads of every OCPP 1.6 action built from the JSON schemas
  the ``ocpp`` package ships, then mutated (a required field dropped, a wrong type, a value outside the enum or
  range, an extra field, a huge string, null, a huge number, a lone surrogate, deep nesting), framed right or
  wrong (unknown MessageTypeIds, CALLRESULT/CALLERROR for ids never sent, a missing or extra element, a
  duplicate id), damaged as text (cut, a character changed), oversized (1-4 MiB) or sent as a binary frame;
* the **oracle** (:func:`expect`): from the frame alone, whether an answer is owed (exactly one), must not come,
  or may come, and which answers are acceptable. It is written from the OCPP-J rules, not from the agent's
  code: it parses with the standard library and validates with its own schema validator, so a disagreement
  with the agent is a finding, not a tautology;
* the **guard** (:func:`side_effect`): whether the agent *would execute* a frame that changes the charger's
  state (a Reset restarts the agent). This one deliberately mirrors the agent (its own parser and schema
  check), because it must predict exactly what the agent runs.

Each part takes the OCPP version's :class:`Profile` (:data:`V16`, the default, or :data:`V201`): its actions and
schemas, the requests the agent serves, the error-code table and the framing rules of the version.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, Literal

import ocpp
from hypothesis import assume
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from firmware.bounded_json import MAX_DEPTH, MAX_NUMBER_CHARS
from firmware.ocpp.rpc import MAX_FRAME_BYTES, MAX_PAYLOAD_VALUES, Dialect, classify_frame, excess
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v201.dialect import OCPP201
from firmware.security.authorization_key import is_valid_authorization_key

SCHEMA_DIR = Path(ocpp.__file__).parent / "v16" / "schemas"
#: Every OCPP 1.6 action (with the 1.6 security whitepaper's), one request schema each.
ACTIONS = tuple(sorted(p.stem for p in SCHEMA_DIR.glob("*.json") if not p.stem.endswith("Response")))
#: Sent by a charge point; a CSMS sending them is talking the wrong way round (still 1.6 actions).
CP_ACTIONS = frozenset({
    "Authorize", "BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat",
    "LogStatusNotification", "MeterValues", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification", "StartTransaction", "StatusNotification", "StopTransaction"})
CSMS_ACTIONS = tuple(a for a in ACTIONS if a not in CP_ACTIONS)
#: The CSMS requests the agent serves (its features in firmware/ocpp/v16/); the test checks this list against the agent,
#: so a new handler cannot slip into the fuzzer's valid frames before someone decided whether it is safe.
HANDLED = frozenset({"CancelReservation", "CertificateSigned", "ChangeAvailability", "ChangeConfiguration",
                     "ClearCache", "ClearChargingProfile", "DataTransfer", "DeleteCertificate",
                     "ExtendedTriggerMessage", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics",
                     "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "InstallCertificate",
                     "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList",
                     "SetChargingProfile", "SignedUpdateFirmware", "TriggerMessage", "UnlockConnector",
                     "UpdateFirmware"})
#: Valid ones start work that outlasts the batch (a firmware job with its retries, an upload with its retries, and
#: their status notifications), wherever they point: never sent valid.
FILE_TRANSFERS = frozenset({"UpdateFirmware", "SignedUpdateFirmware", "GetDiagnostics", "GetLog"})
#: OCPP-J 1.6 §4.2.3, as the 1.6 text spells them.
ERROR_CODES_16 = frozenset({
    "NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError", "FormationViolation",
    "PropertyConstraintViolation", "OccurenceConstraintViolation", "TypeConstraintViolation", "GenericError"})
#: Schemas whose numbers the library (and so the agent) reads as Decimal (``multipleOf: 0.1``).
DECIMAL_ACTIONS = frozenset({"SetChargingProfile", "RemoteStartTransaction"})
#: Where a generated request points a charge point at a server: a closed port on loopback, never the outside.
NOWHERE = "ftp://127.0.0.1:9/fuzz"
URL_FIELDS = frozenset({"location", "remoteLocation"})

SCHEMA_DIR_201 = Path(ocpp.__file__).parent / "v201" / "schemas"
#: The CSMS requests the 2.0.1 agent serves (its features in firmware/ocpp/v201/), checked against the agent as
#: :data:`HANDLED` is.
HANDLED_201 = frozenset({"CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache",
                         "ClearChargingProfile", "DataTransfer", "DeleteCertificate", "GetBaseReport",
                         "GetChargingProfiles", "GetCompositeSchedule", "GetInstalledCertificateIds",
                         "GetLocalListVersion", "GetLog", "GetReport", "GetTransactionStatus", "GetVariables",
                         "InstallCertificate", "RequestStartTransaction", "RequestStopTransaction", "ReserveNow",
                         "Reset", "SendLocalList", "SetChargingProfile", "SetNetworkProfile", "SetVariables",
                         "TriggerMessage", "UnlockConnector", "UpdateFirmware"})
#: OCPP-J 2.0.1 Part 4 Table 8.
ERROR_CODES_201 = frozenset({
    "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported", "NotImplemented", "NotSupported",
    "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError", "RpcFrameworkError",
    "SecurityError", "TypeConstraintViolation"})
#: 2.0.1 requests a charging station sends (a CSMS sending them talks the wrong way round).
CP_ACTIONS_201 = frozenset({
    "Authorize", "BootNotification", "ClearedChargingLimit", "FirmwareStatusNotification", "Get15118EVCertificate",
    "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues", "NotifyChargingLimit",
    "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds", "NotifyEVChargingSchedule",
    "NotifyEvent", "NotifyMonitoringReport", "NotifyReport", "PublishFirmwareStatusNotification",
    "ReportChargingProfiles", "ReservationStatusUpdate", "SecurityEventNotification", "SignCertificate",
    "StatusNotification", "TransactionEvent"})
#: Device model variables of the agent (its description file): real names, so that generated SetVariables reach
#: the code that parses a value.
_MODEL = json.loads((Path(__file__).parent.parent / "firmware" / "ocpp" / "v201" / "device_model.json").read_text())
VARIABLES_201 = tuple((c["name"], v["name"], v.get("instance")) for c in _MODEL["components"] for v in c["variables"])


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (a cache key): V16 or V201
class Profile:
    """What the fuzzer needs to know of one OCPP-J version."""

    version: str
    schema_dir: Path
    schema_suffix: str  # "" (1.6: Reset.json) or "Request" (2.0.1: ResetRequest.json)
    cp_actions: frozenset[str]
    handled: frozenset[str]
    error_codes: frozenset[str]
    dialect: Dialect
    #: the request a sentinel sends (well-formed, read-only) and how its answer is recognised
    probe: tuple[str, dict[str, Any]]
    #: action names of the other version (unknown here: NotImplemented)
    foreign_actions: tuple[str, ...]

    @property
    def actions(self) -> tuple[str, ...]:
        names = (p.stem for p in self.schema_dir.glob("*.json") if not p.stem.endswith("Response"))
        return tuple(sorted(n.removesuffix(self.schema_suffix) if self.schema_suffix else n for n in names))

    @property
    def csms_actions(self) -> tuple[str, ...]:
        return tuple(a for a in self.actions if a not in self.cp_actions)

    def code(self, name: str) -> str:
        """A code as this version spells it (FormatViolation in 2.0.1 is FormationViolation in 1.6)."""
        return self.dialect.error_code(name)

    @property
    def framing_error(self) -> str:
        return self.dialect.framing.framework_error

    @property
    def answers_unreadable(self) -> bool:
        """2.0.1 answers what it cannot read ("-1", Part 4 §4.2.3) and unknown MessageTypeIds (§4.4)."""
        return self.dialect.framing.unreadable_id is not None


V16 = Profile("1.6", SCHEMA_DIR, "", CP_ACTIONS, HANDLED, ERROR_CODES_16, OCPP16,
              ("GetConfiguration", {"key": ["HeartbeatInterval"]}),
              ("GetVariables", "RequestStartTransaction", "TransactionEvent"))
V201 = Profile("2.0.1", SCHEMA_DIR_201, "Request", CP_ACTIONS_201, HANDLED_201, ERROR_CODES_201, OCPP201,
               ("GetVariables", {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                                      "variable": {"name": "HeartbeatInterval"}}]}),
               ("GetConfiguration", "RemoteStartTransaction", "StartTransaction", "ChangeConfiguration"))

#: Stands for a CALL's unique id while hypothesis builds a frame; :meth:`Case.render` puts a fresh id of the same
#: width in its place just before sending. Drawn ids would repeat (hypothesis replays and shrinks examples, and
#: the agent refuses a reused id); ids made inside a strategy would make generation impure.
ID = "fz########"
_serial = itertools.count(1)


def fresh_id() -> str:
    return f"fz{next(_serial):08d}"


# --- JSON rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is: what ``json.dumps`` cannot produce (``1e400``, 5,000 digits, ``"\\ud800"``,
    duplicate keys, 3,000 nested arrays)."""

    text: str


def _no_raw(value: object) -> Any:
    raise TypeError("a Raw token")


def dump(value: Any, ascii_only: bool = True) -> str:
    """Compact JSON with :class:`Raw` tokens spliced in."""
    if isinstance(value, dict | list):
        try:  # no Raw inside: the C encoder (a 100,000-item flood in milliseconds, not a second of the GIL)
            return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":"), default=_no_raw)
        except TypeError:
            pass
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{dump(k, ascii_only)}:{dump(v, ascii_only)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


# --- schemas -> valid payloads ------------------------------------------------------------------------


@cache
def schema(action: str, profile: Profile | None = None) -> dict[str, Any]:
    profile = profile or V16
    path = profile.schema_dir / f"{action}{profile.schema_suffix}.json"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"), parse_float=Decimal)
    return loaded


def resolve(sub: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = sub.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return resolve(target, root)
    return sub


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
_TIMESTAMPS = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"))


def valid_value(sub: dict[str, Any], root: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values that validate against ``sub`` (formats aside: a date-time is well formed, a URL points nowhere)."""
    sub = resolve(sub, root)
    if "enum" in sub:
        return st.sampled_from(sub["enum"])
    kind = sub.get("type")
    if kind == "object":
        props = sub.get("properties", {})
        required = set(sub.get("required", ()))
        return st.fixed_dictionaries(
            {k: valid_value(v, root, k) for k, v in props.items() if k in required},
            optional={k: valid_value(v, root, k) for k, v in props.items() if k not in required})
    if kind == "array":
        low = int(sub.get("minItems", 0))
        return st.lists(valid_value(sub.get("items", {}), root, name), min_size=low,
                        max_size=max(low, min(int(sub.get("maxItems", 3)), 3)))
    if kind == "string":
        if name in URL_FIELDS:
            return st.just(NOWHERE)
        if sub.get("format") == "date-time":
            return _TIMESTAMPS
        return st.text(st.characters(codec="utf-8"), max_size=min(int(sub.get("maxLength", 40)), 40))
    if kind == "integer":
        low = sub.get("minimum")
        small = st.integers(min_value=int(low) if low is not None else -3, max_value=100)
        big = st.integers(min_value=int(low) if low is not None else -(2 ** 70), max_value=2 ** 70)
        return st.one_of(small, big, st.sampled_from([2 ** 31 - 1, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64]))
    if kind == "number":
        step = sub.get("multipleOf")
        if step is not None:  # tenths, written the way a CSMS would (21.4, not 21.400000000000002)
            return st.integers(-100_000, 100_000).map(lambda n: Raw(str(Decimal(n) / 10)))
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    return st.none()


#: OCPP 1.6 §9 configuration key names (and case variants): a random key would almost never reach the code
#: that parses a key's value.
STANDARD_KEYS = (
    "AllowOfflineTxForUnknownId", "AuthorizationCacheEnabled", "AuthorizeRemoteTxRequests", "BlinkRepeat",
    "ClockAlignedDataInterval", "ConnectionTimeOut", "ConnectorPhaseRotation", "ConnectorPhaseRotationMaxLength",
    "GetConfigurationMaxKeys", "HeartbeatInterval", "LightIntensity", "LocalAuthorizeOffline", "LocalPreAuthorize",
    "MaxEnergyOnInvalidId", "MeterValuesAlignedData", "MeterValuesSampledData", "MeterValueSampleInterval",
    "MinimumStatusDuration", "NumberOfConnectors", "ResetRetries", "StopTransactionOnEVSideDisconnect",
    "StopTransactionOnInvalidId", "StopTxnAlignedData", "StopTxnSampledData", "SupportedFeatureProfiles",
    "TransactionMessageAttempts", "TransactionMessageRetryInterval", "UnlockConnectorOnEVSideDisconnect",
    "WebSocketPingInterval", "LocalAuthListEnabled", "LocalAuthListMaxLength", "SendLocalListMaxLength",
    "ReserveConnectorZeroSupported", "ChargeProfileMaxStackLevel", "AuthorizationKey", "SecurityProfile",
    "heartbeatinterval", "HEARTBEATINTERVAL", "HeartbeatInterval ")
#: Values a sloppy or hostile CSMS could set: numbers the way Python would read them but OCPP would not.
HOSTILE_VALUES = (
    "--5", "\u00b2", "\u0663", "\U0001d7d3", "1e3", "0x10", " 5 ", "+5", "5.0", "-0", "0", "-1", "86401",
    "99999999999999999999999", "1_000", "true", "TRUE", " true", "", ",", "Voltage,Voltage",
    "Energy.Active.Import.Register,,", "\x00", "a" * 500, "0.RST,1.RTS,2.SRT,3.STR")


def _variable_item(draw: st.DrawFn, item: dict[str, Any]) -> dict[str, Any]:
    """A Get/SetVariables item naming a real variable of the agent (its instance as the model has it)."""
    component, variable, instance = draw(st.sampled_from(VARIABLES_201))
    named = {**item, "component": {"name": component},
             "variable": {"name": variable} | ({"instance": instance} if instance else {})}
    if "attributeValue" in item and draw(st.booleans()):
        named["attributeValue"] = draw(st.sampled_from(HOSTILE_VALUES[:-2]))  # (at most 1000 characters)
    return named


@st.composite
def valid_payload(draw: st.DrawFn, action: str, profile: Profile | None = None) -> dict[str, Any]:
    """A valid payload; for the requests whose strings name something (a key, a vendor), often a real name."""
    profile = profile or V16
    root = schema(action, profile)
    payload: dict[str, Any] = draw(valid_value(root, root))
    if profile is V201:
        for field_name in ("getVariableData", "setVariableData"):
            if action.endswith("Variables") and field_name in payload and draw(st.booleans()):
                payload[field_name] = [_variable_item(draw, item) for item in payload[field_name]]
        return payload
    if action == "ChangeConfiguration" and draw(st.booleans()):
        payload["key"] = draw(st.sampled_from(STANDARD_KEYS))
        payload["value"] = draw(st.one_of(st.sampled_from(HOSTILE_VALUES), st.just(payload["value"])))
    elif action == "GetConfiguration" and draw(st.booleans()):
        payload["key"] = draw(st.lists(st.sampled_from(STANDARD_KEYS), max_size=100))
    elif action == "DataTransfer" and draw(st.booleans()):
        payload["vendorId"] = draw(st.sampled_from(["evse-agent", "EVSE-AGENT", "evse-agent "]))
        payload["messageId"] = draw(st.sampled_from(["Diagnostics", "Hardware", "diagnostics", ""]))
    return payload


# --- mutations ------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]

HUGE_NUMBERS = ("1e400", "-1e400", "1e-400", "1" + "0" * 39, "9" * (MAX_NUMBER_CHARS + 1), "9" * 5000,
                "-" + "9" * 4400, "0." + "1" * 60, "1.7976931348623157e308", "-0", "-0.0", "1E+2", "4.0",
                "123456789012345678901234567890", str(2 ** 64), str(-(2 ** 63) - 1))
SURROGATES = ('"\\ud800"', '"\\udfff"', '"abc\\ud83d"', '"\\udc00x"', '"\\uDBFF\\u0041"',
              '"\\ud83d\\ude00"')  # the last is a proper pair: one emoji, fine
WRONG_TYPES: tuple[Any, ...] = (0, -1, 1.5, "1", "", True, False, None, [], {}, [1], {"a": 1}, "true")


def nodes(value: Any, sub: dict[str, Any], root: dict[str, Any],
          path: Path_ = ()) -> list[tuple[Path_, dict[str, Any]]]:
    """Every place in ``value`` with the schema that governs it (``{}`` where the schema has nothing)."""
    sub = resolve(sub, root)
    out = [(path, sub)]
    if isinstance(value, dict):
        props = sub.get("properties", {})
        for k, v in value.items():
            if isinstance(k, str):
                out += nodes(v, props.get(k, {}), root, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += nodes(v, sub.get("items", {}), root, (*path, i))
    return out


def replace_at(value: Any, path: Path_, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replace_at(value[head], rest, new)}
    copy = list(value)
    copy[head] = replace_at(copy[head], rest, new)  # type: ignore[index]
    return copy


def get_at(value: Any, path: Path_) -> Any:
    for p in path:
        value = value[p]
    return value


def deep(depth: int, objects: bool) -> str:
    return '{"a":' * depth + "1" + "}" * depth if objects else "[" * depth + "]" * depth


@st.composite
def mutation(draw: st.DrawFn, value: Any, root: dict[str, Any]) -> tuple[Any, str]:
    """One change to ``value`` that (mostly) breaks its schema; returns the new value and what was done."""
    places = nodes(value, root, root)
    path, sub = draw(st.sampled_from(places))
    here = get_at(value, path)
    op = draw(st.sampled_from(("drop", "extra", "type", "null", "enum", "range", "huge_string", "huge_number",
                               "surrogate", "deep", "flood", "dup_key")))
    where = "/".join(map(str, path)) or "payload"
    if op == "drop" and isinstance(here, dict) and here:
        required = [k for k in here if k in sub.get("required", ())] or list(here)
        key = draw(st.sampled_from(required))
        return replace_at(value, path, {k: v for k, v in here.items() if k != key}), f"drop {where}/{key}"
    if op in ("extra", "drop") and isinstance(here, dict):
        key = draw(st.one_of(_TEXT, st.sampled_from(["connectorId", "type", "idTag", "status", "key"])))
        if key in here:
            key += "X"
        return replace_at(value, path, {**here, key: draw(st.sampled_from(WRONG_TYPES))}), f"extra {where}/{key!r}"
    if op == "type":
        new = draw(st.sampled_from([t for t in WRONG_TYPES if type(t) is not type(here)]))
        return replace_at(value, path, new), f"type {where}={new!r}"
    if op == "null":
        return replace_at(value, path, None), f"null {where}"
    if op == "enum":
        options = [str(e) for e in sub.get("enum", ())] or [str(here)]
        base = draw(st.sampled_from(options))
        new = draw(st.sampled_from([base.lower(), base.upper(), base + " ", " " + base, base + "x", ""])) \
            if draw(st.booleans()) else draw(_TEXT)
        return replace_at(value, path, new), f"enum {where}={new!r}"
    if op == "range":
        if "maxLength" in sub:
            n = int(sub["maxLength"]) + draw(st.sampled_from([1, 2, 100, 10_000]))
            unit = draw(st.sampled_from(["A", "é", "\uff21", "😀"]))
            return replace_at(value, path, unit * n), f"range {where}: {n} chars"
        low = sub.get("minimum")
        new = draw(st.sampled_from([int(low) - 1 if low is not None else -1, -(2 ** 31) - 1, -(2 ** 63) - 1,
                                    2 ** 63, 2 ** 64, 10 ** 30]))
        return replace_at(value, path, new), f"range {where}={new}"
    if op == "huge_string":
        n = draw(st.sampled_from([1_000, 10_000, 100_000, 250_000]))
        unit = draw(st.sampled_from(["A", "é", "😀", "\\", '"', "\x00", "\u2028", "[{"]))
        return replace_at(value, path, unit * n), f"huge_string {where}: {unit!r} * {n}"
    if op == "flood":  # a long array: of a fitting item, or of wrong ones
        items = sub.get("items", {}) if sub.get("type") == "array" else {}
        item = draw(st.one_of(valid_value(items, root), st.sampled_from(WRONG_TYPES), st.just("\u00e9" * 50)))
        n = draw(st.sampled_from([65, 1_001, 10_001, 100_000]))
        return replace_at(value, path, [item] * n), f"flood {where}: {n} x {str(item)[:20]!r}"
    if op == "huge_number":
        token = draw(st.sampled_from(HUGE_NUMBERS))
        return replace_at(value, path, Raw(token)), f"huge_number {where}={token[:20]}…({len(token)})"
    if op == "surrogate":
        token = draw(st.sampled_from(SURROGATES))
        if isinstance(here, dict) and draw(st.booleans()):  # as a key
            return replace_at(value, path, {**here, Raw(token): 1}), f"surrogate key {where}"
        return replace_at(value, path, Raw(token)), f"surrogate {where}={token}"
    if op == "deep":
        depth = draw(st.sampled_from([MAX_DEPTH - 2 - len(path), MAX_DEPTH + 1, 100, 1_000, 3_000, 20_000]))
        objects = draw(st.booleans())
        return replace_at(value, path, Raw(deep(max(depth, 1), objects))), f"deep {where}: {depth} levels"
    if op == "dup_key" and isinstance(here, dict) and here:
        key = draw(st.sampled_from(list(here)))
        if isinstance(key, Raw):
            key = "k"
        again = draw(st.sampled_from(WRONG_TYPES))
        body = dump(here)
        text = body[:-1] + ("," if len(body) > 2 else "") + f"{json.dumps(key)}:{dump(again)}" + "}"
        return replace_at(value, path, Raw(text)), f"dup_key {where}/{key}"
    return replace_at(value, path, Raw("1e400")), f"huge_number {where}=1e400"


@st.composite
def mutated_payload(draw: st.DrawFn, action: str, profile: Profile | None = None) -> tuple[Any, str]:
    root = schema(action, profile)
    value: Any = draw(valid_payload(action, profile))
    done = []
    for _ in range(draw(st.integers(1, 3))):
        value, what = draw(mutation(value, root))
        done.append(what)
        if isinstance(value, Raw) or not isinstance(value, dict):
            break  # the payload itself was replaced: nothing left to walk into
    return value, "; ".join(done)


# --- frames ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One or more frames put on the CSMS's WebSocket in a row (more than one: a reused id)."""

    frames: tuple[str | bytes, ...]
    what: str

    def render(self) -> Case:
        """The frames with :data:`ID` replaced by a fresh id (the same one throughout the case)."""
        uid = fresh_id()
        return Case(tuple(f.replace(ID, uid) if isinstance(f, str) else f.replace(ID.encode(), uid.encode())
                          for f in self.frames), self.what)

    def __repr__(self) -> str:
        shown = []
        for f in self.frames:
            kind = "binary" if isinstance(f, bytes) else "text"
            head = f[:300] if isinstance(f, str) else f[:300].decode("utf-8", "backslashreplace")
            shown.append(f"{kind} {len(f)}: {head!r}" + ("…" if len(f) > 300 else ""))
        return f"Case({self.what}: {' | '.join(shown)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How hypothesis prints a failing example: the short form, not 4 MiB of frame."""
        printer.text(repr(self))


def frame_text(parts: list[Any], ascii_only: bool) -> str:
    return dump(parts, ascii_only)


@st.composite
def unique_id(draw: st.DrawFn) -> Any:
    """Mostly a plain fresh id; sometimes one OCPP-J would not expect (long, escaped, unicode, empty, not a string)."""
    base = ID
    # (hypothesis favours the ends of a list it samples from: the common case sits at both)
    shape = draw(st.sampled_from(["plain"] * 6 + ["uuid", "long", "unicode", "escapes", "empty", "surrogate",
                                                  "not_string"] + ["plain"] * 6))
    if shape == "plain":
        return base
    if shape == "uuid":
        return (base + "-" + "0" * 36)[:36]
    if shape == "long":
        return base + "x" * draw(st.integers(37, 80))
    if shape == "unicode":
        return base + draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=8))
    if shape == "escapes":
        return base + draw(st.sampled_from(['"', "\\", "\n", "\t", "/", "\x7f"]))
    if shape == "empty":
        return ""
    if shape == "surrogate":
        return Raw(json.dumps(base)[:-1] + '\\ud800"')
    return draw(st.sampled_from([5, -1, 2.5, None, True, [], {}, [base], {"id": base}]))


@st.composite
def call_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """``[2, id, action, payload]``: valid or mutated payload of any action of the version, or one it does not
    know."""
    profile = profile or V16
    actions = profile.actions
    action = draw(st.one_of(
        st.sampled_from(profile.csms_actions), st.sampled_from(sorted(profile.handled)),
        st.sampled_from(sorted(profile.cp_actions)),
        st.sampled_from(["MakeCoffee", "reset", "RESET", "Reset ", " Reset", "", *profile.foreign_actions,
                         "Reset\x00", "Résumé", "x" * 1000, "__init__", "_on_action"])))
    uid = draw(unique_id())
    ascii_only = draw(st.booleans())
    if action in actions and draw(st.integers(0, 3)) == 0:
        payload: Any = draw(valid_payload(action, profile))
        what = f"valid {action}"
    elif action in actions:
        payload, what = draw(mutated_payload(action, profile))
        what = f"{action}: {what}"
    else:
        payload = draw(st.one_of(st.just({}), valid_payload(draw(st.sampled_from(profile.csms_actions)), profile)))
        what = f"unknown action {action[:30]!r}"
    return Case((frame_text([2, uid, action, payload], ascii_only),), what)


@st.composite
def shape_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """Frames of the wrong shape: a missing or extra element, wrong element types, not an array at all."""
    uid = ID
    get = (profile or V16).probe[0]
    options: list[Any] = [
        [2, uid], [2, uid, get], [2, uid, get, {}, {}], [2, uid, 5, {}],
        [2, uid, None, {}], [2, uid, get, []], [2, uid, get, "{}"],
        [2, uid, get, 7], [2, uid, "ClearCache", None], [2, uid, "Reset", None], [2], [], {},
        "text", 2, None, [2, None, "Reset", {}], [2, 17, "Reset", {"type": "Soft"}],
        [2, uid, [get], {}], [2, uid, {"action": "Reset"}, {}],
    ]
    return Case((frame_text(draw(st.sampled_from(options)), True),), "shape")


@st.composite
def type_id_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """Unknown MessageTypeIds (§4.1.3: ignored), and CALLRESULT/CALLERROR for ids the agent never sent."""
    uid = ID
    type_id = draw(st.sampled_from([0, 1, 5, 6, 7, 99, -2, 2 ** 70, True, False, "2", None, [2], 2.0, Raw("2e0"),
                                    Raw("2.0"), Raw("-0"), 3, 3, 4, 4]))
    if type_id == 3 and type(type_id) is int:
        body: Any = draw(st.sampled_from([{}, {"status": "Accepted"}, None, [], "x", {"currentTime": 1}]))
        parts: list[Any] = [3, uid, body, *draw(st.sampled_from([[], [{}]]))]
    elif type_id == 4 and type(type_id) is int:
        parts = [4, uid, draw(st.sampled_from(["GenericError", "NotImplemented", "", 5, "X" * 1000])),
                 draw(st.sampled_from(["", "desc", None, 1])), draw(st.sampled_from([{}, None, [], "x"]))]
    else:
        parts = [type_id, uid, (profile or V16).probe[0], {}]
    return Case((frame_text(parts, True),), f"type id {dump(type_id)}")


@st.composite
def deep_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """Nesting beyond the agent's limit, as the whole frame or inside a CALL whose id can be read."""
    depth = draw(st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1, 200, 2_000, 10_000, 100_000]))
    objects = draw(st.booleans())
    where = draw(st.sampled_from(["frame", "payload", "id", "action", "after"]))
    uid = ID
    if where == "frame":
        text = deep(depth, objects)
    elif where == "payload":
        text = dump([2, uid, "DataTransfer", {"vendorId": "x", "data": Raw(deep(depth, objects))}])
    elif where == "id":
        text = dump([2, Raw(deep(depth, objects)), "DataTransfer", {"vendorId": "x"}])
    elif where == "action":
        text = dump([2, uid, Raw(deep(depth, objects)), {}])
    else:
        text = dump([2, uid, "ClearCache", {}, Raw(deep(depth, objects))])
    return Case((text,), f"deep {where} {depth} {'objects' if objects else 'arrays'}")


@st.composite
def oversized_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """1 MiB < frame < 4 MiB (the WebSocket's own limit closes the connection above that)."""
    size = draw(st.integers(MAX_FRAME_BYTES + 1, (4 << 20) - 4096))
    uid = ID
    kind = draw(st.sampled_from(["data", "padding", "no_id", "deep_id"]))
    if kind == "data":
        head = dump([2, uid, "DataTransfer", {"vendorId": "x", "data": ""}])[:-3]
        text = head + "A" * (size - len(head) - 3) + '"}]'
    elif kind == "padding":  # valid JSON, small CALL, a lot of whitespace
        body = dump([2, uid, (profile or V16).probe[0], {}])
        text = body[:-1] + " " * (size - len(body)) + "]"
    elif kind == "no_id":
        text = "[" + " " * (size - 2) + "]"
    else:
        text = '[2,[["' + uid + '"]],"DataTransfer",{"data":"' + "B" * (size - 40) + '"}]'
    binary = draw(st.integers(0, 4)) == 0
    return Case((text.encode() if binary else text,), f"oversized {kind} {len(text)} bytes"
                + (" binary" if binary else ""))


TEXT_DAMAGE = ("cut", "delete", "insert", "replace", "bom", "whitespace", "trailing", "twice")


@st.composite
def damaged_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """A frame damaged as text: cut short, a character deleted, inserted or replaced, doubled."""
    inner = draw(st.one_of(call_case(profile), shape_case(profile), type_id_case(profile)))
    text = inner.frames[0]
    assert isinstance(text, str)
    damage = draw(st.sampled_from(TEXT_DAMAGE))
    at = draw(st.integers(0, max(len(text) - 1, 0)))
    # (no lone surrogate: a text frame is UTF-8, the CSMS's WebSocket could not even send one)
    char = draw(st.sampled_from(['"', "\\", "[", "]", "{", "}", ",", ":", "0", "\x00", "é", "\uffff", " ", "n"]))
    if damage == "cut":
        text = text[:at]
    elif damage == "delete":
        text = text[:at] + text[at + 1:]
    elif damage == "insert":
        text = text[:at] + char + text[at:]
    elif damage == "replace":
        text = text[:at] + char + text[at + 1:]
    elif damage == "bom":
        text = "\ufeff" + text
    elif damage == "whitespace":
        text = " \t\r\n" + text + "\n"
    elif damage == "trailing":
        text = text + draw(st.sampled_from(["x", "]", "[]", "\x00", ",", " 1"]))
    else:
        text = text + text
    return Case((text,), f"{damage}@{at} {char!r} of {inner.what}")


@st.composite
def binary_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """A binary WebSocket frame: OCPP-J text in UTF-8, or bytes that are not UTF-8 at all."""
    if draw(st.booleans()):
        inner = draw(st.one_of(call_case(profile), shape_case(profile)))
        text = inner.frames[0]
        return Case((text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text,),
                    f"binary of {inner.what}")
    junk = draw(st.binary(max_size=64))
    return Case((draw(st.sampled_from([b"\xff\xfe", b'[2,"\xff","Reset",{}]', b"\x00" * 8])) + junk,), "binary junk")


@st.composite
def duplicate_case(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    """The same CALL id twice: OCPP-J §4.1.4 wants ids unique; the second must not be executed."""
    uid = ID
    get, probe = (profile or V16).probe
    first = draw(st.sampled_from([probe, {}, {"key": 5}]))
    second_action = draw(st.sampled_from([get, "ClearCache", "Reset", "MakeCoffee"]))
    second: dict[str, Any] = ({"type": "Hard" if profile is not V201 else "Immediate"} if second_action == "Reset"
                              else {})
    return Case((dump([2, uid, get, first]), dump([2, uid, second_action, second])), "duplicate id")


#: The fuzzer's mix, in parts per thousand: mostly CALLs of every action, valid and mutated; the rest frame- and
#: text-level; few oversized frames (each costs megabytes).
MIX: tuple[tuple[int, Callable[..., st.SearchStrategy[Case]]], ...] = (
    (550, call_case), (60, shape_case), (80, type_id_case), (60, deep_case), (130, damaged_case),
    (40, binary_case), (50, duplicate_case), (30, oversized_case))


#: Frames from this size on close the connection by design (``ocpp_link.MAX_WEBSOCKET_FRAME``, 4 MiB): not sent.
MAX_SENT_BYTES = (4 << 20) - 1024


def wire_size(frame: str | bytes) -> int:
    return len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))


@st.composite
def cases(draw: st.DrawFn, profile: Profile | None = None) -> Case:
    # an explicit share rather than one_of: hypothesis favours the first and last of its branches
    pick = draw(st.integers(0, sum(share for share, _ in MIX) - 1))
    for share, strategy in MIX:
        if pick < share:
            case = draw(strategy(profile))  # type: ignore[call-arg]
            assume(all(wire_size(f) < MAX_SENT_BYTES for f in case.frames))  # (three huge strings in one frame)
            return case
        pick -= share
    raise AssertionError("unreachable")


# --- the oracle -----------------------------------------------------------------------------------


@dataclass
class Expectation:
    """What the frame is owed. ``answer``: "must" (exactly one), "never", "may" (at most one)."""

    answer: Literal["must", "never", "may"]
    unique_id: str | None = None
    codes: frozenset[str] | None = None  # acceptable CALLERROR codes (None: any 1.6 code)
    result_ok: bool = True  # a CALLRESULT is acceptable
    result_required: bool = False  # only a CALLRESULT is acceptable
    why: str = ""
    call: tuple[str, Any] | None = None  # (action, payload) of a well-formed CALL the agent will register
    table: frozenset[str] = ERROR_CODES_16  # the version's error codes
    version: str = "1.6"

    def check(self, kind: int, code: str | None) -> str | None:
        """Why the answer is wrong, or None."""
        if kind == 3:
            return None if self.result_ok else f"CALLRESULT, but {self.why}"
        if code not in self.table:
            return f"CALLERROR code {code!r} is not an OCPP-J {self.version} code"
        if code == "InternalError":
            return f"InternalError: the agent failed on a frame it should handle ({self.why})"
        if self.result_required:
            return f"CALLERROR {code}, but {self.why}"
        if self.codes is not None and code not in self.codes:
            return f"CALLERROR {code}, expected {sorted(self.codes)}: {self.why}"
        return None


_LEADING_ID = re.compile(r'\s*\[\s*2\s*,\s*("(?:[^"\\\x00-\x1f]|\\.){0,200}")')


class _NotJson(Exception):
    pass


def _constant(name: str) -> Any:
    raise _NotJson(name)


def leading_id(text: str) -> str | None:
    """The id of a CALL read from its first bytes, as a JSON string (escapes allowed): readable though the rest
    of the frame cannot be parsed."""
    match = _LEADING_ID.match(text)
    if match is None:
        return None
    try:
        uid = json.loads(match.group(1))
    except ValueError:
        return None
    return uid if isinstance(uid, str) else None


_LONG_NUMBER = re.compile(rf"[-+.eE0-9]{{{MAX_NUMBER_CHARS + 1}}}")
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def flat_depth(text: str) -> int:
    """Nesting of brackets outside strings, for text that does not parse."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def strings_of(value: Any) -> list[str]:
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(k for k in item if isinstance(k, str))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


@cache
def _validator(action: str, profile: Profile | None = None) -> Draft4Validator:
    return Draft4Validator(schema(action, profile))


def schema_valid(action: str, payload: dict[str, Any], profile: Profile | None = None) -> bool | None:
    """Does ``payload`` (numbers as Decimal/int) validate against the version's schema? None: it cannot be decided
    (a Decimal operation beyond its context, e.g. 10**40 modulo 0.1)."""
    try:
        return _validator(action, profile).is_valid(payload)
    except (ArithmeticError, InvalidOperation):
        return None


def values_in(value: Any) -> int:
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


_LEADING_ANSWER = re.compile(r"\s*\[\s*[34]\s*[,\]]")


def expect(frame: str | bytes, seen: Callable[[str], bool], max_keys: int = 64,
           profile: Profile | None = None) -> Expectation:
    """What OCPP-J (1.6, or the version of ``profile``) owes ``frame``. ``seen(id)``: the agent has already had a
    CALL with this id; ``max_keys``: the GetConfigurationMaxKeys it reports (1.6).

    Rules of both: a CALL whose id can be read gets exactly one answer, CALLRESULT or CALLERROR with a code of the
    version's table (§4.2.3); a CALLRESULT/CALLERROR gets none (a CALLERROR answers a request only). Past the
    charger's limits (size, nesting, number length, lone surrogates) a CALL with a readable id gets
    FormationViolation (2.0.1: FormatViolation). A binary frame is not OCPP-J (text frames only): it may be
    treated as its text or ignored, but never answered twice or wrongly. A request larger than the charger takes
    on (more keys than GetConfigurationMaxKeys, more than ``MAX_PAYLOAD_VALUES`` values) may be refused with
    OccurenceConstraintViolation (2.0.1: OccurrenceConstraintViolation), valid or not.

    1.6: everything else — not JSON, an unknown MessageTypeId (§4.1.3) — gets no answer. 2.0.1 (Part 4, edition
    3): an unknown MessageTypeId is answered MessageTypeNotSupported (§4.4); a frame that is no valid RPC request
    RpcFrameworkError (Table 8); a CALLERROR for a frame whose id cannot be read carries "-1" (§4.2.3)."""
    profile = profile or V16
    e = _expect(frame, seen, max_keys, profile)
    e.table, e.version = profile.error_codes, profile.version
    return e


def _unreadable(text: str, profile: Profile, why: str, code: str = "RpcFrameworkError") -> Expectation:
    """A frame that cannot be read as an RPC message at all and has no readable CALL id: 1.6 ignores it; 2.0.1
    answers "-1" unless it starts as a CALLRESULT or CALLERROR."""
    if not profile.answers_unreadable or _LEADING_ANSWER.match(text):
        return Expectation("never", why=why)
    return Expectation("must", "-1", frozenset({code}), result_ok=False, why=f"{why}: answered with id -1")


def _expect(frame: str | bytes, seen: Callable[[str], bool], max_keys: int, profile: Profile) -> Expectation:
    formation = frozenset({profile.code("FormatViolation")})
    if isinstance(frame, bytes):
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            if profile.answers_unreadable:
                return Expectation("may", "-1", frozenset({"RpcFrameworkError"}), result_ok=False,
                                   why="binary frame, not UTF-8")
            return Expectation("never", why="binary frame, not UTF-8")
        inner = _expect(text, seen, max_keys, profile)
        if inner.answer == "must":
            inner.answer = "may"
        inner.why = "binary frame: " + inner.why
        return inner
    text = frame
    if len(text) > MAX_FRAME_BYTES:
        uid = leading_id(text)
        if uid is None:
            return _unreadable(text, profile, "oversized, no readable id")
        return _by_leading_id(text, uid, formation, "oversized frame with a readable id", profile)
    longest = [0]

    def integer(token: str) -> int:
        longest[0] = max(longest[0], len(token))
        return int(token) if len(token) <= 4000 else 0  # past 4,300 digits int() refuses; flagged anyway

    def fraction(token: str) -> Decimal:
        longest[0] = max(longest[0], len(token))
        return Decimal(token)

    try:
        msg = json.loads(text, parse_int=integer, parse_float=fraction, parse_constant=_constant)
        beyond = ""
    except (json.JSONDecodeError, _NotJson):
        # not JSON: no id OCPP-J lets us trust. (A frame both broken and too deep may be refused for its depth
        # first, with FormationViolation, if the id at its start is readable.)
        uid = leading_id(text)
        if uid is not None and profile.answers_unreadable:  # the CALL's id is read from its first bytes
            return _by_leading_id(text, uid, frozenset({"RpcFrameworkError", "FormatViolation"}),
                                  "not JSON, the CALL's id readable", profile)
        if uid is not None and (flat_depth(text) > MAX_DEPTH or _LONG_NUMBER.search(text)):
            return Expectation("may", uid, formation, result_ok=False, why="not JSON and beyond the limits")
        if profile.answers_unreadable:  # (a frame both broken and too deep: either reading is fair)
            e = _unreadable(text, profile, "not JSON")
            if e.answer == "must":
                e.codes = frozenset({"RpcFrameworkError"})
            return e
        return Expectation("never", why="not JSON")
    except (RecursionError, ValueError, MemoryError):
        msg, beyond = None, "beyond the decoder's own limits"
    if msg is not None:
        # on the text: a duplicate key can hide a deep value from the parsed one, not from the frame
        if flat_depth(text) > MAX_DEPTH:
            beyond = f"nested deeper than {MAX_DEPTH}"
        elif longest[0] > MAX_NUMBER_CHARS:
            beyond = f"a number of {longest[0]} characters"
        elif not all(encodable(s) for s in strings_of(msg)):
            beyond = "a lone surrogate"
    if msg is None or (beyond and profile.answers_unreadable):  # (1.6: a parsed frame's shape decides below)
        uid = leading_id(text)
        if uid is None:
            return _unreadable(text, profile, f"{beyond}, no readable id")
        return _by_leading_id(text, uid, formation, beyond, profile)
    if not isinstance(msg, list) or len(msg) < 2 or not isinstance(msg[1], str):
        if not profile.answers_unreadable:
            return Expectation("never", why="no unique id")
        kind = msg[0] if isinstance(msg, list) and msg else None
        if _number(kind) and kind in (3, 4):
            return Expectation("never", why="a broken CALLRESULT/CALLERROR: nobody to answer")
        if _number(kind) and kind != 2:
            return Expectation("must", "-1", frozenset({"MessageTypeNotSupported"}), result_ok=False,
                               why=f"MessageTypeId {kind!r:.20}, no readable id (Part 4 §4.4, §4.2.3)")
        return Expectation("must", "-1", frozenset({"RpcFrameworkError"}), result_ok=False,
                           why="no valid RPC message, no readable id (§4.2.3)")
    kind, uid = msg[0], msg[1]
    answer: Literal["must", "may"] = "must" if encodable(uid) else "may"  # a lone surrogate in the id itself
    if type(kind) is not int or kind != 2:
        if isinstance(kind, Decimal) and kind == 2:  # 2.0: a number equal to 2; either reading is fair
            return Expectation("may", uid, why="MessageTypeId 2.0")
        if not profile.answers_unreadable or (_number(kind) and kind in (3, 4)):
            return Expectation("never", why=f"MessageTypeId {kind!r} is not CALL: nobody to answer (§4.1.3)")
        if _number(kind):
            return Expectation(answer, uid, frozenset({"MessageTypeNotSupported"}), result_ok=False,
                               why=f"MessageTypeId {kind!r:.20} (Part 4 §4.4)")
        return Expectation(answer, uid, frozenset({"RpcFrameworkError"}), result_ok=False,
                           why=f"MessageTypeId {kind!r:.20} is no number: no valid RPC request")
    if beyond:
        return Expectation(answer, uid, formation, result_ok=False, why=beyond)
    if len(msg) != 4 or not isinstance(msg[2], str) or not (msg[3] is None or isinstance(msg[3], dict)):
        codes = None
        if profile.answers_unreadable:
            codes = frozenset({"FormatViolation"}) if len(msg) == 4 and isinstance(msg[2], str) \
                else frozenset({"RpcFrameworkError"})
        return Expectation(answer, uid, codes, result_ok=False, why="CALL must be [2, id, action, {payload}]")
    action, payload = msg[2], msg[3] if msg[3] is not None else {}
    registered = (action, payload)
    if seen(uid):
        codes = frozenset({"RpcFrameworkError"}) if profile.answers_unreadable else None
        return Expectation(answer, uid, codes, result_ok=False, why="the id was used before (§4.1.4)", call=None)
    if action not in profile.actions:
        return Expectation(answer, uid, frozenset({"NotImplemented"}), result_ok=False,
                           why=f"{action[:40]!r} is not an OCPP {profile.version} action", call=registered)
    if action not in profile.handled:
        return Expectation(answer, uid, frozenset({"NotSupported"}), result_ok=False,
                           why=f"{action} is a {profile.version} action the agent does not serve", call=registered)
    too_many = values_in(payload) > MAX_PAYLOAD_VALUES or (
        profile is V16 and action == "GetConfiguration" and isinstance(payload.get("key"), list)
        and len(payload["key"]) > max_keys)
    if too_many:
        return Expectation(answer, uid, frozenset({profile.code("OccurrenceConstraintViolation")}), result_ok=False,
                           why=f"{action}: more than the charger takes on", call=registered)
    if action not in profile.dialect.decimal_schemas:  # the agent reads these with binary floats: mirror that
        payload = json.loads(json.dumps(payload, default=float))
    valid = schema_valid(action, payload, profile)
    if valid is False and profile is V16 and action == "TriggerMessage" \
            and isinstance(payload.get("requestedMessage"), str) \
            and schema_valid(action, {**payload, "requestedMessage": "Heartbeat"}):
        return Expectation(answer, uid, result_required=True, call=registered,
                           why="a TriggerMessage for a message 1.6 does not list: NotImplemented (§5.17)")
    if valid is False:
        return Expectation(answer, uid, result_ok=False, why=f"{action} payload breaks the {profile.version} schema",
                           call=registered)
    if valid is None:
        return Expectation(answer, uid, why=f"{action} payload has a number beyond Decimal's context",
                           call=registered)
    return Expectation(answer, uid, result_required=True, why=f"a valid {action} the agent serves", call=registered)


def _by_leading_id(text: str, uid: str, codes: frozenset[str], why: str, profile: Profile) -> Expectation:
    """A frame that cannot be parsed whose CALL id is read from its first bytes: answered with that id; an id that
    cannot be sent back (a lone surrogate) may be answered (1.6) or is answered as unreadable (2.0.1: "-1")."""
    if encodable(uid):
        return Expectation("must", uid, codes, result_ok=False, why=why)
    if profile.answers_unreadable:
        return _unreadable(text, profile, f"{why}; its id cannot be sent back")
    return Expectation("may", uid, codes, result_ok=False, why=why)


def _number(value: object) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


# --- the guard --------------------------------------------------------------------------------------


@dataclass
class ChargerState:
    """What the guard needs to know about the charger under test."""

    connectors: int


def side_effect(frame: str | bytes, charger: ChargerState, profile: Profile | None = None) -> str | None:
    """Why the agent would *execute* this frame with a lasting effect, or None.

    Mirrors the agent (its parser, its schema check) because it must predict exactly what runs. Valid frames
    allowed through, and why they leave no trace: RemoteStopTransaction (no transaction runs during the batch:
    Rejected); ChangeAvailability, UnlockConnector and RemoteStartTransaction for a connector the charger does not
    have (Rejected / NotSupported); ChangeConfiguration (the runner restores an accepted key at once); ClearCache
    (the cache refills from the next online Authorize, which happens anyway); GetConfiguration, DataTransfer
    and the 1.6 actions the agent does not serve (read-only / NotSupported); GetCompositeSchedule and
    GetLocalListVersion (read-only);
    ClearChargingProfile (no valid SetChargingProfile runs in a batch, so there is nothing to clear: Unknown);
    CancelReservation (no valid ReserveNow runs in a batch, so there is nothing to cancel: Rejected);
    TriggerMessage other than BootNotification (the charger only sends the message: statuses, meter values, a
    Heartbeat, Idle firmware and diagnostics statuses);
    GetInstalledCertificateIds (read-only); InstallCertificate (a drawn string is no PEM root certificate:
    Rejected, a CSMS root with a security event); DeleteCertificate (drawn hash data match no certificate:
    NotFound); CertificateSigned (no signing request is pending: Rejected); ExtendedTriggerMessage other than
    SignChargePointCertificate and BootNotification (the charger only sends the message, as for TriggerMessage).
    A valid AuthorizationKey cannot be restored (the
    key is write-only) and makes a charge point with a profile reconnect; a SecurityProfile raise is refused
    (the station has no key, no CSMS root)."""
    profile = profile or V16
    if len(frame) > MAX_FRAME_BYTES:
        return None
    decoded, _ = classify_frame(frame, profile.dialect)
    if decoded is None or decoded[0] != 2:
        return None
    action, payload = decoded[2], decoded[3]
    if action not in profile.handled or excess(payload, max_items=64 if action == "GetConfiguration" else None):
        return None  # refused before its handler, and before costly validation
    try:
        if profile.dialect.schema_violation(action, payload) is not None:
            return None
    except Exception:
        return None  # the agent fails before its handler runs
    ours = range(1, charger.connectors + 1)
    if profile is V201:
        return _side_effect_201(action, payload, ours)
    if action == "Reset":
        return "a valid Reset restarts the agent"
    if action in FILE_TRANSFERS:
        return f"a valid {action} starts a transfer (and its retries) that outlasts the batch"
    if action == "ChangeAvailability" and (payload["connectorId"] == 0 or payload["connectorId"] in ours):
        return "a valid ChangeAvailability of a connector the charger has"
    if action == "RemoteStartTransaction" and payload.get("connectorId", 1) in ours:
        return "a valid RemoteStartTransaction the charger could start"
    if action == "UnlockConnector" and payload["connectorId"] in ours:
        return "a valid UnlockConnector of a connector the charger has"
    if action in ("TriggerMessage", "ExtendedTriggerMessage") and payload["requestedMessage"] == "BootNotification":
        return "a valid TriggerMessage BootNotification sends one (the run checks the agent booted once)"
    if action == "SetChargingProfile" and (payload["connectorId"] == 0 or payload["connectorId"] in ours):
        return "a valid SetChargingProfile may install a profile that limits charging until it is cleared"
    if action == "SendLocalList":
        return "a valid SendLocalList may replace or change the local authorization list, which only the CSMS changes"
    if action == "ChangeConfiguration" and payload["key"].lower() == "authorizationkey" and \
            is_valid_authorization_key(payload["value"]):
        return "a valid AuthorizationKey replaces the key for good (write-only: it cannot be restored)"
    if action == "ExtendedTriggerMessage" and payload["requestedMessage"] == "SignChargePointCertificate":
        return "ExtendedTriggerMessage SignChargePointCertificate makes a key pair and a SignCertificate"
    if action == "ReserveNow" and (payload["connectorId"] == 0 or payload["connectorId"] in ours):
        return "a valid ReserveNow may reserve a connector (status Reserved) until it expires"
    return None


def _side_effect_201(action: str, payload: dict[str, Any], ours: range) -> str | None:
    """:func:`side_effect` in 2.0.1. Valid frames allowed through, and why they leave no trace:
    RequestStopTransaction (no transaction runs during the batch: Rejected); RequestStartTransaction,
    ChangeAvailability, UnlockConnector and ReserveNow of an EVSE the charger does not have (Rejected /
    UnknownConnector); SetVariables (the runner restores an accepted variable at once) but of the WriteOnly
    BasicAuthPassword; ClearCache (as in 1.6); GetVariables, GetBaseReport, GetReport (their NotifyReport pages go
    to the CSMS), GetTransactionStatus, GetLocalListVersion, GetChargingProfiles, GetCompositeSchedule,
    GetInstalledCertificateIds, DataTransfer (read-only); CancelReservation, ClearChargingProfile (nothing to cancel
    or clear: Rejected / Unknown); InstallCertificate, DeleteCertificate, CertificateSigned (as in 1.6: no PEM, no
    match, no pending request); TriggerMessage (the charger only sends the message; a BootNotification is Rejected
    once accepted) but SignChargingStationCertificate."""
    def evse_ours(evse_id: object) -> bool:
        return evse_id is None or evse_id == 0 or evse_id in ours

    if action == "Reset":
        return "a valid Reset restarts the agent (or an EVSE's is Rejected, but either way: not sent)"
    if action == "RequestStartTransaction" and evse_ours(payload.get("evseId")):
        return "a valid RequestStartTransaction the charger could start"
    if action == "ChangeAvailability" and evse_ours((payload.get("evse") or {}).get("id")):
        return "a valid ChangeAvailability of the station or an EVSE it has"
    if action == "UnlockConnector" and payload["evseId"] in ours:
        return "a valid UnlockConnector of an EVSE the charger has"
    if action == "ReserveNow" and evse_ours(payload.get("evseId")):
        return "a valid ReserveNow may reserve an EVSE (status Reserved) until it expires"
    if action == "SendLocalList":
        return "a valid SendLocalList may replace or change the local authorization list, which only the CSMS changes"
    if action == "SetChargingProfile" and evse_ours(payload.get("evseId")):
        return "a valid SetChargingProfile may install a profile that limits charging until it is cleared"
    if action in ("UpdateFirmware", "GetLog"):
        return f"a valid {action} starts a transfer (and its retries) that outlasts the batch"
    if action == "SetNetworkProfile":
        return "a valid SetNetworkProfile stores a connection profile for the next start"
    if action == "TriggerMessage" and payload["requestedMessage"] == "SignChargingStationCertificate":
        return "TriggerMessage SignChargingStationCertificate makes a key pair and a SignCertificate"
    if action == "SetVariables" and any(d["component"]["name"] == "SecurityCtrlr"
                                        and d["variable"]["name"] == "BasicAuthPassword"
                                        for d in payload["setVariableData"]):
        return "a valid BasicAuthPassword replaces the password for good (write-only: it cannot be restored)"
    return None
