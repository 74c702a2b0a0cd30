"""End to end: local authorization — the Authorization Cache, LocalPreAuthorize, LocalAuthorizeOffline,
AllowOfflineTxForUnknownId, StopTransactionOnInvalidId and ClearCache (OCPP 1.6 §3.5, §5.4, §9.1).

The agent is a real process; the CSMS goes offline by closing the connection and refusing new ones. What the
charger did offline is read from the simulated hardware (contactor) and the agent's session log lines;
what it told the CSMS afterwards from the CSMS's transcript.

The tests share one station (agent process, simulated devices and CSMS) per module: the ``station`` fixture puts
it back to neutral after each test (tests/station_neutral.py: CSMS online, cache cleared, keys back to their
defaults, no EV), whichever ran before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from tests.station import CP_ID, WAIT_S, Station
from tests.station_neutral import back_to_neutral

pytestmark = pytest.mark.asyncio(loop_scope="module")

CARD = "04A1B2C3"
OTHER = "04D4E5F6"
#: the keys tests change, at the value every test starts with (the agent's defaults)
KEYS = {"AllowOfflineTxForUnknownId": "false", "StopTransactionOnInvalidId": "true", "LocalPreAuthorize": "false",
        "AuthorizationCacheEnabled": "true", "LocalAuthorizeOffline": "true"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Station]:
    async with Station(tmp_path_factory.mktemp("offline_auth"), connectors=1) as s:
        await s.start_agent()
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def station(shared: Station) -> AsyncIterator[Station]:
    """The module's station, put back to neutral after the test."""
    yield shared
    await back_to_neutral(shared, KEYS)


async def _set(s: Station, keys: dict[str, str]) -> None:
    for key, value in keys.items():
        assert (await s.csms.change_configuration(CP_ID, key, value, timeout_s=WAIT_S))["status"] == "Accepted"


def _sessions(s: Station, event: str) -> list[dict[str, Any]]:
    return [e for e in s.log() if e.get("msg") == "session" and e.get("event") == event]


async def _tap(s: Station, card: str) -> None:
    """Tap once the reader has seen the previous card leave (it needs a few empty polls; a card presented
    before that is the same presentation to it, and no new tap)."""
    def reader_clear() -> bool:
        held = 0
        for e in s.log():
            msg = str(e.get("msg", "")) if e.get("logger") == "hal.pn532.driver" else ""
            held = 0 if ": opened " in msg else held + (" presented" in msg) - msg.endswith(" removed")
        return held == 0
    await s.wait_until(reader_clear, WAIT_S, "previous card gone from the reader")
    await s.tap(card)


def _cable_locks(s: Station) -> list[dict[str, Any]]:
    return [{"locked": e["locked"], "held_for_owner": e["held_for_owner"]} for e in s.log()
            if e.get("msg") == "cable lock" and e.get("connector") == 1]


def _contactor(s: Station) -> bool:
    return bool(s.charger.connectors[1].board.contactor_closed)


async def _authorize_online(s: Station, card: str, *, accepted: bool = True) -> None:
    """One online Authorize of ``card`` with no EV (identify-first), so its answer lands in the cache; an
    accepted card is tapped again to cancel (B1), leaving the connector Available."""
    mark, refused = s.mark(), len(_sessions(s, "IdTokenRefused"))
    await _tap(s, card)
    ex = await s.csms.wait_for_exchange("Authorize", cp_id=CP_ID, since=mark)
    assert ex.request.payload == {"idTag": card} and ex.response is not None
    if accepted:
        await s.wait_status(1, "Preparing", since=mark)
        await _tap(s, card)
        await s.wait_status(1, "Available", since=mark)
    else:
        await s.wait_until(lambda: len(_sessions(s, "IdTokenRefused")) > refused, WAIT_S, "refused online")


async def _tap_refused(s: Station, card: str, status: str) -> None:
    """Tap ``card`` and see it refused with ``status``, no energy."""
    before = len(_sessions(s, "IdTokenRefused"))
    await _tap(s, card)
    await s.wait_until(lambda: len(_sessions(s, "IdTokenRefused")) > before, WAIT_S, f"{card} refused")
    refused = _sessions(s, "IdTokenRefused")[-1]
    assert refused["reason"] == "not_authorized" and refused["auth_status"] == status, refused
    assert not _contactor(s)


async def test_cached_id_starts_offline_even_after_a_restart_and_reaches_the_csms_later(station: Station) -> None:
    s = station
    s.csms.behaviour.id_tags.accept(CARD)
    await _authorize_online(s, CARD)
    # the cache is on disk: a restarted agent that cannot reach the CSMS still knows the card
    await s.stop_agent()
    mark = s.mark()
    await s.csms.set_online(False)
    await s.start_agent(wait_boot=False)
    s.ev(1).plug()
    await _tap(s, CARD)  # held until the new agent's reader has polled it (it may still be starting)
    await s.wait_until(lambda: _contactor(s), WAIT_S, "charging offline from the cache")
    started = _sessions(s, "TransactionStarted")[-1]
    assert started["auth_source"] == "cache" and started["local_id"] >= 1
    await s.quiet(0.5)
    await _tap(s, CARD)  # the same card stops it, still offline
    await s.wait_until(lambda: not _contactor(s), WAIT_S, "stopped offline")
    assert not s.calls(since=mark)  # nothing reached the CSMS meanwhile
    await s.csms.set_online(True)
    stop = await s.wait_call("StopTransaction", since=mark)
    starts = s.calls("StartTransaction", mark)
    assert len(starts) == 1 and starts[0].seq < stop.seq and starts[0].payload["idTag"] == CARD
    response = s.csms.transcript.response_to(starts[0])
    assert response is not None and response.payload["idTagInfo"]["status"] == "Accepted"
    assert stop.payload["transactionId"] == response.payload["transactionId"]
    assert stop.payload["reason"] == "Local" and stop.payload["idTag"] == CARD
    assert not s.calls("Authorize", mark)


async def test_expired_cached_ids_are_refused_offline(station: Station) -> None:
    # AllowOfflineTxForUnknownId on: an unknown card would start, so each refusal is the cache's doing
    s = station
    await _set(s, {"AllowOfflineTxForUnknownId": "true"})
    # valid now and when the CSMS answers the online Authorize (however slow the run), expired later
    until = datetime.now(UTC) + timedelta(seconds=10)
    s.csms.behaviour.id_tags.accept(CARD, expiry_date=until)
    s.csms.behaviour.id_tags.expire(OTHER)  # the CSMS says Expired outright
    await _authorize_online(s, CARD)
    await _authorize_online(s, OTHER, accepted=False)
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await s.wait_until(lambda: datetime.now(UTC) > until + timedelta(seconds=0.2), WAIT_S, "expiry passed")
    await _tap_refused(s, CARD, "Expired")  # Accepted in the cache, but its date has passed
    await _tap_refused(s, OTHER, "Expired")
    await s.csms.set_online(True)
    await s.wait_booted(since=mark)
    await s.quiet(0.5)
    assert not s.calls("StartTransaction", mark)


async def test_blocked_cached_id_refused_offline_unknown_id_allowed_then_deauthorized(station: Station) -> None:
    """AllowOfflineTxForUnknownId and StopTransactionOnInvalidId both true (§3.5.4)."""
    s = station
    await _set(s, {"AllowOfflineTxForUnknownId": "true"})
    s.csms.behaviour.id_tags.block(CARD)
    await _authorize_online(s, CARD, accepted=False)
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, CARD, "Blocked")  # known and blocked: never starts offline
    await _tap(s, OTHER)  # unknown: starts
    await s.wait_until(lambda: _contactor(s), WAIT_S, "unknown id charging offline")
    assert _sessions(s, "TransactionStarted")[-1]["auth_source"] == "offline_allowed"
    # back online the CSMS answers the queued StartTransaction: Invalid (it does not know OTHER)
    await s.csms.set_online(True)
    ex = await s.csms.wait_for_exchange("StartTransaction", cp_id=CP_ID, since=mark, timeout_s=WAIT_S)
    assert ex.request.payload["idTag"] == OTHER and ex.response is not None
    assert ex.response.payload["idTagInfo"]["status"] == "Invalid"
    stop = await s.wait_call("StopTransaction", since=mark)
    assert stop.payload["transactionId"] == ex.response.payload["transactionId"]
    assert stop.payload["reason"] == "DeAuthorized" and "idTag" not in stop.payload
    await s.wait_until(lambda: not _contactor(s), WAIT_S, "energy off")
    await s.wait_status(1, "Finishing", since=mark)
    # §4.8: the cable stays locked for its owner, also when the EV leaves; another card does not free it
    assert _cable_locks(s)[-1]["locked"] is True  # not unlocked at the stop
    seen = len(s.log())
    s.ev(1).unplug()
    await s.wait_log(lambda e: e.get("event") == "PilotChanged" and e.get("state") == "A", since=seen,
                     what="the agent saw the EV leave")
    await s.quiet(0.5)
    assert s.statuses(1, mark)[-1] == "Finishing"
    seen = len(s.log())
    await _tap(s, CARD)
    await s.wait_log(lambda e: str(e.get("msg")).startswith("card not used"), since=seen, what="CARD not used")
    assert _cable_locks(s)[-1]["locked"] is True
    # the owner's card releases it (offline too: the id is only compared, not authorized)
    await s.csms.set_online(False)
    await _tap(s, OTHER)
    await s.wait_until(lambda: _cable_locks(s)[-1] == {"locked": False, "held_for_owner": False}, WAIT_S,
                       "cable released to its owner")
    await s.wait_until(lambda: [e["status"] for e in s.log() if e.get("msg") == "connector status"
                                and e.get("connector") == 1][-1] == "Available", WAIT_S, "Available offline")
    s.ev(1).plug()
    # StartTransaction.conf went into the cache too: OTHER is now known Invalid, refused offline
    await _tap_refused(s, OTHER, "Invalid")
    assert len(s.calls("StopTransaction", mark)) == 1


async def test_unknown_id_refused_offline_without_allow_offline_tx(station: Station) -> None:
    s = station  # AllowOfflineTxForUnknownId false by default
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, OTHER, "Unknown")
    await s.csms.set_online(True)
    await s.wait_booted(since=mark)
    await s.quiet(0.5)
    assert not s.calls("StartTransaction", mark)


async def test_invalid_on_reconnect_with_stop_on_invalid_id_off_only_stops_energy(station: Station) -> None:
    presets = {"AllowOfflineTxForUnknownId": "true", "StopTransactionOnInvalidId": "false"}
    s = station
    await _set(s, presets)
    mark = s.mark()
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap(s, OTHER)
    await s.wait_until(lambda: _contactor(s), WAIT_S, "unknown id charging offline")
    await s.csms.set_online(True)
    ex = await s.csms.wait_for_exchange("StartTransaction", cp_id=CP_ID, since=mark, timeout_s=WAIT_S)
    assert ex.response is not None and ex.response.payload["idTagInfo"]["status"] == "Invalid"
    tx_id = ex.response.payload["transactionId"]
    await s.wait_status(1, "SuspendedEVSE", since=mark)
    await s.wait_until(lambda: s.charger.connectors[1].board.offered_current_a == 0 and not _contactor(s), WAIT_S,
                       "no PWM, contactor open")
    await s.quiet(0.5)
    assert not s.calls("StopTransaction", mark)  # the transaction goes on, without energy
    assert s.csms.state(CP_ID).transactions[tx_id].is_open
    end = s.mark()
    s.ev(1).unplug()  # until the EV side ends it
    stop = await s.wait_call("StopTransaction", since=end)
    assert stop.payload["transactionId"] == tx_id and stop.payload["reason"] == "EVDisconnected"


async def test_local_pre_authorize_starts_a_cached_id_without_authorize(station: Station) -> None:
    s = station
    await _set(s, {"LocalPreAuthorize": "true"})
    s.csms.behaviour.id_tags.accept(CARD)
    await _authorize_online(s, CARD)
    mark = s.mark()
    s.ev(1).plug()
    await s.wait_status(1, "Preparing", since=mark)
    await _tap(s, CARD)
    start = await s.wait_call("StartTransaction", since=mark)
    await s.wait_status(1, "Charging", since=mark)
    assert start.payload["idTag"] == CARD and not s.calls("Authorize", mark)
    assert _sessions(s, "TransactionStarted")[-1]["auth_source"] == "cache"
    await _tap(s, CARD)
    await s.wait_call("StopTransaction", since=mark)
    # the CSMS blocks the card meanwhile: the cached Accepted still starts at once, and the
    # StartTransaction.conf answer both ends the transaction and updates the cache
    s.csms.behaviour.id_tags.block(CARD)
    again = s.mark()
    await _tap(s, CARD)
    stop = await s.wait_call("StopTransaction", since=again)
    assert stop.payload["reason"] == "DeAuthorized" and not s.calls("Authorize", again)
    await s.csms.set_online(False)
    await _tap(s, CARD)  # its owner takes the held cable back (§4.8) ...
    await s.wait_until(lambda: _cable_locks(s)[-1]["locked"] is False, WAIT_S, "cable released")
    await _tap_refused(s, CARD, "Blocked")  # ... and the next tap is a request to charge: refused


async def test_clear_cache_then_an_offline_tap_is_refused(station: Station) -> None:
    s = station
    s.csms.behaviour.id_tags.accept(CARD)
    await _authorize_online(s, CARD)
    assert (await s.csms.clear_cache(CP_ID))["status"] == "Accepted"
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, CARD, "Unknown")


async def test_authorization_cache_disabled_forgets_and_learns_nothing(station: Station) -> None:
    s = station  # AllowOfflineTxForUnknownId false by default
    s.csms.behaviour.id_tags.accept(CARD, OTHER)
    await _authorize_online(s, CARD)  # in the cache
    assert (await s.csms.change_configuration(CP_ID, "AuthorizationCacheEnabled", "false"))["status"] == "Accepted"
    await _authorize_online(s, OTHER)  # answered online while the cache is off: not kept
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, CARD, "Unknown")  # the cache was emptied when it was switched off
    await _tap_refused(s, OTHER, "Unknown")


async def test_local_authorize_offline_off_refuses_a_cached_id_offline(station: Station) -> None:
    s = station
    await _set(s, {"LocalAuthorizeOffline": "false"})
    s.csms.behaviour.id_tags.accept(CARD)
    await _authorize_online(s, CARD)  # Accepted in the cache, which offline may not be used to start
    await s.csms.set_online(False)
    s.ev(1).plug()
    await _tap_refused(s, CARD, "Unknown")
