"""End to end: the fuzzing of the OCPP receive path (``tests/test_e2e_fuzz_ocpp.py``) in OCPP 2.0.1.

One agent process with ``[ocpp] version = "2.0.1"``, started once, gets a fixed corpus (every 2.0.1 action the CSMS
can send, its smallest valid payload where harmless and broken ones; the framing cases OCPP-J 2.0.1 Part 4 settles:
unknown MessageTypeIds, frames that are no RPC request, unreadable ids, CALLRESULT/CALLERROR for ids never sent;
oversized and binary frames), a burst of answers to ids never sent, then ``FUZZ_EXAMPLES_201`` generated cases
(default 150) of the same generator as 1.6 with the 2.0.1 profile (:data:`tests.ocpp_fuzz.V201`). The oracle
(:func:`tests.ocpp_fuzz.expect` with the 2.0.1 profile) holds each answer to OCPP-J 2.0.1: a CALL whose id can be
read gets one answer with a Table 8 code; an unknown MessageTypeId MessageTypeNotSupported; a frame that is no
valid RPC request RpcFrameworkError, with the id ``"-1"`` where its own cannot be read; a CALLRESULT or CALLERROR
never an answer. Throughout: one connection, one process, one boot; after the batch the device model reads as it
did (an accepted SetVariables is put back at once), a whole transaction works (the charger keeps charging), and the
agent's log has no ERROR line. ``FUZZ_SEED`` replays as in 1.6.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.ocpp.rpc import MAX_FRAME_BYTES, RpcChargePoint
from firmware.ocpp.v201.dialect import OCPP201
from tests import ocpp_fuzz as fz
from tests.ocpp_fuzz import ID, Case, ChargerState, dump, expect, side_effect
from tests.station import CP_ID, WAIT_S, Station
from tests.test_e2e_fuzz_ocpp import DEEP, Fuzzer, _HardwareComplaints, _minimal, hardware_complaints, run_fuzz

FUZZ_EXAMPLES_201 = int(os.environ.get("FUZZ_EXAMPLES_201", "150"))
CARD = "04A1B2C3"
V201 = fz.V201


def corpus_201(charger: ChargerState) -> Iterator[Case]:
    """Fixed frames every 2.0.1 run sends."""
    def call(action: str, payload: object) -> Case:
        return Case((dump([2, ID, action, payload]),), f"corpus {action}")

    for action in V201.csms_actions:  # every 2.0.1 request of a CSMS: its smallest valid payload, then broken ones
        root = fz.schema(action, V201)
        payload = _minimal(root, root)
        valid = call(action, payload)
        if side_effect(valid.render().frames[0], charger, V201) is None:
            yield valid
        yield call(action, {**payload, "fuzzExtra": 1})
        for key in payload:
            yield call(action, {k: v for k, v in payload.items() if k != key})
        yield call(action, None if payload else [])
    for component, variable, instance in fz.VARIABLES_201[:12]:  # the code that parses a value, with bad ones
        named = {"component": {"name": component}, "variable": {"name": variable} | (
            {"instance": instance} if instance else {})}
        for value in ("--5", "1e3", " 5 ", "-1", "86401", "true", "", "Voltage,Voltage", "\x00"):
            yield call("SetVariables", {"setVariableData": [{**named, "attributeValue": value}]})
    yield call("GetVariables", {"getVariableData": [{"component": {"name": "OCPPCommCtrlr"},
                                                     "variable": {"name": "HeartbeatInterval"}}] * 51})
    yield call("GetVariables", {"getVariableData": [1] * 500_000})  # refused before validation
    yield Case((DEEP,), "corpus: 2,000 nested arrays")
    for frame in (
        # Part 4 §4.4: an unknown MessageTypeId is answered MessageTypeNotSupported, with its id or "-1"
        '[7,"' + ID + '","Reset",{"type":"Immediate"}]', '[0,"' + ID + '"]', "[5]", '[6,17,"Reset",{}]',
        # no valid RPC request: RpcFrameworkError, "-1" where the id cannot be read (§4.2.3)
        "not json", "{}", "[]", '"text"', "[2]", '[2,5,"Reset",{}]', '[true,"' + ID + '","Reset",{}]',
        '["2","' + ID + '","Reset",{}]', '[2,"' + ID + '"]', '[2,"' + ID + '",7,{}]', '[2,"' + ID + '","Reset"]',
        '[2,"' + ID + '","Reset",{"type":"Immediate"},{}]', '[2,"' + ID + '","Reset",{"type":',
        '[2,"' + ID + '","ClearCache",[]]',
        '[2,"' + ID + '","DataTransfer",{"vendorId":"x","data":' + DEEP + "}]",
        '[2,"' + ID + '","MakeCoffee",{}]', '[2,"' + ID + '","RemoteStartTransaction",{"idTag":"A"}]',
        '[2,"' + ID + '","Heartbeat",{}]', '[2,"' + ID + '","GetReport",{"requestId":1}]',
        '[2,"' + ID + '","ChangeAvailability",{"operationalStatus":"Inoperative","evse":{"id":99}}]',
        '[2,"' + ID + '","UnlockConnector",{"evseId":99,"connectorId":1}]',
        '[2,"' + ID + '","RequestStopTransaction",{"transactionId":"no-such-transaction"}]',
        # a CALLRESULT or CALLERROR is never answered, broken or for an id never sent
        '[3,"' + ID + '",{}]', '[3,"' + ID + '"]', '[3,"' + ID + '",5]', "[3]", '[4,"' + ID + '","GenericError","",{}]',
        '[4,"' + ID + '",5,"",{}]', '[4,"' + ID + '","GenericError"',
    ):
        yield Case((frame,), "corpus")
    data = '[2,"' + ID + '","DataTransfer",{"vendorId":"x","data":"'
    yield Case((data + "A" * (MAX_FRAME_BYTES + 1) + '"}]',), "corpus: 1 MiB + 1")
    yield Case(("[" + " " * (2 << 20) + "]",), "corpus: 2 MiB, no id")
    yield Case((dump([2, ID, *V201.probe]).encode(),), "corpus: binary CALL")
    yield Case((b'[2,"\xff\xfe","ClearCache",{}]',), "corpus: binary, not UTF-8")
    get = dump([2, ID, *V201.probe])
    yield Case((get, get), "corpus: duplicate id")
    yield Case((get, dump([2, ID, "Reset", {"type": "Immediate"}])), "corpus: a Reset reusing an id")


async def _charge_and_stop(s: Station) -> None:
    """A whole transaction on EVSE 1 (plug, card, Started, charging), stopped by the CSMS, Ended, unplugged."""
    s.csms.behaviour.id_tags.accept(CARD)
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Occupied", since=mark)
    await s.tap(CARD)
    started = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Started", since=mark)
    await s.wait_call("TransactionEvent", lambda e: e.payload.get("transactionInfo", {}).get("chargingState")
                      == "Charging", since=mark)
    tx_id = started.payload["transactionInfo"]["transactionId"]
    answer = await s.csms.call(CP_ID, "RequestStopTransaction", {"transactionId": tx_id}, timeout_s=WAIT_S)
    assert answer["status"] == "Accepted"
    ended = await s.wait_call("TransactionEvent", lambda e: e.payload["eventType"] == "Ended", since=mark)
    assert ended.payload["transactionInfo"]["stoppedReason"] == "Remote"
    s.ev(1).unplug()
    await s.wait_status(1, "Available", since=ended.seq)


@pytest.fixture
def quiet_csms() -> Iterator[_HardwareComplaints]:
    yield from hardware_complaints()


def test_the_201_oracle_on_frames_whose_answer_ocpp_j_fixes() -> None:
    """The 2.0.1 oracle on frames whose due answer the OCPP-J 2.0.1 text settles (Part 4, edition 3)."""
    def owed(frame: str | bytes, seen: bool = False) -> tuple[str, str | None, frozenset[str] | None, bool]:
        e = expect(frame, lambda _: seen, profile=V201)
        return e.answer, e.unique_id, e.codes, e.result_ok

    framework = frozenset({"RpcFrameworkError"})
    assert owed('[7,"x","Reset",{}]') == ("must", "x", frozenset({"MessageTypeNotSupported"}), False)
    assert owed("[7]") == ("must", "-1", frozenset({"MessageTypeNotSupported"}), False)
    for unreadable in ("not json", "{}", "[2]", '[2,5,"Reset",{}]', DEEP):
        assert owed(unreadable) == ("must", "-1", framework, False), unreadable
    assert owed('[true,"x","Reset",{}]') == ("must", "x", framework, False)
    assert owed('[2,"x"]') == ("must", "x", framework, False)
    assert owed('[2,"x","ClearCache",[]]') == ("must", "x", frozenset({"FormatViolation"}), False)
    assert owed('[2,"x","DataTransfer",{"data":' + DEEP + "}]") == ("must", "x", frozenset({"FormatViolation"}),
                                                                    False)
    for silent in ('[3,"x",{}]', '[3,"x"]', "[3]", '[4,"x","GenericError","",{}]', '[4,"x",5]', '[3,"x",' + DEEP):
        assert owed(silent)[0] == "never", silent
    assert owed('[2,"x","MakeCoffee",{}]')[2] == frozenset({"NotImplemented"})
    assert owed('[2,"x","GetConfiguration",{}]')[2] == frozenset({"NotImplemented"})  # a 1.6 action
    assert owed('[2,"x","PublishFirmware",{"location":"x","checksum":"x","requestId":1}]')[2] == \
        frozenset({"NotSupported"})  # a 2.0.1 request the agent does not serve
    assert owed('[2,"x","ClearCache",{}]', seen=True)[2] == framework
    e = expect('[2,"x","ClearCache",{}]', lambda _: False, profile=V201)
    assert e.result_required and e.check(4, "FormationViolation") is not None  # a 1.6 spelling is no 2.0.1 code


def test_the_201_fuzzer_knows_what_the_agent_serves(tmp_path: Path) -> None:
    """The 2.0.1 guard lists the actions the agent serves; a new handler must be looked at first."""
    from firmware.config import parse_config
    from firmware.ocpp.v201.client import Ocpp201Client
    from firmware.storage import Database

    config = parse_config('[charge_point]\nid = "CP-1"\n[storage]\ndir = "/nowhere"\n[ocpp]\n'
                          'csms_url = "ws://127.0.0.1:9"\nversion = "2.0.1"\n'
                          '[[connectors]]\nid = 1\nboard = { driver = "ioboard", port = "/dev/null" }\n')
    db = Database(tmp_path / "agent.db")
    client = Ocpp201Client(config, {}, db, request_exit=lambda _: None)
    cp = RpcChargePoint("CP-1", None, OCPP201, handlers=client._handlers)
    # built without the agent's smart charging scheduler: K's requests are the ones it does not serve then
    smart_charging = {"SetChargingProfile", "GetChargingProfiles", "ClearChargingProfile", "GetCompositeSchedule"}
    assert {action for action, routes in cp.route_map.items() if "_on_action" in routes} == \
        fz.HANDLED_201 - smart_charging
    db.close()


@pytest.mark.timeout(180 + FUZZ_EXAMPLES_201)
async def test_fuzz_the_ocpp201_receive_path(tmp_path: Path, quiet_csms: _HardwareComplaints) -> None:
    async def device_model_unchanged(fuzzer: Fuzzer) -> None:
        """The device model reads as it did (an accepted SetVariables was put back at once)."""
        before = dict(fuzzer.config)
        await fuzzer.snapshot()
        assert fuzzer.config == before

    async with Station(tmp_path, ocpp="2.0.1", connectors=2, heartbeat_interval=2) as s:
        findings = await run_fuzz(s, V201, corpus_201, burst=300, examples=FUZZ_EXAMPLES_201,
                                  unchanged=device_model_unchanged, charge_and_stop=_charge_and_stop,
                                  complaints=quiet_csms)
    assert not findings, f"{len(findings)} finding(s):\n" + "\n\n".join(f[:3000] for f in findings)
