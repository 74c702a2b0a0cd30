"""A simulated OCPP 1.6J central system (CSMS): a websockets server built on the ``ocpp`` library.

Used by end-to-end tests against the agent and, through ``python -m sim csms``, by anyone who needs a
scriptable, observable CSMS. A charge point connects to ``ws://host:port/<base path>/<identity>`` with
subprotocol ``ocpp1.6`` (and, if a password is configured for it, HTTP Basic auth: security profile 1).

Per connection, a :class:`CsmsSession` (an ``ocpp.v16.ChargePoint``) receives frames. Each frame is put
in the :class:`~sim.csms.transcript.Transcript` as received, before anything can reject it. CALLs are then
answered one at a time, in order:
injected faults first, then the action check (unknown to OCPP 1.6 -> NotImplemented; a 1.6 action a CSMS
does not take -> NotSupported), then schema validation with OCPP-J 1.6 error codes
(:mod:`sim.csms.ocppj`), and only then the library's ``@on`` routing to :class:`CentralSystemLogic`.
Answers to our own CALLs are matched by uniqueId.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import ssl
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote, urlsplit

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import CallError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action, RegistrationStatus
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_www_authenticate_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from sim.csms import local_list
from sim.csms.behaviour import CsmsBehaviour
from sim.csms.commands201 import Commands201
from sim.csms.file_server import HttpFileServer, http_file_server
from sim.csms.logic import CentralSystemLogic
from sim.csms.ocppj import (
    OCPP16_ACTIONS,
    ErrorCode,
    Frame,
    FrameError,
    FrameKind,
    Violation,
    call_error_frame,
    call_frame,
    check_payload,
    parse_frame,
)
from sim.csms.state import ChargePointState
from sim.csms.transcript import Direction, EntryKind, Transcript, TranscriptEntry

log = logging.getLogger(__name__)
# the library logs every frame at INFO; the transcript already has them
_OCPP_LOG = logging.getLogger(__name__ + ".ocpp")
_OCPP_LOG.setLevel(logging.WARNING)

OCPP16_SUBPROTOCOL = "ocpp1.6"
BASIC_AUTH_REALM = "OCPP"
_LATE_ANSWERS_KEPT = 64

F = TypeVar("F", bound=Callable[..., Any])


def _handles(action: Action) -> Callable[[F], F]:
    """``ocpp.routing.on`` with the library's own validation off: :func:`check_payload` already ran."""
    return cast(Callable[[F], F], on(action, skip_schema_validation=True))


class CsmsError(Exception):
    """Base of the errors a command to a charge point can end with."""


class NotConnected(CsmsError):
    pass


class InvalidRequest(CsmsError, ValueError):
    """The payload we were asked to send does not match the 1.6 schema (pass ``validate=False`` to send it)."""

    def __init__(self, action: str, violation: Violation) -> None:
        super().__init__(f"{action}.req would be invalid: {violation.code}: {violation.description}")
        self.action = action
        self.violation = violation


class CallErrorReceived(CsmsError):
    """The charge point answered a command with a CALLERROR."""

    def __init__(self, action: str, code: str, description: str, details: Any) -> None:
        super().__init__(f"{action}: CALLERROR {code}: {description}")
        self.action = action
        self.code = code
        self.description = description
        self.details = details


class InvalidResponse(CsmsError):
    """The charge point's CALLRESULT does not match the 1.6 schema (or was not a valid frame at all)."""

    def __init__(self, action: str, reason: str, payload: Any = None) -> None:
        super().__init__(f"{action}.conf invalid: {reason}")
        self.action = action
        self.reason = reason
        self.payload = payload


@dataclass(frozen=True)
class Exchange:
    """A CALL from a charge point and our answer to it (CALLRESULT or CALLERROR)."""

    request: TranscriptEntry
    response: TranscriptEntry


def identity_from_path(path: str, base_path: str) -> str | None:
    """Charge point identity: the (percent-decoded) last path segment right under ``base_path``."""
    p = urlsplit(path).path
    prefix = base_path.rstrip("/") + "/"
    if not p.startswith(prefix):
        return None
    segment = p[len(prefix):]
    if not segment or "/" in segment:
        return None
    return unquote(segment)


@dataclass
class _PendingCall:
    action: str
    future: asyncio.Future[Frame]


@dataclass(frozen=True)
class _ErrorReply:
    """A CALLERROR owed for a frame that could not even be parsed as a CALL."""

    unique_id: str
    code: str
    description: str


class _RecordingLink:
    """The connection object given to the ocpp library: every frame it sends goes through the transcript."""

    def __init__(self, session: CsmsSession) -> None:
        self._session = session

    async def send(self, message: str) -> None:
        await self._session.send_frame(message)

    async def recv(self) -> str:  # pragma: no cover - the library's start() loop is not used
        raise RuntimeError("CsmsSession reads frames itself")


class CsmsSession(ChargePoint):  # type: ignore[misc]  # ocpp ships no type information
    """One charge point connection. Created by :class:`SimulatedCsms`; tests reach it via the CSMS.

    The framing, validation, faults, transcript and commands are the same for every OCPP version; what differs is
    in the class attributes (the version's name, actions and library types) and the ``@on`` handlers: OCPP 1.6's
    here, 2.0.1's in :class:`sim.csms.session201.CsmsSession201`."""

    ocpp_version = "1.6"
    actions = OCPP16_ACTIONS
    call_results: Any = call_result

    def __init__(self, csms: SimulatedCsms, cp_id: str, ws: ServerConnection) -> None:
        super().__init__(cp_id, _RecordingLink(self), response_timeout=csms.response_timeout_s,
                         logger=_OCPP_LOG)
        self._csms = csms
        self._ws = ws
        self._inbox: asyncio.Queue[Frame | _ErrorReply] = asyncio.Queue()
        self._payloads: dict[str, dict[str, Any]] = {}  # uniqueId -> request payload, for the handlers
        self._answers_to_lose: set[str] = set()  # uniqueIds processed whose CALLRESULT is not sent (injected)
        self._inbound_actions: dict[str, str] = {}  # uniqueId of a CALL from the CP -> its action
        self._pending: dict[str, _PendingCall] = {}
        self._late: OrderedDict[str, str] = OrderedDict()  # timed-out CALLs, to label a late answer
        self._command_lock = asyncio.Lock()
        self._closed = False

    @property
    def connection(self) -> ServerConnection:
        return self._ws

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- receiving -------------------------------------------------------------------------------

    async def run(self) -> None:
        worker = asyncio.create_task(self._answer_calls(), name=f"csms-{self.id}-calls")
        try:
            async for message in self._ws:
                self._on_message(message)
        except ConnectionClosed:
            pass
        finally:
            self._closed = True
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            for pending in self._pending.values():
                if not pending.future.done():
                    pending.future.set_exception(NotConnected(f"{self.id}: connection closed"))

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._record(EntryKind.MALFORMED, Direction.FROM_CP, raw=message.decode("utf-8", "replace"),
                         detail={"reason": "binary frame (OCPP-J uses text frames)"})
            log.warning("binary frame ignored", extra={"cp_id": self.id, "bytes": len(message)})
            return
        try:
            frame = parse_frame(message)
        except FrameError as exc:
            self._record(EntryKind.MALFORMED, Direction.FROM_CP, unique_id=exc.unique_id, raw=message,
                         detail={"reason": exc.reason})
            log.warning("malformed frame", extra={"cp_id": self.id, "reason": exc.reason,
                                                  "unique_id": exc.unique_id})
            if exc.answerable and exc.unique_id is not None:
                self._inbox.put_nowait(_ErrorReply(exc.unique_id, exc.code, exc.reason))
            elif exc.unique_id is not None and exc.unique_id in self._pending:
                fut = self._pending[exc.unique_id].future
                if not fut.done():
                    fut.set_exception(InvalidResponse(self._pending[exc.unique_id].action, exc.reason))
            return
        if frame.kind is FrameKind.CALL:
            assert frame.action is not None
            self._inbound_actions[frame.unique_id] = frame.action
            self._record_frame(frame, Direction.FROM_CP, message, frame.action)
            self._inbox.put_nowait(frame)
            return
        pending = self._pending.get(frame.unique_id)
        action = pending.action if pending is not None else self._late.pop(frame.unique_id, None)
        detail = {} if pending is not None else {"unsolicited": True}
        self._record_frame(frame, Direction.FROM_CP, message, action, detail)
        if pending is None:
            log.warning("answer to no outstanding CALL", extra={"cp_id": self.id, "unique_id": frame.unique_id,
                                                                "late_for": action})
        elif not pending.future.done():
            pending.future.set_result(frame)

    async def _answer_calls(self) -> None:
        """Answer CALLs strictly in arrival order (OCPP-J: one outstanding CALL per direction)."""
        while True:
            item = await self._inbox.get()
            try:
                if isinstance(item, _ErrorReply):
                    await self._send_error(item.unique_id, item.code, item.description)
                else:
                    await self._answer(item)
            except ConnectionClosed:
                return
            except Exception:  # a bug here must not leave every later CALL unanswered
                log.exception("answering a CALL failed", extra={"cp_id": self.id})

    async def _answer(self, frame: Frame) -> None:
        action, uid = cast(str, frame.action), frame.unique_id
        decision = self._csms.behaviour.faults.take(self.id, action)
        if decision.delay_s > 0:
            await asyncio.sleep(decision.delay_s)
        if decision.ignore:
            self._inbound_actions.pop(uid, None)
            log.info("CALL left unanswered (injected)", extra={"cp_id": self.id, "action": action,
                                                              "unique_id": uid})
            return
        if decision.error_code is not None:
            await self._send_error(uid, decision.error_code, decision.error_description or "",
                                   {"injected": True})
            return
        refusal = self._refusal(action, frame.payload)
        if refusal is not None:
            log.warning("CALL refused", extra={"cp_id": self.id, "action": action, "unique_id": uid,
                                               "error_code": refusal[0], "reason": refusal[1]})
            await self._send_error(uid, *refusal)
            return
        self._payloads[uid] = frame.payload
        if decision.lose_answer:
            self._answers_to_lose.add(uid)
        try:
            # the library unpacks again, routes to the @on handler and sends its CALLRESULT via the link; it is
            # given the payload as parsed (a null payload, which it cannot route, is {} by then)
            await self.route_message(call_frame(uid, action, frame.payload))
        finally:
            self._payloads.pop(uid, None)
            self._answers_to_lose.discard(uid)

    def _refusal(self, action: str, payload: dict[str, Any]) -> tuple[str, str] | None:
        if action not in self.actions:
            return ErrorCode.NOT_IMPLEMENTED, f"action {action!r} is not known (OCPP {self.ocpp_version})"
        if action not in self.route_map:
            return ErrorCode.NOT_SUPPORTED, f"action {action!r} is not taken by a central system"
        if (self._csms.behaviour.reject_calls_before_accepted and action != Action.boot_notification
                and self._csms.state(self.id).registration_status != RegistrationStatus.accepted):
            return ErrorCode.SECURITY_ERROR, "charge point is not accepted yet (BootNotification first)"
        violation = check_payload(action, payload, version=self.ocpp_version)
        if violation is not None:
            return violation.code, violation.description
        return None

    # ---- sending ---------------------------------------------------------------------------------

    async def send_frame(self, text: str) -> None:
        """Record, then send, one frame of ours (recorded first so the transcript keeps wire order)."""
        frame = parse_frame(text)
        if frame.kind is FrameKind.CALL:
            action = frame.action
        else:
            action = self._inbound_actions.pop(frame.unique_id, None)
            if frame.unique_id in self._answers_to_lose:
                log.info("answer lost (injected): processed, not sent", extra={
                    "cp_id": self.id, "action": action, "unique_id": frame.unique_id})
                return
        self._record_frame(frame, Direction.TO_CP, text, action)
        await self._ws.send(text)

    async def _send_error(self, unique_id: str, code: str, description: str,
                          details: dict[str, Any] | None = None) -> None:
        await self.send_frame(call_error_frame(unique_id, code, description, details))

    async def call_action(self, action: str, payload: dict[str, Any], *, timeout_s: float,
                          validate: bool = True) -> dict[str, Any]:
        """Send a CALL and return the CALLRESULT payload; see :meth:`SimulatedCsms.call`."""
        action = str(action)  # an ocpp Action enum is welcome; the transcript keeps plain strings
        if validate:
            violation = check_payload(action, payload, version=self.ocpp_version)
            if violation is not None:
                raise InvalidRequest(action, violation)
        async with self._command_lock:  # one outstanding CALL from us at a time (OCPP-J synchronicity rule)
            if self._closed:
                raise NotConnected(f"{self.id}: not connected")
            uid = str(uuid.uuid4())
            future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
            self._pending[uid] = _PendingCall(action, future)
            try:
                await self.send_frame(call_frame(uid, action, payload))
                frame = await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                self._late[uid] = action
                while len(self._late) > _LATE_ANSWERS_KEPT:
                    self._late.popitem(last=False)
                raise TimeoutError(f"{self.id}: no answer to {action} within {timeout_s} s") from None
            except ConnectionClosed:
                raise NotConnected(f"{self.id}: connection closed") from None
            finally:
                self._pending.pop(uid, None)
        if frame.kind is FrameKind.CALLERROR:
            raise CallErrorReceived(action, frame.error_code or "", frame.error_description or "",
                                    frame.payload)
        if validate:
            violation = check_payload(action, frame.payload, response=True, version=self.ocpp_version)
            if violation is not None:
                raise InvalidResponse(action, f"{violation.code}: {violation.description}", frame.payload)
        return cast(dict[str, Any], frame.payload)

    async def call(self, payload: Any, suppress: bool = True, unique_id: str | None = None,
                   skip_schema_validation: bool = False) -> Any:
        """The ocpp library's typed ``call(call.Reset(...))``, routed through :meth:`call_action`.

        Returns the library's ``call_result`` object; a CALLERROR gives None, or with ``suppress=False``
        raises the library's exception for that code. ``unique_id`` is not supported (ours are UUIDs).
        """
        if unique_id is not None:
            raise ValueError("CsmsSession.call: unique_id cannot be chosen")
        action = type(payload).__name__
        body = remove_nones(snake_to_camel_case(serialize_as_dict(payload)))
        try:
            answer = await self.call_action(action, body, timeout_s=self._response_timeout,
                                            validate=not skip_schema_validation)
        except CallErrorReceived as exc:
            if suppress:
                return None
            raise CallError(None, exc.code, exc.description, exc.details).to_exception() from exc
        return getattr(self.call_results, action)(**camel_to_snake_case(answer))

    async def close(self, code: int = 1000, reason: str = "", *, abort: bool = False) -> None:
        if abort:
            self._ws.transport.abort()  # like a cable pulled: no closing handshake
        else:
            await self._ws.close(code, reason)

    # ---- transcript --------------------------------------------------------------------------------

    def _record_frame(self, frame: Frame, direction: Direction, raw: str, action: str | None,
                      detail: dict[str, Any] | None = None) -> None:
        self._record(EntryKind(frame.kind.value), direction, unique_id=frame.unique_id, action=action,
                     payload=frame.payload, error_code=frame.error_code,
                     error_description=frame.error_description, raw=raw, detail=detail)

    def _record(self, kind: EntryKind, direction: Direction, **fields: Any) -> None:
        self._csms.transcript.record(kind, cp_id=self.id, direction=direction, **fields)

    # ---- Core requests from the charge point (routed here by the ocpp library) ---------------------

    @_handles(Action.boot_notification)
    def _on_boot_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.boot_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.heartbeat)
    def _on_heartbeat(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.heartbeat(self.id, self._payloads[call_unique_id])

    @_handles(Action.authorize)
    def _on_authorize(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.authorize(self.id, self._payloads[call_unique_id])

    @_handles(Action.start_transaction)
    def _on_start_transaction(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.start_transaction(self.id, self._payloads[call_unique_id])

    @_handles(Action.stop_transaction)
    def _on_stop_transaction(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.stop_transaction(self.id, self._payloads[call_unique_id])

    @_handles(Action.status_notification)
    def _on_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.status_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.meter_values)
    def _on_meter_values(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.meter_values(self.id, self._payloads[call_unique_id])

    @_handles(Action.data_transfer)
    def _on_data_transfer(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.data_transfer(self.id, self._payloads[call_unique_id])

    @_handles(Action.firmware_status_notification)
    def _on_firmware_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.firmware_status_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.signed_firmware_status_notification)
    def _on_signed_firmware_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.signed_firmware_status_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.log_status_notification)
    def _on_log_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.log_status_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.sign_certificate)
    def _on_sign_certificate(self, call_unique_id: str, **_: Any) -> Any:
        csr = self._payloads[call_unique_id].get("csr", "")
        answer = self._csms.logic.sign_certificate(self.id, self._payloads[call_unique_id])
        if self._csms.csr_signer is not None and self._csms.behaviour.sign_certificate_status == "Accepted":
            # after this answer: CertificateSigned, as a CSMS with a CA does
            self._csms.spawn(self._send_signed(csr))
        return answer

    async def _send_signed(self, csr: str) -> None:
        await asyncio.sleep(0)  # the SignCertificate.conf goes first
        signer = self._csms.csr_signer
        assert signer is not None
        try:
            chain = signer(csr)
            await self._csms.certificate_signed(self.id, chain)
        except (CsmsError, TimeoutError, ValueError) as exc:
            log.warning("CertificateSigned not delivered", extra={"cp_id": self.id, "error": str(exc)})

    @_handles(Action.security_event_notification)
    def _on_security_event_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.security_event_notification(self.id, self._payloads[call_unique_id])

    @_handles(Action.diagnostics_status_notification)
    def _on_diagnostics_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        return self._csms.logic.diagnostics_status_notification(self.id, self._payloads[call_unique_id])


class SimulatedCsms(Commands201):
    """The CSMS: listen, refuse or accept charge points, answer them, send them commands, record all.

    Use as ``async with SimulatedCsms(port=0) as csms:``; ``csms.url_for("CP-1")`` is what the charge point
    connects to. ``behaviour`` may be changed while running; changes apply to the next CALL.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        base_path: str = "/ocpp",
        behaviour: CsmsBehaviour | None = None,
        transcript: Transcript | None = None,
        transcript_path: str | None = None,
        response_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        close_timeout_s: float = 2.0,
        ssl_context: ssl.SSLContext | None = None,
        csr_signer: Callable[[str], str] | None = None,
        files_dir: str | Path | None = None,
        ocpp_version: str = "1.6",
    ) -> None:
        """``ssl_context``: serve wss:// with it (:func:`server_tls_context`: security profiles 2 and 3).
        ``csr_signer``: set, a SignCertificate is answered by a CertificateSigned with ``csr_signer(csr)`` (the
        harness gives it its test CA: ``sim.harness.pki.sign_csr``). ``files_dir``: also serve the files in it over
        HTTP (firmware to download) and take uploads into its ``uploads/`` (diagnostics): :meth:`file_url`,
        :attr:`files`. ``ocpp_version``: "1.6" (subprotocol ocpp1.6) or "2.0.1" (ocpp2.0.1,
        :mod:`sim.csms.session201`)."""
        if transcript is not None and transcript_path is not None:
            raise ValueError("give transcript or transcript_path, not both")
        self.behaviour = behaviour or CsmsBehaviour()
        self._owns_transcript = transcript is None
        self.transcript = transcript or Transcript(transcript_path)
        self.ocpp_version = ocpp_version
        self.logic: Any
        self._session_class: type[CsmsSession]
        if ocpp_version == "2.0.1":
            from sim.csms.logic201 import CsmsLogic201
            from sim.csms.session201 import OCPP201_SUBPROTOCOL, CsmsSession201

            self.logic, self._session_class, self.subprotocol = (
                CsmsLogic201(self.behaviour), CsmsSession201, OCPP201_SUBPROTOCOL)
        elif ocpp_version == "1.6":
            self.logic, self._session_class, self.subprotocol = (
                CentralSystemLogic(self.behaviour), CsmsSession, OCPP16_SUBPROTOCOL)
        else:
            raise ValueError(f"ocpp_version: 1.6 or 2.0.1, not {ocpp_version!r}")
        self.response_timeout_s = response_timeout_s
        self._host = host
        self._port = port
        self._base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self._ping_interval_s = ping_interval_s
        self._close_timeout_s = close_timeout_s
        self.ssl_context = ssl_context
        self.csr_signer = csr_signer
        self._sessions: dict[str, CsmsSession] = {}
        self._online = True
        self._server: Server | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._firmware_request_id = 0  # the last 2.0.1 UpdateFirmware's requestId
        self._files_dir = Path(files_dir) if files_dir is not None else None
        self._files_cm: contextlib.AbstractContextManager[HttpFileServer] | None = None
        self.files: HttpFileServer | None = None  # the file server, while running (with files_dir)

    # ---- lifecycle -----------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """A background task of the CSMS (kept until it ends)."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        self._server = await serve(
            self._handle_connection, self._host, self._port,
            subprotocols=[Subprotocol(self.subprotocol)],
            process_request=self._process_request,
            ping_interval=self._ping_interval_s, close_timeout=self._close_timeout_s, ssl=self.ssl_context,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        log.info("CSMS listening", extra={"url": self.url})
        if self._files_dir is not None:
            self._files_cm = http_file_server(self._files_dir)
            self.files = self._files_cm.__enter__()
            log.info("CSMS file server listening", extra={"url": self.file_url(""), "dir": str(self._files_dir)})

    def file_url(self, name: str) -> str:
        """Where the charge point downloads ``name`` of ``files_dir`` (or uploads to, ending in ``/``)."""
        if self.files is None:
            raise RuntimeError("the CSMS serves no files (give files_dir)")
        return self.files.url(name)

    async def stop(self) -> None:
        if self._files_cm is not None:
            self._files_cm.__exit__(None, None, None)
            self._files_cm, self.files = None, None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._owns_transcript:
            self.transcript.close()

    async def __aenter__(self) -> SimulatedCsms:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL; a charge point appends ``/<identity>``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host}:{self._port}{self._base_path}"

    def url_for(self, cp_id: str) -> str:
        return f"{self.url}/{quote(cp_id, safe='')}"

    # ---- state ---------------------------------------------------------------------------------------

    def state(self, cp_id: str) -> ChargePointState:
        return cast(ChargePointState, self.logic.state(cp_id))

    @property
    def states(self) -> dict[str, ChargePointState]:
        return cast(dict[str, ChargePointState], self.logic.states)

    def is_connected(self, cp_id: str) -> bool:
        return cp_id in self._sessions

    def session(self, cp_id: str) -> CsmsSession:
        s = self._sessions.get(cp_id)
        if s is None:
            raise NotConnected(f"{cp_id}: not connected")
        return s

    async def wait_connected(self, cp_id: str, timeout_s: float = 5.0) -> None:
        mark = self.transcript.mark()
        if not self.is_connected(cp_id):
            await self.transcript.wait_for_event(EntryKind.CONNECT, cp_id, timeout_s=timeout_s, since=mark)

    async def wait_disconnected(self, cp_id: str, timeout_s: float = 5.0) -> None:
        mark = self.transcript.mark()
        if self.is_connected(cp_id):
            await self.transcript.wait_for_event(EntryKind.DISCONNECT, cp_id, timeout_s=timeout_s, since=mark)

    async def wait_for_exchange(
        self,
        action: str | None = None,
        predicate: Callable[[TranscriptEntry], bool] | None = None,
        *,
        cp_id: str | None = None,
        timeout_s: float = 5.0,
        since: int = 0,
    ) -> Exchange:
        """A CALL from a charge point *and* our answer: once this returns, :meth:`state` reflects it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        request = await self.transcript.wait_for(action, predicate, cp_id=cp_id, timeout_s=timeout_s, since=since)
        response = await self.transcript.wait_for_response(request, max(0.0, deadline - loop.time()))
        return Exchange(request, response)

    # ---- online / offline ----------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._online

    async def set_online(self, online: bool, *, abort: bool = False) -> None:
        """Offline: close every connection (1001 "going away", or a TCP abort with ``abort=True``) and answer
        new handshakes with HTTP 503 until back online. Returns once every connection is gone."""
        self._online = online
        log.warning("CSMS %s", "online" if online else "offline", extra={"abort": abort})
        if not online:
            await asyncio.gather(*(self.disconnect(cp_id, code=1001, reason="CSMS offline (simulated)",
                                                   abort=abort) for cp_id in list(self._sessions)))

    async def disconnect(self, cp_id: str, *, code: int = 1000, reason: str = "",
                         abort: bool = False) -> None:
        """Drop one charge point's connection and wait until it is gone."""
        session = self._sessions.get(cp_id)
        if session is None:
            return
        await session.close(code, reason, abort=abort)
        await self.wait_disconnected(cp_id, timeout_s=self._close_timeout_s + 1.0)

    # ---- commands (CSMS -> charge point) -------------------------------------------------------------

    async def call(self, cp_id: str, action: str, payload: dict[str, Any] | None = None, *,
                   timeout_s: float | None = None, validate: bool = True) -> dict[str, Any]:
        """Send ``action`` to ``cp_id``; return the CALLRESULT payload (camelCase, as received).

        Raises :class:`NotConnected`, ``TimeoutError``, :class:`CallErrorReceived`, and with ``validate``
        (the default) :class:`InvalidRequest` before sending / :class:`InvalidResponse` after receiving a
        payload that breaks the 1.6 schema. ``validate=False`` sends anything, e.g. to test the agent's own
        validation.
        """
        return await self.session(cp_id).call_action(
            action, payload or {}, timeout_s=self.response_timeout_s if timeout_s is None else timeout_s,
            validate=validate)

    async def install_certificate(self, cp_id: str, certificate_type: str, certificate_pem: str, *,
                                  timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.install_certificate,
                               {"certificateType": certificate_type, "certificate": certificate_pem},
                               timeout_s=timeout_s)

    async def certificate_signed(self, cp_id: str, certificate_chain: str, *,
                                 timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.certificate_signed, {"certificateChain": certificate_chain},
                               timeout_s=timeout_s)

    async def extended_trigger_message(self, cp_id: str, requested_message: str, *, connector_id: int | None = None,
                                       timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.extended_trigger_message,
                               _compact(requestedMessage=requested_message, connectorId=connector_id),
                               timeout_s=timeout_s)

    async def get_installed_certificate_ids(self, cp_id: str, certificate_type: str, *,
                                            timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.get_installed_certificate_ids, {"certificateType": certificate_type},
                               timeout_s=timeout_s)

    async def delete_certificate(self, cp_id: str, certificate_hash_data: dict[str, str], *,
                                 timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.delete_certificate, {"certificateHashData": certificate_hash_data},
                               timeout_s=timeout_s)

    async def remote_start_transaction(self, cp_id: str, id_tag: str, *, connector_id: int | None = None,
                                       charging_profile: dict[str, Any] | None = None,
                                       timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.remote_start_transaction, _compact(
            idTag=id_tag, connectorId=connector_id, chargingProfile=charging_profile), timeout_s=timeout_s)

    async def set_charging_profile(self, cp_id: str, connector_id: int, cs_charging_profiles: dict[str, Any], *,
                                   timeout_s: float | None = None) -> dict[str, Any]:
        """``cs_charging_profiles``: the profile object (:func:`sim.csms.charging_profiles.charging_profile`
        builds one); connector 0 = the whole charge point."""
        return await self.call(cp_id, Action.set_charging_profile,
                               {"connectorId": connector_id, "csChargingProfiles": cs_charging_profiles},
                               timeout_s=timeout_s)

    async def clear_charging_profile(self, cp_id: str, *, profile_id: int | None = None,
                                     connector_id: int | None = None, purpose: str | None = None,
                                     stack_level: int | None = None,
                                     timeout_s: float | None = None) -> dict[str, Any]:
        """No criterion: every profile; several: all must match (OCPP 1.6: an id given, only the id counts)."""
        return await self.call(cp_id, Action.clear_charging_profile, _compact(
            id=profile_id, connectorId=connector_id, chargingProfilePurpose=purpose, stackLevel=stack_level),
            timeout_s=timeout_s)

    async def get_composite_schedule(self, cp_id: str, connector_id: int, duration: int, unit: str | None = None,
                                     *, timeout_s: float | None = None) -> dict[str, Any]:
        """``duration`` in seconds from now; ``unit`` A or W (None: the charge point chooses)."""
        return await self.call(cp_id, Action.get_composite_schedule, _compact(
            connectorId=connector_id, duration=duration, chargingRateUnit=unit), timeout_s=timeout_s)

    # ---- OCPP 2.0.1 smart charging (K) ------------------------------------------------------------------

    async def set_charging_profile201(self, cp_id: str, evse_id: int, charging_profile: dict[str, Any], *,
                                      timeout_s: float | None = None) -> dict[str, Any]:
        """2.0.1 SetChargingProfile; ``charging_profile``: a ChargingProfileType
        (:func:`sim.csms.charging_profiles.charging_profile_201` builds one); EVSE 0 = the whole station."""
        return await self.call(cp_id, "SetChargingProfile", {"evseId": evse_id, "chargingProfile": charging_profile},
                               timeout_s=timeout_s)

    async def clear_charging_profile201(self, cp_id: str, *, profile_id: int | None = None,
                                        evse_id: int | None = None, purpose: str | None = None,
                                        stack_level: int | None = None,
                                        timeout_s: float | None = None) -> dict[str, Any]:
        criteria = _compact(evseId=evse_id, chargingProfilePurpose=purpose, stackLevel=stack_level)
        return await self.call(cp_id, "ClearChargingProfile", _compact(
            chargingProfileId=profile_id, chargingProfileCriteria=criteria or None), timeout_s=timeout_s)

    async def get_composite_schedule201(self, cp_id: str, evse_id: int, duration: int, unit: str | None = None, *,
                                        timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, "GetCompositeSchedule", _compact(
            evseId=evse_id, duration=duration, chargingRateUnit=unit), timeout_s=timeout_s)

    async def get_charging_profiles201(self, cp_id: str, request_id: int, *, evse_id: int | None = None,
                                       purpose: str | None = None, stack_level: int | None = None,
                                       profile_ids: list[int] | None = None, sources: list[str] | None = None,
                                       timeout_s: float = 5.0) -> tuple[str, list[dict[str, Any]]]:
        """GetChargingProfiles, then (when Accepted) every ReportChargingProfiles of ``request_id`` up to the one
        without ``tbc``: (status, the reports in the order received)."""
        mark = self.transcript.mark()
        criterion = _compact(chargingProfilePurpose=purpose, stackLevel=stack_level, chargingProfileId=profile_ids,
                             chargingLimitSource=sources)
        answer = await self.call(cp_id, "GetChargingProfiles", _compact(
            requestId=request_id, evseId=evse_id, chargingProfile=criterion), timeout_s=timeout_s)
        reports: list[dict[str, Any]] = []
        if answer["status"] == "Accepted":
            since = mark
            while not reports or reports[-1].get("tbc", False):
                exchange = await self.wait_for_exchange(
                    "ReportChargingProfiles", lambda e: isinstance(e.payload, dict)
                    and e.payload.get("requestId") == request_id, cp_id=cp_id, timeout_s=timeout_s, since=since)
                reports.append(dict(exchange.request.payload))
                since = exchange.request.seq + 1
        return str(answer["status"]), reports

    async def remote_stop_transaction(self, cp_id: str, transaction_id: int, *,
                                      timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.remote_stop_transaction, {"transactionId": transaction_id},
                               timeout_s=timeout_s)

    async def change_availability(self, cp_id: str, connector_id: int, availability_type: str, *,
                                  timeout_s: float | None = None) -> dict[str, Any]:
        """``availability_type``: Operative | Inoperative; connector 0 is the whole charge point."""
        return await self.call(cp_id, Action.change_availability,
                               {"connectorId": connector_id, "type": availability_type}, timeout_s=timeout_s)

    async def change_configuration(self, cp_id: str, key: str, value: str, *,
                                   timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.change_configuration, {"key": key, "value": value},
                               timeout_s=timeout_s)

    async def get_configuration(self, cp_id: str, keys: list[str] | None = None, *,
                                timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.get_configuration, _compact(key=keys), timeout_s=timeout_s)

    async def clear_cache(self, cp_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.clear_cache, {}, timeout_s=timeout_s)

    async def reset(self, cp_id: str, reset_type: str = "Soft", *,
                    timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.reset, {"type": reset_type}, timeout_s=timeout_s)

    async def unlock_connector(self, cp_id: str, connector_id: int, *,
                               timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.unlock_connector, {"connectorId": connector_id}, timeout_s=timeout_s)

    async def data_transfer(self, cp_id: str, vendor_id: str, *, message_id: str | None = None,
                            data: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.data_transfer,
                               _compact(vendorId=vendor_id, messageId=message_id, data=data), timeout_s=timeout_s)

    async def update_firmware(self, cp_id: str, location: str, retrieve_date: str, *, retries: int | None = None,
                              retry_interval: int | None = None, timeout_s: float | None = None,
                              request_id: int | None = None) -> dict[str, Any]:
        """UpdateFirmware as this CSMS's version has it: 1.6 (location, retrieveDate) or 2.0.1 (requestId — one more
        than the last given when none is —, firmware.location / retrieveDateTime: an update without a signature,
        L02; a signed one is sent with :meth:`call`)."""
        if self.ocpp_version == "2.0.1":
            self._firmware_request_id = request_id if request_id is not None else self._firmware_request_id + 1
            return await self.call(cp_id, "UpdateFirmware", _compact(
                requestId=self._firmware_request_id, firmware={"location": location, "retrieveDateTime": retrieve_date},
                retries=retries, retryInterval=retry_interval), timeout_s=timeout_s)
        return await self.call(cp_id, Action.update_firmware, _compact(
            location=location, retrieveDate=retrieve_date, retries=retries, retryInterval=retry_interval),
            timeout_s=timeout_s)

    async def get_diagnostics(self, cp_id: str, location: str, *, retries: int | None = None,
                              retry_interval: int | None = None, start_time: str | None = None,
                              stop_time: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.get_diagnostics, _compact(
            location=location, retries=retries, retryInterval=retry_interval, startTime=start_time,
            stopTime=stop_time), timeout_s=timeout_s)

    async def get_log(self, cp_id: str, log_type: str, request_id: int, location: str, *,
                      retries: int | None = None, retry_interval: int | None = None, oldest: str | None = None,
                      latest: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        """GetLog (1.6 security whitepaper): ``log_type`` DiagnosticsLog or SecurityLog, uploaded to ``location``."""
        return await self.call(cp_id, Action.get_log, _compact(
            logType=log_type, requestId=request_id, retries=retries, retryInterval=retry_interval,
            log=_compact(remoteLocation=location, oldestTimestamp=oldest, latestTimestamp=latest)),
            timeout_s=timeout_s)

    async def reserve_now(self, cp_id: str, connector_id: int, id_tag: str, reservation_id: int,
                          expiry_date: datetime | str, *, parent_id_tag: str | None = None,
                          timeout_s: float | None = None) -> dict[str, Any]:
        """ReserveNow; connector 0 = any connector of the charge point. ``expiry_date``: a datetime (sent in UTC
        with a 'Z') or the wire string as is."""
        expiry = expiry_date if isinstance(expiry_date, str) else \
            expiry_date.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return await self.call(cp_id, Action.reserve_now, _compact(
            connectorId=connector_id, expiryDate=expiry, idTag=id_tag, parentIdTag=parent_id_tag,
            reservationId=reservation_id), timeout_s=timeout_s)

    async def cancel_reservation(self, cp_id: str, reservation_id: int, *,
                                 timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.cancel_reservation, {"reservationId": reservation_id},
                               timeout_s=timeout_s)

    async def trigger_message(self, cp_id: str, requested_message: str, *, connector_id: int | None = None,
                              timeout_s: float | None = None) -> dict[str, Any]:
        return await self.call(cp_id, Action.trigger_message,
                               _compact(requestedMessage=requested_message, connectorId=connector_id),
                               timeout_s=timeout_s)

    async def get_local_list_version(self, cp_id: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        """GetLocalListVersion: ``{"listVersion": N}`` (-1: no list supported, 0: an empty list)."""
        return await self.call(cp_id, Action.get_local_list_version, {}, timeout_s=timeout_s)

    async def send_local_list(self, cp_id: str, list_version: int, update_type: str,
                              entries: list[dict[str, Any]] | None = None, *, timeout_s: float | None = None,
                              validate: bool = True) -> dict[str, Any]:
        """SendLocalList; ``entries`` as :func:`sim.csms.local_list.entry` makes them (None: no list — a Full
        update empties the charge point's list, a Differential one changes nothing)."""
        return await self.call(cp_id, Action.send_local_list, local_list.request(list_version, update_type, entries),
                               timeout_s=timeout_s, validate=validate)

    async def push_local_list(self, cp_id: str, entries: list[dict[str, Any]], *, first_version: int = 1,
                              chunk: int = 1000, timeout_s: float | None = None,
                              validate: bool = True) -> list[tuple[int, str]]:
        """A whole list in requests of at most ``chunk`` entries (:func:`sim.csms.local_list.chunked`: one Full
        update, then Differential ones), stopping at the first one not Accepted. ``(version, status)`` of each
        request sent; the list's version is the last one's if all were Accepted."""
        sent: list[tuple[int, str]] = []
        for part in local_list.chunked(entries, first_version, chunk):
            answer = await self.send_local_list(cp_id, part.version, part.update_type, part.entries,
                                                timeout_s=timeout_s, validate=validate)
            sent.append((part.version, str(answer.get("status"))))
            if answer.get("status") != "Accepted":
                break
        return sent

    # ---- connections ---------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse the opening handshake as a real CSMS would; ``None`` lets websockets accept it."""
        cp_id = identity_from_path(request.path, self._base_path)
        remote = _address(connection.remote_address)

        def refuse(status: HTTPStatus, reason: str) -> Response:
            self.transcript.record(EntryKind.REFUSED, cp_id=cp_id, detail={
                "status": int(status), "reason": reason, "path": request.path, "remote": remote})
            log.warning("handshake refused", extra={"cp_id": cp_id, "status": int(status), "reason": reason,
                                                    "remote": remote})
            return connection.respond(status, reason + "\n")

        if cp_id is None:
            return refuse(HTTPStatus.NOT_FOUND, f"expected path {self._base_path}/<chargePointId>")
        if not self._online:
            return refuse(HTTPStatus.SERVICE_UNAVAILABLE, "CSMS offline (simulated)")
        if self.behaviour.known_charge_points_only and not self.behaviour.is_known(cp_id):
            return refuse(HTTPStatus.NOT_FOUND, "unknown charge point")
        password = self.behaviour.profile(cp_id).password
        if password is not None:
            problem = _basic_auth_problem(request.headers.get("Authorization"), cp_id, password,
                                          hex_rule=self.ocpp_version == "1.6")
            if problem is not None:
                response = refuse(HTTPStatus.UNAUTHORIZED, problem)
                response.headers["WWW-Authenticate"] = build_www_authenticate_basic(BASIC_AUTH_REALM)
                return response
        offered = [p.strip() for header in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in header.split(",") if p.strip()]
        if self.subprotocol not in offered:
            return refuse(HTTPStatus.BAD_REQUEST,
                          f"subprotocol {self.subprotocol} required; offered: {', '.join(offered) or 'none'}")
        return None

    async def _handle_connection(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        cp_id = identity_from_path(path, self._base_path)
        if cp_id is None:  # pragma: no cover - _process_request refused it already
            await ws.close(1008, "no charge point identity")
            return
        if not self._online:  # went offline while this handshake was in flight
            self.transcript.record(EntryKind.REFUSED, cp_id=cp_id, detail={
                "status": None, "reason": "closed after handshake: CSMS offline (simulated)", "path": path,
                "remote": _address(ws.remote_address)})
            await ws.close(1001, "CSMS offline (simulated)")
            return
        session = self._session_class(self, cp_id, ws)
        previous = self._sessions.get(cp_id)
        self._sessions[cp_id] = session
        if previous is not None:
            # the newest connection wins: a charge point that lost its link reconnects before we notice
            log.warning("charge point reconnected; closing its previous connection", extra={"cp_id": cp_id})
            task = asyncio.create_task(previous.close(1000, "replaced by a new connection"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        st = self.state(cp_id)
        st.connected = True
        st.connected_at = datetime.now(UTC)
        st.connection_count += 1
        st.remote_address = _address(ws.remote_address)
        self.transcript.record(EntryKind.CONNECT, cp_id=cp_id, detail={
            "remote": st.remote_address, "subprotocol": ws.subprotocol, "path": path, **_tls_detail(ws)})
        log.info("charge point connected", extra={"cp_id": cp_id, "remote": st.remote_address,
                                                  "connections": st.connection_count})
        try:
            await session.run()
        finally:
            current = self._sessions.get(cp_id) is session
            if current:
                del self._sessions[cp_id]
                st.connected = False
                st.disconnected_at = datetime.now(UTC)
            self.transcript.record(EntryKind.DISCONNECT, cp_id=cp_id, detail={
                "code": ws.close_code, "reason": ws.close_reason, "replaced": not current})
            log.info("charge point disconnected", extra={"cp_id": cp_id, "code": ws.close_code,
                                                         "reason": ws.close_reason})


def server_tls_context(cert: str | Path, key: str | Path, *, client_ca: str | Path | None = None,
                       minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
                       maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
                       ciphers: str | None = None) -> ssl.SSLContext:
    """A CSMS's TLS: its certificate and key; with ``client_ca`` the charge point must present a certificate
    issued by it (security profile 3). ``minimum``/``maximum``/``ciphers`` let a test offer what a charge point
    must refuse: TLS 1.2 only, a cipher suite outside the whitepaper's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = minimum, maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca is not None:
        ctx.load_verify_locations(cafile=str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def basic_auth_password(key: str, *, hex_rule: bool = True) -> bytes:
    """OCTT TC_085: a key of 32..40 hex digits stands for the bytes it encodes; any other key for its UTF-8.
    ``hex_rule=False`` (OCPP 2.0.1's BasicAuthPassword, OCTT TC_A_01_CS): always its UTF-8."""
    if hex_rule and 32 <= len(key) <= 40 and len(key) % 2 == 0 and all(c in "0123456789abcdefABCDEF" for c in key):
        return bytes.fromhex(key)
    return key.encode("utf-8")


def _basic_auth_problem(header: str | None, cp_id: str, password: str, *, hex_rule: bool = True) -> str | None:
    """Why HTTP Basic credentials fail security profile 1/2 (username = identity), or None if they pass."""
    if header is None:
        return "HTTP Basic authentication required"
    try:
        token = header.split(" ", 1)[1] if header[:6].lower() == "basic " else ""
        user_pass = base64.b64decode(token.strip(), validate=True)
    except (ValueError, binascii.Error):
        return "malformed Authorization header"
    username, sep, given = user_pass.partition(b":")
    if not token or not sep:
        return "malformed Authorization header"
    # compare both, always, so the timing does not tell which one was wrong; the password as bytes (it may
    # be binary: a hex AuthorizationKey)
    user_ok = hmac.compare_digest(username, cp_id.encode("utf-8"))
    pass_ok = hmac.compare_digest(given, basic_auth_password(password, hex_rule=hex_rule))
    return None if user_ok and pass_ok else "invalid credentials"


def _tls_detail(ws: ServerConnection) -> dict[str, Any]:
    """Over wss://: the TLS version and cipher agreed, and the CN of the client certificate (profile 3)."""
    sslobj = ws.transport.get_extra_info("ssl_object")
    if sslobj is None:
        return {}
    peer = sslobj.getpeercert() or {}
    cn = next((value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"), None)
    cipher = sslobj.cipher()
    return {"tls": sslobj.version(), "cipher": cipher[0] if cipher else None, "client_certificate": cn,
            "client_certificate_serial": peer.get("serialNumber")}


def _address(addr: Any) -> str | None:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return None if addr is None else str(addr)


def _compact(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}
