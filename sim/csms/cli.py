"""``python -m sim csms``: run the simulated CSMS on its own, for CSMS developers and CI.

Scripted by options and/or a TOML file (``--config``); observable through the transcript file
(``--transcript``) and JSON log lines on stderr. With ``--stdin-commands`` it also reads one JSON command
per line on stdin and writes one JSON answer per line on stdout, so a CI job can drive charge points
through it (layout in docs/sim-csms.md). Stdout always starts with ``{"event": "listening", "url": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO

from firmware.logs import setup_logging
from sim.csms.behaviour import BehaviourError, ChargePointProfile, CsmsBehaviour
from sim.csms.server import CallErrorReceived, CsmsError, SimulatedCsms, server_tls_context

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # same meaning as the agent's: fix the file, do not restart


def add_csms_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m sim csms`` (also usable on a subparser of ``python -m sim``)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port (see stdout)")
    parser.add_argument("--base-path", default="/ocpp", help="charge points connect to <base-path>/<id>")
    parser.add_argument("--config", type=Path, help="TOML behaviour file (charge points, idTags, faults)")
    parser.add_argument("--transcript", type=Path, help="append every frame/event as JSON lines here")
    parser.add_argument("--boot-status", nargs="+", metavar="STATUS",
                        help="BootNotification answers in order, e.g. Pending Accepted (last one repeats)")
    parser.add_argument("--heartbeat-interval", type=int, help="interval sent with Accepted (s)")
    parser.add_argument("--boot-retry-interval", type=int, help="interval sent with Pending/Rejected (s)")
    for status, flag in (("Accepted", "accept"), ("Blocked", "block"), ("Expired", "expire"),
                         ("Invalid", "invalid"), ("ConcurrentTx", "concurrent")):
        parser.add_argument(f"--{flag}", nargs="+", action="extend", default=[], metavar="ID",
                            help=f"idTags answered {status}")
    parser.add_argument("--unknown-id-status", help="answer for idTags in no list (default Invalid)")
    parser.add_argument("--known-only", action="store_true",
                        help="refuse (HTTP 404) charge points that have no [charge_points.<id>] table")
    parser.add_argument("--reject-before-accepted", action="store_true",
                        help="answer SecurityError to CALLs before the charge point is Accepted")
    parser.add_argument("--response-timeout", type=float, default=10.0, help="for commands we send (s)")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE",
                        help="serve wss:// with this certificate (PEM; with --tls-key): security profiles 2 and 3")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the TLS certificate's private key (PEM)")
    parser.add_argument("--client-ca", type=Path, metavar="FILE",
                        help="with --tls-cert: require a client certificate issued by this CA (profile 3)")
    parser.add_argument("--stdin-commands", action="store_true",
                        help="read JSON commands from stdin, answer on stdout")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def behaviour_from_args(args: argparse.Namespace) -> CsmsBehaviour:
    """The TOML file first, then command-line options on top. Raises BehaviourError/OSError/TOMLDecodeError."""
    if args.config is not None:
        with args.config.open("rb") as f:
            behaviour = CsmsBehaviour.from_mapping(tomllib.load(f))
    else:
        behaviour = CsmsBehaviour()
    p = behaviour.default_profile
    if args.boot_status or args.heartbeat_interval is not None or args.boot_retry_interval is not None:
        statuses = [s for item in (args.boot_status or []) for s in item.split(",") if s]
        behaviour.default_profile = ChargePointProfile(
            boot_statuses=statuses or p.boot_statuses,
            heartbeat_interval=p.heartbeat_interval if args.heartbeat_interval is None else args.heartbeat_interval,
            boot_retry_interval=p.boot_retry_interval if args.boot_retry_interval is None
            else args.boot_retry_interval,
            password=p.password)
    tags = behaviour.id_tags
    tags.accept(*args.accept)
    tags.block(*args.block)
    tags.expire(*args.expire)
    tags.invalidate(*args.invalid)
    tags.concurrent(*args.concurrent)
    if args.unknown_id_status is not None:
        tags.default_status = args.unknown_id_status
    behaviour.known_charge_points_only |= args.known_only
    behaviour.reject_calls_before_accepted |= args.reject_before_accepted
    return behaviour


async def run_csms(args: argparse.Namespace, stop: asyncio.Event | None = None,
                   out: TextIO | None = None) -> int:
    """Run until SIGINT/SIGTERM (or ``stop`` is set). Returns the process exit code."""
    out = out or sys.stdout
    try:
        behaviour = behaviour_from_args(args)
    except (BehaviourError, OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        print(f"csms configuration error: {args.config or 'command line'}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if (args.tls_cert is None) != (args.tls_key is None) or (args.client_ca is not None and args.tls_cert is None):
        print("csms configuration error: --tls-cert and --tls-key go together; --client-ca needs them",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        tls = server_tls_context(args.tls_cert, args.tls_key, client_ca=args.client_ca) \
            if args.tls_cert is not None else None
    except (OSError, ssl.SSLError) as exc:
        print(f"csms configuration error: TLS: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    csms = SimulatedCsms(args.host, args.port, base_path=args.base_path, behaviour=behaviour,
                         transcript_path=args.transcript, response_timeout_s=args.response_timeout,
                         ssl_context=tls)
    try:
        await csms.start()
    except OSError as exc:
        log.error("cannot listen", extra={"host": args.host, "port": args.port, "error": str(exc)})
        return EXIT_FAILURE
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    _emit(out, {"event": "listening", "url": csms.url})
    commands = asyncio.create_task(_stdin_commands(csms, out)) if args.stdin_commands else None
    try:
        await stop.wait()
    finally:
        if commands is not None:
            commands.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commands
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await csms.stop()
    return EXIT_OK


async def serve_csms_cli(argv: list[str]) -> int:
    """Entry point for ``python -m sim csms ARGS``: parse ``argv`` (without "csms"), run, return exit code."""
    parser = argparse.ArgumentParser(prog="python -m sim csms", description="simulated OCPP 1.6J CSMS")
    add_csms_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error; argparse has printed why
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    setup_logging(args.log_level)
    return await run_csms(args)


# ---- stdin command channel ---------------------------------------------------------------------------

async def _stdin_commands(csms: SimulatedCsms, out: TextIO) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError) as exc:
        log.error("--stdin-commands: stdin is not a pipe or terminal", extra={"error": str(exc)})
        return
    while line := await reader.readline():
        text = line.decode("utf-8", "replace").strip()
        if text:
            _emit(out, await execute_command(csms, text))


async def execute_command(csms: SimulatedCsms, text: str) -> dict[str, Any]:
    """Run one JSON command line; always returns a JSON-able answer (errors included, never raised).

    ``{"cp_id": "CP-1", "action": "Reset", "payload": {"type": "Soft"}}`` sends a CALL;
    ``{"online": false, "abort": false}`` takes the CSMS offline/online;
    ``{"disconnect": "CP-1"}`` drops one connection.
    """
    try:
        cmd = json.loads(text)
    except ValueError as exc:
        return {"error": f"not JSON: {exc}"}
    if not isinstance(cmd, dict):
        return {"error": "expected a JSON object"}
    try:
        if "online" in cmd:
            await csms.set_online(bool(cmd["online"]), abort=bool(cmd.get("abort", False)))
            return {"online": csms.online}
        if "disconnect" in cmd:
            await csms.disconnect(str(cmd["disconnect"]))
            return {"disconnected": cmd["disconnect"]}
        cp_id, action = str(cmd["cp_id"]), str(cmd["action"])
        payload = cmd.get("payload", {})
        if not isinstance(payload, dict):
            return {"error": "payload must be a JSON object"}
        response = await csms.call(cp_id, action, payload, validate=bool(cmd.get("validate", True)))
        return {"cp_id": cp_id, "action": action, "response": response}
    except CallErrorReceived as exc:
        return {"cp_id": cmd.get("cp_id"), "action": cmd.get("action"),
                "call_error": {"code": exc.code, "description": exc.description, "details": exc.details}}
    except KeyError as exc:
        return {"error": f"missing key {exc}"}
    except (CsmsError, TimeoutError) as exc:
        return {"cp_id": cmd.get("cp_id"), "action": cmd.get("action"), "error": str(exc)}


def _emit(out: TextIO, obj: dict[str, Any]) -> None:
    out.write(json.dumps(obj, default=str) + "\n")
    out.flush()


def main(argv: list[str]) -> int:
    return asyncio.run(serve_csms_cli(argv))

