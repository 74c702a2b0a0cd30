"""Security profiles 1-3 and the Basic-auth key (OCPP 1.6 security whitepaper, edition 3; OCPP 2.0.1 block A):
what each connection attempt of the link uses, the rules for changing the profile and the key, and the events of
failed handshakes. Version-agnostic: an adapter keeps the two values in its own store (1.6: the keys
SecurityProfile and AuthorizationKey; 2.0.1: SecurityCtrlr.SecurityProfile and BasicAuthPassword) behind
:class:`SecurityValues`, and routes the CSMS's changes to :meth:`SecurityPolicy.may_raise_profile`,
:meth:`~SecurityPolicy.may_change_key` and :meth:`~SecurityPolicy.changed`.

* **The profile** (0..3): 0 = none (the URL as configured), 1 = ws:// + HTTP Basic auth, 2 = wss:// + Basic auth +
  the CSMS's certificate checked against the installed CSMS root(s) and the host name, 3 = wss:// + the charge
  point's client certificate. The scheme follows the profile. It may only be raised (1.6 TC_084: a lower value is
  Rejected), and only when the new profile's prerequisites are installed (a key for 1-2, a CSMS root for 2-3, a
  charge point certificate for 3). On a raise the agent reconnects with the new profile at once; until a
  connection with it has been accepted (BootNotification), :data:`FALLBACK_AFTER` failed attempts (2.0.1:
  NetworkProfileConnectionAttempts) put the previous profile back (TC_083: never a downgrade by OCPP, but never
  cut off either). A profile that has connected is kept.
* **The key**: write-only (never read back, never logged), 16..40 printable characters; the Basic-auth password it
  becomes follows OCTT TC_085 (:mod:`firmware.security.authorization_key`). A new key reconnects at once with it
  (1.6 TC_073) where the profile uses Basic auth.

Commissioning (``[ocpp] security_profile``, ``password``) sets both when the configuration file's values change,
so a technician on site may set any profile; the CSMS only ever raises it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from firmware.config import AgentConfig
from firmware.ocpp import security_profile
from firmware.ocpp.link import LinkSettings
from firmware.ocpp.security_events import SecurityEvents
from firmware.security import tls
from firmware.security.authorization_key import is_valid_authorization_key
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials
from firmware.storage import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

PROFILE = "SecurityProfile"
#: Failed attempts with a newly raised profile, never yet accepted, before the previous one is put back.
FALLBACK_AFTER = 3
_COMMISSIONED = "security.commissioned"  # fingerprint of the configuration file's security settings
_FALLBACK = "security.fallback_profile"  # the profile before a raise not yet confirmed by a connection ("": none)


class SecurityValues(Protocol):
    """Where an adapter keeps the profile and the key; ``store_*`` are the agent's own writes (commissioning, a
    fallback), without the checks and listeners a change by the CSMS goes through."""

    def profile(self) -> int: ...

    def key(self) -> str: ...

    def store_profile(self, profile: int) -> None: ...

    def store_key(self, key: str) -> None: ...


class SecurityPolicy:
    """The link's settings per attempt, the profile's and the key's rules, and the events of failed handshakes."""

    def __init__(self, config: AgentConfig, db: Database, values: SecurityValues, events: SecurityEvents,
                 store: CertificateStore, credentials: ChargePointCredentials, *, key_name: str,
                 key_valid: Callable[[str], bool] = is_valid_authorization_key, hex_rule: bool = True,
                 fallback_after: Callable[[], int] = lambda: FALLBACK_AFTER) -> None:
        """``key_name``: what the version calls the key (AuthorizationKey, BasicAuthPassword), for the events;
        ``key_valid``: the version's rule for a new key; ``hex_rule``: how the key becomes the Basic-auth password
        (:func:`~firmware.security.authorization_key.basic_auth_password`: 1.6 TC_085; 2.0.1 as text);
        ``fallback_after``: the failed attempts with a raised profile before the previous one is put back (1.6:
        :data:`FALLBACK_AFTER`; 2.0.1: OCPPCommCtrlr.NetworkProfileConnectionAttempts), read at each failure."""
        assert config.ocpp is not None
        self.config = config
        self.values = values
        self.events = events
        self.store = store
        self.credentials = credentials
        self.key_name = key_name
        self._key_valid = key_valid
        self._hex_rule = hex_rule
        self._fallback_after = fallback_after
        self._settings = Settings(db)
        self.reconnect: Callable[[], Awaitable[None]] | None = None  # the link's, set by the client
        #: the CSMS each attempt connects to (2.0.1: the active network profile's; None: ``[ocpp] csms_url``)
        self.csms_url: Callable[[], str | None] = lambda: None
        self._reconnect_pending = False
        self._failed_with_new_profile = 0
        self._previous: dict[str, str] = {}  # each value before the change under way
        self._commission()

    # --- commissioning ----------------------------------------------------------------------------

    def _commission(self) -> None:
        o = self.config.ocpp
        assert o is not None
        fingerprint = hashlib.sha256(
            f"{o.security_profile}\0{o.password or ''}\0{o.csms_url}".encode()).hexdigest()
        if self._settings.get(_COMMISSIONED) == fingerprint:
            return
        self.values.store_profile(o.security_profile)
        self.values.store_key(o.password or "")
        self._settings.put(_FALLBACK, "")
        self._settings.put(_COMMISSIONED, fingerprint)
        log.info("security settings commissioned", extra={"security_profile": o.security_profile})

    @property
    def profile(self) -> int:
        return self.values.profile()

    # --- prerequisites and changes by the CSMS --------------------------------------------------

    def missing_for(self, profile: int) -> str | None:
        """What profile ``profile`` lacks on this charge point, or ``None``."""
        if profile in (1, 2) and not self.values.key():
            return f"no {self.key_name}"
        if profile >= 2 and not self.store.csms_roots_pem():
            return "no CSMS root certificate installed"
        if profile == 3 and self.credentials.files() is None:
            return "no charge point certificate"
        return None

    def may_change_key(self, current: str, new: str) -> bool:
        self._previous[self.key_name] = current
        return self._key_valid(new)

    def may_raise_profile(self, current: int, wanted: int) -> bool:
        self._previous[PROFILE] = str(current)
        if wanted < current:
            log.warning("security profile downgrade refused", extra={"current": current, "requested": wanted})
            return False
        missing = self.missing_for(wanted)
        if missing is not None:
            log.warning("security profile raise refused", extra={"current": current, "requested": wanted,
                                                                 "missing": missing})
            return False
        if wanted > current:
            self._settings.put(_FALLBACK, str(current))
            self._failed_with_new_profile = 0
        return True

    def changed(self, name: str, value: str) -> None:
        """The CSMS changed the profile (``name`` :data:`PROFILE`) or the key (``key_name``), after its check."""
        if self._previous.pop(name, None) == value:
            return  # the same value again: nothing to reconnect for
        # a new key matters to the connection only where it is the Basic-auth password (profiles 1 and 2)
        self._reconnect_pending = name == PROFILE or self.profile in (1, 2)
        self.events.report("ReconfigurationOfSecurityParameters", f"{name} changed by the CSMS")

    async def reconnect_if_pending(self) -> None:
        """After the answer that accepted a change has gone out on the old connection."""
        if self._reconnect_pending and self.reconnect is not None:
            self._reconnect_pending = False
            await self.reconnect()

    # --- the link ---------------------------------------------------------------------------------

    def link_settings(self) -> LinkSettings:
        """What the next connection attempt uses: the current profile's scheme, key and TLS context."""
        assert self.config.ocpp is not None
        return security_profile.link_settings(self.config.ocpp, self.profile, self.values.key(), self.store,
                                              self.credentials.files(), hex_rule=self._hex_rule,
                                              url=self.csms_url())

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
            if self._failed_with_new_profile >= max(1, self._fallback_after()):
                log.warning("security profile cannot connect; falling back", extra={
                    "profile": self.profile, "fallback": int(previous), "attempts": self._failed_with_new_profile})
                self.values.store_profile(int(previous))
                self._settings.put(_FALLBACK, "")
                self._failed_with_new_profile = 0
                self.events.report("ReconfigurationOfSecurityParameters",
                                   f"SecurityProfile back to {previous}: the new profile could not connect")

    def report(self) -> dict[str, object]:
        """For the Diagnostics DataTransfer: the profile and the certificates, never the key."""
        cert = self.credentials.current()
        return {
            "securityProfile": self.profile,
            "authorizationKeySet": bool(self.values.key()),
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
