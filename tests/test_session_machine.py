"""The per-connector session state machine: scenario tests for every flow, then properties.

Scenarios read like the flows in docs/session.md: a :class:`Run` feeds events one second apart
and returns the effects; assertions name the status sequence and the effects that matter. The
property tests drive random event sequences (hypothesis stateful, and a long seeded random walk)
through an independent :class:`Checker` that re-derives the safety rules from the events alone.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from firmware.session import (
    PERMITTED,
    TRANSITIONS,
    AllowPower,
    AuthorizationDropped,
    AuthorizationHeld,
    AuthorizationResult,
    AuthPurpose,
    AuthSource,
    AuthStatus,
    AvailabilityApplied,
    AvailabilityChanged,
    AvailabilityScheduled,
    CancelTimer,
    CardPresented,
    ChargingLimitChanged,
    ConnectorStatus,
    Effect,
    EmergencyStop,
    EmergencyStopReleased,
    Event,
    FaultCleared,
    FaultRaised,
    IdToken,
    IdTokenRefused,
    IdTokenType,
    LockCable,
    MasterPassPresented,
    OfferCurrent,
    PilotChanged,
    PowerRestored,
    RefusalReason,
    RemoteStartRequested,
    RemoteStartResult,
    RemoteStopRequested,
    RemoteStopResult,
    RequestAuthorization,
    ReservationCancelled,
    ReservationEnded,
    ReservationEndReason,
    ReservationMade,
    ReservationResult,
    ReservationStatus,
    ResetRequested,
    SessionConfig,
    SessionMachine,
    SnapshotError,
    StartTimer,
    StatusChanged,
    StopReason,
    TimerExpired,
    TimerName,
    TransactionAccepted,
    TransactionRejected,
    TransactionStarted,
    TransactionStopped,
    Trigger,
    UnlockRequested,
    UnlockResult,
    UnlockStatus,
)
from firmware.session.config import DEFAULT_BLOCKING_FAULTS
from firmware.session.doc import render_block
from firmware.session.events import EVENT_TYPES
from firmware.session.status import route
from hal.interfaces import FaultCode, PilotState

S = ConnectorStatus
P = PilotState
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]


class Run:
    """One connector and a fake clock; each event is fed one second after the previous."""

    def __init__(self, **config: Any) -> None:
        self.m = SessionMachine(1, SessionConfig(**config))
        self.now = T0

    def __call__(self, *events: Event, after: float = 1.0) -> list[Effect]:
        out: list[Effect] = []
        for event in events:
            self.now += timedelta(seconds=after)
            out += self.m.handle(event, self.now)
        return out

    @property
    def status(self) -> ConnectorStatus:
        return self.m.status


def statuses(effects: Iterable[Effect]) -> list[ConnectorStatus]:
    return [e.status for e in effects if isinstance(e, StatusChanged)]


def only(effects: Iterable[Effect], *kinds: type) -> list[Effect]:
    return [e for e in effects if isinstance(e, kinds)]


def hardware(effects: Iterable[Effect]) -> list[Effect]:
    return only(effects, AllowPower, OfferCurrent, LockCable)


def card(value: str) -> IdToken:
    """An id as a card reader presents it."""
    return IdToken(value, IdTokenType.ISO14443)


def central(value: str) -> IdToken:
    """An id the CSMS names (remote start, reservation, group): all 1.6 knows is the string."""
    return IdToken.from_ocpp16(value)


def _card(token: str | IdToken) -> IdToken:
    return card(token) if isinstance(token, str) else token


def _group(parent: str | IdToken | None) -> IdToken | None:
    return central(parent) if isinstance(parent, str) else parent


def accept(token: str | IdToken = "CARD1", parent: str | IdToken | None = None) -> AuthorizationResult:
    """Accepted; a string ``token`` is a card, a string ``parent`` a CSMS-given group."""
    return AuthorizationResult(_card(token), AuthStatus.ACCEPTED, _group(parent), AuthSource.ONLINE)


def charging(run: Run, token: str = "CARD1", parent: str | None = None) -> Run:
    """Plug-first up to Charging."""
    run(PilotChanged(P.B), CardPresented(card(token)), accept(token, parent), PilotChanged(P.C))
    assert run.status is S.CHARGING
    return run


# --- plug-first, identify-first, pausing ----------------------------------------------------------


def test_plug_first_tap_accept_then_ev_ready_charges() -> None:
    run = Run()
    assert run(PilotChanged(P.B)) == [StatusChanged(S.PREPARING, True, trigger=Trigger.CABLE_PLUGGED_IN)]
    assert run(CardPresented(card("CARD1"))) == [RequestAuthorization(card("CARD1"), AuthPurpose.START)]
    assert run(accept("CARD1")) == [
        TransactionStarted(1, card("CARD1"), Trigger.AUTHORIZED, None, AuthSource.ONLINE),
        LockCable(True),  # locked before any current is offered
        OfferCurrent(32.0),
        AllowPower(True),  # x2 while the EV is still in B: a real EV goes to C only after this
        StatusChanged(S.SUSPENDED_EV, True, trigger=Trigger.AUTHORIZED),
    ]
    # the board closes the contactor on C by itself: only the status changes
    assert run(PilotChanged(P.C)) == [StatusChanged(S.CHARGING, True, trigger=Trigger.CHARGING_STATE_CHANGED)]
    assert run.m.power_allowed and run.m.cable_locked and run.m.offered_amps == 32.0


def test_plug_first_refused_card_leaves_connector_preparing() -> None:
    run = Run()
    run(PilotChanged(P.B), CardPresented(card("BAD")))
    effects = run(AuthorizationResult(card("BAD"), AuthStatus.BLOCKED))
    assert effects == [IdTokenRefused(card("BAD"), RefusalReason.NOT_AUTHORIZED, AuthStatus.BLOCKED)]
    assert run.status is S.PREPARING and run.m.transaction is None
    assert run(PilotChanged(P.A)) == [StatusChanged(S.AVAILABLE, False, trigger=Trigger.EV_COMMUNICATION_LOST)]


def test_identify_first_tap_then_plug_within_connection_timeout() -> None:
    run = Run(connection_timeout_s=45)
    assert run(CardPresented(card("CARD1"))) == [RequestAuthorization(card("CARD1"), AuthPurpose.START)]
    assert run.status is S.AVAILABLE  # Preparing only once the id is accepted
    assert run(accept("CARD1")) == [
        AuthorizationHeld(card("CARD1"), Trigger.AUTHORIZED),
        StartTimer(TimerName.CONNECTION_TIMEOUT, 45),
        StatusChanged(S.PREPARING, False, trigger=Trigger.AUTHORIZED),
    ]
    effects = run(PilotChanged(P.B))
    assert effects[:2] == [CancelTimer(TimerName.CONNECTION_TIMEOUT),
                           TransactionStarted(1, card("CARD1"), Trigger.CABLE_PLUGGED_IN, None, AuthSource.ONLINE)]
    assert statuses(effects) == [S.SUSPENDED_EV]
    assert statuses(run(PilotChanged(P.C))) == [S.CHARGING]


def test_identify_first_connection_timeout_returns_to_available() -> None:
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    assert run(TimerExpired(TimerName.CONNECTION_TIMEOUT), after=60) == [
        AuthorizationDropped(card("CARD1"), Trigger.EV_CONNECT_TIMEOUT),
        StatusChanged(S.AVAILABLE, False, trigger=Trigger.EV_CONNECT_TIMEOUT)]
    assert run.m.authorization is None
    # the authorization is gone: plugging in now waits for a new tap
    assert statuses(run(PilotChanged(P.B))) == [S.PREPARING]
    assert run.m.transaction is None


def test_identify_first_second_presentation_cancels() -> None:
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    assert run(CardPresented(card("CARD1"))) == [
        CancelTimer(TimerName.CONNECTION_TIMEOUT), AuthorizationDropped(card("CARD1"), Trigger.STOP_AUTHORIZED),
        StatusChanged(S.AVAILABLE, False, trigger=Trigger.STOP_AUTHORIZED)]


def test_a_held_authorization_ends_with_inoperative_or_a_fault() -> None:
    """The end of an authorization waiting for the EV is said (an adapter may have begun its transaction there)."""
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    assert AuthorizationDropped(card("CARD1"), Trigger.ABNORMAL_CONDITION) in run(AvailabilityChanged(False))
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    effects = run(FaultRaised(FaultCode.RCD_TRIP, "rcd", blocking=True))
    assert AuthorizationDropped(card("CARD1"), Trigger.ABNORMAL_CONDITION) in effects
    assert run.m.authorization is None
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"), PilotChanged(P.B))  # the transaction took it over
    assert not [e for e in run(AvailabilityChanged(False)) if isinstance(e, AuthorizationDropped)]


def test_stale_connection_timeout_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"), PilotChanged(P.B))  # timer cancelled, transaction open
    with caplog.at_level(logging.INFO, logger="firmware.session.machine"):
        assert run(TimerExpired(TimerName.CONNECTION_TIMEOUT)) == []
    assert run.status is S.SUSPENDED_EV
    assert any(r.getMessage() == "event ignored" and getattr(r, "status", None) == "SuspendedEV"
               for r in caplog.records)


def test_ev_pauses_and_resumes_permission_stays() -> None:
    run = charging(Run())
    # the board opens the contactor on B and closes it on C; the permission is not toggled
    assert run(PilotChanged(P.B)) == [StatusChanged(S.SUSPENDED_EV, True, trigger=Trigger.CHARGING_STATE_CHANGED)]
    assert run.m.power_allowed and run.m.offered_amps == 32.0  # still offering: the EV is the one pausing
    assert run(PilotChanged(P.C)) == [StatusChanged(S.CHARGING, True, trigger=Trigger.CHARGING_STATE_CHANGED)]
    assert run(PilotChanged(P.D)) == []  # D (ventilation) charges as C does
    assert run(PilotChanged(P.B), PilotChanged(P.D)) == [
        StatusChanged(S.SUSPENDED_EV, True, trigger=Trigger.CHARGING_STATE_CHANGED),
        StatusChanged(S.CHARGING, True, trigger=Trigger.CHARGING_STATE_CHANGED)]
    assert run.m.power_allowed


def test_identify_first_plug_in_grants_permission_in_b() -> None:
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    assert run(PilotChanged(P.B)) == [
        CancelTimer(TimerName.CONNECTION_TIMEOUT),
        TransactionStarted(1, card("CARD1"), Trigger.CABLE_PLUGGED_IN, None, AuthSource.ONLINE),
        LockCable(True), OfferCurrent(32.0), AllowPower(True),
        StatusChanged(S.SUSPENDED_EV, True, trigger=Trigger.CABLE_PLUGGED_IN)]


def test_limit_while_ev_paused_suspends_evse_and_resumes_to_suspended_ev() -> None:
    run = charging(Run())
    run(PilotChanged(P.B))
    assert run(ChargingLimitChanged(3)) == [
        AllowPower(False), OfferCurrent(0.0),
        StatusChanged(S.SUSPENDED_EVSE, True, trigger=Trigger.CHARGING_RATE_CHANGED)]
    assert run(ChargingLimitChanged(16)) == [
        OfferCurrent(16.0), AllowPower(True),
        StatusChanged(S.SUSPENDED_EV, True, trigger=Trigger.CHARGING_RATE_CHANGED)]
    assert run(PilotChanged(P.C)) == [StatusChanged(S.CHARGING, True, trigger=Trigger.CHARGING_STATE_CHANGED)]


def test_stop_while_ev_paused_withdraws_permission_before_the_stop() -> None:
    run = charging(Run())
    run(PilotChanged(P.B))
    assert run(RemoteStopRequested()) == [
        RemoteStopResult(True), AllowPower(False), OfferCurrent(0.0),
        TransactionStopped(1, StopReason.REMOTE, Trigger.REMOTE_STOP, card("CARD1")),
        LockCable(False), StatusChanged(S.FINISHING, True, trigger=Trigger.REMOTE_STOP)]
    assert not run.m.power_allowed and run.m.offered_amps == 0.0


def test_blocking_fault_while_ev_paused_withdraws_permission_first() -> None:
    run = charging(Run())
    run(PilotChanged(P.B))
    effects = run(FaultRaised(FaultCode.RCD_TRIP, "30 mA", "board"))
    assert effects[:3] == [AllowPower(False), OfferCurrent(0.0), TransactionStopped(
        1, StopReason.OTHER, Trigger.ABNORMAL_CONDITION, card("CARD1"), fault=FaultCode.RCD_TRIP)]
    assert statuses(effects) == [S.FAULTED]


def test_limit_below_6a_suspends_evse_and_resumes() -> None:
    run = charging(Run())
    assert run(ChargingLimitChanged(5.9)) == [
        AllowPower(False), OfferCurrent(0.0),
        StatusChanged(S.SUSPENDED_EVSE, True, trigger=Trigger.CHARGING_RATE_CHANGED)]
    assert run(ChargingLimitChanged(10)) == [
        OfferCurrent(10.0), AllowPower(True),
        StatusChanged(S.CHARGING, True, trigger=Trigger.CHARGING_RATE_CHANGED)]
    assert run(ChargingLimitChanged(16)) == [OfferCurrent(16.0)]  # no status change
    assert run(ChargingLimitChanged(63)) == [OfferCurrent(32.0)]  # never above the rating


def test_suspended_evse_takes_precedence_over_suspended_ev() -> None:
    run = charging(Run())
    run(ChargingLimitChanged(0))
    assert run(PilotChanged(P.B)) == []  # both suspend: SuspendedEVSE stays (§4.9 note)
    assert run.status is S.SUSPENDED_EVSE
    assert run(ChargingLimitChanged(16)) == [OfferCurrent(16.0), AllowPower(True), StatusChanged(
        S.SUSPENDED_EV, True, trigger=Trigger.CHARGING_RATE_CHANGED)]


def test_limit_set_before_the_session_applies_to_it() -> None:
    run = Run()
    run(ChargingLimitChanged(4))
    run(PilotChanged(P.C), CardPresented(card("CARD1")))
    effects = run(accept("CARD1"))
    assert OfferCurrent(4.0) not in effects and not only(effects, AllowPower)
    assert statuses(effects) == [S.SUSPENDED_EVSE]


def test_invalid_limit_values_count_as_zero() -> None:
    run = charging(Run())
    for bad in (math.nan, -3.0, math.inf):
        run(ChargingLimitChanged(16))
        assert statuses(run(ChargingLimitChanged(bad))) == [S.SUSPENDED_EVSE]
        assert not run.m.power_allowed


def test_pilot_error_state_withdraws_the_permission() -> None:
    for pilot in (P.C, P.B):  # charging, or paused by the EV
        run = charging(Run())
        run(PilotChanged(pilot))
        assert run(PilotChanged(P.E)) == [AllowPower(False), OfferCurrent(0.0), StatusChanged(
            S.SUSPENDED_EVSE, False, trigger=Trigger.CHARGING_STATE_CHANGED)]
        assert run.m.transaction is not None
        assert run(PilotChanged(P.B)) == [OfferCurrent(32.0), AllowPower(True), StatusChanged(
            S.SUSPENDED_EV, True, trigger=Trigger.CABLE_PLUGGED_IN)]


# --- stopping --------------------------------------------------------------------------------------


def test_same_id_stops_locally_power_off_first_then_finishing_until_unplugged() -> None:
    run = charging(Run())
    assert run(CardPresented(card("CARD1"))) == [
        AllowPower(False), OfferCurrent(0.0),
        TransactionStopped(1, StopReason.LOCAL, Trigger.STOP_AUTHORIZED, card("CARD1"), stopped_by=card("CARD1")),
        LockCable(False),
        StatusChanged(S.FINISHING, True, trigger=Trigger.STOP_AUTHORIZED),
    ]
    assert run(PilotChanged(P.A)) == [StatusChanged(S.AVAILABLE, False, trigger=Trigger.EV_COMMUNICATION_LOST)]


def test_group_member_stops_after_authorization_reveals_same_parent() -> None:
    run = charging(Run(), "CARD1", parent="FAMILY")
    assert run(CardPresented(card("CARD2"))) == [RequestAuthorization(card("CARD2"), AuthPurpose.STOP)]
    effects = run(accept("CARD2", parent="FAMILY"))
    assert only(effects, TransactionStopped) == [
        TransactionStopped(1, StopReason.LOCAL, Trigger.STOP_AUTHORIZED, card("CARD1"), stopped_by=card("CARD2"))]
    assert run.status is S.FINISHING


def test_other_group_is_refused_and_charging_continues() -> None:
    run = charging(Run(), "CARD1", parent="FAMILY")
    run(CardPresented(card("STRANGER")))
    assert run(accept("STRANGER", parent="OTHERS")) == [
        IdTokenRefused(card("STRANGER"), RefusalReason.NOT_OWNER, AuthStatus.ACCEPTED)]
    assert run.status is S.CHARGING and run.m.power_allowed


def test_group_member_not_valid_stops_nothing() -> None:
    """OCTT 2.0.1 TC_C_42_CS: an id of the same group that the CSMS says is Invalid (or Blocked, Expired...) does
    not stop the transaction."""
    run = charging(Run(), "CARD1", parent="FAMILY")
    for status in (AuthStatus.INVALID, AuthStatus.BLOCKED, AuthStatus.EXPIRED):
        run(CardPresented(card("CARD2")))
        answer = AuthorizationResult(card("CARD2"), status, central("FAMILY"), AuthSource.ONLINE)
        assert run(answer) == [IdTokenRefused(card("CARD2"), RefusalReason.NOT_AUTHORIZED, status)]
        assert run.status is S.CHARGING and run.m.power_allowed


def test_other_id_without_group_is_refused_at_once() -> None:
    run = charging(Run())
    assert run(CardPresented(card("STRANGER"))) == [IdTokenRefused(card("STRANGER"), RefusalReason.NOT_OWNER)]
    assert run.status is S.CHARGING


# --- master pass (OCPP 2.0.1 C16) -------------------------------------------------------------------


MASTER = "POLICE"


def test_master_pass_stops_the_transaction_here_with_reason_master_pass() -> None:
    """C16.FR.02 / E07: an accepted id of AuthCtrlr.MasterPassGroupId presented during a transaction (which has no
    group: with a master pass group configured another id is always asked about) stops it, triggerReason
    StopAuthorized, stoppedReason MasterPass, the master pass as the id that stopped it; the cable is unlocked."""
    run = charging(Run(master_pass_group=central(MASTER)))
    assert run(CardPresented(card("OFFICER"))) == [RequestAuthorization(card("OFFICER"), AuthPurpose.STOP)]
    effects = run(accept("OFFICER", parent=MASTER.lower()))  # the group matches as ids do: ignoring case and type
    assert only(effects, TransactionStopped) == [TransactionStopped(
        1, StopReason.MASTER_PASS, Trigger.STOP_AUTHORIZED, card("CARD1"), stopped_by=card("OFFICER"))]
    assert effects.index(AllowPower(False)) < effects.index(only(effects, TransactionStopped)[0])
    assert LockCable(False) in effects and run.status is S.FINISHING


def test_master_pass_not_accepted_or_of_another_group_stops_nothing() -> None:
    run = charging(Run(master_pass_group=central(MASTER)))
    run(CardPresented(card("OFFICER")))
    assert run(AuthorizationResult(card("OFFICER"), AuthStatus.BLOCKED, central(MASTER), AuthSource.ONLINE)) == [
        IdTokenRefused(card("OFFICER"), RefusalReason.NOT_AUTHORIZED, AuthStatus.BLOCKED)]
    run(CardPresented(card("STRANGER")))
    assert run(accept("STRANGER", parent="OTHERS")) == [
        IdTokenRefused(card("STRANGER"), RefusalReason.NOT_OWNER, AuthStatus.ACCEPTED)]
    assert run.status is S.CHARGING and run.m.power_allowed


def test_master_pass_cannot_start_a_transaction() -> None:
    """C16.FR.03 (OCTT TC_C_45_CS): accepted, but refused as a master pass — identify-first and plug-first alike;
    the connector stays as it was."""
    run = Run(master_pass_group=central(MASTER))
    run(CardPresented(card("OFFICER")))
    assert run(accept("OFFICER", parent=MASTER)) == [
        IdTokenRefused(card("OFFICER"), RefusalReason.MASTER_PASS, AuthStatus.ACCEPTED)]
    assert run.status is S.AVAILABLE and run.m.authorization is None
    run(PilotChanged(P.B), CardPresented(card("OFFICER")))
    assert run(accept("OFFICER", parent=MASTER)) == [
        IdTokenRefused(card("OFFICER"), RefusalReason.MASTER_PASS, AuthStatus.ACCEPTED)]
    assert run.status is S.PREPARING and run.m.transaction is None


def test_master_pass_presented_elsewhere_stops_this_transaction_or_held_authorization() -> None:
    """The charger stops every other connector's transaction (C16.FR.02 without a UI) with MasterPassPresented;
    an id waiting for its EV is dropped with reason MasterPass; an idle connector ignores it."""
    run = charging(Run(master_pass_group=central(MASTER)))
    effects = run(MasterPassPresented(card("OFFICER")))
    assert only(effects, TransactionStopped) == [TransactionStopped(
        1, StopReason.MASTER_PASS, Trigger.STOP_AUTHORIZED, card("CARD1"), stopped_by=card("OFFICER"))]
    assert run.status is S.FINISHING
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    assert run(MasterPassPresented(card("OFFICER"))) == [
        CancelTimer(TimerName.CONNECTION_TIMEOUT),
        AuthorizationDropped(card("CARD1"), Trigger.STOP_AUTHORIZED, StopReason.MASTER_PASS),
        StatusChanged(S.AVAILABLE, False, trigger=Trigger.STOP_AUTHORIZED)]
    run = Run()
    assert run(MasterPassPresented(card("OFFICER"))) == [] and run.status is S.AVAILABLE
    run(PilotChanged(P.B))
    assert run(MasterPassPresented(card("OFFICER"))) == [] and run.status is S.PREPARING


def test_without_a_master_pass_group_nothing_changes() -> None:
    """1.6 (no MasterPassGroupId): an id whose parent happens to be called like a master pass group is an ordinary
    id, and a stranger at a transaction without a group is refused without being asked about."""
    run = Run()
    run(CardPresented(card("OFFICER")))
    assert only(run(accept("OFFICER", parent=MASTER)), TransactionStarted) == []  # no EV yet: held
    assert run.m.authorization is not None
    run = charging(Run())
    assert run(CardPresented(card("OFFICER"))) == [IdTokenRefused(card("OFFICER"), RefusalReason.NOT_OWNER)]


def test_remote_stop() -> None:
    run = charging(Run())
    effects = run(RemoteStopRequested())
    assert effects[0] == RemoteStopResult(True)
    assert only(effects, TransactionStopped)[0].reason is StopReason.REMOTE  # type: ignore[union-attr]
    assert statuses(effects) == [S.FINISHING]
    assert run(RemoteStopRequested()) == [RemoteStopResult(False, "no transaction on this connector")]


def test_unplug_stops_with_ev_disconnected_socket_reports_finishing_then_available() -> None:
    run = charging(Run())
    effects = run(PilotChanged(P.A))
    assert hardware(effects) == [AllowPower(False), OfferCurrent(0.0), LockCable(False)]
    assert only(effects, TransactionStopped) == [
        TransactionStopped(1, StopReason.EV_DISCONNECTED, Trigger.EV_COMMUNICATION_LOST, card("CARD1"))]
    assert [(e.status, e.info) for e in only(effects, StatusChanged)] == [  # type: ignore[union-attr]
        (S.FINISHING, "EV side disconnected"), (S.AVAILABLE, "EV side disconnected")]


def test_unplug_with_tethered_cable_goes_straight_to_available() -> None:
    run = charging(Run(cable_lock=False))
    effects = run(PilotChanged(P.A))
    assert statuses(effects) == [S.AVAILABLE]  # §4.9 C1
    assert not only(effects, LockCable)


def test_unplug_keeps_the_cable_locked_for_its_owner_when_unlock_on_ev_side_disconnect_is_off() -> None:
    """UnlockConnectorOnEVSideDisconnect false: the transaction ends (EVDisconnected) but the lock stays closed,
    Finishing, until the owner's id or an unlock command releases it; another id is refused."""
    run = charging(Run(unlock_on_ev_side_disconnect=False))
    effects = run(PilotChanged(P.A))
    assert hardware(effects) == [AllowPower(False), OfferCurrent(0.0)]  # no LockCable(False)
    assert [e.reason for e in only(effects, TransactionStopped)] == [StopReason.EV_DISCONNECTED]  # type: ignore[union-attr]
    assert statuses(effects) == [S.FINISHING] and run.m.cable_locked and run.m.cable_held_for == card("CARD1")
    assert run(CardPresented(card("OTHER"))) == [IdTokenRefused(card("OTHER"), RefusalReason.NOT_OWNER)]
    assert run(CardPresented(card("CARD1"))) == [
        LockCable(False), StatusChanged(S.AVAILABLE, False, trigger=Trigger.STOP_AUTHORIZED)]
    run = charging(Run(unlock_on_ev_side_disconnect=False))
    run(PilotChanged(P.A))
    assert run(UnlockRequested()) == [LockCable(False), UnlockResult(UnlockStatus.UNLOCKED), StatusChanged(
        S.AVAILABLE, False, trigger=Trigger.UNLOCK_COMMAND)]
    tethered = charging(Run(unlock_on_ev_side_disconnect=False, cable_lock=False))  # nothing to keep locked
    assert statuses(tethered(PilotChanged(P.A))) == [S.AVAILABLE] and tethered.m.cable_held_for is None


def test_unplug_keeps_transaction_when_stop_on_ev_side_disconnect_is_off() -> None:
    run = charging(Run(stop_transaction_on_ev_side_disconnect=False))
    effects = run(PilotChanged(P.A))
    assert effects == [AllowPower(False), OfferCurrent(0.0), StatusChanged(
        S.SUSPENDED_EV, False, info="EV side disconnected", trigger=Trigger.EV_COMMUNICATION_LOST)]
    assert run.m.transaction is not None and run.m.cable_locked  # cable stays locked (§4.10)
    assert run(PilotChanged(P.B)) == [OfferCurrent(32.0), AllowPower(True), StatusChanged(  # back: offer again
        S.SUSPENDED_EV, True, trigger=Trigger.CABLE_PLUGGED_IN)]
    assert statuses(run(PilotChanged(P.C))) == [S.CHARGING]
    run(PilotChanged(P.A))
    assert statuses(run(CardPresented(card("CARD1")))) == [S.AVAILABLE]  # §4.9 D1


def test_tethered_cable_unplug_suspends_then_reconnect_timeout_stops_with_timeout() -> None:
    """2.0.1 E10.FR.02 (OCTT TC_E_27_CS): StopTransactionOnEVSideDisconnect off, a tethered cable: the unplug keeps
    the transaction and starts the connection timeout; the EV not back in time stops it (Timeout, EVConnectTimeout)
    -> Available. Back in time cancels the timer and the transaction goes on."""
    config = dict(stop_transaction_on_ev_side_disconnect=False, cable_lock=False, tethered_cable=True,
                  ev_reconnect_timeout=True, connection_timeout_s=30.0)
    run = charging(Run(**config))
    effects = run(PilotChanged(P.A))
    assert effects == [AllowPower(False), OfferCurrent(0.0), StatusChanged(
        S.SUSPENDED_EV, False, info="EV side disconnected", trigger=Trigger.EV_COMMUNICATION_LOST),
        StartTimer(TimerName.CONNECTION_TIMEOUT, 30.0)]
    effects = run(TimerExpired(TimerName.CONNECTION_TIMEOUT), after=30)
    assert only(effects, TransactionStopped) == [
        TransactionStopped(1, StopReason.TIMEOUT, Trigger.EV_CONNECT_TIMEOUT, card("CARD1"))]
    assert statuses(effects) == [S.AVAILABLE] and run.m.transaction is None and not run.m.timers

    run = charging(Run(**config))
    run(PilotChanged(P.A))
    effects = run(PilotChanged(P.B))
    assert effects[0] == CancelTimer(TimerName.CONNECTION_TIMEOUT) and statuses(effects) == [S.SUSPENDED_EV]
    assert run(TimerExpired(TimerName.CONNECTION_TIMEOUT), after=30) == []  # stale: ignored
    assert statuses(run(PilotChanged(P.C))) == [S.CHARGING] and run.m.transaction is not None

    run = charging(Run(**config))  # stopped otherwise meanwhile: the timer goes with the transaction
    run(PilotChanged(P.A))
    effects = run(CardPresented(card("CARD1")))
    assert CancelTimer(TimerName.CONNECTION_TIMEOUT) in effects and statuses(effects) == [S.AVAILABLE]
    assert not run.m.timers


def test_reconnect_timeout_only_for_a_tethered_cable_with_the_2_0_1_rule() -> None:
    """1.6 (ev_reconnect_timeout off): ConnectionTimeOut bounds Preparing only; a suspended transaction waits for
    its EV. A socket (the cable may still be locked in it, E10.FR.01) waits for its owner's id either way."""
    for config in (dict(tethered_cable=True, cable_lock=False),  # 1.6 on a tethered cable
                   dict(ev_reconnect_timeout=True)):  # 2.0.1 on a socket with a lock
        run = charging(Run(stop_transaction_on_ev_side_disconnect=False, **config))  # type: ignore[arg-type]
        effects = run(PilotChanged(P.A))
        assert not only(effects, StartTimer) and not run.m.timers
        assert run(TimerExpired(TimerName.CONNECTION_TIMEOUT), after=3600) == []
        assert run.status is S.SUSPENDED_EV and run.m.transaction is not None


def test_unplug_before_next_transaction_refuses_taps_and_remote_starts_until_the_ev_left() -> None:
    """2.0.1 TxStopPoint EVConnected alone: after a local stop the transaction goes on until the unplug (E06.FR.02);
    a second tap, of the same id or another, starts nothing (no authorization asked), nor does a remote start.
    Unplugged: the next tap starts a new session as usual."""
    run = charging(Run(unplug_before_next_transaction=True))
    run(CardPresented(card("CARD1")))
    assert run.status is S.FINISHING
    for token in ("CARD1", "CARD2"):
        assert run(CardPresented(card(token))) == [IdTokenRefused(card(token), RefusalReason.UNPLUG_FIRST)]
    assert run(RemoteStartRequested(central("APP"))) == [
        RemoteStartResult(False, "the last transaction's EV is still connected")]
    assert run.status is S.FINISHING and run.m.transaction is None
    assert statuses(run(PilotChanged(P.A))) == [S.AVAILABLE]
    assert only(run(CardPresented(card("CARD2"))), RequestAuthorization) == [
        RequestAuthorization(card("CARD2"), AuthPurpose.START)]


def test_finishing_new_tap_starts_a_new_transaction_via_preparing() -> None:
    run = charging(Run())
    run(CardPresented(card("CARD1")))
    assert run.status is S.FINISHING
    run(CardPresented(card("CARD2")))
    effects = run(accept("CARD2"))
    assert statuses(effects) == [S.PREPARING, S.CHARGING]  # F2 then B3: Finishing -> Charging is not in §4.9
    assert only(effects, TransactionStarted)[0].local_id == 2  # type: ignore[union-attr]
    assert effects.index(StatusChanged(S.PREPARING, True, trigger=Trigger.AUTHORIZED)) < effects.index(
        LockCable(True))


def test_reset_stops_with_soft_or_hard_reset() -> None:
    for hard, reason in ((False, StopReason.SOFT_RESET), (True, StopReason.HARD_RESET)):
        run = charging(Run())
        effects = run(ResetRequested(hard))
        assert [(e.reason, e.trigger) for e in only(effects, TransactionStopped)] == [  # type: ignore[union-attr]
            (reason, Trigger.RESET_COMMAND)]
        assert effects[0] == AllowPower(False)
    idle = Run()
    assert idle(ResetRequested(True)) == []


def test_unlock_during_transaction_stops_then_unlocks() -> None:
    run = charging(Run())
    effects = run(UnlockRequested())
    assert effects == [
        AllowPower(False), OfferCurrent(0.0),
        TransactionStopped(1, StopReason.UNLOCK_COMMAND, Trigger.UNLOCK_COMMAND, card("CARD1")),
        LockCable(False),
        StatusChanged(S.FINISHING, True, trigger=Trigger.UNLOCK_COMMAND),
        UnlockResult(UnlockStatus.UNLOCKED),
    ]


def test_unlock_variants() -> None:
    run = charging(Run(unlock_stops_transaction=False))  # OCPP 2.0.1 F05.FR.02
    assert run(UnlockRequested()) == [UnlockResult(UnlockStatus.ONGOING_TRANSACTION)]
    assert run.status is S.CHARGING
    assert charging(Run(cable_lock=False))(UnlockRequested()) == [UnlockResult(UnlockStatus.NOT_SUPPORTED)]
    assert Run()(UnlockRequested()) == [LockCable(False), UnlockResult(UnlockStatus.UNLOCKED)]


def test_transaction_rejected_stops_deauthorized() -> None:
    run = charging(Run())
    assert run(TransactionRejected(AuthStatus.INVALID, local_id=99)) == []  # another transaction's answer
    effects = run(TransactionRejected(AuthStatus.INVALID, local_id=1))
    assert [(e.reason, e.trigger) for e in only(effects, TransactionStopped)] == [  # type: ignore[union-attr]
        (StopReason.DE_AUTHORIZED, Trigger.DEAUTHORIZED)]
    assert statuses(effects) == [S.FINISHING]


def test_deauthorized_stop_holds_the_cable_for_its_owner_until_they_tap() -> None:
    """OCPP 1.6 §4.8: keep the cable locked until the owner presents his identifier."""
    run = charging(Run())
    effects = run(TransactionRejected(AuthStatus.INVALID))
    assert LockCable(False) not in effects and run.m.cable_locked and run.m.cable_held_for == card("CARD1")
    gone = run(PilotChanged(P.A))  # the EV leaves; the cable still occupies the socket
    assert [(e.status, e.ev_connected) for e in only(gone, StatusChanged)] == [(S.FINISHING, False)]  # type: ignore[union-attr]
    assert hardware(gone) == [] and run.status is S.FINISHING
    refused = run(CardPresented(card("OTHER")))
    assert refused == [IdTokenRefused(card("OTHER"), RefusalReason.NOT_OWNER)] and run.m.cable_locked
    assert run(RemoteStartRequested(central("OTHER"))) == [
        RemoteStartResult(False, "the cable is held for the owner of a deauthorized transaction")]
    assert run(ReservationMade(1, central("OTHER"), run.now + timedelta(minutes=5))) == [
        ReservationResult(1, ReservationStatus.OCCUPIED)]
    # the owner's id is only compared (it is the id the CSMS just refused): no authorization request
    released = run(CardPresented(card("card1")))
    assert released == [LockCable(False), StatusChanged(S.AVAILABLE, False, trigger=Trigger.STOP_AUTHORIZED)]
    assert run.m.cable_held_for is None and not run.m.cable_locked


def test_held_cable_released_by_unlock_connector_survives_restart_and_faults() -> None:
    run = charging(Run())
    run(TransactionRejected(AuthStatus.BLOCKED))
    m = roundtrip(run.m)
    assert m.cable_held_for == card("CARD1") and m.status is S.FINISHING
    run.m = m
    effects = run(PowerRestored(P.B))  # the hardware restarted unlocked: the lock is driven again
    assert hardware(effects) == [AllowPower(False), OfferCurrent(0.0), LockCable(False), LockCable(True)]
    assert run.m.cable_locked and run.status is S.FINISHING
    run(FaultRaised(FaultCode.RCD_TRIP, "rcd", "board"))
    assert run.status is S.FAULTED and run.m.cable_locked
    run(FaultCleared(FaultCode.RCD_TRIP, "board"), PilotChanged(P.A))
    assert run.status is S.FINISHING and run.m.cable_locked  # still held after the fault
    run(AvailabilityChanged(False))
    assert run.status is S.FINISHING  # Inoperative applies, the socket is still occupied
    effects = run(UnlockRequested())
    assert effects == [LockCable(False), UnlockResult(UnlockStatus.UNLOCKED),
                       StatusChanged(S.UNAVAILABLE, False, trigger=Trigger.UNLOCK_COMMAND)]


def test_held_cable_released_after_an_ev_came_back_goes_to_preparing() -> None:
    """The EV left while the cable was held, an EV was plugged in again: releasing the cable (owner's tap or
    UnlockConnector) leaves an EV waiting for an id, i.e. Preparing (§4.9 F2) — a row target the table must
    declare (found by the seeded random walk)."""
    for release in (CardPresented(card("CARD1")), UnlockRequested()):
        run = charging(Run())
        run(TransactionRejected(AuthStatus.INVALID), PilotChanged(P.A), PilotChanged(P.B))
        assert run.status is S.FINISHING and run.m.cable_held_for is not None
        row = TRANSITIONS[S.FINISHING][type(release)]
        effects = run(release)
        assert statuses(effects) == [S.PREPARING] and S.PREPARING in row.targets
        assert run.m.cable_held_for is None and not run.m.cable_locked


def test_deauthorized_stop_with_tethered_cable_holds_nothing() -> None:
    run = charging(Run(cable_lock=False))
    run(TransactionRejected(AuthStatus.INVALID), PilotChanged(P.A))
    assert run.m.cable_held_for is None and run.status is S.AVAILABLE


def test_snapshot_from_before_the_cable_hold_field_restores() -> None:
    snap = charging(Run()).m.snapshot()
    del snap["context"]["cable_held_for"]
    restored = SessionMachine.restore(snap, SessionConfig())
    assert restored.cable_held_for is None and restored.transaction is not None


def test_transaction_rejected_only_stops_energy_when_flag_off() -> None:
    run = charging(Run(stop_transaction_on_invalid_id=False))
    effects = run(TransactionRejected(AuthStatus.BLOCKED))
    assert effects == [AllowPower(False), OfferCurrent(0.0),
                       StatusChanged(S.SUSPENDED_EVSE, True, trigger=Trigger.DEAUTHORIZED)]
    assert run(PilotChanged(P.B), PilotChanged(P.C), ChargingLimitChanged(20)) == []  # stays off
    assert run.m.transaction is not None and not run.m.transaction.energy_allowed
    assert only(run(CardPresented(card("CARD1"))), TransactionStopped)  # the owner can still end it


def test_transaction_accepted_changes_nothing() -> None:
    run = charging(Run())
    assert run(TransactionAccepted(1)) == []
    assert run.status is S.CHARGING


# --- remote start ---------------------------------------------------------------------------------


def test_remote_start_without_authorization_plugged_in() -> None:
    run = Run()
    run(PilotChanged(P.B))
    effects = run(RemoteStartRequested(central("APP1")))
    assert effects[0] == RemoteStartResult(True)
    assert only(effects, TransactionStarted) == [
        TransactionStarted(1, central("APP1"), Trigger.REMOTE_START, remote_start=True)]
    assert statuses(effects) == [S.SUSPENDED_EV]


def test_remote_start_before_plug_waits_for_ev() -> None:
    run = Run()
    effects = run(RemoteStartRequested(central("APP1")))
    assert effects == [RemoteStartResult(True), AuthorizationHeld(central("APP1"), Trigger.REMOTE_START),
                       StartTimer(TimerName.CONNECTION_TIMEOUT, 60.0),
                       StatusChanged(S.PREPARING, False, trigger=Trigger.REMOTE_START)]
    started = only(run(PilotChanged(P.C)), TransactionStarted)
    assert started == [TransactionStarted(1, central("APP1"), Trigger.CABLE_PLUGGED_IN, remote_start=True)]
    assert run.status is S.CHARGING


def test_remote_start_authorized_first_when_configured() -> None:
    run = Run(authorize_remote_tx_requests=True)
    run(PilotChanged(P.B))
    assert run(RemoteStartRequested(central("APP1"))) == [
        RemoteStartResult(True), RequestAuthorization(central("APP1"), AuthPurpose.REMOTE_START)]
    assert run.m.transaction is None
    effects = run(accept(central("APP1")))
    assert only(effects, TransactionStarted)[0].trigger is Trigger.REMOTE_START  # type: ignore[union-attr]
    run2 = Run(authorize_remote_tx_requests=True)
    run2(PilotChanged(P.B), RemoteStartRequested(central("APP1")))
    assert run2(AuthorizationResult(central("APP1"), AuthStatus.EXPIRED)) == [
        IdTokenRefused(central("APP1"), RefusalReason.NOT_AUTHORIZED, AuthStatus.EXPIRED)]


def test_remote_start_refused_while_busy_or_out_of_service() -> None:
    assert only(charging(Run())(RemoteStartRequested(central("APP1"))), RemoteStartResult) == [
        RemoteStartResult(False, "connector is Charging")]
    run = Run()
    run(AvailabilityChanged(False))
    assert run(RemoteStartRequested(central("APP1"))) == [RemoteStartResult(False, "connector is Unavailable")]
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    assert run(RemoteStartRequested(central("APP1")))[0].accepted is False  # type: ignore[union-attr]


# --- faults and emergency stop ---------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(DEFAULT_BLOCKING_FAULTS))
def test_blocking_fault_while_charging_stops_and_faults(code: FaultCode) -> None:
    run = charging(Run())
    effects = run(FaultRaised(code, "detail", "board"))
    assert effects == [
        AllowPower(False), OfferCurrent(0.0),
        TransactionStopped(1, StopReason.OTHER, Trigger.ABNORMAL_CONDITION, card("CARD1"), fault=code),
        LockCable(False),
        StatusChanged(S.FAULTED, True, code, "detail", Trigger.ABNORMAL_CONDITION),
    ]
    # fault gone, EV still plugged in and its transaction over: Finishing (§4.9 I6)
    assert statuses(run(FaultCleared(code, "board"))) == [S.FINISHING]
    assert statuses(run(PilotChanged(P.A))) == [S.AVAILABLE]


def test_fault_cleared_returns_to_what_the_pilot_implies() -> None:
    run = Run()
    assert statuses(run(FaultRaised(FaultCode.RCD_TRIP))) == [S.FAULTED]
    run(PilotChanged(P.B))  # EV arrives while faulted
    assert run(CardPresented(card("CARD1"))) == [IdTokenRefused(card("CARD1"), RefusalReason.FAULTED)]
    assert statuses(run(FaultCleared(FaultCode.RCD_TRIP))) == [S.PREPARING]
    run2 = Run()
    run2(FaultRaised(FaultCode.OVERTEMPERATURE))
    assert statuses(run2(FaultCleared(FaultCode.OVERTEMPERATURE))) == [S.AVAILABLE]


def test_faulted_stays_until_every_blocking_fault_is_gone() -> None:
    run = Run()
    run(FaultRaised(FaultCode.RCD_TRIP, source="rcd"), FaultRaised(FaultCode.DIODE_FAILURE, source="board"))
    assert run.m.faults[-1].code is FaultCode.DIODE_FAILURE
    assert run(FaultCleared(FaultCode.DIODE_FAILURE, source="board")) == [
        StatusChanged(S.FAULTED, False, FaultCode.RCD_TRIP)]  # error updated, still Faulted
    assert statuses(run(FaultCleared(FaultCode.RCD_TRIP, source="rcd"))) == [S.AVAILABLE]
    assert run(FaultCleared(FaultCode.RCD_TRIP, source="rcd")) == []  # not active: ignored


def test_non_blocking_fault_is_a_warning_and_charging_continues() -> None:
    run = charging(Run())
    assert run(FaultRaised(FaultCode.LINK_LOST, "meter silent", source="meter")) == [
        StatusChanged(S.CHARGING, True, FaultCode.LINK_LOST, "meter silent")]
    assert run.m.power_allowed
    assert run(FaultRaised(FaultCode.LINK_LOST, "again", source="meter")) == []  # duplicate
    assert run(FaultCleared(FaultCode.LINK_LOST, source="meter")) == [StatusChanged(S.CHARGING, True)]


def test_event_can_override_fault_blocking() -> None:
    run = charging(Run())
    effects = run(FaultRaised(FaultCode.LINK_LOST, "board silent", source="board", blocking=True))
    assert effects[0] == AllowPower(False) and statuses(effects) == [S.FAULTED]
    run = charging(Run())
    assert statuses(run(FaultRaised(FaultCode.OVERTEMPERATURE, "derate", blocking=False))) == [S.CHARGING]


def test_emergency_stop_stops_with_emergency_stop_reason() -> None:
    run = charging(Run())
    effects = run(EmergencyStop("button 1"))
    assert effects[0] == AllowPower(False)
    assert [e.reason for e in only(effects, TransactionStopped)] == [  # type: ignore[union-attr]
        StopReason.EMERGENCY_STOP]
    assert only(effects, StatusChanged) == [
        StatusChanged(S.FAULTED, True, None, "emergency stop", Trigger.ABNORMAL_CONDITION)]
    run(FaultRaised(FaultCode.RCD_TRIP))
    run(EmergencyStopReleased())
    assert run.status is S.FAULTED  # the RCD still blocks
    assert statuses(run(FaultCleared(FaultCode.RCD_TRIP))) == [S.FINISHING]
    assert Run()(EmergencyStopReleased()) == []  # not pressed: ignored


# --- reservations ---------------------------------------------------------------------------------


def reserve(run: Run, token: str = "RES1", parent: str | None = None, minutes: float = 15) -> list[Effect]:
    return run(ReservationMade(7, central(token), run.now + timedelta(minutes=minutes), _group(parent)))


def test_reservation_admits_only_the_reserved_id_or_its_group() -> None:
    run = Run()
    effects = reserve(run, "RES1", parent="FAMILY")
    assert effects == [StartTimer(TimerName.RESERVATION_EXPIRY, 899.0),
                       ReservationResult(7, ReservationStatus.ACCEPTED), StatusChanged(S.RESERVED)]
    run(PilotChanged(P.B))  # a car arrives: the reservation still holds
    assert run.status is S.RESERVED
    # another id: its parent is asked for, naming the group it must belong to
    assert run(CardPresented(card("STRANGER"))) == [
        RequestAuthorization(card("STRANGER"), AuthPurpose.START, group=central("FAMILY"))]
    assert run(accept("STRANGER", "OTHERS")) == [
        IdTokenRefused(card("STRANGER"), RefusalReason.RESERVED, AuthStatus.ACCEPTED)]
    assert run(CardPresented(card("RES1"))) == [RequestAuthorization(card("RES1"), AuthPurpose.START)]
    run(AuthorizationResult(card("RES1"), AuthStatus.INVALID))
    run(CardPresented(card("CARD2")))
    effects = run(accept("CARD2", "FAMILY"))
    assert effects[:2] == [CancelTimer(TimerName.RESERVATION_EXPIRY),
                           ReservationEnded(7, ReservationEndReason.USED)]
    assert statuses(effects) == [S.PREPARING, S.SUSPENDED_EV]  # G2 then B4
    assert only(effects, TransactionStarted)[0].reservation_id == 7  # type: ignore[union-attr]


def test_reservation_without_group_refuses_other_ids_without_asking() -> None:
    """OCTT TC_046_1 (and MicroOcpp #430): another card at a connector reserved for one id alone is refused
    at once; no authorization is asked for it."""
    run = Run()
    reserve(run)
    assert run(CardPresented(card("STRANGER"))) == [IdTokenRefused(card("STRANGER"), RefusalReason.RESERVED)]
    assert run.status is S.RESERVED
    assert run(CardPresented(card("res1"))) == [RequestAuthorization(card("res1"), AuthPurpose.START)]


def test_reserved_id_tapped_before_plugging_in_waits_in_preparing() -> None:
    run = Run()
    reserve(run)
    run(CardPresented(card("RES1")))
    assert statuses(run(accept("RES1"))) == [S.PREPARING]
    started = only(run(PilotChanged(P.B)), TransactionStarted)
    assert started[0].reservation_id == 7  # type: ignore[union-attr]


def test_remote_start_on_reserved_connector() -> None:
    run = Run()
    reserve(run)
    assert run(RemoteStartRequested(central("OTHER"))) == [RemoteStartResult(False, "reserved for another id")]
    effects = run(RemoteStartRequested(central("RES1")))
    assert effects[0] == RemoteStartResult(True)
    assert ReservationEnded(7, ReservationEndReason.USED) in effects
    assert run.status is S.PREPARING
    assert only(run(PilotChanged(P.B)), TransactionStarted)[0].reservation_id == 7  # type: ignore[union-attr]


def test_remote_start_on_reserved_connector_when_remote_starts_are_authorized() -> None:
    """With AuthorizeRemoteTxRequests another id is refused before anything is authorized (no group to let it in);
    the reserved id is authorized, then uses the reservation."""
    run = Run(authorize_remote_tx_requests=True)
    reserve(run)
    assert run(RemoteStartRequested(central("OTHER"))) == [RemoteStartResult(False, "reserved for another id")]
    assert run(RemoteStartRequested(central("RES1"))) == [
        RemoteStartResult(True), RequestAuthorization(central("RES1"), AuthPurpose.REMOTE_START)]
    effects = run(AuthorizationResult(central("RES1"), AuthStatus.ACCEPTED))
    assert ReservationEnded(7, ReservationEndReason.USED) in effects and run.status is S.PREPARING


def test_charger_reservation_carried_by_the_event_goes_into_the_transaction() -> None:
    """A reservation of the charger as a whole (connector 0) is kept by the charger; the event that starts the
    session names it, and the transaction carries it."""
    run = Run()
    run(CardPresented(card("CARD1")))
    run(AuthorizationResult(card("CARD1"), AuthStatus.ACCEPTED, reservation_id=42))
    assert only(run(PilotChanged(P.B)), TransactionStarted)[0].reservation_id == 42  # type: ignore[union-attr]
    remote = Run()
    remote(PilotChanged(P.B))
    started = only(remote(RemoteStartRequested(central("X"), reservation_id=43)), TransactionStarted)
    assert started[0].reservation_id == 43  # type: ignore[union-attr]


def test_reservation_expires_or_is_cancelled() -> None:
    run = Run()
    reserve(run, minutes=1)
    assert run(TimerExpired(TimerName.RESERVATION_EXPIRY), after=60) == [
        ReservationEnded(7, ReservationEndReason.EXPIRED), StatusChanged(S.AVAILABLE)]
    reserve(run)
    assert run(ReservationCancelled(8)) == []  # not ours
    assert run(ReservationCancelled(7)) == [CancelTimer(TimerName.RESERVATION_EXPIRY),
                                            ReservationEnded(7, ReservationEndReason.CANCELLED),
                                            StatusChanged(S.AVAILABLE)]


def test_reservation_answers() -> None:
    run = Run()
    assert run(ReservationMade(1, central("X"), run.now - timedelta(seconds=1))) == [
        ReservationResult(1, ReservationStatus.REJECTED)]
    assert only(reserve(charging(Run())), ReservationResult) == [ReservationResult(7, ReservationStatus.OCCUPIED)]
    faulted = Run()
    faulted(FaultRaised(FaultCode.RCD_TRIP))
    assert reserve(faulted) == [ReservationResult(7, ReservationStatus.FAULTED)]
    off = Run()
    off(AvailabilityChanged(False))
    assert reserve(off) == [ReservationResult(7, ReservationStatus.UNAVAILABLE)]
    again = Run()
    reserve(again)
    assert only(reserve(again, minutes=30), ReservationResult) == [ReservationResult(7, ReservationStatus.ACCEPTED)]
    assert again(ReservationMade(8, central("Y"), again.now + timedelta(minutes=5))) == [
        ReservationResult(8, ReservationStatus.OCCUPIED)]


def test_reservation_expiry_beyond_what_utc_holds_is_rejected_not_a_fault() -> None:
    run = Run()
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    assert run(ReservationMade(1, central("X"), far)) == [ReservationResult(1, ReservationStatus.REJECTED)]
    assert run.m.internal_errors == 0 and run.status is S.AVAILABLE
    latest = datetime(9999, 12, 31, 12, tzinfo=UTC)
    assert only(run(ReservationMade(2, central("X"), latest)), ReservationResult) == [
        ReservationResult(2, ReservationStatus.ACCEPTED)]
    restored = roundtrip(run.m)  # its timer deadline is stored and read back
    assert restored.reservation is not None and restored.reservation.expiry == latest


def test_inoperative_while_reserved_ends_the_reservation_in_one_transition() -> None:
    """1.6 §5.13: a reservation ends when its connector is set Unavailable; Reserved -> Unavailable directly
    (§4.9 G8), not through Available (libocpp #998)."""
    run = Run()
    reserve(run)
    assert run(AvailabilityChanged(False)) == [CancelTimer(TimerName.RESERVATION_EXPIRY),
                                               ReservationEnded(7, ReservationEndReason.REMOVED),
                                               AvailabilityApplied(False), StatusChanged(S.UNAVAILABLE)]
    assert run.m.reservation is None
    assert statuses(run(AvailabilityChanged(True))) == [S.AVAILABLE]  # the reservation does not come back


def test_fault_while_reserved_ends_the_reservation_in_one_transition() -> None:
    run = Run()
    reserve(run)
    assert run(FaultRaised(FaultCode.RCD_TRIP)) == [
        CancelTimer(TimerName.RESERVATION_EXPIRY), ReservationEnded(7, ReservationEndReason.REMOVED),
        StatusChanged(S.FAULTED, error=FaultCode.RCD_TRIP, trigger=Trigger.ABNORMAL_CONDITION)]
    assert statuses(run(FaultCleared(FaultCode.RCD_TRIP))) == [S.AVAILABLE]
    estop = Run()
    reserve(estop)
    assert ReservationEnded(7, ReservationEndReason.REMOVED) in estop(EmergencyStop())


# --- availability ---------------------------------------------------------------------------------


def test_unavailable_takes_no_new_sessions_and_comes_back_by_pilot() -> None:
    run = Run()
    assert run(AvailabilityChanged(False)) == [AvailabilityApplied(False), StatusChanged(S.UNAVAILABLE)]
    assert run(CardPresented(card("CARD1"))) == [IdTokenRefused(card("CARD1"), RefusalReason.UNAVAILABLE)]
    assert run(PilotChanged(P.B)) == [StatusChanged(S.UNAVAILABLE, True)]  # plug state reported only
    assert run(AvailabilityChanged(False)) == [AvailabilityApplied(False)]
    assert run(AvailabilityChanged(True)) == [AvailabilityApplied(True), StatusChanged(S.PREPARING, True)]


def test_inoperative_during_transaction_is_scheduled() -> None:
    run = charging(Run())
    assert run(AvailabilityChanged(False)) == [AvailabilityScheduled(False)]
    assert run.status is S.CHARGING and run.m.power_allowed
    effects = run(CardPresented(card("CARD1")))
    assert only(effects, TransactionStopped) and AvailabilityApplied(False) in effects
    assert statuses(effects) == [S.UNAVAILABLE]  # §4.9 C8
    assert statuses(run(AvailabilityChanged(True))) == [S.PREPARING]  # H2: the EV is still there


def test_operative_again_cancels_a_scheduled_change() -> None:
    run = charging(Run())
    run(AvailabilityChanged(False))
    assert run(AvailabilityChanged(True)) == [AvailabilityApplied(True)]
    assert statuses(run(RemoteStopRequested())) == [S.FINISHING]


def test_inoperative_in_preparing_ends_usage_via_available() -> None:
    run = Run()
    run(CardPresented(card("CARD1")), accept("CARD1"))
    effects = run(AvailabilityChanged(False))
    assert statuses(effects) == [S.AVAILABLE, S.UNAVAILABLE]  # Preparing -> Unavailable is not in §4.9
    assert CancelTimer(TimerName.CONNECTION_TIMEOUT) in effects and run.m.authorization is None


# --- free vend ------------------------------------------------------------------------------------


def test_free_vend_starts_on_plug_in() -> None:
    free = IdToken("FREE", IdTokenType.LOCAL)  # a configured 1.6 idTag: the station's own id
    run = Run(free_vend_id_token=free)
    effects = run(PilotChanged(P.C))
    assert only(effects, TransactionStarted) == [TransactionStarted(1, free, Trigger.CABLE_PLUGGED_IN)]
    assert statuses(effects) == [S.CHARGING]  # §4.9 A3
    assert AllowPower(True) in effects


# --- power loss and snapshots ---------------------------------------------------------------------


def roundtrip(machine: SessionMachine, config: SessionConfig | None = None) -> SessionMachine:
    return SessionMachine.restore(json.loads(json.dumps(machine.snapshot())), config or machine.config)


def test_power_restored_stops_open_transaction_with_power_loss() -> None:
    run = charging(Run())
    run.m = roundtrip(run.m)
    assert run.m.status is S.CHARGING and run.m.transaction is not None
    effects = run(PowerRestored(pilot=P.B), after=300)
    assert effects[:3] == [AllowPower(False), OfferCurrent(0.0), LockCable(False)]
    assert only(effects, TransactionStopped) == [
        TransactionStopped(1, StopReason.POWER_LOSS, Trigger.ABNORMAL_CONDITION, card("CARD1"))]
    assert statuses(effects) == [S.FINISHING]
    run(PilotChanged(P.A), CardPresented(card("CARD1")))
    assert run.m.transaction is None


def test_power_restored_after_reboot_or_requested_reset_says_reboot() -> None:
    run = charging(Run())
    restored = roundtrip(run.m)
    stopped = only(restored.handle(PowerRestored(reboot=True), run.now), TransactionStopped)
    assert stopped[0].reason is StopReason.REBOOT  # type: ignore[union-attr]
    snap = run.m.snapshot()
    snap["context"]["reset_pending"] = True  # the reset was requested, the stop not yet persisted
    restored = SessionMachine.restore(snap, run.m.config)
    effects = restored.handle(PowerRestored(), run.now)
    assert only(effects, TransactionStopped)[0].reason is StopReason.REBOOT  # type: ignore[union-attr]
    assert statuses(effects) == [S.AVAILABLE]  # pilot unknown after boot: assume no EV until told


def test_power_restored_keeps_unavailable_and_rearms_reservations() -> None:
    run = Run()
    run(AvailabilityChanged(False))
    assert roundtrip(run.m).handle(PowerRestored(), run.now)[-1] == StatusChanged(
        S.UNAVAILABLE, trigger=Trigger.ABNORMAL_CONDITION)  # Unavailable persists across reboots
    run = Run()
    reserve(run, minutes=10)
    restored = roundtrip(run.m)
    effects = restored.handle(PowerRestored(), run.now + timedelta(minutes=4))
    assert StartTimer(TimerName.RESERVATION_EXPIRY, 360.0 - 1) in effects
    assert restored.status is S.RESERVED
    late = roundtrip(run.m).handle(PowerRestored(), run.now + timedelta(hours=1))
    assert ReservationEnded(7, ReservationEndReason.EXPIRED) in late and statuses(late) == [S.AVAILABLE]


def test_snapshot_roundtrip_is_exact_and_continues_identically() -> None:
    script: list[Event] = [PilotChanged(P.B), CardPresented(card("CARD1")), accept("CARD1", "G"), PilotChanged(P.C),
                           FaultRaised(FaultCode.LINK_LOST, "x", "meter"), ChargingLimitChanged(12),
                           AvailabilityChanged(False), CardPresented(card("CARD2")), accept("CARD2", "G"),
                           PilotChanged(P.A), AvailabilityChanged(True)]
    for cut in range(len(script) + 1):
        a, now = SessionMachine(3, SessionConfig()), T0
        for ev in script[:cut]:
            now += timedelta(seconds=1)
            a.handle(ev, now)
        b = roundtrip(a)
        assert b.snapshot() == a.snapshot() and b.connector_id == 3
        for ev in script[cut:]:
            now += timedelta(seconds=1)
            assert a.handle(ev, now) == b.handle(ev, now)


@pytest.mark.parametrize("mutate", [
    lambda s: s.update(version=3),
    lambda s: s.update(version=True),
    lambda s: s.update(status="Charging"),  # no transaction recorded
    lambda s: s.update(status="Sleeping"),
    lambda s: s.update(connector_id="1"),
    lambda s: s["context"].update(pilot="Z"),
    lambda s: s["context"].update(limit_amps="16"),
    lambda s: s["context"].pop("faults"),
    lambda s: s["context"].update(timers={"ConnectionTimeOut": "yesterday"}),
    lambda s: s["context"].update(timers={"ConnectionTimeOut": "2025-01-01T00:00:00"}),  # no offset
    lambda s: s.update(context=[]),
])
def test_restore_rejects_malformed_snapshots(mutate: Any) -> None:
    snap = Run().m.snapshot()
    mutate(snap)
    with pytest.raises(SnapshotError):
        SessionMachine.restore(snap, SessionConfig())


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                                         inner, max_size=3),
                           max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(path=st.lists(st.sampled_from(["context", "transaction", "faults", "reported", "pilot", "status",
                                      "timers", "reservation", "limit_amps", "next_local_id"]), max_size=3),
       value=json_values)
def test_restore_of_corrupted_snapshot_raises_only_snapshot_error(path: list[str], value: object) -> None:
    run = charging(Run(), parent="G")
    reserve(run)
    snap: Any = run.m.snapshot()
    node = snap
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and path:
        node[path[-1]] = value
    try:
        SessionMachine.restore(snap, SessionConfig())
    except SnapshotError:
        pass


# --- failure containment and logging --------------------------------------------------------------


def test_handler_bug_fails_safe_to_faulted(monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    run = charging(Run())
    def bug(machine: SessionMachine, event: Any) -> None:
        raise ZeroDivisionError("a handler bug")

    broken = replace(TRANSITIONS[S.CHARGING][ChargingLimitChanged], handler=bug)
    monkeypatch.setitem(TRANSITIONS[S.CHARGING], ChargingLimitChanged, broken)
    with caplog.at_level(logging.ERROR):
        effects = run(ChargingLimitChanged(10))
    assert effects[0] == AllowPower(False)
    assert only(effects, TransactionStopped)[0].fault is FaultCode.DEVICE_ERROR  # type: ignore[union-attr]
    assert statuses(effects) == [S.FAULTED] and run.m.internal_errors == 1
    assert any("failing safe" in r.getMessage() for r in caplog.records)


def test_unknown_event_objects_are_ignored() -> None:
    run = charging(Run())
    assert run.m.handle("not an event", run.now) == []  # type: ignore[arg-type]
    assert run.status is S.CHARGING


def test_id_tokens_are_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    run = Run()
    with caplog.at_level(logging.DEBUG, logger="firmware.session.machine"):
        run(AuthorizationResult(card("04A1B2C3D4E5F6"), AuthStatus.ACCEPTED))  # nothing pending: ignored
        charging(run, "04A1B2C3D4E5F6")
    text = " ".join(str(vars(r)) for r in caplog.records)
    assert "04A1B2C3D4E5F6" not in text and "***E5F6" in text


# --- the table, the docs, the module boundary -----------------------------------------------------


def test_every_status_has_a_row_set_and_every_event_type_is_handled_somewhere() -> None:
    assert set(TRANSITIONS) == set(ConnectorStatus)
    handled = {t for rows in TRANSITIONS.values() for t in rows}
    assert handled == set(EVENT_TYPES)
    for status, rows in TRANSITIONS.items():
        for event_type, row in rows.items():
            for target in row.targets - {status}:  # every declared target is reachable within §4.9
                assert route(status, target)[-1] is target, (status, event_type, target)


def test_docs_transition_table_matches_the_code() -> None:
    doc = (ROOT / "docs" / "session.md").read_text(encoding="utf-8")
    assert render_block() in doc, "docs/session.md is stale: paste `python -m firmware.session.doc`"


def test_session_package_imports_no_ocpp_asyncio_or_sim() -> None:
    """Direct imports (by reading the source) and transitive ones (by importing the package in a
    fresh interpreter and looking at what got loaded)."""
    code = ("import sys, firmware.session, firmware.session.doc; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {'asyncio', 'ocpp', 'sim'})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"firmware.session loads {done.stdout.strip()}"
    for path in (ROOT / "firmware" / "session").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"ocpp", "asyncio", "sim"}, (path.name, name)


# --- properties: random event sequences -----------------------------------------------------------

TOKEN_VALUES = ("CARD1", "CARD2", "CARD3", "card1")  # "card1" is CARD1 (CiString)
#: Any value with any type: the rules match ids by value alone, so a Central "CARD1" and an ISO14443 "card1" are
#: the same id to them (a remote start for a card's UID is stopped by the card).
TOKENS = tuple(IdToken(v, t) for v in TOKEN_VALUES for t in IdTokenType)
PARENTS = (None, central("G1"), central("G2"), IdToken("g1", IdTokenType.LOCAL))
_READY = {P.C, P.D}
_PRESENT = {P.B, P.C, P.D}
_TX_STATUSES = {S.CHARGING, S.SUSPENDED_EV, S.SUSPENDED_EVSE}


class Checker:
    """Re-derives the rules from the events fed and the effects emitted, independently of the
    machine's internals, and checks every effect list against them.

    Safety (on every effect): power permission ⇒ open authorized transaction ∧ EV present (B/C/D)
    ∧ no blocking fault ∧ limit ≥ 6 A ∧ offered ≥ 6 A; Charging ⇔ permission ∧ pilot C/D; every
    status change is in §4.9. Liveness (after every event): the permission is granted whenever all
    its conditions hold (else an EVSE-DIN never offers PWM and the EV never goes to C), the offer is
    min(limit, rating) exactly then, and the transaction status is the one those facts imply.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.m = SessionMachine(1, config)
        self.now = T0
        self.pilot = P.A
        self.limit = config.max_current_amps
        self.faults: dict[tuple[FaultCode, str], bool] = {}
        self.estop = False
        self.power = False
        self.offered = 0.0
        self.locked = False
        self.status = S.AVAILABLE
        self.open_tx: int | None = None
        self.deauthorized = False  # the CSMS rejected the open transaction's id (energy stays off)
        self.seen_tx: set[int] = set()
        self.last_request: RequestAuthorization | None = None
        self.rows_used: set[tuple[ConnectorStatus, type]] = set()
        self.statuses_seen: set[ConnectorStatus] = {S.AVAILABLE}

    def blocked(self) -> bool:
        return self.estop or any(self.faults.values())

    def _track_event(self, event: Event) -> None:
        if isinstance(event, PilotChanged):
            self.pilot = event.state
        elif isinstance(event, ChargingLimitChanged):
            amps = float(event.amps)
            self.limit = amps if math.isfinite(amps) and amps >= 0 else 0.0
        elif isinstance(event, FaultRaised):
            key = (event.code, event.source)
            if key not in self.faults:
                self.faults[key] = (event.blocking if event.blocking is not None
                                    else event.code in self.config.blocking_faults)
        elif isinstance(event, FaultCleared):
            self.faults.pop((event.code, event.source), None)
        elif isinstance(event, EmergencyStop):
            self.estop = True
        elif isinstance(event, EmergencyStopReleased):
            self.estop = False
        elif isinstance(event, PowerRestored):
            self.pilot = event.pilot or P.A
            self.faults.clear()
            self.estop = False
        elif isinstance(event, TransactionRejected):
            if (self.open_tx is not None and event.status is not AuthStatus.ACCEPTED
                    and event.local_id in (None, self.open_tx)):
                self.deauthorized = True  # a stop (StopTransactionOnInvalidId) clears it again

    def feed(self, event: Event, after: float = 1.0) -> list[Effect]:
        self.now += timedelta(seconds=after)
        before = self.m.status
        row = TRANSITIONS[before].get(type(event))
        effects = self.m.handle(event, self.now)  # must never raise
        if row is not None:
            self.rows_used.add((before, type(event)))
        self._track_event(event)
        for effect in effects:
            self._check_effect(effect)
        m = self.m
        assert m.internal_errors == 0
        assert m.status in set(ConnectorStatus) and m.status is self.status
        self.statuses_seen.add(m.status)
        if m.status != before:
            assert row is not None and m.status in row.targets, (before, type(event).__name__, m.status)
        assert m.power_allowed == self.power and m.offered_amps == self.offered
        if self.config.cable_lock:
            assert self.locked == (self.open_tx is not None or m.cable_held_for is not None)
        if m.cable_held_for is not None:
            assert self.config.cable_lock and m.status in (S.FINISHING, S.FAULTED) and self.open_tx is None
        assert (m.transaction is not None) == (self.open_tx is not None)
        assert m.transaction is None or m.transaction.energy_allowed != self.deauthorized
        # a reservation is held exactly while Reserved: used, expired, cancelled, or ended by Faulted and
        # Unavailable (1.6 §5.13), it is gone
        assert (m.status is S.RESERVED) == (m.reservation is not None), (m.status, m.reservation)
        if self.power:
            self._assert_power_allowed()
        self._assert_outputs_and_status_follow_the_facts()
        return effects

    def _may_energize(self) -> bool:
        return (self.open_tx is not None and not self.deauthorized and self.pilot in _PRESENT
                and not self.blocked() and self.limit >= 6.0)

    def _assert_power_allowed(self) -> None:
        tx = self.m.transaction
        assert self.open_tx is not None and tx is not None and tx.energy_allowed and not self.deauthorized
        assert self.pilot in _PRESENT, "power permission without an EV"
        assert not self.blocked()
        assert self.limit >= 6.0 and self.offered >= 6.0

    def _assert_outputs_and_status_follow_the_facts(self) -> None:
        may = self._may_energize()
        assert self.power == may, f"permission {self.power}, expected {may} (pilot {self.pilot})"
        assert self.offered == (min(self.limit, self.config.max_current_amps) if may else 0.0)
        assert (self.status is S.CHARGING) == (self.power and self.pilot in _READY)
        assert (self.status in _TX_STATUSES) == (self.open_tx is not None)
        if self.open_tx is None:
            return
        if self.power:
            expected = S.CHARGING if self.pilot in _READY else S.SUSPENDED_EV
        elif self.deauthorized or self.limit < 6.0 or self.blocked() or self.pilot in (P.E, P.F):
            expected = S.SUSPENDED_EVSE  # the charger holds: wins over SuspendedEV (§4.9 note)
        else:
            assert self.pilot is P.A  # unplugged, StopTransactionOnEVSideDisconnect off
            expected = S.SUSPENDED_EV
        assert self.status is expected, (self.status, expected, self.pilot, self.limit)

    def _check_effect(self, effect: Effect) -> None:
        if isinstance(effect, AllowPower):
            self.power = effect.on
            if effect.on:
                self._assert_power_allowed()
        elif isinstance(effect, OfferCurrent):
            assert effect.amps == 0.0 or 6.0 <= effect.amps <= self.config.max_current_amps
            assert not (self.power and effect.amps < 6.0), "PWM withdrawn before the power permission"
            self.offered = effect.amps
            if effect.amps:
                assert self.open_tx is not None
                assert self.locked or not self.config.cable_lock, "current offered before the cable locked"
        elif isinstance(effect, LockCable):
            assert effect.locked or not self.power, "cable unlocked while power is permitted"
            self.locked = effect.locked
        elif isinstance(effect, StatusChanged):
            assert effect.status == self.status or effect.status in PERMITTED[self.status], (
                f"{self.status} -> {effect.status} is not in OCPP 1.6 §4.9")
            assert (effect.status is S.CHARGING) == (self.power and self.pilot in _READY), (
                "Charging must mean power permitted and the EV requesting it (C/D)")
            self.status = effect.status
        elif isinstance(effect, TransactionStarted):
            assert self.open_tx is None and effect.local_id not in self.seen_tx
            assert not self.power and self.offered == 0.0, "outputs up before the transaction started"
            self.open_tx = effect.local_id
            self.deauthorized = False
            self.seen_tx.add(effect.local_id)
        elif isinstance(effect, TransactionStopped):
            assert self.open_tx == effect.local_id, "a stop without its start, or a second stop"
            if effect.reason is StopReason.DE_AUTHORIZED and self.config.cable_lock:
                assert self.m.cable_held_for is not None, "DeAuthorized stop must hold the cable for its owner"
            assert not self.power and self.offered == 0.0, "power permission or PWM left on at the stop"
            self.open_tx = None
            self.deauthorized = False
        elif isinstance(effect, RequestAuthorization):
            self.last_request = effect

    def restore(self) -> None:
        """Simulate a power loss: persist, rebuild from the JSON, continue with the copy."""
        snap = self.m.snapshot()
        restored = SessionMachine.restore(json.loads(json.dumps(snap)), self.config)
        assert restored.snapshot() == snap
        self.m = restored
        # the checker's view of the outputs survives too
        self.power, self.locked = restored.power_allowed, restored.cable_locked


configs = st.builds(
    SessionConfig,
    max_current_amps=st.sampled_from([16.0, 32.0]),
    connection_timeout_s=st.just(30.0),
    authorize_remote_tx_requests=st.booleans(),
    stop_transaction_on_ev_side_disconnect=st.booleans(),
    stop_transaction_on_invalid_id=st.booleans(),
    unlock_stops_transaction=st.booleans(),
    cable_lock=st.booleans(),
    unlock_on_ev_side_disconnect=st.booleans(),
    free_vend_id_token=st.sampled_from([None, IdToken("FREE", IdTokenType.LOCAL),
                                        IdToken("", IdTokenType.NO_AUTHORIZATION)]),
)
limits = st.one_of(st.sampled_from([0.0, 5.9, 6.0, 10.0, 16.0, 80.0]),
                   st.floats(allow_nan=True, allow_infinity=True))


class SessionStateMachine(RuleBasedStateMachine):
    """Any sequence of events: never raises, invariants hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.c = Checker(SessionConfig())

    @initialize(config=configs)
    def setup(self, config: SessionConfig) -> None:
        self.c = Checker(config)

    @rule(state=st.sampled_from(list(PilotState)))
    def pilot(self, state: PilotState) -> None:
        self.c.feed(PilotChanged(state))

    @rule(token=st.sampled_from(TOKENS))
    def tap(self, token: IdToken) -> None:
        self.c.feed(CardPresented(token))

    @precondition(lambda self: self.c.last_request is not None)
    @rule(status=st.sampled_from(list(AuthStatus)), parent=st.sampled_from(PARENTS),
          source=st.sampled_from(list(AuthSource)))
    def answer_authorization(self, status: AuthStatus, parent: IdToken | None, source: AuthSource) -> None:
        assert self.c.last_request is not None
        self.c.feed(AuthorizationResult(self.c.last_request.id_token, status, parent, source))

    @rule(token=st.sampled_from(TOKENS), status=st.sampled_from(list(AuthStatus)),
          parent=st.sampled_from(PARENTS))
    def unsolicited_authorization(self, token: IdToken, status: AuthStatus, parent: IdToken | None) -> None:
        self.c.feed(AuthorizationResult(token, status, parent))

    @rule(token=st.sampled_from(TOKENS), parent=st.sampled_from(PARENTS))
    def remote_start(self, token: IdToken, parent: IdToken | None) -> None:
        self.c.feed(RemoteStartRequested(token, parent))

    @rule()
    def remote_stop(self) -> None:
        self.c.feed(RemoteStopRequested())

    @rule(operative=st.booleans())
    def availability(self, operative: bool) -> None:
        self.c.feed(AvailabilityChanged(operative))

    @rule(code=st.sampled_from(list(FaultCode)), source=st.sampled_from(["board", "meter"]),
          blocking=st.sampled_from([None, True, False]))
    def fault(self, code: FaultCode, source: str, blocking: bool | None) -> None:
        self.c.feed(FaultRaised(code, "detail", source, blocking))

    @rule(code=st.sampled_from(list(FaultCode)), source=st.sampled_from(["board", "meter"]))
    def fault_cleared(self, code: FaultCode, source: str) -> None:
        self.c.feed(FaultCleared(code, source))

    @precondition(lambda self: bool(self.c.faults))
    @rule(data=st.data())
    def clear_an_active_fault(self, data: st.DataObject) -> None:
        code, source = data.draw(st.sampled_from(sorted(self.c.faults)))
        self.c.feed(FaultCleared(code, source))

    @rule()
    def emergency_stop(self) -> None:
        self.c.feed(EmergencyStop("button"))

    @rule()
    def emergency_stop_released(self) -> None:
        self.c.feed(EmergencyStopReleased())

    @rule(amps=limits)
    def limit(self, amps: float) -> None:
        self.c.feed(ChargingLimitChanged(amps))

    @rule(name=st.sampled_from([*TimerName, "Bogus"]))
    def timer(self, name: str) -> None:
        self.c.feed(TimerExpired(name), after=30.0)

    @precondition(lambda self: bool(self.c.m.timers))
    @rule(data=st.data())
    def running_timer_expires(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.c.m.timers)))
        self.c.feed(TimerExpired(name), after=30.0)

    @rule()
    def unlock(self) -> None:
        self.c.feed(UnlockRequested())

    @rule(hard=st.booleans())
    def reset(self, hard: bool) -> None:
        self.c.feed(ResetRequested(hard))

    @rule(local_id=st.sampled_from([None, 1, 2, 3]))
    def transaction_accepted(self, local_id: int | None) -> None:
        self.c.feed(TransactionAccepted(local_id))

    @rule(status=st.sampled_from(list(AuthStatus)), local_id=st.sampled_from([None, 1, 2, 3]))
    def transaction_rejected(self, status: AuthStatus, local_id: int | None) -> None:
        self.c.feed(TransactionRejected(status, local_id))

    @rule(reservation_id=st.sampled_from([1, 2]), token=st.sampled_from(TOKENS),
          parent=st.sampled_from(PARENTS), expires_in=st.sampled_from([-5, 20, 600]))
    def reserve(self, reservation_id: int, token: IdToken, parent: IdToken | None, expires_in: int) -> None:
        self.c.feed(ReservationMade(reservation_id, token, self.c.now + timedelta(seconds=expires_in), parent))

    @rule(reservation_id=st.sampled_from([1, 2]))
    def cancel_reservation(self, reservation_id: int) -> None:
        self.c.feed(ReservationCancelled(reservation_id))

    @rule(pilot=st.sampled_from([None, *PilotState]), reboot=st.booleans(),
          outage=st.sampled_from([1.0, 3600.0]))
    def power_loss(self, pilot: PilotState | None, reboot: bool, outage: float) -> None:
        self.c.restore()
        self.c.feed(PowerRestored(pilot, reboot), after=outage)

    @rule()
    def snapshot_roundtrip(self) -> None:
        self.c.restore()

    @invariant()
    def status_is_one_of_nine(self) -> None:
        assert self.c.m.status in set(ConnectorStatus)


TestSessionStateMachine = SessionStateMachine.TestCase
TestSessionStateMachine.settings = settings(max_examples=250, stateful_step_count=40, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])


def _random_event(rng: random.Random, checker: Checker) -> Event:
    """A biased random walk: mostly plausible events (answers to the last authorization request,
    running timers), with enough nonsense mixed in."""
    roll = rng.random()
    req = checker.last_request
    if req is not None and roll < 0.2:
        return AuthorizationResult(req.id_token, rng.choice([AuthStatus.ACCEPTED] * 4 + list(AuthStatus)),
                                   rng.choice(PARENTS), rng.choice(list(AuthSource)))
    if checker.m.timers and roll < 0.25:
        return TimerExpired(rng.choice(sorted(checker.m.timers)))
    if checker.faults and roll < 0.3:
        code, source = rng.choice(sorted(checker.faults))
        return FaultCleared(code, source)
    makers: list[Callable[[], Event]] = [
        lambda: PilotChanged(rng.choice([P.A, P.B, P.C, P.C, P.D, P.E, P.F])),
        lambda: PilotChanged(rng.choice([P.A, P.B, P.C])),
        lambda: CardPresented(rng.choice(TOKENS)),
        lambda: AuthorizationResult(rng.choice(TOKENS), rng.choice(list(AuthStatus)), rng.choice(PARENTS)),
        lambda: RemoteStartRequested(rng.choice(TOKENS), rng.choice(PARENTS)),
        lambda: RemoteStopRequested(),
        lambda: AvailabilityChanged(rng.random() < 0.6),
        lambda: FaultRaised(rng.choice(list(FaultCode)), "d", rng.choice(["board", "meter"]),
                            rng.choice([None, None, True, False])),
        lambda: EmergencyStop(),
        lambda: EmergencyStopReleased(),
        lambda: ChargingLimitChanged(rng.choice([0.0, 4.0, 6.0, 13.0, 32.0, 50.0, math.nan])),
        lambda: TimerExpired(rng.choice([*TimerName, "Bogus"])),
        lambda: UnlockRequested(),
        lambda: ResetRequested(rng.random() < 0.5),
        lambda: TransactionAccepted(rng.choice([None, checker.open_tx])),
        lambda: TransactionRejected(rng.choice(list(AuthStatus)), rng.choice([None, checker.open_tx, 999])),
        lambda: ReservationMade(rng.choice([1, 2]), rng.choice(TOKENS),
                                checker.now + timedelta(seconds=rng.choice([-1, 40, 900])), rng.choice(PARENTS)),
        lambda: ReservationCancelled(rng.choice([1, 2])),
        lambda: PowerRestored(rng.choice([None, *PilotState]), rng.random() < 0.3),
    ]
    return rng.choice(makers)()


def test_seeded_random_walk_covers_every_status_and_most_rows() -> None:
    """30 000 events over varied configs: invariants checked after every one."""
    total_rows = sum(len(rows) for rows in TRANSITIONS.values())
    used: set[tuple[ConnectorStatus, type]] = set()
    seen: set[ConnectorStatus] = set()
    for seed in range(30):
        rng = random.Random(seed)
        config = SessionConfig(
            authorize_remote_tx_requests=rng.random() < 0.5,
            stop_transaction_on_ev_side_disconnect=rng.random() < 0.5,
            stop_transaction_on_invalid_id=rng.random() < 0.5,
            unlock_stops_transaction=rng.random() < 0.8,
            cable_lock=rng.random() < 0.8,
            free_vend_id_token=IdToken("FREE", IdTokenType.LOCAL) if rng.random() < 0.2 else None,
            unlock_on_ev_side_disconnect=seed % 3 != 0,  # not drawn from rng: the walks stay as they were
        )
        checker = Checker(config)
        for _ in range(1000):
            event = _random_event(rng, checker)
            if isinstance(event, PowerRestored):
                checker.restore()
            checker.feed(event, after=rng.choice([1.0, 1.0, 45.0]))
        used |= checker.rows_used
        seen |= checker.statuses_seen
    assert seen == set(ConnectorStatus)
    missing = {(s.value, t.__name__) for s, rows in TRANSITIONS.items() for t in rows} - {
        (s.value, t.__name__) for s, t in used}
    assert len(used) / total_rows > 0.97, sorted(missing)


def test_route_only_uses_permitted_changes() -> None:
    for old in ConnectorStatus:
        for new in ConnectorStatus:
            steps: Sequence[ConnectorStatus] = route(old, new)
            prev = old
            for step in steps:
                if step in PERMITTED[prev]:
                    prev = step
                    continue
                # only the fallback may break the table: none of the machine's targets need it
                assert not any(new in row.targets for row in TRANSITIONS[old].values()), (old, new)
                prev = step


# --- id tokens are case-insensitive; the group can come from the CSMS's StartTransaction answer ---------


def test_id_tokens_compare_case_insensitively_and_parent_arrives_with_the_start_answer() -> None:
    from firmware.session import RemoteStartRequested, TransactionAccepted, TransactionStopped
    from firmware.session.events import CardPresented as Tap
    from firmware.session.events import PilotChanged as Pilot

    m = SessionMachine(1, SessionConfig(authorize_remote_tx_requests=False))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    m.handle(Pilot(PilotState.B), now)
    m.handle(RemoteStartRequested(central("04a1b2c3")), now)
    assert m.transaction is not None and m.transaction.parent_id_token is None
    m.handle(TransactionAccepted(local_id=m.transaction.local_id, parent_id_token=central("FLEET")), now)
    assert m.transaction.parent_id_token == central("FLEET")
    assert m.transaction.id_token == IdToken("04a1b2c3", IdTokenType.CENTRAL)
    effects = m.handle(Tap(card("04A1B2C3")), now)  # the same card, upper-case from the reader, typed ISO14443
    assert any(isinstance(e, TransactionStopped) and e.reason.value == "Local" for e in effects)


# --- the id token type ------------------------------------------------------------------------------


def test_id_token_equality_is_case_insensitive_and_typed_matching_ignores_the_type() -> None:
    a, b = IdToken("04a1b2c3", IdTokenType.ISO14443), IdToken("04A1B2C3", IdTokenType.ISO14443)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1 and a.value == "04a1b2c3"  # case kept for the wire
    remote = IdToken.from_ocpp16("04A1B2C3")
    assert remote.type is IdTokenType.CENTRAL and remote != a  # a value object: the type is part of it
    assert a.matches(remote) and remote.matches(a) and not a.matches(None)  # the session rules: value only
    assert not a.matches(IdToken("04A1B2C4", IdTokenType.ISO14443))
    assert a != "04a1b2c3"  # never equal to a bare string: a str slipping through would not match silently


def test_id_token_prints_masked_and_refuses_bare_strings_in_events() -> None:
    token = IdToken("04A1B2C3D4E5F6", IdTokenType.ISO14443)
    assert str(token) == f"{token}" == "***E5F6" and "04A1B2C3D4E5F6" in repr(token)
    assert json.dumps({"t": token}, default=str) == '{"t": "***E5F6"}'  # the JSON log formatter's fallback
    for build in (lambda: CardPresented("CARD1"),  # type: ignore[arg-type]
                  lambda: AuthorizationResult(card("C"), AuthStatus.ACCEPTED, "G"),  # type: ignore[arg-type]
                  lambda: RemoteStartRequested("APP1"),  # type: ignore[arg-type]
                  lambda: ReservationMade(1, "R", T0),  # type: ignore[arg-type]
                  lambda: TransactionAccepted(1, "G"),  # type: ignore[arg-type]
                  lambda: SessionConfig(free_vend_id_token="FREE"),  # type: ignore[arg-type]
                  lambda: IdToken("X", "ISO14443"),  # type: ignore[arg-type]
                  lambda: IdToken(7, IdTokenType.LOCAL)):  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            build()


def test_snapshot_writes_typed_tokens() -> None:
    run = charging(Run(), parent="G")
    tx = run.m.snapshot()["context"]["transaction"]
    assert run.m.snapshot()["version"] == 2
    assert tx["id_token"] == {"value": "CARD1", "type": "ISO14443"}
    assert tx["parent_id_token"] == {"value": "G", "type": "Central"}
