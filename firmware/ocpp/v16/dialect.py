"""OCPP-J 1.6 as the RPC layer sees it: its actions, its schemas and its error-code table (Table 7, §4.2.3)."""

from __future__ import annotations

from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import Dialect

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
)
