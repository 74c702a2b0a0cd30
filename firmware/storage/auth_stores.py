"""Where local authorization keeps what it knows (OCPP 1.6 §3.5.1, §3.5.2): the Authorization Cache and the Local
Authorization List, two tables of the agent's SQLite database (schema v3), so both survive reboots and power cuts.

Storage only: which store speaks for an id, and what that means, is decided in
:mod:`firmware.charger.authorization`; the wire forms are the adapters' (1.6: ``firmware.ocpp.v16.mapping``).
Identifiers are CiString20: compared case-insensitively (stored under their casefolded form).
See docs/authorization.md.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from firmware.session.events import AuthStatus
from firmware.storage.database import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

#: Authorization Cache size unless the configuration says otherwise ([ocpp] authorization_cache_size).
DEFAULT_CACHE_CAPACITY = 10_000
#: The most identifiers the Local Authorization List holds (OCPP 1.6 LocalAuthListMaxLength): a network's whole
#: card base (bench/bench_local_auth_list.py: a tap's lookup stays far below a millisecond at this size).
LOCAL_AUTH_LIST_MAX_LENGTH = 100_000
#: Setting holding the Local Authorization List's version (written with the list, atomically).
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
    """The CSMS's word on one identifier, as both stores keep it: status, optional expiry and group (parent id).
    (OCPP 1.6 IdTagInfo, 2.0.1 IdTokenInfo; each adapter parses its own wire form.)"""

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

    def _evict(self, conn: sqlite3.Connection, n: int, now: datetime) -> int:
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
    all, together with its version, in one SQLite transaction (one commit, rows written with ``executemany``):
    refused, or failing half-way (a storage error, the list growing past ``max_length``), it leaves the list
    and its version exactly as they were. The version reads 0 while the list is empty (GetLocalListVersion: 0
    means no list).
    """

    def __init__(self, db: Database, max_length: int = LOCAL_AUTH_LIST_MAX_LENGTH) -> None:
        self.db = db
        self.max_length = max_length
        self._settings = Settings(db)  # the version

    def __len__(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM local_auth_list").fetchone()[0])

    @property
    def version(self) -> int:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM local_auth_list LIMIT 1").fetchone() is None:
                return 0
            value = self._settings.get(LIST_VERSION_KEY)
        return 0 if value is None else int(value)

    def get(self, id_tag: str) -> IdTagInfo | None:
        """The entry for ``id_tag`` (case-insensitive): one indexed read, no transaction (the card-tap path)."""
        with self.db.read() as conn:
            row = conn.execute("SELECT status, expiry, parent_id_tag FROM local_auth_list WHERE key = ?",
                               (_key(id_tag),)).fetchone()
        return None if row is None else IdTagInfo(AuthStatus(row[0]), _dt(row[1]), row[2])

    def replace(self, version: int, entries: Sequence[tuple[str, IdTagInfo]]) -> ListUpdateStatus:
        """A full update: the list becomes exactly ``entries`` with ``version`` (0 included: OCTT clears the
        list with a Full update of version 0). Failed (nothing changes) for a negative version, more than
        ``max_length`` entries, an id given twice, or a storage failure."""
        if version < 0 or len(entries) > self.max_length or _has_duplicates([t for t, _ in entries]):
            log.warning("local authorization list: full update refused",
                        extra={"version": version, "entries": len(entries), "max_length": self.max_length})
            return ListUpdateStatus.FAILED
        try:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM local_auth_list")
                conn.executemany(_UPSERT, [_list_row(t, i) for t, i in entries])
                self._settings.put(LIST_VERSION_KEY, str(version))
        except sqlite3.Error as exc:
            log.error("local authorization list: full update failed; the list is unchanged",
                      extra={"version": version, "error": str(exc)})
            return ListUpdateStatus.FAILED
        log.info("local authorization list replaced", extra={"version": version, "entries": len(entries)})
        return ListUpdateStatus.ACCEPTED

    def apply_differential(self, version: int,
                           changes: Sequence[tuple[str, IdTagInfo | None]]) -> ListUpdateStatus:
        """A differential update: each id with an IdTagInfo is added or updated, each without one removed; the
        list then has ``version`` (also when ``changes`` is empty: the entries stay as they are).
        VersionMismatch if ``version`` is not above the current one; Failed (nothing changes) if an id is
        given twice, the list would exceed ``max_length``, or the storage fails."""
        try:
            current = self.version
        except sqlite3.Error as exc:
            log.error("local authorization list unreadable", extra={"error": str(exc)})
            return ListUpdateStatus.FAILED
        if version <= current:
            log.warning("local authorization list: differential update for an old version",
                        extra={"version": version, "current": current})
            return ListUpdateStatus.VERSION_MISMATCH
        if _has_duplicates([t for t, _ in changes]):
            log.warning("local authorization list: differential update names an id twice",
                        extra={"version": version})
            return ListUpdateStatus.FAILED
        removed = [(_key(t),) for t, i in changes if i is None]
        upserts = [_list_row(t, i) for t, i in changes if i is not None]
        try:
            with self.db.transaction() as conn:
                if removed:
                    conn.executemany("DELETE FROM local_auth_list WHERE key = ?", removed)
                if upserts:
                    conn.executemany(_UPSERT, upserts)
                size = int(conn.execute("SELECT COUNT(*) FROM local_auth_list").fetchone()[0])
                if size > self.max_length:
                    raise _ListTooLong(size)  # rolls the whole update back
                self._settings.put(LIST_VERSION_KEY, str(version))
        except _ListTooLong as exc:
            log.warning("local authorization list: differential update would exceed the maximum length",
                        extra={"entries": exc.size, "max_length": self.max_length})
            return ListUpdateStatus.FAILED
        except sqlite3.Error as exc:
            log.error("local authorization list: differential update failed; the list is unchanged",
                      extra={"version": version, "error": str(exc)})
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
            log.warning("local authorization list: full update with an entry lacking its IdTagInfo",
                        extra={"version": version})
            return ListUpdateStatus.FAILED
        return self.replace(version, [(t, i) for t, i in changes if i is not None])


_UPSERT = ("INSERT INTO local_auth_list(key, id_tag, status, expiry, parent_id_tag) VALUES(?, ?, ?, ?, ?) "
           "ON CONFLICT(key) DO UPDATE SET id_tag = excluded.id_tag, status = excluded.status, "
           "expiry = excluded.expiry, parent_id_tag = excluded.parent_id_tag")


class _ListTooLong(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _has_duplicates(id_tags: Sequence[str]) -> bool:
    return len({_key(t) for t in id_tags}) != len(id_tags)


def _list_row(id_tag: str, info: IdTagInfo) -> tuple[str, str, str, float | None, str | None]:
    return _key(id_tag), id_tag, info.status.value, _ts(info.expiry), info.parent_id_tag
