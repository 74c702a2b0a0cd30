"""The simulator's control API: HTTP/1.1 + JSON on a local port, for scripts, CI and ``python -m sim ctl``.

A deliberately small server on ``asyncio.start_server`` (no dependencies): one request per connection
(``Connection: close``), bodies by Content-Length only, JSON in and out. Every bad request gets a 4xx
answer ``{"error": "<reason>"}`` that says what was wrong; a handler bug gets a 500 and is logged. The
endpoints are listed in :data:`ENDPOINTS` and documented in docs/sim-api.md.

The API is unauthenticated: it listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from firmware.maintenance import slots
from sim.csms import local_list
from sim.csms.behaviour import BehaviourError
from sim.csms.charging_profiles import (
    ANY_PURPOSE,
    KINDS,
    RECURRENCIES,
    UNITS,
    Period,
    charging_profile,
    charging_profile_201,
    parse_instant,
    profile_ids_sent,
    purpose_in,
)
from sim.csms.commands201 import variable_name
from sim.csms.file_server import HttpFileServer
from sim.csms.ocppj import check_payload
from sim.csms.server import CallErrorReceived, InvalidRequest, InvalidResponse, NotConnected, SimulatedCsms
from sim.csms.transcript import Direction, EntryKind
from sim.harness import csms_commands as commands
from sim.harness.ab_slots import SimSlots
from sim.harness.agent_supervisor import AgentOutput, AgentSupervisor
from sim.harness.charger import (
    DEVICE_FAULT_KINDS,
    FaultDevice,
    FaultNotApplicable,
    FaultRequest,
    LineFault,
    SimulatedCharger,
    UnknownTarget,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BODY = 1 << 20
MAX_HEADERS = 100
REQUEST_TIMEOUT_S = 10.0
_UID = re.compile(r"[0-9A-Fa-f]+")
INT32_MAX = 2**31 - 1


class ApiError(Exception):
    """Ends a request with ``status`` and ``{"error": reason, **extra}``."""

    def __init__(self, status: int, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class ControlTargets:
    """What the API acts on: the simulated hardware, the agent process and (if built in) the CSMS."""

    charger: SimulatedCharger
    supervisor: AgentSupervisor
    agent_output: AgentOutput
    csms_url: str
    csms: SimulatedCsms | None = None
    state_dir: Path | None = None
    extra_state: dict[str, Any] = field(default_factory=dict)


# ---- HTTP/1.1, the small part we need ---------------------------------------------------------------

async def read_request(reader: asyncio.StreamReader) -> HttpRequest:
    """Read one request; raises :class:`ApiError` (400/413/501) for what we do not accept."""
    try:
        line = await reader.readline()
    except ValueError:
        raise ApiError(414, "request line too long") from None
    if not line:
        raise ConnectionError("client closed before sending a request")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ApiError(400, "malformed request line (expected 'METHOD /path HTTP/1.1')")
    method, target, _ = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        try:
            raw = await reader.readline()
        except ValueError:
            raise ApiError(431, "header line too long") from None
        text = raw.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise ApiError(400, f"malformed header line {text[:60]!r}")
        headers[name.lower()] = value.strip()
    else:
        raise ApiError(431, f"more than {MAX_HEADERS} header lines")
    if "transfer-encoding" in headers:
        raise ApiError(501, "Transfer-Encoding is not supported; send a Content-Length")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise ApiError(400, f"bad Content-Length {length_text!r}")
    length = int(length_text)
    if length > MAX_BODY:
        raise ApiError(413, f"body of {length} bytes is over the {MAX_BODY} byte limit")
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ApiError(400, f"body shorter than its Content-Length ({length})") from None
    split = urlsplit(target)
    path = split.path.rstrip("/") or "/"
    return HttpRequest(method.upper(), path, parse_qs(split.query, keep_blank_values=True), headers, body)


def encode_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> bytes:
    body = (json.dumps(obj, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    lines = [f"HTTP/1.1 {status} {phrase}", "Content-Type: application/json; charset=utf-8",
             f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout_s: float = 1.0) -> None:
    """Half-close, then drain what the client still sends: closing with unread input would reset the
    connection (RST) and could destroy our answer before the client has read it (a refused request
    usually leaves its body unread)."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(timeout_s):
            while await reader.read(65536):
                pass


# ---- JSON bodies ---------------------------------------------------------------------------------------

class Body:
    """Typed access to a JSON object body; every mistake is a 400 naming the field."""

    def __init__(self, raw: bytes) -> None:
        if not raw.strip():
            self.data: dict[str, Any] = {}
            return
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, f"body must be a JSON object, got {type(data).__name__}")
        self.data = data

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)} (known: {', '.join(allowed) or 'none'})")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def boolean(self, key: str, default: bool | None = None) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise ApiError(400, f"{key}: expected true or false, got {self._show(key)}")
        return value

    def number(self, key: str, default: float | None = None, *, lo: float, hi: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(400, f"{key}: expected a number, got {self._show(key)}")
        if not lo <= value <= hi:
            raise ApiError(400, f"{key}: expected a number from {lo:g} to {hi:g}, got {value}")
        return float(value)

    def integer(self, key: str, default: int | None = None, *, lo: int, hi: int) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(400, f"{key}: expected an integer, got {self._show(key)}")
        if not lo <= value <= hi:
            raise ApiError(400, f"{key}: expected an integer from {lo} to {hi}, got {value}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"{key}: expected a non-empty string, got {self._show(key)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            raise ApiError(400, f"{key}: expected one of {', '.join(choices)}, got {self._show(key)}")
        return str(value)

    def obj(self, key: str, default: dict[str, Any] | None = None) -> dict[str, Any]:
        value = self.data.get(key, default)
        if not isinstance(value, dict):
            raise ApiError(400, f"{key}: expected a JSON object, got {self._show(key)}")
        return value

    def _show(self, key: str) -> str:
        return "nothing" if key not in self.data else json.dumps(self.data[key])[:60]


def _query_int(req: HttpRequest, key: str, default: int | None, lo: int, hi: int) -> int | None:
    values = req.query.get(key)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise ApiError(400, f"query {key}: expected an integer, got {values[-1]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"query {key}: expected an integer from {lo} to {hi}, got {value}")
    return value


def _query_number(req: HttpRequest, key: str, default: float, lo: float, hi: float) -> float:
    text = _query_text(req, key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:
        raise ApiError(400, f"query {key}: expected a number from {lo:g} to {hi:g}, got {text!r}")
    return value


def _query_text(req: HttpRequest, key: str) -> str | None:
    values = req.query.get(key)
    return values[-1] if values else None


# ---- OCPP requests to the builtin CSMS -----------------------------------------------------------------

def _check_request(action: str, payload: dict[str, Any], hint: str = "", version: str = "1.6") -> None:
    """A payload that breaks the version's schema is a 400 before anything is sent (whether or not the CP is
    there)."""
    violation = check_payload(action, payload, version=version)
    if violation is not None:
        raise ApiError(400, f"{action}.req would be invalid: {violation.code}: {violation.description}{hint}")


async def _answer(cp_id: str, action: str, call: Awaitable[T]) -> T:
    """The charge point's CALLRESULT payload; every way a call can fail as the API's error status."""
    base = {"cp_id": cp_id, "action": action}
    try:
        return await call
    except NotConnected as exc:
        raise ApiError(409, f"charge point not connected to the builtin CSMS: {exc}", **base) from None
    except InvalidRequest as exc:
        raise ApiError(400, str(exc), **base) from None
    except CallErrorReceived as exc:
        raise ApiError(502, str(exc), **base, call_error={
            "code": exc.code, "description": exc.description, "details": exc.details}) from None
    except InvalidResponse as exc:
        raise ApiError(502, str(exc), **base, payload=exc.payload) from None
    except TimeoutError as exc:
        raise ApiError(504, str(exc), **base) from None


def _periods(body: Body) -> list[Period]:
    """``periods``: ``[[start_s, limit], [start_s, limit, phases], ...]``, at least one."""
    raw = body.data.get("periods")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "periods: expected a non-empty list of [start_s, limit] or [start_s, limit, phases], "
                            f"got {json.dumps(raw)[:60]}")
    out = []
    for i, item in enumerate(raw):
        if (not isinstance(item, list) or len(item) not in (2, 3)
                or any(isinstance(x, bool) or not isinstance(x, int | float) for x in item)):
            raise ApiError(400, f"periods[{i}]: expected [start_s, limit] or [start_s, limit, phases], "
                                f"got {json.dumps(item)[:60]}")
        start, limit, *phases = item
        if not isinstance(start, int) or start < 0 or (phases and not isinstance(phases[0], int)):
            raise ApiError(400, f"periods[{i}]: start_s and phases are whole numbers, start_s >= 0; got {item}")
        if not limit >= 0:
            raise ApiError(400, f"periods[{i}]: limit must be >= 0, got {limit}")
        out.append(Period(start, limit, phases[0] if phases else None))
    return out


def _local_list_entries(body: Body) -> list[dict[str, Any]]:
    """``entries``: ``[{"id_tag": "X", "status": "Accepted", "expiry": "+3600"|ISO, "parent_id_tag": "G"}, …]``;
    ``"status": null`` (or no status): the id alone, which a Differential update removes."""
    raw = body.data.get("entries")
    if not isinstance(raw, list):
        raise ApiError(400, f"entries: expected a list of objects, got {json.dumps(raw)[:60]}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ApiError(400, f"entries[{i}]: expected an object, got {json.dumps(item)[:60]}")
        e = Body(json.dumps(item).encode())
        try:
            e.only("id_tag", "status", "expiry", "parent_id_tag")
            status = e.choice("status", local_list.STATUSES) if e.has("status") else None
            expiry = parse_instant(e.text("expiry"), datetime.now(UTC)) if e.has("expiry") else None
            if status is None and (expiry is not None or e.has("parent_id_tag")):
                raise ApiError(400, "expiry and parent_id_tag need a status (without one the id is removed)")
            out.append(local_list.entry(e.text("id_tag"), status, expiry_date=expiry,
                                        parent_id_tag=e.text("parent_id_tag") if e.has("parent_id_tag") else None))
        except ApiError as exc:
            raise ApiError(400, f"entries[{i}]: {exc.reason}") from None
        except ValueError as exc:
            raise ApiError(400, f"entries[{i}]: expiry: {exc}") from None
    return out


def _next_profile_id(csms: SimulatedCsms, cp_id: str) -> int:
    """One above every chargingProfileId this CSMS sent that charge point: a new profile never replaces another
    by accident (the same id replaces, whatever its purpose)."""
    sent = profile_ids_sent((e.action, e.payload) for e in csms.transcript.messages(
        cp_id, direction=Direction.TO_CP, kind=EntryKind.CALL))
    return max(sent, default=0) + 1


def _open_transaction(csms: SimulatedCsms, cp_id: str, connector: int) -> int | str | None:
    """The newest transaction the CSMS knows open on that connector (2.0.1: EVSE) — a TxProfile's default target —,
    if any."""
    known = csms.states.get(cp_id)  # not csms.state(): that would make a record for an identity never seen
    if known is None:
        return None
    if csms.ocpp_version == "2.0.1":
        open201 = [tx_id for tx_id, t in known.transactions201.items() if t.is_open
                   and any(e.get("evse", {}).get("id") == connector for e in t.events)]
        return open201[-1] if open201 else None
    return max((t.transaction_id for t in known.open_transactions if t.connector_id == connector), default=None)


def _open_transaction_201(csms: SimulatedCsms, cp_id: str, evse: int) -> str | None:
    """The newest 2.0.1 transaction the CSMS knows open on that EVSE, if any."""
    known = csms.states.get(cp_id)
    open_ids = [] if known is None else [
        t.transaction_id for t in known.transactions201.values()
        if t.is_open and any(e.get("evse", {}).get("id") == evse for e in t.events)]
    return open_ids[-1] if open_ids else None


# ---- the API -------------------------------------------------------------------------------------------

Handler = Callable[[HttpRequest, dict[str, str]], Awaitable[tuple[int, Any]]]

#: (method, path pattern, summary) — also served at ``GET /``.
ENDPOINTS: list[tuple[str, str, str]] = [
    ("GET", "/state", "agent, connectors, reader, faults, CSMS"),
    ("GET", "/agent/log", "last agent log lines (?n=100, ?since=SEQ)"),
    ("POST", "/connectors/{n}/plug", "plug the EV in"),
    ("POST", "/connectors/{n}/unplug", "unplug the EV"),
    ("POST", "/connectors/{n}/ev", '{"max_current_a": 16, "paused": true, "ventilation": false}'),
    ("POST", "/rfid/tap", '{"uid": "04A2B3C4", "reader": 1, "hold_s": 1.0}'),
    ("POST", "/faults", '{"device": "pilot|meter|rfid", "connector": 1, "kind": "...", "active": true}'),
    ("POST", "/agent/power-cut", "SIGKILL the agent; it stays off until power-on"),
    ("POST", "/agent/power-on", "start the agent again"),
    ("POST", "/csms/online", 'builtin CSMS: {"online": false, "abort": false}'),
    ("POST", "/csms/call", 'builtin CSMS: {"action": "RemoteStartTransaction", "payload": {...}}'),
    ("POST", "/csms/id-tags", 'builtin CSMS: {"id_tag": "04A2B3C4", "status": "Accepted"}'),
    ("GET", "/csms/transcript", "builtin CSMS: frames and events (?n=100, ?since=SEQ)"),
    ("POST", "/csms/trigger", 'builtin CSMS: TriggerMessage {"message": "StatusNotification", "connector": 1} '
                              '(2.0.1: "evse" too)'),
    ("POST", "/csms/remote-start", 'builtin CSMS: RemoteStartTransaction / 2.0.1 RequestStartTransaction '
                                   '{"id_tag": "04A2B3C4", "connector": 1} (2.0.1: "token_type", "remote_start_id")'),
    ("POST", "/csms/remote-stop", 'builtin CSMS: RemoteStopTransaction / 2.0.1 RequestStopTransaction '
                                  '{"transaction_id": ...} or {"connector": 1} (its open transaction)'),
    ("POST", "/csms/reset", 'builtin CSMS: Reset {"type": "Soft"|"Hard"} (2.0.1: "Immediate"|"OnIdle", "evse")'),
    ("POST", "/csms/availability", 'builtin CSMS: ChangeAvailability {"operative": false, "connector": 1} '
                                   '(no connector: all; 2.0.1: "evse" and its "connector")'),
    ("POST", "/csms/unlock", 'builtin CSMS: UnlockConnector {"connector": 1} (2.0.1: "evse" and its "connector")'),
    ("POST", "/csms/clear-cache", "builtin CSMS: ClearCache"),
    ("POST", "/csms/variables/get", 'builtin CSMS: GetConfiguration {"names": ["HeartbeatInterval"]} / 2.0.1 '
                                    'GetVariables {"names": ["OCPPCommCtrlr.HeartbeatInterval"]}'),
    ("POST", "/csms/variables/set", 'builtin CSMS: ChangeConfiguration / 2.0.1 SetVariables '
                                    '{"name": "OCPPCommCtrlr.HeartbeatInterval", "value": "30"}'),
    ("POST", "/csms/base-report", 'builtin CSMS, 2.0.1: GetBaseReport {"report": "FullInventory"} and its '
                                  'NotifyReport pages'),
    ("POST", "/csms/charging-profiles", 'builtin CSMS: SetChargingProfile {"connector": 0, "purpose": '
                                        '"TxDefaultProfile", "periods": [[0, 16], [60, 10]]}'),
    ("POST", "/csms/charging-profiles/clear", 'builtin CSMS: ClearChargingProfile {"id": 3} (no field: all)'),
    ("GET", "/csms/composite-schedule", "builtin CSMS: GetCompositeSchedule (?connector=1&duration_s=3600&unit=W)"),
    ("POST", "/csms/local-list", 'builtin CSMS: SendLocalList {"version": 3, "update_type": "Full", "entries": '
                                 '[{"id_tag": "04A2B3C4", "status": "Accepted"}]} (or "generate": 100000, '
                                 '"chunk": 1000)'),
    ("GET", "/csms/local-list/version", "builtin CSMS: GetLocalListVersion"),
    ("GET", "/csms/files", "builtin CSMS: the firmware files it offers and the uploads it received"),
    ("POST", "/csms/update-firmware", 'builtin CSMS: UpdateFirmware {"file": "fw.bundle"} (a file it offers) or '
     '{"location": URL}; "retrieve_in_s", "retries", "retry_interval_s"'),
    ("POST", "/csms/firmware-bundle", 'with --ab-slots: build a bundle of this checkout signed with the simulator\'s '
     'key into the files the CSMS offers {"version": "1.2.0", "name": "fw.bundle"}'),
    ("POST", "/csms/get-diagnostics", 'builtin CSMS: GetDiagnostics to its own upload place {} or {"location": URL}; '
     '"retries", "retry_interval_s", "start", "stop"'),
    ("POST", "/csms/get-log", 'builtin CSMS: GetLog {"type": "security"|"diagnostics"} to its own upload place or '
     '{"location": URL}; "request_id", "retries", "retry_interval_s", "oldest", "latest"'),
    ("POST", "/csms/reservations", 'builtin CSMS: ReserveNow {"connector": 0, "id_tag": "04A2B3C4", '
                                   '"reservation_id": 1, "expiry_s": 900, "parent_id_tag": "FLEET"}'),
    ("POST", "/csms/reservations/cancel", 'builtin CSMS: CancelReservation {"reservation_id": 1}'),
]


class ControlApi:
    def __init__(self, targets: ControlTargets) -> None:
        self.t = targets
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._log_requests = 0  # GetLog's requestId when none is given: 1, 2, ...
        self._remote_starts = 0  # 2.0.1 remoteStartId when none is given: 1, 2, ...
        self.host = ""
        self.port = 0
        handlers: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._index,
            ("GET", "/state"): self._state,
            ("GET", "/agent/log"): self._agent_log,
            ("POST", "/connectors/{n}/plug"): self._plug,
            ("POST", "/connectors/{n}/unplug"): self._unplug,
            ("POST", "/connectors/{n}/ev"): self._ev,
            ("POST", "/rfid/tap"): self._tap,
            ("POST", "/faults"): self._fault,
            ("POST", "/agent/power-cut"): self._power_cut,
            ("POST", "/agent/power-on"): self._power_on,
            ("POST", "/csms/online"): self._csms_online,
            ("POST", "/csms/call"): self._csms_call,
            ("POST", "/csms/id-tags"): self._csms_id_tags,
            ("GET", "/csms/transcript"): self._csms_transcript,
            ("POST", "/csms/trigger"): self._csms_trigger,
            ("POST", "/csms/remote-start"): self._remote_start,
            ("POST", "/csms/remote-stop"): self._remote_stop,
            ("POST", "/csms/reset"): self._reset,
            ("POST", "/csms/availability"): self._availability,
            ("POST", "/csms/unlock"): self._unlock,
            ("POST", "/csms/clear-cache"): self._clear_cache,
            ("POST", "/csms/variables/get"): self._get_variables,
            ("POST", "/csms/variables/set"): self._set_variable,
            ("POST", "/csms/base-report"): self._base_report,
            ("POST", "/csms/charging-profiles"): self._profile_set,
            ("POST", "/csms/charging-profiles/clear"): self._profile_clear,
            ("GET", "/csms/composite-schedule"): self._composite_schedule,
            ("POST", "/csms/local-list"): self._local_list_send,
            ("GET", "/csms/local-list/version"): self._local_list_version,
            ("GET", "/csms/files"): self._csms_files,
            ("POST", "/csms/update-firmware"): self._update_firmware,
            ("POST", "/csms/get-diagnostics"): self._get_diagnostics,
            ("POST", "/csms/get-log"): self._get_log,
            ("POST", "/csms/firmware-bundle"): self._firmware_bundle,
            ("POST", "/csms/reservations"): self._reserve,
            ("POST", "/csms/reservations/cancel"): self._cancel_reservation,
        }
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            (method, re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$"), h)
            for (method, path), h in handlers.items()
        ]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=64 * 1024)
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = str(sockname[0]), int(sockname[1])
        log.info("control API listening", extra={"url": self.url})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ---- connections ---------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            status, obj, headers = await self._respond(reader)
            writer.write(encode_response(status, obj, headers))
            await writer.drain()
            await _linger(reader, writer)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, Any, dict[str, str]]:
        try:
            req = await asyncio.wait_for(read_request(reader), REQUEST_TIMEOUT_S)
        except ApiError as exc:
            return exc.status, {"error": exc.reason}, {}
        except TimeoutError:
            return 408, {"error": f"request not complete within {REQUEST_TIMEOUT_S:g} s"}, {}
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            m = pattern.match(req.path)
            if m is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            try:
                status, obj = await handler(req, m.groupdict())
            except ApiError as exc:
                return exc.status, {"error": exc.reason, **exc.extra}, {}
            except Exception as exc:
                log.exception("control API handler failed", extra={"method": req.method, "path": req.path})
                return 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}, {}
            log.info("control API request", extra={"method": req.method, "path": req.path, "status": status})
            return status, obj, {}
        if allowed:
            return 405, {"error": f"{req.method} not allowed on {req.path} (allowed: {', '.join(allowed)})"}, \
                {"Allow": ", ".join(allowed)}
        return 404, {"error": f"no such endpoint: {req.path} (GET / lists them)"}, {}

    # ---- helpers -------------------------------------------------------------------------------------

    def _connector_id(self, params: dict[str, str]) -> int:
        text = params["n"]
        if not text.isdigit() or int(text) not in self.t.charger.connectors:
            known = ", ".join(map(str, self.t.charger.connectors))
            raise ApiError(404, f"no connector {text!r} (connectors: {known})")
        return int(text)

    def _connector_view(self, n: int) -> dict[str, Any]:
        view = self.t.charger.connector_state(n)
        view["status"] = self.t.agent_output.statuses.get(n)
        view["limit"] = self.t.agent_output.limits.view(n, self.t.charger.spec.max_current_a)
        return view

    def _builtin(self) -> SimulatedCsms:
        if self.t.csms is None:
            raise ApiError(404, f"no builtin CSMS: the agent talks to {self.t.csms_url} (started with --csms URL)")
        return self.t.csms

    # ---- handlers ------------------------------------------------------------------------------------

    async def _index(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"endpoints": [{"method": m, "path": p, "about": a} for m, p, a in ENDPOINTS]}

    async def _state(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        t = self.t
        csms: dict[str, Any] = {"mode": "builtin" if t.csms is not None else "external", "url": t.csms_url,
                                "identity_url": t.csms_url.rstrip("/") + "/" + t.charger.spec.charge_point_id}
        if t.csms is not None:
            csms["connected"] = t.csms.is_connected(t.charger.spec.charge_point_id)
            csms["online"] = t.csms.online
            path = t.csms.transcript.path
            csms["transcript"] = None if path is None else str(path)
        return 200, {
            "charge_point_id": t.charger.spec.charge_point_id,
            "state_dir": None if t.state_dir is None else str(t.state_dir),
            "agent": t.supervisor.snapshot(),
            "connectors": {str(n): self._connector_view(n) for n in t.charger.connectors},
            "charge_point_status": t.agent_output.statuses.get(0),
            "reader": t.charger.reader_state(),
            "faults": t.charger.active_faults,
            "csms": csms,
            **t.extra_state,
        }

    async def _agent_log(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        out = self.t.agent_output
        n = _query_int(req, "n", 100, 1, 100_000)
        since = _query_int(req, "since", None, 0, 1 << 62)
        assert n is not None
        return 200, {"lines": out.tail(n, since), "next_seq": out.next_seq}

    async def _plug(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        n = self._connector_id(params)
        ev = self.t.charger.connectors[n].ev
        changed = not ev.plugged
        ev.plug()
        self.t.charger.step(0.0)
        log.info("EV plugged in", extra={"connector": n})
        return 200, {"changed": changed, **self._connector_view(n)}

    async def _unplug(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        n = self._connector_id(params)
        ev = self.t.charger.connectors[n].ev
        changed = ev.plugged
        ev.unplug()
        self.t.charger.step(0.0)
        log.info("EV unplugged", extra={"connector": n})
        return 200, {"changed": changed, **self._connector_view(n)}

    async def _ev(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        n = self._connector_id(params)
        body = Body(req.body)
        body.only("max_current_a", "paused", "ventilation")
        if not body.data:
            raise ApiError(400, "nothing to change: give max_current_a, paused and/or ventilation")
        ev = self.t.charger.connectors[n].ev
        # validate everything before changing anything
        max_current = body.number("max_current_a", lo=0.0, hi=80.0) if "max_current_a" in body.data else None
        paused = body.boolean("paused") if "paused" in body.data else None
        ventilation = body.boolean("ventilation") if "ventilation" in body.data else None
        if max_current is not None:
            ev.max_current_a = max_current
        if paused is not None:
            ev.paused = paused
        if ventilation is not None:
            ev.ventilation = ventilation
        self.t.charger.step(0.0)
        log.info("EV changed", extra={"connector": n, **body.data})
        return 200, self._connector_view(n)

    async def _tap(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = Body(req.body)
        body.only("uid", "reader", "hold_s")
        uid = body.text("uid").strip().upper()
        if not _UID.fullmatch(uid):
            raise ApiError(400, f"uid: expected hex digits only, got {body.data['uid']!r}")
        reader = body.data.get("reader", 1)
        if reader not in (1, "1", "reader1"):
            raise ApiError(404, f"no reader {reader!r} (readers: 1)")
        hold_s = body.number("hold_s", 1.0, lo=0.05, hi=3600.0)
        try:
            self.t.charger.tap(uid, hold_s)
        except ValueError as exc:
            raise ApiError(400, f"uid: {exc}") from None
        log.info("card tapped", extra={"reader": 1, "uid": uid, "hold_s": hold_s})
        return 200, {"uid": uid, "reader": 1, "hold_s": hold_s}

    async def _fault(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = Body(req.body)
        body.only("device", "connector", "kind", "active", "count", "probability", "direction")
        device_text = body.text("device")
        device_text = "pilot" if device_text == "board" else device_text
        try:
            device = FaultDevice(device_text)
        except ValueError:
            raise ApiError(400, f"device: expected pilot (or board), meter or rfid, got {device_text!r}") from None
        connector = body.integer("connector", lo=0, hi=1 << 31) if body.has("connector") else None
        if device is not FaultDevice.RFID and connector is None:
            if len(self.t.charger.connectors) != 1:
                raise ApiError(400, f"connector: required for {device} faults")
            connector = next(iter(self.t.charger.connectors))
        fault = FaultRequest(
            device=device, kind=body.text("kind"), active=body.boolean("active", True), connector=connector,
            count=body.integer("count", lo=1, hi=65536) if body.has("count") else None,
            probability=body.number("probability", 0.01, lo=0.0, hi=1.0),
            direction=body.text("direction") if body.has("direction") else None)
        try:
            result = self.t.charger.apply_fault(fault)
        except UnknownTarget as exc:
            raise ApiError(404, str(exc)) from None
        except FaultNotApplicable as exc:
            raise ApiError(400, str(exc), known_kinds=[*DEVICE_FAULT_KINDS[device], *LineFault]) from None
        return 200, {**result, "active_faults": self.t.charger.active_faults}

    async def _power_cut(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        killed = await self.t.supervisor.power_cut()
        return 200, {"killed_pid": killed, "agent": self.t.supervisor.snapshot()}

    async def _power_on(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        if not await self.t.supervisor.power_on(timeout_s=10.0):
            snap = self.t.supervisor.snapshot()
            raise ApiError(500, f"agent is not running after power-on (state {snap['state']}, "
                                f"last exit code {snap['last_exit_code']}); see GET /agent/log", agent=snap)
        return 200, {"agent": self.t.supervisor.snapshot()}

    async def _csms_online(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("online", "abort")
        await csms.set_online(body.boolean("online"), abort=body.boolean("abort", False))
        return 200, {"online": csms.online}

    async def _csms_call(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("action", "payload", "cp_id", "timeout_s", "validate")
        action = body.text("action")
        payload = body.obj("payload", {})
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        validate = body.boolean("validate", True)
        if validate:  # checked here too, so a bad request is a 400 whether or not the CP is connected
            _check_request(action, payload, ' (send "validate": false to send it anyway)', csms.ocpp_version)
        response = await _answer(cp_id, action, csms.call(cp_id, action, payload, timeout_s=timeout_s,
                                                          validate=validate))
        return 200, {"cp_id": cp_id, "action": action, "response": response}

    async def _csms_trigger(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "message", "connector", "evse")
        return await self._send_command(body, lambda v: commands.trigger(
            v, body.text("message"), connector=self._optional_int(body, "connector"),
            evse=self._optional_int(body, "evse")))

    # ---- the operator's commands, in the version the builtin CSMS speaks (sim/harness/csms_commands.py) ---

    @staticmethod
    def _optional_int(body: Body, key: str, lo: int = 0) -> int | None:
        return body.integer(key, lo=lo, hi=INT32_MAX) if body.has(key) else None

    def _command_body(self, req: HttpRequest, *fields: str) -> Body:
        body = Body(req.body)
        body.only("cp_id", "timeout_s", *fields)
        return body

    async def _send_command(self, body: Body, build: Callable[[str], commands.Command]) -> tuple[int, Any]:
        """The verb's message for the builtin CSMS's version, checked against its schema, sent, answered."""
        csms = self._builtin()
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        try:
            action, payload = build(csms.ocpp_version)
        except commands.CommandError as exc:
            raise ApiError(400, str(exc)) from None
        _check_request(action, payload, version=csms.ocpp_version)
        response = await _answer(cp_id, action, csms.call(cp_id, action, payload, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": action, "request": payload, "response": response}

    async def _remote_start(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "id_tag", "connector", "token_type", "remote_start_id")
        self._remote_starts += 1
        return await self._send_command(body, lambda v: commands.remote_start(
            v, body.text("id_tag"), connector=self._optional_int(body, "connector"),
            token_type=body.text("token_type", "ISO14443"),
            remote_start_id=body.integer("remote_start_id", self._remote_starts, lo=-INT32_MAX - 1, hi=INT32_MAX)))

    async def _remote_stop(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "transaction_id", "connector")
        csms = self._builtin()
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        if body.has("transaction_id"):
            value = body.data["transaction_id"]
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ApiError(400, f"transaction_id: expected an integer or a string, got {json.dumps(value)[:60]}")
            tx_id: str | int = value
        else:
            connector = body.integer("connector", 1, lo=1, hi=INT32_MAX)
            found = (_open_transaction_201(csms, cp_id, connector) if csms.ocpp_version == "2.0.1"
                     else _open_transaction(csms, cp_id, connector))
            if found is None:
                raise ApiError(409, f"the CSMS knows no open transaction on connector {connector}; "
                                    "give transaction_id")
            tx_id = found
        return await self._send_command(body, lambda v: commands.remote_stop(v, tx_id))

    async def _reset(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "type", "evse")
        return await self._send_command(body, lambda v: commands.reset(
            v, body.text("type") if body.has("type") else None, evse=self._optional_int(body, "evse", lo=1)))

    async def _availability(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "operative", "connector", "evse")
        return await self._send_command(body, lambda v: commands.availability(
            v, body.boolean("operative"), connector=self._optional_int(body, "connector"),
            evse=self._optional_int(body, "evse")))

    async def _unlock(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "connector", "evse")
        return await self._send_command(body, lambda v: commands.unlock(
            v, connector=self._optional_int(body, "connector"), evse=self._optional_int(body, "evse")))

    async def _clear_cache(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req)
        return await self._send_command(body, commands.clear_cache)

    async def _get_variables(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "names")
        names = body.data.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise ApiError(400, f"names: expected a list of names, got {json.dumps(names)[:60]}")
        return await self._send_command(body, lambda v: commands.get_variables(v, names))

    async def _set_variable(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        body = self._command_body(req, "name", "value")
        value = body.data.get("value")
        if not isinstance(value, str):
            raise ApiError(400, f"value: expected a string, got {body._show('value')}")
        return await self._send_command(body, lambda v: commands.set_variable(v, body.text("name"), value))

    async def _base_report(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        """GetBaseReport, then its NotifyReport pages: the variables reported, ``Component.Variable[instance]``
        -> the Actual value (or the attributes as reported where there is no Actual one)."""
        csms = self._builtin()
        if csms.ocpp_version != "2.0.1":
            raise ApiError(400, "GetBaseReport is OCPP 2.0.1 (the builtin CSMS speaks 1.6): use variables/get")
        body = self._command_body(req, "report", "request_id")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        report = body.choice("report", ("FullInventory", "ConfigurationInventory", "SummaryInventory"),
                             "FullInventory")
        request_id = self._optional_int(body, "request_id")
        answer, items = await _answer(cp_id, "GetBaseReport", csms.base_report(
            cp_id, report, request_id=request_id, timeout_s=timeout_s))
        variables = {}
        for item in items:
            attributes = item.get("variableAttribute", [])
            actual = next((a for a in attributes if a.get("type", "Actual") == "Actual"), None)
            variables[variable_name(item)] = actual.get("value") if actual is not None else attributes
        return 200, {"cp_id": cp_id, "action": "GetBaseReport", "response": answer, "variables": variables}

    # ---- firmware and diagnostics (builtin CSMS) -----------------------------------------------------

    def _files(self) -> tuple[SimulatedCsms, HttpFileServer]:
        csms = self._builtin()
        if csms.files is None:
            raise ApiError(404, "the builtin CSMS serves no files")
        return csms, csms.files

    async def _csms_files(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        _, files = self._files()

        def listing(where: Path) -> list[dict[str, Any]]:
            return [{"name": f.name, "bytes": f.stat().st_size} for f in sorted(where.iterdir()) if f.is_file()]
        return 200, {"dir": str(files.root), "offered": listing(files.root), "uploads": listing(files.uploads),
                     "url": files.url("")}

    async def _update_firmware(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms, files = self._files()
        body = Body(req.body)
        body.only("cp_id", "file", "location", "retrieve_in_s", "retries", "retry_interval_s", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        if body.has("file") == body.has("location"):
            raise ApiError(400, 'give "file" (one the CSMS offers: GET /csms/files) or "location" (a URL)')
        if body.has("file"):
            name = body.text("file")
            if "/" in name or not (files.root / name).is_file():
                raise ApiError(400, f"file: the CSMS offers no file {name!r} (put it in {files.root})")
            location = files.url(name)
        else:
            location = body.text("location")
        when = datetime.now(UTC) + timedelta(seconds=body.number("retrieve_in_s", 0.0, lo=0.0, hi=86400.0))
        retries = body.integer("retries", lo=0, hi=100) if body.has("retries") else None
        interval = body.integer("retry_interval_s", lo=0, hi=86400) if body.has("retry_interval_s") else None
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        response = await _answer(cp_id, "UpdateFirmware", csms.update_firmware(
            cp_id, location, when.isoformat(timespec="seconds").replace("+00:00", "Z"), retries=retries,
            retry_interval=interval, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "location": location, "response": response}

    async def _firmware_bundle(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        _, files = self._files()
        ab = SimSlots(self.t.state_dir) if self.t.state_dir is not None else None
        if ab is None or slots.active_slot(str(ab.root)) is None:
            raise ApiError(404, "the agent does not run out of A/B slots (start with --ab-slots)")
        body = Body(req.body)
        body.only("version", "name")
        version = body.text("version")
        name = body.text("name", f"evse-agent-{version}.bundle")
        if "/" in name or name.startswith("."):
            raise ApiError(400, f"name: a plain file name, got {name!r}")
        out = await asyncio.to_thread(ab.build, files.root / name, version)
        return 200, {"file": name, "bytes": out.stat().st_size, "location": files.url(name)}

    async def _get_diagnostics(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms, files = self._files()
        body = Body(req.body)
        body.only("cp_id", "location", "retries", "retry_interval_s", "start", "stop", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        location = body.text("location", files.url("uploads/"))
        retries = body.integer("retries", lo=0, hi=100) if body.has("retries") else None
        interval = body.integer("retry_interval_s", lo=0, hi=86400) if body.has("retry_interval_s") else None
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        response = await _answer(cp_id, "GetDiagnostics", csms.get_diagnostics(
            cp_id, location, retries=retries, retry_interval=interval,
            start_time=body.text("start") if body.has("start") else None,
            stop_time=body.text("stop") if body.has("stop") else None, timeout_s=timeout_s))
        name = response.get("fileName") if isinstance(response, dict) else None
        return 200, {"cp_id": cp_id, "location": location, "response": response,
                     "upload": str(files.uploads / name) if name and body.data.get("location") is None else None}

    async def _get_log(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms, files = self._files()
        body = Body(req.body)
        body.only("cp_id", "type", "request_id", "location", "retries", "retry_interval_s", "oldest", "latest",
                  "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        log_type = {"security": "SecurityLog", "diagnostics": "DiagnosticsLog"}[body.choice(
            "type", ("security", "diagnostics"))]
        self._log_requests += 1
        request_id = body.integer("request_id", self._log_requests, lo=0, hi=INT32_MAX)
        location = body.text("location", files.url("uploads/"))
        retries = body.integer("retries", lo=0, hi=100) if body.has("retries") else None
        interval = body.integer("retry_interval_s", lo=0, hi=86400) if body.has("retry_interval_s") else None
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        response = await _answer(cp_id, "GetLog", csms.get_log(
            cp_id, log_type, request_id, location, retries=retries, retry_interval=interval,
            oldest=body.text("oldest") if body.has("oldest") else None,
            latest=body.text("latest") if body.has("latest") else None, timeout_s=timeout_s))
        name = response.get("filename") if isinstance(response, dict) else None
        return 200, {"cp_id": cp_id, "request_id": request_id, "location": location, "response": response,
                     "upload": str(files.uploads / name) if name and body.data.get("location") is None else None}

    # ---- smart charging (builtin CSMS) ---------------------------------------------------------------

    async def _profile_set(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("cp_id", "connector", "purpose", "periods", "unit", "kind", "recurrency", "start", "duration_s",
                  "stack_level", "id", "transaction_id", "min_rate", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        connector = body.integer("connector", lo=0, hi=INT32_MAX)
        v201 = csms.ocpp_version == "2.0.1"
        purpose = purpose_in(csms.ocpp_version, body.choice("purpose", ANY_PURPOSE))
        kind = body.choice("kind", KINDS, "Absolute")
        recurrency = body.choice("recurrency", RECURRENCIES, "Daily") \
            if body.has("recurrency") or kind == "Recurring" else None
        start = None
        if body.has("start") or kind != "Relative":
            text = body.text("start", "now")
            try:
                start = parse_instant(text, datetime.now(UTC))
            except ValueError as exc:
                raise ApiError(400, f"start: {exc}") from None
        transaction_id: int | str | None = None
        if body.has("transaction_id"):
            transaction_id = body.text("transaction_id") if v201 else body.integer("transaction_id", lo=0,
                                                                                     hi=INT32_MAX)
        if transaction_id is None and purpose == "TxProfile":
            transaction_id = _open_transaction(csms, cp_id, connector)
        # the same profile either way; only its form and the message carrying it differ by version
        profile_id = body.integer("id", lo=0, hi=INT32_MAX) if body.has("id") else _next_profile_id(csms, cp_id)
        stack_level = body.integer("stack_level", 0, lo=0, hi=INT32_MAX)
        periods = _periods(body)
        fields: dict[str, Any] = {
            "unit": body.choice("unit", UNITS, "A"), "kind": kind, "recurrency": recurrency, "start": start,
            "duration_s": body.integer("duration_s", lo=0, hi=INT32_MAX) if body.has("duration_s") else None,
            "min_charging_rate": body.number("min_rate", lo=0.0, hi=1e9) if body.has("min_rate") else None}
        try:
            if v201:
                profile = charging_profile_201(profile_id, stack_level, purpose, periods, **fields,
                                               transaction_id=None if transaction_id is None else str(transaction_id))
            else:
                assert not isinstance(transaction_id, str)
                profile = charging_profile(profile_id, stack_level, purpose, periods, **fields,
                                           transaction_id=transaction_id)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if v201:
            payload = {"evseId": connector, "chargingProfile": profile}
            _check_request("SetChargingProfile", payload, version="2.0.1")
            sent = csms.set_charging_profile201(cp_id, connector, profile, timeout_s=timeout_s)
        else:
            payload = {"connectorId": connector, "csChargingProfiles": profile}
            _check_request("SetChargingProfile", payload)
            sent = csms.set_charging_profile(cp_id, connector, profile, timeout_s=timeout_s)
        response = await _answer(cp_id, "SetChargingProfile", sent)
        return 200, {"cp_id": cp_id, "action": "SetChargingProfile", "request": payload, "response": response}

    async def _profile_clear(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("cp_id", "id", "connector", "purpose", "stack_level", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        profile_id = body.integer("id", lo=0, hi=INT32_MAX) if body.has("id") else None
        connector = body.integer("connector", lo=0, hi=INT32_MAX) if body.has("connector") else None
        purpose = purpose_in(csms.ocpp_version, body.choice("purpose", ANY_PURPOSE)) if body.has("purpose") else None
        stack_level = body.integer("stack_level", lo=0, hi=INT32_MAX) if body.has("stack_level") else None
        if csms.ocpp_version == "2.0.1":
            criteria = {name: value for name, value in (("evseId", connector), ("chargingProfilePurpose", purpose),
                                                        ("stackLevel", stack_level)) if value is not None}
            payload: dict[str, Any] = {name: value for name, value in (
                ("chargingProfileId", profile_id), ("chargingProfileCriteria", criteria or None)) if value is not None}
            response = await _answer(cp_id, "ClearChargingProfile", csms.clear_charging_profile201(
                cp_id, profile_id=profile_id, evse_id=connector, purpose=purpose, stack_level=stack_level,
                timeout_s=timeout_s))
            return 200, {"cp_id": cp_id, "action": "ClearChargingProfile", "request": payload, "response": response}
        fields = (("id", profile_id), ("connectorId", connector), ("chargingProfilePurpose", purpose),
                  ("stackLevel", stack_level))
        payload = {name: value for name, value in fields if value is not None}
        response = await _answer(cp_id, "ClearChargingProfile", csms.clear_charging_profile(
            cp_id, profile_id=profile_id, connector_id=connector, purpose=purpose, stack_level=stack_level,
            timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": "ClearChargingProfile", "request": payload, "response": response}

    async def _composite_schedule(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        known = {"cp_id", "connector", "duration_s", "unit", "timeout_s"}
        unknown = sorted(set(req.query) - known)
        if unknown:
            raise ApiError(400, f"unknown query parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        connector = _query_int(req, "connector", None, 0, INT32_MAX)
        duration = _query_int(req, "duration_s", None, 0, INT32_MAX)
        if connector is None or duration is None:
            raise ApiError(400, "query connector and duration_s are required, e.g. ?connector=1&duration_s=3600")
        unit = _query_text(req, "unit")
        if unit is not None and unit not in UNITS:
            raise ApiError(400, f"query unit: expected one of {', '.join(UNITS)}, got {unit!r}")
        timeout_s = _query_number(req, "timeout_s", csms.response_timeout_s, 0.1, 600.0)
        v201 = csms.ocpp_version == "2.0.1"
        payload: dict[str, Any] = {"evseId" if v201 else "connectorId": connector, "duration": duration}
        if unit is not None:
            payload["chargingRateUnit"] = unit
        cp_id = _query_text(req, "cp_id") or self.t.charger.spec.charge_point_id
        response = await _answer(cp_id, "GetCompositeSchedule", (
            csms.get_composite_schedule201 if v201 else csms.get_composite_schedule)(
            cp_id, connector, duration, unit, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": "GetCompositeSchedule", "request": payload, "response": response}

    # ---- local authorization list (builtin CSMS) --------------------------------------------------------

    async def _local_list_send(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("cp_id", "version", "update_type", "entries", "generate", "prefix", "status", "chunk", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        version = body.integer("version", lo=0, hi=INT32_MAX)
        update_type = body.choice("update_type", local_list.UPDATE_TYPES, "Full")
        if body.has("entries") and body.has("generate"):
            raise ApiError(400, "give entries or generate, not both")
        entries: list[dict[str, Any]] | None
        if body.has("generate"):
            count = body.integer("generate", lo=0, hi=1_000_000)
            prefix = body.text("prefix", "LL")
            if len(prefix) > 12:
                raise ApiError(400, f"prefix: at most 12 characters (idTag is at most 20), got {len(prefix)}")
            status = body.choice("status", local_list.STATUSES, "Accepted")
            entries = [local_list.entry(f"{prefix}{i:08X}", status) for i in range(count)]
        else:
            if body.has("prefix") or body.has("status"):
                raise ApiError(400, "prefix and status go with generate")
            entries = _local_list_entries(body) if body.has("entries") else None
        chunk = body.integer("chunk", lo=1, hi=INT32_MAX) if body.has("chunk") else None
        if chunk is None:
            payload = local_list.request(version, update_type, entries)
            _check_request("SendLocalList", payload)
            response = await _answer(cp_id, "SendLocalList", csms.send_local_list(
                cp_id, version, update_type, entries, timeout_s=timeout_s))
            return 200, {"cp_id": cp_id, "action": "SendLocalList", "requests": [
                {"version": version, "update_type": update_type, "entries": len(entries or []),
                 "status": response.get("status")}], "response": response}
        if update_type != "Full":
            raise ApiError(400, "chunk: a list is cut into one Full update and Differential ones; "
                                "give update_type Full (or no chunk)")
        parts = local_list.chunked(entries or [], version, chunk)
        for part in parts[:1]:  # every part has the same shape: one check says whether the CP could take them
            _check_request("SendLocalList", part.payload())
        sent = await _answer(cp_id, "SendLocalList", csms.push_local_list(
            cp_id, entries or [], first_version=version, chunk=chunk, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": "SendLocalList", "requests": [
            {"version": v, "update_type": p.update_type, "entries": len(p.entries), "status": st}
            for (v, st), p in zip(sent, parts, strict=False)],
            "complete": len(sent) == len(parts) and all(st == "Accepted" for _, st in sent)}

    async def _local_list_version(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        unknown = sorted(set(req.query) - {"cp_id", "timeout_s"})
        if unknown:
            raise ApiError(400, f"unknown query parameter(s) {', '.join(unknown)} (known: cp_id, timeout_s)")
        cp_id = _query_text(req, "cp_id") or self.t.charger.spec.charge_point_id
        timeout_s = _query_number(req, "timeout_s", csms.response_timeout_s, 0.1, 600.0)
        response = await _answer(cp_id, "GetLocalListVersion", csms.get_local_list_version(cp_id, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": "GetLocalListVersion", "response": response}

    async def _csms_id_tags(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("id_tag", "status", "parent_id_tag")
        id_tag = body.text("id_tag")
        tags = csms.behaviour.id_tags
        try:
            if body.data.get("status", "Accepted") is None:
                tags.remove(id_tag)
                return 200, {"id_tag": id_tag, "status": None}
            status = body.text("status", "Accepted")
            parent = body.text("parent_id_tag") if body.has("parent_id_tag") else None
            tags.set(id_tag, status, parent_id_tag=parent)
        except BehaviourError as exc:
            raise ApiError(400, str(exc)) from None
        return 200, {"id_tag": id_tag, "status": status, "parent_id_tag": parent}

    async def _csms_transcript(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        n = _query_int(req, "n", 100, 1, 100_000)
        since = _query_int(req, "since", None, 0, 1 << 62)
        assert n is not None
        entries = csms.transcript.entries
        chosen = entries[since:since + n] if since is not None else entries[-n:]
        return 200, {"entries": [e.to_dict() for e in chosen], "next_seq": len(entries)}

    async def _reserve(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        """ReserveNow from the builtin CSMS; ``expiry_s`` from now (default 900 s)."""
        csms = self._builtin()
        body = Body(req.body)
        body.only("cp_id", "connector", "id_tag", "reservation_id", "expiry_s", "parent_id_tag", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        connector = body.integer("connector", 0, lo=0, hi=INT32_MAX)
        reservation_id = body.integer("reservation_id", lo=-INT32_MAX - 1, hi=INT32_MAX)
        id_tag = body.text("id_tag")
        parent = body.text("parent_id_tag") if body.has("parent_id_tag") else None
        expiry = datetime.now(UTC) + timedelta(seconds=body.number("expiry_s", 900.0, lo=-86400.0, hi=86400.0 * 30))
        expiry_text = expiry.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        payload = {"connectorId": connector, "expiryDate": expiry_text, "idTag": id_tag,
                   "reservationId": reservation_id, **({} if parent is None else {"parentIdTag": parent})}
        _check_request("ReserveNow", payload, " (id_tag: at most 20 characters)")
        response = await _answer(cp_id, "ReserveNow", csms.reserve_now(
            cp_id, connector, id_tag, reservation_id, expiry_text, parent_id_tag=parent, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": "ReserveNow", "request": payload, "response": response}

    async def _cancel_reservation(self, req: HttpRequest, params: dict[str, str]) -> tuple[int, Any]:
        csms = self._builtin()
        body = Body(req.body)
        body.only("cp_id", "reservation_id", "timeout_s")
        cp_id = body.text("cp_id", self.t.charger.spec.charge_point_id)
        timeout_s = body.number("timeout_s", csms.response_timeout_s, lo=0.1, hi=600.0)
        reservation_id = body.integer("reservation_id", lo=-INT32_MAX - 1, hi=INT32_MAX)
        payload = {"reservationId": reservation_id}
        response = await _answer(cp_id, "CancelReservation", csms.cancel_reservation(
            cp_id, reservation_id, timeout_s=timeout_s))
        return 200, {"cp_id": cp_id, "action": "CancelReservation", "request": payload, "response": response}
