"""OCPP-J RPC framing on top of the ``ocpp`` library, with the parts it leaves to us.

The frame format is the same in every OCPP-J version; what differs (the actions, the schemas, the error-code
table and its spellings) is a :class:`Dialect`, one per adapter (``firmware/ocpp/v16/dialect.py``,
``firmware/ocpp/v201/dialect.py``). Codes are written here in the library's spelling (OCPP-J 2.0.1's) and
put in the dialect's on the way out.

The library validates payloads against the version's schemas and maps them to dataclasses. What it does
not do, and this module does:

* It runs incoming handlers inline in the receive loop, so a slow handler (or one that awaits a CALL
  of its own) stalls every response. Here each incoming CALL is handled in its own task; responses
  to our CALLs keep flowing meanwhile.
* It ignores frames it cannot parse. Here a malformed CALL whose unique id can be read gets the
  CALLERROR OCPP-J 1.6 §4.2.3 prescribes; anything else is logged and counted, never a crash. What the version
  says of the rest is the dialect's (:class:`Framing`): 1.6 ignores a frame with an unknown MessageTypeId
  (§4.1.3) and one whose id cannot be read; 2.0.1 answers an unknown MessageTypeId with MessageTypeNotSupported
  (Part 4 §4.4), a frame that is no valid RPC message with RpcFrameworkError, and uses ``"-1"`` as the id of a
  CALLERROR for a frame whose id cannot be read (§4.2.3). A CALLRESULT or CALLERROR is never answered, however
  broken (a CALLERROR answers a request only). A ``null`` payload is taken as ``{}`` (§4.2.1 allows both
  notations).
* It classifies schema violations coarsely (an enum or range violation becomes FormatViolation).
  Here each gets the code of the version's table that describes it (the dialect's keyword table); the
  description names the field.
* It swaps NotImplemented and NotSupported. OCPP-J 1.6 Table 7 and 2.0.1 Table 8: NotImplemented =
  "Requested Action is not known by receiver", NotSupported = "recognized but not supported". Here an
  action outside the version gets NotImplemented and one of its actions we have no handler for NotSupported.
* It validates whatever arrives, however large. Here a payload of more than :data:`MAX_PAYLOAD_VALUES` values
  (or more items than a feature's ``max_items`` allows) is refused before validation, which runs on the loop
  that also runs the hardware; and no CALLERROR quotes more than :data:`MAX_ERROR_DESCRIPTION` characters of
  what it refuses.
* It reports 1.6 errors with 2.0.1 spellings (``FormatViolation``, ``OccurrenceConstraintViolation``).
  OCPP-J 1.6 spells them ``FormationViolation`` and ``OccurenceConstraintViolation``; a strict CSMS
  validates the error code, so every code is put in the dialect's spelling on the way out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache
from itertools import islice
from types import ModuleType
from typing import Any, TypeVar, cast

import ocpp.messages
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import best_match
from ocpp.charge_point import ChargePoint as _LibChargePoint
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult, MessageType, get_validator, validate_payload
from ocpp.routing import after, create_route_map, on
from websockets.exceptions import ConnectionClosed

from firmware import bounded_json

log = logging.getLogger(__name__)

# The library validates payloads in a thread-pool executor by default: for the small payloads of OCPP the
# hand-over (a thread wake-up and the GIL passed back and forth, per message and per answer) costs more than the
# validation itself — it halved the rate at which a backlog drains. Validated inline instead.
ocpp.messages.ASYNC_VALIDATION = False

F = TypeVar("F", bound=Callable[..., Any])


def handles(action: str, *, validated_here_only: bool = False) -> Callable[[F], F]:
    """``ocpp.routing.on`` with its type kept (the library's decorator is untyped). Every CALL is validated by
    :class:`RpcChargePoint` against the dialect's schema before its handler runs; ``validated_here_only`` spares
    it the library's second pass over the same payload (and over the answer), for requests large enough for that
    to matter (SendLocalList: 1,000 entries)."""
    return cast(Callable[[F], F], on(action, skip_schema_validation=validated_here_only))


def after_answering(action: str) -> Callable[[F], F]:
    """``ocpp.routing.after``, typed: runs once the CALLRESULT for ``action`` has been sent."""
    return cast(Callable[[F], F], after(action))


#: How many schema errors are weighed to pick the one to report (every one of them costs a ValidationError).
_ERRORS_WEIGHED = 100

#: RFC 3339 §5.6 ``date-time``: full-date "T" full-time, the zone mandatory ("Z" or an offset). The schemas say
#: ``"format": "date-time"``, but the library's validators check no formats: a timestamp without a zone (local
#: time of which place?) would pass.
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


def is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the "type" keyword speaks for non-strings
    if _DATE_TIME.fullmatch(value) is None:
        return False
    try:  # and a real date and time (no 30 February, no hour 25)
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(is_date_time)


@cache
def _request_validator(version: str, action: str, decimal: bool) -> Draft4Validator:
    """The library's validator for a request, with ``date-time`` checked (built once per action)."""
    validator = get_validator(MessageType.Call, action, version, parse_float=Decimal if decimal else float)
    return cast(Draft4Validator, validator.evolve(format_checker=_FORMATS))


@dataclass(frozen=True)
class Framing:
    """What an OCPP-J version says of frames that are no well-formed CALL, CALLRESULT or CALLERROR."""

    #: the code for a CALL that is no valid RPC request (wrong number of elements, an action that is no string, an
    #: id used before): 1.6 ProtocolError, 2.0.1 RpcFrameworkError ("not a valid RPC Request")
    framework_error: str = "ProtocolError"
    #: a frame whose MessageTypeId is a number but none of 2, 3, 4 is answered MessageTypeNotSupported (2.0.1
    #: Part 4 §4.4); False: ignored (1.6 §4.1.3)
    answer_unknown_message_type: bool = False
    #: the MessageId of a CALLERROR for a frame whose own id cannot be read (2.0.1 Part 4 §4.2.3: "-1"); None:
    #: such a frame is not answered (1.6)
    unreadable_id: str | None = None


@dataclass(frozen=True)
class Dialect:
    """What one OCPP-J version fixes for the RPC layer: its actions, its schemas (the library's set for
    ``version``), its error-code table and spellings, and which schema keyword failing means which code."""

    version: str  #: the library's schema set, as in ``ocpp.messages.get_validator``: "1.6", "2.0.1"
    actions: frozenset[str]
    error_codes: frozenset[str]  #: the version's table; any other code leaving this charge point is GenericError
    call: ModuleType  #: the library's request dataclasses for the version (``ocpp.v16.call``)
    call_result: ModuleType
    #: a code in the library's spelling -> the version's (1.6: FormatViolation -> FormationViolation)
    spelling: Mapping[str, str] = field(default_factory=dict)
    #: the JSON-schema keyword that failed -> error code (library spelling); anything else: ``otherwise``
    code_by_keyword: Mapping[str, str] = field(default_factory=dict)
    otherwise: str = "PropertyConstraintViolation"
    #: actions whose schemas put ``multipleOf`` on decimals: loaded (and their payloads) with Decimal floats
    decimal_schemas: frozenset[str] = frozenset()
    #: action -> a hand-written check that is True only for payloads the action's schema accepts, for requests
    #: large enough for jsonschema's cost to matter (it walks 1,000 SendLocalList entries in some 25 ms). False
    #: proves nothing: the payload then goes through the schema, which decides and names the error.
    prechecks: Mapping[str, Callable[[dict[str, Any]], bool]] = field(default_factory=dict)
    framing: Framing = Framing()

    def error_code(self, code: str) -> str:
        """``code`` (either spelling) as this version writes it, GenericError if its table lacks it."""
        code = self.spelling.get(code, code)
        return code if code in self.error_codes else "GenericError"

    def schema_violation(self, action: str, payload: dict[str, Any]) -> tuple[str, str] | None:
        """``(error code, description naming the field)`` if a CALL's payload breaks its schema."""
        precheck = self.prechecks.get(action)
        if precheck is not None and precheck(payload):
            return None
        decimal = action in self.decimal_schemas
        try:
            validator = _request_validator(self.version, action, decimal)
        except (OSError, ValueError):
            return None  # no schema for it: the action check answers it
        try:
            instance = json.loads(json.dumps(payload), parse_float=Decimal) if decimal else payload
            error = best_match(islice(validator.iter_errors(instance), _ERRORS_WEIGHED))
        except (ArithmeticError, ValueError, TypeError):  # multipleOf on 1e999999 (inf % Decimal): out of range
            return (self.error_code("PropertyConstraintViolation"),
                    "payload: a number is out of the range this charge point handles")
        if error is None:
            return None
        where = ".".join(str(p) for p in error.absolute_path) or "payload"
        return (self.error_code(self.code_by_keyword.get(str(error.validator), self.otherwise)),
                _shorten(f"{where}: {error.message}"))


#: Most JSON values a CALL's payload may hold before it is validated. Validation is pure Python on the one event
#: loop that also runs the hardware: one 1 MiB frame of 500,000 wrong-typed items held it for 5 s. The largest
#: request this charge point announces it takes, SendLocalList (SendLocalListMaxLength 1,000 entries of a few
#: values each), stays well below.
MAX_PAYLOAD_VALUES = 10_000


def excess(payload: Any, max_values: int = MAX_PAYLOAD_VALUES, max_items: int | None = None) -> str | None:
    """Why ``payload`` is more than this charge point takes on (more than ``max_values`` JSON values, or an array
    of more than ``max_items``), naming where; None if it is not. Stops counting at the limit."""
    count = 0
    stack: list[tuple[Any, str]] = [(payload, "")]
    while stack:
        value, where = stack.pop()
        count += 1
        if count > max_values:
            return f"payload: more than {max_values} values"
        if isinstance(value, list):
            if max_items is not None and len(value) > max_items:
                return f"{where or 'payload'}: more than {max_items} items"
            stack.extend((v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(value))
        elif isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in value.items())
    return None


#: Longest errorDescription we send. jsonschema's messages quote the offending value whole: a 100,000-character
#: idTag echoed back (twice: description and details) makes a CALLERROR larger than many a CSMS accepts, and
#: the CSMS then closes the connection — the link lost over an answer.
MAX_ERROR_DESCRIPTION = 255


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_ERROR_DESCRIPTION else text[:MAX_ERROR_DESCRIPTION - 1] + "…"


#: Largest incoming frame handled; larger CALLs are answered FormationViolation without being parsed. The
#: WebSocket itself refuses frames over ``ocpp_link.MAX_WEBSOCKET_FRAME`` by closing the connection.
MAX_FRAME_BYTES = 1 << 20
#: How many received CALL ids are remembered to detect a reused id (OCPP-J §4.1.4).
SEEN_IDS_KEPT = 4096
#: ``[2, "<id>"`` at the start of a frame; the id a JSON string, escapes and all (a CSMS's JSON encoder may well
#: write an id as ``"\u00e9"``), read from the first :data:`_LEADING_BYTES` only.
_LEADING_CALL_ID = re.compile(r'\A\s*\[\s*2\s*,\s*("(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*")')
_LEADING_BYTES = 512
#: ``[3`` or ``[4`` at the start of a frame: a CALLRESULT or CALLERROR, which no CALLERROR may answer.
_LEADING_ANSWER = re.compile(r"\A\s*\[\s*[34]\s*[,\]]")


def _excerpt(raw: str | bytes) -> str:
    """The start of a frame for a log line: printable, short, whatever the frame holds."""
    head = raw[:200]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _leading_call_id(raw: str | bytes) -> str | None:
    """The unique id of a CALL, read from the first bytes only (for frames too big or too deep to parse).
    An id that cannot be sent back (a lone surrogate) is no id."""
    head = raw[:_LEADING_BYTES]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    match = _LEADING_CALL_ID.match(text)
    if match is None:
        return None
    if isinstance(head, bytes) and "\ufffd" in match.group(1):
        return None  # bytes that are not UTF-8: the id read is not the one sent
    unique_id = json.loads(match.group(1))  # the pattern only matches valid JSON strings
    return unique_id if isinstance(unique_id, str) and _encodable(unique_id) else None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unreadable_frame_error(raw: str | bytes, dialect: Dialect, code: str, description: str) -> CallError | None:
    """The CALLERROR for a frame that could not be read as a whole (not JSON, beyond the limits, oversized), or
    None. A CALL's id read from its first bytes is used with ``code``; without one, the dialect's id for an
    unreadable one with RpcFrameworkError (2.0.1: ``"-1"``; 1.6: no answer). A frame that starts as a CALLRESULT
    or CALLERROR is never answered."""
    unique_id = _leading_call_id(raw)
    if unique_id is not None:
        return CallError(unique_id, dialect.error_code(code), description, {})
    head = raw[:_LEADING_BYTES]
    text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    if dialect.framing.unreadable_id is None or _LEADING_ANSWER.match(text):
        return None
    return CallError(dialect.framing.unreadable_id, dialect.error_code("RpcFrameworkError"),
                     f"{description}; its message id cannot be read", {})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _not_a_message(msg: Any, dialect: Dialect) -> CallError | None:
    """The CALLERROR (if the dialect answers one) for JSON that is no OCPP-J message: not an array, no
    MessageTypeId, or no readable id."""
    framing = dialect.framing
    kind = msg[0] if isinstance(msg, list) and msg else None
    if _is_number(kind) and kind in (MessageType.CallResult, MessageType.CallError):
        return None  # a broken answer: a CALLERROR answers a request only
    unique_id = msg[1] if isinstance(msg, list) and len(msg) >= 2 and isinstance(msg[1], str) \
        and _encodable(msg[1]) else framing.unreadable_id
    if unique_id is None:
        return None
    if _is_number(kind) and kind != MessageType.Call:
        if not framing.answer_unknown_message_type:
            return None
        return CallError(unique_id, dialect.error_code("MessageTypeNotSupported"),
                         f"MessageTypeId {str(kind)[:20]} is not supported (2: CALL, 3: CALLRESULT, 4: CALLERROR)", {})
    if framing.unreadable_id is None:
        return None  # 1.6: nothing to answer without a CALL's id
    return CallError(unique_id, dialect.error_code("RpcFrameworkError"),
                     "not a valid RPC request: [<MessageTypeId>, \"<MessageId>\", ...] expected", {})


def classify_frame(raw: str | bytes, dialect: Dialect) -> tuple[Any, CallError | None]:
    """Parse one frame. Returns ``(decoded list, None)`` for a well-formed frame, or ``(None, error)``
    when the frame is one the version answers with a CALLERROR (its code in the dialect's spelling), or
    ``(None, None)`` when it cannot or must not be answered (1.6: no readable unique id, an unknown
    MessageTypeId, §4.1.3; any version: a broken CALLRESULT or CALLERROR).

    Never raises: the frame comes from outside. Text that is not JSON is answered as the dialect's framing says
    (1.6: not at all, as the library does; 2.0.1: RpcFrameworkError); JSON beyond :mod:`firmware.bounded_json`'s
    limits (nesting, a number's length, lone surrogates) is a FormatViolation when the CALL's id can be read from
    its first bytes, as for an oversized frame."""
    try:
        msg = bounded_json.loads(raw)
    except bounded_json.NotJson:
        return None, unreadable_frame_error(raw, dialect, "RpcFrameworkError", "message is not valid JSON") \
            if dialect.framing.unreadable_id is not None else None
    except bounded_json.LimitExceeded as exc:
        return None, unreadable_frame_error(raw, dialect, "FormatViolation", f"message is not valid OCPP-J: {exc}")
    if not isinstance(msg, list) or len(msg) < 2 or not isinstance(msg[1], str):
        return None, _not_a_message(msg, dialect)  # (a CALL of [2, "id"] alone is answered below)
    unique_id = msg[1]
    kind = msg[0]
    if not _is_number(kind) or kind not in (MessageType.Call, MessageType.CallResult, MessageType.CallError):
        return None, _not_a_message(msg, dialect)
    if kind == MessageType.Call:
        if len(msg) != 4 or not isinstance(msg[2], str):
            return None, CallError(unique_id, dialect.error_code(dialect.framing.framework_error),
                                   "CALL must be [2, id, action, payload]", {})
        if msg[3] is None:
            msg[3] = {}  # §4.2.1: null and {} both mean "no payload"
        if not isinstance(msg[3], dict):
            return None, CallError(unique_id, dialect.error_code("FormatViolation"),
                                   "payload must be a JSON object", {})
        return msg, None
    if kind == MessageType.CallResult and len(msg) == 3:
        if msg[2] is None:
            msg[2] = {}
        return (msg, None) if isinstance(msg[2], dict) else (None, None)
    if kind == MessageType.CallError and len(msg) == 5 and isinstance(msg[2], str) and isinstance(msg[3], str):
        if msg[4] is None:
            msg[4] = {}
        return msg, None
    return None, None  # a malformed result/error: a CALLERROR answers a request only


class CallErrorReceived(Exception):
    """The CSMS answered our CALL with a CALLERROR: it failed to process the message."""

    def __init__(self, action: str, code: str, description: str, details: object) -> None:
        super().__init__(f"{action}: CALLERROR {code}: {description}")
        self.action, self.code, self.description, self.details = action, code, description, details


class InvalidResponse(Exception):
    """The CSMS's CALLRESULT does not validate against the version's schema."""


class ConnectionLost(ConnectionError):
    """The connection closed while our CALL waited for its answer (none can come any more)."""


class RpcChargePoint(_LibChargePoint):  # type: ignore[misc]
    """The ``ocpp`` library's charge point, for one :class:`Dialect`, with a non-blocking, robust receive loop."""

    def __init__(self, cp_id: str, connection: Any, dialect: Dialect, response_timeout: float = 30,
                 handlers: Iterable[object] = ()) -> None:
        """``handlers``: objects whose ``@handles`` / ``@after_answering`` methods serve incoming CALLs (one
        feature module each), besides this class's own."""
        # what the library's version subclasses (ocpp.v16.ChargePoint, …) set as class attributes
        self._ocpp_version, self._call, self._call_result = dialect.version, dialect.call, dialect.call_result
        super().__init__(cp_id, connection, response_timeout=response_timeout, logger=log)
        self.dialect = dialect
        self._features = list(handlers)
        for feature in self._features:
            for action, routes in create_route_map(feature).items():
                self.route_map.setdefault(action, {}).update(routes)
        self.malformed_frames = 0
        self._seen_ids: dict[str, None] = {}  # ids of CALLs received on this connection, oldest first
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()  # the receive loop ended: outstanding CALLs fail at once
        # our CALL waiting for its answer, by unique id (OCPP-J: one at a time); answered from the receive loop
        self._awaiting: dict[str, asyncio.Future[CallResult | CallError]] = {}
        self.unmatched_answers = 0  # answers to no CALL of ours (late after a timeout, or never sent)

    async def start(self) -> None:
        """Receive until the connection closes. Incoming CALLs run concurrently with the loop.

        Only the connection ending ends this loop: a frame that cannot be handled for any other reason is
        logged with its traceback and counted (a fault of ours, never a reason to go deaf)."""
        try:
            while True:
                raw = await self._connection.recv()
                try:
                    await self._dispatch(raw)
                except ConnectionClosed:
                    raise
                except Exception:
                    self.malformed_frames += 1
                    log.exception("OCPP frame not handled", extra={"frame": _excerpt(raw)})
        finally:
            self._closed.set()
            for waiter in self._awaiting.values():
                if not waiter.done():
                    waiter.set_exception(ConnectionLost("connection closed before the answer came"))
            for task in list(self._handlers):
                task.cancel()

    async def _dispatch(self, raw: str | bytes) -> None:
        if len(raw) > MAX_FRAME_BYTES:
            self.malformed_frames += 1
            error = unreadable_frame_error(raw, self.dialect, "FormatViolation",
                                           f"message of {len(raw)} bytes exceeds this charge point's limit of "
                                           f"{MAX_FRAME_BYTES} bytes")
            log.warning("oversized OCPP frame", extra={"bytes": len(raw), "limit": MAX_FRAME_BYTES,
                                                       "answered": error is not None})
            if error is not None:
                await self._send(error.to_json())
            return
        decoded, error = classify_frame(raw, self.dialect)
        if decoded is None:
            self.malformed_frames += 1
            log.warning("malformed OCPP frame", extra={"frame": _excerpt(raw), "answered": error is not None,
                                                       "error": error.error_description if error else None})
            if error is not None:
                await self._send(error.to_json())
            return
        if decoded[0] == MessageType.Call:
            unique_id = decoded[1]
            if unique_id in self._seen_ids:
                # OCPP-J §4.1.4: a CALL's id MUST differ from every id the sender used before on this
                # connection. Executing a repeated id could e.g. start a transaction twice: refuse it.
                self.malformed_frames += 1
                log.warning("duplicate CALL message id refused", extra={"unique_id": unique_id[:36]})
                await self._send(CallError(unique_id, self.dialect.framing.framework_error, "message id already "
                                           "used on this connection", {"cause": "duplicate unique id"}).to_json())
                return
            self._seen_ids[unique_id] = None
            if len(self._seen_ids) > SEEN_IDS_KEPT:
                self._seen_ids.pop(next(iter(self._seen_ids)))
            task = asyncio.create_task(self._answer_call(Call(*decoded[1:])))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        else:
            waiter = self._awaiting.get(decoded[1])
            if waiter is None or waiter.done():
                self.unmatched_answers += 1
                log.info("answer to no waiting CALL dropped", extra={"unique_id": decoded[1][:36]})
                return
            waiter.set_result(CallResult(decoded[1], decoded[2]) if decoded[0] == MessageType.CallResult
                              else CallError(*decoded[1:]))

    async def _answer_call(self, msg: Call) -> None:
        """One incoming CALL, in its own task: whatever happens, it ends here (answered, or the link gone)."""
        try:
            await self._handle_call_safely(msg)
        except ConnectionClosed:
            log.info("connection closed before a CALL was answered", extra={"action": msg.action,
                                                                             "unique_id": msg.unique_id[:36]})
        except Exception:  # a fault of ours: logged, and the CSMS still gets an answer if the link allows
            log.exception("CALL not handled", extra={"action": msg.action})
            try:
                await self._send(CallError(msg.unique_id, "InternalError", "handler failed", {}).to_json())
            except Exception as exc:
                log.warning("InternalError not sent", extra={"action": msg.action, "error": repr(exc)})

    async def _handle_call_safely(self, msg: Call) -> None:
        if msg.action not in self.dialect.actions:
            await self._send(CallError(msg.unique_id, "NotImplemented", "Requested Action is not known by "
                                       "receiver", {"cause": f"{msg.action[:64]} is not an OCPP "
                                                             f"{self.dialect.version} action"}).to_json())
            return
        if "_on_action" not in self.route_map.get(msg.action, {}):
            await self._send(CallError(msg.unique_id, "NotSupported", "Requested Action is recognized but not "
                                       "supported by the receiver", {"cause": f"{msg.action} not supported"}
                                       ).to_json())
            return
        # bounded first: validating is costly, and the loop that does it also runs the hardware
        too_much = excess(msg.payload, max_items=self.max_items(msg.action))
        violation = (("OccurrenceConstraintViolation", too_much) if too_much
                     else self.dialect.schema_violation(msg.action, msg.payload))
        if violation is not None and not too_much and (answer := self.answer_invalid(msg.action, msg.payload)):
            log.info("CALL outside the schema answered by its feature", extra={
                "action": msg.action, "description": violation[1], "answer": answer})
            await self._send(CallResult(msg.unique_id, answer).to_json())
            return
        if violation is not None:
            code, description = violation
            log.warning("CALL refused before its handler", extra={"action": msg.action, "error_code": code,
                                                                  "description": description})
            await self._send(CallError(msg.unique_id, code, description, {"cause": description}).to_json())
            return
        try:
            await self._handle_call(msg)
        except OCPPError as error:
            await self._send(msg.create_call_error(error).to_json())
        except ConnectionClosed:
            raise
        except Exception:  # a handler bug must not take the connection down
            log.exception("handler failed", extra={"action": msg.action})
            await self._send(CallError(msg.unique_id, "InternalError", "handler failed", {}).to_json())

    def max_items(self, action: str) -> int | None:
        """Most items an array in a request for ``action`` may hold, as the first feature with a
        ``max_items(action)`` of its own says (None: only :data:`MAX_PAYLOAD_VALUES` bounds it)."""
        for feature in self._features:
            limit: Callable[[str], int | None] | None = getattr(feature, "max_items", None)
            if limit is not None and (items := limit(action)) is not None:
                return items
        return None

    def answer_invalid(self, action: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The CALLRESULT a feature gives a request that breaks its schema where the specification wants an answer
        rather than a CALLERROR (1.6 TriggerMessage: an unknown requestedMessage is NotImplemented), as the first
        feature with an ``answer_invalid(action, payload)`` of its own says; None: the CALLERROR stands."""
        for feature in self._features:
            answer: Callable[[str, dict[str, Any]], dict[str, Any] | None] | None = getattr(
                feature, "answer_invalid", None)
            if answer is not None and (result := answer(action, payload)) is not None:
                return result
        return None

    async def _send(self, message: str) -> None:
        """Every outgoing frame passes here: CALLERROR codes are put in the dialect's spelling, and a CALLERROR's
        description and details are kept short (see :data:`MAX_ERROR_DESCRIPTION`)."""
        if message.startswith("[4"):
            frame = json.loads(message)
            frame[2] = self.dialect.error_code(str(frame[2]))
            frame[3] = _shorten(str(frame[3]))
            if len(json.dumps(frame[4])) > MAX_ERROR_DESCRIPTION:
                frame[4] = {"cause": _shorten(json.dumps(frame[4]))}
            message = json.dumps(frame, separators=(",", ":"))
        await self._connection.send(message)

    async def call_raw(self, action: str, payload: dict[str, Any], timeout_s: float | None = None, *,
                       checked: bool = False) -> dict[str, Any]:
        """Send one CALL with a camelCase payload and return the CALLRESULT payload.

        The request is validated before it goes out (a schema violation is our bug and raises at once), unless
        it was ``checked`` already (a queued message, checked as it was queued: the outbox's ``check``); the
        answer is validated too. Raises :class:`CallErrorReceived`, :class:`InvalidResponse`,
        ``TimeoutError`` when no answer comes within the response timeout, or :class:`ConnectionLost` as
        soon as the connection closes (not a response timeout later). One CALL at a time (OCPP-J).
        """
        msg = Call(unique_id=str(self._unique_id_generator()), action=action, payload=payload)
        if not checked:
            await validate_payload(msg, self._ocpp_version)
        async with self._call_lock:
            if self._closed.is_set():
                raise ConnectionLost(f"{action}: not connected")
            waiter: asyncio.Future[CallResult | CallError] = asyncio.get_running_loop().create_future()
            self._awaiting[msg.unique_id] = waiter
            try:
                try:
                    await self._send(msg.to_json())
                except ConnectionClosed as exc:  # the link died under us: expected, the message stays queued
                    raise ConnectionLost(f"{action}: connection closed while sending") from exc
                async with asyncio.timeout(timeout_s or self._response_timeout):
                    response = await waiter
            finally:
                del self._awaiting[msg.unique_id]
        if response.message_type_id == MessageType.CallError:
            raise CallErrorReceived(action, response.error_code, response.error_description, response.error_details)
        response.action = action
        try:
            await validate_payload(response, self._ocpp_version)
        except OCPPError as exc:
            raise InvalidResponse(f"{action}: CSMS answer does not validate: {exc}") from exc
        result: dict[str, Any] = response.payload
        return result
