"""Link framing of docs/ioboard-protocol.md §2: COBS(payload || CRC-32 LE) 0x00.

Pure byte handling, no I/O. The receive side keeps one preallocated 255-byte buffer whatever
arrives on the line: an oversized frame is skipped up to the next 0x00 without being stored.
"""

from micropython import const

_table = None


def crc32_soft(data, crc=0):
    """CRC-32/ISO-HDLC in Python, for a port built without ``binascii.crc32`` (the table is built on
    first use: 1 KB of RAM only where it is needed)."""
    global _table
    if _table is None:
        _table = []
        for n in range(256):
            c = n
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            _table.append(c)
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:
    from binascii import crc32
except ImportError:
    crc32 = crc32_soft


MAX_PAYLOAD = const(250)
MAX_ENCODED = const(255)  # bytes between two delimiters: COBS of 254 bytes

# FrameReader.feed results besides a payload
BAD_COBS = const(1)
TOO_SHORT = const(2)
BAD_CRC = const(3)
OVERSIZED = const(4)


def cobs_encode(data):
    """COBS without the delimiter; a full 254-byte block at the very end gets no empty block after it."""
    out = bytearray(len(data) + len(data) // 254 + 1)
    code_at = 0
    code = 1
    o = 1
    last = len(data) - 1
    for i, b in enumerate(data):
        if b == 0:
            out[code_at] = code
            code_at = o
            o += 1
            code = 1
            continue
        out[o] = b
        o += 1
        code += 1
        if code == 0xFF:
            out[code_at] = code
            if i == last:
                return bytes(out[:o])
            code_at = o
            o += 1
            code = 1
    out[code_at] = code
    return bytes(out[:o])


def cobs_decode(data, n=None):
    """Decode ``data[:n]``; None when malformed (a code pointing past the end, a 0x00 inside)."""
    if n is None:
        n = len(data)
    out = bytearray(n)
    o = 0
    pos = 0
    while pos < n:
        code = data[pos]
        if code == 0:
            return None
        end = pos + code
        if end > n:
            return None
        for i in range(pos + 1, end):
            b = data[i]
            if b == 0:
                return None
            out[o] = b
            o += 1
        pos = end
        if code != 0xFF and pos < n:
            out[o] = 0
            o += 1
    return out[:o]


def encode_frame(payload):
    """Wire bytes for one payload, with the optional leading 0x00 (§2.1 item 5) and the delimiter."""
    crc = crc32(payload) & 0xFFFFFFFF
    raw = bytearray(payload)
    raw.extend(bytes((crc & 0xFF, (crc >> 8) & 0xFF, (crc >> 16) & 0xFF, crc >> 24)))
    return b"\x00" + cobs_encode(raw) + b"\x00"


class FrameReader:
    """Splits the byte stream at 0x00 into payloads (§2.4); bad frames are dropped and counted."""

    def __init__(self):
        self._buf = bytearray(MAX_ENCODED)
        self._n = 0
        self._overflow = False
        self.frames = 0
        self.dropped = 0

    def reset(self):
        self._n = 0
        self._overflow = False

    def feed(self, data, on_payload):
        """Consume ``data``; call ``on_payload(payload)`` for each good frame, in order."""
        buf = self._buf
        for b in data:
            if b != 0:
                if self._overflow:
                    continue
                if self._n == MAX_ENCODED:
                    self._overflow = True
                    continue
                buf[self._n] = b
                self._n += 1
                continue
            result = self._finish()
            if result is not None and not isinstance(result, int):
                on_payload(result)

    def _finish(self):
        n = self._n
        self._n = 0
        if self._overflow:
            self._overflow = False
            self.dropped += 1
            return OVERSIZED
        if n == 0:
            return None  # idle fill
        raw = cobs_decode(self._buf, n)
        if raw is None:
            self.dropped += 1
            return BAD_COBS
        if len(raw) < 5:
            self.dropped += 1
            return TOO_SHORT
        k = len(raw) - 4
        got = raw[k] | raw[k + 1] << 8 | raw[k + 2] << 16 | raw[k + 3] << 24
        payload = bytes(raw[:k])
        if crc32(payload) & 0xFFFFFFFF != got:
            self.dropped += 1
            return BAD_CRC
        self.frames += 1
        return payload
