"""Modbus register maps as data: loading, validation, value codecs and block-read planning.

A register map is a JSON file (see ``hal/maps/`` and docs/hal.md (energy meters)) describing, for one device
model, which quantity lives at which 0-based protocol address, in which register kind (input or
holding), with which data type, word order, scale and unit. Keeping maps as data means adding a
meter model is a reviewed data file checked against its datasheet, not new driver code.

Everything here is pure (no I/O except :func:`load_map_file` reading one file), so the codecs and
the planner are unit- and property-tested without a wire.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, cast

from hal.bounded_repr import bounded_repr

Function = Literal["input", "holding"]
DataType = Literal["uint16", "int16", "uint32", "int32", "uint64", "int64", "float32"]
WordOrder = Literal["big", "little"]

FUNCTIONS: Final[tuple[Function, ...]] = ("input", "holding")
WORD_ORDERS: Final[tuple[WordOrder, ...]] = ("big", "little")
REGISTER_COUNT: Final[dict[DataType, int]] = {
    "uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2, "uint64": 4, "int64": 4,
}
# Units a map may use, as factors to the SI-coherent unit the drivers report (V, A, W, Wh, Hz ...).
UNIT_FACTORS: Final[dict[str, float]] = {
    "V": 1.0, "A": 1.0, "Hz": 1.0,
    "W": 1.0, "kW": 1000.0, "VA": 1.0, "kVA": 1000.0, "var": 1.0, "kvar": 1000.0,
    "Wh": 1.0, "kWh": 1000.0, "varh": 1.0, "kvarh": 1000.0,
}
MODBUS_MAX_READ: Final = 125  # registers per read request (Modbus application protocol 6.3/6.4)

_MAP_KEYS: Final = frozenset({
    "model", "manufacturer", "description", "source", "phases", "function", "word_order",
    "max_registers_per_request", "max_gap", "readable", "quantities",
})
_QUANTITY_KEYS: Final = frozenset({"address", "type", "word_order", "scale", "unit", "function", "doc"})
_RANGE_KEYS: Final = frozenset({"first", "last", "function", "doc"})
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
T = TypeVar("T", bound=str)


class RegisterMapError(ValueError):
    """A register map file is malformed; the message names the file, the entry and what is expected."""


class RegisterDecodeError(ValueError):
    """Registers that cannot be a value of the quantity: a wrong count, or a word that is not 16 bits.
    The only error :func:`decode_value` and :func:`decode_block` raise on what a device answered."""


@dataclass(frozen=True)
class Quantity:
    """One value in a device's register space."""

    name: str
    function: Function
    address: int  # 0-based protocol address of the first register
    type: DataType
    word_order: WordOrder  # "big": most significant register first
    scale: float  # engineering value = raw * scale, in ``unit``
    unit: str

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.type]

    @property
    def last(self) -> int:
        """Address of the quantity's last register."""
        return self.address + self.count - 1


@dataclass(frozen=True)
class AddressRange:
    """Registers ``first..last`` (inclusive) of one kind that the device answers reads of."""

    function: Function
    first: int
    last: int

    def covers(self, function: Function, first: int, last: int) -> bool:
        return function == self.function and self.first <= first and last <= self.last


@dataclass(frozen=True)
class RegisterMap:
    model: str
    source: str  # where the map came from (file path), for error messages
    phases: int
    max_registers_per_request: int  # the device's limit, at most 125
    max_gap: int  # most unneeded registers one request may read to join two quantities
    quantities: Mapping[str, Quantity]
    readable: tuple[AddressRange, ...] = ()  # registers besides the quantities' that may be read
    description: str = ""

    def gap_readable(self, function: Function, first: int, last: int) -> bool:
        """Whether registers ``first..last`` (not part of any quantity) may be read over."""
        if last < first:
            return True
        return any(r.covers(function, first, last) for r in self.readable)


@dataclass(frozen=True)
class BlockRead:
    """One read request covering one or more whole quantities."""

    function: Function
    address: int
    count: int
    quantities: tuple[str, ...] = field(default=())

    @property
    def last(self) -> int:
        return self.address + self.count - 1


# --- loading and validation ---------------------------------------------------------------------


def load_map_file(path: str | Path) -> RegisterMap:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegisterMapError(f"{path}: cannot read register map: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise RegisterMapError(f"{path}: not valid JSON: {exc}") from exc
    return parse_map(data, str(path))


def parse_map(data: object, source: str = "<register map>") -> RegisterMap:
    """Validate a decoded JSON register map; every problem is reported as :class:`RegisterMapError`."""
    top = _mapping(data, source, "the top level", _MAP_KEYS)
    model = _string(top, source, "model", required=True)
    if not _NAME.match(model):
        raise RegisterMapError(f"{source}: model: expected a lower-case name like 'sdm630', got {model!r}")
    phases = _integer(top.get("phases"), source, "phases")
    if phases not in (1, 3):
        raise RegisterMapError(f"{source}: phases: expected 1 or 3, got {phases!r}")
    default_function = _choice(top.get("function"), source, "function", FUNCTIONS)
    default_order = _choice(top.get("word_order"), source, "word_order", WORD_ORDERS)
    max_regs = _integer(top.get("max_registers_per_request", MODBUS_MAX_READ), source,
                        "max_registers_per_request")
    if not 1 <= max_regs <= MODBUS_MAX_READ:
        raise RegisterMapError(f"{source}: max_registers_per_request: expected 1..{MODBUS_MAX_READ}, "
                               f"got {max_regs}")
    max_gap = _integer(top.get("max_gap", 0), source, "max_gap")
    if max_gap < 0:
        raise RegisterMapError(f"{source}: max_gap: expected a number of registers >= 0, got {max_gap}")

    raw_quantities = top.get("quantities")
    if not isinstance(raw_quantities, dict) or not raw_quantities:
        raise RegisterMapError(f"{source}: quantities: expected a non-empty object of name -> entry, "
                               f"got {raw_quantities!r}")
    quantities: dict[str, Quantity] = {}
    for name, entry in raw_quantities.items():
        q = _quantity(name, entry, source, default_function, default_order)
        if q.count > max_regs:
            raise RegisterMapError(f"{source}: quantities.{name}: a {q.type} does not fit in one request "
                                   f"of max_registers_per_request={max_regs}")
        quantities[name] = q
    _check_overlaps(quantities, source)

    raw_readable = top.get("readable", [])
    if not isinstance(raw_readable, list):
        raise RegisterMapError(f"{source}: readable: expected a list of {{first, last}} ranges, "
                               f"got {raw_readable!r}")
    readable = tuple(_range(i, r, source, default_function) for i, r in enumerate(raw_readable))
    description = _string(top, source, "description")
    _string(top, source, "source")
    _string(top, source, "manufacturer")
    return RegisterMap(model=model, source=source, phases=phases, max_registers_per_request=max_regs,
                       max_gap=max_gap, quantities=quantities, readable=readable, description=description)


def _mapping(value: object, source: str, where: str, allowed: frozenset[str]) -> dict[str, object]:
    if not isinstance(value, dict):
        raise RegisterMapError(f"{source}: {where}: expected a JSON object, got {value!r}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise RegisterMapError(f"{source}: {where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                               f"expected some of {', '.join(sorted(allowed))}")
    return cast(dict[str, object], value)


def _string(obj: Mapping[str, object], source: str, key: str, *, required: bool = False) -> str:
    value = obj.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise RegisterMapError(f"{source}: {key}: expected a {'non-empty ' if required else ''}string, "
                               f"got {value!r}")
    return value


def _integer(value: object, source: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegisterMapError(f"{source}: {where}: expected an integer, got {value!r}")
    return value


def _address(value: object, source: str, where: str) -> int:
    """A 0-based protocol address: an integer, or a string such as "0x5B00"."""
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise RegisterMapError(f"{source}: {where}: expected an address such as 72 or \"0x0048\", "
                                   f"got {value!r}") from None
    address = _integer(value, source, where)
    if not 0 <= address <= 0xFFFF:
        raise RegisterMapError(f"{source}: {where}: expected a 0-based address 0..65535, got {address}")
    return address


def _choice(value: object, source: str, where: str, choices: tuple[T, ...]) -> T:
    if value not in choices:
        raise RegisterMapError(f"{source}: {where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _quantity(name: object, entry: object, source: str, function: Function, order: WordOrder) -> Quantity:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RegisterMapError(f"{source}: quantities: expected lower-case names like 'voltage_l1', "
                               f"got {name!r}")
    where = f"quantities.{name}"
    q = _mapping(entry, source, where, _QUANTITY_KEYS)
    if "address" not in q:
        raise RegisterMapError(f"{source}: {where}: missing 'address' (0-based protocol address)")
    address = _address(q["address"], source, f"{where}.address")
    dtype = _choice(q.get("type"), source, f"{where}.type", tuple(REGISTER_COUNT))
    qfunction = _choice(q.get("function", function), source, f"{where}.function", FUNCTIONS)
    qorder = _choice(q.get("word_order", order), source, f"{where}.word_order", WORD_ORDERS)
    scale = q.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise RegisterMapError(f"{source}: {where}.scale: expected a positive number "
                               f"(value = raw * scale), got {scale!r}")
    unit = q.get("unit")
    if unit not in UNIT_FACTORS:
        raise RegisterMapError(f"{source}: {where}.unit: expected one of {', '.join(UNIT_FACTORS)}, "
                               f"got {unit!r}")
    if address + REGISTER_COUNT[dtype] - 1 > 0xFFFF:
        raise RegisterMapError(f"{source}: {where}: a {dtype} at {address} runs past address 65535")
    if not isinstance(q.get("doc", ""), str):
        raise RegisterMapError(f"{source}: {where}.doc: expected a string")
    return Quantity(name=name, function=qfunction, address=address, type=dtype, word_order=qorder,
                    scale=float(scale), unit=unit)


def _range(index: int, entry: object, source: str, function: Function) -> AddressRange:
    where = f"readable[{index}]"
    r = _mapping(entry, source, where, _RANGE_KEYS)
    if "first" not in r or "last" not in r:
        raise RegisterMapError(f"{source}: {where}: expected 'first' and 'last' addresses")
    first = _address(r["first"], source, f"{where}.first")
    last = _address(r["last"], source, f"{where}.last")
    if last < first:
        raise RegisterMapError(f"{source}: {where}: last ({last}) is before first ({first})")
    rfunction = _choice(r.get("function", function), source, f"{where}.function", FUNCTIONS)
    return AddressRange(rfunction, first, last)


def _check_overlaps(quantities: Mapping[str, Quantity], source: str) -> None:
    ordered = sorted(quantities.values(), key=lambda q: (q.function, q.address))
    for a, b in itertools.pairwise(ordered):
        if a.function == b.function and b.address <= a.last:
            raise RegisterMapError(f"{source}: quantities.{b.name}: registers {b.address}..{b.last} overlap "
                                   f"quantities.{a.name} ({a.address}..{a.last})")


# --- value codecs -------------------------------------------------------------------------------


def decode_value(q: Quantity, words: Sequence[int]) -> float:
    """The engineering value (in ``q.unit``) of the quantity's raw registers; NaN and infinities pass
    through (the caller decides what a meter reporting them means). Raises :class:`RegisterDecodeError`."""
    if len(words) != q.count:
        raise RegisterDecodeError(f"{q.name}: a {q.type} takes {q.count} registers, got {len(words)}")
    for w in words:
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= 0xFFFF:
            raise RegisterDecodeError(f"{q.name}: register value {bounded_repr(w)} is not a 16-bit word")
    ordered = list(words) if q.word_order == "big" else list(reversed(words))
    raw_bytes = b"".join(w.to_bytes(2, "big") for w in ordered)
    if q.type == "float32":
        raw: float = struct.unpack(">f", raw_bytes)[0]
    else:
        raw = int.from_bytes(raw_bytes, "big", signed=q.type.startswith("int"))
    return raw * q.scale


def encode_value(q: Quantity, value: float) -> list[int]:
    """Registers holding ``value`` (in ``q.unit``) as the device would; raises ValueError if it
    cannot be represented (out of the type's range)."""
    scaled = value / q.scale
    if q.type == "float32":
        try:
            raw_bytes = struct.pack(">f", scaled)
        except OverflowError:
            raise ValueError(f"{q.name}: {value} {q.unit} does not fit a float32") from None
    else:
        raw = round(scaled)
        bits = 16 * q.count
        signed = q.type.startswith("int")
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not low <= raw <= high:
            raise ValueError(f"{q.name}: {value} {q.unit} is {raw} at scale {q.scale}, outside {q.type}")
        raw_bytes = raw.to_bytes(2 * q.count, "big", signed=signed)
    words = [int.from_bytes(raw_bytes[i : i + 2], "big") for i in range(0, len(raw_bytes), 2)]
    return words if q.word_order == "big" else list(reversed(words))


def to_base_unit(value: float, unit: str) -> float:
    """``value`` in ``unit`` converted to the coherent unit (kWh -> Wh, kW -> W, ...)."""
    return value * UNIT_FACTORS[unit]


# --- block-read planning ------------------------------------------------------------------------


def _sorted_groups(m: RegisterMap) -> list[list[Quantity]]:
    groups: list[list[Quantity]] = []
    for function in FUNCTIONS:
        qs = sorted((q for q in m.quantities.values() if q.function == function), key=lambda q: q.address)
        if qs:
            groups.append(qs)
    return groups


def _joinable(m: RegisterMap, block_first: int, block_last: int, q: Quantity) -> bool:
    """Whether one request may cover the block so far and ``q`` (which starts after it)."""
    gap = q.address - block_last - 1
    if q.last - block_first + 1 > m.max_registers_per_request:
        return False
    return gap <= m.max_gap and m.gap_readable(q.function, block_last + 1, q.address - 1)


def plan_reads(m: RegisterMap) -> list[BlockRead]:
    """The read requests for one full poll: quantities of the same kind merged into as few requests
    as the map allows (each within the device's request limit, bridging only gaps of at most
    ``max_gap`` registers that the map declares readable). Greedy, which is optimal here because
    any run of a feasible run is feasible; :func:`minimum_requests` checks that independently."""
    blocks: list[BlockRead] = []
    for group in _sorted_groups(m):
        first, last, names = group[0].address, group[0].last, [group[0].name]
        for q in group[1:]:
            if _joinable(m, first, last, q):
                last, names = q.last, [*names, q.name]
            else:
                blocks.append(BlockRead(group[0].function, first, last - first + 1, tuple(names)))
                first, last, names = q.address, q.last, [q.name]
        blocks.append(BlockRead(group[0].function, first, last - first + 1, tuple(names)))
    return blocks


def minimum_requests(m: RegisterMap) -> int:
    """The least number of read requests that can cover every quantity of the map under its
    constraints, by exhaustive dynamic programming over contiguous runs (a different algorithm
    from :func:`plan_reads`, so the two can check each other)."""
    total = 0
    for group in _sorted_groups(m):
        n = len(group)
        best = [0] + [n + 1] * n  # best[j]: fewest requests covering group[:j]
        for j in range(1, n + 1):
            for i in range(j - 1, -1, -1):
                if not _run_feasible(m, group[i:j]):
                    break
                best[j] = min(best[j], best[i] + 1)
        total += best[n]
    return total


def _run_feasible(m: RegisterMap, run: Sequence[Quantity]) -> bool:
    if run[-1].last - run[0].address + 1 > m.max_registers_per_request:
        return False
    for a, b in itertools.pairwise(run):
        gap = b.address - a.last - 1
        if gap > m.max_gap or not m.gap_readable(b.function, a.last + 1, b.address - 1):
            return False
    return True


def decode_block(m: RegisterMap, block: BlockRead, registers: Sequence[int]) -> dict[str, float]:
    """Values of the block's quantities from the registers one read request returned; raises
    :class:`RegisterDecodeError`."""
    if len(registers) != block.count:
        raise RegisterDecodeError(f"{m.model}: block at {block.address} expects {block.count} registers, "
                         f"got {len(registers)}")
    values: dict[str, float] = {}
    for name in block.quantities:
        q = m.quantities[name]
        offset = q.address - block.address
        values[name] = decode_value(q, registers[offset : offset + q.count])
    return values
