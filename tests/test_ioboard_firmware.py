"""The I/O board firmware's codec (mcu/ioboard/iob/) run inside a real MicroPython: the test vectors of
docs/ioboard-protocol.md §8-9, the validity rules of §3.5 and the receiver of §2.4.

One interpreter run executes every case (tests/mpy/vectors_runner.py); this side builds the cases
from the spec and compares. Where a rule is checked against the host's codec (hal/ioboard/) too, the
two implementations of the same document must agree.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import cbor2
import pytest

from hal.ioboard.codec import encode_frame
from hal.ioboard.messages import MessageError, MsgType, decode_message
from sim.devices.ioboard_mcu import FIRMWARE_DIR, FLASH_CHIP_RESULT_CAP, HOST_BUFFER_EXTRA
from sim.devices.mpy_vm import RESULT_CAP_BYTES, MicroPythonVm, run_script
from tests.test_ioboard_codec import COBS_VECTORS, _diag_to_python, _spec_examples

RUNNER = (Path(__file__).parent / "mpy" / "vectors_runner.py").read_text()

# (payload, expected): expected is [type, seq, args] for a valid command, ["invalid", reason, seq]
# otherwise (reasons: 1 UNKNOWN_TYPE, 2 BAD_MESSAGE, 3 OUT_OF_RANGE; seq None = no answer possible).
INVALID_AND_EDGE_CASES: list[tuple[bytes, list[Any]]] = [
    (cbor2.dumps({0: 3, 1: 5, 2: 1}), ["invalid", 2, 5]),  # PWM without duty
    (cbor2.dumps({0: 3, 1: 5, 2: 1, 3: 2000}), ["invalid", 3, 5]),
    (cbor2.dumps({0: 3, 1: 5, 2: 1, 3: 29}), ["invalid", 3, 5]),  # below 3 %
    (cbor2.dumps({0: 3, 1: 5, 2: 1, 3: 970}), [3, 5, [1, 970]]),
    (cbor2.dumps({0: 3, 1: 5, 2: 0, 3: 990}), [3, 5, [0, 0]]),  # duty ignored with X1
    (cbor2.dumps({0: 3, 1: 5, 2: 9}), ["invalid", 3, 5]),  # no such mode
    (cbor2.dumps({0: 4, 1: 6, 2: 1}), ["invalid", 2, 6]),  # integer where a boolean is required
    (cbor2.dumps({0: 4, 1: 6, 2: True}), [4, 6, True]),
    (cbor2.dumps({0: 8, 1: 6, 2: False}), [8, 6, False]),  # SET_LOCK (1.1)
    (cbor2.dumps({0: 8, 1: 6, 2: 1}), ["invalid", 2, 6]),
    (cbor2.dumps({0: 8, 1: 6}), ["invalid", 2, 6]),
    (cbor2.dumps({0: 99, 1: 7}), ["invalid", 1, 7]),
    (cbor2.dumps({0: 17, 1: 7}), ["invalid", 1, 7]),  # a board message is not a host command
    (cbor2.dumps({0: 2}), ["invalid", 2, None]),  # no seq
    (cbor2.dumps({0: 2, 1: 300}), ["invalid", 2, None]),  # seq out of range
    (cbor2.dumps({0: 2, 1: True}), ["invalid", 2, None]),  # a boolean is no seq
    (cbor2.dumps({1: 8}), ["invalid", 2, 8]),  # no type
    (cbor2.dumps([1, 2, 3]), ["invalid", 2, None]),
    (cbor2.dumps({0: 2, 1: 9}) + b"\x00", ["invalid", 2, 9]),  # trailing byte
    (cbor2.dumps({0: 2, 1: 9, 23: "future"}), [2, 9, None]),  # unknown keys are ignored
    (cbor2.dumps({0: 2, 1: 9, 23: 1.5}), ["invalid", 2, 9]),  # ... but follow the encoding rules
    (cbor2.dumps({0: 2, 1: 9, 5: b"\x01"}), ["invalid", 2, 9]),  # byte string
    (cbor2.dumps({0: 2, 1: 9, 5: [1]}), ["invalid", 2, 9]),  # array
    (cbor2.dumps({0: 2, 1: 9, 5: None}), ["invalid", 2, 9]),  # null
    (cbor2.dumps({0: 2, 1: 9, 5: cbor2.CBORTag(1, 0)}), ["invalid", 2, 9]),  # tag
    (cbor2.dumps({0: 2, 1: 9, "x": 1}), ["invalid", 2, 9]),  # text key
    (cbor2.dumps({0.0: 18, True: 5, 2.0: 3}), ["invalid", 2, None]),  # §3.5: not an ACK, not anything
    (bytes.fromhex("a2 00 02 00 03"), ["invalid", 2, None]),  # duplicate key 0, no seq
    (bytes.fromhex("bf 00 02 01 09 ff"), ["invalid", 2, None]),  # indefinite-length map
    (bytes.fromhex("a2 18 00 18 02 19 00 01 1a 00 00 00 09"), [2, 9, None]),  # long forms are valid CBOR
    (bytes.fromhex("a2 00 02 01"), ["invalid", 2, None]),  # truncated
    (b"\xff\xff", ["invalid", 2, None]),
    (cbor2.dumps({0: 1, 1: 0, 2: 1, 3: 0, 4: "x" * 33}), ["invalid", 3, 0]),  # host_name > 32 bytes
    (cbor2.dumps({0: 1, 1: 0, 2: 2, 3: 1}), [1, 0, [2, 1]]),  # another major: parsed, refused by the link
    (cbor2.dumps({0: 6, 1: 3, 2: 1 << 32}), ["invalid", 3, 3]),  # mask beyond 32 bits
    (cbor2.dumps({0: 6, 1: 3, 2: -1}), ["invalid", 3, 3]),
]


def _run(cases: list[dict[str, Any]]) -> list[Any]:
    payload = json.dumps(cases).encode()
    lines, outcome = run_script(FIRMWARE_DIR, RUNNER, host_functions={"cases": lambda _: payload})
    assert outcome.reason == "exit", outcome
    assert lines[-1] == "done"
    return [json.loads(line) for line in lines[:-1]]


def _board_encoder_call(diag: dict[int, Any]) -> dict[str, Any] | None:
    """The firmware encoder call that should produce this example's payload (None for host messages)."""
    kind, seq = diag[0], diag[1]
    if kind == MsgType.BOARD_HELLO:
        assert diag[4] == "1.1.0"  # the firmware's own version, as in the example
        return {"message": "board_hello", "args": [seq, diag[5], diag[6], diag[7], diag[8], diag[9]]}
    if kind == MsgType.STATE:
        return {"message": "state", "args": [seq, diag[2], diag[3], diag.get(4, 0), diag[5], diag[6], diag[7],
                                             diag.get(8), diag.get(9)]}
    if kind == MsgType.ACK:
        return {"message": "ack", "args": [seq, diag[2]]}
    if kind == MsgType.NACK:
        return {"message": "nack", "args": [seq, diag[2], diag[3], diag.get(4, "")]}
    return None


def _host_view(payload: bytes) -> tuple[bool, int | None, int | None, int | None]:
    """(valid command, type, seq, NACK reason) by the host's codec, for the differential check."""
    try:
        env = decode_message(payload)
    except MessageError as exc:
        if exc.msg_type in set(MsgType) and exc.msg_type >= MsgType.BOARD_HELLO and exc.seq is not None \
                and str(exc).startswith(f"{MsgType(exc.msg_type).name}:"):
            return False, None, exc.seq, 1  # a malformed board message is still not a host command
        return False, None, exc.seq, int(exc.reason)
    kind = _type_of(payload)
    if kind >= MsgType.BOARD_HELLO:
        return False, None, env.seq, 1  # valid message, but not a command a board takes
    return True, kind, env.seq, None


def _type_of(payload: bytes) -> int:
    value = cbor2.loads(payload)[0]
    assert isinstance(value, int)
    return value


def _random_payloads(n: int, seed: int) -> list[bytes]:
    """CBOR maps near the protocol: right and wrong keys, types and ranges."""
    rng = random.Random(seed)
    values: list[Any] = [0, 1, 2, 3, 7, 16, 17, 30, 255, 256, 970, 971, -1, 1 << 32, True, False, "ab", 1.5, None,
                         b"\x00", [1]]
    out = []
    for _ in range(n):
        m: dict[Any, Any] = {}
        if rng.random() < 0.95:
            m[0] = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 16, 18, 31, True, "x"])
        if rng.random() < 0.9:
            m[1] = rng.choice([0, 5, 255, 256, -3, True])
        for key in rng.sample([2, 3, 4, 9, 23], rng.randrange(0, 4)):
            m[key] = rng.choice(values)
        out.append(cbor2.dumps(m))
    return out


def test_codec_vectors_and_validity_inside_micropython() -> None:
    examples = _spec_examples()
    randoms = _random_payloads(300, seed=15)
    cases: list[dict[str, Any]] = [{"op": "crc32", "data": b"123456789".hex()}]
    cases += [{"op": "cobs", "raw": raw.hex(), "encoded": enc.hex()} for raw, enc in COBS_VECTORS]
    cases += [{"op": "cobs_decode", "encoded": bad} for bad in ("051122", "03110022", "0011")]
    for ex in examples:
        payload = bytes.fromhex(ex["payload"].split("(")[0])
        cases.append({"op": "frame", "payload": payload.hex()})
        call = _board_encoder_call(_diag_to_python(ex["diag"]))  # type: ignore[arg-type]
        cases.append({"op": "encode", **call} if call else {"op": "parse", "payload": payload.hex()})
    cases += [{"op": "parse", "payload": p.hex()} for p, _ in INVALID_AND_EDGE_CASES]
    cases += [{"op": "parse", "payload": p.hex()} for p in randoms]
    results = iter(_run(cases))

    assert next(results) == [0xCBF43926, 0xCBF43926]  # binascii.crc32 and the table fallback
    for raw, encoded in COBS_VECTORS:
        assert next(results) == [encoded.hex(), raw.hex()]
    assert [next(results) for _ in range(3)] == [None, None, None]  # truncated, 0x00 inside
    for ex in examples:
        diag = _diag_to_python(ex["diag"])
        assert isinstance(diag, dict)
        payload = bytes.fromhex(ex["payload"].split("(")[0])
        assert next(results) == "00" + bytes.fromhex(ex["wire"]).hex(), ex["diag"]
        got = next(results)
        if _board_encoder_call(diag):
            assert got == payload.hex(), ex["diag"]  # deterministic encoding, byte for byte
        else:
            assert got[:2] == [diag[0], diag[1]], ex["diag"]
    for payload, expected in INVALID_AND_EDGE_CASES:
        got = next(results)
        assert got[:3] == expected, (payload.hex(), got)
        if got[0] == "invalid":
            assert got[3], "a NACK says why"
    disagreements = []
    for payload in randoms:
        got = next(results)
        valid, kind, seq, reason = _host_view(payload)
        mine = (got[0] != "invalid", None if got[0] == "invalid" else got[0], got[1] if got[0] != "invalid"
                else got[2], got[1] if got[0] == "invalid" else None)
        if mine != (valid, kind, seq, reason):
            disagreements.append((payload.hex(), mine, (valid, kind, seq, reason)))
    assert not disagreements


def test_frame_reader_inside_micropython_drops_and_counts_and_resyncs() -> None:
    good = [cbor2.dumps({0: 2, 1: i}) for i in range(3)]
    frames = [encode_frame(p) for p in good]
    corrupt = bytearray(frames[1])
    corrupt[3] ^= 0x40  # a flipped bit inside: CRC error
    stream = (b"\x00\x00" + bytes(range(1, 200)) * 2 + b"\x00"  # oversized (398 bytes), skipped unbuffered
              + frames[0]
              + b"\x05\x11\x22\x00"  # COBS code pointing past the end
              + b"\x02\x11\x00"  # too short for payload + CRC
              + bytes(corrupt)
              + frames[1] + frames[2])
    one_by_one = [stream[i:i + 1].hex() for i in range(len(stream))]
    (got_whole, got_bytes) = _run([{"op": "read", "chunks": [stream.hex()]}, {"op": "read", "chunks": one_by_one}])
    for payloads, n_frames, dropped in (got_whole, got_bytes):
        assert payloads == [p.hex() for p in good]
        assert (n_frames, dropped) == (3, 4)


@pytest.mark.parametrize("size", [250, 251])
def test_largest_frame_fits_the_receive_buffer(size: int) -> None:
    payload = cbor2.dumps({0: 2, 1: 1, 4: "y" * (size - 8)})
    assert len(payload) == size
    wire = b"\x00" + encode_frame(payload) if size <= 250 else b"\x00" + _unchecked_frame(payload)
    (result,) = _run([{"op": "read", "chunks": [wire.hex()]}])
    assert result == ([[payload.hex()], 1, 0] if size <= 250 else [[], 0, 1])


def _unchecked_frame(payload: bytes) -> bytes:
    from hal.ioboard.codec import cobs_encode, crc32

    return cobs_encode(payload + crc32(payload).to_bytes(4, "little")) + b"\x00"


# --- the safety logic (iob/safety.py) on a clock of the test's own ------------------------------------------

SAFETY_RUNNER = (Path(__file__).parent / "mpy" / "safety_runner.py").read_text()
EV_B, EV_C = 9000, 6000  # mV on the positive half
X1, PWM, F = 0, 1, 2
#: permission, EV in B, 26.7 % PWM; the EV goes to C at 100 ms: closed (C2) from about 115 ms
CHARGING = [["allow", True], ["ev", EV_B, True], ["pwm", PWM, 267], ["run", 100], ["ev", EV_C, True], ["run", 200]]


def _safety(scenarios: dict[str, list[list[Any]]], c1_ms: dict[str, int] | None = None,
            no_lock: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Run the scenarios (tests/mpy/safety_runner.py); those in ``no_lock`` on a board without CABLE_LOCK."""
    specs = [{"c1_ms": (c1_ms or {}).get(name), "lock_cap": name not in no_lock, "ops": ops}
             for name, ops in scenarios.items()]
    payload = json.dumps(specs).encode()
    lines, outcome = run_script(FIRMWARE_DIR, SAFETY_RUNNER, host_functions={"scenarios": lambda _: payload})
    assert outcome.reason == "exit", outcome
    assert lines[-1] == "done"
    return dict(zip(scenarios, (json.loads(line) for line in lines[:-1]), strict=True))


def _coil_changes(passes: list[list[Any]]) -> list[tuple[int, bool]]:
    """(time, coil) wherever the coil changed, from off at 0 ms."""
    changes, coil = [], False
    for t, on, *_ in passes:
        if on != coil:
            changes.append((t, on))
            coil = on
    return changes


def test_safety_closes_only_in_c2_d2_and_gives_c1_at_most_t_c1_inside_micropython() -> None:
    """B7/B8 on the firmware's clock: no supply in C1 (X1); the coil within 20 ms of C2 (a debounced
    reading taken with the PWM running); the PWM stopped in C opens after T_c1 = 6 s (IEC 61851-1
    Table A.6 sequence 10.2) unless the EV goes to B first or the PWM comes back; F opens at once."""
    got = _safety({
        "c1_never_closes": [["allow", True], ["ev", EV_C, True], ["run", 200], ["pwm", PWM, 267], ["run", 300]],
        "c1_timeout": [*CHARGING, ["pwm", X1, 0], ["run", 6400]],
        "c1_then_b": [*CHARGING, ["pwm", X1, 0], ["run", 1200], ["ev", EV_B, True], ["run", 1400]],
        "c1_then_pwm": [*CHARGING, ["pwm", X1, 0], ["run", 3200], ["pwm", PWM, 267], ["run", 4200], ["pwm", X1, 0],
                        ["run", 10400]],
        "f": [*CHARGING, ["pwm", F, 0], ["run", 300], ["pwm", PWM, 267], ["run", 400]],
        "diode_at_pwm_start": [["allow", True], ["ev", EV_C, False], ["run", 100], ["pwm", PWM, 267], ["run", 300],
                               ["allow", True]],
        "board_limit": [["run", 5]],
        "board_shorter": [*CHARGING, ["pwm", X1, 0], ["run", 900]],
    }, c1_ms={"board_limit": 10000, "board_shorter": 500})

    (t_on, on), = _coil_changes(got["c1_never_closes"]["passes"])
    assert on and 200 + 10 <= t_on <= 200 + 20  # C1 for 200 ms: open; C2: debounce with PWM, then T_coil

    changes = _coil_changes(got["c1_timeout"]["passes"])
    assert [on for _, on in changes] == [True, False] and 100 < changes[0][0] <= 120
    assert 200 + 6000 <= changes[1][0] <= 200 + 6000 + 10  # EV stayed in C1: opened under load after T_c1
    assert got["c1_timeout"]["passes"][-1][4] is True  # the permission stays (B8)

    changes = _coil_changes(got["c1_then_b"]["passes"])
    assert [on for _, on in changes] == [True, False] and 1200 < changes[1][0] <= 1200 + 20  # B: open in debounce

    changes = _coil_changes(got["c1_then_pwm"]["passes"])  # PWM back in C1: stays closed, T_c1 starts anew
    assert [on for _, on in changes] == [True, False] and 4200 + 6000 <= changes[1][0] <= 4200 + 6000 + 10

    changes = _coil_changes(got["f"]["passes"])
    assert [on for _, on in changes] == [True, False, True]
    assert changes[1][0] == 205  # the first pass with F
    assert 300 + 10 <= changes[2][0] <= 300 + 25  # back from F: the EV is measured afresh before closing
    assert any(p[2] == 5 for p in got["f"]["passes"])  # STATE pilot F while the board drives F

    diode = got["diode_at_pwm_start"]
    assert not _coil_changes(diode["passes"])  # no diode: never closed, not even for the debounce
    assert diode["passes"][-1][3] & 0x04 and diode["passes"][-1][4] is False  # DIODE_FAILURE took the permission
    assert diode["results"] == [None, 7]  # ... and the next ALLOW_CONTACTOR on is refused, FAULT_ACTIVE

    assert got["board_limit"]["c1_timeout_ms"] == 6000  # a board file cannot lengthen T_c1 beyond 6 s
    changes = _coil_changes(got["board_shorter"]["passes"])
    assert got["board_shorter"]["c1_timeout_ms"] == 500 and 200 + 500 <= changes[1][0] <= 200 + 510


LOCK_UNLOCKED, LOCK_LOCKED, LOCK_MOVING, LOCK_FAULT = 0, 1, 2, 3
DRIVE_OFF, DRIVE_LOCK, DRIVE_UNLOCK = 0, 1, 2


def _first(passes: list[list[Any]], predicate: Any) -> int:
    """The time of the first pass that satisfies ``predicate``."""
    return next(p[0] for p in passes if predicate(p))


def test_cable_lock_drive_feedback_and_interlock_inside_micropython() -> None:
    """B15/B16 on the firmware's clock: the lock is driven until its switch confirms (100 ms of travel here),
    MOVING meanwhile; a jammed lock is FAULT after T_lock = 1 s with the drive stopped; a new SET_LOCK tries
    again. With the lock asked for, the coil closes only once it is LOCKED, and opens in the pass in which the
    lock lets go; the permission stays. A board without the lock capability refuses SET_LOCK (UNSUPPORTED)."""
    got = _safety({
        "lock_first": [["allow", True], ["ev", EV_C, True], ["pwm", PWM, 267], ["lock", True], ["run", 400],
                       ["lock", False], ["run", 700]],
        "stuck": [["stuck", True], ["lock", True], *CHARGING, ["run", 1500], ["stuck", False], ["lock", True],
                  ["run", 1900]],
        "let_go": [["lock", True], ["run", 200], *CHARGING[:-1], ["run", 500], ["force", False], ["run", 700]],
        "no_lock": [["lock", True], ["run", 300]],
        "untouched": [["run", 100]],
    }, no_lock=frozenset({"no_lock"}))

    lock_first = got["lock_first"]
    passes = lock_first["passes"]
    assert lock_first["results"] == [None, None, None]
    assert passes[0][5:] == [LOCK_MOVING, False, DRIVE_LOCK]
    t_locked = _first(passes, lambda p: p[5] == LOCK_LOCKED)
    assert 100 <= t_locked <= 110 and _first(passes, lambda p: p[6]) == t_locked
    assert _first(passes, lambda p: p[1]) == t_locked  # C2 long before: the coil waited for the lock (B16)
    assert all(p[7] == DRIVE_OFF for p in passes if p[0] >= t_locked and p[0] <= 400)  # drive stops when there
    t_unlocked = _first(passes, lambda p: p[0] > 400 and p[5] == LOCK_UNLOCKED)
    t_open = _first(passes, lambda p: p[0] > 400 and not p[1])
    assert t_open == 405 and 500 <= t_unlocked <= 510  # SET_LOCK false opens at once, then the lock moves (B16)

    stuck = got["stuck"]["passes"]
    assert not any(p[1] for p in stuck if p[0] <= 1500)  # never closed while the lock did not engage
    t_fault = _first(stuck, lambda p: p[5] == LOCK_FAULT)
    assert 1000 <= t_fault <= 1010 and all(p[7] == DRIVE_OFF for p in stuck if t_fault <= p[0] <= 1500)
    assert all(p[4] for p in stuck if p[0] > 100)  # the permission was kept: the lock is no fault bit
    t_relocked = _first(stuck, lambda p: p[0] > 1500 and p[5] == LOCK_LOCKED)
    assert 1600 <= t_relocked <= 1610 and _first(stuck, lambda p: p[1]) == t_relocked

    let_go = got["let_go"]["passes"]
    assert any(p[1] for p in let_go if p[0] <= 500)
    assert _first(let_go, lambda p: p[0] > 500 and not p[1]) == 505  # opened in the pass it let go (B16)
    assert _first(let_go, lambda p: p[0] > 500 and p[5] == LOCK_FAULT) == 505
    assert all(p[7] == DRIVE_OFF and not p[1] for p in let_go if p[0] > 500)  # not driven again by itself

    assert got["no_lock"]["results"] == [8] and all(p[7] == DRIVE_OFF for p in got["no_lock"]["passes"])
    assert all(p[5:] == [LOCK_UNLOCKED, False, DRIVE_OFF] for p in got["untouched"]["passes"])


# --- what the simulation's heap figures leave out ----------------------------------------------------------------

HEAP_PROBE = """
import gc, host
gc.collect()
before = gc.mem_alloc()
for _ in range(20):
    host.call("nop", b"")
gc.collect()
print(gc.mem_alloc() - before)
"""


@pytest.mark.parametrize("cap", [RESULT_CAP_BYTES, FLASH_CHIP_RESULT_CAP])
def test_the_host_call_buffer_the_heap_figures_leave_out_is_the_cap_plus_one_block(cap: int) -> None:
    """The WASI artifact keeps one host.call answer buffer on the guest's heap for good (McuIoBoard reports heap
    figures without it, HOST_BUFFER_EXTRA): if it ever allocated per call, or kept more, the figures would lie."""
    done = threading.Event()
    vm = MicroPythonVm(FIRMWARE_DIR, HEAP_PROBE, {"nop": lambda _: b""}, result_cap=cap, name="heap-probe",
                       on_exit=lambda _: done.set())
    vm.start()
    assert done.wait(30)
    assert vm.stdout_lines == [str(cap + HOST_BUFFER_EXTRA)]
