"""A05 Upgrade Charging Station Security Profile, over B09 SetNetworkProfile and
OCPPCommCtrlr.NetworkConfigurationPriority: how a 2.0.1 CSMS raises the security profile (SecurityCtrlr.SecurityProfile
is ReadOnly in 2.0.1), on the shared :class:`~firmware.ocpp.security_policy.SecurityPolicy` rules 1.6's
ChangeConfiguration SecurityProfile uses.

* Slot 0 is the commissioned connection (``[ocpp] csms_url``, ``security_profile``); SetNetworkProfile fills slot 1
  or 2. It is ``Rejected`` (with ``statusInfo``) for slot 0 or one not in NetworkConfigurationPriority's list, an
  ocppVersion other than OCPP20, a transport other than JSON, a security profile lower than the current one or
  without its prerequisites (a password for 1-2, a CSMS root for 2-3, a station certificate for 3), and a URL of
  another CSMS than the commissioned one (the scheme aside: it follows the profile) — this station connects to one
  CSMS. Accepted slots are kept in the settings store.
* NetworkConfigurationPriority (SequenceList of slots, RebootRequired): at the next start the first slot's security
  profile is taken, once per slot content: the profile is raised and the station connects with it; if it cannot
  connect before a connection with it was accepted, the previous profile is put back after 3 attempts (the shared
  fallback, 1.6 TC_083; OCPPCommCtrlr.NetworkProfileConnectionAttempts says so, ReadOnly) and the same slot
  content is not tried again (a SetNetworkProfile with other values, or
  another slot first in the priority, is).
* The slot's messageTimeout, ocppInterface, vpn and apn are kept, not applied.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from ocpp.charge_point import snake_to_camel_case
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.security_policy import FALLBACK_AFTER
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.ocpp.v201.security import Security
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

PRIORITY = VariableKey("OCPPCommCtrlr", "NetworkConfigurationPriority")
_SLOT = "v201.network_profile.slot.{}"  # an accepted SetNetworkProfile's connectionData, as JSON
_APPLIED = "v201.network_profile.applied"  # fingerprint of the slot whose profile was last taken at a start


def _same_csms(a: str, b: str) -> bool:
    """The same host, port and path. The scheme follows the security profile and the link keeps the rest of the
    URL, so a port is the same when both URLs name it or both leave it to their scheme's default. A URL that is
    not one (no host, a port that is no number) names no CSMS."""
    def where(url: str) -> tuple[str | None, int | None, str] | None:
        u = urlsplit(url)
        try:
            port = None if u.port == {"ws": 80, "wss": 443}.get(u.scheme) else u.port
        except ValueError:
            return None
        return (u.hostname, port, u.path.rstrip("/")) if u.hostname else None
    x = where(a)
    return x is not None and x == where(b)


class NetworkProfiles:
    def __init__(self, ctx: V201Context, security: Security) -> None:
        self.ctx = ctx
        self.security = security
        self._settings = Settings(ctx.db)
        # Part 2 "General": the attempts with a new profile before the shared policy falls back — fixed there
        ctx.variables.fix("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", str(FALLBACK_AFTER))
        self._take_priority_slot()

    def _slots(self) -> tuple[str, ...]:
        return self.ctx.variables.definitions[PRIORITY].values_list

    def _problem(self, slot: int, data: dict[str, Any]) -> str | None:
        if slot == 0 or str(slot) not in self._slots():
            return f"slot {slot}: the slots are {','.join(self._slots()[1:])} (0 is the commissioned connection)"
        if data.get("ocppVersion") != "OCPP20" or data.get("ocppTransport") != "JSON":
            return "only OCPP20 over JSON"
        profile = data.get("securityProfile")
        if not isinstance(profile, int) or not 0 <= profile <= 3:
            return "securityProfile is 0 to 3"
        if profile < self.security.profile:
            return f"security profile {profile} is lower than the current {self.security.profile}"
        missing = self.security.missing_for(profile)
        if missing is not None:
            return f"security profile {profile}: {missing}"
        assert self.ctx.config.ocpp is not None
        if not _same_csms(str(data.get("ocppCsmsUrl", "")), self.ctx.config.ocpp.csms_url):
            return "another CSMS than the commissioned one"
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
        log.info("network profile stored", extra={"slot": configuration_slot,
                                                  "security_profile": data["securityProfile"]})
        return call_result.SetNetworkProfile(status="Accepted")

    def _take_priority_slot(self) -> None:
        """At start: the security profile of the first slot of NetworkConfigurationPriority, once per slot."""
        priority = self.ctx.variables.get_list(PRIORITY.component, PRIORITY.variable)
        first = priority[0] if priority else "0"
        raw = self._settings.get(_SLOT.format(first)) if first != "0" else None
        if raw is None:
            return
        fingerprint = hashlib.sha256(f"{first}\0{raw}".encode()).hexdigest()
        if self._settings.get(_APPLIED) == fingerprint:
            return  # taken at an earlier start: kept, or fallen back from
        self._settings.put(_APPLIED, fingerprint)
        wanted, current = int(json.loads(raw)["securityProfile"]), self.security.profile
        if wanted == current or not self.security.may_raise_profile(current, wanted):
            return
        self.security.values.store_profile(wanted)
        log.info("security profile raised by network profile", extra={"slot": first, "from": current, "to": wanted})
        self.security.events.report("ReconfigurationOfSecurityParameters",
                                    f"SecurityProfile {current} -> {wanted} (network profile slot {first})")
