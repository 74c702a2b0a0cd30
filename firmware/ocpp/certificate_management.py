"""Certificate management (OCPP 1.6 security whitepaper, edition 3: "Certificate management"; OCPP 2.0.1 A02/A03
and M03-M05), version-agnostic: the rules on the charge point's
:class:`~firmware.security.certstore.CertificateStore` and its own certificate
(:class:`~firmware.security.credentials.ChargePointCredentials`). Each adapter's handlers translate the messages
(1.6 ``certificates.py``, 2.0.1 ``certificates.py``) and give the values its configuration keeps
(:class:`CertificateRules`).

* Install (:meth:`CertificateManagement.install`): a CSMS root or a manufacturer root; ``Rejected`` for what is not
  a valid, current root certificate (a CSMS root: with the event InvalidCentralSystemCertificate, 1.6 TC_078), and
  when the store holds its maximum already. A new CSMS root is trusted from the next connection on. With
  AdditionalRootCertificateCheck a new CSMS root must be issued by an installed one, which stays as the fallback
  until a connection is anchored by the new one.
* Delete (:meth:`~CertificateManagement.delete`): by edition 3's hash data; ``Failed`` for the CSMS root in use (the
  issuer of the CSMS's certificate on this connection, or the last one while a TLS profile is active) and for a
  root commissioned with the configuration; ``NotFound`` otherwise when nothing matches. The charge point's own
  certificate is never in this store, so it cannot be deleted.
* Ids (:meth:`~CertificateManagement.ids`): the hash data of each installed certificate of a type.
* The charge point's certificate (profile 3): on the CSMS's trigger, and by itself a month before the current one
  expires (checked at each accepted connection and daily), a key pair is generated on the controller and
  SignCertificate sends its CSR (CN = the serial number, else the charge point id; O = the organization name);
  renewals of its own are spaced by a growing back-off (1 h doubling to a day, kept across reboots) until a
  certificate is accepted. CertificateSigned is ``Accepted`` only for a certificate of that key, valid now, chaining
  to an installed CSMS root, within the maximum chain size; with profile 3 the agent then reconnects with it (1.6
  TC_074, 2.0.1 TC_A_11_CS). Otherwise ``Rejected`` and the security event InvalidChargePointCertificate (sent:
  1.6 TC_077; 2.0.1 InvalidChargingStationCertificate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from firmware.config import AgentConfig
from firmware.security.certstore import CSMS_ROOT, CertificateHashData, CertificateStore, DeleteResult, issued_by
from firmware.security.credentials import ChargePointCredentials
from firmware.storage import Database
from firmware.storage.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_STORE_MAX = 20
MAX_CHAIN_SIZE = 10000  # CertificateSigned certificateChain: at most 10000 characters (1.6 and 2.0.1)
RENEWAL_CHECK_S = 86400.0
#: Renewals the charge point starts by itself are spaced by this back-off (doubling per SignCertificate not
#: followed by an accepted CertificateSigned), kept in the settings: a reconnect or a reboot does not send a new
#: CSR with a new key pair each time. A CSMS's ExtendedTriggerMessage is not held back by it.
RENEWAL_RETRY_MIN_S = 3600.0
RENEWAL_RETRY_MAX_S = 86400.0
_RENEWAL_ATTEMPTS = "certificates.renewal_attempts"
_RENEWAL_NEXT = "certificates.renewal_next"  # ISO time before which no renewal of our own is started
_ROOT_REPLACING = "certificates.root_replacing"  # fingerprint of the new CSMS root whose predecessor is the fallback


def renewal_retry_after(attempts: int) -> timedelta:
    """The wait after ``attempts`` (>= 1) renewals of our own went unanswered by a valid certificate."""
    return timedelta(seconds=min(RENEWAL_RETRY_MAX_S, RENEWAL_RETRY_MIN_S * 2 ** max(0, attempts - 1)))


class CertificatesContext(Protocol):
    """What :class:`CertificateManagement` uses of an adapter's feature context (``V16Context``, ``V201Context``)."""

    config: AgentConfig
    db: Database

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...


@dataclass(frozen=True)
class CertificateRules:
    """The values the version's configuration keeps: 1.6 keys (CpoName, CertificateSignedMaxChainSize,
    AdditionalRootCertificateCheck), 2.0.1 SecurityCtrlr variables (OrganizationName, MaxCertificateChainSize,
    AdditionalRootCertificateCheck)."""

    organization: Callable[[], str]
    max_chain_size: Callable[[], int]
    additional_root_check: Callable[[], bool]
    #: SignCertificate's payload beyond ``csr`` (2.0.1: ``certificateType`` ChargingStationCertificate)
    sign_extra: dict[str, str] | None = None
    #: ``(wait_s, repeats)``: a SignCertificate the CSMS accepted but not followed by a CertificateSigned within
    #: ``wait_s`` is sent again, the wait doubling each time, at most ``repeats`` times (2.0.1 A02.FR.17-19:
    #: CertSigningWaitMinimum, CertSigningRepeatTimes). None: sent once (1.6).
    sign_retry: Callable[[], tuple[float, int]] | None = None


class CertificateManagement:
    def __init__(self, ctx: CertificatesContext, store: CertificateStore, credentials: ChargePointCredentials,
                 peer_certificate: Callable[[], bytes | None], security_profile: Callable[[], int],
                 reconnect: Callable[[], Awaitable[None]], report: Callable[[str, str | None], object],
                 rules: CertificateRules) -> None:
        """``report(event, techInfo)``: a security event (:meth:`SecurityEvents.report`)."""
        self.ctx = ctx
        self.store = store
        self.credentials = credentials
        self.rules = rules
        self._peer = peer_certificate
        self._profile = security_profile
        self._reconnect = reconnect
        self._report = report
        self._reconnect_pending = False
        self._signing = False  # a SignCertificate under way
        self._signed = asyncio.Event()  # a CertificateSigned arrived (ends the wait of sign_retry)
        self._watching = False  # the daily renewal check runs
        self.sign_requests = 0  # SignCertificate.req sent (tests, diagnostics)

    def _tls_active(self) -> bool:
        return self._profile() >= 2

    # --- the charge point's certificate ---------------------------------------------------------------

    def connected(self) -> None:
        """An accepted connection: a CSMS root replacement confirmed; renew a certificate that expires within a
        month; watch it daily from now."""
        self._confirm_root_replacement()
        if not self._watching:
            self._watching = True
            self.ctx.spawn(self._watch_renewal())
        self._renew_if_due()

    async def _watch_renewal(self) -> None:
        while True:
            await asyncio.sleep(RENEWAL_CHECK_S)
            self._renew_if_due()

    def _renew_if_due(self, now: datetime | None = None) -> bool:
        """A renewal of our own when the certificate (profile 3) expires within a month, unless the back-off
        after the previous one has not passed; True if one was started."""
        if self._profile() != 3 or not self.credentials.renewal_due():
            return False
        now = now or datetime.now(UTC)
        settings = Settings(self.ctx.db)
        not_before = settings.get(_RENEWAL_NEXT)
        if not_before and now < datetime.fromisoformat(not_before):
            log.info("certificate renewal due; waiting for the retry time", extra={"not_before": not_before})
            return False
        if not self.request_signing("the charge point certificate expires within a month"):
            return False
        attempts = int(settings.get(_RENEWAL_ATTEMPTS) or 0) + 1
        settings.put(_RENEWAL_ATTEMPTS, str(attempts))
        settings.put(_RENEWAL_NEXT, (now + renewal_retry_after(attempts)).isoformat())
        return True

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
            self._signed.clear()
            accepted = await self._send_request()
            wait_s, repeats = self.rules.sign_retry() if self.rules.sign_retry is not None else (0.0, 0)
            for _ in range(repeats):
                if not accepted:
                    return
                try:
                    await asyncio.wait_for(self._signed.wait(), wait_s)
                    return
                except TimeoutError:
                    log.warning("no CertificateSigned after SignCertificate; asking again", extra={"waited_s": wait_s})
                wait_s *= 2
                accepted = await self._send_request()
        finally:
            self._signing = False

    async def _send_request(self) -> bool:
        """One SignCertificate with a fresh key pair; True if the CSMS accepted it."""
        config = self.ctx.config
        serial = config.identity.serial_number or config.charge_point_id
        csr = await asyncio.to_thread(self.credentials.new_request, serial, self.rules.organization() or None)
        self.sign_requests += 1
        try:
            answer = await self.ctx.call("SignCertificate", {"csr": csr, **(self.rules.sign_extra or {})})
        except Exception as exc:  # offline, a CALLERROR: the next trigger or renewal check asks again
            log.warning("SignCertificate not answered", extra={"error": str(exc)})
            return False
        log.info("SignCertificate answered", extra={"status": answer.get("status")})
        return answer.get("status") == "Accepted"

    async def certificate_signed(self, certificate_chain: str) -> str:
        """A CertificateSigned: ``Accepted`` (taken; with profile 3 :meth:`after_certificate_signed` reconnects) or
        ``Rejected`` (with the event InvalidChargePointCertificate)."""
        self._signed.set()
        limit = self.rules.max_chain_size()
        roots = [i.cert for i in self.store.installed(CSMS_ROOT)]
        problem = "longer than the maximum chain size" if len(certificate_chain) > limit else \
            await asyncio.to_thread(self.credentials.accept_signed, certificate_chain, roots)
        if problem is not None:
            log.warning("signed certificate refused", extra={"reason": problem})
            self._report("InvalidChargePointCertificate", problem)
            return "Rejected"
        log.info("new charge point certificate installed")
        settings = Settings(self.ctx.db)
        settings.put(_RENEWAL_ATTEMPTS, "0")
        settings.put(_RENEWAL_NEXT, "")
        self._reconnect_pending = self._profile() == 3
        return "Accepted"

    async def after_certificate_signed(self) -> None:
        """Once the Accepted has gone out on the old connection."""
        if self._reconnect_pending:  # TC_074: the next connection presents the new certificate
            self._reconnect_pending = False
            await self._reconnect()

    def signing_status(self) -> str:
        """The CSMS triggers a SignCertificate (1.6 ExtendedTriggerMessage SignChargePointCertificate, 2.0.1
        TriggerMessage SignChargingStationCertificate; sent by ``remote_trigger`` once answered): ``Rejected`` when
        the charge point has neither a certificate to renew nor a CSMS root to check one."""
        if self._profile() < 2 and self.credentials.files() is None and not self.store.csms_roots_pem():
            return "Rejected"
        return "Accepted"

    # --- the store ------------------------------------------------------------------------------------

    def install(self, certificate_type: str, certificate: str) -> str:
        """``certificate_type``: the store's use (:data:`CSMS_ROOT`, ``MANUFACTURER_ROOT``); the status."""
        # AdditionalRootCertificateCheck: a CSMS root replaces the one installed, which must have signed it
        replacing = certificate_type == CSMS_ROOT and self.rules.additional_root_check() \
            and bool(self.store.installed(CSMS_ROOT))
        settings = Settings(self.ctx.db)
        if replacing and settings.get(_ROOT_REPLACING):
            log.warning("InstallCertificate: a CSMS root replacement is still unconfirmed by a connection")
            return "Rejected"  # one root plus one fallback at a time
        result = self.store.install(certificate_type, certificate, signed_by_csms_root=replacing)
        log.info("InstallCertificate", extra={"type": certificate_type, "status": result.value,
                                              "replacing_root": replacing})
        if result.value == "Accepted":
            if replacing:
                cert = x509.load_pem_x509_certificate(certificate.encode("ascii"))
                settings.put(_ROOT_REPLACING, cert.fingerprint(hashes.SHA256()).hex())
            self._report("ReconfigurationOfSecurityParameters", f"{certificate_type} installed")
        elif certificate_type == CSMS_ROOT and \
                (why := self.store.invalid(certificate, signed_by_csms_root=replacing)) is not None:
            self._report("InvalidCentralSystemCertificate", f"InstallCertificate: {why}")  # TC_078: sent
        return result.value

    def _confirm_root_replacement(self) -> None:
        """AdditionalRootCertificateCheck: once a connection was anchored by the new CSMS root, the old one (the
        fallback, trusted alongside until then) is removed; a connection the old one anchored keeps it."""
        settings = Settings(self.ctx.db)
        fingerprint = settings.get(_ROOT_REPLACING)
        peer = self._peer()
        if not fingerprint or not peer:
            return
        roots = self.store.installed(CSMS_ROOT)
        new = next((i for i in roots if i.cert.fingerprint(hashes.SHA256()).hex() == fingerprint), None)
        if new is None:  # deleted meanwhile: nothing to confirm
            settings.put(_ROOT_REPLACING, "")
            return
        if not issued_by(x509.load_der_x509_certificate(peer), new.cert):
            log.info("connected through the fallback CSMS root; the new one is not confirmed yet")
            return
        old = [i for i in roots if i is not new and issued_by(new.cert, i.cert)]
        removed = [i for i in old if self.store.remove(i)]
        settings.put(_ROOT_REPLACING, "")
        log.info("new CSMS root confirmed by a connection; fallback removed", extra={
            "removed": len(removed), "kept_commissioned": len(old) - len(removed)})
        self._report("ReconfigurationOfSecurityParameters", "CentralSystemRootCertificate replaced")

    def delete(self, certificate_hash_data: dict[str, str]) -> str:
        """``certificate_hash_data`` as on the wire (camelCase); the status."""
        peer = self._peer()
        in_use = x509.load_der_x509_certificate(peer) if peer else None
        wanted = CertificateHashData.from_ocpp(certificate_hash_data)
        result = self.store.delete(wanted, in_use=in_use, keep_one_csms_root=self._tls_active())
        log.info("DeleteCertificate", extra={"serial": wanted.serial_number, "status": result.value})
        if result is DeleteResult.ACCEPTED:
            self._report("ReconfigurationOfSecurityParameters", "certificate deleted")
        return result.value
