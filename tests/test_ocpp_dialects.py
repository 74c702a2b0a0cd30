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

from firmware.ocpp.rpc import RpcChargePoint, classify_frame, handles
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
        ('[2,"b6","ClearCache"]', "ProtocolError"),
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


async def test_a_201_station_validates_its_calls_against_201(station: tuple[Server, ChargingStation]) -> None:
    csms, cs = station
    with pytest.raises(OCPPError, match="'idTag' was unexpected"):  # a 1.6-shaped request: refused, unsent
        await cs.call_raw("Authorize", {"idTag": "A"})
    assert await cs.call_raw("Heartbeat", {}) == {"currentTime": "2026-01-01T00:00:00Z"}
    first = await asyncio.wait_for(csms.received.get(), 10)
    assert first[2] == "Heartbeat"  # the first frame the CSMS saw: the Authorize never left
