"""Local authorization (OCPP 1.6 §3.5): the rule that decides, for a presented id, between starting at once,
asking the CSMS, starting offline or refusing — and the glue that applies it to the stores.

Two parts, kept apart on purpose:

* :func:`decide` — pure: from (online?, settings, list entry, cache entry, now) to a :class:`Decision`.
  No database, no clock, no protocol messages; it is tested exhaustively.
* :class:`Authorizer` — the small glue an OCPP adapter uses: looks the id up in the stores
  (:mod:`firmware.storage.auth_stores`), decides, and feeds every answer of the CSMS back into the cache.

No OCPP types here: each adapter turns its wire form into :class:`~firmware.storage.auth_stores.IdTagInfo`
(1.6: :func:`firmware.ocpp.v16.mapping.id_tag_info`) and its configuration keys into :class:`AuthSettings`.
See docs/authorization.md for the rules and their sources.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from firmware.session.effects import AuthPurpose
from firmware.session.events import AuthorizationResult, AuthSource, AuthStatus
from firmware.session.id_token import IdToken
from firmware.storage.auth_stores import (
    DEFAULT_CACHE_CAPACITY,
    LOCAL_AUTH_LIST_MAX_LENGTH,
    AuthorizationCache,
    IdTagInfo,
    LocalAuthorizationList,
)
from firmware.storage.database import Database

log = logging.getLogger(__name__)


# --- the decision (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthSettings:
    """The configuration keys (§9.1) that steer local authorization."""

    local_pre_authorize: bool = False  # LocalPreAuthorize
    local_authorize_offline: bool = True  # LocalAuthorizeOffline
    allow_offline_tx_for_unknown_id: bool = False  # AllowOfflineTxForUnknownId
    cache_enabled: bool = True  # AuthorizationCacheEnabled
    local_list_enabled: bool = True  # LocalAuthListEnabled
    # 2.0.1 only (1.6 has no such keys; the defaults are 1.6's behaviour):
    cache_disable_post_authorize: bool = False  # AuthCacheCtrlr.DisablePostAuthorize
    list_disable_post_authorize: bool = False  # LocalAuthListCtrlr.DisablePostAuthorize
    cache_lifetime_s: int | None = None  # AuthCacheCtrlr.LifeTime: an entry expires this long after it was stored
    disable_remote_authorization: bool = False  # AuthCtrlr.DisableRemoteAuthorization: never ask the CSMS


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

    def result(self, id_token: IdToken) -> AuthorizationResult:
        """The session machine's event for a decision taken without the CSMS (the list or cache names the
        group by its string alone: a CSMS-given id, Central)."""
        assert self.verdict is not Verdict.ASK_CSMS
        parent = None if self.parent_id_tag is None else IdToken.from_ocpp16(self.parent_id_tag)
        return AuthorizationResult(id_token, self.status, parent_id_token=parent,
                                   source=self.source or AuthSource.ONLINE)


def decide(*, online: bool, settings: AuthSettings, list_entry: IdTagInfo | None, cache_entry: IdTagInfo | None,
           now: datetime, purpose: AuthPurpose = AuthPurpose.START) -> Decision:
    """How to authorize one presented id.

    * The Local Authorization List, when enabled and holding the id, wins over the cache (§3.5.3); a
      disabled store is not looked at.
    * Online: a valid (Accepted, not expired) entry starts at once when LocalPreAuthorize is on; anything
      else asks the CSMS — including a NOT-valid entry, whose state may have changed (§3.5.1) — unless, with
      LocalPreAuthorize on, the store that holds it has DisablePostAuthorize (2.0.1 C10.FR.03 / C14.FR.03 turned
      off): then the entry's status answers at once.
    * Online with DisableRemoteAuthorization (2.0.1 AuthCtrlr: "not issue any AuthorizeRequests, but only use the
      Authorization Cache and Local Authorization List"; OCTT TC_E_52_CS): the entry's status answers at once,
      whatever LocalPreAuthorize says (there is no answer of the CSMS to wait for), and an id neither store holds
      is refused as Unknown. Offline nothing changes: the offline rules never ask the CSMS anyway.
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
        if entry is not None and status is not None and settings.local_pre_authorize:
            if status is AuthStatus.ACCEPTED:
                return Decision(Verdict.LOCAL, AuthStatus.ACCEPTED, entry.parent_id_tag, source,
                                f"LocalPreAuthorize: valid in {source}")
            no_post = (settings.list_disable_post_authorize if source is AuthSource.LOCAL_LIST
                       else settings.cache_disable_post_authorize)
            if no_post:
                return Decision(Verdict.LOCAL, status, entry.parent_id_tag, source,
                                f"DisablePostAuthorize: {status} in {source}")
        if settings.disable_remote_authorization:
            if entry is not None and status is not None:
                return Decision(Verdict.LOCAL, status, entry.parent_id_tag, source,
                                f"DisableRemoteAuthorization: {status} in {source}")
            return Decision(Verdict.REFUSE, AuthStatus.UNKNOWN, None, None, "DisableRemoteAuthorization: unknown id")
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


def list_conflict(list_entry: IdTagInfo, answer: IdTagInfo, now: datetime) -> bool:
    """Whether the CSMS's answer about an id contradicts the id's Local Authorization List entry (§3.5.2: the
    charge point then reports LocalListConflict): the two say different things about whether the id may charge
    now — one valid, the other not, or both not valid for different reasons (Blocked against Expired). An
    expiry date or group that differ while both agree on the status are no conflict: they do not change what a
    tap does. Nor is an answer ConcurrentTx: it is about the id's other transaction, not about the id."""
    answered = answer.effective_status(now)
    return answered is not AuthStatus.CONCURRENT_TX and list_entry.effective_status(now) is not answered


# --- glue for the OCPP adapters ------------------------------------------------------------------------


class Authorizer:
    """The charge point's local authorization: list and cache looked up, :func:`decide` applied, and every
    IdTagInfo from the CSMS remembered. ``settings`` is read on each call, so key changes apply at once."""

    def __init__(self, db: Database, settings: Callable[[], AuthSettings], *,
                 cache_capacity: int = DEFAULT_CACHE_CAPACITY,
                 list_max_length: int = LOCAL_AUTH_LIST_MAX_LENGTH,
                 local_list: LocalAuthorizationList | None = None) -> None:
        """``local_list``: the list store, when the adapter's list feature shares its own (default: one on
        ``db`` holding at most ``list_max_length`` ids)."""
        self.cache = AuthorizationCache(db, cache_capacity)
        self.local_list = local_list if local_list is not None else LocalAuthorizationList(db, list_max_length)
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

    def lookup(self, id_token: str, now: datetime) -> tuple[IdTagInfo, AuthSource] | None:
        """What the enabled stores know of an id — the Local Authorization List first, then the Authorization
        Cache — and which store said it, or None (also when a store cannot be read: logged). E.g. an id's parent
        id, without asking the CSMS."""
        s = self._settings()
        try:
            entry = self.local_list.get(id_token) if s.local_list_enabled else None
            if entry is not None:
                return entry, AuthSource.LOCAL_LIST
            entry = self.cache.get(id_token, now) if s.cache_enabled else None
        except sqlite3.Error:
            log.exception("local authorization data unreadable; the id counts as unknown")
            return None
        return None if entry is None else (entry, AuthSource.CACHE)

    def used(self, id_token: str, decision: Decision) -> None:
        """After a decision was acted on: a cache entry that answered counts as recently used."""
        if decision.source is AuthSource.CACHE:
            try:
                self.cache.touch(id_token)
            except sqlite3.Error:
                log.exception("authorization cache: use not recorded")

    def learn(self, id_token: str, info: IdTagInfo, now: datetime) -> None:
        """An IdTagInfo from Authorize.conf, StartTransaction.conf or StopTransaction.conf (§3.5.1). Not
        stored while the cache is disabled, nor for an id on the Local Authorization List (§3.5.3). With a cache
        lifetime (2.0.1 AuthCacheCtrlr.LifeTime) the entry expires that long after now, or at the CSMS's own
        expiry if that is sooner."""
        s = self._settings()
        if not s.cache_enabled or self.local_list.get(id_token) is not None:
            return
        if s.cache_lifetime_s is not None:
            end = now + timedelta(seconds=s.cache_lifetime_s)
            if info.expiry is None or end < info.expiry:
                info = IdTagInfo(info.status, end, info.parent_id_tag)
        self.cache.put(id_token, info, now)

    def list_conflict(self, id_token: str, info: IdTagInfo, now: datetime) -> IdTagInfo | None:
        """The Local Authorization List entry that an IdTagInfo from the CSMS contradicts (:func:`list_conflict`),
        or None: the id is not listed, the list is disabled, or they agree. The list is never changed by it."""
        if not self._settings().local_list_enabled:
            return None
        entry = self.local_list.get(id_token)
        return entry if entry is not None and list_conflict(entry, info, now) else None

    def clear_cache(self) -> None:
        self.cache.clear()


__all__ = ["AuthSettings", "Authorizer", "Decision", "Verdict", "decide", "list_conflict"]
