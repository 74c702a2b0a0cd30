"""One RPC layer, two OCPP-J versions: the dialect decides actions, schemas and the spelling of every code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from ocpp.exceptions import OCPPError
from ocpp.v201 import call_result

from firmware.ocpp.rpc import Dialect, RpcChargePoint, classify_frame, handles, unreadable_frame_error
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v201.dialect import OCPP201
from tests.test_ocpp16_rpc import Server


def test_each_version_spells_its_own_codes() -> None:
    for code in ("FormatViolation", "FormationViolation"):
        assert (OCPP16.error_code(code), OCPP201.error_code(code)) == ("FormationViolation", "FormatViolation")
    for code in ("OccurrenceConstraintViolation", "OccurenceConstraintViolation"):
        assert (OCPP16.error_code(code), OCPP201.error_code(code)) == ("OccurenceConstraintViolation",
                                                                       "OccurrenceConstraintViolation")
    # 2.0.1's additions do not exist in 1.6's table
    assert (OCPP16.error_code("RpcFrameworkError"), OCPP201.error_code("RpcFrameworkError")) == (
        "GenericError", "RpcFrameworkError")


#: frame -> (id, code) of the CALLERROR owed in 1.6 and in 2.0.1 (None: no answer)
FRAMING: list[tuple[str | bytes, tuple[str, str] | None, tuple[str, str] | None]] = [
    # an unknown MessageTypeId: 1.6 §4.1.3 ignores it; 2.0.1 Part 4 §4.4 answers it, with the frame's id or "-1"
    ('[7,"u1","Reset",{}]', None, ("u1", "MessageTypeNotSupported")),
    ('[0,"u2"]', None, ("u2", "MessageTypeNotSupported")),
    ("[5]", None, ("-1", "MessageTypeNotSupported")),
    ('[99,17,"x",{}]', None, ("-1", "MessageTypeNotSupported")),
    ('[1180591620717411303424,"u3"]', None, ("u3", "MessageTypeNotSupported")),
    # no valid RPC request: RpcFrameworkError in 2.0.1, with "-1" where the id cannot be read (§4.2.3)
    ("not json", None, ("-1", "RpcFrameworkError")),
    ('[2,"r1","Reset",{"type":', None, ("r1", "RpcFrameworkError")),  # broken JSON, the CALL's id readable
    ("{}", None, ("-1", "RpcFrameworkError")),
    ("[]", None, ("-1", "RpcFrameworkError")),
    ('"text"', None, ("-1", "RpcFrameworkError")),
    ("[2]", None, ("-1", "RpcFrameworkError")),
    ('[2,5,"Reset",{}]', None, ("-1", "RpcFrameworkError")),
    ('[true,"r2","Reset",{}]', None, ("r2", "RpcFrameworkError")),
    ('["2","r3","Reset",{}]', None, ("r3", "RpcFrameworkError")),
    ('[null,"r4"]', None, ("r4", "RpcFrameworkError")),
    ('[2,"r5"]', ("r5", "ProtocolError"), ("r5", "RpcFrameworkError")),
    ('[2,"r6",["Reset"],{}]', ("r6", "ProtocolError"), ("r6", "RpcFrameworkError")),
    ('[2,"r7","Reset",{},{}]', ("r7", "ProtocolError"), ("r7", "RpcFrameworkError")),
    # payload not an object: the spelling of each version
    ('[2,"p1","Reset",[]]', ("p1", "FormationViolation"), ("p1", "FormatViolation")),
    ("[" * 2000 + "]" * 2000, None, ("-1", "RpcFrameworkError")),  # beyond the limits, no id
    ('[2,"d1","DataTransfer",{"data":' + "[" * 2000 + "]" * 2000 + "}]", ("d1", "FormationViolation"),
     ("d1", "FormatViolation")),
    # a CALLRESULT or CALLERROR is never answered, however broken (a CALLERROR answers a request only)
    ('[3,"a1"]', None, None),
    ('[3,"a2",5]', None, None),
    ('[3,7,{}]', None, None),
    ("[3]", None, None),
    ('[4,"a3","GenericError"]', None, None),
    ('[4,"a4",5,"",{}]', None, None),
    ('[3,"a5",{"x":' + "[" * 2000 + "]" * 2000 + "}]", None, None),
    ('[4, "a6", "GenericError", "broken', None, None),
]


@pytest.mark.parametrize(("frame", "v16", "v201"), FRAMING)
def test_framing_rules_of_each_version(frame: str, v16: tuple[str, str] | None,
                                       v201: tuple[str, str] | None) -> None:
    for dialect, owed in ((OCPP16, v16), (OCPP201, v201)):
        decoded, error = classify_frame(frame, dialect)
        assert decoded is None
        got = None if error is None else (error.unique_id, error.error_code)
        assert got == owed, (dialect.version, frame[:60])


def test_oversized_frames_are_answered_by_the_version() -> None:
    """A frame too big to parse (RpcChargePoint refuses it unread): its CALL's id from the first bytes, else "-1"
    in 2.0.1 and no answer in 1.6; never an answer to what starts as a CALLRESULT."""
    def owed(frame: str, dialect: Dialect) -> tuple[str, str] | None:
        error = unreadable_frame_error(frame, dialect, "FormatViolation", "too big")
        return None if error is None else (error.unique_id, error.error_code)

    padding = " " * 100
    assert owed('[2,"o1","DataTransfer",{' + padding, OCPP16) == ("o1", "FormationViolation")
    assert owed('[2,"o1","DataTransfer",{' + padding, OCPP201) == ("o1", "FormatViolation")
    assert owed("[" + padding, OCPP16) is None
    assert owed("[" + padding, OCPP201) == ("-1", "RpcFrameworkError")
    assert owed('[3,"o2",{' + padding, OCPP201) is None


def test_well_formed_frames_are_read_alike() -> None:
    for frame in ('[2,"w1","Reset",{"type":"Immediate"}]', '[2,"w2","ClearCache",null]', '[3,"w3",{}]',
                  '[3,"w4",null]', '[4,"w5","GenericError","",{}]', '[2.0,"w6","ClearCache",{}]'):
        assert classify_frame(frame, OCPP16)[0] == classify_frame(frame, OCPP201)[0] is not None, frame


def test_frames_and_schemas_are_judged_by_the_version() -> None:
    deep = '[2,"deep","DataTransfer",{"vendorId":"x","data":' + "[" * 2000 + "]" * 2000 + "}]"
    assert [classify_frame(deep, d)[1].error_code for d in (OCPP16, OCPP201)] == [  # type: ignore[union-attr]
        "FormationViolation", "FormatViolation"]
    # the same action, each version's schema: 2.0.1's Authorize takes an idToken object, 1.6's an idTag string
    assert OCPP16.schema_violation("Authorize", {"idTag": "A"}) is None
    assert OCPP201.schema_violation("Authorize", {"idToken": {"idToken": "A", "type": "ISO14443"}}) is None
    missing = OCPP201.schema_violation("Authorize", {})
    assert missing is not None and missing[0] == "OccurrenceConstraintViolation" and "idToken" in missing[1]
    assert OCPP16.schema_violation("Authorize", {})[0] == "ProtocolError"  # type: ignore[index]
    wrong = OCPP201.schema_violation("Authorize", {"idToken": {"idToken": "A", "type": "Magic"}})
    assert wrong is not None and wrong[0] == "PropertyConstraintViolation"


class ChargingStation(RpcChargePoint):
    @handles("ClearCache")
    async def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        return call_result.ClearCache(status="Accepted")


@pytest.fixture
async def station() -> AsyncIterator[tuple[Server, ChargingStation]]:
    csms = Server()  # the bare peer of the 1.6 RPC tests: raw frames in, what comes back collected
    async with websockets.serve(csms.handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}/CS1", subprotocols=["ocpp2.0.1"]) as ws:
            cs = ChargingStation("CS1", ws, OCPP201, response_timeout=5)
            task = asyncio.create_task(cs.start())
            await csms.connected.wait()
            yield csms, cs
            task.cancel()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('[2,"b1","ClearCache",{}]', None),  # a 2.0.1 action with a handler: answered
        ('[2,"b2","RemoteStartTransaction",{"connectorId":1,"idTag":"A"}]', "NotImplemented"),  # 1.6 only
        ('[2,"b3","RequestStartTransaction",{"idToken":{"idToken":"A","type":"ISO14443"},"remoteStartId":1}]',
         "NotSupported"),  # 2.0.1, no handler here
        ('[2,"b4","ClearCache",{"extra":1}]', "FormatViolation"),
        ('[2,"b5","ClearCache",[]]', "FormatViolation"),
        ('[2,"b6","ClearCache"]', "RpcFrameworkError"),  # 1.6: ProtocolError
        ('[2,"b7",5,{}]', "RpcFrameworkError"),
        ('[7,"b8","ClearCache",{}]', "MessageTypeNotSupported"),  # 1.6: ignored
        ('["2","b9","ClearCache",{}]', "RpcFrameworkError"),
    ],
)
async def test_a_201_station_answers_in_201(station: tuple[Server, ChargingStation], frame: str,
                                            code: str | None) -> None:
    csms, _ = station
    await csms.conn.send(frame)
    answer = await csms.expect(json.loads(frame)[1], wait_s=10)
    if code is None:
        assert answer[0] == 3 and answer[2] == {"status": "Accepted"}
    else:
        assert answer[0] == 4 and answer[2] == code, answer


async def test_a_201_station_answers_what_it_cannot_read_with_minus_one(
        station: tuple[Server, ChargingStation]) -> None:
    """Part 4 §4.2.3: a CALLERROR for a frame whose MessageId cannot be read carries "-1"; the link stays up and the
    next CALL is answered; a broken CALLRESULT is not answered."""
    csms, cs = station
    await csms.conn.send("[2")
    answer = await csms.expect("-1", wait_s=10)
    assert answer[0] == 4 and answer[2] == "RpcFrameworkError" and answer[4] == {}
    await csms.conn.send('[3,"nobody",5]')
    await csms.conn.send('[2,"after","ClearCache",{}]')
    assert (await csms.expect("after", wait_s=10))[0] == 3
    assert csms.received.empty()  # nothing answered the broken CALLRESULT
    assert cs.malformed_frames == 2


async def test_a_201_station_validates_its_calls_against_201(station: tuple[Server, ChargingStation]) -> None:
    csms, cs = station
    with pytest.raises(OCPPError, match="'idTag' was unexpected"):  # a 1.6-shaped request: refused, unsent
        await cs.call_raw("Authorize", {"idTag": "A"})
    assert await cs.call_raw("Heartbeat", {}) == {"currentTime": "2026-01-01T00:00:00Z"}
    first = await asyncio.wait_for(csms.received.get(), 10)
    assert first[2] == "Heartbeat"  # the first frame the CSMS saw: the Authorize never left
