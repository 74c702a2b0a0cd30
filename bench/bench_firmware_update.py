"""Firmware update figures (docs/firmware-update.md): a full bundle (the agent and every runtime dependency, as
``tools/flash.py build`` makes it) served over HTTP on loopback by the simulated CSMS's file server.

* download + verify + install (unpack into the inactive slot, compile what has no bytecode, fsync) by the update
  pipeline's own pieces (firmware/maintenance/transfer.py, bundle.py, installers.py), against a plain download of
  the same file by the same HTTP client (``http.client`` into a file, no resume bookkeeping, no fsync): the ratio
  (target <= 1.5x) and each step; for a bundle with bytecode (format 2, what ``build`` makes) and one without
  (format 1, ``build --no-bytecode``: the controller compiles), each against its own plain download;
* the same for the format-2 bundle over rate-limited links (the file server sends at 10 and 50 Mbit/s over a
  real TCP connection, a charger's LTE uplink: sim/csms/file_server.py ``rate_bps``), the same client and the same
  pipeline steps: measured, next to loopback's ratio;
* the time from UpdateFirmware to Installed: the agent as a process against the simulated charger and CSMS,
  restarted into the new slot as systemd would.

Loopback hides the network: the install's own work (inflating, creating ~1,600 files, one syncfs) is its floor.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from firmware.maintenance import slots, transfer
from firmware.maintenance.bundle import verify_bundle
from firmware.maintenance.installers import SlotsInstaller
from sim.csms.file_server import http_file_server
from tests.bundles import install_first
from tests.pki import make_signer
from tests.station import CP_ID, Station
from tools.flashing.build import runtime_requirements

REPO = Path(__file__).resolve().parents[1]
RUNS = 7  # the figures vary with the shared machine's disk: medians of several runs, with their range
LINK_RUNS = 3  # over a rate-limited link each run takes seconds: fewer runs (the link's pace varies little)
LINKS_MBIT = (50, 10)  # a charger's uplink (LTE-like), paced by the file server


def plain_download(url: str, dest: Path) -> None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port)
    try:
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        with dest.open("wb") as f:
            while chunk := resp.read(transfer.CHUNK):
                f.write(chunk)
    finally:
        conn.close()


def build(tmp: Path, wheels: Path, version: str, signer_dir: Path, *extra: str) -> Path:
    if not (signer_dir / "ca.pem").exists():
        make_signer(signer_dir)
    key, cert = signer_dir / "signing-key.pem", signer_dir / "signing-cert.pem"
    out = tmp / f"{version}{''.join(extra)}.bundle"
    subprocess.run([sys.executable, str(REPO / "tools/flash.py"), "build", "--key", str(key), "--cert", str(cert),
                    "--hardware-revision", "rev-c", "--out", str(out), "--version", version, "--wheels-from",
                    str(wheels), *extra], check=True, capture_output=True)
    return out


@dataclass(frozen=True)
class Ratio:
    link: str
    plain_s: float
    pipeline_s: float


async def pipeline_steps(tmp: Path, bundle: Path, url: str, trust: tuple[x509.Certificate, ...], *,
                         link: str = "loopback", runs: int = RUNS) -> Ratio:
    plain, ours = [], []
    steps: dict[str, list[float]] = {"download (hashed on the way)": [], "verify": [], "install": []}
    cpu: dict[str, list[float]] = {name: [] for name in steps}  # process CPU time: less swayed by the machine's load
    def plain_sample() -> None:
        dest = tmp / "plain.bin"
        t0 = time.perf_counter()
        plain_download(url, dest)
        plain.append(time.perf_counter() - t0)
        dest.unlink()

    for run in range(runs):
        name = f"{bundle.stem}-{link.replace(' ', '-').replace('/', '')}-{run}"
        root = tmp / f"controller-{name}"
        (root / "etc/evse-agent").mkdir(parents=True)
        install_first(root, bundle)  # slot a runs; the update goes into b
        plain_sample()  # just before and just after the pipeline: the shared machine's state alike for both
        part = tmp / f"ours-{name}.part"  # a new download each time (an existing part would be resumed)
        c0, t0 = time.process_time(), time.perf_counter()
        got = transfer.download(url, part, max_bytes=256 << 20)
        c1, t1 = time.process_time(), time.perf_counter()
        verified = verify_bundle(part, trust, hardware_revision="rev-c", sha256=got.sha256)
        c2, t2 = time.process_time(), time.perf_counter()
        await SlotsInstaller(str(root), tmp).stage(part, verified.sha256, verified.size)
        c3, t3 = time.process_time(), time.perf_counter()
        for step, value, used in zip(steps, (t1 - t0, t2 - t1, t3 - t2), (c1 - c0, c2 - c1, c3 - c2), strict=True):
            steps[step].append(value)
            cpu[step].append(used)
        ours.append(t3 - t0)
        assert slots.info(str(root))["slots"]["b"]["installed"]
        part.unlink()  # as the updater does once staged
        shutil.rmtree(root)
        plain_sample()
    size = verified.size / 1e6
    p, o = statistics.median(plain), statistics.median(ours)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:8.0f} ms  ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
    print(f"full bundle {size:.1f} MB ({'with bytecode' if verified.manifest.bytecode else 'no bytecode'}) over "
          f"HTTP, {link} (median of {runs}, range):")
    print(f"  plain download (same client, x{len(plain)})     {ms(plain)}")
    for name, values in steps.items():
        print(f"  pipeline: {name:<28} {ms(values)}  CPU {statistics.median(cpu[name]) * 1000:.0f} ms")
    print(f"  download + verify + install            {ms(ours)}  = {o / p:.2f}x the plain download "
          f"(target <= 1.5x); download alone {statistics.median(next(iter(steps.values()))) / p:.2f}x", flush=True)
    return Ratio(link, p, o)


async def update_to_installed(tmp: Path, files: Path, signer_dir: Path) -> None:
    root = tmp / "station-controller"
    (root / "etc/evse-agent").mkdir(parents=True)
    (root / "etc/evse-agent/hardware-revision").write_text("rev-c\n")
    install_first(root, files / "v1.bundle")
    firmware = f'\n[firmware]\ntrust = "{signer_dir / "ca.pem"}"\nslots_root = "{root}"\n'
    async with Station(root / "etc/evse-agent", storage_dir=root / "var/lib/evse-agent", extra_config=firmware,
                       csms_files=files) as s:
        await s.start_agent(supervised=True)
        mark = s.csms.transcript.mark()
        t0 = time.perf_counter()
        await s.csms.update_firmware(CP_ID, s.csms.file_url("v2.bundle"),
                                     datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
        await s.wait_call("FirmwareStatusNotification", lambda e: e.payload["status"] in (
            "Installed", "InstallationFailed"), since=mark, timeout_s=120)
        elapsed = time.perf_counter() - t0
        status = [e.payload["status"] for e in s.csms.transcript.messages(CP_ID, action="FirmwareStatusNotification",
                                                                          since=mark) if e.payload]
    print(f"UpdateFirmware -> {status[-1]} (download, verify, install, restart into the new slot, accepted): "
          f"{elapsed:.1f} s")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as name:
        tmp = Path(name)
        wheels = tmp / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest",
                        str(wheels), "--constraint", str(REPO / "requirements.lock"), *runtime_requirements()],
                       check=True, stderr=subprocess.DEVNULL)
        files = tmp / "files"
        files.mkdir()
        signer_dir = tmp / "pki"
        os.rename(build(tmp, wheels, "1.0.0", signer_dir), files / "v1.bundle")
        os.rename(build(tmp, wheels, "1.1.0", signer_dir), files / "v2.bundle")
        os.rename(build(tmp, wheels, "1.1.0", signer_dir, "--no-bytecode"), files / "v2-format1.bundle")
        trust = tuple(x509.load_pem_x509_certificates((signer_dir / "ca.pem").read_bytes()))
        ratios = []
        with http_file_server(files) as server:
            for name in ("v2-format1.bundle", "v2.bundle"):
                ratios.append(asyncio.run(pipeline_steps(tmp, files / name, server.url(name), trust)))
            for mbit in LINKS_MBIT:
                server.faults.rate_bps = mbit * 1_000_000
                ratios.append(asyncio.run(pipeline_steps(tmp, files / "v2.bundle", server.url("v2.bundle"), trust,
                                                         link=f"{mbit} Mbit/s link", runs=LINK_RUNS)))
            server.faults.rate_bps = None
        print("download + verify + install against a plain download, format-2 bundle (measured):")
        for r in ratios[1:]:
            met = "met" if r.pipeline_s <= 1.5 * r.plain_s else "not met"
            print(f"  {r.link:<18} plain {r.plain_s * 1000:7.0f} ms  pipeline {r.pipeline_s * 1000:7.0f} ms  "
                  f"{r.pipeline_s / r.plain_s:5.2f}x (target <= 1.5x: {met})")
        asyncio.run(update_to_installed(tmp, files, signer_dir))


if __name__ == "__main__":
    main()
