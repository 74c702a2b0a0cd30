"""`make run`'s demo, end to end in both OCPP versions: `python -m sim up` (demo on, the builtin CSMS) plays the
same charging session with `--ocpp 1.6` and `--ocpp 2.0.1` — issue 18's "the same charging session runs in
`make run`". Played at `--demo-pace 0.2` (its pauses for the watcher shortened; what it waits for, it waits for), and
checked where the session is billed: at the CSMS (its transcript), a transaction started and ended for the demo card,
with energy between its start and its end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sim.harness.demo import DEMO_CARD

WAIT_S = 60.0  # the whole demo at pace 0.2 takes ~8 s; this bounds a loaded CI machine
ENERGY = "Energy.Active.Import.Register"


def _until(check: Callable[[], Any], what: str, proc: subprocess.Popen[bytes], out: Path) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"sim up exited with {proc.returncode} before {what}: {out.read_text()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {WAIT_S} s: {out.read_text()[-2000:]}")


def _calls(transcript: Path) -> list[dict[str, Any]]:
    """The CALLs and CALLRESULTs the CSMS saw, in order."""
    if not transcript.exists():
        return []
    entries = [json.loads(line) for line in transcript.read_text().splitlines() if line.strip()]
    return [e for e in entries if e["kind"] in ("CALL", "CALLRESULT")]


def _session_16(entries: list[dict[str, Any]]) -> tuple[str, int] | None:
    """(transactionId, Wh) of a StartTransaction the CSMS accepted and its StopTransaction, once both are there."""
    started = {e["unique_id"]: e["payload"] for e in entries
               if e["kind"] == "CALL" and e["action"] == "StartTransaction"}
    for e in entries:
        if e["kind"] == "CALLRESULT" and e["unique_id"] in started:
            start, answer = started[e["unique_id"]], e["payload"]
            assert start["idTag"] == DEMO_CARD and answer["idTagInfo"]["status"] == "Accepted"
            for s in entries:
                if (s["kind"] == "CALL" and s["action"] == "StopTransaction"
                        and s["payload"]["transactionId"] == answer["transactionId"]):
                    return str(answer["transactionId"]), s["payload"]["meterStop"] - start["meterStart"]
    return None


def _register(event: dict[str, Any]) -> float:
    return next(float(v["value"]) for mv in event["meterValue"] for v in mv["sampledValue"]
                if v.get("measurand", ENERGY) == ENERGY)


def _session_201(entries: list[dict[str, Any]]) -> tuple[str, float] | None:
    """(transactionId, Wh) of a TransactionEvent Started and its Ended, once both are there."""
    events = [e["payload"] for e in entries if e["kind"] == "CALL" and e["action"] == "TransactionEvent"]
    started = [e for e in events if e["eventType"] == "Started"]
    for start in started:
        tx = start["transactionInfo"]["transactionId"]
        assert start["idToken"]["idToken"] == DEMO_CARD
        for end in events:
            if end["eventType"] == "Ended" and end["transactionInfo"]["transactionId"] == tx:
                return tx, _register(end) - _register(start)
    return None


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_make_run_demo_session_is_billed_at_the_csms(tmp_path: Path, version: str) -> None:
    state, out = tmp_path / "state", tmp_path / "stdout"
    with out.open("wb") as o:
        proc = subprocess.Popen([sys.executable, "-m", "sim", "up", "--ocpp", version, "--demo-pace", "0.2",
                                 "--control", "127.0.0.1:0", "--state-dir", str(state)],
                                stdout=o, stderr=subprocess.STDOUT)
    try:
        transcript = state / "csms-transcript.jsonl"
        session = _session_16 if version == "1.6" else _session_201
        tx, energy_wh = _until(lambda: session(_calls(transcript)), "the session at the CSMS", proc, out)
        assert tx and energy_wh > 0, f"transaction {tx}: {energy_wh} Wh"
        _until(lambda: "demo finished" in out.read_text(), "the demo's end", proc, out)
        shown = out.read_text()
        for trouble in ("not been accepted", "did not close the contactor", "still closed", "demo stopped"):
            assert trouble not in shown, shown
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
