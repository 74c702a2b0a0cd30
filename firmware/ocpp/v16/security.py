"""SecurityProfile and AuthorizationKey over OCPP 1.6 (security whitepaper, edition 3): the two keys, their rules
and the reconnect after a change, on the version-agnostic :class:`~firmware.ocpp.security_policy.SecurityPolicy`
(what each connection attempt uses, the prerequisites of a profile, the fallback, the events of failed handshakes).

* **SecurityProfile** (0..3): the CSMS may only raise it, and only with the new profile's prerequisites (TC_083,
  TC_084); on Accepted the agent reconnects with it, falling back if it never connects.
* **AuthorizationKey**: write-only (never in GetConfiguration, never logged), 16..40 printable characters; a new key
  reconnects at once with it (TC_073); the Basic-auth password it becomes follows OCTT TC_085.
"""

from __future__ import annotations

from typing import Any

from ocpp.v16.enums import Action

from firmware.ocpp.rpc import after_answering
from firmware.ocpp.security_events import SecurityEvents
from firmware.ocpp.security_policy import SecurityPolicy
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.security.authorization_key import MAX_LENGTH
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials

KEYS = (
    KeyDefinition("AuthorizationKey", KeyType.STRING, "", secret=True, maximum=MAX_LENGTH),
    KeyDefinition("SecurityProfile", KeyType.INT, "0", minimum=0, maximum=3),
)


class _Keys:
    """The policy's two values as 1.6 configuration keys."""

    def __init__(self, ctx: V16Context) -> None:
        self.keys = ctx.keys

    def profile(self) -> int:
        return self.keys.get_int("SecurityProfile")

    def key(self) -> str:
        return self.keys.get_str("AuthorizationKey")

    def store_profile(self, profile: int) -> None:
        self.keys.set_local("SecurityProfile", str(profile))

    def store_key(self, key: str) -> None:
        self.keys.set_local("AuthorizationKey", key)


class Security(SecurityPolicy):
    """The shared policy, its values in the 1.6 keys, changed by ChangeConfiguration."""

    def __init__(self, ctx: V16Context, events: SecurityEvents, store: CertificateStore,
                 credentials: ChargePointCredentials) -> None:
        super().__init__(ctx.config, ctx.db, _Keys(ctx), events, store, credentials, key_name="AuthorizationKey")
        ctx.keys.add_guard("SecurityProfile", lambda current, new: self.may_raise_profile(int(current), int(new)))
        ctx.keys.add_guard("AuthorizationKey", self.may_change_key)
        ctx.keys.on_change(self.changed, ("SecurityProfile", "AuthorizationKey"))

    @after_answering(Action.change_configuration)
    async def _after_change(self, **_: Any) -> None:
        """Reconnect once the Accepted has gone out on the old connection (TC_073, TC_083)."""
        await self.reconnect_if_pending()
