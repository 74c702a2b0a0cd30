"""The AuthorizationKey and the HTTP Basic password it becomes (security profiles 1 and 2).

The 1.6 security whitepaper (edition 3) makes the charge point's identity the Basic-auth user name and the
AuthorizationKey the password, 16 to 40 characters. The key travels over OCPP as text, but a password may be any
bytes, so OCTT TC_085_CS fixes how the configured value becomes the password on the wire:

* 32 to 40 characters, an even number of hexadecimal digits: the hex representation of a 16..20 byte password —
  the *decoded bytes* are sent;
* otherwise (16 to 40 characters, typically 16..20 of plain text): the value's UTF-8 bytes are sent as they are.

The header is ``Basic base64(<identity bytes> ":" <password bytes>)``.

OCPP 2.0.1 (SecurityCtrlr.BasicAuthPassword, A00.FR.205; OCTT TC_A_01_CS) has no hex rule: the password is 16 to 40
characters of identifierString (letters, digits and ``*-_=:+|@.``), sent as they are (``hex_rule=False``).
"""

from __future__ import annotations

import base64
import re

MIN_LENGTH = 16
MAX_LENGTH = 40
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2}){16,20}")
_IDENTIFIER_STRING = re.compile(r"[A-Za-z0-9*\-_=:+|@.]{16,40}")


def is_valid_authorization_key(value: str) -> bool:
    """16 to 40 characters (whitepaper edition 3, AuthorizationKey), printable, no NUL."""
    return MIN_LENGTH <= len(value) <= MAX_LENGTH and value.isprintable()


def is_valid_basic_auth_password(value: str) -> bool:
    """OCPP 2.0.1's BasicAuthPassword: 16 to 40 characters of identifierString."""
    return _IDENTIFIER_STRING.fullmatch(value) is not None


def basic_auth_password(key: str, *, hex_rule: bool = True) -> bytes:
    """The password bytes the key stands for (see the module's rules)."""
    if hex_rule and _HEX.fullmatch(key):
        return bytes.fromhex(key)
    return key.encode("utf-8")


def basic_auth_header(identity: str, key: str, *, hex_rule: bool = True) -> str:
    password = basic_auth_password(key, hex_rule=hex_rule)
    token = base64.b64encode(identity.encode("utf-8") + b":" + password).decode("ascii")
    return f"Basic {token}"
