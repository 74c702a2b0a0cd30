"""B09 SetNetworkProfile, B10 migration to another CSMS and A05 upgrade of the security profile, over
OCPPCommCtrlr.NetworkConfigurationPriority and NetworkProfileConnectionAttempts, on the shared
:class:`~firmware.ocpp.security_policy.SecurityPolicy` rules 1.6 uses (SecurityCtrlr.SecurityProfile is ReadOnly in
2.0.1: a CSMS raises it through a network profile).

* Slot 0 is the commissioned connection (``[ocpp] csms_url``, ``response_timeout_s``, the current security
  profile); SetNetworkProfile fills slot 1 or 2, kept in the settings store. It is ``Rejected`` (with
  ``statusInfo``) for slot 0 or one not in NetworkConfigurationPriority's list (TC_B_43_CS), an ocppVersion other
  than OCPP20, a transport other than JSON, a URL that is no ws:// or wss:// URL with a host, a security profile
  lower than the current one or without its prerequisites (a password for 1-2, a CSMS root for 2-3, a station
  certificate for 3), and a ``vpn`` or an ``apn``: this station configures no VPN client and no modem (the
  operating system's network does), so it says so instead of accepting what it would not apply. ``ocppInterface``
  is kept, not applied (the operating system routes).
* The URL may name another CSMS (B10's migration): what keeps a wrong URL from cutting the station off is the
  fallback, not a rule on the URL. The slots tried are NetworkConfigurationPriority's, in its order, then slot 0
  when the list does not name it — the commissioned connection stays the last resort. After
  NetworkProfileConnectionAttempts failed attempts in a row with a slot the next one is taken (cyclically); at each
  start the first again. A slot's ocppCsmsUrl (its scheme following the profile) and messageTimeout (how long a
  CALL waits for its answer on that connection, OCPPCommCtrlr.MessageTimeout) apply while it is the active one,
  OCPPCommCtrlr.ActiveNetworkProfile says which.
* Security profile (A05): taking a slot with a higher profile raises SecurityCtrlr.SecurityProfile through the
  policy (its prerequisites checked again); until a connection with it is accepted, the same failed attempts put
  the previous profile back (the shared fallback, 1.6 TC_083) as the next slot is taken. A slot with a profile
  lower than the current one is skipped (never a downgrade); slot 0 uses the current profile.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from ocpp.charge_point import snake_to_camel_case
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.ocpp.v201.security import Security
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

COMPONENT = "OCPPCommCtrlr"
PRIORITY = VariableKey(COMPONENT, "NetworkConfigurationPriority")
ATTEMPTS = VariableKey(COMPONENT, "NetworkProfileConnectionAttempts")
_SLOT = "v201.network_profile.slot.{}"  # an accepted SetNetworkProfile's connectionData, as JSON


def url_problem(url: str) -> str | None:
    """Why ``url`` is no CSMS URL this station can connect to (a ws:// or wss:// URL with a host), or None."""
    try:
        u = urlsplit(url)
        u.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return f"ocppCsmsUrl {url[:100]!r}: not a URL"
    if u.scheme not in ("ws", "wss") or not u.hostname:
        return f"ocppCsmsUrl {url[:100]!r}: a ws:// or wss:// URL with a host"
    return None


class NetworkProfiles:
    def __init__(self, ctx: V201Context, security: Security) -> None:
        self.ctx = ctx
        self.security = security
        self._settings = Settings(ctx.db)
        self._failed = 0  # failed attempts in a row with the active slot
        self._order = self._slots_to_try()
        self._index = 0
        self.active = "0"
        security.csms_url = self._csms_url
        ctx.variables.provide(VariableKey(COMPONENT, "ActiveNetworkProfile"), lambda: self.active)
        self._take(0)

    # --- SetNetworkProfile --------------------------------------------------------------------------

    def _slots(self) -> tuple[str, ...]:
        return self.ctx.variables.definitions[PRIORITY].values_list

    def _problem(self, slot: int, data: dict[str, Any]) -> str | None:
        if slot == 0 or str(slot) not in self._slots():
            return f"slot {slot}: the slots are {','.join(self._slots()[1:])} (0 is the commissioned connection)"
        if data.get("ocppVersion") != "OCPP20" or data.get("ocppTransport") != "JSON":
            return "only OCPP20 over JSON"
        for unsupported in ("vpn", "apn"):
            if data.get(unsupported) is not None:
                return f"{unsupported}: this station configures no VPN client or modem (its network is the system's)"
        problem = url_problem(str(data.get("ocppCsmsUrl", "")))
        if problem is not None:
            return problem
        profile = data.get("securityProfile")
        if not isinstance(profile, int) or not 0 <= profile <= 3:
            return "securityProfile is 0 to 3"
        if profile < self.security.profile:
            return f"security profile {profile} is lower than the current {self.security.profile}"
        missing = self.security.missing_for(profile)
        if missing is not None:
            return f"security profile {profile}: {missing}"
        return None

    @handles(Action.set_network_profile)
    async def _set_network_profile(self, configuration_slot: int, connection_data: dict[str, Any], **_: Any) -> Any:
        data = snake_to_camel_case(connection_data)
        problem = self._problem(configuration_slot, data)
        if problem is not None:
            log.warning("SetNetworkProfile rejected", extra={"slot": configuration_slot, "reason": problem})
            return call_result.SetNetworkProfile(status="Rejected", status_info={
                "reasonCode": "InvalidNetworkConf", "additionalInfo": problem[:512]})
        self._settings.put(_SLOT.format(configuration_slot), json.dumps(data, sort_keys=True))
        log.info("network profile stored", extra={"slot": configuration_slot, "url": data["ocppCsmsUrl"],
                                                  "security_profile": data["securityProfile"]})
        return call_result.SetNetworkProfile(status="Accepted")

    # --- the active slot and its fallback -----------------------------------------------------------

    def _slots_to_try(self) -> list[str]:
        """NetworkConfigurationPriority's slots that hold a profile (0 always does), then 0 if it is not listed.
        Read once at start: the variable is RebootRequired."""
        listed = self.ctx.variables.get_list(PRIORITY.component, PRIORITY.variable)
        order = [s for s in dict.fromkeys(listed) if s == "0" or self._settings.get(_SLOT.format(s)) is not None]
        return order if "0" in order else [*order, "0"]

    def _data(self, slot: str) -> dict[str, Any] | None:
        raw = self._settings.get(_SLOT.format(slot)) if slot != "0" else None
        return None if raw is None else dict(json.loads(raw))

    def _csms_url(self) -> str | None:
        data = self._data(self.active)
        return None if data is None else str(data["ocppCsmsUrl"])

    def _take(self, index: int) -> None:
        """Make ``_order[index]`` the active slot or, when its profile is lower than the current one, the next
        that is not (slot 0 always qualifies)."""
        for step in range(len(self._order)):
            slot = self._order[(index + step) % len(self._order)]
            data = self._data(slot)
            wanted = None if data is None else int(data["securityProfile"])
            current = self.security.profile
            if wanted is not None and wanted < current:
                log.info("network profile skipped: lower security profile", extra={
                    "slot": slot, "security_profile": wanted, "current": current})
                continue
            if wanted is not None and wanted > current:
                if not self.security.may_raise_profile(current, wanted):
                    continue  # its prerequisites are gone (a root deleted since)
                self.security.values.store_profile(wanted)
                log.info("security profile raised by network profile", extra={
                    "slot": slot, "from": current, "to": wanted})
                self.security.events.report("ReconfigurationOfSecurityParameters",
                                            f"SecurityProfile {current} -> {wanted} (network profile slot {slot})")
            self._index, self.active, self._failed = (index + step) % len(self._order), slot, 0
            self.ctx.message_timeout_s = None if data is None else float(data["messageTimeout"])
            log.info("network profile active", extra={"slot": slot, "url": self._csms_url() or "commissioned"})
            return

    def attempt_failed(self, exc: BaseException) -> None:
        """The link's failed attempt: the security policy's event and profile fallback, then this slot's count."""
        self.security.attempt_failed(exc)
        self._failed += 1
        if len(self._order) > 1 and self._failed >= max(1, self.ctx.variables.get_int(
                ATTEMPTS.component, ATTEMPTS.variable)):
            log.warning("network profile cannot connect; next one", extra={"slot": self.active,
                                                                           "attempts": self._failed})
            self._take(self._index + 1)

    def accepted(self) -> None:
        self._failed = 0
