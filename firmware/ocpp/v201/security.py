"""A Security over OCPP 2.0.1: security profiles 1-3 on the link, the SecurityCtrlr variables, and the Basic-auth
password changed by SetVariables — on the version-agnostic :class:`~firmware.ocpp.security_policy.SecurityPolicy`
that 1.6 uses (what each connection attempt uses, the key's rule, the events of failed handshakes).

* SecurityCtrlr.SecurityProfile (ReadOnly, as 2.0.1 defines it): the profile the link uses, commissioned with
  ``[ocpp] security_profile``; 2.0.1 raises it through SetNetworkProfile, NetworkConfigurationPriority and a reboot
  (A05, ``network_profile``), only upward and with the new profile's prerequisites, as 1.6 does.
* SecurityCtrlr.BasicAuthPassword (WriteOnly: GetVariables Rejected, never in a report or a log): 16..40
  characters of identifierString, the Basic-auth password of profiles 1 and 2 sent as it is (2.0.1 has no hex
  rule: OCTT TC_A_01_CS). A new one (A01) is Rejected when it breaks that rule (TC_A_10_CS), else Accepted, and
  once the answer has gone out the station reconnects with it (TC_A_09_CS; profiles 1 and 2).
* SecurityCtrlr.Identity (ReadOnly): the charging station's identity, ``[charge_point] id``.
* Failed handshakes are named as 2.0.1 names them (InvalidCsmsCertificate, InvalidTLSVersion,
  InvalidTLSCipherSuite) and sent as SecurityEventNotification through the outbox (``security_events``).
"""

from __future__ import annotations

from typing import Any

from ocpp.v201.enums import Action

from firmware.ocpp.rpc import after_answering
from firmware.ocpp.security_events import SecurityEvents
from firmware.ocpp.security_policy import PROFILE, SecurityPolicy
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import DeviceModel, VariableKey
from firmware.security.authorization_key import is_valid_basic_auth_password
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials

COMPONENT = "SecurityCtrlr"
PASSWORD = VariableKey(COMPONENT, "BasicAuthPassword")
IDENTITY_MAX = 48
#: the failed attempts with a network profile before the next one, and before a raised profile is put back
ATTEMPTS = ("OCPPCommCtrlr", "NetworkProfileConnectionAttempts")  # SecurityCtrlr.Identity: identifierString[0..48]


class _Variables:
    """The policy's two values as SecurityCtrlr variables."""

    def __init__(self, variables: DeviceModel) -> None:
        self.variables = variables

    def profile(self) -> int:
        return self.variables.get_int(COMPONENT, PROFILE)

    def key(self) -> str:
        return self.variables.get(COMPONENT, PASSWORD.variable)

    def store_profile(self, profile: int) -> None:
        self.variables.store(COMPONENT, PROFILE, str(profile))

    def store_key(self, key: str) -> None:
        self.variables.store(COMPONENT, PASSWORD.variable, key)


class Security(SecurityPolicy):
    def __init__(self, ctx: V201Context, events: SecurityEvents, store: CertificateStore,
                 credentials: ChargePointCredentials) -> None:
        variables = ctx.variables
        super().__init__(ctx.config, ctx.db, _Variables(variables), events, store, credentials,
                         key_name=PASSWORD.variable, key_valid=is_valid_basic_auth_password, hex_rule=False,
                         fallback_after=lambda: variables.get_int(*ATTEMPTS))
        if len(ctx.config.charge_point_id) <= IDENTITY_MAX:
            variables.fix(COMPONENT, "Identity", ctx.config.charge_point_id)
        variables.add_check(PASSWORD, lambda current, new: None if self.may_change_key(current, new) else
                            "not 16 to 40 characters of identifierString")
        variables.on_change(lambda key, value: self.changed(key.variable, value), {PASSWORD})

    @after_answering(Action.set_variables)
    async def _after_set_variables(self, **_: Any) -> None:
        """A01: reconnect with the new password once the SetVariablesResponse has gone out on the old connection."""
        await self.reconnect_if_pending()
