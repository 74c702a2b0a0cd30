"""OCPP-J 1.6 as the RPC layer sees it: its actions, its schemas and its error-code table (Table 7, §4.2.3)."""

from __future__ import annotations

from typing import Any

from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import Dialect, is_date_time

_UPDATE_TYPES = frozenset({"Differential", "Full"})
_LIST_STATUSES = frozenset({"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"})
_REQUEST_KEYS = frozenset({"listVersion", "localAuthorizationList", "updateType"})
_ENTRY_KEYS = frozenset({"idTag", "idTagInfo"})
_INFO_KEYS = frozenset({"expiryDate", "parentIdTag", "status"})


def _short_string(value: object) -> bool:
    return type(value) is str and len(value) <= 20


def _one_of(value: object, choices: frozenset[str]) -> bool:
    return type(value) is str and value in choices  # a list or object is not hashable: not `in` a set


def send_local_list_valid(payload: dict[str, Any]) -> bool:
    """True only for a SendLocalList.req the 1.6 schema (SendLocalList.json) accepts — every property, type,
    enum, maxLength and date-time of it checked as jsonschema checks them, some 20 times faster. Stricter where
    that is simpler (a listVersion of 1.0): False just sends the payload through the schema.
    tests/test_local_auth_list.py holds it against the schema on mutated payloads."""
    if not _REQUEST_KEYS.issuperset(payload) or type(payload.get("listVersion")) is not int \
            or not _one_of(payload.get("updateType"), _UPDATE_TYPES):
        return False
    entries = payload.get("localAuthorizationList", [])
    if type(entries) is not list:
        return False
    for e in entries:
        if type(e) is not dict or not _ENTRY_KEYS.issuperset(e) or not _short_string(e.get("idTag")):
            return False
        info = e.get("idTagInfo")
        if info is None:
            if "idTagInfo" in e:
                return False  # null is no object
            continue
        if type(info) is not dict or not _INFO_KEYS.issuperset(info) or not _one_of(info.get("status"), _LIST_STATUSES):
            return False
        if "parentIdTag" in info and not _short_string(info["parentIdTag"]):
            return False
        if "expiryDate" in info and not (type(info["expiryDate"]) is str and is_date_time(info["expiryDate"])):
            return False
    return True


OCPP16 = Dialect(
    version="1.6",
    actions=frozenset(a.value for a in Action),
    error_codes=frozenset({
        "NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError",
        "FormationViolation", "PropertyConstraintViolation", "OccurenceConstraintViolation",
        "TypeConstraintViolation", "GenericError",
    }),
    call=call,
    call_result=call_result,
    # the library writes 2.0.1's spellings; 1.6 keeps its own (and a strict CSMS checks them)
    spelling={"FormatViolation": "FormationViolation",
              "OccurrenceConstraintViolation": "OccurenceConstraintViolation"},
    # Table 7: an unknown property is FormationViolation (not the PDU structure), a missing required one
    # ProtocolError ("payload for Action is incomplete"), a wrong JSON type, an over-long string or a date-time
    # that is not RFC 3339 TypeConstraintViolation, too few/many array items OccurenceConstraintViolation; a value
    # outside the enum or range PropertyConstraintViolation (``otherwise``).
    code_by_keyword={
        "additionalProperties": "FormationViolation",
        "required": "ProtocolError",
        "type": "TypeConstraintViolation",
        "maxLength": "TypeConstraintViolation",
        "format": "TypeConstraintViolation",  # a date-time that is not RFC 3339
        "minItems": "OccurenceConstraintViolation",
        "maxItems": "OccurenceConstraintViolation",
    },
    decimal_schemas=frozenset({"SetChargingProfile", "RemoteStartTransaction"}),
    prechecks={"SendLocalList": send_local_list_valid},
)
