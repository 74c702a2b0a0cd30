"""Security profiles: TLS connect + BootNotification, for profiles 1, 2 and 3 side by side.

Each sample is one connection attempt of :class:`~firmware.ocpp.link.OcppLink` with the settings the agent uses
for the profile (:mod:`firmware.ocpp.security_profile`: ws:// + Basic auth; wss:// + Basic auth + the CSMS
checked against its root; wss:// + the charge point's certificate), to the simulated CSMS over loopback, until
the CSMS's BootNotification answer is received. The figure is the median and its ratio to profile 1: what TLS
(ECDSA P-256 certificates, TLS 1.3) adds to a (re)connection. ``BENCH_TLS_N`` sets the samples (default 40).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from firmware.config import OcppConfig
from firmware.ocpp.link import OcppLink
from firmware.ocpp.security_profile import link_settings
from sim.csms.behaviour import ChargePointProfile
from sim.csms.server import SimulatedCsms, server_tls_context
from sim.harness.pki import make_tls_pki

CP = "BENCH-TLS-1"
KEY = "00112233445566778899aabbccddeeff00112233"
BOOT = {"chargePointVendor": "evse-agent", "chargePointModel": "bench"}


async def _samples(profile: int, pki_dir: Path, n: int) -> list[float]:
    pki = make_tls_pki(pki_dir / str(profile), charge_point_serial=CP)
    assert pki.charge_point is not None
    server = None if profile == 1 else server_tls_context(
        pki.csms.cert, pki.csms.key, client_ca=pki.csms_root.path if profile == 3 else None)
    async with SimulatedCsms(ssl_context=server, ping_interval_s=None) as csms:
        csms.behaviour.profiles[CP] = ChargePointProfile(password=KEY if profile < 3 else None)
        config = OcppConfig(csms.url, password=KEY, security_profile=profile, csms_ca=str(pki.csms_root.path),
                            cp_cert=str(pki.charge_point.cert), cp_key=str(pki.charge_point.key))
        out = []
        for i in range(n):
            settings = link_settings(config, profile, KEY)  # built per attempt, as the agent does
            link = OcppLink(config.csms_url, CP, "ocpp1.6", settings=lambda s=settings: s)
            started = time.perf_counter()
            conn = await link.open_connection()
            await conn.send(json.dumps([2, f"b{i}", "BootNotification", BOOT]))
            answer = json.loads(await conn.recv())
            out.append(time.perf_counter() - started)
            assert answer[0] == 3 and answer[2]["status"] == "Accepted", answer
            await conn.close()
        return out


async def _run(n: int) -> dict[int, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        return {p: await _samples(p, Path(tmp), n) for p in (1, 2, 3)}


def main() -> None:
    n = int(os.environ.get("BENCH_TLS_N", "40"))
    results = asyncio.run(_run(n))
    base = statistics.median(results[1])
    print(f"connect + BootNotification over loopback, {n} samples each (median, p90; ratio of medians to profile 1)")
    for profile, samples in results.items():
        med = statistics.median(samples)
        p90 = sorted(samples)[int(0.9 * (len(samples) - 1))]
        print(f"  profile {profile}: {med * 1000:6.1f} ms  p90 {p90 * 1000:6.1f} ms  x{med / base:4.1f}")


if __name__ == "__main__":
    main()
