"""End to end: Remote Trigger (OCPP 1.6 §5.17), TriggerMessage from the CSMS.

OCTT TC_054 (every message type: answered Accepted first, then sent), TC_055 (MeterValues for a connector the charge
point does not have: Rejected, nothing sent), and the rules around them: no connectorId means connector 0 and every
connector, a triggered status is sent even when it is no news and without waiting for MinimumStatusDuration, a
triggered BootNotification while the CSMS keeps us Pending, an unknown requestedMessage (NotImplemented).

The one-connector tests that boot normally share one station (``one``; their keys set at their start), put back after
each (tests/station_neutral.py); the others have their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import Shared, configure, neutral_after, shared_station

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_one(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shared]:
    async with shared_station(tmp_path_factory.mktemp("trigger1"), connectors=1) as shared:
        yield shared


@pytest_asyncio.fixture(loop_scope="module")
async def one(shared_one: Shared) -> AsyncIterator[Station]:
    """The shared station with one connector, put back after the test."""
    async with neutral_after(shared_one) as s:
        yield s


async def _trigger(s: Station, message: str, connector: int | None = None) -> tuple[str, int]:
    """TriggerMessage; (the status answered, the transcript position of that answer)."""
    mark = s.mark()
    answer = await s.csms.trigger_message(CP_ID, message, connector_id=connector)
    reply = await s.csms.transcript.wait_for("TriggerMessage", cp_id=CP_ID, direction=Direction.FROM_CP,
                                             kind=EntryKind.CALLRESULT, since=mark, timeout_s=WAIT_S)
    return str(answer["status"]), reply.seq


def _values(entry: TranscriptEntry) -> dict[str, Any]:
    """measurand -> value of a MeterValues' single meterValue (the phase-less ones)."""
    [meter_value] = entry.payload["meterValue"]
    return {v["measurand"]: v["value"] for v in meter_value["sampledValue"] if "phase" not in v}


async def test_tc_054_each_message_is_sent_after_its_accepted_answer(one: Station) -> None:
    s = one
    await configure(s, {"MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Voltage"})
    tx_id = await s.start_session(1, CARD)

    status, answered = await _trigger(s, "MeterValues", 1)
    assert status == "Accepted"
    mv = await s.wait_call("MeterValues", since=answered)
    assert mv.payload["connectorId"] == 1 and mv.payload["transactionId"] == tx_id
    sampled = mv.payload["meterValue"][0]["sampledValue"]
    assert {v["context"] for v in sampled} == {"Trigger"}
    assert {v["measurand"] for v in sampled} == {"Energy.Active.Import.Register", "Power.Active.Import", "Voltage"}
    assert float(_values(mv)["Power.Active.Import"]) > 0  # charging: the current value, not a stale zero

    status, answered = await _trigger(s, "Heartbeat")
    assert status == "Accepted"
    await s.csms.wait_for_exchange("Heartbeat", cp_id=CP_ID, since=answered, timeout_s=WAIT_S)

    status, answered = await _trigger(s, "StatusNotification", 1)
    assert status == "Accepted"
    sn = await s.wait_call("StatusNotification", since=answered)
    assert sn.payload["connectorId"] == 1 and sn.payload["status"] == "Charging"  # no news, sent all the same

    for message in ("DiagnosticsStatusNotification", "FirmwareStatusNotification"):
        status, answered = await _trigger(s, message)
        assert status == "Accepted"
        sent = await s.wait_call(message, since=answered)
        assert sent.payload == {"status": "Idle"}  # nothing under way

    status, answered = await _trigger(s, "BootNotification")
    assert status == "Accepted"
    boot = await s.wait_call("BootNotification", since=answered)
    assert boot.payload["chargePointVendor"] and boot.payload["firmwareVersion"]
    await s.quiet(0.5)
    assert [e.payload["connectorId"] for e in s.calls("StatusNotification", answered)] == []  # not a reboot
    assert s.statuses(1)[-1] == "Charging"


async def test_tc_055_a_connector_that_does_not_exist_is_rejected_and_nothing_is_sent(one: Station) -> None:
    s = one
    mark = s.mark()
    assert (await _trigger(s, "MeterValues", 2))[0] == "Rejected"  # NumberOfConnectors + 1
    assert (await _trigger(s, "StatusNotification", 2))[0] == "Rejected"
    assert (await _trigger(s, "StatusNotification", -1))[0] == "Rejected"
    # the requested message is leading: a connectorId that does not apply to it is ignored (§5.17)
    status, answered = await _trigger(s, "Heartbeat", 7)
    assert status == "Accepted"
    await s.wait_call("Heartbeat", since=answered)
    await s.quiet(0.5)
    assert not s.calls("MeterValues", mark) and not s.calls("StatusNotification", mark)


async def test_meter_values_of_a_silent_meter_are_rejected(one: Station) -> None:
    s = one
    mark = s.mark()
    s.meter_silent(1)
    await s.wait_status(1, "Available", since=mark, error_code="PowerMeterFailure")
    for connector in (1, 0, None):  # "will not be sent": no current value to send
        assert (await _trigger(s, "MeterValues", connector))[0] == "Rejected", connector
    s.meter_silent(1, False)
    await s.wait_status(1, "Available", since=mark, error_code="NoError")
    status, answered = await _trigger(s, "MeterValues", 1)
    assert status == "Accepted"
    await s.wait_call("MeterValues", since=answered)
    assert len(s.calls("MeterValues", mark)) == 1


async def test_an_unknown_requested_message_is_not_implemented(one: Station) -> None:
    s = one
    mark = s.mark()
    # outside the 1.6 list (a 2.0.1 / security-extension name): the status §5.17 asks for, not a CALLERROR
    answer = await s.csms.call(CP_ID, "TriggerMessage", {"requestedMessage": "LogStatusNotification"},
                               validate=False)
    assert answer == {"status": "NotImplemented"}
    # a request broken in another way still gets the CALLERROR its schema violation calls for
    broken = s.mark()
    await s.send_raw('[2, "trig-1", "TriggerMessage", {"requestedMessage": "Nope", "connectorId": "one"}]')
    reply = await s.wait_reply("trig-1", since=broken)
    assert reply.kind is EntryKind.CALLERROR
    await s.quiet(0.3)
    assert len(s.calls(since=mark)) == 0


async def test_without_connector_id_connector_0_and_every_connector(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=2) as s:
        await s.start_agent()
        await s.start_session(1, CARD)
        await s.start_session(2, "0A0B0C0D")

        status, answered = await _trigger(s, "StatusNotification")
        assert status == "Accepted"
        for connector, expected in ((0, "Available"), (1, "Charging"), (2, "Charging")):
            await s.wait_status(connector, expected, since=answered)

        status, answered = await _trigger(s, "MeterValues")
        assert status == "Accepted"
        sent: dict[int, TranscriptEntry] = {}
        for connector in (0, 1, 2):
            sent[connector] = await s.wait_call(
                "MeterValues", lambda e, c=connector: e.payload["connectorId"] == c, since=answered)
        assert "transactionId" not in sent[0].payload
        assert {sent[1].payload["transactionId"], sent[2].payload["transactionId"]} == {
            t.transaction_id for t in s.csms.state(CP_ID).open_transactions}
        # connector 0 is the whole charger: the sum of the connectors' meters
        total, one, two = (_values(sent[c]) for c in (0, 1, 2))
        assert abs(int(total["Energy.Active.Import.Register"]) - int(one["Energy.Active.Import.Register"])
                   - int(two["Energy.Active.Import.Register"])) <= 1
        assert abs(float(total["Power.Active.Import"]) - float(one["Power.Active.Import"])
                   - float(two["Power.Active.Import"])) < 0.01


async def test_a_triggered_status_does_not_wait_for_minimum_status_duration(one: Station) -> None:
    s = one
    await configure(s, {"MinimumStatusDuration": 600})
    mark, seen = s.mark(), len(s.log())
    s.ev(1).plug()
    await s.wait_log(lambda e: e.get("msg") == "connector status" and e.get("connector") == 1
                     and e.get("status") == "Preparing", since=seen, what="the agent saw the EV")
    await s.quiet(0.5)
    assert s.statuses(1, mark) == []  # held: Preparing has not lasted 600 s
    status, answered = await _trigger(s, "StatusNotification", 1)
    assert status == "Accepted"
    await s.wait_status(1, "Preparing", since=answered)


async def test_boot_notification_triggered_while_pending(tmp_path: Path) -> None:
    async with Station(tmp_path, connectors=1, boot_statuses=["Pending", "Accepted"]) as s:
        s.profile.boot_retry_interval = 600  # without the trigger the next BootNotification would be 10 minutes away
        await s.start_agent(wait_boot=False)
        await s.csms.wait_connected(CP_ID, timeout_s=WAIT_S)
        first = await s.wait_call("BootNotification")
        await s.csms.wait_for_exchange("BootNotification", cp_id=CP_ID, since=first.seq, timeout_s=WAIT_S)
        # while Pending the charge point sends only what it is asked for (§4.2)
        status, answered = await _trigger(s, "StatusNotification", 1)
        assert status == "Accepted"
        await s.wait_status(1, "Available", since=answered)
        status, answered = await _trigger(s, "BootNotification")
        assert status == "Accepted"
        await s.wait_call("BootNotification", since=answered)
        await s.wait_booted(since=answered)  # accepted now: the current statuses follow
        assert s.csms.state(CP_ID).registration_status == "Accepted"


async def _extended(s: Station, message: str, connector: int | None = None) -> tuple[str, int]:
    """ExtendedTriggerMessage; (the status answered, the transcript position of that answer)."""
    mark = s.mark()
    answer = await s.csms.extended_trigger_message(CP_ID, message, connector_id=connector)
    reply = await s.csms.transcript.wait_for("ExtendedTriggerMessage", cp_id=CP_ID, direction=Direction.FROM_CP,
                                             kind=EntryKind.CALLRESULT, since=mark, timeout_s=WAIT_S)
    return str(answer["status"]), reply.seq


async def test_extended_trigger_message_sends_each_of_its_messages_after_the_answer(one: Station) -> None:
    """Security whitepaper ExtendedTriggerMessage: TriggerMessage's rules with its own list. FirmwareStatusNotification
    is a SignedFirmwareStatusNotification, LogStatusNotification a LogStatusNotification (Idle: nothing under way);
    SignChargePointCertificate without a certificate or CSMS root to go with it is Rejected (profile 0)."""
    s = one
    tx_id = await s.start_session(1, CARD)

    status, answered = await _extended(s, "MeterValues", 1)
    assert status == "Accepted"
    mv = await s.wait_call("MeterValues", since=answered)
    assert mv.payload["connectorId"] == 1 and mv.payload["transactionId"] == tx_id
    assert {v["context"] for v in mv.payload["meterValue"][0]["sampledValue"]} == {"Trigger"}

    status, answered = await _extended(s, "StatusNotification", 1)
    assert status == "Accepted"
    sn = await s.wait_call("StatusNotification", since=answered)
    assert sn.payload["connectorId"] == 1 and sn.payload["status"] == "Charging"

    status, answered = await _extended(s, "Heartbeat")
    assert status == "Accepted"
    await s.csms.wait_for_exchange("Heartbeat", cp_id=CP_ID, since=answered, timeout_s=WAIT_S)

    for message, sent_as in (("FirmwareStatusNotification", "SignedFirmwareStatusNotification"),
                             ("LogStatusNotification", "LogStatusNotification")):
        status, answered = await _extended(s, message)
        assert status == "Accepted"
        sent = await s.wait_call(sent_as, since=answered)
        assert sent.payload == {"status": "Idle"}  # no requestId while nothing runs
    assert s.csms.state(CP_ID).signed_firmware_status == "Idle" and s.csms.state(CP_ID).log_status == "Idle"

    status, answered = await _extended(s, "BootNotification")
    assert status == "Accepted"
    await s.wait_call("BootNotification", since=answered)

    mark = s.mark()
    assert (await _extended(s, "MeterValues", 2))[0] == "Rejected"  # no such connector (TC_055's rule)
    assert (await _extended(s, "SignChargePointCertificate"))[0] == "Rejected"
    # DiagnosticsStatusNotification is TriggerMessage's, not in ExtendedTriggerMessage's list
    answer = await s.csms.call(CP_ID, "ExtendedTriggerMessage",
                               {"requestedMessage": "DiagnosticsStatusNotification"}, validate=False)
    assert answer == {"status": "NotImplemented"}
    await s.quiet(0.3)
    assert not s.calls(since=mark)
    assert s.statuses(1)[-1] == "Charging"
