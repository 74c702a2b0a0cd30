"""OCPP-J 1.6 RPC framing (§4) and payload validation answered with the 1.6 error codes (§4.2.3).

Why not ``ocpp.messages.validate_payload``: the ocpp library (2.1.0) answers schema failures with
``FormatViolation`` (an OCPP 2.0.1 code; 1.6 spells it ``FormationViolation``), answers an enum or other
value violation with that too, does not check ``date-time`` formats at all (jsonschema needs an extra
package for that) and swaps ``NotImplemented``/``NotSupported`` relative to the 1.6 text. A CSMS used to
judge a charge point must answer exactly as OCPP-J 1.6 says, so this module validates against the
library's own 1.6 JSON schemas but classifies the failure itself (:func:`error_code_for`).

OCPP-J 1.6 §4.2.3, Table 7 "Valid Error Codes", for the codes a payload can earn:

* ProtocolError: "Payload for Action is incomplete"
* FormationViolation: "Payload for Action is syntactically incorrect or not conform the PDU structure for
  Action"
* PropertyConstraintViolation: "Payload is syntactically correct but at least one field contains an
  invalid value"
* OccurenceConstraintViolation: "Payload for Action is syntactically correct but at least one of the
  fields violates occurence constraints"
* TypeConstraintViolation: "Payload for Action is syntactically correct but at least one of the fields
  violates data type constraints (e.g. "somestring": 12)"

How a JSON-schema failure maps onto that table is a choice, and the charge point makes it too
(``firmware/ocpp/rpc.py``, ``schema_violation``). Both sides make the same one, pinned by
tests/test_ocppj_error_agreement.py:

=====================================================  =====================================
schema failure (JSON-schema keyword)                   CALLERROR errorCode (OCPP-J 1.6)
=====================================================  =====================================
missing required property (``required``)               ProtocolError: the payload is
                                                       "incomplete"; an absent field is not an
                                                       occurrence count of a present one
unknown property (``additionalProperties``); payload   FormationViolation: "not conform the PDU
not an object (the agent refuses it while parsing      structure"
the frame)
wrong JSON type (``type``), string too long            TypeConstraintViolation: "violates data
(``maxLength``, the CiString types), ``date-time``     type constraints"
not RFC 3339 (``format``)
too few / too many array items (``minItems``,          OccurenceConstraintViolation (sic)
``maxItems``)
value not in the enum (``enum``), not a multiple of  PropertyConstraintViolation: "contains an
0.1 (``multipleOf``) or too large to be checked        invalid value"
against it, any other keyword
=====================================================  =====================================

The charge point checks ``date-time`` too (the library's validators check no formats; it adds the check). A
number literal beyond a double's range (``1e999999``) is valid JSON: it
arrives as ``inf`` and is validated as a number, so it is not an integer (TypeConstraintViolation) and
cannot be checked against ``multipleOf`` (PropertyConstraintViolation). ``NaN`` is not JSON: a payload
holding one is a FormationViolation (an ``Infinity`` literal, not JSON either, gets through Python's
parser and is read like ``1e999999``). A ``null`` payload is ``{}`` (:func:`parse_frame`).

Everything here is pure (no I/O) so it is tested directly, including with random input.
"""

from __future__ import annotations

import decimal
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import ocpp
from jsonschema import Draft4Validator, Draft6Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from ocpp.messages import Call, CallError, CallResult
from ocpp.v16.enums import Action
from ocpp.v201.enums import Action as Action201

MAX_UNIQUE_ID_LENGTH = 36  # OCPP-J 1.6: the message ID has "a maximum of 36 characters"
SCHEMA_DIR = Path(ocpp.__file__).parent / "v16" / "schemas"


class ErrorCode(StrEnum):
    """CALLERROR errorCode values of OCPP-J 1.6 §4.2.3, spelled as the 1.6 text (and errata) keep them."""

    NOT_IMPLEMENTED = "NotImplemented"  # requested Action is not known by receiver
    NOT_SUPPORTED = "NotSupported"  # requested Action is recognized but not supported by the receiver
    INTERNAL_ERROR = "InternalError"
    PROTOCOL_ERROR = "ProtocolError"
    SECURITY_ERROR = "SecurityError"
    FORMATION_VIOLATION = "FormationViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"
    GENERIC_ERROR = "GenericError"


class FrameKind(StrEnum):
    CALL = "CALL"
    CALLRESULT = "CALLRESULT"
    CALLERROR = "CALLERROR"


_TYPE_IDS = {Call.message_type_id: FrameKind.CALL, CallResult.message_type_id: FrameKind.CALLRESULT,
             CallError.message_type_id: FrameKind.CALLERROR}
OCPP16_ACTIONS = frozenset(a.value for a in Action)
OCPP201_ACTIONS = frozenset(a.value for a in Action201)
SCHEMA_DIR_201 = Path(ocpp.__file__).parent / "v201" / "schemas"


@dataclass(frozen=True)
class Frame:
    """One well-formed OCPP-J message. For a CALLERROR, ``payload`` is the errorDetails object."""

    kind: FrameKind
    unique_id: str
    action: str | None = None
    payload: Any = None
    error_code: str | None = None
    error_description: str | None = None


class FrameError(Exception):
    """A text frame that is not a valid OCPP-J message.

    ``unique_id`` is set when one could be read, so a CALLERROR can still be correlated;
    ``answerable`` says whether the sender expects an answer (it did not send a CALLRESULT/CALLERROR).
    """

    def __init__(self, reason: str, *, unique_id: str | None = None, answerable: bool = False,
                 code: ErrorCode = ErrorCode.FORMATION_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unique_id = unique_id
        self.answerable = answerable and unique_id is not None
        self.code = code


def _payload_or_empty(value: Any) -> Any:
    """OCPP-J 1.6 §4.2.1 (Table 4): "If there is no payload JSON allows for two different notations: null or
    and empty object {}." Both are accepted, as ``{}``; any other non-object is refused."""
    return {} if value is None else value


def parse_frame(text: str) -> Frame:
    """Parse one OCPP-J text frame; raise :class:`FrameError` for anything else. A ``null`` CALL or CALLRESULT
    payload is read as ``{}``."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(msg, list) or not msg:
        raise FrameError("not a non-empty JSON array")
    unique_id = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    type_id = msg[0]
    kind = _TYPE_IDS.get(type_id) if isinstance(type_id, int) and not isinstance(type_id, bool) else None
    if kind is None:
        raise FrameError(f"unknown MessageTypeId {type_id!r}", unique_id=unique_id, answerable=True)
    answerable = kind is FrameKind.CALL
    if unique_id is None:
        raise FrameError("UniqueId missing or not a string")
    if not unique_id or len(unique_id) > MAX_UNIQUE_ID_LENGTH:
        raise FrameError(f"UniqueId must be 1..{MAX_UNIQUE_ID_LENGTH} characters",
                         unique_id=unique_id, answerable=answerable)
    if kind is FrameKind.CALL:
        if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(_payload_or_empty(msg[3]), dict):
            raise FrameError("CALL must be [2, UniqueId, Action, {payload}]",
                             unique_id=unique_id, answerable=True)
        return Frame(kind, unique_id, action=msg[2], payload=_payload_or_empty(msg[3]))
    if kind is FrameKind.CALLRESULT:
        if len(msg) != 3 or not isinstance(_payload_or_empty(msg[2]), dict):
            raise FrameError("CALLRESULT must be [3, UniqueId, {payload}]", unique_id=unique_id)
        return Frame(kind, unique_id, payload=_payload_or_empty(msg[2]))
    if len(msg) != 5 or not isinstance(msg[2], str) or not isinstance(msg[3], str) \
            or not isinstance(msg[4], dict):
        raise FrameError("CALLERROR must be [4, UniqueId, errorCode, errorDescription, {errorDetails}]",
                         unique_id=unique_id)
    return Frame(kind, unique_id, payload=msg[4], error_code=msg[2], error_description=msg[3])


# ---- payload validation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Violation:
    """Why a payload does not match its schema, and the errorCode to answer with (the version's spelling)."""

    code: str
    description: str
    path: str  # JSON pointer-ish location, "" for the payload itself


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def is_rfc3339(value: object) -> bool:
    """JSON-schema ``date-time``: RFC 3339, so a zone (``Z`` or an offset) is mandatory."""
    if not isinstance(value, str):
        return True  # the "type" keyword reports non-strings
    if not _RFC3339.match(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(is_rfc3339)


@cache
def _validator(schema_name: str, version: str = "1.6") -> Draft4Validator | Draft6Validator | None:
    """1.6: ``<Action>.json`` / ``<Action>Response.json`` (draft-04); 2.0.1: ``<Action>Request.json`` /
    ``<Action>Response.json`` (draft-06), the library's own schema files."""
    if version == "2.0.1":
        path = SCHEMA_DIR_201 / f"{schema_name if schema_name.endswith('Response') else schema_name + 'Request'}.json"
    else:
        path = SCHEMA_DIR / f"{schema_name}.json"
    if not path.is_file():
        return None
    # Decimal, as the library does for 1.6: "multipleOf": 0.1 fails on binary floats like 21.4
    schema = json.loads(path.read_text(encoding="utf-8"), parse_float=decimal.Decimal)
    if version == "2.0.1":
        return Draft6Validator(schema, format_checker=_FORMATS)
    return Draft4Validator(schema, format_checker=_FORMATS)


def has_schema(action: str, *, response: bool = False, version: str = "1.6") -> bool:
    return _validator(action + ("Response" if response else ""), version) is not None


def _not_json_constant(name: str) -> Any:
    if name == "NaN":
        raise ValueError("NaN is not a JSON number")
    return decimal.Decimal(name)  # +-Infinity: a number literal beyond a double's range, e.g. 1e999999


def check_payload(action: str, payload: Any, *, response: bool = False, version: str = "1.6") -> Violation | None:
    """Validate a request (or, with ``response=True``, a CALLRESULT) payload of a 1.6 (or ``version`` "2.0.1")
    action; the errorCode is spelled as that version's table (:func:`spelled`)."""
    violation = _check(action, payload, response, version)
    return violation if violation is None or version != "2.0.1" else _as_201(violation)


def _check(action: str, payload: Any, response: bool, version: str) -> Violation | None:
    validator = _validator(action + ("Response" if response else ""), version)
    if validator is None:
        return Violation(ErrorCode.NOT_IMPLEMENTED, f"no OCPP {version} schema for action {action!r}", "")
    try:
        instance = json.loads(json.dumps(payload), parse_float=decimal.Decimal, parse_constant=_not_json_constant)
    except (TypeError, ValueError, RecursionError) as exc:
        return Violation(ErrorCode.FORMATION_VIOLATION, f"payload is not JSON: {exc}", "")
    try:
        error = best_match(validator.iter_errors(instance))
    except (decimal.DecimalException, RecursionError) as exc:
        return Violation(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, f"value cannot be checked: {exc!r}", "")
    if error is None:
        return None
    return _classify(error)


#: JSON-schema keyword -> errorCode, for a failure inside the payload (the table in the module docstring).
_CODE_BY_KEYWORD = {
    "required": ErrorCode.PROTOCOL_ERROR,
    "additionalProperties": ErrorCode.FORMATION_VIOLATION,
    "type": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "maxLength": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "format": ErrorCode.TYPE_CONSTRAINT_VIOLATION,
    "minItems": ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
    "maxItems": ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION,
}


#: OCPP-J 2.0.1 Table 8 against 1.6's Table 7: two codes respelled, and a missing required property is an
#: occurrence constraint (cardinality 1..1), as the charge point's dialect reads it (firmware/ocpp/v201/dialect.py).
_SPELLING_201 = {ErrorCode.FORMATION_VIOLATION: "FormatViolation",
                 ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION: "OccurrenceConstraintViolation",
                 ErrorCode.PROTOCOL_ERROR: "OccurrenceConstraintViolation"}


def spelled(code: str, version: str) -> str:
    """A 1.6 errorCode as ``version`` spells it."""
    return _SPELLING_201.get(code, code) if version == "2.0.1" else code  # type: ignore[call-overload]


def _as_201(violation: Violation) -> Violation:
    return Violation(spelled(violation.code, "2.0.1"), violation.description, violation.path)


def error_code_for(keyword: str, *, at_root: bool = False) -> ErrorCode:
    """The errorCode for a payload that fails JSON-schema ``keyword``; ``at_root``: the payload itself
    failed it (only ``type`` can: the payload is not an object, a FormationViolation)."""
    if at_root and keyword == "type":
        return ErrorCode.FORMATION_VIOLATION
    return _CODE_BY_KEYWORD.get(keyword, ErrorCode.PROPERTY_CONSTRAINT_VIOLATION)


def _classify(error: ValidationError) -> Violation:
    path = "/".join(str(p) for p in error.absolute_path)
    code = error_code_for(str(error.validator), at_root=not error.absolute_path)
    where = f"{path}: " if path else ""
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return Violation(code, f"{where}{message}", path)


# ---- building frames ---------------------------------------------------------------------------------

def call_frame(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    return str(Call(unique_id, action, payload).to_json())


def call_result_frame(unique_id: str, payload: dict[str, Any]) -> str:
    return str(CallResult(unique_id, payload).to_json())


def call_error_frame(unique_id: str, code: str, description: str,
                     details: dict[str, Any] | None = None) -> str:
    return str(CallError(unique_id, code, description, details or {}).to_json())
