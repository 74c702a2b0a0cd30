"""``python -m sim``: the simulator's command line.

* ``python -m sim up`` starts simulated hardware on pseudo-terminals, a CSMS (builtin, or the URL of
  yours), writes the agent's configuration, launches the agent as a separate process, supervises it and
  serves the control API (docs/sim-api.md). ``--demo`` (the default, what ``make run`` shows) plays a
  scripted session and shows it live in readable lines.
* ``python -m sim ctl ...`` is the control API's command-line client (:mod:`sim.harness.control_cli`).
* ``python -m sim csms ...`` runs the simulated CSMS alone (docs/sim-csms.md).

Exit codes of ``up``: 0 stopped by SIGINT/SIGTERM, 1 could not start (port taken, ...), 2 bad command
line, 78 the agent configuration it would write is invalid (e.g. a ``--config-override`` the agent
would refuse, or an ``--id`` with a ``/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import signal
import ssl
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sim.csms.server import SimulatedCsms

log = logging.getLogger("sim")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78
DEFAULT_CONTROL = "127.0.0.1:8765"


# ---- command line ---------------------------------------------------------------------------------------

def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6); ValueError otherwise. Port 0 = any free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8765, port 0 = any free port), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(c.isspace() for c in key):
        raise ValueError(f"expected KEY=VALUE (an OCPP configuration key, e.g. HeartbeatInterval=30), got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="evse-agent simulator")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="simulated hardware + the agent as a separate process + control API",
                        description="Simulated charger hardware, the agent as a separate process, a CSMS, "
                                    "and a control API (docs/sim-api.md).")
    up.add_argument("--csms", default="builtin", metavar="builtin|URL",
                    help="'builtin' (default): run a simulated CSMS on 127.0.0.1; or a ws:// / wss:// base URL "
                         "of your CSMS (the agent appends /<id>)")
    up.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="1.6",
                    help="the OCPP version the agent speaks ([ocpp] version) and the builtin CSMS too (default 1.6)")
    up.add_argument("--csms-port", type=int, default=0, help="builtin CSMS port (default: any free port)")
    up.add_argument("--csms-config", type=Path, metavar="FILE",
                    help="builtin CSMS behaviour file (TOML, as python -m sim csms --config)")
    up.add_argument("--accept", nargs="+", action="extend", default=[], metavar="ID",
                    help="idTags the builtin CSMS accepts")
    up.add_argument("--password-file", type=Path, metavar="FILE",
                    help="the AuthorizationKey / BasicAuthPassword (16-40 characters; in 1.6 32-40 hex digits stand "
                         "for their bytes, 2.0.1 sends it as text) for [ocpp].password; the builtin CSMS then "
                         "requires it too")
    up.add_argument("--security-profile", type=int, choices=(0, 1, 2, 3), default=None,
                    help="OCPP security profile (docs/security.md): 1 = ws:// + Basic auth, 2 = wss:// + Basic "
                         "auth, 3 = wss:// + client certificate. With the builtin CSMS a test PKI and a key are "
                         "generated under the state directory when not given (default: 1 with --password-file, "
                         "else 0)")
    up.add_argument("--csms-ca", type=Path, metavar="FILE",
                    help="the CSMS root certificate(s) the agent trusts (PEM file or directory; profiles 2/3)")
    up.add_argument("--cp-cert", type=Path, metavar="FILE", help="profile 3: the charge point certificate (PEM)")
    up.add_argument("--cp-key", type=Path, metavar="FILE", help="profile 3: its private key (PEM)")
    up.add_argument("--csms-tls-cert", type=Path, metavar="FILE",
                    help="builtin CSMS: its TLS server certificate (PEM; with --csms-tls-key)")
    up.add_argument("--csms-tls-key", type=Path, metavar="FILE", help="builtin CSMS: its TLS private key (PEM)")
    up.add_argument("--id", default="SIM-CP-0001", help="charge point identity (default SIM-CP-0001)")
    up.add_argument("--connectors", type=int, default=2, help="1 to 9 (default 2)")
    up.add_argument("--board", choices=("ioboard", "ioboard-mcu", "evse_din"), default="ioboard",
                    help="ioboard-mcu: the I/O board's MicroPython firmware (mcu/ioboard/) in a real MicroPython "
                         "interpreter behind the pty instead of the CPython model")
    up.add_argument("--cable", choices=("socket_with_lock", "socket_without_lock", "tethered"),
                    help="every connector's cable (the agent's [[connectors]] cable; default: a socket with a "
                         "lock on I/O boards, without one on the EVSE-DIN)")
    up.add_argument("--meter", choices=("sdm630", "sdm120", "abb_b23"), default="sdm630")
    up.add_argument("--reader", choices=("pn532", "rdm6300"), default="pn532")
    up.add_argument("--state-dir", help="agent state, config, logs, control.json (default: a new temp dir)")
    up.add_argument("--control", default=DEFAULT_CONTROL, metavar="HOST:PORT",
                    help=f"control API address (default {DEFAULT_CONTROL}; port 0 = any free port, "
                         "see <state-dir>/control.json)")
    up.add_argument("--config-override", action="append", default=[], metavar="KEY=VALUE",
                    help="OCPP configuration key preset at first boot ([ocpp.presets]); repeatable")
    up.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                    help="play a scripted charging session, shown live (default on; --no-demo for scripts)")
    up.add_argument("--demo-pace", type=_demo_pace, default=1.0, metavar="FACTOR",
                    help="scale the demo's pauses and charging time (0.2: five times as fast; what the session "
                         "waits for it still waits for)")
    up.add_argument("--ab-slots", action="store_true",
                    help="run the agent out of A/B slots in the state dir, so that an update from the CSMS really "
                         "replaces the code that runs (docs/firmware-update.md)")
    up.add_argument("--slot-confirm-timeout", type=float, default=None, metavar="S",
                    help="--ab-slots: seconds a new slot's agent has to confirm itself before the simulator switches "
                         "back, as root's switch unit does on a controller (default 90)")
    up.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="the simulator's own log level")
    # listed for --help; dispatched before parsing (their options belong to them)
    sub.add_parser("ctl", help="control API client (python -m sim ctl --help)", add_help=False)
    sub.add_parser("csms", help="the simulated CSMS on its own (python -m sim csms --help)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "ctl":
        from sim.harness.control_cli import main as ctl_main
        return ctl_main(argv[1:])
    if argv and argv[0] == "csms":
        from sim.csms.cli import main as csms_main
        return csms_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        args.control_addr = parse_host_port(args.control)
        args.presets = dict(parse_override(o) for o in args.config_override)
    except ValueError as exc:
        return _usage(parser, str(exc))
    problem = preset_problem(args.presets, args.connectors, args.ocpp) if 1 <= args.connectors <= 9 else None
    if problem is not None:
        print(f"python -m sim up: --config-override: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if not 1 <= args.connectors <= 9:
        return _usage(parser, "--connectors: expected 1 to 9")
    if args.csms != "builtin" and not args.csms.startswith(("ws://", "wss://")):
        return _usage(parser, f"--csms: expected 'builtin' or a ws:// or wss:// URL, got {args.csms!r}")
    if args.csms != "builtin" and (args.csms_config or args.accept or args.csms_port or args.csms_tls_cert
                                   or args.csms_tls_key):
        return _usage(parser, "--csms-port/--csms-config/--accept/--csms-tls-* only apply to the builtin CSMS")
    problem = _security_problem(args)
    if problem is not None:
        return _usage(parser, problem)
    try:
        return asyncio.run(up(args))
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_OK


def _security_problem(args: argparse.Namespace) -> str | None:
    """What the security options lack or contradict (the builtin CSMS fills the gaps with a test PKI)."""
    profile = args.security_profile
    if (args.csms_tls_cert is None) != (args.csms_tls_key is None):
        return "--csms-tls-cert and --csms-tls-key go together"
    if (args.cp_cert is None) != (args.cp_key is None):
        return "--cp-cert and --cp-key go together"
    if profile is None:
        return None
    if profile in (0, 1) and (args.csms_tls_cert or args.cp_cert):
        return f"--security-profile {profile} uses no TLS: --csms-tls-*/--cp-* do not apply"
    if args.csms != "builtin":
        if profile >= 2 and args.csms_ca is None:
            return f"--security-profile {profile} with an external CSMS needs --csms-ca (its root certificate)"
        if profile == 3 and args.cp_cert is None:
            return "--security-profile 3 with an external CSMS needs --cp-cert and --cp-key"
        if profile in (1, 2) and args.password_file is None:
            return f"--security-profile {profile} with an external CSMS needs --password-file (the AuthorizationKey)"
    elif profile >= 2 and args.csms_tls_cert is not None and args.csms_ca is None:
        return "--csms-tls-cert needs --csms-ca (the root that issued it, for the agent to trust)"
    return None


@dataclasses.dataclass
class _Security:
    """What ``python -m sim up`` settled on: the agent's profile and files, and the builtin CSMS's TLS."""

    profile: int | None = None
    password: str | None = None
    csms_ca: str | None = None
    cp_cert: str | None = None
    cp_key: str | None = None
    server_tls: ssl.SSLContext | None = None
    csr_signer: Callable[[str], str] | None = None  # the builtin CSMS signs the charge point's CSRs with its CA
    generated: list[str] = dataclasses.field(default_factory=list)  # what was generated, for the banner


def _settle_security(args: argparse.Namespace, state_dir: Path, password: str | None) -> _Security:
    """The security settings, generating for the builtin CSMS what was not given: an AuthorizationKey (40 hex
    digits, written to <state-dir>/authorization-key, mode 0600) and a test PKI under <state-dir>/pki."""
    profile = args.security_profile
    sec = _Security(profile, password, str(args.csms_ca) if args.csms_ca else None,
                    str(args.cp_cert) if args.cp_cert else None, str(args.cp_key) if args.cp_key else None)
    if profile is None or args.csms != "builtin":
        return sec
    if profile in (1, 2) and sec.password is None:
        sec.password = secrets.token_hex(20)
        _write_private(state_dir / "authorization-key", sec.password + "\n")
        sec.generated.append(f"AuthorizationKey in {state_dir / 'authorization-key'}")
    if profile >= 2:
        from sim.csms.server import server_tls_context
        from sim.harness.pki import make_tls_pki, sign_csr

        server_cert, server_key = args.csms_tls_cert, args.csms_tls_key
        client_ca: str | Path | None = sec.csms_ca
        if server_cert is None:
            pki = make_tls_pki(state_dir / "pki", charge_point_serial=args.id if profile == 3 and
                               sec.cp_cert is None else None)
            server_cert, server_key, sec.csms_ca = pki.csms.cert, pki.csms.key, str(pki.csms_root.path)
            client_ca = pki.csms_root.path
            sec.csr_signer = functools.partial(sign_csr, pki.csms_root)
            if pki.charge_point is not None:
                sec.cp_cert, sec.cp_key = str(pki.charge_point.cert), str(pki.charge_point.key)
            sec.generated.append(f"test PKI in {state_dir / 'pki'}")
        if profile == 3 and sec.cp_cert is None:
            raise ValueError("--security-profile 3 with --csms-tls-cert needs --cp-cert and --cp-key")
        sec.server_tls = server_tls_context(server_cert, server_key,
                                            client_ca=client_ca if profile == 3 else None)
    return sec


def _usage(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"python -m sim up: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---- python -m sim up -----------------------------------------------------------------------------------

def _prepare_state_dir(given: str | None) -> Path:
    state_dir = Path(given) if given else Path(tempfile.mkdtemp(prefix="evse-sim-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    # a control.json left by an earlier run would send a waiting script to a dead address
    (state_dir / "control.json").unlink(missing_ok=True)
    return state_dir.resolve()


def _open_log(path: Path) -> TextIO:
    return path.open("a", encoding="utf-8")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by us only (the agent config may hold the OCPP password), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def preset_problem(presets: dict[str, str], connectors: int, version: str = "1.6") -> str | None:
    """Why the agent would refuse these first-boot presets (checked with its own key definitions, on a
    scratch database; 2.0.1: Component.Variable names of its device model), or None. A bad preset would
    otherwise only show as an agent that keeps failing."""
    if not presets:
        return None
    if version == "2.0.1":
        from firmware.ocpp.v201.device_model import check_preset

        problems = [f"{k}: expected {p}" for k, v in presets.items() if (p := check_preset(k, v)) is not None]
        return problems[0] if problems else None
    from firmware.ocpp.v16.configuration import ConfigurationKeys
    from firmware.storage import Database

    with tempfile.TemporaryDirectory(prefix="evse-sim-check-") as scratch:
        db = Database(Path(scratch) / "check.db")
        try:
            ConfigurationKeys(db, connectors, presets=presets)
        except ValueError as exc:
            return str(exc)
        finally:
            db.close()
    return None


def _read_password(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip("\r\n")


def _setup_logging(level: str, demo: bool, state_dir: Path, stack: contextlib.ExitStack) -> None:
    from firmware.logs import setup_logging

    if not demo:
        setup_logging(level)  # JSON lines on stderr, like the agent's
        return
    # demo: the terminal is for the live view; our own JSON logs go to sim.log, errors also to the terminal
    sim_log = stack.enter_context(_open_log(state_dir / "sim.log"))
    setup_logging(level, sim_log)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.ERROR)
    terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(terminal)


def _demo_pace(text: str) -> float:
    try:
        pace = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.01 <= pace <= 10:
        raise argparse.ArgumentTypeError(f"{pace:g} is outside 0.01 .. 10")
    return pace


async def _start_builtin_csms(args: argparse.Namespace, state_dir: Path, password: str | None,
                              server_tls: ssl.SSLContext | None = None,
                              csr_signer: Callable[[str], str] | None = None) -> SimulatedCsms:
    import tomllib

    from sim.csms.behaviour import ChargePointProfile, CsmsBehaviour
    from sim.csms.server import SimulatedCsms
    from sim.harness.demo import demo_card

    behaviour = CsmsBehaviour()
    if args.csms_config is not None:
        with args.csms_config.open("rb") as f:
            behaviour = CsmsBehaviour.from_mapping(tomllib.load(f))
    behaviour.id_tags.accept(*args.accept)
    if args.demo:
        behaviour.id_tags.accept(demo_card(args.reader))
    if password is not None and args.security_profile != 3:  # profile 3: known by its certificate
        p = behaviour.profile(args.id)
        behaviour.profiles[args.id] = ChargePointProfile(
            boot_statuses=p.boot_statuses, heartbeat_interval=p.heartbeat_interval,
            boot_retry_interval=p.boot_retry_interval, password=password)
    (state_dir / "csms-files").mkdir(exist_ok=True)  # firmware to offer, diagnostics uploaded (docs/sim-api.md)
    csms = SimulatedCsms("127.0.0.1", args.csms_port, behaviour=behaviour,
                         transcript_path=str(state_dir / "csms-transcript.jsonl"), ssl_context=server_tls,
                         csr_signer=csr_signer, files_dir=state_dir / "csms-files", ocpp_version=args.ocpp)
    await csms.start()
    return csms


async def up(args: argparse.Namespace) -> int:
    """Bring everything up, serve until SIGINT/SIGTERM, then take it all down in reverse order."""
    state_dir = _prepare_state_dir(args.state_dir)
    with contextlib.ExitStack() as files:
        _setup_logging(args.log_level, args.demo, state_dir, files)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            async with contextlib.AsyncExitStack() as stack:
                return await _run(args, state_dir, stop, stack, files)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            log.info("simulator stopped")


async def _run(args: argparse.Namespace, state_dir: Path, stop: asyncio.Event,
               stack: contextlib.AsyncExitStack, files: contextlib.ExitStack) -> int:
    import tomllib

    from firmware.config import ConfigError, parse_config
    from firmware.ocpp.presets import check_presets
    from sim.csms.behaviour import BehaviourError
    from sim.harness.agent_supervisor import AgentOutput, AgentSupervisor
    from sim.harness.charger import ChargerSpec, OcppSettings, SimulatedCharger
    from sim.harness.control_api import ControlApi, ControlTargets
    from sim.harness.demo import LiveView, run_demo

    password = None
    if args.password_file is not None:
        try:
            password = _read_password(args.password_file)
        except OSError as exc:
            print(f"python -m sim up: --password-file: {exc}", file=sys.stderr)
            return EXIT_USAGE

    try:
        security = _settle_security(args, state_dir, password)
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"python -m sim up: security: {exc}", file=sys.stderr)
        return EXIT_USAGE
    password = security.password
    for what in security.generated:
        log.info("generated for the security profile", extra={"what": what})

    csms = None
    if args.csms == "builtin":
        try:
            csms = await _start_builtin_csms(args, state_dir, password, security.server_tls, security.csr_signer)
        except (BehaviourError, OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
            print(f"python -m sim up: builtin CSMS: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        stack.push_async_callback(csms.stop)
        csms_url = csms.url
    else:
        csms_url = args.csms.rstrip("/")

    if args.demo:  # so the demo shows meter values while it charges (first boot only, like any preset)
        args.presets.setdefault("SampledDataCtrlr.TxUpdatedInterval" if args.ocpp == "2.0.1"
                                else "MeterValueSampleInterval", "5")
    spec = ChargerSpec(charge_point_id=args.id, connectors=args.connectors, board=args.board,
                       meter=args.meter, reader=args.reader, cable=args.cable)
    charger = SimulatedCharger(spec)
    stack.push_async_callback(charger.close)
    await charger.start()

    config_path = state_dir / "agent.toml"
    text = charger.agent_config(str(state_dir), OcppSettings(
        csms_url, password if security.profile != 3 else None, args.presets, security.profile, security.csms_ca,
        security.cp_cert if security.profile == 3 else None, security.cp_key if security.profile == 3 else None,
        version=args.ocpp))
    agent_env = agent_cwd = None
    if args.ab_slots:
        from sim.harness.ab_slots import SimSlots

        ab = SimSlots(state_dir)
        ab.prepare("sim-1.0.0")
        text += ab.config_section()
        agent_env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (ab.code_path, os.environ.get("PYTHONPATH", "")) if p))
        agent_cwd = str(Path(ab.code_path).parent)
    try:
        check_presets(parse_config(text, str(config_path)))
    except ConfigError as exc:
        print(f"python -m sim up: the agent configuration would be invalid: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _write_private(config_path, text)

    agent_log_path = state_dir / "agent.log"
    output = AgentOutput(sink=files.enter_context(_open_log(agent_log_path)))
    view = LiveView(charger, output, csms) if args.demo else None
    echo = None if args.demo else sys.stderr

    def on_line(line: str) -> None:
        output.feed(line)
        if echo is not None:
            with contextlib.suppress(OSError, ValueError):
                echo.write(line + "\n")
                echo.flush()

    supervisor = AgentSupervisor(config_path, on_line=on_line, env=agent_env, cwd=agent_cwd,
                                 on_event=view.on_agent_event if view is not None else None)
    if args.ab_slots:  # root's switch unit: the switch applied before a start, the new slot's confirmation awaited
        from sim.harness.ab_slots import CONFIRM_TIMEOUT_S, SlotRunner

        runner = SlotRunner(ab, supervisor, args.slot_confirm_timeout or CONFIRM_TIMEOUT_S)
        supervisor.before_start = runner.before_start
    targets = ControlTargets(charger, supervisor, output, csms_url, csms, state_dir)
    api = ControlApi(targets)
    host, port = args.control_addr
    try:
        await api.start(host, port)
    except OSError as exc:
        print(f"python -m sim up: control API cannot listen on {args.control}: {exc.strerror or exc}"
              f" (use --control 127.0.0.1:0 for any free port)", file=sys.stderr)
        return EXIT_FAILURE
    stack.push_async_callback(api.close)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("control API is not on loopback and has no authentication", extra={"url": api.url})

    stack.push_async_callback(supervisor.stop)
    await supervisor.start()

    info = _ready_info(api.url, state_dir, csms_url, args, config_path, agent_log_path, csms, security)
    targets.extra_state["control_url"] = api.url
    control_file = state_dir / "control.json"
    _write_private(control_file, json.dumps(info, indent=2) + "\n")
    stack.callback(control_file.unlink, missing_ok=True)  # first thing removed when stopping
    log.info("simulator ready", extra=info)
    if view is not None:
        _banner(info, csms is not None)
        view.start()
        stack.push_async_callback(view.close)
        demo = asyncio.create_task(run_demo(charger, view, csms, control_url=api.url, pace=args.demo_pace), name="demo")
        stack.push_async_callback(_cancel, demo)
    else:
        print(json.dumps({"event": "ready", **info}), flush=True)

    await stop.wait()
    log.info("stopping (signal received)")
    if view is not None:
        view.say("sim", "stopping: agent (SIGTERM), control API, devices ...")
    return EXIT_OK


def _ready_info(url: str, state_dir: Path, csms_url: str, args: argparse.Namespace, config_path: Path,
                agent_log: Path, csms: SimulatedCsms | None, security: _Security | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "url": url, "pid": os.getpid(), "state_dir": str(state_dir), "charge_point_id": args.id,
        "csms": "builtin" if csms is not None else "external", "csms_url": csms_url,
        "agent_config": str(config_path), "agent_log": str(agent_log),
    }
    if security is not None and security.profile is not None:
        info["security_profile"] = security.profile
        if security.generated:
            info["security_generated"] = security.generated
    if csms is not None and csms.transcript.path is not None:
        info["csms_transcript"] = str(csms.transcript.path)
    return info


def _banner(info: dict[str, Any], builtin: bool) -> None:
    csms = f"builtin, {info['csms_url']}" if builtin else info["csms_url"]
    lines = [
        "evse-agent simulator: a demo charging session, live",
        f"  control API  {info['url']}   (try: python -m sim ctl --url {info['url']} state)",
        f"  state dir    {info['state_dir']}",
        f"  agent logs   {info['agent_log']}  (full JSON logs; not shown here)",
        f"  CSMS         {csms}" + (f"  transcript {info.get('csms_transcript')}" if builtin else ""),
        *([f"  security     profile {info['security_profile']}"
           + (f"; generated: {', '.join(info.get('security_generated', []))}" if info.get("security_generated")
              else "")] if "security_profile" in info else []),
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    sys.exit(main())
