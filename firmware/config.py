"""The agent's configuration file (TOML): typed, validated, with errors a technician can act on.

Every error names the file, the key (as a dotted path) and what is expected, e.g.::

    /etc/evse-agent/agent.toml: connectors[0].meter.model: expected one of abb_b23, sdm120, sdm630; got 'sdm63'

The file describes the charger's hardware: which serial port is which device, the RS-485 buses
shared by Modbus devices, each connector's board, meter and ratings, and the identification readers.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import stat
import tomllib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from firmware.storage.auth_stores import DEFAULT_CACHE_CAPACITY
from hal.bounded_repr import bounded_repr

T = TypeVar("T")

METER_MODELS = ("abb_b23", "sdm120", "sdm630")
BOARD_DRIVERS = ("evse_din", "ioboard")
#: How the EV is connected to a connector (IEC 61851-1 case B, a socket-outlet, or case C, a tethered cable).
SOCKET_WITH_LOCK = "socket_with_lock"  # the board drives a cable lock with feedback
SOCKET_WITHOUT_LOCK = "socket_without_lock"
TETHERED = "tethered"
CABLE_KINDS = (SOCKET_WITH_LOCK, SOCKET_WITHOUT_LOCK, TETHERED)
#: Boards that drive a cable lock: the I/O board (protocol 1.1, CABLE_LOCK). The EVSE-DIN has no lock output.
LOCK_DRIVERS = ("ioboard",)
READER_DRIVERS = ("pn532", "rdm6300")
#: Smallest [storage] max_queued_messages: room for a day of 1-minute meter values of one transaction.
MIN_QUEUED_MESSAGES = 1000
#: A configuration is a few kilobytes; the limit keeps a wrong file (a log, an image, /dev/zero) out of memory.
MAX_CONFIG_BYTES = 64 * 1024
#: Arrays and inline tables nested deeper than this, or dotted keys of more parts, are refused before
#: tomllib sees them: it recurses once per level (RecursionError near 1000) and a dotted key of n parts
#: costs it O(n**2) memory (16000 parts: 1 GB from a 32 kB file).
MAX_NESTING = 32
#: Control characters (C0, DEL, C1) and lone surrogates: no configuration string needs them, and they
#: break what the strings become (NUL in a path, a newline in a log line or an HTTP header).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class ConfigError(Exception):
    """A configuration problem: ``str()`` is the one-line message to show the technician.

    The file name, the key and the value come from outside (command line, file): control characters
    are escaped so the message stays one line, and long values are cut."""

    def __init__(self, file: str, key: str, expected: str, got: object = None) -> None:
        self.file, self.key, self.expected = file, key, expected
        suffix = "" if got is None else f"; got {_shown(got)}"
        where = f"{_printable(key, 200)}: " if key else ""
        super().__init__(f"{_printable(file, 1000)}: {where}expected {expected}{suffix}")


def _printable(text: str, limit: int) -> str:
    """``text`` on one line: control characters and lone surrogates escaped, cut after ``limit``."""
    out = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text[:limit])
    return out + ("..." if len(text) > limit else "")


def _shown(value: object) -> str:
    """A value for an error message: its repr, bounded (the repr of an integer of more than 4300
    digits raises ValueError; so would a very deep list, were nesting not limited)."""
    return bounded_repr(value, 80)


@dataclass(frozen=True)
class BusConfig:
    name: str
    port: str
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    timeout_s: float = 0.3


@dataclass(frozen=True)
class BoardConfig:
    driver: str
    port: str | None = None  # ioboard: its own UART
    bus: str | None = None  # evse_din: a [buses.NAME] entry
    unit: int = 1
    baudrate: int | None = None


@dataclass(frozen=True)
class MeterConfig:
    model: str
    bus: str
    unit: int = 1
    poll_interval_s: float = 1.0


@dataclass(frozen=True)
class ConnectorConfig:
    id: int
    board: BoardConfig
    meter: MeterConfig | None
    max_current_a: float = 32.0
    phases: int = 3
    #: one of CABLE_KINDS; default: a socket with a lock where the board drives one, else without
    cable: str = SOCKET_WITH_LOCK

    @property
    def cable_lock(self) -> bool:
        """The connector has a cable lock to drive (UnlockConnector: NotSupported without one)."""
        return self.cable == SOCKET_WITH_LOCK


@dataclass(frozen=True)
class ReaderConfig:
    driver: str
    port: str
    connectors: tuple[int, ...] = ()  # empty: serves every connector
    baudrate: int | None = None


#: The OCPP versions the agent speaks (``[ocpp] version``); each has its adapter (firmware/ocpp/adapter.py).
OCPP_VERSIONS = ("1.6", "2.0.1")


@dataclass(frozen=True)
class OcppConfig:
    """How to reach the CSMS. ``csms_url`` is the base URL; the identity is appended (OCPP-J)."""

    csms_url: str
    version: str = "1.6"  # one of OCPP_VERSIONS: the WebSocket subprotocol and the adapter
    password: str | None = None  # the AuthorizationKey commissioned (HTTP Basic auth, profiles 1/2); never logged
    security_profile: int = 0  # the profile commissioned (0: none; raised later only by the CSMS)
    csms_ca: str | None = None  # CentralSystemRootCertificate(s): a PEM file or a directory of them (profiles 2/3)
    cp_cert: str | None = None  # the charge point's certificate (profile 3), PEM
    cp_key: str | None = None  # ... and its private key (PEM, mode 0600)
    presets: dict[str, str] = field(default_factory=dict)  # configuration keys set at first boot
    response_timeout_s: float = 30.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    stable_connection_s: float = 60.0  # up this long after BootNotification: the reconnect back-off resets
    authorization_cache_size: int = DEFAULT_CACHE_CAPACITY  # ids the Authorization Cache keeps (§3.5.1)
    reservations: bool = True  # accept ReserveNow (off: Rejected, "configured not to accept reservations")
    reserve_connector_zero: bool = True  # accept a reservation of the whole charger (ReserveConnectorZeroSupported)
    #: 2.0.1 SecurityCtrlr.AdditionalRootCertificateCheck (ReadOnly there: the station's policy, set here; 1.6 has
    #: the ReadWrite key of that name instead)
    additional_root_certificate_check: bool = False

    def __repr__(self) -> str:  # keep the password out of any log or traceback
        return (f"OcppConfig(csms_url={self.csms_url!r}, version={self.version!r}, "
                f"security_profile={self.security_profile}, password=***)")


@dataclass(frozen=True)
class MqttConfig:
    """The site's MQTT broker (telemetry and local control, docs/mqtt.md). Absent section: MQTT is off."""

    host: str
    port: int
    tls: bool = False  # mqtts://
    username: str | None = None
    password: str | None = None  # never logged
    ca_file: str | None = None  # mqtts: trust this CA instead of the system's
    client_cert: str | None = None  # mqtts: the charger's certificate for mutual TLS (PEM) ...
    client_key: str | None = None  # ... and its key
    client_id: str = ""  # "" : evse-agent-<charge point id>
    base_topic: str = "evse"
    payload_format: str = "json"  # json | cbor
    meter_interval_s: float = 10.0
    health_interval_s: float = 60.0
    buffer_size: int = 1000  # publishes kept while the broker is away (oldest dropped first, counted)
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    site_limits: bool = True  # accept site current limits
    local_availability: bool = False  # accept availability on/off
    failsafe_timeout_s: float | None = None  # energy manager silent this long: the fail-safe limit applies
    failsafe_limit_a: float | None = None

    def __repr__(self) -> str:  # keep the password out of any log or traceback
        return (f"MqttConfig(host={self.host!r}, port={self.port}, tls={self.tls}, username={self.username!r}, "
                f"password=***, base_topic={self.base_topic!r})")


@dataclass(frozen=True)
class Identity:
    """What the charger says about itself in BootNotification."""

    vendor: str = "evse-agent"
    model: str = "evse-agent-sim"
    serial_number: str | None = None
    firmware_version: str = "0.1.0"


@dataclass(frozen=True)
class FirmwareConfig:
    """``[firmware]``: updates from the CSMS (docs/firmware-update.md)."""

    trust: str | None = None  # PEM file of the certificates a bundle must be signed by (None: updates refused)
    slots_root: str = "/"  # the root holding opt/evse-agent (the A/B slots) and etc/evse-agent/hardware-revision
    max_bundle_mb: int = 256  # a download larger than this is refused
    health_timeout_s: float = 120.0  # after the switch: the new agent must be accepted by the CSMS within this
    transfer_timeout_s: float = 30.0  # a connection or read without progress for this long fails the attempt
    transfer_ca: str | None = None  # PEM: HTTPS/FTPS servers must be issued by these CAs (None: the system's CAs)
    crl: str | None = None  # the manufacturer root's CRL (PEM or DER): a revoked signing certificate is refused
    crl_url: str | None = None  # where a newer CRL is fetched when the file is missing or past its nextUpdate


@dataclass(frozen=True)
class AgentConfig:
    path: str
    charge_point_id: str
    state_dir: str
    ocpp: OcppConfig | None = None  # None: no CSMS configured (hardware only, e.g. commissioning)
    identity: Identity = field(default_factory=Identity)
    buses: dict[str, BusConfig] = field(default_factory=dict)
    connectors: tuple[ConnectorConfig, ...] = ()
    readers: tuple[ReaderConfig, ...] = ()
    log_level: str = "INFO"
    max_queued_messages: int | None = None  # [storage]: cap on the outbox (None: bounded by the disk only)
    min_free_mb: int = 16  # [storage]: less free space than this is the security event MemoryExhaustion (0: off)
    mqtt: MqttConfig | None = None  # None: no site broker configured
    #: [charge_point] nominal_voltage_v: phase to neutral, to turn limits between A and W (smart charging)
    nominal_voltage_v: float = 230.0
    firmware: FirmwareConfig = field(default_factory=FirmwareConfig)


class _Reader:
    """Typed access to one table of the parsed TOML, recording the path for error messages."""

    def __init__(self, file: str, table: Mapping[str, Any], path: str) -> None:
        self.file, self.table, self.path = file, table, path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, expected: str, got: object = None) -> ConfigError:
        return ConfigError(self.file, self.key(name), expected, got)

    def _get(self, name: str, kind: type[T] | tuple[type, ...], expected: str, default: Any, required: bool) -> Any:
        if name not in self.table:
            if required:
                raise self.fail(name, f"{expected} (required, missing)")
            return default
        value = self.table[name]
        if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else ()):
            raise self.fail(name, expected, value)
        if not isinstance(value, kind):
            raise self.fail(name, expected, value)
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False,
            choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(name, str, "a string", default, required)
        if value is not None and choices is not None and value not in choices:
            raise self.fail(name, f"one of {', '.join(choices)}", value)
        if value is not None and required and not value.strip():
            raise self.fail(name, "a non-empty string", value)
        return value

    def integer(self, name: str, default: int | None = None, *, required: bool = False,
            lo: int | None = None, hi: int | None = None) -> Any:
        value = self._get(name, int, "an integer", default, required)
        if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise self.fail(name, f"an integer from {lo} to {hi}", value)
        return value

    def number(self, name: str, default: float | None = None, *, required: bool = False,
              lo: float | None = None, hi: float | None = None) -> Any:
        value = self._get(name, (int, float), "a number", default, required)
        if value is not None and ((isinstance(value, float) and not math.isfinite(value))  # NaN passes any bound
                                  or (lo is not None and value < lo) or (hi is not None and value > hi)):
            raise self.fail(name, f"a number from {lo} to {hi}", value)
        return None if value is None else float(value)

    def table_(self, name: str, *, required: bool = False) -> _Reader | None:
        value = self._get(name, dict, "a table", None, required)
        return None if value is None else _Reader(self.file, value, self.key(name))

    def tables(self, name: str) -> list[_Reader]:
        value = self._get(name, list, "an array of tables", [], False)
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise ConfigError(self.file, f"{self.key(name)}[{i}]", "a table", item)
            out.append(_Reader(self.file, item, f"{self.key(name)}[{i}]"))
        return out

    def reject_unknown(self, allowed: set[str]) -> None:
        for name in self.table:
            if name not in allowed:
                raise self.fail(name, f"no such key here (known: {', '.join(sorted(allowed))})")


def parse_config(text: str, path: str = "<config>") -> AgentConfig:
    """Parse and validate configuration text; raises :class:`ConfigError` (and nothing else)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(path, "", f"a configuration of at most {MAX_CONFIG_BYTES} characters",
                          f"{len(text)} characters")
    _check_structure(text, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", "valid TOML", str(exc)) from None
    except ValueError as exc:  # int() of a number of more than 4300 digits
        raise ConfigError(path, "", "valid TOML with integers of at most 4300 digits", str(exc).split(";")[0]) \
            from None
    except RecursionError:  # _check_structure bounds the nesting; this is the last line of defence
        raise ConfigError(path, "", f"arrays and tables nested at most {MAX_NESTING} deep",
                          "nesting too deep to parse") from None
    _check_text(data, path)
    root = _Reader(path, data, "")
    root.reject_unknown({"charge_point", "storage", "logging", "buses", "connectors", "readers", "ocpp", "mqtt",
                         "firmware"})

    cp = root.table_("charge_point", required=True)
    assert cp is not None
    cp.reject_unknown({"id", "vendor", "model", "serial_number", "firmware_version", "nominal_voltage_v"})
    cp_id = cp.text("id", required=True)
    if len(cp_id) > 48 or any(c in cp_id for c in "/ ?#"):
        raise cp.fail("id", "at most 48 characters without '/', ' ', '?', '#'", cp_id)
    identity = Identity(
        vendor=_limited(cp, "vendor", Identity.vendor, 20),
        model=_limited(cp, "model", Identity.model, 20),
        serial_number=cp.text("serial_number", None),
        firmware_version=_limited(cp, "firmware_version", Identity.firmware_version, 50),
    )

    storage = root.table_("storage")
    state_dir = "/var/lib/evse-agent"
    max_queued: int | None = None
    min_free_mb = 16
    if storage is not None:
        storage.reject_unknown({"dir", "max_queued_messages", "min_free_mb"})
        state_dir = storage.text("dir", state_dir)
        max_queued = storage.integer("max_queued_messages", None, lo=MIN_QUEUED_MESSAGES, hi=2**62)
        min_free_mb = storage.integer("min_free_mb", 16, lo=0, hi=2**40)

    firmware = FirmwareConfig()
    firmware_t = root.table_("firmware")
    if firmware_t is not None:
        firmware_t.reject_unknown({"trust", "slots_root", "max_bundle_mb", "health_timeout_s", "transfer_timeout_s",
                                   "transfer_ca", "crl", "crl_url"})
        transfer_ca = firmware_t.text("transfer_ca", None)
        if transfer_ca is not None and not Path(transfer_ca).is_file():
            raise firmware_t.fail("transfer_ca", "an existing CA certificate file (PEM)", transfer_ca)
        crl_url = firmware_t.text("crl_url", None)
        if crl_url is not None and urlsplit(crl_url).scheme not in ("http", "https"):
            raise firmware_t.fail("crl_url", "an http:// or https:// URL", crl_url)
        firmware = FirmwareConfig(
            trust=firmware_t.text("trust", None),
            slots_root=firmware_t.text("slots_root", FirmwareConfig.slots_root),
            max_bundle_mb=firmware_t.integer("max_bundle_mb", FirmwareConfig.max_bundle_mb, lo=1, hi=4096),
            health_timeout_s=firmware_t.number("health_timeout_s", FirmwareConfig.health_timeout_s, lo=5.0, hi=3600.0),
            transfer_timeout_s=firmware_t.number("transfer_timeout_s", FirmwareConfig.transfer_timeout_s, lo=1.0,
                                                 hi=600.0),
            transfer_ca=transfer_ca, crl=firmware_t.text("crl", None), crl_url=crl_url,
        )

    log_level = "INFO"
    logging_t = root.table_("logging")
    if logging_t is not None:
        logging_t.reject_unknown({"level"})
        log_level = logging_t.text("level", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    buses: dict[str, BusConfig] = {}
    buses_t = root.table_("buses")
    if buses_t is not None:
        for name in buses_t.table:
            b = buses_t.table_(name, required=True)
            assert b is not None
            b.reject_unknown({"port", "baudrate", "parity", "stopbits", "timeout_s"})
            buses[name] = BusConfig(
                name=name,
                port=b.text("port", required=True),
                baudrate=b.integer("baudrate", 9600, lo=1200, hi=921600),
                parity=b.text("parity", "N", choices=("N", "E", "O")),
                stopbits=b.integer("stopbits", 1, lo=1, hi=2),
                timeout_s=b.number("timeout_s", 0.3, lo=0.01, hi=10.0),
            )

    connectors: list[ConnectorConfig] = []
    for c in root.tables("connectors"):
        c.reject_unknown({"id", "board", "meter", "max_current_a", "phases", "cable"})
        cid = c.integer("id", required=True, lo=1, hi=99)
        if any(x.id == cid for x in connectors):
            raise c.fail("id", "a connector id used only once", cid)
        bt = c.table_("board", required=True)
        assert bt is not None
        bt.reject_unknown({"driver", "port", "bus", "unit", "baudrate"})
        driver = bt.text("driver", required=True, choices=BOARD_DRIVERS)
        board = BoardConfig(
            driver=driver,
            port=bt.text("port", required=driver == "ioboard"),
            bus=bt.text("bus", required=driver == "evse_din"),
            unit=bt.integer("unit", 1, lo=1, hi=247),
            baudrate=bt.integer("baudrate", None, lo=1200, hi=921600),
        )
        if board.bus is not None and board.bus not in buses:
            raise bt.fail("bus", f"the name of a [buses.NAME] table ({', '.join(buses) or 'none defined'})",
                          board.bus)
        meter = None
        mt = c.table_("meter")
        if mt is not None:
            mt.reject_unknown({"model", "bus", "unit", "poll_interval_s"})
            meter = MeterConfig(
                model=mt.text("model", required=True, choices=METER_MODELS),
                bus=mt.text("bus", required=True),
                unit=mt.integer("unit", 1, lo=1, hi=247),
                poll_interval_s=mt.number("poll_interval_s", 1.0, lo=0.1, hi=60.0),
            )
            if meter.bus not in buses:
                raise mt.fail("bus", f"the name of a [buses.NAME] table ({', '.join(buses) or 'none defined'})",
                              meter.bus)
        cable = c.text("cable", SOCKET_WITH_LOCK if driver in LOCK_DRIVERS else SOCKET_WITHOUT_LOCK,
                       choices=CABLE_KINDS)
        if cable == SOCKET_WITH_LOCK and driver not in LOCK_DRIVERS:
            raise c.fail("cable", f'"{SOCKET_WITHOUT_LOCK}" or "{TETHERED}": a {driver} board has no cable lock '
                                  "actuator", cable)
        connectors.append(ConnectorConfig(
            id=cid, board=board, meter=meter,
            max_current_a=c.number("max_current_a", 32.0, lo=6.0, hi=80.0),
            phases=c.integer("phases", 3, lo=1, hi=3),
            cable=cable,
        ))
    if not connectors:
        raise ConfigError(path, "connectors", "at least one [[connectors]] table")
    ocpp = _parse_ocpp(root)
    _check_unit_clashes(path, connectors)

    readers: list[ReaderConfig] = []
    ids = {c.id for c in connectors}
    for r in root.tables("readers"):
        r.reject_unknown({"driver", "port", "connectors", "baudrate"})
        served = r._get("connectors", list, "an array of connector ids", [], False)
        for x in served:
            if isinstance(x, bool) or not isinstance(x, int) or x not in ids:
                raise r.fail("connectors", f"connector ids among {sorted(ids)}", x)
        readers.append(ReaderConfig(
            driver=r.text("driver", required=True, choices=READER_DRIVERS),
            port=r.text("port", required=True),
            connectors=tuple(served),
            baudrate=r.integer("baudrate", None, lo=1200, hi=921600),
        ))
    return AgentConfig(path=path, charge_point_id=cp_id, state_dir=state_dir, ocpp=ocpp, identity=identity,
                       buses=buses,
                       connectors=tuple(connectors), readers=tuple(readers), log_level=log_level,
                       max_queued_messages=max_queued, min_free_mb=min_free_mb,
                       mqtt=_parse_mqtt(root, connectors, cp_id),
                       nominal_voltage_v=cp.number("nominal_voltage_v", 230.0, lo=90.0, hi=300.0), firmware=firmware)


def _check_structure(text: str, path: str) -> None:
    """Refuse nesting deeper than :data:`MAX_NESTING` and dotted keys of more parts, before tomllib.

    A small lexer: it skips strings and comments and follows the brackets, counting the dots of each
    key (at the start of a line outside arrays, in a table header, after ``{`` or ``,`` in an inline
    table, up to ``=``). Dots in values (floats, dates, strings) are not counted."""
    stack: list[str] = []  # the open brackets
    line, i, n = 1, 0, len(text)
    in_key, dots = True, 0
    while i < n:
        c = text[i]
        if c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            end = _string_end(text, i + len(quote), quote)
            line += text.count("\n", i, end)
            i = end
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "\n":
            line += 1
            in_key, dots = not stack or stack[-1] == "{", 0
        elif c in "[{":
            stack.append(c)
            if len(stack) > MAX_NESTING:
                raise ConfigError(path, f"line {line}", f"arrays and tables nested at most {MAX_NESTING} deep")
            if c == "{":
                in_key, dots = True, 0
        elif c in "]}":
            if stack:
                stack.pop()
        elif c == "=":
            in_key = False
        elif c == "," and stack and stack[-1] == "{":
            in_key, dots = True, 0
        elif c == "." and in_key:
            dots += 1
            if dots >= MAX_NESTING:
                raise ConfigError(path, f"line {line}", f"dotted keys of at most {MAX_NESTING} parts")
        i += 1


def _check_text(data: dict[str, Any], path: str) -> None:
    """Every key and string of the file, at any depth, free of control characters and surrogates."""
    todo: deque[tuple[str, object]] = deque([("", data)])
    while todo:
        where, value = todo.popleft()
        if isinstance(value, dict):
            for key, item in value.items():
                inner = f"{where}.{key}" if where else key
                if _CONTROL.search(key):
                    raise ConfigError(path, inner, "a key without control characters")
                todo.append((inner, item))
        elif isinstance(value, list):
            todo.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and _CONTROL.search(value):
            raise ConfigError(path, where, "text without control characters (newline, tab, NUL ...)", value)


def _string_end(text: str, i: int, quote: str) -> int:
    """Index after the string whose opening ``quote`` ends at ``i`` (or the end of an unterminated one;
    tomllib reports that). Basic strings have backslash escapes; one-line strings end at a newline."""
    n = len(text)
    basic = quote[0] == '"'
    while i < n:
        if basic and text[i] == "\\":
            i += 2
            continue
        if text.startswith(quote, i):
            i += len(quote)
            if len(quote) == 3:  # up to two quotes of the content may stand right before the closing ones
                for _ in range(2):
                    if i < n and text[i] == quote[0]:
                        i += 1
            return i
        if len(quote) == 1 and text[i] == "\n":
            return i
        i += 1
    return n


def _limited(t: _Reader, name: str, default: str, max_len: int) -> str:
    """A string that must fit an OCPP CiString field."""
    value: str = t.text(name, default)
    if len(value) > max_len:
        raise t.fail(name, f"at most {max_len} characters (OCPP CiString{max_len})", value)
    return value


def _parse_ocpp(root: _Reader) -> OcppConfig | None:
    o = root.table_("ocpp")
    if o is None:
        return None
    o.reject_unknown({"csms_url", "version", "password", "presets", "response_timeout_s", "reconnect_min_s",
                      "reconnect_max_s", "stable_connection_s", "authorization_cache_size", "security_profile",
                      "csms_ca", "cp_cert", "cp_key", "reservations", "reserve_connector_zero",
                      "additional_root_certificate_check"})
    url: str = o.text("csms_url", required=True)
    if not url.startswith(("ws://", "wss://")):
        raise o.fail("csms_url", "a ws:// or wss:// URL", url)
    presets: dict[str, str] = {}
    pt = o.table_("presets")
    if pt is not None:
        for key, value in pt.table.items():
            if not isinstance(value, str | int | bool) or isinstance(value, float):
                raise pt.fail(key, "a string, integer or boolean", value)
            presets[key] = str(value).lower() if isinstance(value, bool) else str(value)
    password = o.text("password", None)
    if password is not None and not 16 <= len(password) <= 40:
        # OCPP 1.6 security whitepaper: AuthorizationKey is 16..40 characters; never echo it back
        raise ConfigError(o.file, o.key("password"), "16 to 40 characters (OCPP AuthorizationKey)", "***")
    tls = url.startswith("wss://")
    implied = 0 if password is None else (2 if tls else 1)
    profile = o.integer("security_profile", implied, lo=0, hi=3)
    csms_ca, cp_cert, cp_key = o.text("csms_ca", None), o.text("cp_cert", None), o.text("cp_key", None)
    for name, value in (("csms_ca", csms_ca), ("cp_cert", cp_cert), ("cp_key", cp_key)):
        if value is not None and not Path(value).exists():
            raise o.fail(name, "an existing file (PEM)" + (" or directory of them" if name == "csms_ca" else ""), value)
    if profile in (1, 2) and password is None:
        raise o.fail("security_profile", f"a password (AuthorizationKey) for security profile {profile}", profile)
    if profile >= 2 and csms_ca is None:
        raise o.fail("security_profile", f"csms_ca (the CSMS root certificate) for security profile {profile}",
                     profile)
    if profile == 3 and (cp_cert is None or cp_key is None):
        raise o.fail("security_profile", "cp_cert and cp_key (the charge point certificate) for security profile 3",
                     profile)
    if profile >= 1 and tls != (profile >= 2):
        raise o.fail("csms_url", f"a {'wss' if profile >= 2 else 'ws'}:// URL for security profile {profile}", url)
    if (cp_cert is None) != (cp_key is None):
        raise o.fail("cp_key" if cp_key is None else "cp_cert", "cp_cert and cp_key given together", "")
    mn = o.number("reconnect_min_s", 1.0, lo=0.01, hi=3600.0)
    mx = o.number("reconnect_max_s", 300.0, lo=0.01, hi=86400.0)
    if mx < mn:
        raise o.fail("reconnect_max_s", f"a number not below reconnect_min_s ({mn})", mx)
    return OcppConfig(
        csms_url=url,
        version=o.text("version", "1.6", choices=OCPP_VERSIONS),
        password=password,
        security_profile=profile,
        csms_ca=csms_ca,
        cp_cert=cp_cert,
        cp_key=cp_key,
        presets=presets,
        response_timeout_s=o.number("response_timeout_s", 30.0, lo=1.0, hi=600.0),
        reconnect_min_s=mn,
        reconnect_max_s=mx,
        stable_connection_s=o.number("stable_connection_s", 60.0, lo=0.01, hi=86400.0),
        authorization_cache_size=o.integer("authorization_cache_size", DEFAULT_CACHE_CAPACITY, lo=1, hi=1_000_000),
        reservations=o._get("reservations", bool, "true or false", True, False),
        reserve_connector_zero=o._get("reserve_connector_zero", bool, "true or false", True, False),
        additional_root_certificate_check=o._get("additional_root_certificate_check", bool, "true or false", False,
                                                 False),
    )


def _mqtt_topic(t: _Reader, name: str, default: str) -> str:
    value: str = t.text(name, default)
    if not value or value.startswith("/") or value.endswith("/") or any(c in value for c in "+#\0"):
        raise t.fail(name, "a non-empty MQTT topic without wildcards (+, #) or a leading/trailing '/'", value)
    return value


def _parse_mqtt(root: _Reader, connectors: list[ConnectorConfig], cp_id: str) -> MqttConfig | None:
    m = root.table_("mqtt")
    if m is None:
        return None
    if "+" in cp_id:  # it is a level of every topic: MQTT forbids wildcards in topic names
        raise ConfigError(root.file, "charge_point.id", "no '+' when [mqtt] is configured (MQTT wildcard)", cp_id)
    m.reject_unknown({"url", "username", "password", "ca_file", "client_cert", "client_key", "client_id",
                      "base_topic", "payload_format",
                      "meter_interval_s", "health_interval_s", "buffer_size", "keepalive_s", "reconnect_min_s",
                      "reconnect_max_s", "discovery", "discovery_prefix", "site_limits", "local_availability",
                      "failsafe_timeout_s", "failsafe_limit_a"})
    url: str = m.text("url", required=True)
    try:
        parts = urlsplit(url)
        port = parts.port
        if port == 0:
            raise ValueError("port 0")
    except ValueError:
        raise m.fail("url", "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] with a port from 1 to 65535", url) from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") \
            or parts.username is not None or parts.query:
        raise m.fail("url", "mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (credentials go in username/password)", url)
    tls = parts.scheme == "mqtts"
    ca_file = m.text("ca_file", None)
    if ca_file is not None and not tls:
        raise m.fail("ca_file", "to be set only with an mqtts:// url", ca_file)
    if ca_file is not None and not Path(ca_file).is_file():
        raise m.fail("ca_file", "an existing CA certificate file (PEM)", ca_file)
    client_cert, client_key = m.text("client_cert", None), m.text("client_key", None)
    for name, value in (("client_cert", client_cert), ("client_key", client_key)):
        if value is not None and not tls:
            raise m.fail(name, "to be set only with an mqtts:// url", value)
        if value is not None and not Path(value).is_file():
            raise m.fail(name, "an existing file (PEM)", value)
    if (client_cert is None) != (client_key is None):
        raise m.fail("client_key" if client_key is None else "client_cert", "client_cert and client_key together",
                     "")
    username = m.text("username", None)
    password = m.text("password", None)
    if password is not None and username is None:
        raise ConfigError(m.file, m.key("password"), "to be set only together with username", "***")
    client_id: str = m.text("client_id", "")
    if len(client_id) > 64:
        raise m.fail("client_id", "at most 64 characters", client_id)
    mn = m.number("reconnect_min_s", 1.0, lo=0.01, hi=3600.0)
    mx = m.number("reconnect_max_s", 60.0, lo=0.01, hi=86400.0)
    if mx < mn:
        raise m.fail("reconnect_max_s", f"a number not below reconnect_min_s ({mn})", mx)
    timeout = m.number("failsafe_timeout_s", None, lo=1.0, hi=86400.0)
    total = sum(c.max_current_a for c in connectors)
    limit = m.number("failsafe_limit_a", None, lo=0.0, hi=total)
    if (timeout is None) != (limit is None):
        missing = "failsafe_limit_a" if limit is None else "failsafe_timeout_s"
        raise m.fail(missing, "to be set together with "
                     + ("failsafe_timeout_s" if missing == "failsafe_limit_a" else "failsafe_limit_a"))
    if limit is not None and not math.isfinite(limit):
        raise m.fail("failsafe_limit_a", f"a number from 0.0 to {total}", limit)
    discovery = m._get("discovery", bool, "true or false", True, False)
    site_limits = m._get("site_limits", bool, "true or false", True, False)
    local_availability = m._get("local_availability", bool, "true or false", False, False)
    if timeout is not None and not site_limits:
        raise m.fail("failsafe_timeout_s", "no fail-safe when site_limits is false (no energy manager could ever "
                     "release it)", timeout)
    return MqttConfig(
        host=str(parts.hostname), port=port if port is not None else (8883 if tls else 1883), tls=tls,
        username=username, password=password, ca_file=ca_file, client_cert=client_cert, client_key=client_key,
        client_id=client_id,
        base_topic=_mqtt_topic(m, "base_topic", "evse"),
        payload_format=m.text("payload_format", "json", choices=("json", "cbor")),
        meter_interval_s=m.number("meter_interval_s", 10.0, lo=0.1, hi=3600.0),
        health_interval_s=m.number("health_interval_s", 60.0, lo=0.1, hi=86400.0),
        buffer_size=m.integer("buffer_size", 1000, lo=1, hi=1_000_000),
        keepalive_s=m.integer("keepalive_s", 30, lo=5, hi=3600),
        reconnect_min_s=mn, reconnect_max_s=mx,
        discovery=discovery, discovery_prefix=_mqtt_topic(m, "discovery_prefix", "homeassistant"),
        site_limits=site_limits, local_availability=local_availability,
        failsafe_timeout_s=timeout, failsafe_limit_a=limit,
    )


def _check_unit_clashes(path: str, connectors: list[ConnectorConfig]) -> None:
    """Two devices on one RS-485 bus with the same unit id would answer each other's requests."""
    seen: dict[tuple[str, int], str] = {}
    for i, c in enumerate(connectors):
        devices: list[tuple[str, str, int]] = []
        if c.board.bus is not None:
            devices.append((f"connectors[{i}].board.unit", c.board.bus, c.board.unit))
        if c.meter is not None:
            devices.append((f"connectors[{i}].meter.unit", c.meter.bus, c.meter.unit))
        for key, bus, unit in devices:
            if (bus, unit) in seen:
                raise ConfigError(path, key, f"a unit id not already used on bus '{bus}' (used by "
                                  f"{seen[(bus, unit)]})", unit)
            seen[(bus, unit)] = key


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the configuration file; raises :class:`ConfigError` and nothing else.

    Only a regular file of at most :data:`MAX_CONFIG_BYTES` is read: a directory, a device or a pipe
    (``/dev/zero``, a FIFO nobody writes to) would fail late, never end or fill the memory."""
    name = str(Path(path))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(name, "", "an existing configuration file", "file not found") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(name, "", "a readable configuration file", str(exc)) from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(name, "", "a configuration file", "a directory")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(name, "", "a regular configuration file", "a device, pipe or socket")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, "", "a readable configuration file", str(exc)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(name, "", f"a configuration file of at most {MAX_CONFIG_BYTES} bytes",
                          f"{max(info.st_size, len(raw))} bytes")
    if b"\0" in raw:
        raise ConfigError(name, "", "a text file", f"binary data (a NUL byte at offset {raw.index(0)})")
    raw = raw.removeprefix(codecs.BOM_UTF8)  # some editors write one; TOML has no use for it
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(name, "", "a UTF-8 text file", f"invalid UTF-8 on line {line} (byte {exc.start})") \
            from None
    return parse_config(text, name)
