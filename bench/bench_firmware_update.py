"""Firmware update figures (docs/firmware-update.md): a full bundle (the agent and every runtime dependency, as
``tools/flash.py build`` makes it) served over HTTP on loopback by the simulated CSMS's file server.

* download + verify + install (unpack into the inactive slot, compile what has no bytecode, fsync) by the update
  pipeline's own pieces (firmware/maintenance/transfer.py, bundle.py, installers.py), against a plain download of
  the same file by the same HTTP client (``http.client`` into a file, no resume bookkeeping, no fsync): the ratio
  (target <= 1.5x) and each step; for a bundle with bytecode (format 2, what ``build`` makes) and one without
  (format 1, ``build --no-bytecode``: the controller compiles), each against its own plain download;
* the time from UpdateFirmware to Installed: the agent as a process against the simulated charger and CSMS,
  restarted into the new slot as systemd would.

Loopback hides the network: on a real uplink the download dominates, and the ratio moves towards 1.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


async def pipeline_steps(tmp: Path, bundle: Path, url: str, trust: tuple[x509.Certificate, ...]) -> None:
    plain, ours = [], []
    steps: dict[str, list[float]] = {"download": [], "verify": [], "install": []}
    def plain_sample() -> None:
        dest = tmp / "plain.bin"
        t0 = time.perf_counter()
        plain_download(url, dest)
        plain.append(time.perf_counter() - t0)
        dest.unlink()

    for run in range(RUNS):
        root = tmp / f"controller-{bundle.stem}-{run}"
        (root / "etc/evse-agent").mkdir(parents=True)
        install_first(root, bundle)  # slot a runs; the update goes into b
        plain_sample()  # just before and just after the pipeline: the shared machine's state alike for both
        part = tmp / f"ours-{bundle.stem}-{run}.part"
        t0 = time.perf_counter()
        transfer.download(url, part, max_bytes=256 << 20)
        t1 = time.perf_counter()
        verified = verify_bundle(part, trust, hardware_revision="rev-c")
        t2 = time.perf_counter()
        await SlotsInstaller(str(root), tmp).stage(part, verified.sha256, verified.size)
        t3 = time.perf_counter()
        steps["download"].append(t1 - t0)
        steps["verify"].append(t2 - t1)
        steps["install"].append(t3 - t2)
        ours.append(t3 - t0)
        plain_sample()
        assert slots.info(str(root))["slots"]["b"]["installed"]
    size = verified.size / 1e6
    p, o = statistics.median(plain), statistics.median(ours)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:8.0f} ms  ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"
    print(f"full bundle {size:.1f} MB ({'with bytecode' if verified.manifest.bytecode else 'no bytecode'}) over "
          f"HTTP on loopback (median of {RUNS}, range):")
    print(f"  plain download (same client, x{len(plain)})     {ms(plain)}")
    for name, values in steps.items():
        print(f"  pipeline: {name:<28} {ms(values)}")
    print(f"  download + verify + install            {ms(ours)}  = {o / p:.1f}x the plain download "
          f"(target <= 1.5x); download alone {statistics.median(steps['download']) / p:.2f}x")


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
        with http_file_server(files) as server:
            for name in ("v2-format1.bundle", "v2.bundle"):
                asyncio.run(pipeline_steps(tmp, files / name, server.url(name), trust))
        asyncio.run(update_to_installed(tmp, files, signer_dir))


if __name__ == "__main__":
    main()
