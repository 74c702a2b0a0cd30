"""Register maps as data: datasheet pinning, loader errors, value codecs and block-read planning."""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal.meter_modbus import load_register_map
from hal.registermap import (
    REGISTER_COUNT,
    BlockRead,
    DataType,
    Quantity,
    RegisterMap,
    RegisterMapError,
    WordOrder,
    decode_block,
    decode_value,
    encode_value,
    load_map_file,
    minimum_requests,
    parse_map,
    plan_reads,
    to_base_unit,
)

# --- datasheet pinning ------------------------------------------------------------------------
# Written down from the manufacturers' documents, NOT from the map files, so that a wrong map
# cannot agree with the simulator (which encodes whatever the map says) by construction.
#   Eastron SDM630 / SDM120 Modbus protocol: input registers "3xxxx", float32, 0-based = reg - 30001.
#   ABB B23/B24 manual 2CMC485003M0201 ch. 9: holding registers, hex addresses, integer types.

SDM630_DATASHEET = {  # quantity: Modbus register number as printed in the protocol document
    "voltage_l1": 30001, "voltage_l2": 30003, "voltage_l3": 30005,
    "current_l1": 30007, "current_l2": 30009, "current_l3": 30011,
    "power_total": 30053, "frequency": 30071, "energy_import": 30073, "energy_export": 30075,
}
SDM120_DATASHEET = {
    "voltage_l1": 30001, "current_l1": 30007, "power_total": 30013,
    "frequency": 30071, "energy_import": 30073, "energy_export": 30075,
}
ABB_B23_DATASHEET: dict[str, tuple[int, str, float, str]] = {  # address, type, resolution, unit
    "energy_import": (0x5000, "uint64", 0.01, "kWh"),
    "energy_export": (0x5004, "uint64", 0.01, "kWh"),
    "voltage_l1": (0x5B00, "uint32", 0.1, "V"),
    "voltage_l2": (0x5B02, "uint32", 0.1, "V"),
    "voltage_l3": (0x5B04, "uint32", 0.1, "V"),
    "current_l1": (0x5B0C, "uint32", 0.01, "A"),
    "current_l2": (0x5B0E, "uint32", 0.01, "A"),
    "current_l3": (0x5B10, "uint32", 0.01, "A"),
    "power_total": (0x5B14, "int32", 0.01, "W"),
    "frequency": (0x5B2C, "uint16", 0.01, "Hz"),
}
SDM_UNITS = {"voltage": "V", "current": "A", "power": "W", "frequency": "Hz", "energy": "kWh"}


def test_sdm630_addresses_match_the_datasheet() -> None:
    m = load_register_map("sdm630")
    assert set(m.quantities) == set(SDM630_DATASHEET)
    assert m.quantities["energy_import"].address == 0x0048  # 30073
    assert m.quantities["voltage_l1"].address == 0x0000  # 30001
    for name, register in SDM630_DATASHEET.items():
        q = m.quantities[name]
        assert (q.function, q.address, q.type, q.word_order, q.scale) == (
            "input", register - 30001, "float32", "big", 1.0), name
        assert q.unit == SDM_UNITS[name.split("_")[0]], name
    assert m.phases == 3 and m.max_registers_per_request == 80  # "40 parameters per request"


def test_sdm120_addresses_match_the_datasheet() -> None:
    m = load_register_map("sdm120")
    assert set(m.quantities) == set(SDM120_DATASHEET)
    for name, register in SDM120_DATASHEET.items():
        q = m.quantities[name]
        assert (q.function, q.address, q.type, q.word_order, q.scale) == (
            "input", register - 30001, "float32", "big", 1.0), name
        assert q.unit == SDM_UNITS[name.split("_")[0]], name
    assert m.phases == 1


def test_abb_b23_addresses_match_the_manual() -> None:
    m = load_register_map("abb_b23")
    assert set(m.quantities) == set(ABB_B23_DATASHEET)
    for name, (address, dtype, resolution, unit) in ABB_B23_DATASHEET.items():
        q = m.quantities[name]
        assert (q.function, q.address, q.type, q.word_order, q.unit) == (
            "holding", address, dtype, "big", unit), name
        assert q.scale == pytest.approx(resolution), name
    assert m.phases == 3


def test_shipped_maps_need_few_requests() -> None:
    plans = {model: plan_reads(load_register_map(model)) for model in ("sdm630", "sdm120", "abb_b23")}
    # max_gap 16 everywhere: bridging 16 registers (32 bytes, 33 ms at 9600 baud) costs about what
    # one more request does (20 bytes of frames and silences plus the meter's turnaround)
    assert [(b.function, b.address, b.count) for b in plans["sdm630"]] == [("input", 0, 12), ("input", 0x34, 24)]
    assert [(b.address, b.count) for b in plans["sdm120"]] == [(0x0000, 14), (0x0046, 6)]
    assert [(b.function, b.address, b.count) for b in plans["abb_b23"]] == [
        ("holding", 0x5000, 8), ("holding", 0x5B00, 22), ("holding", 0x5B2C, 1)]
    for model, plan in plans.items():
        assert len(plan) == minimum_requests(load_register_map(model)), model


def test_unknown_model_names_the_available_ones() -> None:
    with pytest.raises(RegisterMapError, match="sdm630"):
        load_register_map("sdm999")
    with pytest.raises(RegisterMapError):
        load_register_map("../pyproject")


# --- loader errors ------------------------------------------------------------------------------


def minimal_map(**overrides: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "model": "test",
        "phases": 1,
        "function": "input",
        "word_order": "big",
        "quantities": {"voltage_l1": {"address": 0, "type": "float32", "unit": "V"}},
    }
    m.update(overrides)
    return m


def write_map(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"quantities": {"voltage_l1": {"address": 0, "type": "float", "unit": "V"}}},
         r"quantities\.voltage_l1\.type: expected one of uint16, int16, .*float32.*, got 'float'"),
        ({"quantities": {"voltage_l1": {"adress": 0, "type": "float32", "unit": "V"}}},
         r"quantities\.voltage_l1: unknown key\(s\) 'adress'"),
        ({"quantities": {"voltage_l1": {"address": 70001, "type": "float32", "unit": "V"}}},
         r"quantities\.voltage_l1\.address: expected a 0-based address 0\.\.65535, got 70001"),
        ({"quantities": {"voltage_l1": {"address": "0x5B0G", "type": "float32", "unit": "V"}}},
         r"quantities\.voltage_l1\.address: expected an address"),
        ({"quantities": {"voltage_l1": {"address": 0, "type": "uint32", "unit": "V", "scale": 0}}},
         r"quantities\.voltage_l1\.scale: expected a positive number"),
        ({"quantities": {"voltage_l1": {"address": 0, "type": "uint32", "unit": "volt"}}},
         r"quantities\.voltage_l1\.unit: expected one of V, A"),
        ({"quantities": {"a": {"address": 0, "type": "uint32", "unit": "V"},
                         "b": {"address": 1, "type": "uint16", "unit": "V"}}},
         r"quantities\.b: registers 1\.\.1 overlap quantities\.a \(0\.\.1\)"),
        ({"quantities": {}}, r"quantities: expected a non-empty object"),
        ({"function": "coil"}, r"function: expected one of input, holding, got 'coil'"),
        ({"phases": 2}, r"phases: expected 1 or 3, got 2"),
        ({"max_registers_per_request": 126}, r"max_registers_per_request: expected 1\.\.125, got 126"),
        ({"max_registers_per_request": 2,
          "quantities": {"e": {"address": 0, "type": "uint64", "unit": "kWh"}}},
         r"quantities\.e: a uint64 does not fit in one request of max_registers_per_request=2"),
        ({"max_gap": -1}, r"max_gap: expected a number of registers >= 0"),
        ({"readable": [{"first": 10, "last": 5}]}, r"readable\[0\]: last \(5\) is before first \(10\)"),
        ({"readable": [{"first": 1}]}, r"readable\[0\]: expected 'first' and 'last'"),
        ({"model": "SDM 630"}, r"model: expected a lower-case name"),
        ({"colour": "red"}, r"the top level: unknown key\(s\) 'colour'"),
    ],
)
def test_bad_map_file_error_names_file_entry_and_expectation(
    tmp_path: Path, change: dict[str, Any], expect: str
) -> None:
    path = write_map(tmp_path, minimal_map(**change))
    with pytest.raises(RegisterMapError, match=expect) as err:
        load_map_file(path)
    assert str(err.value).startswith(f"{path}: ")


def test_unreadable_or_invalid_json_file(tmp_path: Path) -> None:
    with pytest.raises(RegisterMapError, match="cannot read"):
        load_map_file(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(RegisterMapError, match=f"{broken}: not valid JSON"):
        load_map_file(broken)
    not_object = write_map(tmp_path, [1, 2])
    with pytest.raises(RegisterMapError, match="the top level: expected a JSON object"):
        load_map_file(not_object)


# --- codecs -------------------------------------------------------------------------------------


def quantity(dtype: DataType, order: WordOrder = "big", scale: float = 1.0) -> Quantity:
    return Quantity(name="q", function="holding", address=0, type=dtype, word_order=order, scale=scale,
                    unit="W")


def test_decode_known_register_contents() -> None:
    assert decode_value(quantity("float32"), [0x4366, 0x0000]) == 230.0  # IEEE 754 of 230.0
    assert decode_value(quantity("float32", "little"), [0x0000, 0x4366]) == 230.0
    assert decode_value(quantity("uint64", scale=0.01), [0, 0, 0x0001, 0xE240]) == pytest.approx(1234.56)
    assert decode_value(quantity("int32", scale=0.01), [0xFFFF, 0xFF9C]) == pytest.approx(-1.0)
    assert decode_value(quantity("uint32", "little"), [0x0002, 0x0001]) == 0x00010002
    assert decode_value(quantity("int16"), [0x8000]) == -32768
    assert decode_value(quantity("uint16", scale=0.01), [5000]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="takes 2 registers"):
        decode_value(quantity("float32"), [0x4366])


def test_encode_rejects_what_the_type_cannot_hold() -> None:
    with pytest.raises(ValueError, match="outside uint16"):
        encode_value(quantity("uint16"), 70000)
    with pytest.raises(ValueError, match="outside uint32"):
        encode_value(quantity("uint32"), -1)
    with pytest.raises(ValueError, match="float32"):
        encode_value(quantity("float32"), 1e39)


def test_units_convert_to_coherent_units() -> None:
    assert to_base_unit(1.5, "kWh") == 1500.0
    assert to_base_unit(2.0, "kW") == 2000.0
    assert to_base_unit(230.0, "V") == 230.0


@settings(max_examples=400)
@given(
    dtype=st.sampled_from(["uint16", "int16", "uint32", "int32", "uint64", "int64"]),
    order=st.sampled_from(["big", "little"]),
    scale=st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0]),
    data=st.data(),
)
def test_integer_encode_decode_round_trip(dtype: DataType, order: WordOrder, scale: float,
                                          data: st.DataObject) -> None:
    bits = 16 * REGISTER_COUNT[dtype]
    signed = dtype.startswith("int")
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    raw = data.draw(st.integers(low, high))
    if bits == 64:  # keep raw * scale exactly representable so the round trip is exact
        raw = data.draw(st.integers(max(low, -(2**50)), min(high, 2**50)))
    q = quantity(dtype, order, scale)
    words = encode_value(q, raw * scale)
    assert len(words) == REGISTER_COUNT[dtype] and all(0 <= w <= 0xFFFF for w in words)
    assert round(decode_value(q, words) / scale) == raw
    assert encode_value(q, decode_value(q, words)) == words


@settings(max_examples=400)
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False), order=st.sampled_from(["big", "little"]))
def test_float32_encode_decode_round_trip(value: float, order: WordOrder) -> None:
    q = quantity("float32", order)
    words = encode_value(q, value)
    assert decode_value(q, words) == value
    assert words == list(struct.unpack(">2H", struct.pack(">f", value)))[:: 1 if order == "big" else -1]


@given(words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2))
def test_float32_decode_accepts_any_register_pair(words: list[int]) -> None:
    value = decode_value(quantity("float32"), words)
    assert isinstance(value, float)  # NaN / inf included: the driver decides what to do with them
    if math.isfinite(value):
        assert encode_value(quantity("float32"), value) == words


# --- block planning -----------------------------------------------------------------------------


@st.composite
def random_maps(draw: st.DrawFn) -> RegisterMap:
    """Maps with quantities of both kinds, arbitrary gaps, some gaps declared readable."""
    max_regs = draw(st.integers(4, 125))
    quantities: dict[str, dict[str, Any]] = {}
    readable: list[dict[str, Any]] = []
    for function in ("input", "holding"):
        address = draw(st.integers(0, 300))
        for i in range(draw(st.integers(0, 14))):
            dtype = draw(st.sampled_from(list(REGISTER_COUNT)))
            quantities[f"{function}_{i}"] = {"address": address, "type": dtype, "unit": "W",
                                             "function": function}
            address += REGISTER_COUNT[dtype]
            gap = draw(st.integers(0, 40))
            if gap and draw(st.booleans()):
                readable.append({"first": address, "last": address + gap - 1, "function": function})
            address += gap
    if not quantities:
        quantities["only"] = {"address": 0, "type": "uint16", "unit": "W"}
    return parse_map({"model": "random", "phases": 1, "function": "input", "word_order": "big",
                      "max_registers_per_request": max_regs, "max_gap": draw(st.integers(0, 30)),
                      "readable": readable, "quantities": quantities}, "<random>")


@settings(max_examples=300, deadline=None)
@given(random_maps())
def test_plan_covers_every_quantity_exactly_once_within_limits(m: RegisterMap) -> None:
    plan = plan_reads(m)
    covered = [name for block in plan for name in block.quantities]
    assert sorted(covered) == sorted(m.quantities)  # every quantity exactly once
    for block in plan:
        assert 1 <= block.count <= m.max_registers_per_request <= 125
        in_block = [m.quantities[n] for n in block.quantities]
        assert all(q.function == block.function for q in in_block)
        assert all(block.address <= q.address and q.last <= block.last for q in in_block)
        assert block.address == in_block[0].address and block.last == in_block[-1].last
        # every register read is a quantity's or lies in a gap the map allows reading over
        used = {a for q in in_block for a in range(q.address, q.last + 1)}
        for a in range(block.address, block.last + 1):
            assert a in used or m.gap_readable(block.function, a, a)
        for left, right in itertools.pairwise(in_block):
            assert right.address - left.last - 1 <= m.max_gap
    same_kind = sorted((b.function, b.address, b.last) for b in plan)
    for (f1, _, last1), (f2, first2, _) in itertools.pairwise(same_kind):
        assert f1 != f2 or last1 < first2  # no register read twice
    assert len(plan) == minimum_requests(m)  # greedy reaches the exhaustive optimum


def test_gaps_bridged_only_when_readable_and_short() -> None:
    base = {"model": "gaps", "phases": 1, "function": "holding", "word_order": "big",
            "quantities": {"a": {"address": 0, "type": "uint16", "unit": "V"},
                           "b": {"address": 5, "type": "uint16", "unit": "V"}}}
    assert len(plan_reads(parse_map({**base, "max_gap": 10}))) == 2  # gap 1..4 not declared readable
    readable = [{"first": 1, "last": 4}]
    assert len(plan_reads(parse_map({**base, "max_gap": 10, "readable": readable}))) == 1
    assert len(plan_reads(parse_map({**base, "max_gap": 3, "readable": readable}))) == 2  # gap of 4 > 3
    assert len(plan_reads(parse_map({**base, "max_gap": 10, "readable": readable,
                                     "max_registers_per_request": 5}))) == 2  # 6 registers > 5


def test_decode_block_slices_each_quantity() -> None:
    m = load_register_map("abb_b23")
    block = plan_reads(m)[1]
    registers = [0] * block.count
    registers[0:2] = encode_value(m.quantities["voltage_l1"], 231.4)
    registers[0x0C:0x0E] = encode_value(m.quantities["current_l1"], 31.99)
    registers[0x14:0x16] = encode_value(m.quantities["power_total"], -1234.56)
    values = decode_block(m, block, registers)
    assert values["voltage_l1"] == pytest.approx(231.4)
    assert values["current_l1"] == pytest.approx(31.99)
    assert values["power_total"] == pytest.approx(-1234.56)
    assert values["voltage_l2"] == 0.0
    with pytest.raises(ValueError, match="expects 22 registers"):
        decode_block(m, block, registers[:-1])
    assert isinstance(block, BlockRead)
