"""OCPP-J RPC layer: malformed frames get the 1.6 CALLERROR, handlers never block the receive loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, ConfigurationStatus

from firmware.config import parse_config
from firmware.ocpp.link import MAX_WEBSOCKET_FRAME
from firmware.ocpp.rpc import MAX_ERROR_DESCRIPTION, RpcChargePoint, classify_frame, excess
from firmware.ocpp.v16.client import Ocpp16Client
from firmware.ocpp.v16.configuration import ConfigurationKeys
from firmware.ocpp.v16.dialect import OCPP16
from firmware.ocpp.v16.remote_control import RemoteControl
from firmware.storage import Database


class SlowChargePoint(RpcChargePoint):
    @on(Action.change_configuration)
    async def on_change(self, key: str, value: str, **_: Any) -> call_result.ChangeConfiguration:
        if key == "Slow":
            await asyncio.sleep(0.5)
        return call_result.ChangeConfiguration(status=ConfigurationStatus.accepted)


class Server:
    """A bare WebSocket peer standing in for the CSMS: sends raw frames, collects what comes back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[list[Any]] = asyncio.Queue()
        self.conn: Any = None
        self.connected = asyncio.Event()

    async def handler(self, conn: Any) -> None:
        self.conn = conn
        self.connected.set()
        async for raw in conn:
            frame = json.loads(raw)
            if frame[0] == 2 and frame[2] == "Heartbeat":
                await conn.send(json.dumps([3, frame[1], {"currentTime": "2026-01-01T00:00:00Z"}]))
            await self.received.put(frame)

    async def expect(self, unique_id: str, wait_s: float = 2.0) -> list[Any]:
        while True:
            frame = await asyncio.wait_for(self.received.get(), wait_s)
            if frame[1] == unique_id:
                return frame


@pytest.fixture
async def link() -> AsyncIterator[tuple[Server, SlowChargePoint]]:
    server = Server()
    async with websockets.serve(server.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}/CP1", subprotocols=["ocpp1.6"],
                                      max_size=MAX_WEBSOCKET_FRAME) as ws:
            cp = SlowChargePoint("CP1", ws, OCPP16, response_timeout=2)
            task = asyncio.create_task(cp.start())
            await server.connected.wait()
            yield server, cp
            task.cancel()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('[2,"a1","ChangeConfiguration",{"key":"K"}]', "ProtocolError"),  # required value missing
        ('[2,"a2","ChangeConfiguration",{"key":"K","value":"v","extra":1}]', "FormationViolation"),
        ('[2,"a3","ChangeConfiguration",{"key":5,"value":"v"}]', "TypeConstraintViolation"),
        ('[2,"a4","NoSuchAction",{}]', "NotImplemented"),  # OCPP-J 1.6 Table 7: not known by receiver
        ('[2,"a8","ReserveNow",{"connectorId":1,"expiryDate":"2026-01-01T00:00:00Z","idTag":"A",'
         '"reservationId":1}]', "NotSupported"),  # a 1.6 action this charge point does not support
        ('[2,"a5","ChangeConfiguration",[]]', "FormationViolation"),
        ('[2,"a6","ChangeConfiguration"]', "ProtocolError"),
    ],
)
async def test_malformed_calls_get_16_callerrors(link: tuple[Server, SlowChargePoint], frame: str,
                                                 code: str) -> None:
    server, _ = link
    await server.conn.send(frame)
    unique_id = json.loads(frame)[1]
    answer = await server.expect(unique_id)
    assert answer[0] == 4 and answer[2] == code, answer


async def test_unanswerable_garbage_is_counted_and_link_survives(link: tuple[Server, SlowChargePoint]) -> None:
    server, cp = link
    # OCPP-J 1.6 §4.1.3: a message type number not in the list SHALL be ignored ([7, ...])
    for junk in ("not json", "{}", "[2]", '[3,"x"]', '[7,"a7","x",{}]'):
        await server.conn.send(junk)
    await server.conn.send('[2,"ok1","ChangeConfiguration",{"key":"K","value":"v"}]')
    answer = await server.expect("ok1")
    assert answer == [3, "ok1", {"status": "Accepted"}]
    assert cp.malformed_frames == 5
    assert server.received.empty()  # nothing was answered but ok1


async def test_slow_handler_does_not_block_other_traffic(link: tuple[Server, SlowChargePoint]) -> None:
    server, cp = link
    await server.conn.send('[2,"slow","ChangeConfiguration",{"key":"Slow","value":"1"}]')
    await server.conn.send('[2,"fast","ChangeConfiguration",{"key":"Fast","value":"1"}]')
    first = await server.expect("fast", wait_s=0.4)  # answered while "slow" is still running
    assert first[2] == {"status": "Accepted"}
    # and our own CALL gets its result while the slow handler runs
    response = await asyncio.wait_for(cp.call_raw("Heartbeat", {}), 0.4)
    assert response == {"currentTime": "2026-01-01T00:00:00Z"}
    assert (await server.expect("slow"))[2] == {"status": "Accepted"}


def test_error_code_translation_and_classification() -> None:
    assert OCPP16.error_code("FormatViolation") == "FormationViolation"
    assert OCPP16.error_code("OccurrenceConstraintViolation") == "OccurenceConstraintViolation"
    assert OCPP16.error_code("SomethingNew") == "GenericError"
    assert classify_frame('[3,"id",{}]', OCPP16)[0] == [3, "id", {}]
    assert classify_frame("[", OCPP16) == (None, None)


async def test_duplicate_call_id_is_refused_not_executed_twice(link: tuple[Server, SlowChargePoint]) -> None:
    server, _ = link
    await server.conn.send('[2,"dup","ChangeConfiguration",{"key":"K","value":"v"}]')
    assert (await server.expect("dup"))[0] == 3
    await server.conn.send('[2,"dup","ChangeConfiguration",{"key":"K","value":"v"}]')
    again = await server.expect("dup")
    assert again[0] == 4 and again[2] == "ProtocolError" and "already used" in again[3]


async def test_oversized_frame_gets_formation_violation(link: tuple[Server, SlowChargePoint]) -> None:
    from firmware.ocpp.rpc import MAX_FRAME_BYTES

    server, _ = link
    big = '[2,"big","DataTransfer",{"vendorId":"x","data":"' + "A" * MAX_FRAME_BYTES + '"}]'
    await server.conn.send(big)
    answer = await server.expect("big")
    assert answer[0] == 4 and answer[2] == "FormationViolation" and "exceeds" in answer[3]
    await server.conn.send('[2,"after","ChangeConfiguration",{"key":"K","value":"v"}]')
    assert (await server.expect("after"))[0] == 3  # and the link goes on


def test_frames_beyond_the_json_limits_never_raise() -> None:
    # 2,000 nested arrays (4 KB): no id to answer to
    assert classify_frame("[" * 2000 + "]" * 2000, OCPP16) == (None, None)
    # a CALL whose id is readable gets FormationViolation
    deep = '[2,"deep","DataTransfer",{"vendorId":"x","data":' + "[" * 2000 + "]" * 2000 + "}]"
    decoded, error = classify_frame(deep, OCPP16)
    assert decoded is None and error is not None
    assert (error.unique_id, error.error_code) == ("deep", "FormationViolation")
    _, error = classify_frame('[2,"big","Reset",{"type":' + "9" * 5000 + "}]", OCPP16)
    assert error is not None and error.error_code == "FormationViolation"
    _, error = classify_frame('[2,"sur","Authorize",{"idTag":"\\udfff"}]', OCPP16)
    assert error is not None and "surrogate" in error.error_description
    # results and errors of the wrong shape are dropped, not queued for a waiting call
    assert classify_frame('[3,"id",[1]]', OCPP16) == (None, None)
    assert classify_frame('[4,"id",1,"x",{}]', OCPP16) == (None, None)
    assert classify_frame('[4,"id","GenericError","x",null]', OCPP16)[0] == [4, "id", "GenericError", "x", {}]
    assert classify_frame(b"\xff\xfe", OCPP16) == (None, None)


# --- found by tests/test_e2e_fuzz_ocpp.py ---------------------------------------------------------------


def test_a_call_with_an_id_and_nothing_else_gets_protocol_error() -> None:
    # the id is readable, so OCPP-J 1.6 §4.2.3 owes a CALLERROR (it used to go unanswered)
    decoded, error = classify_frame('[2,"lonely"]', OCPP16)
    assert decoded is None and error is not None
    assert (error.unique_id, error.error_code) == ("lonely", "ProtocolError")
    assert classify_frame("[2]", OCPP16) == (None, None)  # no id: nobody to answer


def test_ids_with_escapes_or_empty_are_read_from_frames_beyond_the_limits() -> None:
    deep = "[" * 2000 + "]" * 2000
    for raw_id, unique_id in (('"a\\u00e9\\"b"', 'aé"b'), ('""', ""), ('"\\u6771\\/x"', "東/x")):
        _, error = classify_frame(f'[2,{raw_id},"DataTransfer",{{"vendorId":"x","data":{deep}}}]', OCPP16)
        assert error is not None and (error.unique_id, error.error_code) == (unique_id, "FormationViolation")
    # an id that cannot be sent back (a lone surrogate) is no id
    assert classify_frame(f'[2,"x\\ud800","DataTransfer",{{"vendorId":"x","data":{deep}}}]', OCPP16) == (None, None)


async def test_callerror_descriptions_stay_short(link: tuple[Server, SlowChargePoint]) -> None:
    # jsonschema quotes the offending value whole; 100,000 characters of it made a CALLERROR past the CSMS's
    # frame limit, which closed the connection
    server, _ = link
    await server.conn.send(json.dumps([2, "long", "ChangeConfiguration", {"key": "K", "value": "\u2028" * 100_000}]))
    answer = await server.expect("long")
    assert answer[0] == 4 and answer[2] == "TypeConstraintViolation"
    assert len(answer[3]) <= MAX_ERROR_DESCRIPTION and len(json.dumps(answer)) < 2 * MAX_ERROR_DESCRIPTION + 200


async def test_a_payload_too_big_to_validate_is_refused_first(link: tuple[Server, SlowChargePoint]) -> None:
    # 1 MiB of wrong-typed items: validating them all held the event loop (and so the hardware) for 5 s
    server, _ = link
    await server.conn.send('[2,"flood","ChangeConfiguration",{"key":[' + ",".join(["1"] * 500_000) + '],"value":"v"}]')
    answer = await server.expect("flood", wait_s=5)
    assert answer[0] == 4 and answer[2] == "OccurenceConstraintViolation" and "10000 values" in answer[3]
    assert excess({"a": [[1, 2], [3]]}) is None
    assert excess({"a": [[1, 2], [3]]}, max_items=1) in ("a: more than 1 items", "a.0: more than 1 items")


def _client(tmp_path: Path) -> tuple[Ocpp16Client, Database]:
    config = parse_config('[charge_point]\nid = "CP-1"\n[storage]\ndir = "/nowhere"\n[ocpp]\ncsms_url = "ws://127.0.0.1:9"\n'
                          '[[connectors]]\nid = 1\nboard = { driver = "ioboard", port = "/dev/null" }\n')
    db = Database(tmp_path / "agent.db")
    return Ocpp16Client(config, {}, db, ConfigurationKeys(db, 1), request_exit=lambda _: None), db


async def test_get_configuration_takes_at_most_get_configuration_max_keys(tmp_path: Path) -> None:
    # its answer repeats every key, escaped: 9,500 unknown keys of 50 "é" made a 2.9 MB CALLRESULT, and the
    # CSMS closed the connection over it
    client, db = _client(tmp_path)
    cp = RpcChargePoint("CP-1", None, OCPP16, handlers=client._handlers)
    assert cp.max_items("GetConfiguration") == client.ctx.keys.get_int("GetConfigurationMaxKeys") == 64
    assert excess({"key": ["é" * 50] * 65}, max_items=cp.max_items("GetConfiguration")) == "key: more than 64 items"
    assert cp.max_items("RemoteStartTransaction") is None
    db.close()


async def test_remote_stop_of_a_transaction_id_beyond_64_bits_is_rejected(tmp_path: Path) -> None:
    # valid for the 1.6 schema (no bound), but SQLite raised OverflowError: the CSMS got InternalError
    client, db = _client(tmp_path)
    remote = next(h for h in client._handlers if isinstance(h, RemoteControl))
    for transaction_id in (2 ** 63, -(2 ** 63) - 1, 10 ** 30, 7):
        assert await remote.remote_stop(transaction_id) == "Rejected"
    db.close()


async def test_a_request_checked_when_queued_is_not_validated_again(link: tuple[Server, SlowChargePoint]) -> None:
    # the outbox checks its messages as they are queued (transactions.check_queued): sending trusts that check
    server, cp = link
    with pytest.raises(OCPPError):
        await cp.call_raw("Heartbeat", {"unexpected": 1})
    assert await cp.call_raw("Heartbeat", {"unexpected": 1}, checked=True) == {"currentTime": "2026-01-01T00:00:00Z"}
    sent = await asyncio.wait_for(server.received.get(), 5)
    assert sent[2:] == ["Heartbeat", {"unexpected": 1}]  # the first frame the CSMS saw: the unchecked one never left
