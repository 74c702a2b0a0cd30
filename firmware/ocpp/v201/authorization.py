"""C Authorization over OCPP 2.0.1: Authorize with the id token and its type (C01), every IdTokenInfo the CSMS
sends fed into the Authorization Cache (AuthCacheCtrlr), and the offline rules of AuthCtrlr.

The decision is the version-agnostic one (:func:`firmware.charger.authorization.decide`, docs/authorization.md);
this feature turns the AuthCtrlr / AuthCacheCtrlr variables into :class:`AuthSettings` (DisableRemoteAuthorization
too: the decision then never asks the CSMS), an IdTokenInfo into the stores' form, asks the CSMS when the decision
says so, and answers the session machine whatever happens.
The Local Authorization List (D) is :mod:`firmware.ocpp.v201.local_auth_list`, owned here as the cache is: the
decision consults it while LocalAuthListCtrlr.Enabled is true, and the cache never holds a listed id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.charger.authorization import Authorizer, AuthSettings
from firmware.charger.connector import ConnectorController
from firmware.ocpp.authorize import authorize
from firmware.ocpp.rpc import handles
from firmware.ocpp.v201 import mapping
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.local_auth_list import LocalAuthList
from firmware.session import AuthorizationResult, AuthSource, RequestAuthorization
from firmware.session.id_token import IdToken
from hal.interfaces import utcnow

log = logging.getLogger(__name__)


class Authorization:
    def __init__(self, ctx: V201Context) -> None:
        self.ctx = ctx
        assert ctx.config.ocpp is not None
        self.local_list = LocalAuthList(ctx)  # its handlers are registered by the client
        self.auth = Authorizer(ctx.db, self._settings, cache_capacity=ctx.config.ocpp.authorization_cache_size,
                               local_list=self.local_list.store)

    def _settings(self) -> AuthSettings:
        v = self.ctx.variables
        return AuthSettings(local_pre_authorize=v.get_bool("AuthCtrlr", "LocalPreAuthorize"),
                            local_authorize_offline=v.get_bool("AuthCtrlr", "LocalAuthorizeOffline"),
                            allow_offline_tx_for_unknown_id=v.get_bool("AuthCtrlr", "OfflineTxForUnknownIdEnabled"),
                            cache_enabled=v.get_bool("AuthCacheCtrlr", "Enabled"),
                            local_list_enabled=self.local_list.enabled(),
                            cache_disable_post_authorize=v.get_bool("AuthCacheCtrlr", "DisablePostAuthorize"),
                            list_disable_post_authorize=v.get_bool("LocalAuthListCtrlr", "DisablePostAuthorize"),
                            cache_lifetime_s=v.get_int("AuthCacheCtrlr", "LifeTime"),
                            disable_remote_authorization=v.get_bool("AuthCtrlr", "DisableRemoteAuthorization"))

    async def authorize(self, ctrl: ConnectorController, req: RequestAuthorization) -> None:
        """Authorize an id (:func:`firmware.ocpp.authorize.authorize`): from the cache when the rules say so, else
        Authorize with the IdToken and its type — and if that gets no answer, as offline."""

        async def ask() -> tuple[AuthorizationResult, Callable[[], None]]:
            answer = await self.ctx.call("Authorize", {"idToken": mapping.id_token(req.id_token)})
            raw = answer.get("idTokenInfo") or {}
            info = mapping.id_token_info(raw)
            return (AuthorizationResult(req.id_token, info.effective_status(utcnow()), source=AuthSource.ONLINE,
                                        parent_id_token=mapping.parent_id_token_of(raw)),
                    lambda: self.learn(req.id_token, raw))

        await authorize(self.auth, ctrl, req, value=req.id_token.value,
                        online=self.ctx.cp is not None and self.ctx.online.is_set(), can_ask=self.ctx.cp is not None,
                        ask=ask)

    @handles(Action.clear_cache)
    async def _clear_cache(self, **_: Any) -> Any:
        """ClearCache (C11): Accepted once the Authorization Cache is empty; Rejected if it could not be, or while
        AuthCacheCtrlr.Enabled is false (C11.FR.04, OCTT TC_C_38_CS: there is no cache in use to clear)."""
        if not self.ctx.variables.get_bool("AuthCacheCtrlr", "Enabled"):
            log.info("ClearCache rejected: the authorization cache is disabled")
            return call_result.ClearCache(status="Rejected")
        try:
            self.auth.clear_cache()
        except Exception:
            log.exception("ClearCache failed")
            return call_result.ClearCache(status="Rejected")
        log.info("authorization cache cleared")
        return call_result.ClearCache(status="Accepted")

    def learn(self, token: IdToken | None, info: object) -> None:
        """An IdTokenInfo from the CSMS (Authorize, TransactionEvent) updates the Authorization Cache (C10). A
        storage failure costs a cache entry, never a message or a session."""
        if token is None or not isinstance(info, dict):
            return
        try:
            self.auth.learn(token.value, mapping.id_token_info(info), utcnow())
        except Exception:
            log.exception("authorization cache not updated")

