"""OCPP-J 2.0.1 as the RPC layer sees it: its actions, its schemas and its error-code table (Table 8).

Against 1.6: FormationViolation became FormatViolation, OccurenceConstraintViolation gained its "r", and
RpcFrameworkError and MessageTypeNotSupported were added. The keyword table keeps 1.6's reading except for a
missing required property, which 2.0.1's table describes as an occurrence constraint (cardinality 1..1) rather
than 1.6's "payload incomplete" (ProtocolError is now "not conform the PDU structure").

Framing (Part 4, 2.0.1 edition 3): a frame with a MessageTypeId other than 2, 3, 4 is not processed (§4.1.3) and
is answered MessageTypeNotSupported (§4.4); a CALL that is no valid RPC request (wrong number of elements, an
action that is no string, an id used before, text that is not JSON) RpcFrameworkError; a CALLERROR for a frame
whose MessageId cannot be read carries ``"-1"`` (§4.2.3). A CALLRESULT or CALLERROR is never answered: 2.0.1 has
no CALLRESULTERROR (that is 2.1's)."""

from __future__ import annotations

from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import Dialect, Framing

OCPP201 = Dialect(
    version="2.0.1",
    actions=frozenset(a.value for a in Action),
    error_codes=frozenset({
        "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported", "NotImplemented",
        "NotSupported", "OccurrenceConstraintViolation", "PropertyConstraintViolation", "ProtocolError",
        "RpcFrameworkError", "SecurityError", "TypeConstraintViolation",
    }),
    call=call,
    call_result=call_result,
    # 1.6 spellings a shared code path might produce, put right
    spelling={"FormationViolation": "FormatViolation",
              "OccurenceConstraintViolation": "OccurrenceConstraintViolation"},
    code_by_keyword={
        "additionalProperties": "FormatViolation",
        "required": "OccurrenceConstraintViolation",
        "type": "TypeConstraintViolation",
        "maxLength": "TypeConstraintViolation",
        "format": "TypeConstraintViolation",  # a date-time that is not RFC 3339
        "minItems": "OccurrenceConstraintViolation",
        "maxItems": "OccurrenceConstraintViolation",
    },
    framing=Framing(framework_error="RpcFrameworkError", answer_unknown_message_type=True, unreadable_id="-1"),
)
