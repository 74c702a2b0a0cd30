"""``python -m firmware``: the agent's command line (run it, check its configuration).

SIGTERM is honoured from the first line on: until the agent's event loop takes the signal over, it ends the
process at once with exit 0 (nothing is started yet that needs stopping; SQLite is safe at any instant), instead of
Python's default of dying by the signal — a ``systemctl stop`` (or a supervisor's) during start-up is a clean
stop. The modules behind the command line are imported after that, in :func:`main`.
"""

from __future__ import annotations

import os
import signal
from types import FrameType


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    # Not SystemExit: raised inside an import's callback it is discarded ("Exception ignored in ..."), and the
    # stop would be lost. Nothing runs yet that needs a clean-up; SQLite is safe at any instant.
    os._exit(0)  # ExitCode.OK


if __name__ == "__main__":  # before any other import: see the docstring
    signal.signal(signal.SIGTERM, _stop_while_starting)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from firmware.exitcodes import ExitCode  # noqa: E402

if TYPE_CHECKING:
    from firmware.config import AgentConfig

log = logging.getLogger("firmware")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_while_starting)  # also when main() is called without ``-m``
    from firmware.config import ConfigError, load_config
    from firmware.logs import add_file_log, setup_logging
    from firmware.ocpp.presets import check_presets

    parser = argparse.ArgumentParser(prog="python -m firmware", description="evse-agent: the charger's agent")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("--config", required=True, help="path of the agent configuration (TOML)")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", required=True)
    selftest = sub.add_parser("selftest", help="probe every configured device and the CSMS; exit 1 if any fails")
    selftest.add_argument("--config", required=True)
    selftest.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    selftest.add_argument("--timeout", type=float, default=5.0, help="seconds per probe (default 5)")
    health = sub.add_parser("healthcheck", help="self-test, then run the agent until it is ready (first boot)")
    health.add_argument("--config", required=True)
    health.add_argument("--timeout", type=float, default=60.0, help="seconds for the agent to get ready")
    health.add_argument("--settle", type=float, default=3.0, help="seconds it must then stay up")
    health.add_argument("--json", action="store_true")
    health.add_argument("--csms-optional", action="store_true", help="an unreachable CSMS does not fail the check")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("--config"):
        argv.insert(0, "run")  # `python -m firmware --config FILE` runs the agent, as systemd units call it
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return ExitCode.OK if exc.code == 0 else ExitCode.USAGE

    try:
        config = check_presets(load_config(args.config))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    if args.command == "check-config":
        print(f"{args.config}: OK ({len(config.connectors)} connector(s), {len(config.readers)} reader(s))")
        return ExitCode.OK
    if args.command in ("selftest", "healthcheck"):
        return _check(args, config)

    setup_logging(config.log_level)
    add_file_log(config.state_dir)  # the agent's own copy, for GetDiagnostics
    from firmware.maintenance.installers import switch_before_start

    if switch_before_start(config):  # the code of the slot switched to is imported by a fresh interpreter
        logging.getLogger("firmware").info("restarting into the slot switched to", extra={"argv": sys.orig_argv})
        logging.shutdown()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    from firmware.agent import Agent  # imported late: check-config must not need the drivers
    from firmware.storage import StorageError

    async def run_agent() -> ExitCode:
        return await Agent(config).run()

    try:
        return asyncio.run(run_agent())
    except StorageError as exc:
        log.error("storage unusable", extra={"error": str(exc)})
        print(f"storage error: {exc}", file=sys.stderr)
        return ExitCode.STORAGE
    except sqlite3.DatabaseError as exc:  # failed while running: disk full, I/O error, corruption found late
        where = f"{config.state_dir}/agent.db"
        log.error("storage failed", extra={"db": where, "error": str(exc)})
        print(f"storage error: {where}: {exc}", file=sys.stderr)
        return ExitCode.STORAGE
    except Exception:
        log.exception("agent failed")
        return ExitCode.FAILURE


def _check(args: argparse.Namespace, config: AgentConfig) -> int:
    """``selftest`` / ``healthcheck``: a report on stdout (table or JSON); 0 passed, 1 failed."""
    import json

    from firmware.maintenance.healthcheck import run_healthcheck
    from firmware.maintenance.selftest import format_table, run_selftest

    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL)  # drivers' complaints are in the report, not on the terminal
    if args.command == "selftest":
        report = asyncio.run(run_selftest(config, args.timeout))
        print(json.dumps(report.to_json(), indent=2) if args.json else format_table(report))
        return ExitCode.OK if report.ok else ExitCode.FAILURE
    result = asyncio.run(run_healthcheck(config, timeout_s=args.timeout, settle_s=args.settle,
                                         csms_required=not args.csms_optional))
    print(json.dumps(result.to_json(), indent=2) if args.json else
          f"health check {'passed' if result.ok else 'FAILED at ' + result.stage}: {result.detail}")
    return ExitCode.OK if result.ok else ExitCode.FAILURE


if __name__ == "__main__":
    sys.exit(main())
