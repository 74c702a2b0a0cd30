"""Certificate management over OCPP 1.6 (security whitepaper, edition 3: "Certificate management"):
InstallCertificate, DeleteCertificate and GetInstalledCertificateIds on the charge point's
:class:`~firmware.security.certstore.CertificateStore`.

* InstallCertificate: a CentralSystemRootCertificate or ManufacturerRootCertificate; ``Rejected`` for what is not
  a valid, current root certificate, and when the store holds CertificateStoreMaxLength certificates already.
  A new CSMS root is trusted from the next connection on.
* DeleteCertificate: by edition 3's hash data; ``Failed`` for the CSMS root in use (the issuer of the CSMS's
  certificate on this connection, or the last one while a TLS profile is active) and for a root commissioned
  with the configuration; ``NotFound`` otherwise when nothing matches. The charge point's own certificate is
  never in this store, so it cannot be deleted.
* GetInstalledCertificateIds: the hash data of each installed certificate of a type (``NotFound`` when none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cryptography import x509
from ocpp.charge_point import snake_to_camel_case
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import handles
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.security.certstore import CertificateHashData, CertificateStore, DeleteResult

log = logging.getLogger(__name__)

DEFAULT_STORE_MAX = 20
KEYS = (
    KeyDefinition("CertificateStoreMaxLength", KeyType.INT, str(DEFAULT_STORE_MAX), readonly=True),
)


class Certificates:
    def __init__(self, store: CertificateStore, peer_certificate: Callable[[], bytes | None],
                 tls_profile_active: Callable[[], bool], report_event: Callable[[str, str | None], object]) -> None:
        self.store = store
        self._peer = peer_certificate
        self._tls_active = tls_profile_active
        self._report = report_event

    @handles(Action.install_certificate)
    async def _install(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        result = self.store.install(certificate_type, certificate)
        log.info("InstallCertificate", extra={"type": certificate_type, "status": result.value})
        if result.value == "Accepted":
            self._report("ReconfigurationOfSecurityParameters", f"{certificate_type} installed")
        return call_result.InstallCertificate(status=result.value)

    @handles(Action.delete_certificate)
    async def _delete(self, certificate_hash_data: dict[str, str], **_: Any) -> Any:
        peer = self._peer()
        in_use = x509.load_der_x509_certificate(peer) if peer else None
        wanted = CertificateHashData.from_ocpp(snake_to_camel_case(certificate_hash_data))  # the library's snake
        result = self.store.delete(wanted, in_use=in_use, keep_one_csms_root=self._tls_active())
        log.info("DeleteCertificate", extra={"serial": wanted.serial_number, "status": result.value})
        if result is DeleteResult.ACCEPTED:
            self._report("ReconfigurationOfSecurityParameters", "certificate deleted")
        return call_result.DeleteCertificate(status=result.value)

    @handles(Action.get_installed_certificate_ids)
    async def _ids(self, certificate_type: str, **_: Any) -> Any:
        ids = self.store.ids(certificate_type)
        if not ids:
            return call_result.GetInstalledCertificateIds(status="NotFound")
        return call_result.GetInstalledCertificateIds(status="Accepted",
                                                      certificate_hash_data=[i.to_ocpp() for i in ids])
