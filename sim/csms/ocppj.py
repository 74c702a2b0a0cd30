"""OCPP-J 1.6 RPC framing (§4) and payload validation answered with the 1.6 error codes (§4.2.3).

Why not ``ocpp.messages.validate_payload``: the ocpp library (2.1.0) answers schema failures with
``FormatViolation`` (an OCPP 2.0.1 code; 1.6 spells it ``FormationViolation``), answers a missing
required field with ``ProtocolError``, does not check ``date-time`` formats at all (jsonschema needs an
extra package for that) and swaps ``NotImplemented``/``NotSupported`` relative to the 1.6 text. A CSMS
used to judge a charge point must answer exactly as OCPP-J 1.6 says, so this module validates against the
library's own 1.6 JSON schemas but classifies the failure itself:

=============================================  =================================
schema failure                                 CALLERROR errorCode (OCPP-J 1.6)
=============================================  =================================
unknown property, payload not an object        FormationViolation
missing required property, minItems/maxItems   OccurenceConstraintViolation (sic)
wrong JSON type, string too long, bad date     TypeConstraintViolation
value not in enum, out of range, other         PropertyConstraintViolation
=============================================  =================================

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
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from ocpp.messages import Call, CallError, CallResult
from ocpp.v16.enums import Action

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


def parse_frame(text: str) -> Frame:
    """Parse one OCPP-J text frame; raise :class:`FrameError` for anything else."""
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
        if len(msg) != 4 or not isinstance(msg[2], str) or not isinstance(msg[3], dict):
            raise FrameError("CALL must be [2, UniqueId, Action, {payload}]",
                             unique_id=unique_id, answerable=True)
        return Frame(kind, unique_id, action=msg[2], payload=msg[3])
    if kind is FrameKind.CALLRESULT:
        if len(msg) != 3 or not isinstance(msg[2], dict):
            raise FrameError("CALLRESULT must be [3, UniqueId, {payload}]", unique_id=unique_id)
        return Frame(kind, unique_id, payload=msg[2])
    if len(msg) != 5 or not isinstance(msg[2], str) or not isinstance(msg[3], str) \
            or not isinstance(msg[4], dict):
        raise FrameError("CALLERROR must be [4, UniqueId, errorCode, errorDescription, {errorDetails}]",
                         unique_id=unique_id)
    return Frame(kind, unique_id, payload=msg[4], error_code=msg[2], error_description=msg[3])


# ---- payload validation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Violation:
    """Why a payload does not match its 1.6 schema, and the errorCode to answer with."""

    code: ErrorCode
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
def _validator(schema_name: str) -> Draft4Validator | None:
    path = SCHEMA_DIR / f"{schema_name}.json"
    if not path.is_file():
        return None
    # Decimal, as the library does for 1.6: "multipleOf": 0.1 fails on binary floats like 21.4
    schema = json.loads(path.read_text(encoding="utf-8"), parse_float=decimal.Decimal)
    return Draft4Validator(schema, format_checker=_FORMATS)


def has_schema(action: str, *, response: bool = False) -> bool:
    return _validator(action + ("Response" if response else "")) is not None


def check_payload(action: str, payload: Any, *, response: bool = False) -> Violation | None:
    """Validate a request (or, with ``response=True``, a CALLRESULT) payload of a 1.6 action."""
    validator = _validator(action + ("Response" if response else ""))
    if validator is None:
        return Violation(ErrorCode.NOT_IMPLEMENTED, f"no OCPP 1.6 schema for action {action!r}", "")
    try:
        # allow_nan=False: NaN/Infinity are not JSON even though Python's parser accepts them
        instance = json.loads(json.dumps(payload, allow_nan=False), parse_float=decimal.Decimal)
    except (TypeError, ValueError, RecursionError) as exc:
        return Violation(ErrorCode.FORMATION_VIOLATION, f"payload is not JSON: {exc}", "")
    try:
        error = best_match(validator.iter_errors(instance))
    except (decimal.DecimalException, RecursionError) as exc:
        return Violation(ErrorCode.PROPERTY_CONSTRAINT_VIOLATION, f"value cannot be checked: {exc!r}", "")
    if error is None:
        return None
    return _classify(error)


_OCCURRENCE = frozenset({"required", "minItems", "maxItems"})
_TYPE = frozenset({"type", "maxLength", "minLength", "format"})


def _classify(error: ValidationError) -> Violation:
    path = "/".join(str(p) for p in error.absolute_path)
    keyword = str(error.validator)
    if keyword == "additionalProperties" or (keyword == "type" and not path):
        code = ErrorCode.FORMATION_VIOLATION
    elif keyword in _OCCURRENCE:
        code = ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION
    elif keyword in _TYPE:
        code = ErrorCode.TYPE_CONSTRAINT_VIOLATION
    else:
        code = ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
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
