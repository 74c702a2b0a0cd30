"""Security profiles 1-3 and the AuthorizationKey (OCPP 1.6 security whitepaper, edition 3): what each connection
attempt of the link uses, and the two keys the CSMS may change.

* **SecurityProfile** (0..3): 0 = none (the URL as configured), 1 = ws:// + HTTP Basic auth, 2 = wss:// + Basic
  auth + the CSMS's certificate checked against the installed CentralSystemRootCertificate(s) and the host name,
  3 = wss:// + the charge point's client certificate. The scheme follows the profile. The CSMS may only raise it
  (TC_084: a lower value is Rejected), and only when the new profile's prerequisites are installed (a key for
  1-2, a CSMS root for 2-3, a charge point certificate for 3). On Accepted the agent reconnects with the new
  profile at once; until a connection with it has been accepted (BootNotification), :data:`FALLBACK_AFTER`
  failed attempts put the previous profile back (TC_083: never a downgrade by OCPP, but never cut off either).
  A profile that has connected is kept: later failures do not fall back.
* **AuthorizationKey**: write-only (never in GetConfiguration, never logged), 16..40 printable characters; the
  Basic-auth password it becomes follows OCTT TC_085 (:mod:`firmware.security.authorization_key`). A new key
  reconnects at once with it (TC_073).

Commissioning (``[ocpp] security_profile``, ``password``) sets both when the configuration file's values change,
so a technician on site may set any profile; the CSMS only ever raises it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ocpp.v16.enums import Action

from firmware.ocpp import security_profile
from firmware.ocpp.link import LinkSettings
from firmware.ocpp.rpc import after_answering
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.ocpp.v16.security_events import SecurityEvents
from firmware.security import tls
from firmware.security.authorization_key import MAX_LENGTH, is_valid_authorization_key
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

KEYS = (
    KeyDefinition("AuthorizationKey", KeyType.STRING, "", secret=True, maximum=MAX_LENGTH),
    KeyDefinition("SecurityProfile", KeyType.INT, "0", minimum=0, maximum=3),
)

#: Failed attempts with a newly raised profile, never yet accepted, before the previous one is put back.
FALLBACK_AFTER = 3
_COMMISSIONED = "security.commissioned"  # fingerprint of the configuration file's security settings
_FALLBACK = "security.fallback_profile"  # the profile before a raise not yet confirmed by a connection ("": none)


class Security:
    """The link's settings per attempt, the security keys' rules, and the events of failed handshakes."""

    def __init__(self, ctx: V16Context, events: SecurityEvents, store: CertificateStore,
                 credentials: ChargePointCredentials) -> None:
        self.ctx = ctx
        self.events = events
        self.store = store
        self.credentials = credentials
        self._settings = Settings(ctx.db)
        self.reconnect: Callable[[], Awaitable[None]] | None = None  # the link's, set by the client
        self._reconnect_pending = False
        self._failed_with_new_profile = 0
        self._commission()
        ctx.keys.add_guard("SecurityProfile", self._may_raise_profile)
        ctx.keys.add_guard("AuthorizationKey", self._may_change_key)
        self._previous: dict[str, str] = {}  # each key's value before the change under way
        ctx.keys.on_change(self._changed, ("SecurityProfile", "AuthorizationKey"))

    # --- commissioning ----------------------------------------------------------------------------

    def _commission(self) -> None:
        o = self.ctx.config.ocpp
        assert o is not None
        fingerprint = hashlib.sha256(
            f"{o.security_profile}\0{o.password or ''}\0{o.csms_url}".encode()).hexdigest()
        if self._settings.get(_COMMISSIONED) == fingerprint:
            return
        keys = self.ctx.keys
        keys.set_local("SecurityProfile", str(o.security_profile))
        keys.set_local("AuthorizationKey", o.password or "")
        self._settings.put(_FALLBACK, "")
        self._settings.put(_COMMISSIONED, fingerprint)
        log.info("security settings commissioned", extra={"security_profile": o.security_profile})

    @property
    def profile(self) -> int:
        return self.ctx.keys.get_int("SecurityProfile")

    # --- prerequisites ----------------------------------------------------------------------------

    def missing_for(self, profile: int) -> str | None:
        """What profile ``profile`` lacks on this charge point, or ``None``."""
        if profile in (1, 2) and not self.ctx.keys.get_str("AuthorizationKey"):
            return "no AuthorizationKey"
        if profile >= 2 and not self.store.csms_roots_pem():
            return "no CentralSystemRootCertificate installed"
        if profile == 3 and self.credentials.files() is None:
            return "no charge point certificate"
        return None

    def _may_change_key(self, current: str, new: str) -> bool:
        self._previous["AuthorizationKey"] = current
        return is_valid_authorization_key(new)

    def _may_raise_profile(self, current: str, new: str) -> bool:
        self._previous["SecurityProfile"] = current
        now, wanted = int(current), int(new)
        if wanted < now:
            log.warning("security profile downgrade refused", extra={"current": now, "requested": wanted})
            return False
        missing = self.missing_for(wanted)
        if missing is not None:
            log.warning("security profile raise refused", extra={"current": now, "requested": wanted,
                                                                 "missing": missing})
            return False
        if wanted > now:
            self._settings.put(_FALLBACK, str(now))
            self._failed_with_new_profile = 0
        return True

    def _changed(self, key: str, value: str) -> None:
        if self._previous.pop(key, None) == value:
            return  # the same value again: nothing to reconnect for
        # a new key matters to the connection only where it is the Basic-auth password (profiles 1 and 2)
        self._reconnect_pending = key == "SecurityProfile" or self.profile in (1, 2)
        self.events.report("ReconfigurationOfSecurityParameters", f"{key} changed by the CSMS")

    @after_answering(Action.change_configuration)
    async def _after_change(self, **_: Any) -> None:
        """Reconnect once the Accepted has gone out on the old connection (TC_073, TC_083)."""
        if self._reconnect_pending and self.reconnect is not None:
            self._reconnect_pending = False
            await self.reconnect()

    # --- the link ---------------------------------------------------------------------------------

    def link_settings(self) -> LinkSettings:
        """What the next connection attempt uses: the current profile's scheme, key and TLS context."""
        assert self.ctx.config.ocpp is not None
        return security_profile.link_settings(self.ctx.config.ocpp, self.profile,
                                              self.ctx.keys.get_str("AuthorizationKey"), self.store,
                                              self.credentials.files())

    def attempt_failed(self, exc: BaseException) -> None:
        """A connection attempt failed: its security event, and the fallback of a profile never confirmed."""
        failure = tls.classify_failure(exc, over_tls=self.profile >= 2)
        if failure is not None and failure.event is not None:
            self.events.report(failure.event, failure.detail)
        elif failure is not None and failure.client_certificate_refused:
            # no whitepaper event names this (the CSMS logs it); the security log keeps it for the technician
            log.warning("CSMS refused the charge point certificate", extra={"reason": failure.detail})
            self.events.log.write("ChargePointCertificateRefused", datetime.now(UTC), failure.detail, sent=False)
        elif getattr(getattr(exc, "response", None), "status_code", None) == 401:
            self.events.report("FailedToAuthenticateAtCentralSystem", "HTTP 401")
        previous = self._settings.get(_FALLBACK)
        if previous:
            self._failed_with_new_profile += 1
            if self._failed_with_new_profile >= FALLBACK_AFTER:
                log.warning("security profile cannot connect; falling back", extra={
                    "profile": self.profile, "fallback": int(previous), "attempts": self._failed_with_new_profile})
                self.ctx.keys.set_local("SecurityProfile", previous)
                self._settings.put(_FALLBACK, "")
                self._failed_with_new_profile = 0
                self.events.report("ReconfigurationOfSecurityParameters",
                                   f"SecurityProfile back to {previous}: the new profile could not connect")

    def report(self) -> dict[str, object]:
        """For the Diagnostics DataTransfer: the profile and the certificates, never the key."""
        cert = self.credentials.current()
        return {
            "securityProfile": self.profile,
            "authorizationKeySet": bool(self.ctx.keys.get_str("AuthorizationKey")),
            "fallbackProfile": int(fallback) if (fallback := self._settings.get(_FALLBACK)) else None,
            "csmsRootCertificates": len(self.store.ids("CentralSystemRootCertificate")),
            "chargePointCertificateNotAfter": cert.not_valid_after_utc.isoformat() if cert is not None else None,
            "securityEventsNotQueued": self.events.not_queued,
        }

    def accepted(self) -> None:
        """A connection with the current profile was accepted: a raised profile is confirmed."""
        if self._settings.get(_FALLBACK):
            self._settings.put(_FALLBACK, "")
            log.info("security profile confirmed by a connection", extra={"profile": self.profile})
        self._failed_with_new_profile = 0
