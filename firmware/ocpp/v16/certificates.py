"""Certificate management over OCPP 1.6 (security whitepaper, edition 3): InstallCertificate, DeleteCertificate,
GetInstalledCertificateIds, SignCertificate / CertificateSigned — the messages of the version-agnostic
:class:`~firmware.ocpp.certificate_management.CertificateManagement` (the rules are in its docstring).

* The certificate types are the store's own names: CentralSystemRootCertificate, ManufacturerRootCertificate.
* Keys: CertificateStoreMaxLength, CertificateSignedMaxChainSize, CpoName (O of the CSR) and
  AdditionalRootCertificateCheck.
* ExtendedTriggerMessage is :mod:`remote_trigger`'s; SignChargePointCertificate asks :meth:`signing_status` and
  :meth:`request_signing` here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.certificate_management import (
    DEFAULT_STORE_MAX,
    MAX_CHAIN_SIZE,
    CertificateManagement,
    CertificateRules,
    renewal_retry_after,
)
from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.security.certstore import CertificateStore
from firmware.security.credentials import ChargePointCredentials

KEYS = (
    KeyDefinition("CertificateStoreMaxLength", KeyType.INT, str(DEFAULT_STORE_MAX), readonly=True),
    KeyDefinition("CertificateSignedMaxChainSize", KeyType.INT, str(MAX_CHAIN_SIZE), readonly=True),
    KeyDefinition("CpoName", KeyType.STRING, "", maximum=64),
    # the whitepaper's stricter root replacement: a new CSMS root must be signed by the old one, which stays as
    # the fallback until a connection has been anchored by the new one
    KeyDefinition("AdditionalRootCertificateCheck", KeyType.BOOL, "false"),
)

__all__ = ["KEYS", "Certificates", "renewal_retry_after"]


class Certificates(CertificateManagement):
    def __init__(self, ctx: V16Context, store: CertificateStore, credentials: ChargePointCredentials,
                 peer_certificate: Callable[[], bytes | None], security_profile: Callable[[], int],
                 reconnect: Callable[[], Awaitable[None]]) -> None:
        keys = ctx.keys
        rules = CertificateRules(organization=lambda: keys.get_str("CpoName"),
                                 max_chain_size=lambda: keys.get_int("CertificateSignedMaxChainSize"),
                                 additional_root_check=lambda: keys.get_bool("AdditionalRootCertificateCheck"))
        super().__init__(ctx, store, credentials, peer_certificate, security_profile, reconnect,
                         ctx.report_security_event, rules)

    @handles(Action.certificate_signed)
    async def _certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        return call_result.CertificateSigned(status=await self.certificate_signed(certificate_chain))

    @after_answering(Action.certificate_signed)
    async def _after_certificate_signed(self, **_: Any) -> None:
        await self.after_certificate_signed()

    @handles(Action.install_certificate)
    async def _install(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        return call_result.InstallCertificate(status=self.install(certificate_type, certificate))

    @handles(Action.delete_certificate)
    async def _delete(self, certificate_hash_data: dict[str, str], **_: Any) -> Any:
        return call_result.DeleteCertificate(status=self.delete(snake_to_camel_case(certificate_hash_data)))

    @handles(Action.get_installed_certificate_ids)
    async def _ids(self, certificate_type: str, **_: Any) -> Any:
        ids = self.store.ids(certificate_type)
        if not ids:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted",
                                                      certificate_hash_data=[i.to_ocpp() for i in ids])
