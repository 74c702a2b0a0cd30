"""End to end: the OCPP-J layer under bad input and lost connections, while a session is charging.

Frames the CSMS should never send (not JSON, unknown MessageTypeId, unknown or unsupported actions,
payloads that break the 1.6 schemas) get the CALLERROR OCPP-J 1.6 §4.2.3 prescribes, or are ignored
where §4.1.3 says so; the agent keeps running and charging. After the CSMS drops the connection the
agent reconnects without a new BootNotification and reports each connector's current status once,
not the history of what happened while it was offline.
"""

from __future__ import annotations

import json
from pathlib import Path

from sim.csms.transcript import EntryKind
from tests.station import CP_ID, WAIT_S, Station

CARD = "04A1B2C3"


async def test_malformed_and_invalid_calls_from_the_csms_while_charging(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1, presets={"MeterValueSampleInterval": 1}) as s:
        await s.start_agent()
        tx_id = await s.start_session(1, CARD)
        mark = s.mark()

        async def error_for(uid: str, frame: list[object]) -> tuple[str, str]:
            await s.send_raw(json.dumps(frame))
            reply = await s.wait_reply(uid, since=mark)
            assert reply.kind is EntryKind.CALLERROR, reply.raw
            assert isinstance(reply.payload, dict)  # errorDetails is always an object
            return reply.error_code or "", reply.error_description or ""

        # not JSON at all: no unique id to answer to, ignored (and counted)
        await s.send_raw('[2, "bad-json", "Reset", {"type": ')
        # §4.1.3: an unknown MessageTypeId is ignored
        await s.send_raw(json.dumps([7, "bad-type", "Reset", {"type": "Soft"}]))
        # Table 7: NotImplemented = not known, NotSupported = known but not supported
        assert (await error_for("u-unknown", [2, "u-unknown", "MakeCoffee", {}]))[0] == "NotImplemented"
        # a 1.6 action a charge point never serves (it is the charge point's own request)
        assert (await error_for("u-heartbeat", [2, "u-heartbeat", "Heartbeat", {}]))[0] == "NotSupported"
        # schema violations, with the 1.6 spelling of the codes
        code, text = await error_for("u-missing", [2, "u-missing", "ChangeConfiguration",
                                                   {"key": "HeartbeatInterval"}])
        assert code == "ProtocolError" and "value" in text  # payload incomplete, naming the field
        code, text = await error_for("u-type", [2, "u-type", "ChangeAvailability",
                                                {"connectorId": "1", "type": "Inoperative"}])
        assert code == "TypeConstraintViolation" and text.startswith("connectorId")
        assert (await error_for("u-long", [2, "u-long", "RemoteStartTransaction",
                                           {"idTag": "X" * 21}]))[0] == "TypeConstraintViolation"
        assert (await error_for("u-extra", [2, "u-extra", "ClearCache", {"please": True}]))[0] == "FormationViolation"
        code, text = await error_for("u-enum", [2, "u-enum", "Reset", {"type": "Medium"}])
        assert code == "PropertyConstraintViolation" and text.startswith("type")
        assert (await error_for("u-short", [2, "u-short", "Reset"]))[0] == "ProtocolError"  # payload missing
        assert (await error_for("u-payload", [2, "u-payload", "Reset", ["Soft"]]))[0] == "FormationViolation"
        # OCPP-J §4.2.1: a null payload is the same as {} for an action without fields
        await s.send_raw(json.dumps([2, "u-null", "ClearCache", None]))
        reply = await s.wait_reply("u-null", since=mark)
        assert reply.kind is EntryKind.CALLRESULT and reply.payload == {"status": "Accepted"}
        # nothing reset, the unanswerable frames got no answer, and charging went on throughout
        assert s.replies("bad-json", mark) == [] and s.replies("bad-type", mark) == []
        assert s.agent_running and not s.calls("BootNotification", mark) and not s.calls("StopTransaction", mark)
        assert s.statuses(1, mark) == []
        meter = await s.wait_call("MeterValues", since=s.mark())
        assert meter.payload["transactionId"] == tx_id
        # and the next good CALL is served normally
        assert (await s.csms.get_configuration(CP_ID, ["HeartbeatInterval"]))["configurationKey"][0]["value"]


async def test_reconnect_sends_current_statuses_and_no_new_boot(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=2) as s:
        await s.start_agent()
        tx_id = await s.start_session(1, CARD)
        mark = s.mark()
        await s.csms.set_online(False)
        # while offline: connector 1 is stopped and unplugged, an EV arrives at connector 2
        seen = len(s.log())
        await s.tap(CARD)
        await s.wait_log(lambda e: e.get("event") == "TransactionStopped", since=seen, what="stopped offline")
        s.ev(1).unplug()
        s.ev(2).plug()
        for connector, status in ((1, "Available"), (2, "Preparing")):  # where the agent has them now
            await s.wait_log(lambda e, c=connector, st=status: e.get("msg") == "connector status"
                             and e.get("connector") == c and e.get("status") == st, since=seen,
                             what=f"connector {connector} {status} offline")
        await s.csms.set_online(True)
        await s.wait_booted(since=mark)
        stop = await s.wait_call("StopTransaction", since=mark)
        assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "Local"
        await s.quiet(1.0)
        assert not s.calls("BootNotification", mark)
        # exactly one status per connector: where it is now, not how it got there
        assert s.statuses(0, mark) == ["Available"]
        assert s.statuses(1, mark) == ["Available"]
        assert s.statuses(2, mark) == ["Preparing"]
        # and the connection works both ways afterwards
        assert (await s.csms.remote_start_transaction(CP_ID, CARD, connector_id=2))["status"] == "Accepted"
        await s.wait_status(2, "Charging", since=mark)


async def test_every_status_change_is_reported_while_online(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1) as s:
        await s.start_agent()
        mark = s.mark()
        await s.start_session(1, CARD)
        step = s.mark()
        s.ev(1).paused = True  # the EV stops drawing (C -> B) ...
        await s.wait_status(1, "SuspendedEV", since=step)
        step = s.mark()
        s.ev(1).paused = False  # ... and draws again
        await s.wait_status(1, "Charging", since=step)
        step = s.mark()
        await s.tap(CARD)
        await s.wait_status(1, "Finishing", since=step)
        step = s.mark()
        s.ev(1).unplug()
        await s.wait_status(1, "Available", since=step)
        assert s.statuses(1, mark) == ["Preparing", "SuspendedEV", "Charging", "SuspendedEV", "Charging",
                                       "Finishing", "Available"]
        assert all(e.payload["errorCode"] == "NoError" for e in s.calls("StatusNotification", mark))


async def test_transaction_while_offline_is_delivered_in_order_with_the_csms_id(tmp_path: Path) -> None:
    presets = {"MeterValueSampleInterval": 1, "AllowOfflineTxForUnknownId": "true"}
    async with Station(tmp_path, connectors=1, presets=presets) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        mark = s.mark()
        await s.csms.set_online(False)
        # offline: the unknown card may start (§3.4.4), energy flows, meter values queue up, then it stops
        s.ev(1).plug()
        await s.tap(CARD)
        await s.wait_until(lambda: s.charger.connectors[1].board.contactor_closed, what="charging offline")
        await s.wait_until(lambda: s.outbox().count(("MeterValues", 1, True)) >= 2, what="meter values queued")
        await s.tap(CARD)
        await s.wait_until(lambda: not s.charger.connectors[1].board.contactor_closed, what="stopped offline")
        await s.csms.set_online(True)
        stop = await s.wait_call("StopTransaction", since=mark)
        await s.csms.transcript.wait_for_response(stop, WAIT_S)  # the CSMS has processed it
        sent = [e for e in s.calls(since=mark) if e.action in ("StartTransaction", "MeterValues", "StopTransaction")]
        assert sent[0].action == "StartTransaction" and sent[-1] is stop and len(sent) >= 4
        start = sent[0]
        response = s.csms.transcript.response_to(start)
        assert response is not None
        tx_id = response.payload["transactionId"]
        # the CSMS's id is filled into everything queued after the StartTransaction, when it is sent
        assert all(e.payload["transactionId"] == tx_id for e in sent[1:])
        stamps = [start.payload["timestamp"], *(e.payload["meterValue"][0]["timestamp"] for e in sent[1:-1]),
                  stop.payload["timestamp"]]
        assert stamps == sorted(stamps)
        assert stop.payload["reason"] == "Local" and stop.payload["meterStop"] > start.payload["meterStart"]
        assert not s.calls("BootNotification", mark) and not s.calls("Authorize", mark)
        assert s.csms.state(CP_ID).transactions[tx_id].stop_count == 1


async def test_connection_lost_during_authorize_leaves_the_card_usable(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1) as s:
        s.csms.behaviour.id_tags.accept(CARD)
        await s.start_agent()
        mark = s.mark()
        s.ev(1).plug()
        await s.wait_status(1, "Preparing", since=mark)
        s.csms.behaviour.faults.set_delay("Authorize", WAIT_S)  # longer than the test takes to go offline
        await s.tap(CARD)
        await s.wait_call("Authorize", since=mark)
        await s.csms.set_online(False)  # the answer never comes
        await s.quiet(0.5)
        s.csms.behaviour.faults.clear()
        await s.csms.set_online(True)
        await s.wait_booted(since=mark)
        # offline the id could not be authorized (AllowOfflineTxForUnknownId is false): nothing started,
        # and the same card works now
        again = s.mark()
        await s.tap(CARD)
        start = await s.wait_call("StartTransaction", since=again)
        assert start.payload["idTag"] == CARD
        assert len(s.calls("StartTransaction", mark)) == 1
