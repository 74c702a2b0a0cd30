"""Certificate management over OCPP 1.6 (security whitepaper, edition 3: "Certificate management"):
InstallCertificate, DeleteCertificate and GetInstalledCertificateIds on the charge point's
:class:`~firmware.security.certstore.CertificateStore`.

* InstallCertificate: a CentralSystemRootCertificate or ManufacturerRootCertificate; ``Rejected`` for what is not
  a valid, current root certificate (a CSMS root: with the event InvalidCentralSystemCertificate, TC_078), and
  when the store holds CertificateStoreMaxLength certificates already.
  A new CSMS root is trusted from the next connection on.
* DeleteCertificate: by edition 3's hash data; ``Failed`` for the CSMS root in use (the issuer of the CSMS's
  certificate on this connection, or the last one while a TLS profile is active) and for a root commissioned
  with the configuration; ``NotFound`` otherwise when nothing matches. The charge point's own certificate is
  never in this store, so it cannot be deleted.
* GetInstalledCertificateIds: the hash data of each installed certificate of a type (``NotFound`` when none).
* The charge point's certificate (profile 3): on ExtendedTriggerMessage SignChargePointCertificate, and by itself
  a month before the current one expires (checked at each accepted connection and daily), a key pair is
  generated on the controller and SignCertificate sends its CSR (CN = the serial number, else the charge point
  id; O = CpoName). CertificateSigned is ``Accepted`` only for a certificate of that key, valid now, chaining to an
  installed CSMS root, at most CertificateSignedMaxChainSize characters; with profile 3 the agent then reconnects
  with it (TC_074). Otherwise ``Rejected`` and the security event InvalidChargePointCertificate.
* ExtendedTriggerMessage: SignChargePointCertificate and Heartbeat; the other messages are ``NotImplemented``
  until TriggerMessage's implementations can be shared.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from ocpp.charge_point import snake_to_camel_case
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from firmware.ocpp.rpc import after_answering, handles
from firmware.ocpp.v16.context import V16Context
from firmware.ocpp.v16.keys import KeyDefinition, KeyType
from firmware.security.certstore import CSMS_ROOT, CertificateHashData, CertificateStore, DeleteResult
from firmware.security.credentials import ChargePointCredentials

log = logging.getLogger(__name__)

DEFAULT_STORE_MAX = 20
MAX_CHAIN_SIZE = 10000  # CertificateSigned.req certificateChain: at most 10000 characters
KEYS = (
    KeyDefinition("CertificateStoreMaxLength", KeyType.INT, str(DEFAULT_STORE_MAX), readonly=True),
    KeyDefinition("CertificateSignedMaxChainSize", KeyType.INT, str(MAX_CHAIN_SIZE), readonly=True),
    KeyDefinition("CpoName", KeyType.STRING, "", maximum=64),
    # the whitepaper's stricter root replacement (a new root signed by the old one, the old kept as a fallback)
    # is not implemented: said so, read-only
    KeyDefinition("AdditionalRootCertificateCheck", KeyType.BOOL, "false", readonly=True),
)
RENEWAL_CHECK_S = 86400.0


class Certificates:
    def __init__(self, ctx: V16Context, store: CertificateStore, credentials: ChargePointCredentials,
                 peer_certificate: Callable[[], bytes | None], security_profile: Callable[[], int],
                 reconnect: Callable[[], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.store = store
        self.credentials = credentials
        self._peer = peer_certificate
        self._profile = security_profile
        self._reconnect = reconnect
        self._report = ctx.report_security_event
        self._reconnect_pending = False
        self._signing = False  # a SignCertificate under way
        self._watching = False  # the daily renewal check runs
        self.sign_requests = 0  # SignCertificate.req sent (tests, diagnostics)

    def _tls_active(self) -> bool:
        return self._profile() >= 2

    # --- the charge point's certificate ---------------------------------------------------------------

    def connected(self) -> None:
        """An accepted connection: renew a certificate that expires within a month; watch it daily from now."""
        if not self._watching:
            self._watching = True
            self.ctx.spawn(self._watch_renewal())
        if self._profile() == 3 and self.credentials.renewal_due():
            self.request_signing("the charge point certificate expires within a month")

    async def _watch_renewal(self) -> None:
        while True:
            await asyncio.sleep(RENEWAL_CHECK_S)
            if self._profile() == 3 and self.credentials.renewal_due():
                self.request_signing("the charge point certificate expires within a month")

    def request_signing(self, why: str) -> bool:
        """Start a SignCertificate (unless one is under way); False if one already is."""
        if self._signing:
            return False
        log.info("requesting a new charge point certificate", extra={"reason": why})
        self._signing = True
        self.ctx.spawn(self._sign())
        return True

    async def _sign(self) -> None:
        try:
            await self._send_request()
        finally:
            self._signing = False

    async def _send_request(self) -> None:
        config = self.ctx.config
        serial = config.identity.serial_number or config.charge_point_id
        csr = await asyncio.to_thread(self.credentials.new_request, serial, self.ctx.keys.get_str("CpoName") or None)
        self.sign_requests += 1
        try:
            answer = await self.ctx.call("SignCertificate", {"csr": csr})
        except Exception as exc:  # offline, a CALLERROR: the next trigger or renewal check asks again
            log.warning("SignCertificate not answered", extra={"error": str(exc)})
            return
        log.info("SignCertificate answered", extra={"status": answer.get("status")})

    @handles(Action.certificate_signed)
    async def _certificate_signed(self, certificate_chain: str, **_: Any) -> Any:
        limit = self.ctx.keys.get_int("CertificateSignedMaxChainSize")
        roots = [i.cert for i in self.store.installed(CSMS_ROOT)]
        problem = "longer than CertificateSignedMaxChainSize" if len(certificate_chain) > limit else \
            await asyncio.to_thread(self.credentials.accept_signed, certificate_chain, roots)
        if problem is not None:
            log.warning("signed certificate refused", extra={"reason": problem})
            self._report("InvalidChargePointCertificate", problem)
            return call_result.CertificateSigned(status="Rejected")
        log.info("new charge point certificate installed")
        self._reconnect_pending = self._profile() == 3
        return call_result.CertificateSigned(status="Accepted")

    @after_answering(Action.certificate_signed)
    async def _after_certificate_signed(self, **_: Any) -> None:
        if self._reconnect_pending:  # TC_074: the next connection presents the new certificate
            self._reconnect_pending = False
            await self._reconnect()

    @handles(Action.extended_trigger_message)
    async def _extended_trigger(self, requested_message: str, connector_id: int | None = None, **_: Any) -> Any:
        if requested_message == "SignChargePointCertificate":
            if self._profile() < 2 and self.credentials.files() is None and not self.store.csms_roots_pem():
                return call_result.ExtendedTriggerMessage(status="Rejected")
            self.request_signing("ExtendedTriggerMessage")
            return call_result.ExtendedTriggerMessage(status="Accepted")
        if requested_message == "Heartbeat":
            self.ctx.spawn(self._heartbeat())
            return call_result.ExtendedTriggerMessage(status="Accepted")
        return call_result.ExtendedTriggerMessage(status="NotImplemented")

    async def _heartbeat(self) -> None:
        await asyncio.sleep(0)  # after the ExtendedTriggerMessage.conf
        try:
            await self.ctx.call("Heartbeat", {})
        except Exception as exc:
            log.warning("triggered Heartbeat not answered", extra={"error": str(exc)})

    # --- the store ------------------------------------------------------------------------------------

    @handles(Action.install_certificate)
    async def _install(self, certificate_type: str, certificate: str, **_: Any) -> Any:
        result = self.store.install(certificate_type, certificate)
        log.info("InstallCertificate", extra={"type": certificate_type, "status": result.value})
        if result.value == "Accepted":
            self._report("ReconfigurationOfSecurityParameters", f"{certificate_type} installed")
        elif certificate_type == CSMS_ROOT and (why := self.store.invalid(certificate)) is not None:
            self._report("InvalidCentralSystemCertificate", f"InstallCertificate: {why}")  # TC_078: sent
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

