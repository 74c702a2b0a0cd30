"""Certificate management over OCPP 2.0.1 (A02 update the station's certificate on the CSMS's request, A03 by the
station itself; M03 GetInstalledCertificateIds, M04 DeleteCertificate, M05 InstallCertificate): the messages of the
version-agnostic :class:`~firmware.ocpp.certificate_management.CertificateManagement` that 1.6 uses (its rules are
in its docstring).

* Certificate types: CSMSRootCertificate and ManufacturerRootCertificate are the store's two kinds (1.6
  CentralSystemRootCertificate, ManufacturerRootCertificate). The ISO 15118 kinds (V2GRootCertificate,
  MORootCertificate, V2GCertificateChain) are not kept — this station has no ISO 15118 —: InstallCertificate of one
  is Rejected, GetInstalledCertificateIds finds none.
* GetInstalledCertificateIds: ``certificateHashDataChain`` with each certificate's type and hash data (no child
  certificates: only roots are stored); without ``certificateType`` every kind; ``NotFound`` when there is none.
* SignCertificate goes out with ``certificateType`` ChargingStationCertificate (CN = serial number, O =
  SecurityCtrlr.OrganizationName) on TriggerMessage SignChargingStationCertificate (``remote_trigger``) and a
  month before the current certificate expires; one the CSMS accepted but did not follow by a CertificateSigned
  within SecurityCtrlr.CertSigningWaitMinimum is sent again, the wait doubling, at most CertSigningRepeatTimes
  times. CertificateSigned (at most SecurityCtrlr.MaxCertificateChainSize characters) of a V2GCertificate is
  Rejected; a ChargingStationCertificate is checked and switched to as in 1.6 (TC_A_11_CS, TC_A_14_CS).
* SecurityCtrlr.CertificateEntries: the certificates installed now, read when asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.charge_point import snake_to_camel_case
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from firmware.ocpp.certificate_management import CertificateManagement, CertificateRules
from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.v201.context import V201Context
from firmware.ocpp.v201.device_model import VariableKey
from firmware.security.certstore import CSMS_ROOT, MANUFACTURER_ROOT, CertificateStore
from firmware.security.credentials import ChargePointCredentials

COMPONENT = "SecurityCtrlr"
#: 2.0.1 certificate type -> the store's kind
STORE_KINDS = {"CSMSRootCertificate": CSMS_ROOT, "ManufacturerRootCertificate": MANUFACTURER_ROOT}
STATION_CERTIFICATE = "ChargingStationCertificate"


def _info(reason: str, detail: str | None = None) -> dict[str, str]:
    return {"reasonCode": reason, **({"additionalInfo": detail[:512]} if detail else {})}


class Certificates(CertificateManagement):
    def __init__(self, ctx: V201Context, store: CertificateStore, credentials: ChargePointCredentials,
                 peer_certificate: Callable[[], bytes | None], security_profile: Callable[[], int],
                 reconnect: Callable[[], Awaitable[None]]) -> None:
        v = ctx.variables
        rules = CertificateRules(
            organization=lambda: v.get(COMPONENT, "OrganizationName"),
            max_chain_size=lambda: v.get_int(COMPONENT, "MaxCertificateChainSize"),
            additional_root_check=lambda: v.get_bool(COMPONENT, "AdditionalRootCertificateCheck"),
            sign_extra={"certificateType": STATION_CERTIFICATE},
            sign_retry=lambda: (float(v.get_int(COMPONENT, "CertSigningWaitMinimum")),
                                v.get_int(COMPONENT, "CertSigningRepeatTimes")))
        super().__init__(ctx, store, credentials, peer_certificate, security_profile, reconnect,
                         ctx.report_security_event, rules)
        v.provide(VariableKey(COMPONENT, "CertificateEntries"), lambda: str(len(store.installed())))
        # ReadOnly in 2.0.1: the station's policy, commissioned (the replacement itself is the shared one 1.6 uses)
        assert ctx.config.ocpp is not None
        v.fix(COMPONENT, "AdditionalRootCertificateCheck",
              "true" if ctx.config.ocpp.additional_root_certificate_check else "false")

    @handles(Action.certificate_signed)
    async def _certificate_signed(self, certificate_chain: str, certificate_type: str | None = None,
                                  **_: Any) -> Any:
        if certificate_type not in (None, STATION_CERTIFICATE):  # V2GCertificate: no ISO 15118 here
            return call_result.CertificateSigned(status="Rejected", status_info=_info("UnsupportedCertType"))
        return call_result.CertificateSigned(status=await self.certificate_signed(certificate_chain))

    @after_answering(Action.certificate_signed)
    async def _after_certificate_signed(self, **_: Any) -> None:
        await self.after_certificate_signed()

    @handles(Action.install_certificate)
    async def _install(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        kind = STORE_KINDS.get(certificate_type)
        if kind is None:
            return call_result.InstallCertificate(status="Rejected", status_info=_info("UnsupportedCertType"))
        return call_result.InstallCertificate(status=self.install(kind, certificate))

    @handles(Action.delete_certificate)
    async def _delete(self, certificate_hash_data: dict[str, str], **_: Any) -> Any:
        return call_result.DeleteCertificate(status=self.delete(snake_to_camel_case(certificate_hash_data)))

    @handles(Action.get_installed_certificate_ids)
    async def _ids(self, certificate_type: list[str] | None = None, **_: Any) -> Any:
        chain = [{"certificateType": wanted, "certificateHashData": i.to_ocpp()}
                 for wanted in (certificate_type or list(STORE_KINDS)) if wanted in STORE_KINDS
                 for i in self.store.ids(STORE_KINDS[wanted])]
        if not chain:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data_chain=chain)
