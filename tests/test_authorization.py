"""Local authorization: the decision rule (exhaustively), the Authorization Cache and the Local Authorization
List storage (expiry, eviction order, capacity, persistence, clear, versions), and the glue between them."""

from __future__ import annotations

import itertools
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.charger.authorization import Authorizer, AuthSettings, Decision, Verdict, decide
from firmware.config import ConfigError, parse_config
from firmware.ocpp.v16.mapping import id_tag_info
from firmware.session import AuthPurpose, AuthSource, AuthStatus, IdToken, IdTokenType
from firmware.storage.auth_stores import (
    DEFAULT_CACHE_CAPACITY,
    LIST_VERSION_KEY,
    AuthorizationCache,
    IdTagInfo,
    ListUpdateStatus,
    LocalAuthorizationList,
)
from firmware.storage.database import MIGRATIONS, Database
from firmware.storage.settings import Settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FUTURE = NOW + timedelta(days=1)
PAST = NOW - timedelta(seconds=1)

S = AuthStatus

# --- IdTagInfo ------------------------------------------------------------------------------------------


def test_accepted_entry_past_its_expiry_counts_as_expired() -> None:
    assert IdTagInfo(S.ACCEPTED, FUTURE).effective_status(NOW) is S.ACCEPTED
    assert IdTagInfo(S.ACCEPTED, NOW).effective_status(NOW) is S.EXPIRED  # at the instant: no longer valid
    assert IdTagInfo(S.ACCEPTED, PAST).effective_status(NOW) is S.EXPIRED
    assert IdTagInfo(S.BLOCKED, FUTURE).effective_status(NOW) is S.BLOCKED
    assert IdTagInfo(S.ACCEPTED).effective_status(NOW) is S.ACCEPTED


def test_id_tag_info_from_the_wire() -> None:
    info = id_tag_info({"status": "Accepted", "expiryDate": "2026-06-02T12:00:00.000Z", "parentIdTag": "GROUP-1"})
    assert info == IdTagInfo(S.ACCEPTED, FUTURE, "GROUP-1")
    assert id_tag_info({"status": "Accepted", "expiryDate": "2026-06-02T12:00:00"}).expiry == FUTURE
    # what we cannot read never makes an id valid
    assert id_tag_info({"status": "Maybe"}).status is S.INVALID
    assert id_tag_info({}).status is S.INVALID
    assert id_tag_info({"status": "Unknown"}).status is S.INVALID  # not a 1.6 status
    garbled = id_tag_info({"status": "Accepted", "expiryDate": "next tuesday"})
    assert garbled.effective_status(NOW) is S.EXPIRED


# --- the decision: every combination --------------------------------------------------------------------

ENTRY_KINDS: dict[str, tuple[AuthStatus, datetime | None] | None] = {
    "none": None,
    "accepted": (S.ACCEPTED, None),
    "accepted_until_tomorrow": (S.ACCEPTED, FUTURE),
    "accepted_but_expired": (S.ACCEPTED, PAST),
    "blocked": (S.BLOCKED, None),
    "expired": (S.EXPIRED, PAST),
    "invalid": (S.INVALID, None),
    "concurrent": (S.CONCURRENT_TX, None),
}


def _entry(kind: str, parent: str) -> IdTagInfo | None:
    spec = ENTRY_KINDS[kind]
    return None if spec is None else IdTagInfo(spec[0], spec[1], parent)


def _all_cases() -> list[tuple[bool, AuthSettings, IdTagInfo | None, IdTagInfo | None, AuthPurpose]]:
    cases = []
    for online, flags, lk, ck, purpose in itertools.product(
            (True, False), itertools.product((True, False), repeat=5), ENTRY_KINDS, ENTRY_KINDS, AuthPurpose):
        cases.append((online, AuthSettings(*flags), _entry(lk, "LIST-GROUP"), _entry(ck, "CACHE-GROUP"), purpose))
    return cases


CASES = _all_cases()


def _run(online: bool, s: AuthSettings, le: IdTagInfo | None, ce: IdTagInfo | None, p: AuthPurpose) -> Decision:
    return decide(online=online, settings=s, list_entry=le, cache_entry=ce, now=NOW, purpose=p)


def test_decision_rules_hold_for_every_combination() -> None:
    assert len(CASES) == 2 * 32 * 8 * 8 * len(AuthPurpose)
    for online, s, le, ce, p in CASES:
        d = _run(online, s, le, ce, p)
        # which store speaks for the id: the list when enabled and holding it, else the enabled cache (§3.5.3)
        if s.local_list_enabled and le is not None:
            entry, source = le, AuthSource.LOCAL_LIST
        elif s.cache_enabled and ce is not None:
            entry, source = ce, AuthSource.CACHE
        else:
            entry, source = None, None
        valid = entry is not None and entry.effective_status(NOW) is S.ACCEPTED
        case = (online, s, le, ce, p, d)
        if online:
            # online: only LocalPreAuthorize with a valid entry avoids Authorize.req; NOT-valid entries are
            # re-checked with the CSMS (§3.5.1)
            if valid and s.local_pre_authorize:
                assert d == Decision(Verdict.LOCAL, S.ACCEPTED, entry.parent_id_tag, source, d.reason), case
            else:
                assert d.verdict is Verdict.ASK_CSMS, case
            continue
        assert d.verdict is not Verdict.ASK_CSMS, case
        if entry is not None and not valid:
            # safety (§3.5.4): a known blocked / expired / invalid id never starts offline
            assert d.status is entry.effective_status(NOW) and d.status is not S.ACCEPTED, case
            assert d.verdict is Verdict.LOCAL and d.source is source, case
            assert d.parent_id_tag == entry.parent_id_tag, case  # a group stop may still use the parent
        elif valid and s.local_authorize_offline:
            assert d == Decision(Verdict.LOCAL, S.ACCEPTED, entry.parent_id_tag, source, d.reason), case
        elif s.allow_offline_tx_for_unknown_id and p is not AuthPurpose.STOP:
            # unknown (or valid while LocalAuthorizeOffline is off: no better than unknown)
            assert d.verdict is Verdict.OFFLINE_ALLOWED and d.status is S.ACCEPTED, case
            assert d.source is AuthSource.OFFLINE_ALLOWED and d.parent_id_tag is None, case
        else:
            assert d.verdict is Verdict.REFUSE and d.status is S.UNKNOWN and d.source is None, case


def test_decision_ignores_what_it_must_not_look_at() -> None:
    """List precedence and disabled stores, checked by changing only the ignored input."""
    for online, s, le, ce, p in CASES:
        d = _run(online, s, le, ce, p)
        if s.local_list_enabled and le is not None:  # the cache cannot change a listed id's answer
            for other in ENTRY_KINDS:
                assert _run(online, s, le, _entry(other, "X"), p) == d
        if not s.cache_enabled:
            assert _run(online, s, le, None, p) == d
        if not s.local_list_enabled:
            assert _run(online, s, None, ce, p) == d


def test_disable_remote_authorization_never_asks_the_csms() -> None:
    """2.0.1 AuthCtrlr.DisableRemoteAuthorization (OCTT TC_E_52_CS), for every combination: online, the store that
    speaks for the id answers with its entry's status (valid or not, LocalPreAuthorize or not) and an id no enabled
    store holds is refused as Unknown; offline the decision is the one without the flag."""
    for online, s, le, ce, p in CASES:
        d = _run(online, replace(s, disable_remote_authorization=True), le, ce, p)
        case = (online, s, le, ce, p, d)
        if not online:
            assert d == _run(online, s, le, ce, p), case
            continue
        if s.local_list_enabled and le is not None:
            entry, source = le, AuthSource.LOCAL_LIST
        elif s.cache_enabled and ce is not None:
            entry, source = ce, AuthSource.CACHE
        else:
            entry, source = None, None
        if entry is None:
            assert (d.verdict, d.status, d.source) == (Verdict.REFUSE, S.UNKNOWN, None), case
        else:
            assert (d.verdict, d.status, d.source) == (Verdict.LOCAL, entry.effective_status(NOW), source), case
            assert d.parent_id_tag == entry.parent_id_tag, case


@pytest.mark.parametrize(("online", "settings", "list_kind", "cache_kind", "verdict", "status", "source"), [
    # LocalPreAuthorize: a cached Accepted id starts without waiting for Authorize
    (True, AuthSettings(local_pre_authorize=True), "none", "accepted", Verdict.LOCAL, S.ACCEPTED, AuthSource.CACHE),
    (True, AuthSettings(), "none", "accepted", Verdict.ASK_CSMS, S.UNKNOWN, None),
    (True, AuthSettings(local_pre_authorize=True), "none", "accepted_but_expired", Verdict.ASK_CSMS, S.UNKNOWN,
     None),
    (True, AuthSettings(local_pre_authorize=True), "none", "blocked", Verdict.ASK_CSMS, S.UNKNOWN, None),
    # LocalAuthorizeOffline
    (False, AuthSettings(), "none", "accepted", Verdict.LOCAL, S.ACCEPTED, AuthSource.CACHE),
    (False, AuthSettings(), "accepted", "blocked", Verdict.LOCAL, S.ACCEPTED, AuthSource.LOCAL_LIST),
    (False, AuthSettings(), "blocked", "accepted", Verdict.LOCAL, S.BLOCKED, AuthSource.LOCAL_LIST),
    (False, AuthSettings(local_list_enabled=False), "blocked", "accepted", Verdict.LOCAL, S.ACCEPTED,
     AuthSource.CACHE),
    (False, AuthSettings(local_authorize_offline=False), "none", "accepted", Verdict.REFUSE, S.UNKNOWN, None),
    # expired by the passage of time, blocked: refused even with AllowOfflineTxForUnknownId
    (False, AuthSettings(allow_offline_tx_for_unknown_id=True), "none", "accepted_but_expired", Verdict.LOCAL,
     S.EXPIRED, AuthSource.CACHE),
    (False, AuthSettings(allow_offline_tx_for_unknown_id=True), "none", "blocked", Verdict.LOCAL, S.BLOCKED,
     AuthSource.CACHE),
    # unknown ids offline
    (False, AuthSettings(allow_offline_tx_for_unknown_id=True), "none", "none", Verdict.OFFLINE_ALLOWED,
     S.ACCEPTED, AuthSource.OFFLINE_ALLOWED),
    (False, AuthSettings(), "none", "none", Verdict.REFUSE, S.UNKNOWN, None),
    (False, AuthSettings(cache_enabled=False, allow_offline_tx_for_unknown_id=True), "none", "blocked",
     Verdict.OFFLINE_ALLOWED, S.ACCEPTED, AuthSource.OFFLINE_ALLOWED),
    # 2.0.1 DisablePostAuthorize (with LocalPreAuthorize): a not-valid entry of that store answers, no Authorize
    (True, AuthSettings(local_pre_authorize=True, cache_disable_post_authorize=True), "none", "blocked",
     Verdict.LOCAL, S.BLOCKED, AuthSource.CACHE),
    (True, AuthSettings(local_pre_authorize=True, cache_disable_post_authorize=True), "none", "accepted_but_expired",
     Verdict.LOCAL, S.EXPIRED, AuthSource.CACHE),
    (True, AuthSettings(local_pre_authorize=True, cache_disable_post_authorize=True), "invalid", "none",
     Verdict.ASK_CSMS, S.UNKNOWN, None),
    (True, AuthSettings(local_pre_authorize=True, list_disable_post_authorize=True), "invalid", "none",
     Verdict.LOCAL, S.INVALID, AuthSource.LOCAL_LIST),
    (True, AuthSettings(local_pre_authorize=True, list_disable_post_authorize=True), "none", "invalid",
     Verdict.ASK_CSMS, S.UNKNOWN, None),
    (True, AuthSettings(cache_disable_post_authorize=True, list_disable_post_authorize=True), "invalid", "none",
     Verdict.ASK_CSMS, S.UNKNOWN, None),
])
def test_decision_examples(online: bool, settings: AuthSettings, list_kind: str, cache_kind: str, verdict: Verdict,
                           status: AuthStatus, source: AuthSource | None) -> None:
    d = _run(online, settings, _entry(list_kind, "L"), _entry(cache_kind, "C"), AuthPurpose.START)
    assert (d.verdict, d.source) == (verdict, source)
    if verdict is not Verdict.ASK_CSMS:
        assert d.status is status
        card = IdToken("04A1B2C3", IdTokenType.ISO14443)
        result = d.result(card)
        assert result.status is status and result.id_token == card


def test_unknown_id_never_stops_someone_elses_transaction_offline() -> None:
    s = AuthSettings(allow_offline_tx_for_unknown_id=True)
    assert _run(False, s, None, None, AuthPurpose.STOP).verdict is Verdict.REFUSE
    group = _run(False, s, None, IdTagInfo(S.ACCEPTED, None, "FLEET"), AuthPurpose.STOP)
    assert group.result(IdToken("CARD", IdTokenType.ISO14443)).parent_id_token == IdToken("FLEET",
                                                                                          IdTokenType.CENTRAL)


# --- the Authorization Cache ----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "agent.db")


def _keys(cache: AuthorizationCache) -> set[str]:
    with cache.db.transaction() as conn:
        return {str(r[0]) for r in conn.execute("SELECT id_tag FROM auth_cache")}


def test_cache_stores_the_latest_word_case_insensitively(db: Database) -> None:
    cache = AuthorizationCache(db)
    assert cache.get("04a1b2c3", NOW) is None
    cache.put("04a1b2c3", IdTagInfo(S.ACCEPTED, FUTURE, "G"), NOW)
    assert cache.get("04A1B2C3", NOW) == IdTagInfo(S.ACCEPTED, FUTURE, "G")
    cache.put("04A1B2C3", IdTagInfo(S.BLOCKED), NOW)  # the CSMS changed its mind: updated, not added
    assert cache.get("04a1b2c3", NOW) == IdTagInfo(S.BLOCKED) and len(cache) == 1


def test_cache_changes_an_expired_entry_to_expired(db: Database) -> None:
    cache = AuthorizationCache(db)
    cache.put("A", IdTagInfo(S.ACCEPTED, FUTURE), NOW)
    assert cache.get("A", NOW).status is S.ACCEPTED  # type: ignore[union-attr]
    later = FUTURE + timedelta(seconds=1)
    assert cache.get("A", later) == IdTagInfo(S.EXPIRED, FUTURE)
    # changed in the cache itself (§3.5.1), not only in the answer
    with db.transaction() as conn:
        assert conn.execute("SELECT status FROM auth_cache").fetchone()[0] == "Expired"
    assert cache.get("A", NOW).status is S.EXPIRED  # type: ignore[union-attr]


def test_full_cache_evicts_not_valid_entries_first(db: Database) -> None:
    cache = AuthorizationCache(db, capacity=4)
    cache.put("valid-old", IdTagInfo(S.ACCEPTED), NOW)
    cache.put("blocked", IdTagInfo(S.BLOCKED), NOW)
    cache.put("timed-out", IdTagInfo(S.ACCEPTED, PAST), NOW)  # Accepted, but its date has passed
    cache.put("valid-new", IdTagInfo(S.ACCEPTED, FUTURE), NOW)
    cache.put("new1", IdTagInfo(S.ACCEPTED), NOW)
    assert _keys(cache) == {"valid-old", "timed-out", "valid-new", "new1"}  # the blocked one went first
    cache.put("new2", IdTagInfo(S.ACCEPTED), NOW)
    assert _keys(cache) == {"valid-old", "valid-new", "new1", "new2"}  # then the expired one
    assert len(cache) == 4


def test_full_cache_then_evicts_the_least_recently_used_valid_entry(db: Database) -> None:
    cache = AuthorizationCache(db, capacity=3)
    for tag in ("a", "b", "c"):
        cache.put(tag, IdTagInfo(S.ACCEPTED), NOW)
    cache.touch("a")  # a was just used to start a transaction: b is now the oldest
    cache.put("d", IdTagInfo(S.ACCEPTED), NOW)
    assert _keys(cache) == {"a", "c", "d"}
    cache.put("c", IdTagInfo(S.ACCEPTED, FUTURE), NOW)  # an update is a use too, and evicts nothing
    assert _keys(cache) == {"a", "c", "d"}
    cache.put("e", IdTagInfo(S.ACCEPTED), NOW)
    assert _keys(cache) == {"c", "d", "e"}


def test_cache_and_its_use_order_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = Database(path)
    cache = AuthorizationCache(db, capacity=2)
    cache.put("first", IdTagInfo(S.ACCEPTED, FUTURE, "G"), NOW)
    cache.put("second", IdTagInfo(S.ACCEPTED), NOW)
    cache.touch("first")
    db.close()
    db = Database(path)
    cache = AuthorizationCache(db, capacity=2)
    assert len(cache) == 2 and cache.get("FIRST", NOW) == IdTagInfo(S.ACCEPTED, FUTURE, "G")
    cache.put("third", IdTagInfo(S.ACCEPTED), NOW)
    assert _keys(cache) == {"first", "third"}  # "second" was the least recently used before the restart
    db.close()
    # a smaller configured size applies at start
    db = Database(path)
    assert len(AuthorizationCache(db, capacity=1)) == 1


def test_clear_cache_empties_it_for_good(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = Database(path)
    cache = AuthorizationCache(db)
    cache.put("A", IdTagInfo(S.ACCEPTED), NOW)
    cache.clear()
    assert len(cache) == 0 and cache.get("A", NOW) is None
    db.close()
    assert AuthorizationCache(Database(path)).get("A", NOW) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["put", "touch", "get"]), st.sampled_from("abcdefgh"),
                          st.sampled_from([S.ACCEPTED, S.BLOCKED, S.INVALID]), st.booleans()), max_size=40))
def test_cache_never_exceeds_its_capacity(tmp_path_factory: pytest.TempPathFactory,
                                          ops: list[tuple[str, str, AuthStatus, bool]]) -> None:
    db = Database(tmp_path_factory.mktemp("c") / "agent.db")
    cache = AuthorizationCache(db, capacity=3)
    for op, tag, status, expired in ops:
        if op == "put":
            cache.put(tag, IdTagInfo(status, PAST if expired else None), NOW)
            assert cache.get(tag, NOW) is not None  # the newest entry is always kept
        elif op == "touch":
            cache.touch(tag)
        else:
            cache.get(tag, NOW)
        with db.transaction() as conn:
            stored = int(conn.execute("SELECT COUNT(*) FROM auth_cache").fetchone()[0])
        assert stored == len(cache) <= 3
    db.close()


def test_default_capacity_holds_ten_thousand_ids_and_stays_fast_when_full(db: Database) -> None:
    assert DEFAULT_CACHE_CAPACITY >= 10_000
    with db.transaction() as conn:  # fill it in one go (10 000 single commits would only test the disk)
        conn.executemany("INSERT INTO auth_cache(key, id_tag, status, expiry, parent_id_tag, used) "
                         "VALUES(?, ?, 'Accepted', NULL, NULL, ?)",
                         [(f"{i:08x}", f"{i:08X}", i + 1) for i in range(DEFAULT_CACHE_CAPACITY)])
    cache = AuthorizationCache(db)
    assert len(cache) == DEFAULT_CACHE_CAPACITY
    t0 = time.perf_counter()
    assert cache.get("00001234", NOW) == IdTagInfo(S.ACCEPTED)
    lookup = time.perf_counter() - t0
    t0 = time.perf_counter()
    cache.put("NEWCARD1", IdTagInfo(S.ACCEPTED), NOW)  # full: the least recently used goes
    insert = time.perf_counter() - t0
    assert len(cache) == DEFAULT_CACHE_CAPACITY and cache.get("00000000", NOW) is None
    assert lookup < 0.05 and insert < 0.5, (lookup, insert)


# --- the Local Authorization List -----------------------------------------------------------------------


def test_local_list_full_update_and_version(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    db = Database(path)
    lst = LocalAuthorizationList(db, max_length=3)
    assert lst.version == 0 and len(lst) == 0
    assert lst.replace(7, [("aa", IdTagInfo(S.ACCEPTED)), ("bb", IdTagInfo(S.BLOCKED, None, "G"))]) \
        is ListUpdateStatus.ACCEPTED
    assert lst.version == 7 and len(lst) == 2 and lst.get("BB") == IdTagInfo(S.BLOCKED, None, "G")
    assert lst.replace(8, [("cc", IdTagInfo(S.ACCEPTED))]) is ListUpdateStatus.ACCEPTED
    assert lst.get("aa") is None and lst.version == 8
    # refused whole: too long, an id twice, a negative version
    too_long = [(f"id{i}", IdTagInfo(S.ACCEPTED)) for i in range(4)]
    assert lst.replace(9, too_long) is ListUpdateStatus.FAILED
    assert lst.replace(9, [("x", IdTagInfo(S.ACCEPTED)), ("X", IdTagInfo(S.BLOCKED))]) is ListUpdateStatus.FAILED
    assert lst.replace(-1, []) is ListUpdateStatus.FAILED
    assert lst.version == 8 and len(lst) == 1
    db.close()
    reopened = LocalAuthorizationList(Database(path), max_length=3)  # kept across restarts (§3.5.2)
    assert reopened.version == 8 and reopened.get("CC") == IdTagInfo(S.ACCEPTED)
    # an empty list reads version 0 (GetLocalListVersion: no list)
    assert reopened.replace(9, []) is ListUpdateStatus.ACCEPTED and reopened.version == 0


def test_local_list_differential_update(db: Database) -> None:
    lst = LocalAuthorizationList(db, max_length=3)
    lst.replace(1, [("aa", IdTagInfo(S.ACCEPTED)), ("bb", IdTagInfo(S.ACCEPTED))])
    assert lst.apply_differential(2, [("aa", None), ("bb", IdTagInfo(S.BLOCKED)), ("cc", IdTagInfo(S.ACCEPTED))]) \
        is ListUpdateStatus.ACCEPTED
    assert lst.get("aa") is None and lst.get("bb") == IdTagInfo(S.BLOCKED) and lst.version == 2
    # not newer than the current version
    assert lst.apply_differential(2, [("dd", IdTagInfo(S.ACCEPTED))]) is ListUpdateStatus.VERSION_MISMATCH
    # would exceed LocalAuthListMaxLength: nothing changes, not even the version
    assert lst.apply_differential(3, [("dd", IdTagInfo(S.ACCEPTED)), ("ee", IdTagInfo(S.ACCEPTED))]) \
        is ListUpdateStatus.FAILED
    assert lst.get("dd") is None and lst.version == 2 and len(lst) == 2
    assert lst.apply_differential(3, [("dd", None), ("DD", None)]) is ListUpdateStatus.FAILED
    # one SendLocalList's worth: a full update needs an IdTagInfo for every id
    assert lst.apply(4, [("ff", None)], full=True) is ListUpdateStatus.FAILED
    assert lst.apply(4, [("ff", IdTagInfo(S.ACCEPTED))], full=False) is ListUpdateStatus.ACCEPTED
    assert lst.apply(5, [("gg", IdTagInfo(S.ACCEPTED))], full=True) is ListUpdateStatus.ACCEPTED
    assert len(lst) == 1 and lst.version == 5
    assert Settings(db).get(LIST_VERSION_KEY) == "5"


# --- the glue -------------------------------------------------------------------------------------------


def test_authorizer_list_wins_and_listed_ids_are_not_cached(db: Database) -> None:
    current = AuthSettings()
    auth = Authorizer(db, lambda: current)
    auth.local_list.replace(1, [("LISTED", IdTagInfo(S.BLOCKED))])
    auth.learn("LISTED", IdTagInfo(S.ACCEPTED), NOW)  # §3.5.3: never cached
    assert auth.cache.get("LISTED", NOW) is None
    d = auth.decide("listed", online=False, purpose=AuthPurpose.START, now=NOW)
    assert (d.verdict, d.status, d.source) == (Verdict.LOCAL, S.BLOCKED, AuthSource.LOCAL_LIST)
    auth.learn("CARD", IdTagInfo(S.ACCEPTED), NOW)
    d = auth.decide("card", online=False, purpose=AuthPurpose.START, now=NOW)
    assert (d.status, d.source) == (S.ACCEPTED, AuthSource.CACHE)
    auth.used("card", d)
    # disabled: neither consulted nor updated
    current = AuthSettings(cache_enabled=False)
    auth.learn("OTHER", IdTagInfo(S.ACCEPTED), NOW)
    assert auth.cache.get("OTHER", NOW) is None
    assert auth.decide("card", online=False, purpose=AuthPurpose.START, now=NOW).verdict is Verdict.REFUSE
    auth.clear_cache()
    assert len(auth.cache) == 0


def test_authorizer_cache_lifetime_bounds_the_expiry(db: Database) -> None:
    """2.0.1 AuthCacheCtrlr.LifeTime: an entry stored now expires LifeTime later, or at the CSMS's own expiry if
    that comes first; without a lifetime (1.6) the CSMS's expiry alone."""
    current = AuthSettings(cache_lifetime_s=60)
    auth = Authorizer(db, lambda: current)
    auth.learn("A", IdTagInfo(S.ACCEPTED), NOW)
    auth.learn("B", IdTagInfo(S.ACCEPTED, NOW + timedelta(seconds=10)), NOW)
    auth.learn("C", IdTagInfo(S.ACCEPTED, FUTURE), NOW)
    assert [auth.cache.get(t, NOW) for t in "ABC"] == [IdTagInfo(S.ACCEPTED, NOW + timedelta(seconds=60)),
                                                       IdTagInfo(S.ACCEPTED, NOW + timedelta(seconds=10)),
                                                       IdTagInfo(S.ACCEPTED, NOW + timedelta(seconds=60))]
    later = NOW + timedelta(seconds=61)
    d = auth.decide("A", online=True, purpose=AuthPurpose.START, now=later)
    assert d.verdict is Verdict.ASK_CSMS  # expired in the cache: the CSMS is asked again
    current = AuthSettings()
    auth.learn("D", IdTagInfo(S.ACCEPTED), NOW)
    assert auth.cache.get("D", later) == IdTagInfo(S.ACCEPTED)


def test_authorizer_answers_even_when_storage_fails(db: Database) -> None:
    auth = Authorizer(db, lambda: AuthSettings(allow_offline_tx_for_unknown_id=True))
    auth.learn("CARD", IdTagInfo(S.BLOCKED), NOW)
    db.close()  # every query now raises sqlite3.ProgrammingError
    d = auth.decide("CARD", online=False, purpose=AuthPurpose.START, now=NOW)
    assert d.verdict is Verdict.OFFLINE_ALLOWED  # unreadable store: the id counts as unknown
    auth.used("CARD", Decision(Verdict.LOCAL, S.ACCEPTED, source=AuthSource.CACHE))  # logged, not raised


# --- schema and configuration ---------------------------------------------------------------------------


def test_a_version_2_database_migrates_to_3_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "agent.db"
    old = Database(path, MIGRATIONS[:2])
    Settings(old).put("k", "v")
    old.close()
    db = Database(path)
    assert db.version >= 3 and Settings(db).get("k") == "v"
    AuthorizationCache(db).put("A", IdTagInfo(S.ACCEPTED), NOW)
    assert LocalAuthorizationList(db).version == 0


CONFIG = """
[charge_point]
id = "CP-0001"

[[connectors]]
id = 1
board = { driver = "ioboard", port = "/dev/ttyS1" }

[ocpp]
csms_url = "ws://127.0.0.1:9000/ocpp"
"""


def test_cache_size_is_configurable() -> None:
    cfg = parse_config(CONFIG, "a.toml")
    assert cfg.ocpp is not None and cfg.ocpp.authorization_cache_size == DEFAULT_CACHE_CAPACITY
    cfg = parse_config(CONFIG + "authorization_cache_size = 50000\n", "a.toml")
    assert cfg.ocpp is not None and cfg.ocpp.authorization_cache_size == 50_000
    with pytest.raises(ConfigError, match="authorization_cache_size"):
        parse_config(CONFIG + "authorization_cache_size = 0\n", "a.toml")
