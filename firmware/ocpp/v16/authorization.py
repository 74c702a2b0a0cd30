"""Authorization over OCPP 1.6 (§3.5, §4.1, §5.4): Authorize.req when the local rules ask the CSMS, every
IdTagInfo the CSMS sends fed into the Authorization Cache (and checked against the Local Authorization List),
ClearCache, and the keys that steer it all — but the list's own keys, which are
:mod:`~firmware.ocpp.v16.local_auth_list`'s.

The decision itself is version-agnostic and pure (:func:`firmware.charger.authorization.decide`,
docs/authorization.md), the stores are :mod:`firmware.storage.auth_stores`; this feature turns the 1.6 keys into
:class:`AuthSettings` and IdTagInfo objects into the stores' form (:func:`mapping.id_tag_info`), asks the CSMS when
the decision says so, and answers the session machine whatever happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.charger.authorization import Authorizer, AuthSettings
from firmware.charger.connector import ConnectorController
from firmware.ocpp.authorize import authorize
from firmware.ocpp.rpc import handles
from firmware.ocpp.v16 import mapping
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.ocpp.v16.local_auth_list import LocalAuthList
from firmware.session import AuthorizationResult, AuthPurpose, AuthSource, RequestAuthorization
from firmware.storage.auth_stores import IdTagInfo
from hal.interfaces import utcnow

log = logging.getLogger(__name__)

KEYS = (
    KeyDefinition("AllowOfflineTxForUnknownId", KeyType.BOOL, "false"),
    KeyDefinition("AuthorizationCacheEnabled", KeyType.BOOL, "true"),
    KeyDefinition("LocalAuthorizeOffline", KeyType.BOOL, "true"),
    KeyDefinition("LocalPreAuthorize", KeyType.BOOL, "false"),
)


class Authorization:
    def __init__(self, ctx: V16Context, local_list: LocalAuthList) -> None:
        """``local_list``: the Local Auth List Management feature — its store, whether it is enabled, and
        where a LocalListConflict is reported."""
        self.ctx = ctx
        self.local_list = local_list
        assert ctx.config.ocpp is not None
        self.auth = Authorizer(ctx.db, self._settings, cache_capacity=ctx.config.ocpp.authorization_cache_size,
                               local_list=local_list.store)
        ctx.keys.on_change(self._changed, {"AuthorizationCacheEnabled"})

    def _settings(self) -> AuthSettings:
        k = self.ctx.keys
        return AuthSettings(local_pre_authorize=k.get_bool("LocalPreAuthorize"),
                            local_authorize_offline=k.get_bool("LocalAuthorizeOffline"),
                            allow_offline_tx_for_unknown_id=k.get_bool("AllowOfflineTxForUnknownId"),
                            cache_enabled=k.get_bool("AuthorizationCacheEnabled"),
                            local_list_enabled=self.local_list.enabled())

    def _changed(self, key: str, value: str) -> None:
        if value == "false":  # off means off: no entries left behind that nobody updates until it is on again
            self.clear_cache()

    async def authorize(self, ctrl: ConnectorController, req: RequestAuthorization) -> None:
        """Authorize an id (docs/authorization.md, :func:`firmware.ocpp.authorize.authorize`): from the Local
        Authorization List or the Authorization Cache when the rules say so, else Authorize.req — and if that gets
        no answer, as offline."""
        id_tag = req.id_token.value  # 1.6 knows the string alone
        if req.group is not None and await self._outside_group(ctrl, req):
            return

        async def ask() -> tuple[AuthorizationResult, Callable[[], None]]:
            answer = await self.ctx.call("Authorize", {"idTag": id_tag})
            info = mapping.id_tag_info(answer.get("idTagInfo") or {})
            status = info.effective_status(utcnow())
            if req.purpose is AuthPurpose.REMOTE_START:
                log.info("remote start authorized", extra={"connector": ctrl.id, "status": status.value})
            return (AuthorizationResult(req.id_token, status, source=AuthSource.ONLINE,
                                        parent_id_token=mapping.parent_id_token(info.parent_id_tag)),
                    lambda: self.learn(id_tag, info))

        await authorize(self.auth, ctrl, req, value=id_tag, online=self.ctx.cp is not None and self.ctx.online.is_set(),
                        can_ask=self.ctx.cp is not None, ask=ask)

    async def _outside_group(self, ctrl: ConnectorController, req: RequestAuthorization) -> bool:
        """A card at a connector reserved for a group (``req.group``): when the Local Authorization List or the
        Authorization Cache already names the card's parent id, and it is another group, the machine is answered
        from there — the CSMS is not asked about a card that may not use the connector anyway (OCTT TC_046_1,
        MicroOcpp #430). Returns whether it answered."""
        assert req.group is not None
        now = utcnow()
        known = self.auth.lookup(req.id_token.value, now)
        if known is None:
            return False
        info, source = known
        parent = mapping.parent_id_token(info.parent_id_tag)
        if req.group.matches(parent):
            return False  # a member: authorized as usual (the CSMS may know better about its status)
        log.info("card of another group at a reserved connector: answered locally",
                 extra={"connector": ctrl.id, "source": source.value})
        await ctrl.handle(AuthorizationResult(req.id_token, info.effective_status(now), parent_id_token=parent,
                                              source=source))
        return True

    def learn(self, id_tag: object, info: IdTagInfo | object) -> None:
        """Every IdTagInfo from the CSMS (Authorize.conf, StartTransaction.conf, StopTransaction.conf) updates
        the Authorization Cache (§3.5.1) — unless the id is on the Local Authorization List, which it never
        changes; if it contradicts the list, LocalListConflict is reported (§3.5.2). A storage failure costs a
        cache entry or the report, never a message or a session. ``info`` may be the wire object; an answer
        without one (StopTransaction.conf) changes nothing."""
        if not isinstance(id_tag, str):
            return
        if isinstance(info, dict):
            info = mapping.id_tag_info(info)
        if not isinstance(info, IdTagInfo):
            return
        now = utcnow()
        try:
            listed = self.auth.list_conflict(id_tag, info, now)
            if listed is not None:
                self.local_list.conflict(id_tag, listed, info)
        except Exception:
            log.exception("local authorization list not compared with the CSMS's answer")
        try:
            self.auth.learn(id_tag, info, now)
        except Exception:
            log.exception("authorization cache not updated")

    @handles(Action.clear_cache)
    async def _clear_cache(self, **_: Any) -> Any:
        return call_result.ClearCache(status=self.clear_cache())

    def clear_cache(self) -> str:
        """ClearCache (§5.4): Accepted once the Authorization Cache is empty, Rejected if it could not be."""
        try:
            self.auth.clear_cache()
        except Exception:
            log.exception("ClearCache failed")
            return "Rejected"
        log.info("authorization cache cleared")
        return "Accepted"
