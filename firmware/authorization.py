"""Local authorization (OCPP 1.6 §3.5): the Authorization Cache, the Local Authorization List, and the rule
that decides, for a presented id, between starting at once, asking the CSMS, starting offline or refusing.

Three parts, kept apart on purpose:

* :func:`decide` — pure: from (online?, key values, list entry, cache entry, now) to a :class:`Decision`.
  No database, no clock, no OCPP messages; it is tested exhaustively.
* :class:`AuthorizationCache` and :class:`LocalAuthorizationList` — storage in the agent's SQLite database
  (schema v3), so both survive reboots and power cuts as §3.5.1/§3.5.2 ask.
* :class:`Authorizer` — the small glue the OCPP adapter uses: looks the id up, decides, and feeds every
  IdTagInfo the CSMS sends back into the cache.

Identifiers are CiString20: compared case-insensitively (stored under their casefolded form).
See docs/authorization.md for the rules and their sources.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from firmware.session.effects import AuthPurpose
from firmware.session.events import AuthorizationResult, AuthSource, AuthStatus
from firmware.storage.database import Database

log = logging.getLogger(__name__)

#: Authorization Cache size unless the configuration says otherwise ([ocpp] authorization_cache_size).
DEFAULT_CACHE_CAPACITY = 10_000
#: LocalAuthListMaxLength: the most identifiers the Local Authorization List holds.
LOCAL_AUTH_LIST_MAX_LENGTH = 10_000
#: SendLocalListMaxLength: the most identifiers one SendLocalList.req may carry (about 100 bytes each, so a
#: full request stays far below the 1 MiB frame limit of ``firmware.ocpp.rpc``).
SEND_LOCAL_LIST_MAX_LENGTH = 1_000
#: Database setting holding the Local Authorization List's version (written with the list, atomically).
LIST_VERSION_KEY = "authorization.local_list_version"


def _key(id_tag: str) -> str:
    return id_tag.casefold()


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


# --- what the CSMS says about an id ---------------------------------------------------------------


@dataclass(frozen=True)
class IdTagInfo:
    """The CSMS's word on one identifier (1.6 IdTagInfo): status, optional expiry and group (parent id)."""

    status: AuthStatus
    expiry: datetime | None = None
    parent_id_tag: str | None = None

    def effective_status(self, now: datetime) -> AuthStatus:
        """The status at ``now``: an Accepted entry whose expiry date has passed counts as Expired (§3.5.1,
        §3.5.4 "apparently expired due to passage of time MUST also be rejected")."""
        if self.status is AuthStatus.ACCEPTED and self.expiry is not None and self.expiry <= now:
            return AuthStatus.EXPIRED
        return self.status

    def valid(self, now: datetime) -> bool:
        return self.effective_status(now) is AuthStatus.ACCEPTED

    @classmethod
    def from_ocpp16(cls, info: Mapping[str, Any]) -> IdTagInfo:
        """Parse an IdTagInfo object as it comes on the wire. Never raises: an unknown status is Invalid
        (never trust what we cannot read), and an unreadable expiryDate is taken as already passed — an id
        must not become valid forever because its date was garbled."""
        raw_status = str(info.get("status"))
        try:
            status = AuthStatus(raw_status)
        except ValueError:
            status = AuthStatus.INVALID
        if status is AuthStatus.UNKNOWN:  # not a 1.6 AuthorizationStatus
            status = AuthStatus.INVALID
        expiry: datetime | None = None
        raw_expiry = info.get("expiryDate")
        if raw_expiry is not None:
            try:
                expiry = datetime.fromisoformat(str(raw_expiry).replace("Z", "+00:00"))
                if expiry.tzinfo is None:
                    expiry = expiry.replace(tzinfo=UTC)  # OCPP times are UTC
            except ValueError:
                log.warning("unreadable expiryDate in IdTagInfo; treated as expired")
                expiry = datetime.fromtimestamp(0, UTC)
        parent = info.get("parentIdTag")
        return cls(status, expiry, str(parent) if parent is not None else None)


# --- the decision (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthSettings:
    """The configuration keys (§9.1) that steer local authorization."""

    local_pre_authorize: bool = False  # LocalPreAuthorize
    local_authorize_offline: bool = True  # LocalAuthorizeOffline
    allow_offline_tx_for_unknown_id: bool = False  # AllowOfflineTxForUnknownId
    cache_enabled: bool = True  # AuthorizationCacheEnabled
    local_list_enabled: bool = True  # LocalAuthListEnabled


class Verdict(StrEnum):
    LOCAL = "local"  # a list/cache entry answers: Accepted (start now) — or, offline, a known non-valid id
    ASK_CSMS = "ask_csms"  # send Authorize.req and use the answer
    OFFLINE_ALLOWED = "offline_allowed"  # unknown id while offline, AllowOfflineTxForUnknownId
    REFUSE = "refuse"  # offline and nothing allows it


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    status: AuthStatus = AuthStatus.UNKNOWN  # what the session machine is told (not used for ASK_CSMS)
    parent_id_tag: str | None = None
    source: AuthSource | None = None  # which store answered (None: none did)
    reason: str = ""  # for the log

    def result(self, id_token: str) -> AuthorizationResult:
        """The session machine's event for a decision taken without the CSMS."""
        assert self.verdict is not Verdict.ASK_CSMS
        return AuthorizationResult(id_token, self.status, parent_id_token=self.parent_id_tag,
                                   source=self.source or AuthSource.ONLINE)


def decide(*, online: bool, settings: AuthSettings, list_entry: IdTagInfo | None, cache_entry: IdTagInfo | None,
           now: datetime, purpose: AuthPurpose = AuthPurpose.START) -> Decision:
    """How to authorize one presented id.

    * The Local Authorization List, when enabled and holding the id, wins over the cache (§3.5.3); a
      disabled store is not looked at.
    * Online: a valid (Accepted, not expired) entry starts at once when LocalPreAuthorize is on; anything
      else asks the CSMS — including a NOT-valid entry, whose state may have changed (§3.5.1).
    * Offline: a known id that is not valid (Blocked, Expired — also by passage of time —, Invalid,
      ConcurrentTx) is refused, whatever else is configured (§3.5.4). A valid entry starts when
      LocalAuthorizeOffline is on; with it off the id is no better than an unknown one. An unknown id
      starts only with AllowOfflineTxForUnknownId, and never to stop a transaction (that needs a
      group only the CSMS knows).
    """
    entry: IdTagInfo | None = None
    source: AuthSource | None = None
    if settings.local_list_enabled and list_entry is not None:
        entry, source = list_entry, AuthSource.LOCAL_LIST
    elif settings.cache_enabled and cache_entry is not None:
        entry, source = cache_entry, AuthSource.CACHE
    status = entry.effective_status(now) if entry is not None else None
    if online:
        if entry is not None and status is AuthStatus.ACCEPTED and settings.local_pre_authorize:
            return Decision(Verdict.LOCAL, AuthStatus.ACCEPTED, entry.parent_id_tag, source,
                            f"LocalPreAuthorize: valid in {source}")
        return Decision(Verdict.ASK_CSMS, reason="online")
    if entry is not None and status is not None:
        if status is not AuthStatus.ACCEPTED:
            return Decision(Verdict.LOCAL, status, entry.parent_id_tag, source, f"offline: {status} in {source}")
        if settings.local_authorize_offline:
            return Decision(Verdict.LOCAL, AuthStatus.ACCEPTED, entry.parent_id_tag, source,
                            f"LocalAuthorizeOffline: valid in {source}")
    if purpose is not AuthPurpose.STOP and settings.allow_offline_tx_for_unknown_id:
        return Decision(Verdict.OFFLINE_ALLOWED, AuthStatus.ACCEPTED, None, AuthSource.OFFLINE_ALLOWED,
                        "AllowOfflineTxForUnknownId")
    return Decision(Verdict.REFUSE, AuthStatus.UNKNOWN, None, None, "offline: unknown id")


# --- storage ----------------------------------------------------------------------------------------


class AuthorizationCache:
    """§3.5.1: the latest IdTagInfo the CSMS gave for each id presented here, valid or not, on disk.

    When full, a new id first pushes out NOT-valid entries (non-Accepted, or Accepted but expired), then the
    least recently used valid ones. "Used" is an id being looked up or updated; the order is a counter
    kept in the table, so it survives restarts and does not depend on the wall clock.
    """

    def __init__(self, db: Database, capacity: int = DEFAULT_CACHE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"cache capacity must be at least 1, got {capacity}")
        self.db = db
        self.capacity = capacity
        with db.transaction() as conn:
            row = conn.execute("SELECT COUNT(*), COALESCE(MAX(used), 0) FROM auth_cache").fetchone()
        self._count, self._tick = int(row[0]), int(row[1])
        if self._count > capacity:  # the configured size shrank since the last run
            with db.transaction() as conn:
                self._count -= self._evict(conn, self._count - capacity, datetime.now(UTC))

    def __len__(self) -> int:
        return self._count

    def _next(self) -> int:
        self._tick += 1
        return self._tick

    def get(self, id_tag: str, now: datetime) -> IdTagInfo | None:
        """The cached entry, with an Accepted entry past its expiry changed to Expired in the cache (§3.5.1).
        Does not count as a use: call :meth:`touch` once the entry was used."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status, expiry, parent_id_tag FROM auth_cache WHERE key = ?",
                               (_key(id_tag),)).fetchone()
            if row is None:
                return None
            info = IdTagInfo(AuthStatus(row[0]), _dt(row[1]), row[2])
            if info.effective_status(now) is not info.status:
                info = IdTagInfo(AuthStatus.EXPIRED, info.expiry, info.parent_id_tag)
                conn.execute("UPDATE auth_cache SET status = ? WHERE key = ?", (info.status.value, _key(id_tag)))
        return info

    def touch(self, id_tag: str) -> None:
        """Mark the entry as just used (for least-recently-used eviction)."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE auth_cache SET used = ? WHERE key = ?", (self._next(), _key(id_tag)))

    def put(self, id_tag: str, info: IdTagInfo, now: datetime) -> None:
        """Store the CSMS's latest word on ``id_tag`` (replacing what was there), evicting if full."""
        key = _key(id_tag)
        with self.db.transaction() as conn:
            exists = conn.execute("SELECT 1 FROM auth_cache WHERE key = ?", (key,)).fetchone() is not None
            evicted = 0
            if not exists and self._count >= self.capacity:
                evicted = self._evict(conn, self._count - self.capacity + 1, now)
            conn.execute("INSERT INTO auth_cache(key, id_tag, status, expiry, parent_id_tag, used) "
                         "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET id_tag = excluded.id_tag, "
                         "status = excluded.status, expiry = excluded.expiry, "
                         "parent_id_tag = excluded.parent_id_tag, used = excluded.used",
                         (key, id_tag, info.status.value, _ts(info.expiry), info.parent_id_tag, self._next()))
        self._count += (0 if exists else 1) - evicted

    def _evict(self, conn: Any, n: int, now: datetime) -> int:
        cur = conn.execute(
            "DELETE FROM auth_cache WHERE key IN (SELECT key FROM auth_cache ORDER BY "
            "(status = 'Accepted' AND (expiry IS NULL OR expiry > ?)), used LIMIT ?)", (now.timestamp(), n))
        evicted = int(cur.rowcount)
        log.info("authorization cache full: entries evicted", extra={"evicted": evicted, "capacity": self.capacity})
        return evicted

    def clear(self) -> None:
        """ClearCache (§5.4): every entry goes."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM auth_cache")
        self._count = 0


class ListUpdateStatus(StrEnum):
    """SendLocalList.conf status values the storage can decide (NotSupported is the message handler's)."""

    ACCEPTED = "Accepted"
    FAILED = "Failed"
    VERSION_MISMATCH = "VersionMismatch"


class LocalAuthorizationList:
    """§3.5.2: the CSMS-managed list of identifiers and their IdTagInfo, with its version, on disk.

    Changed only by the CSMS (SendLocalList, full or differential); each update is applied whole or not at
    all, together with its version, in one SQLite transaction. The version reads 0 while the list is
    empty (GetLocalListVersion: 0 means no list).
    """

    def __init__(self, db: Database, max_length: int = LOCAL_AUTH_LIST_MAX_LENGTH) -> None:
        self.db = db
        self.max_length = max_length

    def __len__(self) -> int:
        with self.db.transaction() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM local_auth_list").fetchone()[0])

    @property
    def version(self) -> int:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM local_auth_list LIMIT 1").fetchone() is None:
                return 0
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (LIST_VERSION_KEY,)).fetchone()
        return 0 if row is None else int(row[0])

    def get(self, id_tag: str) -> IdTagInfo | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status, expiry, parent_id_tag FROM local_auth_list WHERE key = ?",
                               (_key(id_tag),)).fetchone()
        return None if row is None else IdTagInfo(AuthStatus(row[0]), _dt(row[1]), row[2])

    def replace(self, version: int, entries: Sequence[tuple[str, IdTagInfo]]) -> ListUpdateStatus:
        """A full update: the list becomes exactly ``entries`` with ``version``. Failed (nothing changes) for
        a negative version, more than ``max_length`` entries, or an id given twice."""
        if version < 0 or len(entries) > self.max_length or _has_duplicates([t for t, _ in entries]):
            log.warning("local authorization list: full update refused",
                        extra={"version": version, "entries": len(entries)})
            return ListUpdateStatus.FAILED
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM local_auth_list")
            conn.executemany("INSERT INTO local_auth_list(key, id_tag, status, expiry, parent_id_tag) "
                             "VALUES(?, ?, ?, ?, ?)", [_list_row(t, i) for t, i in entries])
            _put_version(conn, version)
        log.info("local authorization list replaced", extra={"version": version, "entries": len(entries)})
        return ListUpdateStatus.ACCEPTED

    def apply_differential(self, version: int,
                           changes: Sequence[tuple[str, IdTagInfo | None]]) -> ListUpdateStatus:
        """A differential update: each id with an IdTagInfo is added or updated, each without one removed.
        VersionMismatch if ``version`` is not above the current one; Failed (nothing changes) if an id is
        given twice or the list would exceed ``max_length``."""
        current = self.version
        if version <= current:
            log.warning("local authorization list: differential update for an old version",
                        extra={"version": version, "current": current})
            return ListUpdateStatus.VERSION_MISMATCH
        if _has_duplicates([t for t, _ in changes]):
            return ListUpdateStatus.FAILED
        try:
            with self.db.transaction() as conn:
                for id_tag, info in changes:
                    if info is None:
                        conn.execute("DELETE FROM local_auth_list WHERE key = ?", (_key(id_tag),))
                    else:
                        conn.execute("INSERT INTO local_auth_list(key, id_tag, status, expiry, parent_id_tag) "
                                     "VALUES(?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                                     "id_tag = excluded.id_tag, status = excluded.status, "
                                     "expiry = excluded.expiry, parent_id_tag = excluded.parent_id_tag",
                                     _list_row(id_tag, info))
                size = int(conn.execute("SELECT COUNT(*) FROM local_auth_list").fetchone()[0])
                if size > self.max_length:
                    raise _ListTooLong(size)  # rolls the whole update back
                _put_version(conn, version)
        except _ListTooLong as exc:
            log.warning("local authorization list: differential update would exceed the maximum length",
                        extra={"entries": exc.size, "max_length": self.max_length})
            return ListUpdateStatus.FAILED
        log.info("local authorization list updated", extra={"version": version, "changes": len(changes),
                                                            "entries": size})
        return ListUpdateStatus.ACCEPTED

    def apply(self, version: int, changes: Sequence[tuple[str, IdTagInfo | None]],
              *, full: bool) -> ListUpdateStatus:
        """One SendLocalList.req's worth: :meth:`replace` when ``full`` (then every entry needs an
        IdTagInfo, else Failed) or :meth:`apply_differential`."""
        if not full:
            return self.apply_differential(version, changes)
        if any(info is None for _, info in changes):
            return ListUpdateStatus.FAILED
        return self.replace(version, [(t, i) for t, i in changes if i is not None])


class _ListTooLong(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _has_duplicates(id_tags: Sequence[str]) -> bool:
    return len({_key(t) for t in id_tags}) != len(id_tags)


def _list_row(id_tag: str, info: IdTagInfo) -> tuple[str, str, str, float | None, str | None]:
    return _key(id_tag), id_tag, info.status.value, _ts(info.expiry), info.parent_id_tag


def _put_version(conn: Any, version: int) -> None:
    conn.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (LIST_VERSION_KEY, str(version)))


# --- glue for the OCPP adapter -------------------------------------------------------------------------


class Authorizer:
    """The charge point's local authorization: list and cache looked up, :func:`decide` applied, and every
    IdTagInfo from the CSMS remembered. ``settings`` is read on each call, so key changes apply at once."""

    def __init__(self, db: Database, settings: Callable[[], AuthSettings], *,
                 cache_capacity: int = DEFAULT_CACHE_CAPACITY,
                 list_max_length: int = LOCAL_AUTH_LIST_MAX_LENGTH) -> None:
        self.cache = AuthorizationCache(db, cache_capacity)
        self.local_list = LocalAuthorizationList(db, list_max_length)
        self._settings = settings

    def decide(self, id_token: str, *, online: bool, purpose: AuthPurpose, now: datetime) -> Decision:
        """Never raises: a store that cannot be read counts as not knowing the id (logged), so a presented
        card always gets an answer."""
        s = self._settings()
        list_entry = cache_entry = None
        try:
            list_entry = self.local_list.get(id_token) if s.local_list_enabled else None
            cache_entry = self.cache.get(id_token, now) if s.cache_enabled and list_entry is None else None
        except sqlite3.Error:
            log.exception("local authorization data unreadable; the id counts as unknown")
        return decide(online=online, settings=s, list_entry=list_entry, cache_entry=cache_entry, now=now,
                      purpose=purpose)

    def used(self, id_token: str, decision: Decision) -> None:
        """After a decision was acted on: a cache entry that answered counts as recently used."""
        if decision.source is AuthSource.CACHE:
            try:
                self.cache.touch(id_token)
            except sqlite3.Error:
                log.exception("authorization cache: use not recorded")

    def learn(self, id_token: str, info: IdTagInfo, now: datetime) -> None:
        """An IdTagInfo from Authorize.conf, StartTransaction.conf or StopTransaction.conf (§3.5.1). Not
        stored while the cache is disabled, nor for an id on the Local Authorization List (§3.5.3)."""
        if not self._settings().cache_enabled or self.local_list.get(id_token) is not None:
            return
        self.cache.put(id_token, info, now)

    def clear_cache(self) -> None:
        self.cache.clear()


__all__ = [
    "DEFAULT_CACHE_CAPACITY", "LOCAL_AUTH_LIST_MAX_LENGTH", "SEND_LOCAL_LIST_MAX_LENGTH", "AuthSettings",
    "AuthorizationCache", "Authorizer", "Decision", "IdTagInfo", "ListUpdateStatus", "LocalAuthorizationList",
    "Verdict", "decide",
]
