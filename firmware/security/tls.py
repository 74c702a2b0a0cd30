"""TLS for the CSMS link, as the OCPP 1.6 security whitepaper (edition 3) asks of a charge point.

* TLS 1.2 or later only; for TLS 1.2 only the whitepaper's cipher suites (TLS_ECDHE_ECDSA_WITH_AES_128/256_GCM
  and TLS_RSA_WITH_AES_128/256_GCM; TLS 1.3's suites are all AEAD); no TLS compression, no renegotiation.
* The CSMS's certificate is checked against the installed CentralSystemRootCertificate(s) only — a PEM file or
  a directory of them, never the system's store — and against the host name of the CSMS URL.
* Security profile 3: the charge point presents its own certificate and key.

:func:`classify_failure` names the whitepaper's security event for a failed handshake, so the adapter can
report it (InvalidCentralSystemCertificate, InvalidTLSVersion, InvalidTLSCipherSuite).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

#: TLS 1.2 cipher suites (OpenSSL names) of the whitepaper, section "TLS": ECDSA and RSA variants.
WHITEPAPER_TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                            "AES128-GCM-SHA256", "AES256-GCM-SHA384")

INVALID_CSMS_CERTIFICATE = "InvalidCentralSystemCertificate"
INVALID_TLS_VERSION = "InvalidTLSVersion"
INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"

_VERSION_REASONS = frozenset({"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_SSL_VERSION",
                              "NO_PROTOCOLS_AVAILABLE"})
_CIPHER_REASONS = frozenset({"SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER", "NO_CIPHERS_AVAILABLE",
                             "WRONG_CIPHER_RETURNED", "TLSV1_ALERT_INSUFFICIENT_SECURITY"})
_CLIENT_CERT_REASONS = frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA",
                                  "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                                  "SSLV3_ALERT_CERTIFICATE_EXPIRED", "TLSV1_ALERT_ACCESS_DENIED"})


class TlsSetupError(OSError):
    """The charge point's own TLS material is missing or unusable (a commissioning fault, named in the message).
    An ``OSError``: to the link, an attempt that could not be made."""


@dataclass(frozen=True)
class TlsFailure:
    """Why a handshake failed. ``event``: the whitepaper's security event, if it names one."""

    event: str | None
    detail: str
    client_certificate_refused: bool = False


def read_roots(location: str | Path) -> str:
    """The CentralSystemRootCertificate(s) as PEM text: one file, or every ``*.pem``/``*.crt`` in a directory."""
    path = Path(location)
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".pem", ".crt") and p.is_file())
            text = "".join(p.read_text(encoding="ascii") for p in files)
        else:
            text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsSetupError(f"CSMS root certificate(s) {path}: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise TlsSetupError(f"CSMS root certificate(s) {path}: no PEM certificate found")
    return text


def client_context(csms_roots: str | Path | None, client_cert: str | Path | None = None,
                   client_key: str | Path | None = None, *, roots_pem: str | None = None) -> ssl.SSLContext:
    """The TLS context of a profile 2 (no client certificate) or profile 3 connection. The CSMS roots: a file or
    directory (``csms_roots``), or PEM text (``roots_pem``: the certificate store's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name; no system CAs loaded
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(":".join(WHITEPAPER_TLS12_CIPHERS))
    if roots_pem is None:
        if csms_roots is None:
            raise TlsSetupError("no CentralSystemRootCertificate installed")
        roots_pem = read_roots(csms_roots)
    elif "-----BEGIN CERTIFICATE-----" not in roots_pem:
        raise TlsSetupError("no CentralSystemRootCertificate installed")
    try:
        ctx.load_verify_locations(cadata=roots_pem)
    except ssl.SSLError as exc:
        raise TlsSetupError(f"CSMS root certificate(s) {csms_roots or 'installed'}: {exc.reason or exc}") from None
    if client_cert is not None:
        if client_key is None:
            raise TlsSetupError("a charge point certificate needs its private key")
        try:
            ctx.load_cert_chain(str(client_cert), str(client_key))
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"charge point certificate {client_cert} / key {client_key}: {exc}") from None
    return ctx


def _ssl_errors(exc: BaseException) -> list[ssl.SSLError]:
    """The SSL errors in an exception's chain (websockets wraps a failure while reading the HTTP response)."""
    found: list[ssl.SSLError] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLError):
            found.append(e)
        e = e.__cause__ or e.__context__
    return found


def _closed_before_http_response(exc: BaseException) -> bool:
    e: BaseException | None = exc
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, EOFError | ConnectionResetError):
            return True
        e = e.__cause__ or e.__context__
    return False


def classify_failure(exc: BaseException, *, over_tls: bool = False) -> TlsFailure | None:
    """The TLS reason a connection attempt failed, or ``None`` if it did not fail in TLS.

    With TLS 1.3 a CSMS refuses a client certificate only after our side of the handshake is done; Python's
    TLS transport drops its alert, and we see the connection closed before the HTTP answer. ``over_tls``: the
    attempt used TLS, so such a close is reported as a probable refusal of our certificate."""
    for e in _ssl_errors(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return TlsFailure(INVALID_CSMS_CERTIFICATE, e.verify_message or str(e))
        reason = e.reason or ""
        if reason in _VERSION_REASONS:
            return TlsFailure(INVALID_TLS_VERSION, reason)
        if reason in _CLIENT_CERT_REASONS:
            return TlsFailure(None, reason, client_certificate_refused=True)
        if reason in _CIPHER_REASONS:
            return TlsFailure(INVALID_TLS_CIPHER_SUITE, reason)
        return TlsFailure(None, reason or str(e))
    if over_tls and _closed_before_http_response(exc):
        return TlsFailure(None, "connection closed right after the TLS handshake (charge point certificate "
                                "refused?)", client_certificate_refused=True)
    return None
