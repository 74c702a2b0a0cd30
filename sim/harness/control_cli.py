"""``python -m sim ctl``: command-line client of the simulator's control API (stdlib ``urllib`` only).

Prints the API's JSON answer on stdout. Exit codes: 0 the API answered 2xx; 1 it answered 4xx/5xx (the
``error`` is also printed on stderr); 2 bad command line; 3 the control API cannot be reached.

Where the API is: ``--url``, else ``$EVSE_SIM_CONTROL_URL``, else ``<--state-dir>/control.json`` (written
by ``python -m sim up``), else http://127.0.0.1:8765.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sim.csms.charging_profiles import ANY_PURPOSE, KINDS, RECURRENCIES, UNITS  # stdlib only, like this client
from sim.csms.local_list import STATUSES

#: What TriggerMessage may ask for in OCPP 1.6 (MessageTrigger) or 2.0.1 (MessageTriggerEnumType); the control API
#: checks it against the version the builtin CSMS speaks.
TRIGGER_MESSAGES = ("BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "Heartbeat",
                    "MeterValues", "StatusNotification", "LogStatusNotification", "SignChargingStationCertificate",
                    "SignV2GCertificate", "TransactionEvent", "SignCombinedCertificate",
                    "PublishFirmwareStatusNotification")

DEFAULT_URL = "http://127.0.0.1:8765"
ENV_URL = "EVSE_SIM_CONTROL_URL"
EXIT_OK, EXIT_HTTP_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class Unreachable(Exception):
    pass


def control_url(url: str | None, state_dir: str | None) -> str:
    if url:
        return url.rstrip("/")
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL].rstrip("/")
    if state_dir:
        path = Path(state_dir) / "control.json"
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["url"]).rstrip("/")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Unreachable(f"cannot read the control address from {path}: {exc}") from None
    return DEFAULT_URL


def request(base: str, method: str, path: str, body: dict[str, Any] | None = None,
            timeout_s: float = 30.0) -> tuple[int, Any]:
    """One API call: (HTTP status, decoded JSON answer). Raises :class:`Unreachable`."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"control API at {base} not reachable: {reason}") from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, {"error": "answer is not JSON", "body": raw.decode("utf-8", "replace")[:500]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim ctl", description="drive a running simulator (python -m sim up)")
    p.add_argument("--url", help=f"control API base URL (default: ${ENV_URL}, --state-dir, or {DEFAULT_URL})")
    p.add_argument("--state-dir", help="read the control address from <state-dir>/control.json")
    p.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout in seconds")
    p.add_argument("--compact", action="store_true", help="one-line JSON output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("state", help="GET /state")
    for name in ("plug", "unplug"):
        c = sub.add_parser(name, help=f"POST /connectors/N/{name}")
        c.add_argument("connector", type=int)
    ev = sub.add_parser("ev", help="POST /connectors/N/ev: change the EV")
    ev.add_argument("connector", type=int)
    ev.add_argument("--max-current", type=float, help="the EV's own maximum current (A)")
    pause = ev.add_mutually_exclusive_group()
    pause.add_argument("--paused", dest="paused", action="store_true", default=None, help="EV pauses (C -> B)")
    pause.add_argument("--resumed", dest="paused", action="store_false", help="EV resumes")
    ev.add_argument("--ventilation", action=argparse.BooleanOptionalAction, default=None,
                    help="EV requests ventilation (state D)")
    tap = sub.add_parser("tap", help="POST /rfid/tap: present a card, then remove it")
    tap.add_argument("uid", help="card UID in hex (PN532: 4/7/10 bytes; RDM6300: 10 hex digits)")
    tap.add_argument("--reader", type=int, default=1)
    tap.add_argument("--hold", type=float, default=1.0, help="seconds the card stays on the reader")
    fault = sub.add_parser("fault", help="POST /faults: inject (or --clear) a fault")
    fault.add_argument("device", choices=("pilot", "board", "meter", "rfid"))
    fault.add_argument("kind", help="e.g. rcd_trip, lock_stuck, silent, line_silent, garbage, truncate, noise")
    fault.add_argument("--connector", type=int)
    fault.add_argument("--clear", action="store_true", help="clear the fault instead")
    fault.add_argument("--count", type=int, help="garbage: bytes; truncate: chunks")
    fault.add_argument("--probability", type=float, help="noise: per-byte bit-flip probability")
    fault.add_argument("--direction", choices=("to_host", "to_device", "both"))
    sub.add_parser("power-cut", help="POST /agent/power-cut: SIGKILL the agent")
    sub.add_parser("power-on", help="POST /agent/power-on")
    lg = sub.add_parser("log", help="GET /agent/log")
    lg.add_argument("-n", type=int, default=100)
    lg.add_argument("--since", type=int)
    call = sub.add_parser("csms-call", help="POST /csms/call (builtin CSMS): send a command to the charger")
    call.add_argument("action", help="OCPP 1.6 action, e.g. RemoteStartTransaction")
    call.add_argument("payload", nargs="?", default="{}", help="JSON object (default {})")
    call.add_argument("--cp-id", help="charge point identity (default: the simulated charger)")
    call.add_argument("--call-timeout", type=float, help="seconds to wait for the charge point's answer")
    call.add_argument("--no-validate", action="store_true", help="send even if the payload breaks the schema")
    online = sub.add_parser("csms-online", help="POST /csms/online: builtin CSMS accepts connections again")
    online.set_defaults(online=True)
    offline = sub.add_parser("csms-offline", help="POST /csms/online: builtin CSMS drops every connection")
    offline.add_argument("--abort", action="store_true", help="TCP abort, no close frame")
    offline.set_defaults(online=False)
    tags = sub.add_parser("csms-id-tag", help="POST /csms/id-tags: how the builtin CSMS answers an idTag")
    tags.add_argument("id_tag")
    tags.add_argument("status", help="Accepted, Blocked, Expired, Invalid, ConcurrentTx, or 'remove'")
    tr = sub.add_parser("transcript", help="GET /csms/transcript (builtin CSMS)")
    tr.add_argument("-n", type=int, default=100)
    tr.add_argument("--since", type=int)
    trig = sub.add_parser("trigger", help="POST /csms/trigger (builtin CSMS): TriggerMessage")
    trig.add_argument("message", choices=TRIGGER_MESSAGES)
    trig.add_argument("--connector", type=int, metavar="N",
                      help="StatusNotification / MeterValues: this connector (0: the charger; default: 0 and all); "
                           "2.0.1: EVSE N, or connector N of --evse")
    trig.add_argument("--evse", type=int, metavar="N", help="2.0.1: this EVSE")
    _call_options(trig)
    _command_parsers(sub)
    _profile_parser(sub.add_parser("profile", help="smart charging profiles (builtin CSMS): set, clear, composite"))
    _local_list_parser(sub.add_parser("local-list", help="the charger's local authorization list (builtin CSMS): "
                                                         "send, version"))
    fw = sub.add_parser("firmware", help="firmware updates (builtin CSMS): files offered, UpdateFirmware")
    fw_sub = fw.add_subparsers(dest="firmware_command", required=True, metavar="ACTION")
    fw_sub.add_parser("files", help="GET /csms/files: what the CSMS offers, the uploads it received")
    bld = fw_sub.add_parser("build", help="POST /csms/firmware-bundle: a bundle of this checkout (with --ab-slots)")
    bld.add_argument("version")
    bld.add_argument("--name", help="file name among the CSMS's files (default evse-agent-VERSION.bundle)")
    upd = fw_sub.add_parser("update", help="POST /csms/update-firmware: UpdateFirmware")
    what = upd.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", help="a file the CSMS offers (in <state-dir>/csms-files)")
    what.add_argument("--location", help="any URL (http, https, ftp, ftps)")
    upd.add_argument("--retrieve-in", type=float, metavar="S", help="retrieveDate: seconds from now (default 0)")
    upd.add_argument("--retries", type=int)
    upd.add_argument("--retry-interval", type=int, metavar="S")
    diag = sub.add_parser("diagnostics", help="POST /csms/get-diagnostics: GetDiagnostics (builtin CSMS)")
    diag.add_argument("--location", help="upload URL (default: the CSMS's own upload place)")
    diag.add_argument("--retries", type=int)
    diag.add_argument("--retry-interval", type=int, metavar="S")
    diag.add_argument("--start", metavar="WHEN", help="startTime (RFC 3339), e.g. 2026-12-06T07:00:00Z")
    diag.add_argument("--stop", metavar="WHEN", help="stopTime (RFC 3339)")
    getlog = sub.add_parser("get-log", help="POST /csms/get-log: GetLog (builtin CSMS; 1.6 security whitepaper)")
    getlog.add_argument("type", choices=("security", "diagnostics"), help="SecurityLog or DiagnosticsLog")
    getlog.add_argument("--location", help="upload URL (default: the CSMS's own upload place)")
    getlog.add_argument("--request-id", type=int, metavar="N", help="requestId (default: 1, 2, ... per API)")
    getlog.add_argument("--retries", type=int)
    getlog.add_argument("--retry-interval", type=int, metavar="S")
    getlog.add_argument("--oldest", metavar="WHEN", help="oldestTimestamp (RFC 3339)")
    getlog.add_argument("--latest", metavar="WHEN", help="latestTimestamp (RFC 3339)")
    rv = sub.add_parser("reserve", help="POST /csms/reservations: ReserveNow (builtin CSMS)")
    rv.add_argument("id_tag")
    rv.add_argument("--connector", type=int, default=0, help="connector to reserve (default 0: any connector)")
    rv.add_argument("--id", type=int, default=1, dest="reservation_id", help="reservationId (default 1)")
    rv.add_argument("--expiry", type=float, default=900.0, metavar="S", help="expires in S seconds (default 900)")
    rv.add_argument("--parent", metavar="ID_TAG", help="parentIdTag: any id of this group may use it")
    cr = sub.add_parser("cancel-reservation", help="POST /csms/reservations/cancel: CancelReservation")
    cr.add_argument("reservation_id", type=int)
    for c in (rv, cr):
        c.add_argument("--cp-id", help="charge point identity (default: the simulated charger)")
        c.add_argument("--call-timeout", type=float, help="seconds to wait for the charge point's answer")
    return p


def _call_options(c: argparse.ArgumentParser) -> None:
    c.add_argument("--cp-id", metavar="ID", help="charge point identity (default: the simulated charger)")
    c.add_argument("--call-timeout", type=float, metavar="S", help="seconds to wait for the charge point's answer")


def _command_parsers(sub: Any) -> None:
    """The operator's commands of the builtin CSMS: the same verbs in 1.6 and 2.0.1 (the control API sends the
    version's message, docs/sim-api.md)."""
    rs = sub.add_parser("remote-start", help="POST /csms/remote-start: RemoteStartTransaction / 2.0.1 "
                                             "RequestStartTransaction")
    rs.add_argument("id_tag")
    rs.add_argument("--connector", type=int, metavar="N", help="this connector (2.0.1: EVSE N)")
    rs.add_argument("--token-type", metavar="TYPE", help="2.0.1 IdTokenType (default ISO14443)")
    rs.add_argument("--remote-start-id", type=int, metavar="N", help="2.0.1 remoteStartId (default: 1, 2, ...)")
    stop = sub.add_parser("remote-stop", help="POST /csms/remote-stop: RemoteStopTransaction / 2.0.1 "
                                              "RequestStopTransaction")
    stop.add_argument("--transaction-id", metavar="ID", help="(default: the open transaction of --connector)")
    stop.add_argument("--connector", type=int, metavar="N", help="the connector whose transaction (default 1)")
    rst = sub.add_parser("reset", help="POST /csms/reset: Reset")
    rst.add_argument("type", nargs="?", help="1.6: Soft (default) or Hard; 2.0.1: Immediate (default) or OnIdle")
    rst.add_argument("--evse", type=int, metavar="N", help="2.0.1: reset this EVSE only")
    av = sub.add_parser("availability", help="POST /csms/availability: ChangeAvailability")
    av.add_argument("status", choices=("operative", "inoperative"))
    av.add_argument("--connector", type=int, metavar="N", help="this connector (default: all); 2.0.1: EVSE N, or "
                                                               "connector N of --evse")
    av.add_argument("--evse", type=int, metavar="N", help="2.0.1: this EVSE")
    un = sub.add_parser("unlock", help="POST /csms/unlock: UnlockConnector")
    un.add_argument("--connector", type=int, metavar="N", default=1, help="(default 1; 2.0.1: EVSE N, or "
                                                                          "connector N of --evse)")
    un.add_argument("--evse", type=int, metavar="N", help="2.0.1: this EVSE")
    cc = sub.add_parser("clear-cache", help="POST /csms/clear-cache: ClearCache")
    gv = sub.add_parser("get-variables", help="POST /csms/variables/get: GetConfiguration / 2.0.1 GetVariables")
    gv.add_argument("names", nargs="*", help="1.6 keys (none: all) or 2.0.1 Component.Variable[instance]")
    sv = sub.add_parser("set-variable", help="POST /csms/variables/set: ChangeConfiguration / 2.0.1 SetVariables")
    sv.add_argument("name", help="1.6 key or 2.0.1 Component.Variable[instance]")
    sv.add_argument("value")
    br = sub.add_parser("base-report", help="POST /csms/base-report: 2.0.1 GetBaseReport and its NotifyReport pages")
    br.add_argument("report", nargs="?", choices=("FullInventory", "ConfigurationInventory", "SummaryInventory"))
    br.add_argument("--request-id", type=int, metavar="N")
    for c in (rs, stop, rst, av, un, cc, gv, sv, br):
        _call_options(c)


def _command_call(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None] | None:
    """The request of one of :func:`_command_parsers`' verbs, or None for another command."""
    cmd = args.command
    if cmd == "remote-start":
        path, body = "/csms/remote-start", {"id_tag": args.id_tag, "connector": args.connector,
                                            "token_type": args.token_type, "remote_start_id": args.remote_start_id}
    elif cmd == "remote-stop":
        text: str | None = args.transaction_id
        tx_id = int(text) if text is not None and text.isdigit() else text  # 1.6 ids are integers (2.0.1: text)
        path, body = "/csms/remote-stop", {"transaction_id": tx_id, "connector": args.connector}
    elif cmd == "reset":
        path, body = "/csms/reset", {"type": args.type, "evse": args.evse}
    elif cmd == "availability":
        path, body = "/csms/availability", {"operative": args.status == "operative", "connector": args.connector,
                                            "evse": args.evse}
    elif cmd == "unlock":
        path, body = "/csms/unlock", {"connector": args.connector, "evse": args.evse}
    elif cmd == "clear-cache":
        path, body = "/csms/clear-cache", {}
    elif cmd == "get-variables":
        path, body = "/csms/variables/get", {"names": args.names}
    elif cmd == "set-variable":
        path, body = "/csms/variables/set", {"name": args.name, "value": args.value}
    elif cmd == "base-report":
        path, body = "/csms/base-report", {"report": args.report, "request_id": args.request_id}
    else:
        return None
    body.update(cp_id=args.cp_id, timeout_s=args.call_timeout)
    return "POST", path, {k: v for k, v in body.items() if v is not None}


def _local_list_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="local_list_command", required=True, metavar="ACTION")

    def common(c: argparse.ArgumentParser) -> None:
        c.add_argument("--cp-id", metavar="ID", help="charge point identity (default: the simulated charger)")
        c.add_argument("--call-timeout", type=float, metavar="S", help="seconds to wait for the charge point's answer")

    send = sub.add_parser("send", help="POST /csms/local-list: SendLocalList")
    send.add_argument("--version", type=int, required=True, metavar="N",
                      help="listVersion (with --chunk: the first request's; each next one is one higher)")
    send.add_argument("--differential", action="store_true", help="a Differential update (default: Full)")
    send.add_argument("--entry", dest="entries", action="append", metavar="ID[:STATUS[:PARENT]]",
                      help=f"an id and its idTagInfo (STATUS one of {', '.join(STATUSES)}; default Accepted); "
                           "repeat")
    send.add_argument("--remove", dest="removals", action="append", metavar="ID",
                      help="an id without idTagInfo: a Differential update removes it; repeat")
    send.add_argument("--generate", type=int, metavar="COUNT",
                      help="COUNT generated ids <PREFIX><8 hex digits>, instead of --entry")
    send.add_argument("--prefix", metavar="P", help="--generate: the ids' prefix (default LL)")
    send.add_argument("--status", choices=STATUSES, help="--generate: their status (default Accepted)")
    send.add_argument("--chunk", type=int, metavar="N",
                      help="send at most N ids per request: one Full update, then Differential ones")
    send.add_argument("--empty", action="store_true",
                      help="send the list as an empty array (default without entries: the list is omitted)")
    common(send)
    common(sub.add_parser("version", help="GET /csms/local-list/version: GetLocalListVersion"))


def parse_list_entry(text: str) -> dict[str, str]:
    """``ID[:STATUS[:PARENT]]`` -> an entry of POST /csms/local-list; ValueError with the reason."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"--entry {text!r}: expected ID, ID:STATUS or ID:STATUS:PARENT, e.g. 04A2B3C4:Blocked")
    status = parts[1] if len(parts) > 1 and parts[1] else "Accepted"
    if status not in STATUSES:
        raise ValueError(f"--entry {text!r}: status must be one of {', '.join(STATUSES)}")
    out = {"id_tag": parts[0], "status": status}
    if len(parts) == 3 and parts[2]:
        out["parent_id_tag"] = parts[2]
    return out


def _local_list_call(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    options = {"cp_id": args.cp_id, "timeout_s": args.call_timeout}
    if args.local_list_command == "version":
        query = urllib.parse.urlencode({k: v for k, v in options.items() if v is not None})
        return "GET", "/csms/local-list/version" + ("?" + query if query else ""), None
    if args.generate is not None and (args.entries or args.removals or args.empty):
        raise ValueError("local-list send: --generate replaces --entry/--remove/--empty")
    if (args.prefix is not None or args.status is not None) and args.generate is None:
        raise ValueError("local-list send: --prefix and --status go with --generate")
    body: dict[str, Any] = {"version": args.version, "update_type": "Differential" if args.differential else "Full",
                            "chunk": args.chunk}
    if args.generate is not None:
        body.update(generate=args.generate, prefix=args.prefix, status=args.status)
    elif args.entries or args.removals or args.empty:
        body["entries"] = [parse_list_entry(e) for e in args.entries or []] + [
            {"id_tag": r} for r in args.removals or []]
    return "POST", "/csms/local-list", {k: v for k, v in {**body, **options}.items() if v is not None}


def _profile_parser(profile: argparse.ArgumentParser) -> None:
    sub = profile.add_subparsers(dest="profile_command", required=True, metavar="ACTION")

    def common(c: argparse.ArgumentParser) -> None:
        c.add_argument("--cp-id", metavar="ID", help="charge point identity (default: the simulated charger)")
        c.add_argument("--call-timeout", type=float, metavar="S", help="seconds to wait for the charge point's answer")

    st = sub.add_parser("set", help="POST /csms/charging-profiles: SetChargingProfile")
    st.add_argument("--connector", type=int, required=True, metavar="N", help="0: the whole charger (every connector)")
    st.add_argument("--purpose", required=True, choices=ANY_PURPOSE,
                    help="the charger maximum by either name (1.6 ChargePointMaxProfile, "
                         "2.0.1 ChargingStationMaxProfile)")
    st.add_argument("--period", dest="periods", action="append", required=True, metavar="START:LIMIT[:PHASES]",
                    help="seconds into the schedule : limit in the unit (repeat; the first START is 0), "
                         "e.g. --period 0:16 --period 60:10")
    st.add_argument("--unit", choices=UNITS, help="A per phase (default) or W in total")
    st.add_argument("--kind", choices=KINDS, help="default Absolute")
    st.add_argument("--recurrency", choices=RECURRENCIES, help="Recurring only (default Daily)")
    st.add_argument("--start", metavar="WHEN",
                    help="startSchedule: now (default; not for Relative), +SECONDS or ISO 8601 with offset")
    st.add_argument("--duration", type=int, metavar="S", help="seconds (default: none, the last period runs on)")
    st.add_argument("--stack-level", type=int, metavar="N", help="default 0")
    st.add_argument("--id", type=int, metavar="N", help="chargingProfileId (default: one above every id sent so far)")
    st.add_argument("--transaction", metavar="ID",
                    help="TxProfile: transactionId (1.6: a number; 2.0.1: the station's id; default: the transaction "
                         "open on that connector)")
    st.add_argument("--min-rate", type=float, metavar="R", help="minChargingRate, in the unit")
    common(st)
    cl = sub.add_parser("clear", help="POST /csms/charging-profiles/clear: ClearChargingProfile (no option: all)")
    cl.add_argument("--id", type=int, metavar="N", help="only this profile (the other criteria then do not count)")
    cl.add_argument("--connector", type=int, metavar="N")
    cl.add_argument("--purpose", choices=ANY_PURPOSE)
    cl.add_argument("--stack-level", type=int, metavar="N")
    common(cl)
    co = sub.add_parser("composite", help="GET /csms/composite-schedule: GetCompositeSchedule")
    co.add_argument("--connector", type=int, required=True, metavar="N", help="0: the whole charger's expected draw")
    co.add_argument("--duration", type=int, required=True, metavar="S", help="seconds from now")
    co.add_argument("--unit", choices=UNITS, help="default: the charge point's choice")
    common(co)


def parse_period(text: str) -> list[int | float]:
    """``START:LIMIT[:PHASES]`` -> ``[start, limit(, phases)]``; ValueError with the reason."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        out: list[int | float] = [int(parts[0]), float(parts[1])]
        if len(parts) == 3:
            out.append(int(parts[2]))
    except ValueError:
        raise ValueError(f"--period {text!r}: expected START:LIMIT or START:LIMIT:PHASES, "
                         "e.g. 0:16 or 3600:7.5:1 (whole seconds, a limit, whole phases)") from None
    return out


def _transaction_id(text: str | None) -> int | str | None:
    """1.6's transaction ids are numbers, 2.0.1's the station's own text (a UUID)."""
    return int(text) if text is not None and text.isdigit() else text


def _profile_call(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    options = {"cp_id": args.cp_id, "timeout_s": args.call_timeout}
    if args.profile_command == "composite":
        query = urllib.parse.urlencode({k: v for k, v in (
            ("connector", args.connector), ("duration_s", args.duration), ("unit", args.unit),
            *options.items()) if v is not None})
        return "GET", "/csms/composite-schedule?" + query, None
    if args.profile_command == "clear":
        body = {"id": args.id, "connector": args.connector, "purpose": args.purpose, "stack_level": args.stack_level}
        return "POST", "/csms/charging-profiles/clear", {k: v for k, v in {**body, **options}.items() if v is not None}
    body = {"connector": args.connector, "purpose": args.purpose, "periods": [parse_period(p) for p in args.periods],
            "unit": args.unit, "kind": args.kind, "recurrency": args.recurrency, "start": args.start,
            "duration_s": args.duration, "stack_level": args.stack_level, "id": args.id,
            "transaction_id": _transaction_id(args.transaction), "min_rate": args.min_rate}
    return "POST", "/csms/charging-profiles", {k: v for k, v in {**body, **options}.items() if v is not None}


def _query(**params: int | None) -> str:
    pairs = [f"{k}={v}" for k, v in params.items() if v is not None]
    return "?" + "&".join(pairs) if pairs else ""


def build_call(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, body) for a parsed command line; ValueError for a bad argument."""
    cmd = args.command
    if cmd == "state":
        return "GET", "/state", None
    if cmd in ("plug", "unplug"):
        return "POST", f"/connectors/{args.connector}/{cmd}", {}
    if cmd == "ev":
        body: dict[str, Any] = {}
        if args.max_current is not None:
            body["max_current_a"] = args.max_current
        if args.paused is not None:
            body["paused"] = args.paused
        if args.ventilation is not None:
            body["ventilation"] = args.ventilation
        if not body:
            raise ValueError("ev: give --max-current, --paused/--resumed and/or --ventilation")
        return "POST", f"/connectors/{args.connector}/ev", body
    if cmd == "tap":
        return "POST", "/rfid/tap", {"uid": args.uid, "reader": args.reader, "hold_s": args.hold}
    if cmd == "fault":
        body = {"device": args.device, "kind": args.kind, "active": not args.clear}
        for key, value in (("connector", args.connector), ("count", args.count),
                           ("probability", args.probability), ("direction", args.direction)):
            if value is not None:
                body[key] = value
        return "POST", "/faults", body
    if cmd in ("power-cut", "power-on"):
        return "POST", f"/agent/{cmd}", {}
    if cmd == "log":
        return "GET", "/agent/log" + _query(n=args.n, since=args.since), None
    if cmd == "csms-call":
        try:
            payload = json.loads(args.payload)
        except ValueError as exc:
            raise ValueError(f"payload is not JSON: {exc}") from None
        body = {"action": args.action, "payload": payload}
        if args.cp_id is not None:
            body["cp_id"] = args.cp_id
        if args.call_timeout is not None:
            body["timeout_s"] = args.call_timeout
        if args.no_validate:
            body["validate"] = False
        return "POST", "/csms/call", body
    if cmd in ("csms-online", "csms-offline"):
        body = {"online": args.online}
        if not args.online:
            body["abort"] = args.abort
        return "POST", "/csms/online", body
    if cmd == "csms-id-tag":
        return "POST", "/csms/id-tags", {"id_tag": args.id_tag,
                                         "status": None if args.status == "remove" else args.status}
    if cmd == "transcript":
        return "GET", "/csms/transcript" + _query(n=args.n, since=args.since), None
    if (command := _command_call(args)) is not None:
        return command
    if cmd == "trigger":
        body = {"message": args.message, "connector": args.connector, "evse": args.evse, "cp_id": args.cp_id,
                "timeout_s": args.call_timeout}
        return "POST", "/csms/trigger", {k: v for k, v in body.items() if v is not None}
    if cmd == "profile":
        return _profile_call(args)
    if cmd == "local-list":
        return _local_list_call(args)
    if cmd == "firmware" and args.firmware_command == "files":
        return "GET", "/csms/files", None
    if cmd == "firmware" and args.firmware_command == "build":
        return "POST", "/csms/firmware-bundle", {k: v for k, v in {"version": args.version, "name": args.name}.items()
                                                  if v is not None}
    if cmd == "firmware":
        body = {"file": args.file, "location": args.location, "retrieve_in_s": args.retrieve_in,
                "retries": args.retries, "retry_interval_s": args.retry_interval}
        return "POST", "/csms/update-firmware", {k: v for k, v in body.items() if v is not None}
    if cmd == "diagnostics":
        body = {"location": args.location, "retries": args.retries, "retry_interval_s": args.retry_interval,
                "start": args.start, "stop": args.stop}
        return "POST", "/csms/get-diagnostics", {k: v for k, v in body.items() if v is not None}
    if cmd == "get-log":
        body = {"type": args.type, "location": args.location, "request_id": args.request_id, "retries": args.retries,
                "retry_interval_s": args.retry_interval, "oldest": args.oldest, "latest": args.latest}
        return "POST", "/csms/get-log", {k: v for k, v in body.items() if v is not None}
    if cmd in ("reserve", "cancel-reservation"):
        body = {"reservation_id": args.reservation_id, "cp_id": args.cp_id, "timeout_s": args.call_timeout}
        if cmd == "cancel-reservation":
            return "POST", "/csms/reservations/cancel", {k: v for k, v in body.items() if v is not None}
        body.update(connector=args.connector, id_tag=args.id_tag, expiry_s=args.expiry, parent_id_tag=args.parent)
        return "POST", "/csms/reservations", {k: v for k, v in body.items() if v is not None}
    raise ValueError(f"unknown command {cmd!r}")  # pragma: no cover - argparse knows the commands


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        method, path, body = build_call(args)
    except ValueError as exc:
        print(f"python -m sim ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        base = control_url(args.url, args.state_dir)
        status, answer = request(base, method, path, body, timeout_s=args.timeout)
    except Unreachable as exc:
        print(f"python -m sim ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(answer, indent=None if args.compact else 2, ensure_ascii=False))
    if status >= 400:
        reason = answer.get("error") if isinstance(answer, dict) else None
        print(f"python -m sim ctl: HTTP {status}: {reason or 'error'}", file=sys.stderr)
        return EXIT_HTTP_ERROR
    return EXIT_OK

