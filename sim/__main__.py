"""``python -m sim``: the simulator's command line.

``python -m sim up`` starts simulated hardware on pseudo-terminals, writes the agent's
configuration, launches the agent as a separate process and supervises it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path

from firmware.logs import setup_logging
from sim.charger import ChargerSpec, SimulatedCharger
from sim.supervisor import AgentSupervisor

log = logging.getLogger("sim")


def _prepare_state_dir(given: str | None) -> Path:
    state_dir = Path(given or tempfile.mkdtemp(prefix="evse-sim-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir


async def up(args: argparse.Namespace) -> int:
    spec = ChargerSpec(charge_point_id=args.id, connectors=args.connectors, board=args.board,
                       meter=args.meter, reader=args.reader)
    state_dir = _prepare_state_dir(args.state_dir)
    charger = SimulatedCharger(spec)
    await charger.start()
    config_path = state_dir / "agent.toml"
    config_path.write_text(charger.agent_config(str(state_dir)))
    log.info("simulated hardware up", extra={"config": str(config_path),
                                             "ports": {n: w.host_port for n, w in charger.wires.items()}})
    supervisor = AgentSupervisor(config_path)
    await supervisor.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    demo = asyncio.create_task(_demo(charger)) if args.demo else None
    await stop.wait()
    if demo is not None:
        demo.cancel()
    await supervisor.stop()
    await charger.close()
    return 0


async def _demo(charger: SimulatedCharger) -> None:
    """A short scripted session so `make run` shows something happen on the hardware."""
    c = charger.connectors[1]
    await asyncio.sleep(3)
    log.info("demo: EV plugged into connector 1")
    c.ev.plug()
    await asyncio.sleep(2)
    if charger.reader is not None:
        log.info("demo: card 04A1B2C3 presented")
        charger.reader.present("04A1B2C3")
        await asyncio.sleep(1.5)
        charger.reader.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description="evse-agent simulator")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="simulated hardware + the agent as a separate process")
    p_up.add_argument("--id", default="SIM-CP-0001", help="charge point identity")
    p_up.add_argument("--connectors", type=int, default=2)
    p_up.add_argument("--board", choices=("ioboard", "evse_din"), default="ioboard")
    p_up.add_argument("--meter", choices=("sdm630", "sdm120", "abb_b23"), default="sdm630")
    p_up.add_argument("--reader", choices=("pn532", "rdm6300"), default="pn532")
    p_up.add_argument("--state-dir", help="where the agent keeps its state (default: a new temp dir)")
    p_up.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                      help="play a short scripted session (plug, tap)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    if args.command == "up":
        if not 1 <= args.connectors <= 9:
            parser.error("--connectors: expected 1 to 9")
        return asyncio.run(up(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
