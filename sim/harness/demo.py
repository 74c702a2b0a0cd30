"""``make run``'s live demo: a scripted charging session, shown as one readable line per thing that happens.

:class:`LiveView` turns what the simulator can observe into compact lines on the terminal: connector
statuses the agent reports, OCPP messages both ways (from the builtin CSMS's transcript: action and key
fields), what the hardware does (pilot, PWM offer, contactor) and, while charging, the energy every few
seconds. :func:`run_demo` plays the session: plug, tap an accepted card, charge, EV pauses and resumes,
tap again to stop, unplug. The full JSON logs go to files; the terminal gets only these lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from sim.csms.server import SimulatedCsms
from sim.csms.transcript import Direction, EntryKind, Transcript, TranscriptEntry
from sim.harness.agent_supervisor import AgentOutput
from sim.harness.charger import SimulatedCharger

log = logging.getLogger(__name__)

DEMO_CARD = "04A1B2C3"  # a 4-byte ISO 14443A UID (PN532)
DEMO_TAG_EM4100 = "0104A1B2C3"  # an EM4100 tag: version byte + 32-bit id (RDM6300)


def demo_card(reader: str) -> str:
    """The demo's card for this reader model (each reads only its own kind of card)."""
    return DEMO_TAG_EM4100 if reader == "rdm6300" else DEMO_CARD

_PILOT = {"A": "no EV", "B": "EV connected", "C": "EV ready to charge", "D": "EV ready, ventilation",
          "E": "pilot shorted", "F": "EVSE unavailable (-12 V)"}

#: Fields worth a look per action (request, answer); anything else shows its first scalar fields.
_REQUEST_FIELDS: dict[str, tuple[str, ...]] = {
    "BootNotification": ("chargePointVendor", "chargePointModel", "firmwareVersion", "reason"),
    "Authorize": ("idTag", "idToken"),
    "StartTransaction": ("connectorId", "idTag", "meterStart", "reservationId"),
    "StopTransaction": ("transactionId", "idTag", "meterStop", "reason"),
    "StatusNotification": ("evseId", "connectorId", "status", "connectorStatus", "errorCode", "info"),
    "MeterValues": ("evseId", "connectorId", "transactionId"),
    "Heartbeat": (),
    "SetChargingProfile": ("connectorId",),
    "TransactionEvent": ("eventType", "seqNo", "triggerReason", "offline", "idToken"),  # OCPP 2.0.1
}
_ANSWER_FIELDS: dict[str, tuple[str, ...]] = {
    "BootNotification": ("status", "interval"),
    "Heartbeat": (),
    "StartTransaction": ("transactionId", "idTagInfo"),
    "StatusNotification": (),
    "MeterValues": (),
}


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float | str):
        return str(value)
    if isinstance(value, dict) and "status" in value:  # idTagInfo and friends
        return str(value["status"])
    if isinstance(value, dict) and "idToken" in value:  # 2.0.1 IdTokenType: the token (its type aside)
        return str(value["idToken"])
    return None


def summarize_payload(action: str | None, payload: Any, answer: bool) -> str:
    """``key=value`` pairs a human wants to see for one OCPP payload."""
    if not isinstance(payload, dict):
        return ""
    table = _ANSWER_FIELDS if answer else _REQUEST_FIELDS
    keys = table.get(action or "")
    if keys is None:
        keys = tuple(k for k, v in payload.items() if _scalar(v) is not None)[:5]
    parts = []
    for key in keys:
        if key not in payload:
            continue
        if key == "errorCode" and payload[key] == "NoError":
            continue
        shown = _scalar(payload[key])
        if shown is not None:
            parts.append(f"{key}={shown}")
    if action == "MeterValues" and not answer:
        parts += _sampled_values(payload)
    if action == "TransactionEvent" and not answer and isinstance(payload.get("transactionInfo"), dict):
        info = payload["transactionInfo"]
        parts += [f"{k}={info[k]}" for k in ("chargingState", "stoppedReason") if isinstance(info.get(k), str)]
    if action == "SetChargingProfile" and not answer:
        parts += _profile(payload.get("csChargingProfiles"))
    return " ".join(parts)


def _profile(profile: Any) -> list[str]:
    """``TxDefaultProfile id=1 level=0 Absolute 0s:16A 60s:10A``: what a person watching the pilot needs."""
    if not isinstance(profile, dict):
        return []
    parts = [str(profile.get("chargingProfilePurpose")), f"id={profile.get('chargingProfileId')}",
             f"level={profile.get('stackLevel')}", str(profile.get("chargingProfileKind"))]
    schedule = profile.get("chargingSchedule")
    if isinstance(schedule, dict) and isinstance(schedule.get("chargingSchedulePeriod"), list):
        unit = schedule.get("chargingRateUnit", "")
        parts += [f"{p.get('startPeriod')}s:{p.get('limit')}{unit}" for p in schedule["chargingSchedulePeriod"][:6]
                  if isinstance(p, dict)]
    return parts


def _sampled_values(payload: dict[str, Any]) -> list[str]:
    out = []
    for mv in payload.get("meterValue", [])[:1]:
        for sv in mv.get("sampledValue", [])[:3] if isinstance(mv, dict) else []:
            if isinstance(sv, dict) and "value" in sv:
                measurand = sv.get("measurand", "Energy.Active.Import.Register")
                phase = f".{sv['phase']}" if "phase" in sv else ""
                out.append(f"{measurand}{phase}={sv['value']}{sv.get('unit', '')}")
    return out


def format_entry(entry: TranscriptEntry) -> tuple[str, str] | None:
    """(source, text) for one transcript entry, e.g. ("CP > CSMS", "StartTransaction connectorId=1 ...")."""
    arrow = "CP > CSMS" if entry.direction is Direction.FROM_CP else "CSMS > CP"
    match entry.kind:
        case EntryKind.CALL:
            return arrow, f"{entry.action} {summarize_payload(entry.action, entry.payload, False)}".rstrip()
        case EntryKind.CALLRESULT:
            text = summarize_payload(entry.action, entry.payload, True)
            return arrow, f"{entry.action or '?'}.conf {text}".rstrip()
        case EntryKind.CALLERROR:
            return arrow, f"{entry.action or '?'} CALLERROR {entry.error_code}: {entry.error_description}"
        case EntryKind.MALFORMED:
            return arrow, f"malformed frame: {entry.detail.get('reason', '?')}"
        case EntryKind.CONNECT:
            return "csms", f"{entry.cp_id} connected"
        case EntryKind.DISCONNECT:
            return "csms", f"{entry.cp_id} disconnected (close code {entry.detail.get('code')})"
        case EntryKind.REFUSED:
            return "csms", (f"handshake of {entry.cp_id} refused: HTTP {entry.detail.get('status')} "
                            f"{entry.detail.get('reason', '')}").rstrip()
    return None


class LiveView:
    """Prints what happens, one line each: ``  12.3s  source     text``."""

    def __init__(self, charger: SimulatedCharger, output: AgentOutput, csms: SimulatedCsms | None = None,
                 out: TextIO | None = None, *, poll_s: float = 0.1, energy_every_s: float = 3.0) -> None:
        self.charger = charger
        self.csms = csms
        self.out = out or sys.stdout
        self.poll_s = poll_s
        self.energy_every_s = energy_every_s
        self._t0 = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        output.status_listeners.append(self._on_status)
        output.line_listeners.append(self._on_agent_line)

    def say(self, source: str, text: str) -> None:
        try:
            self.out.write(f"{time.monotonic() - self._t0:7.1f}s  {source:<10} {text}\n")
            self.out.flush()
        except (OSError, ValueError):  # terminal gone: the simulator keeps running
            pass

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._watch_hardware(), name="demo-hardware"))
        if self.csms is not None:
            self._tasks.append(asyncio.create_task(self._follow(self.csms.transcript), name="demo-ocpp"))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- sources -------------------------------------------------------------------------------------

    def on_agent_event(self, kind: str, fields: dict[str, Any]) -> None:
        if kind == "started":
            self.say("agent", f"started (pid {fields.get('pid')}, start #{fields.get('starts')})")
        elif kind == "exited":
            self.say("agent", f"exited with code {fields.get('code')} ({fields.get('state')})")

    def _on_status(self, connector: int, record: dict[str, Any]) -> None:
        error = record.get("error_code")
        suffix = f" ({error})" if error not in (None, "NoError") else ""
        where = f"conn {connector}" if connector else "charger"
        self.say(where, f"status {record.get('status')}{suffix}")

    def _on_agent_line(self, obj: dict[str, Any]) -> None:
        if obj.get("event") == "CardPresented":
            self.say("agent", f"card {obj.get('uid')} read by {obj.get('device')}")
        elif obj.get("level") in ("ERROR", "CRITICAL"):
            self.say("agent", f"{obj.get('level')}: {obj.get('msg')}")
        elif "text" in obj and len(obj) == 1 and obj["text"].startswith("Traceback"):
            self.say("agent", "crashed with a traceback (see agent.log)")

    async def _follow(self, transcript: Transcript) -> None:
        index = 0
        while True:
            try:
                entry = await transcript.wait_for(None, None, direction=None, kind=None, timeout_s=3600,
                                                  since=index)
            except TimeoutError:
                continue
            index = entry.seq + 1
            line = format_entry(entry)
            if line is not None:
                self.say(*line)

    async def _watch_hardware(self) -> None:
        seen: dict[int, tuple[str, float, bool]] = {}
        last_energy = 0.0
        while True:
            now = time.monotonic()
            charging = []
            for n, c in self.charger.connectors.items():
                pilot, offer, closed = str(c.sensed_pilot), c.board.offered_current_a, c.board.contactor_closed
                before = seen.get(n)
                seen[n] = (pilot, offer, closed)
                if before is not None:
                    self._report_changes(n, before, (pilot, offer, closed))
                if any(a > 0 for a in c.electrical.current_a):
                    charging.append(n)
            if charging and now - last_energy >= self.energy_every_s:
                last_energy = now
                for n in charging:
                    e = self.charger.connectors[n].electrical
                    amps = max(e.current_a)
                    phases = sum(1 for a in e.current_a if a > 0)
                    self.say(f"meter {n}", f"{amps:.1f} A x{phases}  {e.power_w / 1000:.1f} kW  "
                                           f"{e.energy_import_wh / 1000:.3f} kWh")
            await asyncio.sleep(self.poll_s)

    def _report_changes(self, n: int, before: tuple[str, float, bool], now: tuple[str, float, bool]) -> None:
        where = f"hw {n}"
        if now[0] != before[0]:
            self.say(where, f"pilot {now[0]} ({_PILOT.get(now[0], '?')})")
        if abs(now[1] - before[1]) >= 0.05:
            self.say(where, f"PWM offer {now[1]:.1f} A" if now[1] > 0 else "PWM offer withdrawn")
        if now[2] != before[2]:
            self.say(where, "contactor closed" if now[2] else "contactor open")


async def _until(check: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll_s)
    return True


async def run_demo(charger: SimulatedCharger, view: LiveView, csms: SimulatedCsms | None, *,
                   card: str | None = None, connector: int = 1, charge_s: float = 10.0,
                   control_url: str = "", pace: float = 1.0) -> None:
    """The scripted session. Every wait is bounded: with an agent that does not charge (yet) the demo says
    so and goes on, so it always ends. ``pace`` scales the pauses that are there for the watcher (and the
    charging time); what the session waits for (the agent accepted, the contactor) it waits for, at any pace."""
    say = view.say

    async def pause(seconds: float) -> None:
        await asyncio.sleep(seconds * pace)

    card = card or demo_card(charger.spec.reader)
    c = charger.connectors[connector]
    cp_id = charger.spec.charge_point_id
    try:
        if csms is not None:
            say("demo", f"waiting for {cp_id} to connect to the builtin CSMS ...")
            try:
                await csms.wait_connected(cp_id, timeout_s=15.0)
                # accepted: the first status notification comes after the BootNotification's Accepted
                await csms.transcript.wait_for("StatusNotification", cp_id=cp_id, timeout_s=15.0)
                await pause(2.0)
            except TimeoutError:
                say("demo", "the agent has not been accepted by the CSMS within 15 s; going on with the hardware")
        else:
            await pause(3.0)
        say("demo", f">> EV plugged into connector {connector}")
        c.ev.plug()
        await pause(3.0)
        accepted = " (accepted by the builtin CSMS)" if csms is not None else ""
        say("demo", f">> card {card} tapped on the reader{accepted}")
        charger.tap(card, 1.0)
        if not await _until(lambda: c.board.contactor_closed, 15.0):
            say("demo", "the agent did not close the contactor within 15 s (no charging session)")
        else:
            await pause(charge_s)
            say("demo", ">> EV pauses charging")
            c.ev.paused = True
            await pause(4.0)
            say("demo", ">> EV resumes charging")
            c.ev.paused = False
            await _until(lambda: c.board.contactor_closed, 5.0)
            await pause(4.0)
        say("demo", f">> card {card} tapped again to stop")
        charger.tap(card, 1.0)
        if not await _until(lambda: not c.board.contactor_closed, 10.0):
            say("demo", "the contactor is still closed 10 s after the stop tap")
        await pause(3.0)
        say("demo", f">> EV unplugged from connector {connector}")
        c.ev.unplug()
        await pause(3.0)
        say("demo", f"demo finished. The simulator keeps running: control API {control_url} "
                    "(python -m sim ctl state). Ctrl-C stops everything.")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the demo is a show; a failure in it must not take the simulator down
        log.exception("demo failed")
        with contextlib.suppress(Exception):
            say("demo", f"demo stopped: {type(exc).__name__}: {exc}")
