"""Snapshots an earlier firmware wrote still restore: ``tests/fixtures/session-snapshot-*.json`` are the first format
(version 1, id tokens as bare strings), made by ``tests/fixtures/make_session_snapshots.py`` on the session code
before :class:`~firmware.session.IdToken`. Each restores with the current code into the state it was taken in,
its id tokens come back typed (Central: nothing recorded their kind), a snapshot taken again is the typed form
(version 2) and round-trips, and the restored machine carries on — its ids still match the cards that own them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from firmware.session import (
    CardPresented,
    ConnectorStatus,
    IdToken,
    IdTokenType,
    PowerRestored,
    SessionConfig,
    SessionMachine,
    SnapshotError,
    StatusChanged,
    TransactionStopped,
)
from firmware.session.machine import SNAPSHOT_VERSION
from hal.types import PilotState

FIXTURES = Path(__file__).resolve().parent / "fixtures"
S = ConnectorStatus
T1 = datetime(2025, 3, 1, 12, 5, tzinfo=UTC)  # five minutes after the fixtures' clock: the power came back


def old(value: str) -> IdToken:
    """How a version-1 id token restores: the string alone was kept, so as a 1.6 id of unknown kind."""
    return IdToken(value, IdTokenType.CENTRAL)


CARD, CARD_EM, GROUP = old("04A1B2C3D4E5F6"), old("0F00A1B2C3"), old("FLEET-7")


@dataclass(frozen=True)
class Expect:
    status: ConnectorStatus
    check: Callable[[SessionMachine], None]


def _charging(m: SessionMachine) -> None:
    tx = m.transaction
    assert tx is not None and tx.id_token == CARD and tx.parent_id_token == GROUP and not tx.remote_start
    assert m.power_allowed and m.cable_locked


def _stop_pending(m: SessionMachine) -> None:
    _charging(m)
    pending = m._ctx.pending
    assert pending is not None and pending.id_token == old("04FFEEDDCCBBAA") and pending.purpose.value == "stop"


def _identify_first(m: SessionMachine) -> None:
    auth = m.authorization
    assert auth is not None and auth.id_token == CARD_EM and auth.parent_id_token == GROUP
    assert m.transaction is None and "ConnectionTimeOut" in m.timers


def _plug_first_pending(m: SessionMachine) -> None:
    pending = m._ctx.pending
    assert pending is not None and pending.id_token == CARD and m.ev_connected and m.authorization is None


def _cable_held(m: SessionMachine) -> None:
    assert m.cable_held_for == CARD and m.transaction is None and m.cable_locked and not m.ev_connected


def _remote_start(m: SessionMachine) -> None:
    tx = m.transaction
    assert tx is not None and tx.id_token == old("APP-5F3A9C") and tx.parent_id_token == GROUP and tx.remote_start


def _suspended_evse(m: SessionMachine) -> None:
    tx = m.transaction
    assert tx is not None and tx.id_token == CARD and m.limit_amps == 4.0 and not m.power_allowed


def _warning(m: SessionMachine) -> None:
    _charging(m)
    assert [(f.code.value, f.blocking) for f in m.faults] == [("link_lost", False)]


def _faulted_after_transaction(m: SessionMachine) -> None:
    assert m.transaction is None and m.blocked and [f.code.value for f in m.faults] == ["rcd_trip"]


def _reserved(m: SessionMachine, reservation_id: int = 7, token: str = "RES-TAG-1") -> None:
    res = m.reservation
    assert res is not None and res.reservation_id == reservation_id
    assert res.id_token == old(token) and res.parent_id_token == GROUP


def _faulted_reserved(m: SessionMachine) -> None:
    _reserved(m, 8, "RES-TAG-2")
    assert m.blocked


EXPECTED: dict[str, Expect] = {
    "charging": Expect(S.CHARGING, _charging),
    "charging-stop-pending": Expect(S.CHARGING, _stop_pending),
    "identify-first": Expect(S.PREPARING, _identify_first),
    "plug-first-pending": Expect(S.PREPARING, _plug_first_pending),
    "cable-held": Expect(S.FINISHING, _cable_held),
    "suspended-ev-remote-start": Expect(S.SUSPENDED_EV, _remote_start),
    "suspended-evse": Expect(S.SUSPENDED_EVSE, _suspended_evse),
    "charging-with-warning": Expect(S.CHARGING, _warning),
    "faulted-after-transaction": Expect(S.FAULTED, _faulted_after_transaction),
    "reserved": Expect(S.RESERVED, _reserved),
    "faulted-reserved": Expect(S.FAULTED, _faulted_reserved),
}

#: Where a snapshot holds id tokens (paths into "context"): each a string in version 1, an object in version 2.
TOKEN_PATHS = (("transaction", "id_token"), ("transaction", "parent_id_token"), ("authorization", "id_token"),
               ("authorization", "parent_id_token"), ("pending", "id_token"), ("reservation", "id_token"),
               ("reservation", "parent_id_token"), ("cable_held_for",))


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"session-snapshot-{name}.json").read_text(encoding="utf-8"))
    return data


def typed(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What the current code should write for a version-1 snapshot: the same, with every id token an object."""
    out: dict[str, Any] = json.loads(json.dumps(snapshot))
    out["version"] = SNAPSHOT_VERSION
    for path in TOKEN_PATHS:
        parent = out["context"]
        for key in path[:-1]:
            parent = parent[key]
            if parent is None:
                break
        if parent is not None and parent[path[-1]] is not None:
            parent[path[-1]] = {"value": parent[path[-1]], "type": "Central"}
    return out


def test_every_fixture_has_expectations() -> None:
    made = {p.name.removeprefix("session-snapshot-").removesuffix(".json")
            for p in FIXTURES.glob("session-snapshot-*.json")}
    assert made == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_old_snapshot_restores_with_typed_tokens_and_round_trips(name: str) -> None:
    snap = load(name)
    assert snap["version"] == 1 and all(isinstance(v, str) for v in _tokens(snap)), "fixture is not the old form"
    m = SessionMachine.restore(snap, SessionConfig())
    expect = EXPECTED[name]
    assert m.status is expect.status
    expect.check(m)
    again = m.snapshot()
    assert again == typed(snap)  # nothing but the version and the token form changed
    assert all(isinstance(v, dict) and set(v) == {"value", "type"} for v in _tokens(again))
    copy = SessionMachine.restore(json.loads(json.dumps(again)), SessionConfig())
    assert copy.snapshot() == again and copy.status is expect.status
    expect.check(copy)


def _tokens(snapshot: dict[str, Any]) -> list[Any]:
    found = []
    for path in TOKEN_PATHS:
        node: Any = snapshot["context"]
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            found.append(node)
    return found


def test_restored_old_transaction_stops_with_its_id_after_the_power_cut() -> None:
    m = SessionMachine.restore(load("charging"), SessionConfig())
    effects = m.handle(PowerRestored(PilotState.B), T1)
    stops = [e for e in effects if isinstance(e, TransactionStopped)]
    assert [(s.local_id, s.reason.value, s.id_token) for s in stops] == [(1, "PowerLoss", CARD)]
    assert stops[0].id_token.value == "04A1B2C3D4E5F6"  # what the 1.6 adapter would send


def test_a_cable_held_in_an_old_snapshot_is_released_by_its_owners_card() -> None:
    """The restored owner id is typed Central, the card ISO14443: ids match by value, so the owner gets it."""
    m = SessionMachine.restore(load("cable-held"), SessionConfig())
    m.handle(PowerRestored(PilotState.A), T1)
    assert m.status is S.FINISHING and m.cable_locked
    effects = m.handle(CardPresented(IdToken("04a1b2c3d4e5f6", IdTokenType.ISO14443)), T1)
    assert not m.cable_locked and m.cable_held_for is None
    assert [e.status for e in effects if isinstance(e, StatusChanged)] == [S.AVAILABLE]


@pytest.mark.parametrize("mutate", [
    # version 1 has strings only, version 2 objects only: a mix is a corrupt snapshot, not a format
    lambda s: s["context"].update(cable_held_for={"value": "X", "type": "Central"}),
    lambda s: s.update(version=2),
    lambda s: (s.update(version=2), s["context"].update(cable_held_for={"value": "X", "type": "Bogus"})),
    lambda s: (s.update(version=2), s["context"].update(cable_held_for={"value": 7, "type": "Central"})),
    lambda s: (s.update(version=2), s["context"].update(cable_held_for={"type": "Central"})),
])
def test_token_form_must_fit_the_version(mutate: Callable[[dict[str, Any]], object]) -> None:
    snap = load("cable-held")
    mutate(snap)
    with pytest.raises(SnapshotError, match="cable_held_for"):
        SessionMachine.restore(snap, SessionConfig())
