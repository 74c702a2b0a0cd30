"""The agent as a whole, against the simulator: boot time, tap-to-contactor latency, RSS and CPU.

* boot: agent process spawned -> its BootNotification received by the (loopback) CSMS, with the checkout's bytecode
  compiled first as a bundle ships it (bench/startup.py); and what does not depend on the machine's load: the
  agent's CPU time at that moment, the modules a start imports and the largest shares of their import time
  (``-X importtime``), and the CPU time compiling its sources would add without bytecode;
* tap -> contactor: the PN532's answer listing the card (InAutoPoll, NbTg = 1), seen on the reader's serial line -> the
  ALLOW_CONTACTOR command seen on the I/O board's serial line, once with an online Authorize on loopback
  and once with a local hit (Authorization Cache, LocalPreAuthorize: no round trip to the CSMS);
* RSS and CPU of the agent process while idle and while charging with 1 s meter values.

Each figure for every OCPP version in ``BENCH_OCPP`` (default ``1.6,2.0.1``: the same charger, agent and simulated
CSMS in either), then all of them side by side, one column per version. ``BENCH_SECONDS`` sets each RSS/CPU window
(default 300 s, as the targets are stated over 5 minutes); ``BENCH_TAPS`` the number of taps (default 30).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.startup import (
    compile_cpu_s,
    ensure_bytecode,
    import_shares,
    parse_importtime,
    process_cpu_s,
    total_import_us,
)
from hal.interfaces import LockState
from hal.ioboard.codec import FrameDecoder
from hal.ioboard.messages import AllowContactor, MessageError, SetLock, StateReport, decode_message
from sim.devices.serial_wire import Direction
from tests.station import CP_ID, Station


def _dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    return path


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _window(pid: int, seconds: float) -> tuple[float, float, float]:
    """(mean RSS MB, max RSS MB, CPU % of one core) over ``seconds``."""
    rss: list[float] = []
    cpu0, t0 = process_cpu_s(pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        rss.append(_rss_mb(pid))
        await asyncio.sleep(min(1.0, seconds / 10))
    cpu = (process_cpu_s(pid) - cpu0) / (time.monotonic() - t0) * 100
    return statistics.mean(rss), max(rss), cpu


def _v201(ocpp: str) -> bool:
    return ocpp == "2.0.1"


async def _wait_started(s: Station, since: int) -> None:
    if _v201(s.ocpp):
        await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=since)
    else:
        await s.wait_status(1, "Charging", since=since)


async def _wait_stopped(s: Station, since: int) -> None:
    if _v201(s.ocpp):
        await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=since)
    else:
        await s.wait_call("StopTransaction", since=since)


async def _boot_times(root: Path, runs: int, ocpp: str) -> tuple[list[float], list[float]]:
    """(wall seconds, agent CPU seconds) from the spawn to the BootNotification at the CSMS, per start."""
    wall, cpu = [], []
    for i in range(runs):
        async with Station(_dir(root, f"boot{i}-{ocpp}"), connectors=1, ocpp=ocpp) as s:
            t0 = time.monotonic()
            await s.start_agent(wait_boot=False)
            await s.wait_call("BootNotification", timeout_s=30)
            wall.append(time.monotonic() - t0)
            assert s.proc is not None
            cpu.append(process_cpu_s(s.proc.pid))
    return wall, cpu


async def _start_imports(root: Path, ocpp: str) -> str:
    """The ``-X importtime`` lines of one start, until booted (they go to the agent's log with its stderr)."""
    async with Station(_dir(root, f"imports-{ocpp}"), connectors=1, ocpp=ocpp) as s:
        s.agent_command = [sys.executable, "-X", "importtime", "-m", "firmware"]
        await s.start_agent()
    return s.log_path.read_text(errors="replace")


async def _tap_latencies(root: Path, taps: int, ocpp: str, *, local: bool = False) -> list[tuple[float, float]]:
    """(tap -> ALLOW_CONTACTOR, the agent's own share of it) per tap. The share leaves out the cable lock's travel
    (SET_LOCK on -> the board's STATE reporting LOCKED): the contactor may close only on a locked cable (ioboard
    1.1, B16), so a socket charger's figure holds the lock motor's time, which no software shortens.
    ``local``: LocalPreAuthorize on and the card in the Authorization Cache (one online Authorize first,
    not counted), so every measured tap is authorized without a round trip to the CSMS."""
    presets = ({"AuthCtrlr.LocalPreAuthorize" if _v201(ocpp) else "LocalPreAuthorize": "true"} if local else {})
    async with Station(_dir(root, f"tap-{'local-' if local else ''}{ocpp}"), connectors=1, presets=presets,
                       ocpp=ocpp) as s:
        s.csms.behaviour.id_tags.accept("04A1B2C3")
        await s.start_agent()
        reader_wire, board_wire = s.charger.wires["reader"], s.charger.wires["board1"]
        seen: dict[str, float] = {}
        tail = bytearray()
        decoder = FrameDecoder()

        def on_reader(direction: Direction, data: bytes) -> None:
            nonlocal tail
            if direction is Direction.TO_HOST:
                tail = (tail + data)[-64:]
                if b"\xd5\x61\x01" in tail:  # InAutoPoll answer (D5 61) listing a target
                    seen.setdefault("tap", time.monotonic())
                    tail.clear()

        async def tap() -> None:
            """Station.tap returns once the driver has seen the card leave: the next tap is a new presentation."""
            await s.tap("04A1B2C3", hold_s=0.5)

        from_board = FrameDecoder()

        def on_board(direction: Direction, data: bytes) -> None:
            for payload in (decoder if direction is Direction.TO_DEVICE else from_board).feed(data):
                try:
                    msg = decode_message(payload).message
                except MessageError:
                    continue
                now = time.monotonic()
                if isinstance(msg, AllowContactor) and msg.on and "allow" not in seen:
                    seen["allow"] = now
                elif isinstance(msg, SetLock) and msg.locked and "tap" in seen:
                    seen.setdefault("lock", now)
                elif isinstance(msg, StateReport) and msg.lock is LockState.LOCKED and "lock" in seen:
                    seen.setdefault("locked", now)

        reader_wire.observers.append(on_reader)
        board_wire.observers.append(on_board)
        latencies = []
        for i in range(taps + 1 if local else taps):
            mark = s.mark()
            s.ev(1).plug()
            await s.wait_status(1, "Occupied" if _v201(ocpp) else "Preparing", since=mark)
            seen.clear()
            await tap()
            await _wait_started(s, mark)
            await s.wait_until(lambda: "allow" in seen, what="ALLOW_CONTACTOR")
            if "tap" in seen and "allow" in seen and not (local and i == 0):
                total = seen["allow"] - seen["tap"]
                travel = seen["locked"] - seen["lock"] if "locked" in seen else 0.0
                latencies.append((total, total - travel))
            await tap()
            await _wait_stopped(s, mark)
            done = s.mark()
            s.ev(1).unplug()
            await s.wait_status(1, "Available", since=done)
        if local:  # only the warm-up tap went to the CSMS
            assert len(s.calls("Authorize")) == 1, "local authorization hits expected"
        return latencies


async def _resources(root: Path, seconds: float, ocpp: str) -> dict[str, tuple[float, float, float]]:
    presets = {"SampledDataCtrlr.TxUpdatedInterval" if _v201(ocpp) else "MeterValueSampleInterval": 1}
    async with Station(_dir(root, f"res-{ocpp}"), connectors=1, presets=presets, ocpp=ocpp) as s:
        await s.start_agent()
        assert s.proc is not None
        pid = s.proc.pid
        await asyncio.sleep(2)
        idle = await _window(pid, seconds)
        s.csms.behaviour.id_tags.accept("04A1B2C3")
        mark = s.mark()
        s.ev(1).plug()
        await s.tap("04A1B2C3")
        await _wait_started(s, mark)
        charging = await _window(pid, seconds)
        st = s.csms.state(CP_ID)
        assert st.transactions201 if _v201(ocpp) else st.transactions
        return {"idle": idle, "charging": charging}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _main() -> None:
    ensure_bytecode()
    seconds = float(os.environ.get("BENCH_SECONDS", "300"))
    taps = int(os.environ.get("BENCH_TAPS", "30"))
    figures: dict[str, dict[str, str]] = {}
    for ocpp in (v.strip() for v in os.environ.get("BENCH_OCPP", "1.6,2.0.1").split(",")):
        print(f"--- OCPP {ocpp}", flush=True)
        figures[ocpp] = await _one_version(ocpp, seconds, taps)
    _side_by_side(figures, seconds)


#: (figure, target) in the order printed side by side
_ROWS = (("boot mean / max (ms)", "<= 1000"), ("boot CPU of the agent, mean (ms)", ""),
         ("modules a start imports / their import time (ms)", ""),
         ("agent sources compiled without bytecode (files / CPU ms)", ""),
         ("tap -> contactor, online Authorize, p50 / p99 (ms)", ""),
         ("tap -> contactor, local hit, p50 / p99 (ms)", "p99 <= 50"),
         ("  the same without the cable lock's travel (online)", ""),
         ("  the same without the cable lock's travel (local hit)", ""),
         ("idle RSS mean / max (MB)", "<= 60"),
         ("idle CPU (% of a core)", "<= 1"), ("charging RSS mean / max (MB)", "<= 60"),
         ("charging CPU (% of a core)", ""))


def _side_by_side(figures: dict[str, dict[str, str]], seconds: float) -> None:
    """The same figures of each OCPP version in one table (the versions as columns)."""
    versions = list(figures)
    print(f"--- side by side (RSS/CPU windows of {seconds:.0f} s)")
    print(f"{'figure':52s}" + "".join(f"{'OCPP ' + v:>18s}" for v in versions) + "   target")
    for name, target in _ROWS:
        print(f"{name:52s}" + "".join(f"{figures[v].get(name, '-'):>18s}" for v in versions) + f"   {target}")


async def _one_version(ocpp: str, seconds: float, taps: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        boots, cpu = await _boot_times(root, 5, ocpp)
        print(f"boot (spawn -> BootNotification at CSMS): mean {statistics.mean(boots) * 1000:.0f} ms, "
              f"max {max(boots) * 1000:.0f} ms over {len(boots)} starts   [target <= 1000 ms]", flush=True)
        out[_ROWS[0][0]] = f"{statistics.mean(boots) * 1000:.0f} / {max(boots) * 1000:.0f}"
        print(f"boot CPU time of the agent at its BootNotification: mean {statistics.mean(cpu) * 1000:.0f} ms, "
              f"min {min(cpu) * 1000:.0f} ms (less load-dependent than wall time)", flush=True)
        out[_ROWS[1][0]] = f"{statistics.mean(cpu) * 1000:.0f}"
        lines = parse_importtime(await _start_imports(root, ocpp))
        shares = ", ".join(f"{name} {us / 1000:.0f}" for name, us in import_shares(lines).most_common(8))
        print(f"a start imports {len(lines)} modules in {total_import_us(lines) / 1000:.0f} ms (-X importtime, "
              f"its overhead included); largest own shares (ms): {shares}", flush=True)
        out[_ROWS[2][0]] = f"{len(lines)} / {total_import_us(lines) / 1000:.0f}"
        files, compiling = compile_cpu_s([line.module for line in lines])
        print(f"without bytecode a start would first compile {files} agent sources: {compiling * 1000:.0f} ms CPU "
              "(a bundle ships the bytecode; a checkout run with PYTHONDONTWRITEBYTECODE pays it every start)",
              flush=True)
        out[_ROWS[3][0]] = f"{files} / {compiling * 1000:.0f}"
        for row, local, what in ((4, False, "online Authorize"), (5, True, "local hit (cache, LocalPreAuthorize)")):
            taken = await _tap_latencies(root, taps, ocpp, local=local)
            lat, own = [t * 1000 for t, _ in taken], [a * 1000 for _, a in taken]
            print(f"tap -> ALLOW_CONTACTOR on the wire, {what}: n={len(lat)} p50 {_pct(lat, .5):.1f} ms, "
                  f"p99 {_pct(lat, .99):.1f} ms, max {max(lat):.1f} ms; without the cable lock's travel (the agent's "
                  f"own share) p50 {_pct(own, .5):.1f} ms, p99 {_pct(own, .99):.1f} ms   [target p99 <= 50 ms for a "
                  "local hit]", flush=True)
            out[_ROWS[row][0]] = f"{_pct(lat, .5):.1f} / {_pct(lat, .99):.1f}"
            out[_ROWS[row + 2][0]] = f"{_pct(own, .5):.1f} / {_pct(own, .99):.1f}"
        res = await _resources(root, seconds, ocpp)
        for name, (mean_rss, max_rss, cpu_pct) in res.items():
            print(f"{name:8s} over {seconds:.0f} s: RSS mean {mean_rss:.1f} MB, max {max_rss:.1f} MB, "
                  f"CPU {cpu_pct:.2f} % of a core   [targets: RSS <= 60 MB, idle CPU <= 1 %]", flush=True)
            out[f"{name} RSS mean / max (MB)"] = f"{mean_rss:.1f} / {max_rss:.1f}"
            out[f"{name} CPU (% of a core)"] = f"{cpu_pct:.2f}"
    return out


def main() -> None:
    sys.setrecursionlimit(10000)
    asyncio.run(_main())


if __name__ == "__main__":
    main()
