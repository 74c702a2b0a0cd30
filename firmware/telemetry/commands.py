"""What the site may ask over MQTT, parsed and validated before anything is applied (pure).

Every command is either fully valid — a :class:`SetLimit` or :class:`SetAvailability` — or a
:class:`Rejected` naming what was wrong and what is expected; nothing is ever applied in part.

Accepted payloads (topics in docs/mqtt.md):

* limit: a number of amperes (``16``, what Home Assistant's number entity sends), ``{"amps": 16}``,
  or ``null`` / ``{"amps": null}`` to remove the site limit. 0 <= amps <= the connector's rating
  (the sum of the ratings for the whole charger); booleans, NaN and infinities are not numbers.
* availability: ``true`` / ``false``, ``"ON"`` / ``"OFF"`` (Home Assistant's switch), or
  ``{"operative": true}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from firmware.telemetry.codec import PayloadError, decode
from firmware.telemetry.topics import Topics
from hal.bounded_repr import bounded_repr

MAX_PAYLOAD_BYTES = 1024


@dataclass(frozen=True)
class SetLimit:
    connector: int | None  # None: the whole charger
    amps: float | None  # None: remove the site limit


@dataclass(frozen=True)
class SetAvailability:
    connector: int | None  # None: every connector
    operative: bool


@dataclass(frozen=True)
class Rejected:
    topic: str
    reason: str


Command = SetLimit | SetAvailability

_CONNECTOR_TOPIC = re.compile(r"connector/([0-9]{1,2})/(limit|available)")


@dataclass(frozen=True)
class CommandRules:
    """What this charger accepts: its connectors' ratings and which kinds of commands are enabled."""

    ratings: dict[int, float]
    payload_format: str = "json"
    site_limits: bool = True
    local_availability: bool = False


def parse_command(topic: str, payload: bytes, topics: Topics, rules: CommandRules) -> Command | Rejected:
    def reject(reason: str) -> Rejected:
        return Rejected(topic, reason)

    if not topic.startswith(topics.command_prefix):
        return reject(f"not a command topic (commands are under {topics.command_prefix})")
    rest = topic[len(topics.command_prefix):]
    connector: int | None = None
    if rest in ("limit", "available"):
        kind = rest
    else:
        m = _CONNECTOR_TOPIC.fullmatch(rest)
        if m is None:
            return reject("unknown command topic (known: cmd/limit, cmd/available, cmd/connector/N/limit, "
                          "cmd/connector/N/available)")
        connector, kind = int(m.group(1)), m.group(2)
        if connector not in rules.ratings:
            return reject(f"unknown connector {connector} (this charger has {sorted(rules.ratings)})")
    if kind == "limit" and not rules.site_limits:
        return reject("site limits are disabled in this charger's configuration (mqtt.site_limits)")
    if kind == "available" and not rules.local_availability:
        return reject("local availability control is disabled in this charger's configuration "
                      "(mqtt.local_availability)")
    if len(payload) > MAX_PAYLOAD_BYTES:
        return reject(f"payload too large ({len(payload)} bytes, at most {MAX_PAYLOAD_BYTES})")
    if kind == "available":
        return _availability(connector, payload, rules, reject)
    value = _value(payload, "amps", rules)
    if isinstance(value, _Refusal):
        return reject(value.reason)
    if value is None:
        return SetLimit(connector, None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return reject(f"amps: expected a number of amperes or null; got {_show(value)}")
    top = rules.ratings[connector] if connector is not None else sum(rules.ratings.values())
    what = f"connector {connector}'s rating" if connector is not None else "the sum of the connectors' ratings"
    if isinstance(value, float) and not math.isfinite(value):
        return reject(f"amps: expected a finite number; got {value}")
    # compared before float(): an int compares exactly with a float, float() of a huge one raises
    if value < 0:
        return reject(f"amps: expected a number from 0 to {top:g} ({what}); got {_show(value)} (negative)")
    if value > top:
        return reject(f"amps: expected a number from 0 to {top:g} ({what}); got {_show(value)}")
    return SetLimit(connector, float(value) + 0.0)  # + 0.0: -0.0 is 0.0


def _availability(connector: int | None, payload: bytes, rules: CommandRules,
                  reject: Callable[[str], Rejected]) -> Command | Rejected:
    text = payload.strip()
    if text in (b"ON", b"OFF"):
        return SetAvailability(connector, text == b"ON")
    value = _value(payload, "operative", rules)
    if isinstance(value, _Refusal):
        return reject(value.reason)
    if not isinstance(value, bool):
        return reject(f"operative: expected true, false, \"ON\" or \"OFF\"; got {_show(value)}")
    return SetAvailability(connector, value)


@dataclass(frozen=True)
class _Refusal:
    reason: str


def _value(payload: bytes, key: str, rules: CommandRules) -> object:
    """A command's value: the payload itself, or ``{key: value}`` with exactly that key."""
    try:
        value = decode(payload, rules.payload_format)
    except PayloadError as exc:
        return _Refusal(f"malformed payload: {exc}")
    if isinstance(value, dict):
        if set(value) != {key}:  # keys are hashable (cbor2 freezes arrays and maps used as keys)
            return _Refusal(f"expected an object with exactly the key {key!r}; "
                            f"got keys [{', '.join(sorted(_show(k) for k in value))}]")
        return value[key]
    return value


def _show(value: object) -> str:
    """A received value, short and printable for a log line and a reply; never raises."""
    return bounded_repr(value, 60)
