"""A received value, shown in an error message or a log line: short, printable, and never an exception.

``repr`` of an integer of more than 4,300 digits raises ValueError, a deeply nested value RecursionError, and a
string holding a lone surrogate cannot be written to a UTF-8 log; a value from a wire may be any of them. Shared
by the drivers' codecs and the agent's decoders of untrusted input.
"""

from __future__ import annotations


def bounded_repr(value: object, limit: int = 40) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit integer"
    try:
        text = repr(value)
    except Exception:  # ValueError, RecursionError, or whatever a decoder's object raises
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
