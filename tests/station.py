"""End-to-end test harness: simulated hardware + simulated CSMS in the test, the agent as a real process.

The agent reaches the devices only through pseudo-terminals and the CSMS only through a WebSocket,
exactly as on a charger; the test drives the EV and the card reader and reads the CSMS's transcript.

``start_agent(supervised=True)`` restarts the agent whenever it exits with anything but a clean stop
(0) or a configuration error (78), as systemd's ``Restart=on-failure`` does on a controller: an OCPP
Reset (exit 75) is then followed by a new agent process that boots again. ``send_raw`` puts any text
on the CSMS's WebSocket, for tests of the agent's handling of malformed frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.exitcodes import ExitCode
from sim.csms.behaviour import ChargePointProfile
from sim.csms.server import SimulatedCsms
from sim.csms.transcript import Direction, EntryKind, TranscriptEntry
from sim.devices.interfaces import BoardFault
from sim.devices.pn532 import AutoPollEvent, SimulatedPn532
from sim.harness.charger import ChargerSpec, SimulatedCharger

CP_ID = "E2E-CP-1"
# How long a test waits for something that normally takes a second or a few: generous, so that a loaded
# machine makes a run slow, not red. Tests wait for events ("until X, at most WAIT_S"), not for time windows.
WAIT_S = 30.0


class Station:
    def __init__(self, state_dir: Path, *, connectors: int = 2, board: str = "ioboard", meter: str = "sdm630",
                 reader: str = "pn532", presets: dict[str, Any] | None = None,
                 boot_statuses: list[str] | None = None, heartbeat_interval: int = 300,
                 storage_dir: Path | None = None, extra_config: str = "", cable: str | None = None,
                 csms_ssl: ssl.SSLContext | None = None, ocpp_extra: str = "",
                 csms_files: Path | None = None, ocpp: str = "1.6", response_timeout_s: float = 5) -> None:
        """``csms_ssl``: the simulated CSMS serves wss:// with it; ``ocpp_extra``: lines for the agent's [ocpp]
        section (security_profile, password, csms_ca...); ``csms_files``: the simulated CSMS also serves these
        files over HTTP and takes uploads (firmware updates, diagnostics). ``ocpp``: the version the agent and
        the simulated CSMS speak, "1.6" or "2.0.1" (then ``presets`` are device model variables,
        ``Component.Variable``, and statuses are per EVSE: :meth:`wait_status` takes the 2.0.1 ConnectorStatus).
        ``response_timeout_s``: how long the agent waits for an answer to its CALLs (``[ocpp] response_timeout_s``)."""
        self.state_dir = state_dir
        self.storage_dir = storage_dir or state_dir  # the agent's database (config and log stay in state_dir)
        self.spec = ChargerSpec(charge_point_id=CP_ID, connectors=connectors, board=board,  # type: ignore[arg-type]
                                meter=meter, reader=reader, cable=cable)  # type: ignore[arg-type]
        self.charger = SimulatedCharger(self.spec)
        self.ocpp = ocpp
        self.csms = SimulatedCsms(response_timeout_s=WAIT_S, ping_interval_s=None, ssl_context=csms_ssl,
                                  files_dir=csms_files, ocpp_version=ocpp)
        self.ocpp_extra = ocpp_extra
        self.response_timeout_s = response_timeout_s
        base: dict[str, Any] = (
            {"SampledDataCtrlr.TxUpdatedInterval": 0, "OCPPCommCtrlr.HeartbeatInterval": heartbeat_interval}
            if ocpp == "2.0.1" else {"MeterValueSampleInterval": 0, "HeartbeatInterval": heartbeat_interval})
        self.presets = {**base, **(presets or {})}
        self.profile = ChargePointProfile(boot_statuses=boot_statuses or ["Accepted"],
                                          heartbeat_interval=heartbeat_interval, boot_retry_interval=1)
        self.proc: asyncio.subprocess.Process | None = None
        self.config_path = state_dir / "agent.toml"
        self.log_path = state_dir / "agent.log"
        self.starts = 0
        self.exit_codes: list[int] = []  # every agent exit, in order (supervised or not)
        self._supervisor: asyncio.Task[None] | None = None
        self.restart_delay_s = 0.2
        self.extra_config = extra_config  # appended to the agent's TOML (e.g. an [mqtt] section)
        self.agent_env: dict[str, str] = {}  # extra environment of the agent process
        #: how the agent is started, and extra options of its process (tests/test_privileges.py: another
        #: interpreter, and a preexec_fn that puts it in its unit's sandbox)
        self.agent_command: list[str] = [sys.executable, "-m", "firmware"]
        self.spawn_options: dict[str, Any] = {}

    async def __aenter__(self) -> Station:
        await self.charger.start()
        await self.csms.start()
        self.csms.behaviour.profiles[CP_ID] = self.profile
        presets = "\n".join(f"{json.dumps(k)} = {json.dumps(str(v))}" for k, v in self.presets.items())
        self.config_path.write_text(
            self.charger.agent_config(str(self.storage_dir))
            + f'\n[ocpp]\ncsms_url = "{self.csms.url}"\nversion = "{self.ocpp}"\n'
            + f"response_timeout_s = {self.response_timeout_s}\n"
            + "reconnect_min_s = 0.2\n"
            + f"reconnect_max_s = 1\n{self.ocpp_extra}\n[ocpp.presets]\n{presets}\n" + self.extra_config)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_agent()
        await self.csms.stop()
        await self.charger.close()

    # --- the agent process ----------------------------------------------------------------------

    async def start_agent(self, *, wait_boot: bool = True, supervised: bool = False) -> None:
        mark = self.csms.transcript.mark()
        await self._spawn()
        if supervised:
            self._supervisor = asyncio.create_task(self._supervise(), name="station-supervisor")
        if wait_boot:
            await self.wait_booted(since=mark)

    async def wait_booted(self, *, since: int = 0, timeout_s: float = WAIT_S) -> None:
        """Until the agent (re)connected and reported the status of the charge point and every connector."""
        await self.csms.wait_connected(CP_ID, timeout_s=timeout_s)
        if self.ocpp == "2.0.1":  # every EVSE (2.0.1 has no connector 0)
            for evse in range(1, self.spec.connectors + 1):
                await self.wait_call("StatusNotification", lambda e, c=evse: e.payload["evseId"] == c,
                                     since=since, timeout_s=timeout_s)
            return
        for connector in range(self.spec.connectors + 1):
            await self.wait_call("StatusNotification", lambda e, c=connector: e.payload["connectorId"] == c,
                                 since=since, timeout_s=timeout_s)

    async def _spawn(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.agent_env)
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.agent_command, "run", "--config", str(self.config_path),
                stdout=log, stderr=asyncio.subprocess.STDOUT, env=env, **self.spawn_options)
        self.starts += 1

    async def _supervise(self) -> None:
        """systemd ``Restart=on-failure`` with ``RestartPreventExitStatus=78``: restart after a requested
        restart (75) or a crash, not after a clean stop or a configuration error."""
        while self.proc is not None:
            code = await self.proc.wait()
            self.exit_codes.append(code)
            if code in (ExitCode.OK, ExitCode.CONFIG) or code < 0:  # < 0: killed by a signal we sent
                return
            await asyncio.sleep(self.restart_delay_s)
            await self._spawn()

    async def _unsupervise(self) -> None:
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def kill_agent(self) -> None:
        """Power cut: SIGKILL, no chance to clean up."""
        await self._unsupervise()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            self.exit_codes.append(await self.proc.wait())

    def catches_sigterm(self) -> bool:
        """Whether the agent process handles SIGTERM yet (its first lines install the handler; before them the
        interpreter itself is starting, and no program can answer a signal then)."""
        assert self.proc is not None
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return True  # gone (or not Linux): nothing to wait for
        caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
        return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))

    async def stop_agent(self) -> int | None:
        await self._unsupervise()
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):  # a stop right after a start: once the interpreter is up
                await self.wait_until(self.catches_sigterm, WAIT_S, "the agent handles SIGTERM")
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(self.proc.wait(), WAIT_S)
            except TimeoutError:
                self.proc.kill()
                code = await self.proc.wait()
            self.exit_codes.append(code)
        return self.proc.returncode

    @property
    def agent_running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def wait_exit(self, timeout_s: float = WAIT_S) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    def log(self) -> list[dict[str, Any]]:
        out = []
        # "\n" only: splitlines() also splits at U+2028 or U+0085 inside a JSON string, and the line was lost
        for line in self.log_path.read_text(errors="replace").split("\n"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    def outbox(self) -> list[tuple[str, int | None, bool]]:
        """(action, connectorId, of a transaction) of each message waiting in the agent's outbox, oldest first
        (read only, while the agent runs)."""
        db = sqlite3.connect(f"file:{self.storage_dir / 'agent.db'}?mode=ro", uri=True, timeout=WAIT_S)
        try:
            rows = db.execute("SELECT action, payload, local_id FROM outbox ORDER BY seq").fetchall()
        finally:
            db.close()
        return [(action, json.loads(payload).get("connectorId"), local_id is not None)
                for action, payload, local_id in rows]

    # --- the world around the charger -------------------------------------------------------------

    def ev(self, connector: int = 1) -> Any:
        return self.charger.connectors[connector].ev

    async def tap(self, uid: str, hold_s: float = 0.5, *, seen: bool = True) -> None:
        """Hold the card ``uid`` on the reader for ``hold_s``, then take it away. ``seen`` (a PN532): also hold it
        until the agent's reader has taken it in, then wait until it has seen the field empty long enough to call
        the card gone — one tap is one presentation to the agent, however slow it runs. ``seen=False``: the card
        comes and goes by the clock alone, whether or not the agent is there."""
        reader = self.charger.reader
        assert reader is not None
        pn532 = reader if seen and isinstance(reader, SimulatedPn532) else None
        since = len(pn532.autopolls) if pn532 else 0
        reader.present(uid)
        await asyncio.sleep(hold_s)
        if pn532:
            await self.wait_until(lambda: _taken_in(pn532.autopolls[since:], uid), WAIT_S,
                                  f"the agent's reader took card {uid} in")
            since = len(pn532.autopolls)
        reader.remove()
        if pn532:
            await self.wait_until(lambda: _taken_in(pn532.autopolls[since:], None, answers=2), WAIT_S,
                                  f"the agent's reader saw card {uid} go")
        else:
            await asyncio.sleep(0.3)

    def inject(self, connector: int, fault: BoardFault, active: bool = True) -> None:
        """A fault on the connector's simulated board (e.g. an RCD trip), seen by the agent over the wire."""
        self.charger.connectors[connector].board.inject(fault, active)

    def lock_stuck(self, connector: int, stuck: bool = True) -> None:
        """Jam (or free) the cable lock actuator of the connector's simulated I/O board."""
        self.inject(connector, BoardFault.LOCK_STUCK, stuck)

    def cable_locked(self, connector: int) -> bool:
        """Whether the connector's lock physically holds the cable (the simulated board's position switch)."""
        board = self.charger.connectors[connector].board
        return bool(getattr(board, "cable_locked", False))

    def meter_silent(self, connector: int, silent: bool = True) -> None:
        self.charger.connectors[connector].meter.set_silent(silent)

    # --- raw frames to the agent ------------------------------------------------------------------

    async def send_raw(self, text: str) -> None:
        """Send ``text`` as one WebSocket text frame from the CSMS, bypassing its framing and validation."""
        await self.csms.session(CP_ID).connection.send(text)

    async def wait_reply(self, unique_id: str, *, since: int = 0, timeout_s: float = WAIT_S) -> TranscriptEntry:
        """The agent's CALLRESULT or CALLERROR for a CALL we sent with ``unique_id``."""
        def match(e: TranscriptEntry) -> bool:
            return e.unique_id == unique_id and e.kind in (EntryKind.CALLRESULT, EntryKind.CALLERROR)
        return await self.csms.transcript.wait_for(None, match, cp_id=CP_ID, direction=Direction.FROM_CP,
                                                   kind=None, timeout_s=timeout_s, since=since)

    def replies(self, unique_id: str, since: int = 0) -> list[TranscriptEntry]:
        return [e for e in self.csms.transcript.messages(CP_ID, direction=Direction.FROM_CP, since=since)
                if e.unique_id == unique_id and e.kind in (EntryKind.CALLRESULT, EntryKind.CALLERROR)]

    # --- what the CSMS saw ------------------------------------------------------------------------

    def mark(self) -> int:
        return self.csms.transcript.mark()

    async def wait_call(self, action: str, predicate: Any = None, *, since: int = 0,
                        timeout_s: float = WAIT_S) -> TranscriptEntry:
        return await self.csms.transcript.wait_for(action, predicate, cp_id=CP_ID, direction=Direction.FROM_CP,
                                                   kind=EntryKind.CALL, timeout_s=timeout_s, since=since)

    async def wait_status(self, connector: int, status: str, *, since: int = 0, timeout_s: float = WAIT_S,
                          error_code: str | None = None) -> TranscriptEntry:
        def match(e: TranscriptEntry) -> bool:
            p = e.payload
            if self.ocpp == "2.0.1":
                return bool(p.get("evseId") == connector and p.get("connectorStatus") == status)
            return bool(p.get("connectorId") == connector and p.get("status") == status
                        and (error_code is None or p.get("errorCode") == error_code))
        return await self.wait_call("StatusNotification", match, since=since, timeout_s=timeout_s)

    def calls(self, action: str | None = None, since: int = 0) -> list[TranscriptEntry]:
        return self.csms.transcript.messages(CP_ID, action=action, direction=Direction.FROM_CP,
                                             kind=EntryKind.CALL, since=since)

    def statuses(self, connector: int, since: int = 0) -> list[str]:
        if self.ocpp == "2.0.1":
            return [e.payload["connectorStatus"] for e in self.calls("StatusNotification", since)
                    if e.payload["evseId"] == connector]
        return [e.payload["status"] for e in self.calls("StatusNotification", since)
                if e.payload["connectorId"] == connector]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = WAIT_S, what: str = "") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            if loop.time() > deadline:
                raise TimeoutError(f"not reached within {timeout_s} s: {what or condition}")
            await asyncio.sleep(0.05)

    async def wait_log(self, match: Callable[[dict[str, Any]], bool], *, since: int = 0, timeout_s: float = WAIT_S,
                       what: str = "") -> dict[str, Any]:
        """The first line of the agent's log, from line ``since`` on (``len(s.log())`` marks), that ``match``es."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.log()[since:] if match(e)][:1]
            return bool(found)
        await self.wait_until(seen, timeout_s, what or "a log line")
        return found[0]

    async def quiet(self, seconds: float) -> None:
        """Let time pass (to check that something does NOT happen)."""
        await asyncio.sleep(seconds)

    async def start_session(self, connector: int = 1, uid: str = "04A1B2C3") -> int:
        """Plug-first session with an accepted card until the CSMS has the transaction; returns its id.
        A card the CSMS does not know yet is accepted (one already listed keeps its entry)."""
        if self.csms.behaviour.id_tags.lookup(uid) is None:
            self.csms.behaviour.id_tags.accept(uid)
        mark = self.mark()
        self.ev(connector).plug()
        await self.wait_status(connector, "Preparing", since=mark)
        await self.tap(uid)
        ex = await self.csms.wait_for_exchange("StartTransaction", cp_id=CP_ID, timeout_s=WAIT_S, since=mark)
        await self.wait_status(connector, "Charging", since=mark)
        assert ex.response is not None
        return int(ex.response.payload["transactionId"])


def _taken_in(events: list[AutoPollEvent], uid: str | None, *, answers: int = 1) -> bool:
    """The reader's InAutoPoll was answered ``answers`` times with ``uid`` (``None``: an empty field), and the
    driver has acted on the last of those answers: it sent its next InAutoPoll, which it does only then. For a
    card gone, 2 empty answers: the driver calls a card gone after 2 in a row (hal/pn532/driver.py absent_after)."""
    seen = 0
    for event in events:
        if event.answered and event.uid == uid:
            seen += 1
        elif seen >= answers and not event.answered:
            return True
    return False
