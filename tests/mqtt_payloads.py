"""Hypothesis strategies for MQTT commands: valid, nearly valid, malformed and hostile payloads, JSON and CBOR.

Shared by the unit tests of ``parse_command`` (tests/test_telemetry_commands.py) and the end-to-end fuzzer
(tests/test_e2e_fuzz_mqtt.py), so both explore the same space: what an energy manager sends, what a
buggy one sends, and what an attacker on the site's broker sends (deep nesting, numbers beyond what
``int()`` or ``float()`` convert, lone surrogates, invalid UTF-8, CBOR tags, indefinite and absurd
declared lengths, trailing bytes), plus byte-level mutations of all of them.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import cbor2
from hypothesis import strategies as st

from firmware.telemetry.commands import MAX_PAYLOAD_BYTES

T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of ``choices``, each drawn in proportion to its weight (``one_of`` weighs its flattened branches)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    # indices, not the strategies: hypothesis describes a strategy by its parts, and a table of 100 copies
    # of nested strategies makes descriptions of megabytes
    def pick(index: int) -> st.SearchStrategy[T]:
        return table[index]

    return st.sampled_from(range(len(table))).flatmap(pick)

# --- topics (the part after <root>/cmd/) ------------------------------------------------------------

# printable only: mosquitto disconnects a client that publishes to a topic with control characters or
# noncharacters, and + and # are wildcards (not allowed in a publish)
_TOPIC_TEXT = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"], exclude_characters="+#"), max_size=30)
_ODD_TOPICS = ["", "limit/", "LIMIT", "reboot", "connector", "connector/", "connector//limit", "connector/1",
               "connector/007/limit", "connector/01/limit", "connector/-1/limit", "connector/1.0/limit",
               "connector/\uff11/limit", "connector/\u0661/limit", "connector/1/limit/extra", "connector/1/Limit",
               "connector/99/available", "connector/100/limit", "connector/1/limit/", "/limit", "limit "]


def topic_suffixes(connectors: int) -> st.SearchStrategy[str]:
    """Mostly the real command topics, some for unknown connectors (0, n+1), some odd, some random."""
    known = ["limit", "available"] + [f"connector/{n}/{kind}" for n in range(1, connectors + 1)
                                      for kind in ("limit", "available")]
    unknown = [f"connector/{n}/{kind}" for n in (0, connectors + 1) for kind in ("limit", "available")]
    return weighted((60, st.sampled_from(known)), (10, st.sampled_from(unknown)),
                    (15, st.sampled_from(_ODD_TOPICS)), (15, _TOPIC_TEXT))


# --- JSON ----------------------------------------------------------------------------------------------

_AMPS = st.one_of(st.integers(-5, 70), st.floats(), st.floats(-1.0, 70.0), st.integers(),
                  st.sampled_from([0, 6, 16, 32, -0.0, 5.999, 1e-300, 2**53 + 1, 2**64, -(2**63), 10**308,
                                   10**309, 10**400]))
_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)


def _shaped(amps: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values shaped like commands: a bare value, ``{"amps": v}`` / ``{"operative": v}``, or with extra keys."""
    value = st.one_of(amps, st.booleans(), st.none(), other)
    return st.one_of(
        value,
        st.builds(lambda v: {"amps": v}, value),
        st.builds(lambda v: {"operative": v}, value),
        st.builds(lambda v, extra: {"amps": v, **extra}, value, st.dictionaries(st.text(max_size=6), other,
                                                                                  max_size=2)),
        st.sampled_from(["ON", "OFF", "on", "16", ""]))


def _json_dumps(value: Any, ensure_ascii: bool) -> bytes:
    try:  # NaN and Infinity are written (as a buggy sender would); ints past 4,300 digits are not
        return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8")
    except ValueError:
        return b"null"


_JSON_ENCODED = st.builds(_json_dumps, st.one_of(_JSON_VALUES, _shaped(_AMPS, _JSON_VALUES)), st.booleans())

_JSON_ODD = st.sampled_from([
    b"NaN", b"Infinity", b"-Infinity", b'{"amps": NaN}', b'{"amps": -Infinity}', b"1e999", b"-1e999", b"-0",
    b"-0.0", b"1e-400", b"\xef\xbb\xbf16", b" 16 ", b"16\n", b"0x10", b"016", b"1_6", b"16.", b".5", b"+16",
    b'{"amps": 1, "amps": 2}', b'{"amps": 16} 17', b"16 16", b"ON", b"OFF", b"on", b" ON \n", b'"ON"', b"true",
    b"True", b"null", b"None", b"", b"\x00", b"{}", b"[]", b'{"amps": {}}', b'{"": 1}', b'{"amps"}', b"[16",
    b'"\\ud800"', b'{"amps": "\\udfff"}', b'{"\\ud800": 1}', b'{"amps": 1, "\\udc00": 2}', b'["\\ud83d"]',
    b'"\\ud83d\\ude00"', b"\xed\xa0\x80", b'"\xed\xa0\x80"', b'{"\xed\xb0\x80": 1}', b'"\xc0\xaf"', b"\xff",
    b'{"amps": "\\u0000"}', b'"\\x"'])


def _nested(opener: bytes, closer: bytes, depth: int, inner: bytes, balanced: bool) -> bytes:
    """``depth`` levels around ``inner``; depth 0: as deep as fits in the payload limit (the hardest case)."""
    if depth == 0:
        depth = (MAX_PAYLOAD_BYTES - len(inner)) // (len(opener) + (len(closer) if balanced else 0))
    return opener * depth + inner + (closer * depth if balanced else b"")


#: nesting depths: any, around Python's recursion limit, or as deep as the size limit allows (0)
_DEPTHS = st.one_of(st.integers(1, 1500), st.integers(900, 1100), st.just(0))
_JSON_DEEP = st.builds(
    lambda pair, depth, inner, balanced: _nested(pair[0], pair[1], depth, inner, balanced),
    st.sampled_from([(b"[", b"]"), (b"[", b"]"), (b'{"a":', b"}"), (b'{"amps":', b"}"), (b'{"operative":', b"}"),
                     (b"[0,", b"]")]),
    _DEPTHS, st.sampled_from([b"", b"0", b"16", b"null", b'"x"', b"[", b"{"]), st.booleans())


def _long_number(negative: bool, digits: int, fraction: int, exponent: str) -> bytes:
    return (b"-" if negative else b"") + b"9" * digits + (b"." + b"5" * fraction if fraction else b"") \
        + exponent.encode()


#: digits: any, or at the edges: a 64-bit int, bounded_json's limit, a double's range, the payload limit
_DIGITS = st.one_of(st.integers(1, 1100), st.sampled_from([19, 20, 21, 39, 40, 41, 308, 309, 310, 400, 1000, 1020]))
_JSON_INTEGERS = st.builds(_long_number, st.booleans(), _DIGITS, st.just(0), st.just(""))
_JSON_FLOATS = st.builds(
    _long_number, st.booleans(), _DIGITS, st.integers(0, 400),
    st.sampled_from(["", "e5", "e308", "e309", "e999999999", "E-999999", "e+00000000000000000001"]))
_JSON_NUMBERS = st.one_of(_JSON_INTEGERS, _JSON_FLOATS)
_JSON_IN_OBJECT = st.builds(lambda key, number: b'{"' + key + b'": ' + number + b"}",
                            st.sampled_from([b"amps", b"operative"]), _JSON_NUMBERS)

JSON_HOSTILE = weighted((8, _JSON_ODD), (10, _JSON_DEEP), (8, _JSON_NUMBERS), (9, _JSON_IN_OBJECT))
JSON_PAYLOADS = weighted((4, _JSON_ENCODED), (6, JSON_HOSTILE))

# --- CBOR ----------------------------------------------------------------------------------------------

_TAG_NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 256, 258, 260, 261,
                     55799]),
    st.integers(0, 2**64 - 1))
_CBOR_KEYS = st.one_of(st.text(max_size=8), st.sampled_from(["amps", "operative"]), st.integers(), st.booleans(),
                       st.none(), st.binary(max_size=4), st.floats())
_CBOR_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**64 - 2, max_value=2**9000),
    st.floats(width=16), st.floats(width=32), st.floats(), st.binary(max_size=12), st.text(max_size=12),
    st.just(cbor2.undefined),
    st.builds(cbor2.CBORSimpleValue, st.integers(0, 19) | st.integers(32, 255)))
_CBOR_VALUES = st.recursive(
    _CBOR_SCALARS,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_CBOR_KEYS, children, max_size=4),
                               st.builds(cbor2.CBORTag, _TAG_NUMBERS, children)),
    max_leaves=10)


def _cbor_dumps(value: Any, canonical: bool) -> bytes:
    try:
        return bytes(cbor2.dumps(value, canonical=canonical))
    except Exception:  # what the encoder refuses (a few tag/value pairs) is not what this is about
        return b"\xf7"


_CBOR_ENCODED = st.builds(_cbor_dumps, st.one_of(_CBOR_VALUES, _shaped(_AMPS, _CBOR_VALUES)), st.booleans())


def head(major: int, value: int, width: int | None = None) -> bytes:
    """A CBOR item header: major type and argument, in the shortest form or ``width`` bytes (0, 1, 2, 4, 8)."""
    if width is None:
        width = 0 if value < 24 else 1 if value < 2**8 else 2 if value < 2**16 else 4 if value < 2**32 else 8
    if width == 0:
        return bytes([major << 5 | value])
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | ai]) + value.to_bytes(width, "big")


_CBOR_DEEP = st.builds(
    lambda prefix, depth, tail, close: _nested(prefix, b"\xff", depth, tail, close),
    st.sampled_from([b"\x81", b"\x9f", b"\xa1\x00", b"\xa1\x64amps", b"\xbf\x00", b"\xd8\x1c", b"\xd9\xd9\xf7",
                     b"\xc2", b"\xc6", b"\x82\x00"]),
    _DEPTHS, st.sampled_from([b"\x00", b"\xf6", b"\x10", b"", b"\xff"]), st.booleans())
_CBOR_LENGTHS = st.builds(
    lambda major, length, width, rest: head(major, length % (2 ** (8 * width)), width) + rest,
    st.integers(2, 5), st.one_of(st.integers(0, 40), st.integers(0, 2**64 - 1)), st.sampled_from([1, 2, 4, 8]),
    st.binary(max_size=8))
_CBOR_BIGNUMS = st.builds(
    lambda tag, length, fill: head(6, tag) + head(2, length) + fill * length, st.sampled_from([2, 3]),
    st.one_of(st.integers(0, 1000), st.sampled_from([8, 9, 128, 129, 1000])),
    st.sampled_from([b"\x00", b"\x01", b"\xff"]))
# hand-made items, in hex: reserved additional info, lone breaks, truncated heads, malformed indefinite
# strings, unclosed containers, simple values, half/single/double NaN and infinities, trailing bytes, odd map
# keys, shared references, decimal/bigfloat with huge exponents, rationals, regexes, MIME, sets, string
# references, invalid UTF-8 and surrogates in text strings, extreme integers, the self-describe tag
_CBOR_ODD = st.sampled_from([bytes.fromhex(h) for h in """
    1c 3d 5c 7d 9e bd dc fc fd fe ff 18 1901 1b00
    5f01ff 5f4161ff 5f6161ff 5f5fffff 7f7fffff 7f61616162ff 7f4161ff 5f4161 9f 9f00 bf00ff bf00 a100
    f810 f81f f820 f8ff f0 f7 f97e00 f97c00 f9fc00 f98000 fa7fc00000 fb7ff8000000000000
    0aff 0a0a a164616d70730a00 a264616d70730a64616d70730b a1800a a1a00a a1f97e000a a1f70a a1c241010a
    d81d00 d81c81d81d00 c11bffffffffffffffff c06178 c4821b7fffffffffffffff01 c5821a7fffffff01 d81e820100
    d8236128 d82460 d901028180 d901008100
    62eda0 63eda080 61ff 64f4908080 a163eda0800a
    3bffffffffffffffff 1bffffffffffffffff a164616d70733bffffffffffffffff a164616d7073f97c00
    a1696f7065726174697665f5 a1696f7065726174697665f7 d9d9f70a d9d9f7a164616d70730a da000100000a
    dbffffffffffffffff0a
    """.split()])

CBOR_HOSTILE = weighted((10, _CBOR_ODD), (8, _CBOR_DEEP), (7, _CBOR_LENGTHS), (10, _CBOR_BIGNUMS))
CBOR_PAYLOADS = weighted((4, _CBOR_ENCODED), (6, CBOR_HOSTILE))

# --- anything ------------------------------------------------------------------------------------------

_OVERSIZED = st.builds(lambda chunk, size: (chunk * (size // len(chunk) + 1))[:size],
                       st.binary(min_size=1, max_size=8) | st.sampled_from([b"[", b"9", b'{"a":', b"\x81"]),
                       st.integers(MAX_PAYLOAD_BYTES - 2, 4 * MAX_PAYLOAD_BYTES))


@st.composite
def _mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A payload with a few byte-level edits: flipped, inserted, deleted, duplicated bytes, or cut short."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "repeat", "header"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 4))]
        elif op == "cut":
            del data[pos:]
        elif op == "repeat":
            end = pos + draw(st.integers(1, 8))
            data[pos:pos] = data[pos:end] * draw(st.integers(1, 100))
        elif op == "header":  # a byte that starts a CBOR item or a JSON token
            data[pos:pos] = bytes([draw(st.sampled_from([0x18, 0x1B, 0x5B, 0x5F, 0x7F, 0x9B, 0x9F, 0xBF, 0xC2, 0xD8,
                                                         0xF7, 0xF9, 0xFF, 0x5B, 0x7B, 0x22, 0x5C]))])
    return bytes(data)


def payloads(fmt: str) -> st.SearchStrategy[bytes]:
    """Payloads for an agent reading ``fmt``: mostly in its format (a third of them hostile by design), some
    in the other, binary, oversized, and byte-level mutations of all of these."""
    other = CBOR_PAYLOADS if fmt == "json" else JSON_PAYLOADS
    encoded, hostile = (_JSON_ENCODED, JSON_HOSTILE) if fmt == "json" else (_CBOR_ENCODED, CBOR_HOSTILE)
    base = weighted((25, encoded), (35, hostile), (10, other), (5, st.binary(max_size=64)), (5, _OVERSIZED))
    return weighted((80, base), (20, _mutated(base)))
