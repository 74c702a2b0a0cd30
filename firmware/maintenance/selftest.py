"""The self-test: every configured device and the CSMS, probed once, as a checklist.

``python -m firmware selftest --config FILE`` runs it on the controller; ``tools/flash.py selftest`` runs that
same command over SSH and prints the same table, so the tool and the agent never disagree. The devices are
built from the configuration by :func:`firmware.hardware.build_hardware`, exactly as the agent builds them,
and each one is asked what the agent would ask it first:

- an EVSE board (I/O board, EVSE-DIN): starts (handshake / first status) and reports a pilot state;
- a meter: answers one full reading;
- a PN532 reader: answers its init sequence (firmware version); an RDM6300 cannot be asked anything, so
  only its port is opened (a card tapped during the test is reported);
- the CSMS: a WebSocket handshake with subprotocol ``ocpp1.6`` (and HTTP Basic auth when a password is
  configured) to ``<csms_url>/<charge point id>``, closed again without sending any OCPP message.

The agent must not be running meanwhile: the serial ports are opened here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import partial
from typing import Any

import websockets

from firmware.config import AgentConfig
from firmware.hardware import build_hardware
from firmware.ocpp.link import LinkRefused, OcppLink, charge_point_url
from firmware.ocpp.security_profile import link_settings
from firmware.security.tls import TlsSetupError, classify_failure
from hal.interfaces import EnergyMeter, EvseBoard, IdReader
from hal.pn532.driver import Pn532Reader


class CheckStatus(StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    name: str  # the device's name as the agent's logs use it: board1, meter2, reader1, csms
    what: str  # what it is, for the technician: "meter (sdm630), connector 1"
    where: str  # how it is reached: "rs485 /dev/ttyUSB0 unit 1"
    status: CheckStatus
    detail: str  # what it answered, or what is wrong and what to look at


@dataclass(frozen=True)
class SelftestReport:
    charge_point_id: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status is not CheckStatus.FAIL for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status is CheckStatus.FAIL]

    def to_json(self) -> dict[str, Any]:
        return {"charge_point_id": self.charge_point_id, "ok": self.ok,
                "checks": [{**asdict(c), "status": c.status.value} for c in self.checks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SelftestReport:
        """Read what ``selftest --json`` printed (tools/flash.py renders the controller's report)."""
        checks = tuple(Check(str(c["name"]), str(c["what"]), str(c["where"]), CheckStatus(c["status"]),
                             str(c["detail"])) for c in data["checks"])
        return cls(str(data["charge_point_id"]), checks)


def format_table(report: SelftestReport) -> str:
    """A fixed-width checklist, one line per check, then a verdict line."""
    header = ("check", "device", "connection", "result", "detail")
    rows = [(c.name, c.what, c.where, c.status.value, c.detail) for c in report.checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
             for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
    failed = report.failed
    verdict = ("all checks passed" if not failed else
               f"{len(failed)} check(s) FAILED: {', '.join(c.name for c in failed)}")
    return "\n".join([f"self-test of {report.charge_point_id}", *lines, "", verdict])


async def _probe(name: str, what: str, where: str, timeout_s: float,
                 probe: Callable[[], Awaitable[str]]) -> Check:
    """Run one probe; any failure (timeout, device error, port missing) becomes a FAIL line, never a crash."""
    try:
        async with asyncio.timeout(timeout_s):
            detail = await probe()
    except TimeoutError:
        return Check(name, what, where, CheckStatus.FAIL, f"no answer within {timeout_s:g} s: check wiring, "
                     "power and the port/address in the configuration")
    except Exception as exc:
        return Check(name, what, where, CheckStatus.FAIL, str(exc) or type(exc).__name__)
    return Check(name, what, where, CheckStatus.OK, detail)


async def _board(board: EvseBoard) -> str:
    try:
        await board.start()
        if board.pilot_state is None:
            raise RuntimeError("board answered but reported no pilot state")
        return f"pilot {board.pilot_state.value}, contactor {'closed' if board.contactor_closed else 'open'}"
    finally:
        await board.close()


async def _meter(meter: EnergyMeter) -> str:
    r = await meter.read()
    volts = "/".join(f"{v:.0f}" for v in r.voltage_v)
    return f"{r.energy_import_wh / 1000:.3f} kWh, {volts} V, {r.power_w:.0f} W"


async def _reader(reader: IdReader) -> str:
    try:
        await reader.start()
        if isinstance(reader, Pn532Reader):
            return f"answered ({reader.firmware})" if reader.firmware else "answered"
        return "port open (an RDM6300 cannot be queried: tap a card to see it in the agent's log)"
    finally:
        await reader.close()


async def _csms(config: AgentConfig, timeout_s: float) -> str:
    assert config.ocpp is not None
    o = config.ocpp
    try:
        settings = link_settings(o, o.security_profile, o.password)
    except TlsSetupError as exc:
        raise RuntimeError(str(exc)) from None
    link = OcppLink(o.csms_url, config.charge_point_id, "ocpp1.6", settings=lambda: settings,
                    open_timeout_s=timeout_s)
    try:
        agreed = await link.probe()
    except websockets.exceptions.InvalidStatus as exc:
        code = exc.response.status_code
        hint = " (the password or the charge point id is not accepted)" if code in (401, 403) else ""
        raise RuntimeError(f"CSMS refused the connection: HTTP {code}{hint}") from None
    except LinkRefused as exc:
        raise RuntimeError(str(exc)) from None
    except OSError as exc:
        failure = classify_failure(exc, over_tls=settings.ssl_context is not None)
        if failure is not None:
            raise RuntimeError(f"TLS refused: {failure.event or 'handshake failed'}: {failure.detail}") from None
        raise RuntimeError(f"cannot connect: {exc.strerror or exc} (check the URL and the network)") from None
    auth = "basic auth" if settings.password else "no auth"
    return f"WebSocket connected ({agreed}, {settings.label}, {auth})"


async def _fail(message: str) -> str:
    raise RuntimeError(message)


async def run_selftest(config: AgentConfig, timeout_s: float = 5.0) -> SelftestReport:
    hw = build_hardware(config)
    bus_errors: dict[str, str] = {}
    for name, bus in hw.buses.items():
        try:
            await bus.open()
        except Exception as exc:
            bus_errors[name] = f"bus {name} ({bus.port}) cannot be opened: {exc}"

    probes: list[Awaitable[Check]] = []
    for c in config.connectors:
        ch = hw.connectors[c.id]
        board_probe: Callable[[], Awaitable[str]] = partial(_board, ch.board)
        if c.board.port is not None:
            where = c.board.port
        else:
            assert c.board.bus is not None
            where = f"{c.board.bus} {config.buses[c.board.bus].port} unit {c.board.unit}"
            if c.board.bus in bus_errors:
                board_probe = partial(_fail, bus_errors[c.board.bus])
        probes.append(_probe(ch.board.name, f"EVSE board ({c.board.driver}), connector {c.id}", where, timeout_s,
                             board_probe))
        if c.meter is not None and ch.meter is not None:
            where = f"{c.meter.bus} {config.buses[c.meter.bus].port} unit {c.meter.unit}"
            meter_probe: Callable[[], Awaitable[str]] = (partial(_fail, bus_errors[c.meter.bus])
                                                         if c.meter.bus in bus_errors else partial(_meter, ch.meter))
            probes.append(_probe(ch.meter.name, f"meter ({c.meter.model}), connector {c.id}", where, timeout_s,
                                 meter_probe))
    for r, rh in zip(config.readers, hw.readers, strict=True):
        served = ", ".join(map(str, r.connectors)) if r.connectors else "all"
        probes.append(_probe(rh.reader.name, f"RFID reader ({r.driver}), connectors {served}", r.port, timeout_s,
                             partial(_reader, rh.reader)))
    try:
        checks = list(await asyncio.gather(*probes))
    finally:
        for bus in hw.buses.values():
            await bus.close()
    if config.ocpp is None:
        checks.append(Check("csms", "central system (OCPP)", "-", CheckStatus.SKIPPED,
                            "no [ocpp] section in the configuration"))
    else:
        url = charge_point_url(config.ocpp.csms_url, config.charge_point_id)
        checks.append(await _probe("csms", "central system (OCPP 1.6J)", url, timeout_s,
                                   partial(_csms, config, timeout_s)))
    return SelftestReport(config.charge_point_id, tuple(checks))


def report_json(report: SelftestReport) -> str:
    return json.dumps(report.to_json(), indent=2)
