"""Flashing figures: bundle size with every runtime dependency, and flash time over SSH on loopback.

A real sshd on loopback stands for the controller (tests/sshd.py); the health check runs the agent from the
new slot against simulated devices and the simulated CSMS, with the tool's default time limits (ready within
60 s, then 5 s up). Loopback hides the network: on a mobile link the transfer dominates (7.8 MB at 1 Mbit/s
is about a minute).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sim.csms.behaviour import ChargePointProfile
from sim.csms.server import SimulatedCsms
from sim.harness.charger import ChargerSpec, OcppSettings, SimulatedCharger
from tests.controller import grant_serial_ports, make_root
from tests.pki import make_signer
from tests.sshd import running_sshd
from tools.flashing.build import runtime_requirements

REPO = Path(__file__).resolve().parents[1]
FLASH = REPO / "tools" / "flash.py"


async def tool(*args: str | Path) -> tuple[float, str]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, str(FLASH), *map(str, args),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"flash.py {args[0]} failed ({proc.returncode}): {out.decode()}{err.decode()}")
    return time.monotonic() - started, out.decode()


async def run(tmp: Path, wheels: Path) -> None:
    signer = make_signer(tmp / "pki")
    bundles = []
    for version in ("1.0.0", "1.1.0"):
        out = tmp / f"{version}.bundle"
        seconds, _ = await tool("build", "--key", signer.key, "--cert", signer.cert, "--hardware-revision", "rev-c",
                                "--out", out, "--version", version, "--wheels-from", wheels)
        bundles.append(out)
    print(f"bundle with all runtime dependencies: {bundles[0].stat().st_size / 1e6:.1f} MB "
          f"(build from a wheelhouse: {seconds:.1f} s)")
    root = make_root(tmp / "controller")
    (root / "etc/evse-agent").mkdir(parents=True)
    (root / "etc/evse-agent/hardware-revision").write_text("rev-c\n")
    charger = SimulatedCharger(ChargerSpec(charge_point_id="BENCH-CP", connectors=2))
    csms = SimulatedCsms(response_timeout_s=5, ping_interval_s=None)
    await charger.start()
    grant_serial_ports(charger)
    await csms.start()
    csms.behaviour.profiles["BENCH-CP"] = ChargePointProfile(password="0123456789abcdef")
    config = tmp / "agent.toml"
    config.write_text(charger.agent_config(str(root / "var/lib/evse-agent"),
                                           OcppSettings(csms.url, "0123456789abcdef")))
    try:
        with running_sshd(tmp / "sshd") as sshd:
            url, ssh = sshd.url(root), sshd.tool_options
            await tool("commission", url, *ssh, "--config", config)
            trust = ["--trust", str(signer.ca_cert)]
            for label, bundle in (("first flash", bundles[0]), ("upgrade", bundles[1])):
                seconds, out = await tool("flash", url, bundle, *trust, *ssh)
                steps = [line for line in out.splitlines() if line.startswith(("installed", "health check"))]
                print(f"{label} over ssh (loopback), default health check (5 s settle): {seconds:.1f} s")
                for line in steps:
                    print(f"  {line}")
            seconds, _ = await tool("flash", url, bundles[0], *trust, *ssh, "--no-health-check")
            print(f"flash without health check: {seconds:.1f} s")
            seconds, _ = await tool("rollback", url, *ssh)
            print(f"rollback: {seconds:.1f} s")
    finally:
        await csms.stop()
        await charger.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-flash-") as tmp:
        os.chmod(tmp, 0o755)  # the agent's user reaches its slot and state through it
        wheels = Path(tmp) / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest",
                        str(wheels), "--constraint", str(REPO / "requirements.lock"), *runtime_requirements()],
                       check=True, stderr=subprocess.DEVNULL)
        asyncio.run(run(Path(tmp), wheels))


if __name__ == "__main__":
    main()
