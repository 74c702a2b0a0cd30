"""The CBOR subset of docs/ioboard-protocol.md §3.1: one definite-length map with unsigned integer
keys and integer, boolean or text values.

``decode_map`` reads any valid definite-length encoding (not only the shortest forms) and reports
what is wrong instead of raising, so the caller can still answer with the ``seq`` it read. Items the
protocol forbids (floats, tags, byte strings, arrays, maps, null) are skipped over to check the rest
of the payload and make the message invalid. ``encode_map`` writes deterministic CBOR (RFC 8949
§4.2.1: shortest forms, keys ascending).
"""

from micropython import const

_MAX_DEPTH = const(4)


class CborError(Exception):
    pass


def _head(buf, pos):
    """(major type, argument, next position) of the item at ``pos``; the argument is None for
    indefinite length and for the simple/float values that carry no integer argument."""
    if pos >= len(buf):
        raise CborError("truncated")
    ib = buf[pos]
    major = ib >> 5
    info = ib & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:
        if info == 31:
            return major, None, pos
        raise CborError("reserved additional information %d" % info)
    size = 1 << (info - 24)
    if pos + size > len(buf):
        raise CborError("truncated")
    value = 0
    for i in range(size):
        value = (value << 8) | buf[pos + i]
    return major, value, pos + size


def _skip(buf, pos, depth):
    """Position after the (forbidden) item at ``pos``."""
    if depth > _MAX_DEPTH:
        raise CborError("nested too deep")
    major, arg, pos = _head(buf, pos)
    if arg is None:
        raise CborError("indefinite-length item")
    if major in (2, 3):
        if pos + arg > len(buf):
            raise CborError("truncated")
        return pos + arg
    if major == 4:
        for _ in range(arg):
            pos = _skip(buf, pos, depth + 1)
        return pos
    if major == 5:
        for _ in range(2 * arg):
            pos = _skip(buf, pos, depth + 1)
        return pos
    if major == 6:
        return _skip(buf, pos, depth + 1)
    return pos  # 0, 1: integers; 7: simple values and floats (their bytes are in the head)


def _value(buf, pos):
    """(value, next position, problem): the value is None when its type is not allowed."""
    start = pos
    major, arg, pos = _head(buf, pos)
    if major == 0 and arg is not None:
        return arg, pos, None
    if major == 1 and arg is not None:
        return -1 - arg, pos, None
    if major == 3 and arg is not None:
        if pos + arg > len(buf):
            raise CborError("truncated text")
        raw = bytes(buf[pos:pos + arg])
        try:
            text = raw.decode()
        except UnicodeError:
            raise CborError("text is not UTF-8") from None
        return text, pos + arg, None
    if major == 7 and (buf[start] & 0x1F) in (20, 21):
        return (buf[start] & 0x1F) == 21, pos, None
    end = _skip(buf, start, 1)
    return None, end, "a %s is not allowed" % _NAMES[major]


_NAMES = ("negative key", "negative key", "byte string", "text key", "array", "map", "tag", "simple value or float")


def decode_map(buf):
    """(entries, problem): ``entries`` maps the unsigned integer keys read to their values (as far as
    decoding got), ``problem`` is None for a valid payload or says what is wrong."""
    entries = {}
    try:
        major, count, pos = _head(buf, 0)
        if major != 5:
            return entries, "payload is not a map"
        if count is None:
            return entries, "indefinite-length map"
        problem = None
        for _ in range(count):
            kmajor, key, kpos = _head(buf, pos)
            if kmajor != 0 or key is None:
                pos = _skip(buf, _skip(buf, pos, 1), 1)
                problem = problem or "map key is not an unsigned integer"
                continue
            value, pos, vproblem = _value(buf, kpos)
            if vproblem is not None:
                problem = problem or "key %d: %s" % (key, vproblem)
                continue
            if key in entries:
                problem = problem or "duplicate key %d" % key
                continue
            entries[key] = value
        if pos != len(buf):
            return entries, "%d bytes after the map" % (len(buf) - pos)
        return entries, problem
    except CborError as exc:
        return entries, "bad CBOR: %s" % exc.args[0]


def _put_head(out, major, value):
    mt = major << 5
    if value < 24:
        out.append(mt | value)
    elif value < 0x100:
        out.append(mt | 24)
        out.append(value)
    elif value < 0x10000:
        out.append(mt | 25)
        out.extend(value.to_bytes(2, "big"))
    elif value < 0x100000000:
        out.append(mt | 26)
        out.extend(value.to_bytes(4, "big"))
    else:
        out.append(mt | 27)
        out.extend(value.to_bytes(8, "big"))


def encode_map(items):
    """Deterministic CBOR of a map given as ``(key, value)`` pairs in ascending key order."""
    out = bytearray()
    _put_head(out, 5, len(items))
    for key, value in items:
        _put_head(out, 0, key)
        if value is True:
            out.append(0xF5)
        elif value is False:
            out.append(0xF4)
        elif isinstance(value, str):
            raw = value.encode()
            _put_head(out, 3, len(raw))
            out.extend(raw)
        elif value < 0:
            _put_head(out, 1, -1 - value)
        else:
            _put_head(out, 0, value)
    return bytes(out)
