"""Local Auth List Management, the pure and storage parts: the list's updates (atomic, also when the storage fails
half-way), the LocalListConflict rule, the Authorizer's conflict check, the hand-written SendLocalList schema check
held against the schema itself, and the simulated CSMS's chunking of a large list. End to end:
tests/test_e2e_local_auth_list.py."""

from __future__ import annotations

import copy
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from firmware.charger.authorization import Authorizer, AuthSettings, list_conflict
from firmware.ocpp.rpc import _request_validator
from firmware.ocpp.v16.dialect import OCPP16, send_local_list_valid
from firmware.session import AuthStatus
from firmware.storage.auth_stores import IdTagInfo, ListUpdateStatus, LocalAuthorizationList
from firmware.storage.database import Database
from sim.csms import local_list

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
S = AuthStatus
OK = ListUpdateStatus.ACCEPTED


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "agent.db")


def _ids(prefix: str, n: int, status: S = S.ACCEPTED) -> list[tuple[str, IdTagInfo | None]]:
    return [(f"{prefix}{i:06d}", IdTagInfo(status)) for i in range(n)]


def _snapshot(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return conn.execute("SELECT * FROM local_auth_list ORDER BY key").fetchall()


# --- updates -------------------------------------------------------------------------------------------


def test_a_full_update_of_version_0_is_accepted_and_an_empty_one_clears(db: Database) -> None:
    lst = LocalAuthorizationList(db, max_length=10)
    assert lst.replace(0, _ids("A", 2)) is OK  # OCTT clears and refills with version 0
    assert len(lst) == 2 and lst.version == 0
    assert lst.apply(3, [], full=True) is OK and len(lst) == 0 and lst.version == 0  # empty: no list, version 0
    assert lst.apply(4, _ids("B", 1), full=True) is OK and lst.version == 4


def test_a_differential_update_without_entries_changes_only_the_version(db: Database) -> None:
    lst = LocalAuthorizationList(db, max_length=10)
    lst.replace(1, _ids("A", 3))
    before = _snapshot(db)
    assert lst.apply_differential(2, []) is OK
    assert _snapshot(db) == before and lst.version == 2


def test_a_differential_update_failing_half_way_leaves_the_old_list(db: Database) -> None:
    """The storage refuses the 600th of 1,000 rows (a real SQLite error, raised by a trigger): nothing of the
    first 599 stays, the removals are undone too, and the version is the old one."""
    lst = LocalAuthorizationList(db, max_length=100_000)
    assert lst.replace(5, _ids("OLD", 1_000)) is OK
    before = _snapshot(db)
    with db.transaction() as conn:
        conn.execute("CREATE TRIGGER fail_half_way BEFORE INSERT ON local_auth_list WHEN NEW.key = 'new000599' "
                     "BEGIN SELECT RAISE(ABORT, 'simulated storage failure'); END")
    changes = [*_ids("NEW", 1_000), ("OLD000001", None), ("OLD000002", IdTagInfo(S.BLOCKED))]
    assert lst.apply_differential(6, changes) is ListUpdateStatus.FAILED
    assert _snapshot(db) == before and lst.version == 5
    assert lst.replace(7, _ids("NEW", 1_000)) is ListUpdateStatus.FAILED  # a Full update alike
    assert _snapshot(db) == before and lst.version == 5
    with db.transaction() as conn:
        conn.execute("DROP TRIGGER fail_half_way")
    assert lst.apply_differential(6, changes) is OK and len(lst) == 1_999 and lst.version == 6


def test_an_update_growing_the_list_past_its_maximum_is_undone_whole(db: Database) -> None:
    lst = LocalAuthorizationList(db, max_length=1_500)
    lst.replace(1, _ids("A", 1_000))
    before = _snapshot(db)
    assert lst.apply_differential(2, [*_ids("B", 600), ("A000000", None)]) is ListUpdateStatus.FAILED
    assert _snapshot(db) == before and lst.version == 1
    # the same with more removals fits: the maximum counts the list after the update
    assert lst.apply_differential(2, [*_ids("B", 600), *[(f"A{i:06d}", None) for i in range(100)]]) is OK
    assert len(lst) == 1_500


def test_a_closed_database_fails_the_update_without_raising(db: Database) -> None:
    lst = LocalAuthorizationList(db)
    db.close()
    assert lst.replace(1, _ids("A", 1)) is ListUpdateStatus.FAILED
    assert lst.apply_differential(2, _ids("A", 1)) is ListUpdateStatus.FAILED
    with pytest.raises(sqlite3.Error):
        lst.get("A000000")  # a read is the Authorizer's to survive (test_authorization.py)


# --- LocalListConflict ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("listed", "answer", "conflict"), [
    (IdTagInfo(S.ACCEPTED), IdTagInfo(S.ACCEPTED, NOW + timedelta(days=1), "G"), False),  # same verdict
    (IdTagInfo(S.ACCEPTED), IdTagInfo(S.BLOCKED), True),
    (IdTagInfo(S.BLOCKED), IdTagInfo(S.ACCEPTED), True),
    (IdTagInfo(S.BLOCKED), IdTagInfo(S.EXPIRED), True),  # both refuse, for different reasons
    (IdTagInfo(S.ACCEPTED, NOW - timedelta(seconds=1)), IdTagInfo(S.EXPIRED), False),  # expired by its date
    (IdTagInfo(S.ACCEPTED, NOW - timedelta(seconds=1)), IdTagInfo(S.ACCEPTED), True),
    (IdTagInfo(S.ACCEPTED), IdTagInfo(S.CONCURRENT_TX), False),  # about another transaction, not the id
])
def test_list_conflict(listed: IdTagInfo, answer: IdTagInfo, conflict: bool) -> None:
    assert list_conflict(listed, answer, NOW) is conflict


def test_authorizer_reports_the_contradicted_entry_only_for_an_enabled_list(db: Database) -> None:
    current = AuthSettings()
    auth = Authorizer(db, lambda: current, local_list=LocalAuthorizationList(db, max_length=5))
    auth.local_list.replace(1, [("CARD", IdTagInfo(S.ACCEPTED))])
    assert auth.list_conflict("card", IdTagInfo(S.BLOCKED), NOW) == IdTagInfo(S.ACCEPTED)
    assert auth.list_conflict("card", IdTagInfo(S.ACCEPTED), NOW) is None
    assert auth.list_conflict("OTHER", IdTagInfo(S.BLOCKED), NOW) is None  # not listed
    auth.learn("card", IdTagInfo(S.BLOCKED), NOW)  # neither cached nor written into the list
    assert auth.cache.get("CARD", NOW) is None and auth.local_list.get("CARD") == IdTagInfo(S.ACCEPTED)
    current = AuthSettings(local_list_enabled=False)
    assert auth.list_conflict("card", IdTagInfo(S.BLOCKED), NOW) is None


# --- the SendLocalList schema check -----------------------------------------------------------------------


def _schema_accepts(payload: dict[str, Any]) -> bool:
    return bool(_request_validator("1.6", "SendLocalList", False).is_valid(payload))


BAD_VALUES: list[Any] = [None, True, 1, 1.0, -1, "", "x" * 21, "é" * 20, [], {}, ["Accepted"], {"a": 1},
                         "Unknown", "Accepted", "Full", "2026-06-01T12:00:00Z", "2026-06-01T12:00:00",
                         "2026-02-30T12:00:00Z"]


def _mutations(payload: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """Each place of the payload changed one way: a value replaced, a key dropped or added."""
    out = []
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k in list(node):
                paths.append((node, k))
                walk(node[k])
            paths.append((node, None))
        elif isinstance(node, list):
            for i in range(len(node)):
                paths.append((node, i))
                walk(node[i])
    for _ in range(400):
        copied = copy.deepcopy(payload)
        paths.clear()
        walk(copied)
        node, key = paths[rng.randrange(len(paths))]
        choice = rng.randrange(3)
        if key is None or choice == 2:
            target = node if isinstance(node, dict) else None
            if target is None:
                continue
            target[rng.choice(["extra", "idTag", "status", "expiryDate", "parentIdTag", "listVersion"])] = \
                rng.choice(BAD_VALUES)
        elif choice == 1 and isinstance(node, dict):
            del node[key]
        else:
            node[key] = rng.choice(BAD_VALUES)
        out.append(copied)
    return out


def test_the_hand_written_check_never_accepts_what_the_schema_refuses() -> None:
    rng = random.Random(7)
    base = local_list.request(3, "Differential", [
        local_list.entry("A1", "Accepted"),
        local_list.entry("B2", "Blocked", expiry_date=NOW, parent_id_tag="GROUP"),
        local_list.entry("C3", None)])
    assert send_local_list_valid(base) and _schema_accepts(base)
    accepted = refused = 0
    for payload in _mutations(base, rng):
        fast, schema = send_local_list_valid(payload), _schema_accepts(payload)
        assert not fast or schema, payload  # never more lenient than the schema
        accepted += fast
        refused += not schema
    assert accepted > 20 and refused > 200  # both sides were exercised
    # what it refuses still goes through the schema, which names the error (Table 7)
    code, where = OCPP16.schema_violation("SendLocalList", {**base, "updateType": "Partial"}) or ("", "")
    assert code == "PropertyConstraintViolation" and "updateType" in where
    entry_without_id = {"listVersion": 1, "updateType": "Full", "localAuthorizationList": [{"idTagInfo": {
        "status": "Accepted"}}]}
    assert OCPP16.schema_violation("SendLocalList", entry_without_id)[0] == "ProtocolError"  # type: ignore[index]


# --- the simulated CSMS's requests ------------------------------------------------------------------------


def test_a_large_list_is_cut_into_one_full_update_and_differential_ones() -> None:
    entries = [local_list.entry(f"ID{i}") for i in range(2_500)]
    parts = local_list.chunked(entries, 7, 1_000)
    assert [(p.version, p.update_type, len(p.entries)) for p in parts] == [
        (7, "Full", 1_000), (8, "Differential", 1_000), (9, "Differential", 500)]
    assert [e for p in parts for e in p.entries] == entries
    assert local_list.chunked([], 1, 10)[0].payload() == {"listVersion": 1, "updateType": "Full",
                                                          "localAuthorizationList": []}
    assert local_list.request(2, "Full", None) == {"listVersion": 2, "updateType": "Full"}
    assert local_list.entry("X", None) == {"idTag": "X"}
    with pytest.raises(ValueError):
        local_list.chunked(entries, 1, 0)
