"""I/O board link layer: COBS framing with a CRC-32 trailer (pure, no I/O).

A frame on the wire is ``COBS(payload || CRC32_LE(payload)) 0x00`` (docs/ioboard-protocol.md §2).
COBS removes every 0x00 from the encoded bytes, so 0x00 only ever means "end of frame": a receiver
that lost sync (noise, a truncated frame, a reset mid-frame) is back in step at the next 0x00.
The CRC is CRC-32/ISO-HDLC, the one in ``zlib.crc32`` and in the CRC units of most Cortex-M parts.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DELIMITER = 0x00
CRC_LEN = 4
MAX_PAYLOAD_LEN = 250  # CBOR bytes in one frame
MAX_DECODED_LEN = MAX_PAYLOAD_LEN + CRC_LEN  # 254: COBS adds exactly one byte up to this length
MAX_ENCODED_LEN = MAX_DECODED_LEN + 1  # 255 bytes between two delimiters
MAX_WIRE_LEN = MAX_ENCODED_LEN + 1  # 256 with the terminating 0x00
CRC_CHECK_VALUE = 0xCBF43926  # crc32(b"123456789"), the catalogue check value
CRC_RESIDUE = 0x2144DF1C  # crc32(payload || CRC32_LE(payload)) for every intact frame


class CodecError(ValueError):
    """Base of every error this module raises on bad input."""


class CobsError(CodecError):
    """The bytes between two delimiters are not valid COBS (e.g. a truncated block)."""


class FrameTooShortError(CodecError):
    """A frame too short to hold one payload byte and the CRC."""


class FrameTooLongError(CodecError):
    """A frame (or a payload to be sent) beyond the protocol's maximum length."""


class CrcError(CodecError):
    """The CRC trailer does not match the payload: the frame was corrupted on the line."""


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC: poly 0x04C11DB7, init 0xFFFFFFFF, refin/refout true, xorout 0xFFFFFFFF."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (Cheshire & Baker); the result contains no 0x00 and no delimiter.

    A block of 254 non-zero bytes gets code 0xFF and no implied zero; when the data ends exactly
    on such a block no empty block follows. Up to 254 input bytes the result is one byte longer.
    """
    out = bytearray([0])  # placeholder for the first code byte
    code_at = 0
    code = 1
    last = len(data) - 1
    for i, byte in enumerate(data):
        if byte == DELIMITER:
            out[code_at] = code
            code_at = len(out)
            out.append(0)
            code = 1
            continue
        out.append(byte)
        code += 1
        if code == 0xFF:
            out[code_at] = code
            if i == last:
                return bytes(out)
            code_at = len(out)
            out.append(0)
            code = 1
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Decode one COBS block sequence (without its delimiter); :class:`CobsError` if malformed."""
    out = bytearray()
    pos = 0
    n = len(data)
    while pos < n:
        code = data[pos]
        if code == 0:
            raise CobsError(f"0x00 inside a frame at offset {pos}")
        end = pos + code
        if end > n:
            raise CobsError(f"truncated: block at offset {pos} wants {code - 1} bytes, {n - pos - 1} left")
        block = data[pos + 1 : end]
        if DELIMITER in block:
            raise CobsError(f"0x00 inside a frame at offset {pos + 1 + block.index(DELIMITER)}")
        out += block
        pos = end
        if code != 0xFF and pos < n:
            out.append(0)
    return bytes(out)


def encode_frame(payload: bytes) -> bytes:
    """Wire bytes for ``payload``: COBS(payload || CRC32 little-endian) followed by 0x00."""
    if not payload:
        raise FrameTooShortError("empty payload")
    if len(payload) > MAX_PAYLOAD_LEN:
        raise FrameTooLongError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_LEN}")
    return cobs_encode(payload + crc32(payload).to_bytes(CRC_LEN, "little")) + bytes([DELIMITER])


def decode_frame(encoded: bytes) -> bytes:
    """Payload of one frame given the bytes between two delimiters; raises a :class:`CodecError`."""
    if len(encoded) > MAX_ENCODED_LEN:
        raise FrameTooLongError(f"frame of {len(encoded)} encoded bytes exceeds {MAX_ENCODED_LEN}")
    raw = cobs_decode(encoded)
    if len(raw) < CRC_LEN + 1:
        raise FrameTooShortError(f"frame of {len(raw)} bytes is shorter than payload + CRC")
    payload, trailer = raw[:-CRC_LEN], raw[-CRC_LEN:]
    got, want = int.from_bytes(trailer, "little"), crc32(payload)
    if got != want:
        raise CrcError(f"CRC mismatch: frame says {got:#010x}, payload gives {want:#010x}")
    return payload


@dataclass
class DecoderStats:
    """What a :class:`FrameDecoder` threw away, by cause (one count per bad frame)."""

    frames: int = 0  # good frames delivered
    crc_errors: int = 0
    cobs_errors: int = 0  # malformed or truncated COBS
    too_short: int = 0
    oversized: int = 0

    @property
    def dropped(self) -> int:
        return self.crc_errors + self.cobs_errors + self.too_short + self.oversized


class FrameDecoder:
    """Splits a byte stream into payloads, whatever the chunking; bad frames are dropped and counted.

    Empty frames (two delimiters in a row) are idle fill and neither delivered nor counted. An
    oversized frame is discarded up to the next delimiter without buffering it, so memory stays
    bounded by ``MAX_ENCODED_LEN`` whatever arrives on the line.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self.last_error: CodecError | None = None
        self._buf = bytearray()
        self._overflow = False

    def reset(self) -> None:
        """Forget a partial frame (e.g. after the port was reopened)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume ``chunk``; return the payloads of the frames it completed, in order."""
        payloads: list[bytes] = []
        start = 0
        while start < len(chunk):
            end = chunk.find(DELIMITER, start)
            if end < 0:
                self._append(chunk[start:])
                break
            self._append(chunk[start:end])
            self._finish(payloads)
            start = end + 1
        return payloads

    def _append(self, part: bytes) -> None:
        if self._overflow:
            return
        self._buf += part
        if len(self._buf) > MAX_ENCODED_LEN:
            self._overflow = True
            self._buf.clear()

    def _finish(self, payloads: list[bytes]) -> None:
        if self._overflow:
            self._overflow = False
            self.stats.oversized += 1
            self.last_error = FrameTooLongError(f"frame longer than {MAX_ENCODED_LEN} encoded bytes")
            return
        if not self._buf:
            return
        encoded = bytes(self._buf)
        self._buf.clear()
        try:
            payload = decode_frame(encoded)
        except CrcError as exc:
            self.stats.crc_errors += 1
            self.last_error = exc
        except CobsError as exc:
            self.stats.cobs_errors += 1
            self.last_error = exc
        except FrameTooShortError as exc:
            self.stats.too_short += 1
            self.last_error = exc
        else:
            self.stats.frames += 1
            payloads.append(payload)
