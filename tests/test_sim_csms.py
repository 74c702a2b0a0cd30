"""The simulated CSMS, driven by a real OCPP 1.6J charge point built with the ocpp library.

Everything runs over real websockets on 127.0.0.1 (ephemeral port). The client library validates the
CSMS's answers against the 1.6 schemas, so every CALLRESULT here is also checked to be schema-valid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.exceptions import InternalError, OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import (
    Action,
    AvailabilityStatus,
    ConfigurationStatus,
    DataTransferStatus,
    RemoteStartStopStatus,
    ResetStatus,
    TriggerMessageStatus,
    UnlockStatus,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sim.csms.behaviour import BehaviourError, ChargePointProfile, CsmsBehaviour
from sim.csms.cli import execute_command
from sim.csms.ocppj import ErrorCode, FrameError, check_payload, is_rfc3339, parse_frame
from sim.csms.server import (
    CallErrorReceived,
    InvalidRequest,
    InvalidResponse,
    NotConnected,
    SimulatedCsms,
    identity_from_path,
)
from sim.csms.transcript import Direction, EntryKind, Transcript, read_jsonl
from tests.station import WAIT_S

CP = "CP-0001"
REPO_ROOT = Path(__file__).resolve().parents[1]
T0 = "2025-03-01T10:00:00Z"


F = TypeVar("F", bound=Callable[..., Any])


def handles(action: str, *, skip_schema_validation: bool = False) -> Callable[[F], F]:
    """``ocpp.routing.on``, typed (the library ships no type information)."""
    return cast(Callable[[F], F], on(action, skip_schema_validation=skip_schema_validation))


class ClientChargePoint(ChargePoint):  # type: ignore[misc]
    """A minimal OCPP 1.6 charge point: answers the commands a CSMS sends."""

    def __init__(self, cp_id: str, ws: ClientConnection) -> None:
        super().__init__(cp_id, ws, response_timeout=WAIT_S)
        self.ws = ws
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.unlock_delay_s = 0.0

    @handles(Action.reset)
    def on_reset(self, **kw: Any) -> Any:
        self.received.append(("Reset", kw))
        return call_result.Reset(status=ResetStatus.accepted)

    @handles(Action.remote_start_transaction)
    def on_remote_start(self, **kw: Any) -> Any:
        self.received.append(("RemoteStartTransaction", kw))
        return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

    @handles(Action.remote_stop_transaction)
    def on_remote_stop(self, **kw: Any) -> Any:
        self.received.append(("RemoteStopTransaction", kw))
        return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.rejected)

    @handles(Action.change_availability)
    def on_change_availability(self, **kw: Any) -> Any:
        self.received.append(("ChangeAvailability", kw))
        return call_result.ChangeAvailability(status=AvailabilityStatus.scheduled)

    @handles(Action.change_configuration)
    def on_change_configuration(self, **kw: Any) -> Any:
        self.received.append(("ChangeConfiguration", kw))
        return call_result.ChangeConfiguration(status=ConfigurationStatus.reboot_required)

    @handles(Action.get_configuration)
    def on_get_configuration(self, **kw: Any) -> Any:
        self.received.append(("GetConfiguration", kw))
        return call_result.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "60"}],
            unknown_key=["Nope"])

    @handles(Action.clear_cache, skip_schema_validation=True)
    def on_clear_cache(self, **kw: Any) -> Any:
        # deliberately outside the schema, to check the CSMS rejects invalid answers
        return call_result.ClearCache(status="Maybe")

    @handles(Action.unlock_connector)
    async def on_unlock(self, **kw: Any) -> Any:
        await asyncio.sleep(self.unlock_delay_s)
        self.received.append(("UnlockConnector", kw))
        return call_result.UnlockConnector(status=UnlockStatus.unlocked)

    @handles(Action.data_transfer)
    def on_data_transfer(self, **kw: Any) -> Any:
        self.received.append(("DataTransfer", kw))
        return call_result.DataTransfer(status=DataTransferStatus.accepted, data="pong")

    @handles(Action.trigger_message)
    def on_trigger(self, **kw: Any) -> Any:
        self.received.append(("TriggerMessage", kw))
        return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@contextlib.asynccontextmanager
async def charge_point(csms: SimulatedCsms, cp_id: str = CP, *, headers: dict[str, str] | None = None,
                       subprotocols: tuple[str, ...] = ("ocpp1.6",)) -> AsyncIterator[ClientChargePoint]:
    ws = await connect(csms.url_for(cp_id), subprotocols=list(subprotocols),  # type: ignore[arg-type]
                       additional_headers=headers, open_timeout=WAIT_S, close_timeout=1)
    cp = ClientChargePoint(cp_id, ws)
    task = asyncio.create_task(cp.start())
    try:
        await csms.wait_connected(cp_id, timeout_s=WAIT_S)
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await task
        await ws.close()
        await csms.wait_disconnected(cp_id, timeout_s=WAIT_S)  # so the CSMS side is settled when we return


@pytest.fixture
async def csms(tmp_path: Path) -> AsyncIterator[SimulatedCsms]:
    async with SimulatedCsms(port=0, transcript_path=str(tmp_path / "transcript.jsonl"),
                             response_timeout_s=WAIT_S, close_timeout_s=1) as c:
        yield c


def boot() -> Any:
    return call.BootNotification(charge_point_model="Model-X", charge_point_vendor="Vendor-Y")


async def raw_exchange(ws: ClientConnection, frame: str, timeout_s: float = WAIT_S) -> list[Any]:
    await ws.send(frame)
    answer = await asyncio.wait_for(ws.recv(), timeout_s)
    return json.loads(answer)  # type: ignore[no-any-return]


# ---- boot, heartbeat --------------------------------------------------------------------------------

async def test_boot_status_sequence_and_intervals(csms: SimulatedCsms) -> None:
    csms.behaviour.profiles[CP] = ChargePointProfile(
        boot_statuses=["Pending", "Rejected", "Accepted"], heartbeat_interval=30, boot_retry_interval=2)
    async with charge_point(csms) as cp:
        answers = [await cp.call(boot()) for _ in range(4)]
        hb = await cp.call(call.Heartbeat())
    assert [(a.status, a.interval) for a in answers] == [
        ("Pending", 2), ("Rejected", 2), ("Accepted", 30), ("Accepted", 30)]  # the last status repeats
    for a in [*answers, hb]:
        assert is_rfc3339(a.current_time) and a.current_time.endswith("Z")
    state = csms.state(CP)
    assert state.registration_status == "Accepted"
    assert len(state.boots) == 4 and state.last_boot is not None
    assert state.last_boot.payload == {"chargePointModel": "Model-X", "chargePointVendor": "Vendor-Y"}
    assert state.heartbeat_count == 1


async def test_other_charge_points_use_the_default_profile(csms: SimulatedCsms) -> None:
    csms.behaviour.default_profile = ChargePointProfile(boot_statuses=["Pending", "Accepted"],
                                                        heartbeat_interval=5)
    async with charge_point(csms, "CP-A") as a, charge_point(csms, "CP-B") as b:
        assert (await a.call(boot())).status == "Pending"
        assert (await b.call(boot())).status == "Pending"
        assert (await a.call(boot())).status == "Accepted"
        assert (await a.call(boot())).interval == 5
    assert csms.state("CP-A").registration_status == "Accepted"
    assert csms.state("CP-B").registration_status == "Pending"


# ---- authorization ------------------------------------------------------------------------------------

async def test_authorize_answers_every_list_kind(csms: SimulatedCsms) -> None:
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    tags = csms.behaviour.id_tags
    tags.accept("ACC", parent_id_tag="FLEET-1", expiry_date=future)
    tags.accept("ACC-OLD", expiry_date=past)  # accepted once, expiry date now in the past
    tags.block("BLK")
    tags.expire("EXP", expiry_date=past)
    tags.invalidate("INV")
    tags.concurrent("CON")
    async with charge_point(csms) as cp:
        async def info(tag: str) -> dict[str, Any]:
            return dict((await cp.call(call.Authorize(id_tag=tag))).id_tag_info)

        assert await info("ACC") == {"status": "Accepted", "parent_id_tag": "FLEET-1",
                                     "expiry_date": future.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        assert await info("acc") == await info("ACC")  # IdToken is case-insensitive (CiString)
        assert (await info("ACC-OLD"))["status"] == "Expired"
        assert await info("BLK") == {"status": "Blocked"}
        assert await info("EXP") == {"status": "Expired",
                                     "expiry_date": past.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        assert await info("INV") == {"status": "Invalid"}
        assert await info("CON") == {"status": "ConcurrentTx"}
        assert await info("NOBODY") == {"status": "Invalid"}
        tags.default_status = "Accepted"
        assert await info("NOBODY") == {"status": "Accepted"}


def test_behaviour_rejects_what_no_csms_could_answer() -> None:
    b = CsmsBehaviour()
    with pytest.raises(BehaviourError, match="idTag status"):
        b.id_tags.set("X", "Fine")
    with pytest.raises(BehaviourError, match=r"1\.\.20"):
        b.id_tags.accept("X" * 21)
    with pytest.raises(BehaviourError, match="timezone"):
        b.id_tags.accept("X", expiry_date=datetime(2030, 1, 1))  # naive: the point of the test
    with pytest.raises(BehaviourError, match="boot status"):
        ChargePointProfile(boot_statuses=["Maybe"])
    with pytest.raises(BehaviourError, match="errorCode"):
        b.faults.fail_next("Heartbeat", 1, error_code="FormatViolation")  # the 2.0.1 spelling
    with pytest.raises(BehaviourError, match="unknown key"):
        CsmsBehaviour.from_mapping({"id_tags": [{"id": "A", "colour": "red"}]})
    with pytest.raises(BehaviourError, match="missing key id"):
        CsmsBehaviour.from_mapping({"id_tags": [{"status": "Accepted"}]})


def test_behaviour_from_toml_mapping() -> None:
    b = CsmsBehaviour.from_mapping({
        "csms": {"unknown_id_tag_status": "Blocked", "first_transaction_id": 500},
        "charge_points": {"default": {"boot_statuses": ["Pending", "Accepted"]},
                          "CP-9": {"heartbeat_interval": 15, "password": "s3cret-s3cret-16"}},
        "id_tags": [{"id": "A1", "status": "Accepted", "expiry_date": "2030-01-01T00:00:00Z",
                     "parent_id_tag": "G"}],
        "data_transfer": [{"vendor_id": "acme", "message_id": "ping", "data": "pong"}],
        "faults": [{"action": "StartTransaction", "fail_next": 2}, {"action": "Heartbeat", "delay_s": 0.5}],
    })
    now = datetime(2029, 1, 1, tzinfo=UTC)
    assert b.id_tags.id_tag_info("a1", now) == {"status": "Accepted", "expiryDate": "2030-01-01T00:00:00.000Z",
                                                "parentIdTag": "G"}
    assert b.id_tags.id_tag_info("zz", now) == {"status": "Blocked"}
    assert b.profile("CP-9").boot_answer(0) == ("Accepted", 15)
    assert b.profile("other").boot_answer(0) == ("Pending", 60)
    assert b.profile("CP-9").password == "s3cret-s3cret-16"
    assert "s3cret" not in repr(b.profile("CP-9"))  # never printed by accident
    assert b.data_transfer.answer("acme", "ping").data == "pong"
    assert b.data_transfer.answer("acme", "other").status == "UnknownMessageId"
    assert b.data_transfer.answer("other", "ping").status == "UnknownVendorId"
    assert b.faults.take("CP", "StartTransaction").error_code == "InternalError"
    assert b.faults.take("CP", "Heartbeat").delay_s == 0.5
    assert b.first_transaction_id == 500


# ---- transactions ---------------------------------------------------------------------------------------

async def test_transactions_get_increasing_ids_and_stop_closes_them(csms: SimulatedCsms) -> None:
    csms.behaviour.id_tags.accept("TAG-1")
    csms.behaviour.id_tags.block("TAG-B")
    sample = {"timestamp": T0, "sampledValue": [{"value": "1234", "measurand": "Energy.Active.Import.Register",
                                                 "unit": "Wh"}]}
    async with charge_point(csms) as cp:
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing",
                                              timestamp=T0))
        s1 = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG-1", meter_start=1000, timestamp=T0))
        s2 = await cp.call(call.StartTransaction(connector_id=2, id_tag="TAG-B", meter_start=50, timestamp=T0))
        assert s2.transaction_id > s1.transaction_id
        assert s1.id_tag_info["status"] == "Accepted" and s2.id_tag_info["status"] == "Blocked"
        await cp.call(call.MeterValues(connector_id=1, transaction_id=s1.transaction_id, meter_value=[sample]))
        await cp.call(call.MeterValues(connector_id=0, meter_value=[sample]))  # not in a transaction
        stop = await cp.call(call.StopTransaction(
            meter_stop=3500, timestamp=T0, transaction_id=s1.transaction_id, id_tag="TAG-1", reason="Local",
            transaction_data=[sample]))
        assert stop.id_tag_info == {"status": "Accepted"}
        stop2 = await cp.call(call.StopTransaction(meter_stop=60, timestamp=T0, transaction_id=s2.transaction_id))
        assert stop2.id_tag_info is None  # no idTag given, so no idTagInfo
        orphan = await cp.call(call.StopTransaction(meter_stop=1, timestamp=T0, transaction_id=999))
        assert orphan.id_tag_info is None
    st_ = csms.state(CP)
    t1 = st_.transactions[s1.transaction_id]
    assert (t1.connector_id, t1.id_tag, t1.meter_start, t1.meter_stop, t1.energy_wh) == (1, "TAG-1", 1000, 3500,
                                                                                         2500)
    assert t1.stop_reason == "Local" and t1.meter_values == [sample, sample]
    assert st_.transactions[s2.transaction_id].id_tag_status == "Blocked"
    assert not st_.transactions[999].started
    assert st_.open_transactions == [] and len(st_.closed_transactions) == 3
    assert st_.meter_values == [{"connectorId": 0, "meterValue": [sample]}]
    assert st_.connector_status(1) == "Preparing"


async def test_transaction_ids_count_across_charge_points(csms: SimulatedCsms) -> None:
    ids = []
    async with charge_point(csms, "CP-A") as a, charge_point(csms, "CP-B") as b:
        for meter_start, cp in enumerate((a, b, a)):
            r = await cp.call(call.StartTransaction(connector_id=1, id_tag="X", meter_start=meter_start,
                                                    timestamp=T0))
            ids.append(r.transaction_id)
    assert ids == [1, 2, 3]
    assert [t.transaction_id for t in csms.state("CP-A").open_transactions] == [1, 3]


@pytest.mark.parametrize("recognise", [True, False])
async def test_a_repeated_start_transaction_gets_its_first_id(csms: SimulatedCsms, recognise: bool) -> None:
    """A charge point that lost the answer sends the identical StartTransaction again (OCPP 1.6 has no
    duplicate detection); matching on connector, idTag, meterStart and timestamp gives it the same id."""
    csms.behaviour.recognise_repeated_starts = recognise
    async with charge_point(csms, "CP-A") as a, charge_point(csms, "CP-B") as b:
        first = await a.call(call.StartTransaction(connector_id=1, id_tag="X", meter_start=5, timestamp=T0))
        again = await a.call(call.StartTransaction(connector_id=1, id_tag="X", meter_start=5, timestamp=T0))
        other_cp = await b.call(call.StartTransaction(connector_id=1, id_tag="X", meter_start=5, timestamp=T0))
        later = await a.call(call.StartTransaction(connector_id=1, id_tag="X", meter_start=6, timestamp=T0))
    ids = [r.transaction_id for r in (first, again, other_cp, later)]
    assert ids == ([1, 1, 2, 3] if recognise else [1, 2, 3, 4])
    if recognise:
        assert csms.state("CP-A").transactions[1].repeat_count == 1


async def test_data_transfer_from_charge_point_uses_configured_answers(csms: SimulatedCsms) -> None:
    csms.behaviour.data_transfer.set("com.acme", "ping", status="Accepted", data="pong")
    async with charge_point(csms) as cp:
        r1 = await cp.call(call.DataTransfer(vendor_id="com.acme", message_id="ping", data="x"))
        r2 = await cp.call(call.DataTransfer(vendor_id="com.acme", message_id="other"))
        r3 = await cp.call(call.DataTransfer(vendor_id="org.unknown"))
    assert (r1.status, r1.data) == ("Accepted", "pong")
    assert r2.status == "UnknownMessageId"
    assert r3.status == "UnknownVendorId"
    assert csms.state(CP).data_transfers[0] == {"vendorId": "com.acme", "messageId": "ping", "data": "x"}


# ---- handshake: subprotocol, path, Basic auth ---------------------------------------------------------

async def test_handshake_without_ocpp16_subprotocol_is_refused(csms: SimulatedCsms) -> None:
    for offered in (("ocpp2.0.1",), ()):
        with pytest.raises(InvalidStatus) as err:
            async with charge_point(csms, subprotocols=offered):
                pass
        assert err.value.response.status_code == 400
    refused = csms.transcript.events(CP, kind=EntryKind.REFUSED)
    assert [e.detail["status"] for e in refused] == [400, 400]
    assert "ocpp1.6 required" in refused[0].detail["reason"]
    assert not csms.is_connected(CP) and csms.state(CP).connection_count == 0


async def test_handshake_path_must_name_a_charge_point(csms: SimulatedCsms) -> None:
    for url in (csms.url, csms.url + "/a/b", csms.url.replace("/ocpp", "/other") + "/CP"):
        with pytest.raises(InvalidStatus) as err:
            await connect(url, subprotocols=["ocpp1.6"], open_timeout=WAIT_S)  # type: ignore[list-item]
        assert err.value.response.status_code == 404


def test_identity_is_the_percent_decoded_last_segment() -> None:
    assert identity_from_path("/ocpp/CP%201?x=1", "/ocpp") == "CP 1"
    assert identity_from_path("/ocpp/CP-1", "/ocpp/") == "CP-1"
    assert identity_from_path("/CP-1", "") == "CP-1"
    assert identity_from_path("/ocpp/", "/ocpp") is None
    assert identity_from_path("/ocpp/a/b", "/ocpp") is None
    assert identity_from_path("/x/CP", "/ocpp") is None


async def test_basic_auth_wrong_or_missing_password_gets_401(csms: SimulatedCsms) -> None:
    csms.behaviour.profiles[CP] = ChargePointProfile(password="correct-horse-battery")
    for headers in (_basic(CP, "wrong-password-000"), None, _basic("CP-OTHER", "correct-horse-battery"),
                    {"Authorization": "Basic !!notbase64"}):
        with pytest.raises(InvalidStatus) as err:
            async with charge_point(csms, headers=headers):
                pass
        assert err.value.response.status_code == 401
        assert err.value.response.headers["WWW-Authenticate"].startswith("Basic ")
    async with charge_point(csms, headers=_basic(CP, "correct-horse-battery")) as cp:
        assert (await cp.call(boot())).status == "Accepted"
    refusals = csms.transcript.events(CP, kind=EntryKind.REFUSED)
    assert [e.detail["status"] for e in refusals] == [401] * 4
    # the transcript never holds the password
    assert "correct-horse" not in "".join(e.to_json() for e in csms.transcript.entries)


async def test_known_charge_points_only(csms: SimulatedCsms) -> None:
    csms.behaviour.known_charge_points_only = True
    csms.behaviour.profiles["CP-KNOWN"] = ChargePointProfile()
    with pytest.raises(InvalidStatus) as err:
        async with charge_point(csms, "CP-STRANGER"):
            pass
    assert err.value.response.status_code == 404
    async with charge_point(csms, "CP-KNOWN") as cp:
        await cp.call(call.Heartbeat())


# ---- payload validation: OCPP-J 1.6 §4.2.3 error codes, raw frames recorded ---------------------------

INVALID_CALLS = [
    # (frame sent by the charge point, errorCode the CSMS must answer)
    ('[2,"v1","Authorize",{"idTag":"A","colour":"red"}]', "FormationViolation"),
    ('[2,"v2","StartTransaction",{"idTag":"A","meterStart":0,"timestamp":"' + T0 + '"}]',
     "ProtocolError"),  # connectorId missing: "Payload for Action is incomplete"
    ('[2,"v3","StartTransaction",{"connectorId":"1","idTag":"A","meterStart":0,"timestamp":"' + T0 + '"}]',
     "TypeConstraintViolation"),
    ('[2,"v4","Authorize",{"idTag":"ABCDEFGHIJKLMNOPQRSTU"}]', "TypeConstraintViolation"),  # 21 > CiString20
    ('[2,"v5","StartTransaction",{"connectorId":1,"idTag":"A","meterStart":0,"timestamp":"yesterday"}]',
     "TypeConstraintViolation"),
    ('[2,"v6","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charged"}]',
     "PropertyConstraintViolation"),
    ('[2,"v7","FooBar",{}]', "NotImplemented"),  # not an OCPP 1.6 action
    ('[2,"v8","Reset",{"type":"Hard"}]', "NotSupported"),  # a 1.6 action, but CSMS -> CP only
    ('[2,"v9","Heartbeat"]', "FormationViolation"),  # CALL without payload
    ('[2,"v9b","Heartbeat",[]]', "FormationViolation"),  # payload not an object
    ('[9,"v10","Heartbeat",{}]', "FormationViolation"),  # unknown MessageTypeId
]


async def test_schema_violations_get_the_ocppj16_error_and_are_recorded_raw(csms: SimulatedCsms) -> None:
    async with charge_point(csms) as cp:
        # a bare websocket: the ocpp library would refuse to send these frames
        async with await connect(csms.url_for("CP-RAW"), subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            for frame, code in INVALID_CALLS:
                answer = await raw_exchange(ws, frame)
                uid = json.loads(frame)[1]
                assert answer[:3] == [4, uid, code], frame
                assert isinstance(answer[3], str) and isinstance(answer[4], dict)
                received = csms.transcript.messages("CP-RAW", direction=Direction.FROM_CP)[-1]
                assert received.raw == frame and received.unique_id == uid
                reply = csms.transcript.messages("CP-RAW", direction=Direction.TO_CP)[-1]
                assert (reply.kind, reply.error_code, reply.unique_id) == (EntryKind.CALLERROR, code, uid)
            # not JSON at all: no uniqueId to answer to, so no answer; recorded; the link carries on
            await ws.send("{nonsense")
            await ws.send(b"\x00\x01binary")
            answer = await raw_exchange(ws, '[2,"ok1","Heartbeat",{}]')
            assert answer[0] == 3 and answer[1] == "ok1"
            # OCPP-J 1.6 §4.2.1: "no payload" may be null as well as {}
            answer = await raw_exchange(ws, '[2,"ok2","Heartbeat",null]')
            assert answer[:2] == [3, "ok2"] and "currentTime" in answer[2]
        malformed = csms.transcript.messages("CP-RAW", kind=EntryKind.MALFORMED)
        assert [m.raw for m in malformed][-2:] == ["{nonsense", "\x00\x01binary"]
        # the other charge point's connection was not disturbed by any of this
        assert (await cp.call(call.Heartbeat())).current_time


async def test_reject_calls_before_accepted_answers_security_error(csms: SimulatedCsms) -> None:
    csms.behaviour.reject_calls_before_accepted = True
    csms.behaviour.default_profile = ChargePointProfile(boot_statuses=["Pending", "Accepted"])
    async with charge_point(csms) as cp:
        with pytest.raises(Exception) as err:
            await cp.call(call.Heartbeat(), suppress=False)
        assert type(err.value).__name__ == "SecurityError"
        await cp.call(boot())  # Pending
        with pytest.raises(Exception, match="not accepted"):
            await cp.call(call.Authorize(id_tag="A"), suppress=False)
        await cp.call(boot())  # Accepted
        assert (await cp.call(call.Heartbeat())).current_time


# ---- fault injection ----------------------------------------------------------------------------------

async def test_fail_next_n_calls_then_answer_normally(csms: SimulatedCsms) -> None:
    csms.behaviour.faults.fail_next("StartTransaction", 2, error_code="InternalError")
    req = call.StartTransaction(connector_id=1, id_tag="A", meter_start=0, timestamp=T0)
    async with charge_point(csms) as cp:
        for _ in range(2):
            with pytest.raises(InternalError):
                await cp.call(req, suppress=False)
        ok = await cp.call(req, suppress=False)
        assert (await cp.call(call.Heartbeat())).current_time  # other actions unaffected
    assert ok.transaction_id == 1  # failed attempts did not reach the CSMS's books
    errors = csms.transcript.messages(CP, action="StartTransaction", kind=EntryKind.CALLERROR)
    assert [(e.error_code, e.payload) for e in errors] == [("InternalError", {"injected": True})] * 2


async def test_ignore_and_delay_answers(csms: SimulatedCsms) -> None:
    faults = csms.behaviour.faults
    faults.ignore_next("Heartbeat", 1, cp_id=CP)
    faults.set_delay("Authorize", 0.2)
    async with charge_point(csms) as cp:
        cp._response_timeout = 0.3
        with pytest.raises(asyncio.TimeoutError):
            await cp.call(call.Heartbeat())
        cp._response_timeout = WAIT_S  # the answers that do come: however slowly the machine runs
        assert (await cp.call(call.Heartbeat())).current_time
        t0 = time.monotonic()
        await cp.call(call.Authorize(id_tag="A"))
        assert time.monotonic() - t0 >= 0.2
    hb = csms.transcript.messages(CP, action="Heartbeat", direction=Direction.FROM_CP)
    assert csms.transcript.response_to(hb[0]) is None and csms.transcript.response_to(hb[1]) is not None


# ---- commands CSMS -> charge point ----------------------------------------------------------------------

async def test_command_injection_round_trip(csms: SimulatedCsms) -> None:
    async with charge_point(csms) as cp:
        assert await csms.reset(CP, "Hard") == {"status": "Accepted"}
        assert await csms.remote_start_transaction(CP, "TAG-1", connector_id=2) == {"status": "Accepted"}
        assert await csms.remote_stop_transaction(CP, 7) == {"status": "Rejected"}
        assert await csms.change_availability(CP, 0, "Inoperative") == {"status": "Scheduled"}
        assert await csms.change_configuration(CP, "HeartbeatInterval", "30") == {"status": "RebootRequired"}
        assert await csms.get_configuration(CP, ["HeartbeatInterval", "Nope"]) == {
            "configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}],
            "unknownKey": ["Nope"]}
        assert await csms.unlock_connector(CP, 1) == {"status": "Unlocked"}
        assert await csms.data_transfer(CP, "com.acme", message_id="ping") == {"status": "Accepted",
                                                                               "data": "pong"}
        assert await csms.trigger_message(CP, "StatusNotification", connector_id=1) == {"status": "Accepted"}
        assert await csms.call(CP, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
        # the client has no handler for it: its library answers with a CALLERROR
        with pytest.raises(CallErrorReceived) as err:
            await csms.call(CP, "GetLocalListVersion", {})
        assert err.value.code in ("NotImplemented", "NotSupported")
        with pytest.raises(InvalidResponse, match="PropertyConstraintViolation"):
            await csms.clear_cache(CP)
        with pytest.raises(InvalidRequest):
            await csms.reset(CP, "Sideways")  # caught before it is sent
        cp.unlock_delay_s = 0.5
        with pytest.raises(TimeoutError):
            await csms.unlock_connector(CP, 1, timeout_s=0.1)
        late = await csms.transcript.wait_for("UnlockConnector", direction=Direction.FROM_CP,
                                              kind=EntryKind.CALLRESULT, since=len(csms.transcript) - 1,
                                              timeout_s=WAIT_S)
        assert late.detail == {"unsolicited": True}  # recorded, labelled, and not mistaken for a new answer
    assert [name for name, _ in cp.received] == [
        "Reset", "RemoteStartTransaction", "RemoteStopTransaction", "ChangeAvailability", "ChangeConfiguration",
        "GetConfiguration", "UnlockConnector", "DataTransfer", "TriggerMessage", "Reset", "UnlockConnector"]
    sent = csms.transcript.messages(CP, direction=Direction.TO_CP, kind=EntryKind.CALL)
    assert [e.action for e in sent][:3] == ["Reset", "RemoteStartTransaction", "RemoteStopTransaction"]
    answered = csms.transcript.response_to(sent[1])
    assert answered is not None and answered.action == "RemoteStartTransaction"
    assert answered.payload == {"status": "Accepted"}
    with pytest.raises(NotConnected):
        await csms.reset("CP-NOT-HERE")


async def test_session_speaks_the_ocpp_library_call_api(csms: SimulatedCsms) -> None:
    async with charge_point(csms):
        session = csms.session(CP)
        answer = await session.call(call.ChangeConfiguration(key="HeartbeatInterval", value="30"))
        assert answer == call_result.ChangeConfiguration(status="RebootRequired")
        assert await session.call(call.GetLocalListVersion()) is None  # CALLERROR, suppressed
        with pytest.raises(OCPPError):
            await session.call(call.GetLocalListVersion(), suppress=False)


async def test_commands_via_the_cli_json_channel(csms: SimulatedCsms) -> None:
    async with charge_point(csms):
        ok = await execute_command(csms, json.dumps({"cp_id": CP, "action": "Reset", "payload": {"type": "Soft"}}))
        assert ok == {"cp_id": CP, "action": "Reset", "response": {"status": "Accepted"}}
        failed = await execute_command(csms, json.dumps({"cp_id": CP, "action": "GetLocalListVersion"}))
        assert failed["call_error"]["code"] in ("NotImplemented", "NotSupported")
        assert "error" in await execute_command(csms, "not json")
        assert "error" in await execute_command(csms, json.dumps({"cp_id": "nobody", "action": "Reset",
                                                                  "payload": {"type": "Soft"}}))
        assert await execute_command(csms, json.dumps({"online": False})) == {"online": False}
        assert not csms.is_connected(CP)
        assert await execute_command(csms, json.dumps({"online": True})) == {"online": True}


# ---- connection loss ------------------------------------------------------------------------------------

async def test_offline_refuses_then_online_accepts_reconnect(csms: SimulatedCsms) -> None:
    async with charge_point(csms) as cp:
        await cp.call(boot())
        await csms.set_online(False)
        assert not csms.is_connected(CP) and not csms.state(CP).connected
        await asyncio.wait_for(cp.ws.wait_closed(), WAIT_S)
        assert cp.ws.close_code == 1001
    with pytest.raises(InvalidStatus) as err:
        async with charge_point(csms):
            pass
    assert err.value.response.status_code == 503
    await csms.set_online(True)
    async with charge_point(csms) as cp2:
        assert (await cp2.call(call.Heartbeat())).current_time
    assert csms.state(CP).connection_count == 2
    kinds = [e.kind for e in csms.transcript.events(CP)]
    assert kinds == [EntryKind.CONNECT, EntryKind.DISCONNECT, EntryKind.REFUSED, EntryKind.CONNECT,
                     EntryKind.DISCONNECT]


async def test_offline_with_abort_drops_without_closing_handshake(csms: SimulatedCsms) -> None:
    async with charge_point(csms) as cp:
        await csms.set_online(False, abort=True)
        await asyncio.wait_for(cp.ws.wait_closed(), WAIT_S)
        assert cp.ws.close_code == 1006  # abnormal closure: no close frame was received
    with pytest.raises(NotConnected):
        await csms.reset(CP)


async def test_a_new_connection_replaces_the_old_one(csms: SimulatedCsms) -> None:
    async with charge_point(csms) as old:
        async with charge_point(csms) as new:
            await asyncio.wait_for(old.ws.wait_closed(), WAIT_S)
            assert old.ws.close_reason == "replaced by a new connection"
            assert csms.is_connected(CP) and csms.state(CP).connection_count == 2
            assert (await new.call(call.Heartbeat())).current_time
            replaced = await csms.transcript.wait_for_event(EntryKind.DISCONNECT, CP, timeout_s=WAIT_S)
            assert replaced.detail["replaced"] is True


# ---- transcript ------------------------------------------------------------------------------------------

async def test_transcript_file_is_valid_json_lines(csms: SimulatedCsms, tmp_path: Path) -> None:
    async with charge_point(csms) as cp:
        await cp.call(boot())
        await cp.ws.send('[2,"bad-1","Authorize",{}]')
        exchange = await csms.wait_for_exchange("Authorize", cp_id=CP, timeout_s=WAIT_S)
        assert exchange.response.error_code == "ProtocolError"
        await csms.reset(CP)
    await csms.wait_disconnected(CP)
    lines = (tmp_path / "transcript.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(csms.transcript) == len(read_jsonl(tmp_path / "transcript.jsonl"))
    assert [r["seq"] for r in records] == list(range(len(records)))
    ts = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    keys = {"seq", "ts", "cp_id", "kind", "direction", "unique_id", "action", "payload", "error_code",
            "error_description", "raw", "detail"}
    for r in records:
        assert set(r) == keys and ts.match(r["ts"]) and r["cp_id"] == CP
    assert [r["kind"] for r in records] == ["connect", "CALL", "CALLRESULT", "CALL", "CALLERROR", "CALL",
                                            "CALLRESULT", "disconnect"]
    assert records[3]["raw"] == '[2,"bad-1","Authorize",{}]'
    assert (records[5]["direction"], records[5]["action"]) == ("to_cp", "Reset")
    assert (records[6]["direction"], records[6]["action"]) == ("from_cp", "Reset")


async def test_wait_for_times_out_with_a_clear_message() -> None:
    t = Transcript()
    with pytest.raises(TimeoutError, match="StopTransaction"):
        await t.wait_for("StopTransaction", timeout_s=0.05)
    waiter = asyncio.create_task(t.wait_for("Heartbeat", lambda e: e.payload == {"n": 2}, timeout_s=WAIT_S))
    t.record(EntryKind.CALL, cp_id="X", direction=Direction.FROM_CP, action="Heartbeat", payload={"n": 1})
    t.record(EntryKind.CALL, cp_id="X", direction=Direction.FROM_CP, action="Heartbeat", payload={"n": 2})
    assert (await waiter).seq == 1


# ---- pure OCPP-J framing/validation, including random input ------------------------------------------

def test_parse_frame_kinds() -> None:
    assert parse_frame('[3,"a",{"x":1}]').payload == {"x": 1}
    assert parse_frame('[3,"a",null]').payload == {} and parse_frame('[2,"a","Heartbeat",null]').payload == {}
    err = parse_frame('[4,"a","InternalError","boom",{}]')
    assert (err.error_code, err.error_description) == ("InternalError", "boom")
    with pytest.raises(FrameError) as e:
        parse_frame('[2,"' + "x" * 37 + '","Heartbeat",{}]')
    assert e.value.answerable and e.value.code is ErrorCode.FORMATION_VIOLATION
    with pytest.raises(FrameError) as e:
        parse_frame('[3,"a"]')
    assert not e.value.answerable  # never answer an answer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                 st.tuples(st.sampled_from([2, 3, 4]), st.text(max_size=40), json_values, json_values)
                 .map(lambda t: json.dumps(list(t)))))
def test_random_frames_parse_or_raise_frame_error_only(text: str) -> None:
    try:
        frame = parse_frame(text)
    except FrameError as exc:
        assert exc.code in ErrorCode
    else:
        assert frame.unique_id and len(frame.unique_id) <= 36


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["BootNotification", "StartTransaction", "MeterValues", "StatusNotification",
                        "StopTransaction", "RemoteStartTransaction", "Nope"]),
       st.dictionaries(st.sampled_from(["connectorId", "idTag", "meterStart", "timestamp", "meterValue",
                                        "chargingProfile", "status", "errorCode", "x"]), json_values, max_size=6))
def test_random_payloads_validate_without_raising(action: str, payload: dict[str, Any]) -> None:
    violation = check_payload(action, payload)
    assert violation is None or violation.code in ErrorCode


def test_rfc3339_needs_a_zone() -> None:
    assert is_rfc3339("2025-03-01T10:00:00Z") and is_rfc3339("2025-03-01T10:00:00.5+01:00")
    assert not is_rfc3339("2025-03-01T10:00:00") and not is_rfc3339("2025-02-30T10:00:00Z")


# ---- the CLI as a separate process ---------------------------------------------------------------------

async def test_cli_runs_alone_and_writes_the_transcript(tmp_path: Path) -> None:
    transcript = tmp_path / "cli.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim", "csms", "--port", "0", "--transcript", str(transcript),
        "--boot-status", "Pending,Accepted", "--boot-retry-interval", "1", "--accept", "TAG-CLI",
        "--stdin-commands", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
        assert first["event"] == "listening"
        async with connect(first["url"] + "/CP-CLI", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            cp = ClientChargePoint("CP-CLI", ws)
            task = asyncio.create_task(cp.start())
            assert (await cp.call(boot())).status == "Pending"
            assert (await cp.call(boot())).status == "Accepted"
            assert (await cp.call(call.Authorize(id_tag="TAG-CLI"))).id_tag_info["status"] == "Accepted"
            proc.stdin.write(b'{"cp_id": "CP-CLI", "action": "Reset", "payload": {"type": "Soft"}}\n')
            await proc.stdin.drain()
            answer = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
            assert answer["response"] == {"status": "Accepted"}
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), WAIT_S)
    assert rc == 0
    kinds = [r["kind"] for r in read_jsonl(transcript)]
    assert kinds[:7] == ["connect", "CALL", "CALLRESULT", "CALL", "CALLRESULT", "CALL", "CALLRESULT"]
    assert "CALL" in kinds[7:]  # the Reset we sent via stdin


async def test_cli_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "csms.toml"
    bad.write_text('[csms]\nunknown_id_tag_status = "Perhaps"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim", "csms", "--port", "0", "--config", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    _, err = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 78
    assert b"Perhaps" in err


async def test_cli_serves_wss_and_asks_for_a_client_certificate(tmp_path: Path) -> None:
    """``python -m sim csms --tls-cert/--tls-key --client-ca``: profile 3 on its own."""
    import ssl as ssl_module

    from sim.harness.pki import make_tls_pki

    pki = make_tls_pki(tmp_path / "pki", charge_point_serial="CP-TLS")
    assert pki.charge_point is not None
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim", "csms", "--port", "0", "--tls-cert", str(pki.csms.cert), "--tls-key",
        str(pki.csms.key), "--client-ca", str(pki.csms_root.path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT_S))
        assert first["url"].startswith("wss://")
        ctx = ssl_module.create_default_context(cafile=str(pki.csms_root.path))
        ctx.load_cert_chain(pki.charge_point.cert, pki.charge_point.key)
        async with connect(first["url"] + "/CP-TLS", subprotocols=["ocpp1.6"], ssl=ctx) as ws:  # type: ignore[list-item]
            cp = ClientChargePoint("CP-TLS", ws)
            task = asyncio.create_task(cp.start())
            assert (await cp.call(boot())).status == "Accepted"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), WAIT_S)
    assert rc == 0
