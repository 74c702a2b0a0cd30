"""Runs inside MicroPython (tests/test_ioboard_firmware.py): applies the firmware's own codec to the
cases the test hands over through ``host.call("cases")`` and prints one JSON result per case."""

import json
import sys
from binascii import hexlify, unhexlify

import host

sys.path.insert(0, "/fw")
from iob import frame, proto


def hx(data):
    return hexlify(data).decode()


def run(case):
    op = case["op"]
    if op == "crc32":
        data = unhexlify(case["data"])
        return [frame.crc32(data) & 0xFFFFFFFF, frame.crc32_soft(data)]
    if op == "cobs":
        raw = unhexlify(case["raw"])
        encoded = frame.cobs_encode(raw)
        decoded = frame.cobs_decode(unhexlify(case["encoded"]))
        return [hx(encoded), None if decoded is None else hx(decoded)]
    if op == "cobs_decode":
        decoded = frame.cobs_decode(unhexlify(case["encoded"]))
        return None if decoded is None else hx(decoded)
    if op == "frame":
        return hx(frame.encode_frame(unhexlify(case["payload"])))
    if op == "encode":
        fn = getattr(proto, case["message"])
        return hx(fn(*case["args"]))
    if op == "parse":
        try:
            kind, seq, args = proto.parse_command(unhexlify(case["payload"]))
        except proto.Invalid as exc:
            return ["invalid", exc.reason, exc.seq, exc.text]
        return [kind, seq, list(args) if isinstance(args, tuple) else args]
    if op == "read":
        reader = frame.FrameReader()
        out = []
        for chunk in case["chunks"]:
            reader.feed(unhexlify(chunk), lambda p: out.append(hx(p)))
        return [out, reader.frames, reader.dropped]
    raise ValueError("unknown op " + op)


for case in json.loads(host.call("cases", b"")):
    print(json.dumps(run(case)))
print("done")
