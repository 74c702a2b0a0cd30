"""``python -m sim up`` as a product: control API and ``python -m sim ctl``, against a real subprocess.

The simulator runs as CSMS developers run it (``--control 127.0.0.1:0 --no-demo --csms builtin``), in a
temporary state dir; every endpoint and CLI command is exercised over real HTTP, and the agent it
supervises is a real process too. Pure parts (argument parsing, TOML quoting, the demo's message
summaries, agent output parsing, the pilot physics, the HTTP request parser) are tested in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from firmware.config import load_config
from hal.interfaces import PilotState
from sim.__main__ import parse_host_port, parse_override
from sim.csms.transcript import Direction, EntryKind, Transcript
from sim.devices.ev import EvModel
from sim.devices.interfaces import BoardFault, ElectricalState
from sim.harness import control_cli, csms_commands
from sim.harness.ab_slots import SimSlots
from sim.harness.agent_supervisor import AgentOutput, AgentSupervisor
from sim.harness.charger import ChargerSpec, SimulatedCharger, SimulatedConnector, toml_string
from sim.harness.control_api import ApiError, Body, read_request
from sim.harness.demo import format_entry, summarize_payload
from tests.station import WAIT_S

CP = "SIM-CP-TEST"
CARD = "04A2B3C4"
PRESET = ("ConnectionTimeOut", "45")


# ---- a running simulator ----------------------------------------------------------------------------------

@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    state_dir: Path
    url: str
    stdout: Path

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.call(method, path, body)
        assert status == 200, answer
        return answer

    def state(self) -> Any:
        return self.ok("GET", "/state")

    def log_mark(self) -> int:
        return int(self.ok("GET", "/agent/log?n=1")["next_seq"])

    def wait_log(self, match: Callable[[dict[str, Any]], bool], since: int,
                 timeout_s: float = WAIT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lines: list[dict[str, Any]] = self.ok("GET", f"/agent/log?since={since}&n=5000")["lines"]
            for line in lines:
                if match(line):
                    return line
            time.sleep(0.05)
        raise AssertionError("no such agent log line within the timeout")


def wait_agent_running(sim: Sim) -> None:
    """Until the current agent process has finished its start: its devices open (a card tapped before that is never
    seen, as on a real charger), its signal handlers set (a SIGTERM during start-up ends it before it can log its
    stop). The process is known by its pid in its "agent starting" line: right after a power-on the log's latest
    start is still the previous process's, whose "agent running" says nothing of the new one."""
    wait_until(lambda: sim.state()["agent"]["running"], what="agent process")

    def started() -> bool:
        pid = sim.state()["agent"]["pid"]
        lines: list[dict[str, Any]] = sim.ok("GET", "/agent/log?since=0&n=5000")["lines"]
        starts = [i for i, x in enumerate(lines) if x.get("msg") == "agent starting" and x.get("pid") == pid]
        return bool(starts) and any(x.get("msg") == "agent running" for x in lines[starts[-1]:])
    wait_until(started, what="the current agent process's start finished")


def wait_until(check: Callable[[], Any], timeout_s: float = WAIT_S, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def start_sim(state_dir: Path, *extra: str) -> Sim:
    out = state_dir.parent / (state_dir.name + ".stdout")
    err = state_dir.parent / (state_dir.name + ".stderr")
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim", "up", "--control", "127.0.0.1:0", "--no-demo",
             "--state-dir", str(state_dir), *extra], stdout=o, stderr=e)
    control = state_dir / "control.json"
    deadline = time.monotonic() + WAIT_S
    while not control.exists():
        if proc.poll() is not None:
            raise AssertionError(f"sim up exited with {proc.returncode}: {err.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"sim up did not write control.json within {WAIT_S} s")
        time.sleep(0.05)
    return Sim(proc, state_dir, json.loads(control.read_text())["url"], out)


def stop_sim(sim: Sim, sig: int = signal.SIGTERM) -> int:
    if sim.proc.poll() is None:
        sim.proc.send_signal(sig)
        try:
            return sim.proc.wait(15)
        except subprocess.TimeoutExpired:
            sim.proc.kill()
            sim.proc.wait()
            raise
    return sim.proc.returncode


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (the agent's has its config path, in the state dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    s = start_sim(tmp_path_factory.mktemp("sim") / "state", "--csms", "builtin", "--id", CP,
                  "--config-override", f"{PRESET[0]}={PRESET[1]}", "--accept", CARD)
    try:
        wait_agent_running(s)
        yield s
    finally:
        stop_sim(s)


# ---- start-up -------------------------------------------------------------------------------------------

def test_ready_line_control_json_and_agent_config(sim: Sim) -> None:
    ready = json.loads(sim.stdout.read_text().splitlines()[0])
    control = json.loads((sim.state_dir / "control.json").read_text())
    assert ready["event"] == "ready" and ready["url"] == control["url"] == sim.url
    assert control["pid"] == sim.proc.pid and control["state_dir"] == str(sim.state_dir.resolve())
    config = load_config(control["agent_config"])  # the agent's own validator accepts what we wrote
    state = sim.state()
    assert config.charge_point_id == CP
    assert config.ocpp is not None and config.ocpp.csms_url == state["csms"]["url"] == control["csms_url"]
    assert config.ocpp.presets == {PRESET[0]: PRESET[1]}
    assert (sim.state_dir / "agent.toml").stat().st_mode & 0o077 == 0  # may hold a password
    assert state["csms"]["mode"] == "builtin" and state["csms"]["identity_url"].endswith("/" + CP)


def test_state_describes_agent_connectors_reader_and_csms(sim: Sim) -> None:
    state = sim.state()
    agent = state["agent"]
    assert agent["running"] and agent["powered"] and alive(agent["pid"]) and agent["starts"] >= 1
    assert set(state["connectors"]) == {"1", "2"}
    c = state["connectors"]["2"]
    assert (c["plugged"], c["pilot"], c["contactor_closed"], c["offered_current_a"]) == (False, "A", False, 0.0)
    assert c["ev_current_a"] == [0.0, 0.0, 0.0] and c["energy_wh"] == 0.0 and c["ev"]["max_current_a"] == 32.0
    assert state["reader"] == {"id": 1, "model": "pn532", "card": None, "silent": False}
    assert c["status"] is None or c["status"]["status"] == "Available"  # as the agent last logged it, if yet
    assert wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected to the builtin CSMS")


# ---- EV and card ------------------------------------------------------------------------------------------

def test_plug_shows_pilot_b_and_the_agents_status(sim: Sim) -> None:
    answer = sim.ok("POST", "/connectors/1/plug")
    assert answer["changed"] and answer["plugged"] and answer["pilot"] == "B"  # no PWM yet: the EV waits in B
    assert not sim.ok("POST", "/connectors/1/plug")["changed"]  # idempotent
    status = wait_until(lambda: (sim.state()["connectors"]["1"]["status"] or {}).get("status") == "Preparing",
                        what="status Preparing")
    assert status
    record = sim.state()["connectors"]["1"]["status"]
    assert record["error_code"] == "NoError" and record["at"]
    answer = sim.ok("POST", "/connectors/1/unplug")
    assert answer["changed"] and not answer["plugged"] and answer["pilot"] == "A"
    wait_until(lambda: sim.state()["connectors"]["1"]["status"]["status"] == "Available", what="Available again")


def test_ev_settings_and_their_validation(sim: Sim) -> None:
    answer = sim.ok("POST", "/connectors/2/ev", {"max_current_a": 16, "paused": True})
    assert answer["ev"]["max_current_a"] == 16.0 and answer["ev"]["paused"] is True
    assert sim.state()["connectors"]["2"]["ev"]["paused"] is True
    answer = sim.ok("POST", "/connectors/2/ev", {"paused": False, "max_current_a": 32, "ventilation": False})
    assert answer["ev"] == {**answer["ev"], "paused": False, "max_current_a": 32.0}
    for body, words in (({"max_current_a": "16"}, "expected a number"), ({"paused": "yes"}, "true or false"),
                        ({"max_current_a": 500}, "from 0 to 80"), ({"colour": "red"}, "unknown field"),
                        ({}, "nothing to change"), ({"max_current_a": True}, "expected a number")):
        status, error = sim.call("POST", "/connectors/2/ev", body)
        assert status == 400 and words in error["error"], (body, error)
    assert sim.state()["connectors"]["2"]["ev"]["max_current_a"] == 32.0  # nothing half-applied


def test_tap_reaches_the_agent(sim: Sim) -> None:
    mark = sim.log_mark()
    answer = sim.ok("POST", "/rfid/tap", {"uid": "deadbeef", "hold_s": 1.0})  # several polls of the agent's
    assert answer == {"uid": "DEADBEEF", "reader": 1, "hold_s": 1.0}
    assert sim.state()["reader"]["card"] == "DEADBEEF"
    line = sim.wait_log(lambda x: x.get("event") == "CardPresented", mark)
    assert line["uid"].endswith("BEEF") and line["device"] == "reader1"  # the agent may mask the rest
    wait_until(lambda: sim.state()["reader"]["card"] is None, what="card removed after hold_s")
    for body, status, words in (({"uid": "XYZ"}, 400, "hex"), ({"uid": "04A2B3"}, 400, "4, 7 or 10"),
                                ({"uid": 42}, 400, "string"), ({"uid": CARD, "reader": 2}, 404, "no reader"),
                                ({"uid": CARD, "hold_s": 0}, 400, "hold_s")):
        code, error = sim.call("POST", "/rfid/tap", body)
        assert code == status and words in error["error"], (body, error)


# ---- faults -----------------------------------------------------------------------------------------------

def test_device_faults_are_listed_until_cleared(sim: Sim) -> None:
    for fault in ({"device": "pilot", "connector": 2, "kind": "rcd_trip"},
                  {"device": "board", "connector": 2, "kind": "overtemperature"},
                  {"device": "pilot", "connector": 2, "kind": "lock_stuck"},
                  {"device": "meter", "connector": 2, "kind": "silent"},
                  {"device": "rfid", "kind": "silent"}):
        answer = sim.ok("POST", "/faults", {**fault, "active": True})
        device = "pilot" if fault["device"] == "board" else fault["device"]
        listed = {"device": device, "connector": fault.get("connector"), "kind": fault["kind"]}
        assert answer["active"] and listed in answer["active_faults"]
        assert listed in sim.state()["faults"]
        if fault["device"] == "rfid":
            assert sim.state()["reader"]["silent"]
        if fault["kind"] == "lock_stuck":  # the lock is where it was (open: no transaction on connector 2)
            assert sim.state()["connectors"]["2"]["cable_locked"] is False
        answer = sim.ok("POST", "/faults", {**fault, "active": False})
        assert not answer["active"] and listed not in sim.state()["faults"]
    assert sim.state()["faults"] == []


def test_line_faults_act_on_the_devices_wire(sim: Sim) -> None:
    mark = sim.log_mark()
    cut = sim.ok("POST", "/faults", {"device": "pilot", "connector": 2, "kind": "line_silent"})
    assert (cut["wire"], cut["direction"], cut["active"]) == ("board2", "both", True)
    # the agent's I/O board driver hears nothing for its watchdog time and reports the lost link
    lost = sim.wait_log(lambda x: x.get("event") == "DeviceFault" and x.get("device") == "board2", mark)
    assert lost["code"] == "link_lost"
    sim.ok("POST", "/faults", {"device": "pilot", "connector": 2, "kind": "line_silent", "active": False})
    sim.wait_log(lambda x: x.get("event") == "DeviceRecovered" and x.get("device") == "board2", mark)
    noise = sim.ok("POST", "/faults", {"device": "meter", "connector": 1, "kind": "noise", "probability": 0.001})
    assert (noise["wire"], noise["direction"], noise["probability"]) == ("rs485", "to_host", 0.001)
    sim.ok("POST", "/faults", {"device": "meter", "connector": 1, "kind": "noise", "active": False})
    garbage = sim.ok("POST", "/faults", {"device": "rfid", "kind": "garbage", "count": 8})
    assert (garbage["wire"], garbage["count"], garbage["active"]) == ("reader", 8, False)  # one shot
    truncate = sim.ok("POST", "/faults", {"device": "rfid", "kind": "truncate", "direction": "to_device"})
    assert (truncate["count"], truncate["direction"], truncate["active"]) == (1, "to_device", False)
    assert sim.state()["faults"] == []


def test_bad_fault_requests_are_refused_with_a_reason(sim: Sim) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"device": "toaster", "kind": "silent"}, 400, "device"),
        ({"device": "pilot", "connector": 1, "kind": "melted"}, 400, "unknown pilot fault kind"),
        ({"device": "meter", "connector": 1, "kind": "rcd_trip"}, 400, "unknown meter fault kind"),
        ({"device": "pilot", "kind": "rcd_trip"}, 400, "connector: required"),
        ({"device": "pilot", "connector": 7, "kind": "rcd_trip"}, 404, "no connector"),
        ({"device": "pilot", "connector": 1, "kind": "rcd_trip", "active": "yes"}, 400, "active"),
        ({"device": "meter", "connector": 1, "kind": "noise", "probability": 2}, 400, "probability"),
        ({"device": "rfid", "kind": "noise", "direction": "sideways"}, 400, "direction"),
        ({"device": "rfid", "kind": "garbage", "count": 0}, 400, "count"),
        ({"device": "rfid", "kind": "silent", "when": "now"}, 400, "unknown field"),
    ]
    for body, status, words in cases:
        code, answer = sim.call("POST", "/faults", body)
        assert code == status and words in answer["error"], (body, answer)
    code, answer = sim.call("POST", "/faults", {"device": "pilot", "connector": 1, "kind": "melted"})
    assert "rcd_trip" in answer["known_kinds"] and "line_silent" in answer["known_kinds"]
    assert sim.state()["faults"] == []


# ---- agent power ------------------------------------------------------------------------------------------

def test_power_cut_kills_the_agent_and_power_on_starts_a_new_one(sim: Sim) -> None:
    before = sim.state()["agent"]
    sim.ok("POST", "/connectors/2/plug")
    cut = sim.ok("POST", "/agent/power-cut")
    assert cut["killed_pid"] == before["pid"]
    agent = sim.state()["agent"]
    assert (agent["running"], agent["pid"], agent["powered"]) == (False, None, False)
    assert agent["last_exit_code"] == -signal.SIGKILL and agent["state"] == "powered_off"
    assert not alive(before["pid"])
    assert sim.state()["connectors"]["2"]["plugged"]  # the hardware keeps its state
    assert sim.ok("POST", "/agent/power-cut")["killed_pid"] is None  # already off: nothing to kill
    on = sim.ok("POST", "/agent/power-on")["agent"]
    assert on["running"] and on["pid"] != before["pid"] and alive(on["pid"])
    assert on["starts"] == before["starts"] + 1 and on["state"] == "running"
    assert sim.ok("POST", "/agent/power-on")["agent"]["pid"] == on["pid"]  # already on
    sim.ok("POST", "/connectors/2/unplug")
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent reconnected after power-on")


# ---- builtin CSMS -----------------------------------------------------------------------------------------

async def _fake_charge_point(url: str, answer: Callable[[list[Any]], list[Any]], ready: asyncio.Event,
                             done: asyncio.Event) -> None:
    async with connect(url, subprotocols=["ocpp1.6"], open_timeout=WAIT_S) as ws:  # type: ignore[list-item]
        ready.set()
        while not done.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 0.1))
            except TimeoutError:
                continue
            await ws.send(json.dumps(answer(frame)))


async def _calls_through_a_fake_charge_point(sim: Sim, csms_url: str) -> list[tuple[int, Any]]:
    def answer(frame: list[Any]) -> list[Any]:
        if frame[2] == "Reset":
            return [3, frame[1], {"status": "Accepted"}]
        return [4, frame[1], "NotSupported", "not here", {}]

    ready, done = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_fake_charge_point(csms_url + "/FAKE-CP", answer, ready, done))
    await asyncio.wait_for(ready.wait(), WAIT_S)
    try:
        results = []
        for body in ({"action": "Reset", "payload": {"type": "Soft"}, "cp_id": "FAKE-CP"},
                     {"action": "ClearCache", "cp_id": "FAKE-CP"}):
            results.append(await asyncio.to_thread(sim.call, "POST", "/csms/call", body))
        return results
    finally:
        done.set()
        await task


def test_csms_call_reaches_the_charge_point_and_returns_its_answer(sim: Sim) -> None:
    csms_url = sim.state()["csms"]["url"]
    (ok_status, ok), (err_status, err) = asyncio.run(_calls_through_a_fake_charge_point(sim, csms_url))
    assert ok_status == 200 and ok == {"cp_id": "FAKE-CP", "action": "Reset", "response": {"status": "Accepted"}}
    assert err_status == 502 and err["call_error"]["code"] == "NotSupported" and "CALLERROR" in err["error"]
    # the real agent: the configuration key preset at first boot (--config-override) is what it reports
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    answer = sim.ok("POST", "/csms/call", {"action": "GetConfiguration", "payload": {"key": [PRESET[0]]}})
    assert answer["response"]["configurationKey"][0]["value"] == PRESET[1]
    for body, status, words in (
            ({"action": "Reset", "payload": {"type": "Bogus"}}, 400, "would be invalid"),
            ({"action": "Explode"}, 400, "would be invalid"),
            ({"action": "Reset", "payload": [1]}, 400, "payload: expected a JSON object"),
            ({"action": "Reset", "payload": {"type": "Soft"}, "cp_id": "NOBODY"}, 409, "not connected"),
            ({"payload": {}}, 400, "action")):
        code, answer = sim.call("POST", "/csms/call", body)
        assert code == status and words in answer["error"], (body, answer)


def test_csms_id_tags_transcript_and_online(sim: Sim) -> None:
    assert sim.ok("POST", "/csms/id-tags", {"id_tag": "CAFE0001", "status": "Blocked"})["status"] == "Blocked"
    assert sim.ok("POST", "/csms/id-tags", {"id_tag": "CAFE0001", "status": None})["status"] is None
    code, answer = sim.call("POST", "/csms/id-tags", {"id_tag": "CAFE0001", "status": "Maybe"})
    assert code == 400 and "Maybe" in answer["error"]
    transcript = sim.ok("GET", "/csms/transcript?n=3")
    assert len(transcript["entries"]) == 3 and transcript["next_seq"] >= 3
    first = sim.ok("GET", "/csms/transcript?since=0&n=2")["entries"]
    assert [e["seq"] for e in first] == [0, 1] and first[0]["kind"] == "connect"
    assert sim.ok("POST", "/csms/online", {"online": False})["online"] is False
    state = sim.state()["csms"]
    assert state["online"] is False and state["connected"] is False
    assert sim.ok("POST", "/csms/online", {"online": True})["online"] is True
    code, answer = sim.call("POST", "/csms/online", {"online": "no"})
    assert code == 400


# ---- smart charging through the builtin CSMS ----------------------------------------------------------------

def wait_connector(sim: Sim, n: int, check: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    """Until ``check`` holds for connector ``n`` of ``GET /state``; that connector."""
    found: list[dict[str, Any]] = []

    def holds() -> bool:
        found[:] = [sim.state()["connectors"][str(n)]]
        return check(found[0])
    wait_until(holds, what=what)
    return found[0]


def offers(amps: float) -> Callable[[dict[str, Any]], bool]:
    """The simulated board offers ``amps`` on the pilot, and the agent says it applies ``amps``."""
    return lambda c: (abs(c["offered_current_a"] - amps) < 0.1 and c["limit"] is not None
                      and c["limit"]["amps"] == amps)


def tap_card(sim: Sim) -> None:
    """One presentation of the card: tapped, then until the agent's reader saw it go (a tap while it is still there
    is the same presentation to the agent)."""
    mark = sim.log_mark()
    sim.ok("POST", "/rfid/tap", {"uid": CARD, "hold_s": 0.5})
    sim.wait_log(lambda x: x.get("logger") == "hal.pn532.driver" and str(x.get("msg", "")).endswith("removed"), mark)


def start_charging(sim: Sim, n: int) -> int:
    """Plug, tap the accepted card, until Charging; the transaction id the builtin CSMS gave."""
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    mark = sim.ok("GET", "/csms/transcript?n=1")["next_seq"]
    sim.ok("POST", f"/connectors/{n}/plug")
    wait_until(lambda: (sim.state()["connectors"][str(n)]["status"] or {}).get("status") == "Preparing",
               what="Preparing")
    tap_card(sim)
    wait_connector(sim, n, lambda c: (c["status"] or {}).get("status") == "Charging", "Charging")
    entries = sim.ok("GET", f"/csms/transcript?since={mark}&n=100000")["entries"]
    return int(next(e["payload"]["transactionId"] for e in entries
                    if e["kind"] == "CALLRESULT" and e["action"] == "StartTransaction"))


def stop_charging(sim: Sim, n: int) -> None:
    tap_card(sim)
    wait_connector(sim, n, lambda c: (c["status"] or {}).get("status") == "Finishing", "Finishing")
    sim.ok("POST", f"/connectors/{n}/unplug")
    wait_connector(sim, n, lambda c: (c["status"] or {}).get("status") == "Available", "Available")


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_profiles_set_limit_the_pilot_show_in_the_state_and_clear(sim: Sim) -> None:
    tx_id = start_charging(sim, 1)
    wait_connector(sim, 1, lambda c: abs(c["offered_current_a"] - 32.0) < 0.1, "32 A offered")
    # a TxDefaultProfile for every connector, in force now, with a boundary an hour ahead
    answer = sim.ok("POST", "/csms/charging-profiles", {"connector": 0, "purpose": "TxDefaultProfile",
                                                         "periods": [[0, 10], [3600, 12]]})
    assert answer["response"] == {"status": "Accepted"} and answer["action"] == "SetChargingProfile"
    default = answer["request"]["csChargingProfiles"]
    assert (default["chargingProfileKind"], default["stackLevel"], default["chargingSchedule"]["chargingRateUnit"],
            default["chargingSchedule"]["chargingSchedulePeriod"]) == (
        "Absolute", 0, "A", [{"startPeriod": 0, "limit": 10}, {"startPeriod": 3600, "limit": 12}])
    start = when(default["chargingSchedule"]["startSchedule"])
    assert abs((start - datetime.now(UTC)).total_seconds()) < WAIT_S  # "now" by default
    c = wait_connector(sim, 1, offers(10.0), "10 A on the pilot and in the agent's limit")
    assert (c["limit"]["limited_by"], c["limit"]["sources"], c["limit"]["charger_sources"]) == (
        ["ocpp"], {"ocpp": 10.0}, {})
    ocpp = c["limit"]["ocpp"]
    assert ocpp["amps"] == 10.0 and ocpp["charger_amps"] is None
    assert when(ocpp["next_change"]) == start + timedelta(seconds=3600)
    wait_connector(sim, 2, lambda c: c["limit"]["amps"] == 10.0, "connector 0's profile on connector 2 (no EV)")
    # a TxProfile for the running transaction (found by the CSMS) wins over the default
    answer = sim.ok("POST", "/csms/charging-profiles", {"connector": 1, "purpose": "TxProfile", "kind": "Relative",
                                                         "periods": [[0, 8]], "stack_level": 2})
    tx_profile = answer["request"]["csChargingProfiles"]
    assert answer["response"]["status"] == "Accepted" and tx_profile["transactionId"] == tx_id
    assert tx_profile["chargingProfileId"] > default["chargingProfileId"]  # never replaces one by accident
    assert "startSchedule" not in tx_profile["chargingSchedule"]
    wait_connector(sim, 1, offers(8.0), "8 A from the TxProfile")
    composite = sim.ok("GET", "/csms/composite-schedule?connector=1&duration_s=600&unit=W")
    assert composite["request"] == {"connectorId": 1, "duration": 600, "chargingRateUnit": "W"}
    schedule = composite["response"]["chargingSchedule"]
    assert composite["response"]["status"] == "Accepted" and schedule["chargingRateUnit"] == "W"
    assert [p["limit"] for p in schedule["chargingSchedulePeriod"]] == [8 * 3 * 230]
    # cleared by id: the default again; then everything: the rating
    answer = sim.ok("POST", "/csms/charging-profiles/clear", {"id": tx_profile["chargingProfileId"]})
    assert answer["request"] == {"id": tx_profile["chargingProfileId"]} and answer["response"]["status"] == "Accepted"
    wait_connector(sim, 1, offers(10.0), "back to the TxDefaultProfile's 10 A")
    assert sim.ok("POST", "/csms/charging-profiles/clear", {})["response"]["status"] == "Accepted"
    c = wait_connector(sim, 1, offers(32.0), "back to the rating")
    assert (c["limit"]["limited_by"], c["limit"]["sources"], c["limit"]["ocpp"]["amps"]) == (["rating"], {}, None)
    assert c["limit"]["ocpp"]["next_change"] is None
    assert sim.ok("POST", "/csms/charging-profiles/clear", {})["response"]["status"] == "Unknown"
    stop_charging(sim, 1)


def test_profile_requests_are_checked_before_anything_is_sent(sim: Sim) -> None:
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    mark = sim.ok("GET", "/csms/transcript?n=1")["next_seq"]
    base = {"connector": 0, "purpose": "TxDefaultProfile", "periods": [[0, 10]]}
    for change, words in (
            ({"connector": None}, "connector: expected an integer"),
            ({"purpose": "Bogus"}, "purpose: expected one of ChargePointMaxProfile"),
            ({"periods": []}, "periods: expected a non-empty list"),
            ({"periods": [[0]]}, "periods[0]"), ({"periods": [[0.5, 10]]}, "whole numbers"),
            ({"periods": [[0, -1]]}, "limit must be >= 0"),
            ({"periods": [[0, 16.05]]}, "would be invalid: PropertyConstraintViolation"),  # not a multiple of 0.1
            ({"unit": "kW"}, "unit: expected one of A, W"),
            ({"kind": "Relative", "start": "now"}, "Relative profile starts with its transaction"),
            ({"start": "tomorrow"}, "start: expected now, +SECONDS or an ISO 8601"),
            ({"start": "2030-01-01T00:00:00"}, "no UTC offset"),
            ({"kind": "Recurring", "recurrency": "Monthly"}, "recurrency: expected one of Daily, Weekly"),
            ({"recurrency": "Daily"}, "recurrency is for Recurring profiles"),
            ({"transaction_id": 1}, "transaction id is for a TxProfile"),
            ({"colour": "red"}, "unknown field(s) colour")):
        body = {k: v for k, v in {**base, **change}.items() if v is not None}
        status, answer = sim.call("POST", "/csms/charging-profiles", body)
        assert status == 400 and words in answer["error"], (change, answer)
    for query, words in (("connector=1", "duration_s are required"), ("connector=1&duration_s=60&unit=kW", "unit"),
                         ("connector=1&duration_s=x", "query duration_s"), ("connector=1&duration_s=60&when=now",
                                                                            "unknown query parameter(s) when"),
                         ("connector=1&duration_s=60&timeout_s=0", "query timeout_s")):
        status, answer = sim.call("GET", f"/csms/composite-schedule?{query}")
        assert status == 400 and words in answer["error"], (query, answer)
    status, answer = sim.call("POST", "/csms/charging-profiles/clear", {"purpose": "Bogus"})
    assert status == 400 and "purpose" in answer["error"]
    sent = [e for e in sim.ok("GET", f"/csms/transcript?since={mark}&n=100000")["entries"]
            if e["kind"] == "CALL" and e["direction"] == "to_cp"]
    assert sent == []  # nothing went out
    for unknown in ({**base, "cp_id": "NOBODY"}, {**base, "purpose": "TxProfile", "connector": 1, "cp_id": "NOBODY"}):
        status, answer = sim.call("POST", "/csms/charging-profiles", unknown)
        assert status == 409 and answer["cp_id"] == "NOBODY" and "not connected" in answer["error"]
    # the charge point's own refusals are its answers (200): no transaction for a TxProfile, an unknown connector
    answer = sim.ok("POST", "/csms/charging-profiles", {**base, "connector": 2, "purpose": "TxProfile"})
    assert "transactionId" not in answer["request"]["csChargingProfiles"] and answer["response"]["status"] == "Rejected"
    assert sim.ok("GET", "/csms/composite-schedule?connector=9&duration_s=60")["response"]["status"] == "Rejected"


def test_ctl_profile_commands(sim: Sim) -> None:
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    code, answer = run_ctl(sim, "profile", "set", "--connector", "0", "--purpose", "TxDefaultProfile",
                           "--period", "0:16", "--period", "3600:10:1", "--stack-level", "1", "--id", "41",
                           "--duration", "7200", "--start", "+0")
    assert code == 0 and answer["response"]["status"] == "Accepted"
    sent = answer["request"]["csChargingProfiles"]
    assert (sent["chargingProfileId"], sent["stackLevel"], sent["chargingSchedule"]["duration"]) == (41, 1, 7200)
    assert sent["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16}, {"startPeriod": 3600, "limit": 10, "numberPhases": 1}]
    # well inside the profile's 7200 s (its start is a little before the composite's)
    code, answer = run_ctl(sim, "profile", "composite", "--connector", "1", "--duration", "5400", "--unit", "A")
    periods = answer["response"]["chargingSchedule"]["chargingSchedulePeriod"]
    assert code == 0 and [p["limit"] for p in periods] == [16, 10]
    code, answer = run_ctl(sim, "profile", "set", "--connector", "0", "--purpose", "ChargePointMaxProfile",
                           "--period", "0:22080", "--unit", "W", "--kind", "Recurring", "--recurrency", "Weekly")
    assert code == 0 and answer["response"]["status"] == "Accepted"
    assert answer["request"]["csChargingProfiles"]["recurrencyKind"] == "Weekly"
    code, answer = run_ctl(sim, "profile", "clear", "--purpose", "ChargePointMaxProfile", "--connector", "0")
    assert code == 0 and answer["request"] == {"connectorId": 0, "chargingProfilePurpose": "ChargePointMaxProfile"}
    assert answer["response"]["status"] == "Accepted"
    assert run_ctl(sim, "profile", "clear", "--id", "41")[1]["response"]["status"] == "Accepted"
    assert run_ctl(sim, "profile", "clear", "--id", "41")[1]["response"]["status"] == "Unknown"
    for args in (["set", "--connector", "0", "--purpose", "TxDefaultProfile", "--period", "0-16"],
                 ["set", "--connector", "0", "--purpose", "Bogus", "--period", "0:16"],
                 ["set", "--purpose", "TxDefaultProfile", "--period", "0:16"],  # no connector
                 ["set", "--connector", "0", "--purpose", "TxDefaultProfile"],  # no period
                 ["composite", "--connector", "1"], ["frobnicate"], []):
        assert run_ctl(sim, "profile", *args)[0] == control_cli.EXIT_USAGE, args
    code, answer = run_ctl(sim, "profile", "set", "--connector", "0", "--purpose", "TxDefaultProfile",
                           "--period", "0:16", "--kind", "Relative", "--start", "now")
    assert code == control_cli.EXIT_HTTP_ERROR and "Relative" in answer["error"]


def test_ctl_local_list_commands(sim: Sim) -> None:
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    assert run_ctl(sim, "local-list", "version") == (0, {"cp_id": CP, "action": "GetLocalListVersion",
                                                         "response": {"listVersion": 0}})
    code, answer = run_ctl(sim, "local-list", "send", "--version", "1", "--entry", "CAFE0001",
                           "--entry", "CAFE0002:Blocked:FLEET")
    assert code == 0 and answer["requests"] == [{"version": 1, "update_type": "Full", "entries": 2,
                                                 "status": "Accepted"}]
    code, answer = run_ctl(sim, "local-list", "send", "--version", "2", "--differential", "--remove", "CAFE0002")
    assert code == 0 and answer["response"] == {"status": "Accepted"}
    sent = [e["payload"] for e in sim.ok("GET", "/csms/transcript?n=50")["entries"]
            if e["action"] == "SendLocalList" and e["kind"] == "CALL"][-1]
    assert sent == {"listVersion": 2, "updateType": "Differential", "localAuthorizationList": [{"idTag": "CAFE0002"}]}
    code, answer = run_ctl(sim, "local-list", "send", "--version", "2", "--differential", "--entry", "CAFE0003")
    assert code == 0 and answer["response"] == {"status": "VersionMismatch"}  # the charger's answer: a 200
    code, answer = run_ctl(sim, "local-list", "send", "--version", "10", "--generate", "2500", "--chunk", "1000",
                           "--status", "Blocked")
    assert code == 0 and answer["complete"] is True
    assert [(r["version"], r["update_type"], r["entries"]) for r in answer["requests"]] == [
        (10, "Full", 1000), (11, "Differential", 1000), (12, "Differential", 500)]
    assert run_ctl(sim, "local-list", "version")[1]["response"] == {"listVersion": 12}
    for args in (["--version", "3", "--entry", "X:Bogus"], ["--version", "3", "--generate", "2", "--entry", "X"],
                 ["--version", "3", "--prefix", "P"], ["--entry", "X"], ["--version", "3", "--entry", "a:b:c:d"]):
        assert run_ctl(sim, "local-list", "send", *args)[0] == control_cli.EXIT_USAGE, args
    code, answer = run_ctl(sim, "local-list", "send", "--version", "13", "--differential", "--chunk", "10")
    assert code == control_cli.EXIT_HTTP_ERROR and "Full" in answer["error"]
    code, answer = sim.call("POST", "/csms/local-list", {"version": 13, "entries": [{"id_tag": "X", "expiry": "+1"}]})
    assert code == 400 and "need a status" in answer["error"]
    # an empty list again: the tests after this one see the charger as they found it
    assert run_ctl(sim, "local-list", "send", "--version", "13")[1]["response"] == {"status": "Accepted"}
    assert run_ctl(sim, "local-list", "version")[1]["response"] == {"listVersion": 0}


def test_ctl_trigger(sim: Sim) -> None:
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    since = sim.ok("GET", "/csms/transcript?n=1")["next_seq"]
    code, answer = run_ctl(sim, "trigger", "StatusNotification", "--connector", "2")
    assert code == 0 and answer["response"] == {"status": "Accepted"}
    assert answer["request"] == {"requestedMessage": "StatusNotification", "connectorId": 2}

    def triggered() -> bool:
        entries = sim.ok("GET", f"/csms/transcript?since={since}&n=1000")["entries"]
        return any(e["action"] == "StatusNotification" and e["kind"] == "CALL" and e["payload"]["connectorId"] == 2
                   for e in entries)
    wait_until(triggered, what="the triggered StatusNotification")
    code, answer = run_ctl(sim, "trigger", "MeterValues", "--connector", "9")
    assert code == 0 and answer["response"] == {"status": "Rejected"}  # the charge point's answer: a 200
    assert run_ctl(sim, "trigger", "Heartbeat")[1]["request"] == {"requestedMessage": "Heartbeat"}
    code, answer = run_ctl(sim, "trigger", "LogStatusNotification")  # 2.0.1's: refused for the 1.6 CSMS
    assert code == control_cli.EXIT_HTTP_ERROR and "message: expected one of" in answer["error"]
    assert run_ctl(sim, "trigger", "NoSuchMessage")[0] == control_cli.EXIT_USAGE
    code, answer = sim.call("POST", "/csms/trigger", {"message": "Nope"})
    assert code == 400 and "message: expected one of" in answer["error"]
    assert sim.call("POST", "/csms/trigger", {"message": "Heartbeat", "connector": -1})[0] == 400
    # the client offers what either version lists (the API checks the version's: tests/test_sim_csms_commands.py)
    assert set(control_cli.TRIGGER_MESSAGES) == set(csms_commands.TRIGGER_MESSAGES["1.6"]) | set(
        csms_commands.TRIGGER_MESSAGES["2.0.1"])


def test_ctl_csms_verbs_in_16(sim: Sim) -> None:
    """The operator's verbs on the 1.6 builtin CSMS send the 1.6 messages; 2.0.1-only ones are a 400."""
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    code, answer = run_ctl(sim, "clear-cache")
    assert code == 0 and answer["action"] == "ClearCache" and answer["response"]["status"] == "Accepted"
    code, answer = run_ctl(sim, "get-variables", "HeartbeatInterval")
    assert code == 0 and answer["action"] == "GetConfiguration"
    assert [k["key"] for k in answer["response"]["configurationKey"]] == ["HeartbeatInterval"]
    code, answer = run_ctl(sim, "set-variable", PRESET[0], PRESET[1])  # the value it has: nothing changes
    assert code == 0 and answer["request"] == {"key": PRESET[0], "value": PRESET[1]}
    assert answer["response"]["status"] == "Accepted"
    for status in ("inoperative", "operative"):
        code, answer = run_ctl(sim, "availability", status, "--connector", "2")
        assert code == 0 and answer["request"] == {"connectorId": 2, "type": status.capitalize()}
        assert answer["response"]["status"] == "Accepted"
    code, answer = run_ctl(sim, "unlock", "--connector", "9")
    assert code == 0 and answer["request"] == {"connectorId": 9}
    code, answer = run_ctl(sim, "remote-stop", "--connector", "2")
    assert code == control_cli.EXIT_HTTP_ERROR and "no open transaction" in answer["error"]
    for args in (("reset", "--evse", "1"), ("reset", "Immediate"), ("base-report",), ("trigger", "Heartbeat",
                                                                                        "--evse", "1")):
        code, answer = run_ctl(sim, *args)
        assert code == control_cli.EXIT_HTTP_ERROR, (args, answer)


def test_ctl_csms_verbs_in_201(tmp_path: Path) -> None:
    """The same verbs with the builtin CSMS in 2.0.1 (``sim up --ocpp 2.0.1``) send the 2.0.1 messages: trigger,
    get/set variables, base report, availability of an EVSE, unlock, clear cache, remote start and stop of a
    transaction, reset."""
    s = start_sim(tmp_path / "state201", "--csms", "builtin", "--id", CP, "--ocpp", "2.0.1", "--accept", CARD)
    try:
        wait_agent_running(s)
        wait_until(lambda: s.state()["csms"]["connected"], what="agent connected")
        code, answer = run_ctl(s, "trigger", "Heartbeat")
        assert code == 0 and answer["action"] == "TriggerMessage" and answer["response"]["status"] == "Accepted"
        code, answer = run_ctl(s, "set-variable", "OCPPCommCtrlr.OfflineThreshold", "120")
        assert code == 0 and answer["action"] == "SetVariables"
        assert answer["response"]["setVariableResult"][0]["attributeStatus"] == "Accepted"
        code, answer = run_ctl(s, "get-variables", "OCPPCommCtrlr.OfflineThreshold", "TxCtrlr.Nope")
        assert code == 0 and [r["attributeStatus"] for r in answer["response"]["getVariableResult"]] == [
            "Accepted", "UnknownVariable"]
        assert answer["response"]["getVariableResult"][0]["attributeValue"] == "120"
        code, answer = run_ctl(s, "base-report", "ConfigurationInventory")
        assert code == 0 and answer["response"]["status"] == "Accepted"
        assert answer["variables"]["OCPPCommCtrlr.OfflineThreshold"] == "120"
        since = s.ok("GET", "/csms/transcript?n=1")["next_seq"]
        code, answer = run_ctl(s, "availability", "inoperative", "--connector", "2")
        assert code == 0 and answer["request"] == {"operationalStatus": "Inoperative", "evse": {"id": 2}}
        assert answer["response"]["status"] == "Accepted"

        def status_of_evse_2(status: str) -> bool:
            entries = s.ok("GET", f"/csms/transcript?since={since}&n=1000")["entries"]
            return any(e["action"] == "StatusNotification" and e["kind"] == "CALL" and e["payload"]["evseId"] == 2
                       and e["payload"]["connectorStatus"] == status for e in entries)
        wait_until(lambda: status_of_evse_2("Unavailable"), what="EVSE 2 Unavailable")
        assert run_ctl(s, "availability", "operative", "--evse", "2", "--connector", "1")[1]["response"] == {
            "status": "Accepted"}
        code, answer = run_ctl(s, "unlock", "--connector", "2")
        assert code == 0 and answer["request"] == {"evseId": 2, "connectorId": 1}
        assert run_ctl(s, "clear-cache")[1]["response"] == {"status": "Accepted"}
        run_ctl(s, "plug", "1")
        code, answer = run_ctl(s, "remote-start", CARD, "--connector", "1")
        assert code == 0 and answer["action"] == "RequestStartTransaction"
        assert answer["request"]["idToken"] == {"idToken": CARD, "type": "ISO14443"}
        assert answer["response"]["status"] == "Accepted"

        def open_transaction() -> bool:
            code, answer = run_ctl(s, "remote-stop", "--connector", "1")
            return code == 0 and answer["response"]["status"] == "Accepted"
        wait_until(open_transaction, what="RequestStopTransaction of the started transaction Accepted")
        run_ctl(s, "unplug", "1")
        code, answer = run_ctl(s, "reset")
        assert code == 0 and answer["request"] == {"type": "Immediate"} and answer["response"]["status"] == "Accepted"

        def rebooted() -> bool:
            entries = s.ok("GET", "/csms/transcript?since=0&n=5000")["entries"]
            return any(e["action"] == "BootNotification" and e["kind"] == "CALL"
                       and e["payload"]["reason"] == "RemoteReset" for e in entries)
        wait_until(rebooted, what="BootNotification RemoteReset after the reset")
    finally:
        stop_sim(s)


def test_ctl_firmware_update_and_diagnostics(sim: Sim) -> None:
    """The builtin CSMS offers what is in <state-dir>/csms-files and takes the uploads (issue 13)."""
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")
    code, files = run_ctl(sim, "firmware", "files")
    assert code == 0 and files["dir"] == str(sim.state_dir / "csms-files")
    code, answer = run_ctl(sim, "diagnostics")
    name = answer["response"]["fileName"]
    assert code == 0 and name.endswith(".tar.gz") and answer["upload"] == str(sim.state_dir / "csms-files/uploads" /
                                                                              name)
    wait_until(lambda: any(u["name"] == name for u in run_ctl(sim, "firmware", "files")[1]["uploads"]),
               what="the diagnostics uploaded to the CSMS")
    code, answer = run_ctl(sim, "get-log", "security", "--request-id", "31")
    assert code == 0 and answer["response"]["status"] == "Accepted" and answer["request_id"] == 31
    upload = Path(answer["upload"])
    assert upload.name.startswith("securitylog-") and upload.parent == sim.state_dir / "csms-files/uploads"
    wait_until(upload.is_file, what="the security log uploaded to the CSMS")
    assert run_ctl(sim, "get-log", "nonsense")[0] == control_cli.EXIT_USAGE
    code, answer = run_ctl(sim, "firmware", "update", "--file", "nothing.bundle")
    assert code == control_cli.EXIT_HTTP_ERROR and "offers no file 'nothing.bundle'" in answer["error"]
    (sim.state_dir / "csms-files/junk.bundle").write_bytes(b"not a bundle")
    mark = sim.ok("GET", "/csms/transcript?n=1")["next_seq"]
    code, answer = run_ctl(sim, "firmware", "update", "--file", "junk.bundle", "--retries", "0")
    assert code == 0 and answer["response"] == {} and answer["location"].endswith("/junk.bundle")

    def statuses() -> list[str]:
        entries = sim.ok("GET", f"/csms/transcript?since={mark}&n=500")["entries"]
        return [e["payload"]["status"] for e in entries
                if e.get("action") == "FirmwareStatusNotification" and e.get("kind") == "CALL"]
    wait_until(lambda: "InstallationFailed" in statuses(), what="the junk refused")
    assert statuses() == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]


def test_ctl_reservation_commands(sim: Sim) -> None:
    """``ctl reserve`` / ``ctl cancel-reservation`` reach the agent through the builtin CSMS; a bad request is
    refused before anything is sent."""
    wait_until(lambda: sim.state()["csms"]["connected"], what="agent connected")

    def status(n: str) -> str | None:
        return (sim.state()["connectors"][n]["status"] or {}).get("status")  # type: ignore[no-any-return]
    code, answer = run_ctl(sim, "reserve", CARD, "--connector", "2", "--id", "77", "--expiry", "600",
                           "--parent", "FLEET")
    assert code == 0 and answer["response"] == {"status": "Accepted"}
    assert (answer["request"]["connectorId"], answer["request"]["reservationId"]) == (2, 77)
    assert answer["request"]["parentIdTag"] == "FLEET" and answer["request"]["expiryDate"].endswith("Z")
    wait_until(lambda: status("2") == "Reserved", what="connector 2 Reserved")
    assert run_ctl(sim, "cancel-reservation", "78")[1]["response"] == {"status": "Rejected"}
    assert run_ctl(sim, "cancel-reservation", "77")[1]["response"] == {"status": "Accepted"}
    wait_until(lambda: status("2") == "Available", what="connector 2 Available again")
    code, answer = run_ctl(sim, "reserve", "X" * 21)
    assert code == control_cli.EXIT_HTTP_ERROR and "would be invalid" in answer["error"]
    assert run_ctl(sim, "reserve")[0] == control_cli.EXIT_USAGE  # no idTag


# ---- HTTP -------------------------------------------------------------------------------------------------

def _raw_http(sim: Sim, data: bytes) -> tuple[int, dict[str, Any]]:
    host, port = sim.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_http_errors_are_json_with_a_reason(sim: Sim) -> None:
    assert sim.call("GET", "/nothing/here")[0] == 404
    req = urllib.request.Request(sim.url + "/connectors/1/plug", method="GET")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=WAIT_S)
    assert err.value.code == 405 and err.value.headers["Allow"] == "POST"
    assert "not allowed" in json.loads(err.value.read())["error"]
    assert sim.call("POST", "/state", {})[0] == 405
    code, answer = sim.call("POST", "/connectors/1/ev", raw=b"{not json")
    assert code == 400 and "not valid JSON" in answer["error"]
    code, answer = sim.call("POST", "/rfid/tap", raw=b"[1, 2]")
    assert code == 400 and "JSON object" in answer["error"]
    for path in ("/connectors/9/plug", "/connectors/abc/unplug", "/connectors/0/ev"):
        code, answer = sim.call("POST", path, {"paused": True})
        assert code == 404 and "no connector" in answer["error"], path
    assert _raw_http(sim, b"HELLO\r\n\r\n")[0] == 400
    assert _raw_http(sim, b"POST /faults HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")[0] == 501
    assert _raw_http(sim, b"POST /faults HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")[0] == 413
    code, answer = _raw_http(sim, b"GET /agent/log?n=zero HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 400 and "n" in answer["error"]
    assert any(e["path"] == "/csms/call" for e in sim.ok("GET", "/")["endpoints"])


# ---- the CLI ----------------------------------------------------------------------------------------------

def run_ctl(sim: Sim, *args: str) -> tuple[int, Any]:
    """``python -m sim ctl`` in-process (same code path as the command, without the interpreter start)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = control_cli.main(["--state-dir", str(sim.state_dir), "--compact", *args])
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None


def test_ctl_commands(sim: Sim) -> None:
    assert run_ctl(sim, "state")[1]["charge_point_id"] == CP
    code, answer = run_ctl(sim, "plug", "2")
    assert code == 0 and answer["pilot"] == "B"
    code, answer = run_ctl(sim, "ev", "2", "--max-current", "10", "--paused")
    assert code == 0 and answer["ev"]["max_current_a"] == 10.0 and answer["ev"]["paused"]
    assert run_ctl(sim, "ev", "2", "--resumed")[1]["ev"]["paused"] is False
    assert run_ctl(sim, "unplug", "2")[1]["plugged"] is False
    assert run_ctl(sim, "tap", "DEADBEEF", "--hold", "0.1")[1]["uid"] == "DEADBEEF"
    assert run_ctl(sim, "fault", "meter", "silent", "--connector", "2")[1]["active"] is True
    assert run_ctl(sim, "fault", "meter", "silent", "--connector", "2", "--clear")[1]["active"] is False
    assert run_ctl(sim, "fault", "rfid", "noise", "--probability", "0.01", "--clear")[0] == 0
    assert len(run_ctl(sim, "log", "-n", "5")[1]["lines"]) == 5
    assert run_ctl(sim, "transcript", "-n", "2")[0] == 0
    assert run_ctl(sim, "csms-id-tag", "CAFE0002", "Accepted")[1]["status"] == "Accepted"
    assert run_ctl(sim, "csms-id-tag", "CAFE0002", "remove")[1]["status"] is None
    code, answer = run_ctl(sim, "csms-call", "Reset", '{"type": "Bogus"}')
    assert code == control_cli.EXIT_HTTP_ERROR and "would be invalid" in answer["error"]
    assert run_ctl(sim, "fault", "pilot", "melted", "--connector", "1")[0] == control_cli.EXIT_HTTP_ERROR
    assert run_ctl(sim, "ev", "2")[0] == control_cli.EXIT_USAGE  # nothing to change
    assert run_ctl(sim, "csms-call", "Reset", "{oops")[0] == control_cli.EXIT_USAGE
    assert run_ctl(sim, "frobnicate")[0] == control_cli.EXIT_USAGE
    assert run_ctl(sim, "csms-offline")[1] == {"online": False}
    assert run_ctl(sim, "csms-online")[1] == {"online": True}
    pid = sim.state()["agent"]["pid"]
    assert run_ctl(sim, "power-cut")[1]["killed_pid"] == pid
    assert run_ctl(sim, "power-on")[1]["agent"]["running"]


def test_python_m_sim_ctl_exit_codes(sim: Sim) -> None:
    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sim", "ctl", *args], capture_output=True, text=True,
                              timeout=20, env=env)

    ok = cli("--url", sim.url, "state")
    assert ok.returncode == 0 and json.loads(ok.stdout)["agent"]["running"]
    via_env = cli("plug", "1", env={**os.environ, control_cli.ENV_URL: sim.url})
    assert via_env.returncode == 0 and json.loads(via_env.stdout)["plugged"]
    assert cli("--url", sim.url, "unplug", "1").returncode == 0
    bad = cli("--url", sim.url, "plug", "9")
    assert bad.returncode == 1 and "no connector" in json.loads(bad.stdout)["error"] and "HTTP 404" in bad.stderr
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert cli("--url", dead, "state").returncode == control_cli.EXIT_UNREACHABLE


# ---- shutdown (last: it stops the module's simulator) -------------------------------------------------------

def test_sigterm_stops_everything_cleanly(sim: Sim) -> None:
    # a power-on just before, as test_ctl_commands ends: the log's latest start is then the killed process's
    # until the new one logs its own, and a SIGTERM before the new one's handlers are set leaves no stop line
    sim.ok("POST", "/agent/power-cut")
    sim.ok("POST", "/agent/power-on")
    wait_agent_running(sim)
    agent_pid = sim.state()["agent"]["pid"]
    assert processes_mentioning(str(sim.state_dir))  # the agent, with its config in the state dir
    assert stop_sim(sim, signal.SIGTERM) == 0
    assert not alive(agent_pid)
    assert processes_mentioning(str(sim.state_dir)) == []
    assert not (sim.state_dir / "control.json").exists()  # no stale address for the next script
    stderr = (sim.state_dir.parent / (sim.state_dir.name + ".stderr")).read_text()
    assert "Traceback" not in stderr
    log = [json.loads(x) for x in (sim.state_dir / "agent.log").read_text().splitlines() if x.startswith("{")]
    assert any(x.get("msg") == "agent stopping" for x in log)  # SIGTERM, not a kill


def test_other_hardware_external_csms_and_sigint(tmp_path: Path) -> None:
    """EVSE-DIN board, RDM6300 reader, SDM120 meter, one connector, a CSMS URL nobody answers; Ctrl-C."""
    s = start_sim(tmp_path / "state", "--csms", "ws://127.0.0.1:9/ocpp/", "--board", "evse_din", "--reader",
                  "rdm6300", "--meter", "sdm120", "--connectors", "1", "--id", "CP-EXT")
    try:
        wait_agent_running(s)
        state = s.state()
        assert state["csms"] == {"mode": "external", "url": "ws://127.0.0.1:9/ocpp",
                                 "identity_url": "ws://127.0.0.1:9/ocpp/CP-EXT"}
        assert load_config(tmp_path / "state" / "agent.toml").connectors[0].board.driver == "evse_din"
        assert s.ok("POST", "/connectors/1/plug")["pilot"] == "B"
        assert s.ok("POST", "/connectors/1/ev", {"max_current_a": 10})["ev"]["phases"] == 1
        code, answer = s.call("POST", "/faults", {"device": "pilot", "kind": "overtemperature"})
        assert code == 400 and "EVSE-DIN" in answer["error"]  # one connector: the connector may be left out
        cut = s.ok("POST", "/faults", {"device": "pilot", "kind": "line_silent", "active": False})
        assert cut["wire"] == "rs485"  # the board hangs on the shared RS-485 line
        code, answer = s.call("POST", "/rfid/tap", {"uid": CARD})
        assert code == 400 and "10 hex digits" in answer["error"]
        mark = s.log_mark()
        s.ok("POST", "/rfid/tap", {"uid": "0A0B0C0D0E", "hold_s": 1.0})
        assert s.wait_log(lambda x: x.get("event") == "CardPresented", mark)["uid"].endswith("0D0E")
        for path, body in (("/csms/call", {"action": "Reset"}), ("/csms/online", {"online": False})):
            code, answer = s.call("POST", path, body)
            assert code == 404 and "no builtin CSMS" in answer["error"]
    finally:
        assert stop_sim(s, signal.SIGINT) == 0
    assert processes_mentioning(str(tmp_path / "state")) == []


def test_bad_command_lines_exit_2_bad_config_78_taken_port_1(tmp_path: Path) -> None:
    def up(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sim", "up", "--no-demo", "--control", "127.0.0.1:0",
                               "--state-dir", str(tmp_path), *args], capture_output=True, text=True, timeout=20)

    for args, words in ((["--control", "nowhere"], "HOST:PORT"), (["--csms", "http://x"], "ws://"),
                        (["--connectors", "0"], "1 to 9"), (["--config-override", "NoEquals"], "KEY=VALUE"),
                        (["--csms", "ws://x/ocpp", "--accept", "A"], "builtin")):
        result = up(*args)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)
    result = up("--id", "bad/id")
    assert result.returncode == 78 and "charge_point.id" in result.stderr
    for override, words in (("NoSuchKey=1", "unknown OCPP configuration key"),
                            ("HeartbeatInterval=soon", "HeartbeatInterval")):
        result = up("--config-override", override)
        assert result.returncode == 78 and words in result.stderr, result.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = up("--control", f"127.0.0.1:{taken.getsockname()[1]}")
    assert result.returncode == 1 and "control API cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


async def test_supervisor_does_not_restart_an_agent_that_cannot_run(tmp_path: Path) -> None:
    """A missing configuration file: the agent exits 78 and stays down until power-on (no restart loop)."""
    events: list[tuple[str, dict[str, Any]]] = []
    sup = AgentSupervisor(tmp_path / "missing.toml", restart_delay_s=0.05, on_line=lambda line: None,
                          on_event=lambda kind, fields: events.append((kind, fields)))
    await sup.start()
    try:
        for starts in (1, 2):
            if starts == 2:
                await sup.power_on(timeout_s=WAIT_S)  # it starts, and fails again
            for _ in range(int(WAIT_S / 0.05)):
                if sup.state == "config_error" and sup.starts == starts:
                    break
                await asyncio.sleep(0.05)
            assert (sup.state, sup.starts, sup.last_exit, sup.running, sup.powered) == (
                "config_error", starts, 78, False, False)
        await asyncio.sleep(0.2)
        assert sup.starts == 2  # still down
        assert [k for k, _ in events] == ["started", "exited", "started", "exited"]
    finally:
        await sup.stop()
    assert sup.state == "config_error"


def test_restart_backoff_doubles_in_a_crash_loop() -> None:
    sup = AgentSupervisor(Path("agent.toml"), restart_delay_s=1.0)
    delays = []
    for failures in range(8):
        sup._quick_failures = failures
        delays.append(sup.restart_backoff_s())
    assert delays == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


# ---- pure parts ---------------------------------------------------------------------------------------------

def test_host_port_and_override_parsing() -> None:
    assert parse_host_port("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_host_port("[::1]:8765") == ("::1", 8765)
    for bad in ("8765", ":80", "host:", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_host_port(bad)
    assert parse_override("MeterValuesSampledData=Energy.Active.Import.Register,Voltage") == (
        "MeterValuesSampledData", "Energy.Active.Import.Register,Voltage")
    assert parse_override("Key=") == ("Key", "")
    for bad in ("=1", "Key", "Two words=1"):
        with pytest.raises(ValueError):
            parse_override(bad)


@given(st.text())
def test_toml_string_round_trips_any_text(value: str) -> None:
    assert tomllib.loads(f"x = {toml_string(value)}")["x"] == value


def test_agent_output_keeps_lines_and_last_status_per_connector() -> None:
    sink = io.StringIO()
    out = AgentOutput(keep=3, sink=sink)
    seen: list[tuple[int, str]] = []
    out.status_listeners.append(lambda n, r: seen.append((n, r["status"])))
    out.feed('{"msg": "connector status", "connector_id": 1, "from": "Available", "to": "Preparing"}')
    out.feed('{"ts": "t1", "msg": "connector status", "connector": 1, "status": "Preparing", "error_code": "NoError"}')
    out.feed("Traceback (most recent call last):")
    out.feed("")
    out.feed('{"msg": "connector status", "connector": 0, "status": "Available"}')
    out.feed('{"msg": "connector status", "connector": true, "status": "Bogus"}')
    assert seen == [(1, "Preparing"), (0, "Available")]  # the session machine's own line has no "status"
    assert out.statuses[1] == {"status": "Preparing", "error_code": "NoError", "at": "t1"}
    assert out.next_seq == 5 and len(out.tail(10)) == 3  # blank lines are not kept; the buffer holds 3
    assert out.tail(1) == [{"msg": "connector status", "connector": True, "status": "Bogus"}]
    assert out.tail(10, since=2) == [{"text": "Traceback (most recent call last):"}, *out.tail(2)]
    assert out.tail(0) == []
    assert sink.getvalue().count("\n") == 6  # the file gets everything


def test_demo_summaries_of_ocpp_messages() -> None:
    assert summarize_payload("StatusNotification", {"connectorId": 1, "status": "Charging", "errorCode": "NoError",
                                                    "timestamp": "x"}, False) == "connectorId=1 status=Charging"
    assert summarize_payload("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Accepted"}},
                             True) == "transactionId=7 idTagInfo=Accepted"
    mv = {"connectorId": 1, "transactionId": 7, "meterValue": [{"timestamp": "x", "sampledValue": [
        {"value": "1234", "unit": "Wh"}, {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"}]}]}
    assert summarize_payload("MeterValues", mv, False) == (
        "connectorId=1 transactionId=7 Energy.Active.Import.Register=1234Wh Power.Active.Import=7000W")
    remote_start = {"idTag": "A", "connectorId": 1}
    assert summarize_payload("RemoteStartTransaction", remote_start, False) == "idTag=A connectorId=1"
    assert summarize_payload("Anything", "not a dict", True) == ""
    # 2.0.1: the EVSE and its connector's status, the id token's value, the transaction's charging state
    status = {"timestamp": "x", "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}
    assert summarize_payload("StatusNotification", status, False) == "evseId=1 connectorId=1 connectorStatus=Occupied"
    assert summarize_payload("Authorize", {"idToken": {"idToken": "04A1B2C3", "type": "ISO14443"}}, False) == (
        "idToken=04A1B2C3")
    event = {"eventType": "Updated", "seqNo": 1, "triggerReason": "ChargingStateChanged", "timestamp": "x",
             "transactionInfo": {"transactionId": "u", "chargingState": "Charging"}}
    assert summarize_payload("TransactionEvent", event, False) == (
        "eventType=Updated seqNo=1 triggerReason=ChargingStateChanged chargingState=Charging")

    async def entries() -> list[tuple[str, str] | None]:
        t = Transcript()
        t.record(EntryKind.CONNECT, cp_id="CP")
        t.record(EntryKind.CALL, cp_id="CP", direction=Direction.FROM_CP, action="Heartbeat", payload={})
        t.record(EntryKind.CALLERROR, cp_id="CP", direction=Direction.TO_CP, action="Heartbeat",
                 error_code="InternalError", error_description="boom")
        t.record(EntryKind.REFUSED, cp_id="CP", detail={"status": 401, "reason": "invalid credentials"})
        return [format_entry(e) for e in t.entries]

    assert asyncio.run(entries()) == [
        ("csms", "CP connected"), ("CP > CSMS", "Heartbeat"),
        ("CSMS > CP", "Heartbeat CALLERROR InternalError: boom"),
        ("csms", "handshake of CP refused: HTTP 401 invalid credentials")]


class FakeBoard:
    def __init__(self) -> None:
        self.offered_current_a = 0.0
        self.contactor_closed = False
        self.pilots: list[PilotState] = []

    def set_ev_pilot(self, state: PilotState) -> None:
        self.pilots.append(state)

    def inject(self, fault: BoardFault, active: bool = True) -> None:
        pass


class FakeMeter:
    def __init__(self) -> None:
        self.state = ElectricalState()

    def update(self, state: ElectricalState) -> None:
        self.state = state

    def set_silent(self, silent: bool) -> None:
        pass


def test_ev_closes_s2_only_with_a_pwm_offer_and_draws_only_through_a_closed_contactor() -> None:
    charger = SimulatedCharger(ChargerSpec(connectors=1))
    board, meter = FakeBoard(), FakeMeter()
    c = SimulatedConnector(1, EvModel(max_current_a=16.0), board, meter)

    def pilot() -> PilotState:
        return board.pilots[-1]

    charger.connectors[1] = c
    c.ev.plug()
    charger.step(0.1)
    assert pilot() is PilotState.B and not c.s2_closed  # B1: the EV waits for the PWM
    board.offered_current_a = 32.0
    charger.step(0.1)
    assert pilot() is PilotState.C and c.electrical.current_a == (0.0, 0.0, 0.0)  # C2, contactor open
    board.contactor_closed = True
    charger.step(3600.0)
    assert c.electrical.current_a == (16.0, 16.0, 16.0)
    assert meter.state.energy_import_wh == pytest.approx(3 * 230 * 16)  # one hour at 11 kW
    board.offered_current_a = 0.0  # C2 -> C1: the EV stops drawing and opens S2
    charger.step(0.1)
    assert pilot() is PilotState.B and c.electrical.current_a == (0.0, 0.0, 0.0)
    c.ev.paused = True
    board.offered_current_a = 32.0
    charger.step(0.1)
    assert pilot() is PilotState.B  # paused: S2 stays open even with PWM
    c.ev.unplug()
    charger.step(0.1)
    assert pilot() is PilotState.A


async def test_request_parser_limits() -> None:
    async def parse(data: bytes) -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_request(reader)

    req = await parse(b"post /connectors/1/ev/?x=1 HTTP/1.1\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}")
    assert (req.method, req.path, req.query, req.headers["x-a"], req.body) == (
        "POST", "/connectors/1/ev", {"x": ["1"]}, "b", b"{}")
    for data, status in ((b"GET /\r\n\r\n", 400), (b"GET / HTTP/1.1\r\nBad header\r\n\r\n", 400),
                         (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
                         (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}", 400),
                         (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", 431)):
        with pytest.raises(ApiError) as err:
            await parse(data)
        assert err.value.status == status, data


def test_body_types_are_checked_by_name() -> None:
    body = Body(b'{"a": 1, "b": true, "c": "x", "d": 1.5}')
    assert (body.integer("a", lo=0, hi=2), body.boolean("b"), body.text("c"), body.number("d", lo=0, hi=2)) == (
        1, True, "x", 1.5)
    for call, words in ((lambda: body.integer("b", lo=0, hi=2), "b: expected an integer, got true"),
                        (lambda: body.integer("d", lo=0, hi=2), "expected an integer"),
                        (lambda: body.text("a"), "a: expected a non-empty string, got 1"),
                        (lambda: body.boolean("missing"), "got nothing"),
                        (lambda: body.only("a"), "unknown field(s) b, c, d")):
        with pytest.raises(ApiError) as err:
            call()
        assert words in err.value.reason and err.value.status == 400
    assert Body(b"  ").data == {}


def test_ab_slots_an_update_from_the_csms_replaces_the_code_that_runs(tmp_path: Path) -> None:
    """``sim up --ab-slots``: the agent runs out of slot a (a bundle of this checkout); ctl builds a bundle signed
    with the simulator's key, UpdateFirmware installs it into slot b, and the restarted agent imports its code
    from slot b and says so."""
    s = start_sim(tmp_path / "state", "--csms", "builtin", "--id", CP, "--ab-slots")
    try:
        wait_agent_running(s)
        starts = [x for x in s.ok("GET", "/agent/log?since=0&n=5000")["lines"] if x.get("msg") == "agent starting"]
        assert starts[-1]["code"] == str(s.state_dir / "opt/evse-agent/slots/a/app/firmware")
        assert starts[-1]["version"] == "sim-1.0.0"
        code, built = run_ctl(s, "firmware", "build", "sim-2.0.0")
        assert code == 0 and built["file"] == "evse-agent-sim-2.0.0.bundle"
        mark = s.ok("GET", "/csms/transcript?n=1")["next_seq"]
        assert run_ctl(s, "firmware", "update", "--file", built["file"])[0] == 0

        def statuses() -> list[str]:
            entries = s.ok("GET", f"/csms/transcript?since={mark}&n=2000")["entries"]
            return [e["payload"]["status"] for e in entries
                    if e.get("action") == "FirmwareStatusNotification" and e.get("kind") == "CALL"]
        wait_until(lambda: "Installed" in statuses() or "InstallationFailed" in statuses(), 90, "the update")
        assert statuses() == ["Downloading", "Downloaded", "Installing", "Installed"]
        starts = [x for x in s.ok("GET", "/agent/log?since=0&n=5000")["lines"] if x.get("msg") == "agent starting"]
        assert starts[-1]["code"] == str(s.state_dir / "opt/evse-agent/slots/b/app/firmware")
        assert starts[-1]["version"] == "sim-2.0.0"
    finally:
        stop_sim(s)


BROKEN_AGENTS = {"crashes at start": 'print("this build cannot start", flush=True)\nraise SystemExit(1)\n',
                 "hangs": 'import time\nprint("this build hangs", flush=True)\ntime.sleep(3600)\n'}


@pytest.mark.parametrize("broken_agent", list(BROKEN_AGENTS))
def test_ab_slots_a_bundle_whose_agent_never_confirms_is_rolled_back_by_the_simulator(tmp_path: Path,
                                                                                     broken_agent: str) -> None:
    """``sim up --ab-slots`` does what root's switch unit does on a controller: the new slot's agent crashes at every
    start, or hangs (never confirms itself, never gives up), so after the confirmation timeout the simulator stops
    it, switches back (database handled by the slots code), marks the slot FAILED, and the old agent, from slot a,
    reports InstallationFailed."""
    s = start_sim(tmp_path / "state", "--csms", "builtin", "--id", CP, "--ab-slots", "--slot-confirm-timeout", "3")
    try:
        wait_agent_running(s)
        broken = tmp_path / "broken"
        (broken / "firmware").mkdir(parents=True)
        (broken / "hal").mkdir()
        (broken / "firmware/__init__.py").write_text(BROKEN_AGENTS[broken_agent])
        (broken / "hal/__init__.py").write_text("")
        SimSlots(s.state_dir).build(s.state_dir / "csms-files/broken.bundle", "sim-broken", source=broken)
        mark = s.ok("GET", "/csms/transcript?n=1")["next_seq"]
        assert run_ctl(s, "firmware", "update", "--file", "broken.bundle")[0] == 0

        def statuses() -> list[str]:
            entries = s.ok("GET", f"/csms/transcript?since={mark}&n=2000")["entries"]
            return [e["payload"]["status"] for e in entries
                    if e.get("action") == "FirmwareStatusNotification" and e.get("kind") == "CALL"]
        wait_until(lambda: "Installed" in statuses() or "InstallationFailed" in statuses(), 90, "the update")
        assert statuses() == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
        lines = s.ok("GET", "/agent/log?since=0&n=5000")["lines"]
        said = "this build hangs" if broken_agent == "hangs" else "this build cannot start"
        assert any(said in str(x.get("text", "")) for x in lines)  # it did run
        starts = [x for x in lines if x.get("msg") == "agent starting"]
        assert starts[-1]["code"] == str(s.state_dir / "opt/evse-agent/slots/a/app/firmware")
        assert starts[-1]["version"] == "sim-1.0.0"
        state = json.loads((s.state_dir / "opt/evse-agent/state.json").read_text())
        assert state["active"] == "a" and state["slots"]["b"]["health"] == "FAILED"
        events = [(h["event"], h.get("slot")) for h in state["history"]]
        rolled_back = events.index(("rolled back (the new agent did not confirm within 3 s)", "a"))
        assert events[rolled_back - 2:rolled_back] == [("switched (requested by the agent)", "b"),
                                                       ("health check", "b")], events
    finally:
        stop_sim(s)
