"""What a connection attempt uses under each OCPP security profile (1.6 security whitepaper; the same three
profiles in 2.0.1): the URL's scheme, the Basic-auth key, the TLS context. Version-agnostic: the adapter keeps
the profile and the key as its configuration; the self-test uses the commissioned ones.

0 = none (the URL as configured; a wss:// URL then trusts the system's store), 1 = ws:// + Basic auth,
2 = wss:// + Basic auth + the CSMS checked against the installed root(s), 3 = wss:// + the charge point's
certificate (no Basic auth).
"""

from __future__ import annotations

from firmware.config import OcppConfig
from firmware.ocpp.link import LinkSettings
from firmware.security import tls
from firmware.security.certstore import CertificateStore


def with_scheme(url: str, secure: bool) -> str:
    _scheme, sep, rest = url.partition("://")
    return f"{'wss' if secure else 'ws'}{sep}{rest}" if sep else url


def link_settings(config: OcppConfig, profile: int, key: str | None,
                  store: CertificateStore | None = None, client: tuple[str, str] | None = None, *,
                  hex_rule: bool = True, url: str | None = None) -> LinkSettings:
    """Raises :class:`~firmware.security.tls.TlsSetupError` (an ``OSError``) when profile 2/3's files are missing
    or unusable: a failed attempt, as the link counts it. ``store``: trust its CSMS roots (the commissioned ones
    and those installed over OCPP) instead of the configuration's alone; ``client``: the charge point's certificate
    and key files for profile 3 (a renewed certificate) instead of the configuration's. ``hex_rule``: the key's
    Basic-auth password follows 1.6 TC_085 (2.0.1: False, sent as text). ``url``: the CSMS to connect to instead
    of ``csms_url`` (2.0.1: the active network profile's), its scheme following the profile as well."""
    csms_url = url or config.csms_url
    if profile == 0:
        return LinkSettings(csms_url, None, None, "no security profile")
    if profile == 1:
        return LinkSettings(with_scheme(csms_url, False), key or None, None, "security profile 1",
                            hex_rule=hex_rule)
    if store is None and config.csms_ca is None:
        raise tls.TlsSetupError(f"security profile {profile}: no CentralSystemRootCertificate installed (csms_ca)")
    cert, key_file = client or (config.cp_cert, config.cp_key)
    if profile == 3 and (cert is None or key_file is None):
        raise tls.TlsSetupError("security profile 3: no charge point certificate")
    context = tls.client_context(config.csms_ca, cert if profile == 3 else None, key_file if profile == 3 else None,
                                 roots_pem=store.csms_roots_pem() if store is not None else None)
    return LinkSettings(with_scheme(csms_url, True), (key or None) if profile == 2 else None, context,
                        f"security profile {profile}", hex_rule=hex_rule)
