"""The systemd unit that runs the agent from the active slot (``current``), and the config's summary."""

from __future__ import annotations

import shlex

from firmware.config import AgentConfig

UNIT_PATH = "etc/systemd/system/evse-agent.service"
UNIT_WANTS = "etc/systemd/system/multi-user.target.wants/evse-agent.service"
CONFIG_PATH = "etc/evse-agent/agent.toml"
REVISION_PATH = "etc/evse-agent/hardware-revision"
WATCHDOG_SEC = 30


def unit_text(root: str, python: str) -> str:
    """``root``: the controller's root as the controller sees it (``/`` on a controller)."""
    base = (root.rstrip("/") + "/opt/evse-agent/current") if root != "/" else "/opt/evse-agent/current"
    config = (root.rstrip("/") + "/" + CONFIG_PATH) if root != "/" else "/" + CONFIG_PATH
    exe = python if python.startswith("/") else f"/usr/bin/env {python}"
    return f"""# Installed by tools/flash.py: the evse-agent, run from the active A/B slot.
[Unit]
Description=evse-agent (EV charger controller agent)
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=notify
NotifyAccess=main
WorkingDirectory={base}
Environment=PYTHONPATH={base}/app:{base}/lib PYTHONUNBUFFERED=1
ExecStart={exe} -S -m firmware run --config {shlex.quote(config)}
Restart=on-failure
RestartSec=2
# 74: database unusable, 78: configuration invalid -- restarting will not help, a technician must look
RestartPreventExitStatus=74 78
WatchdogSec={WATCHDOG_SEC}
TimeoutStopSec=20

[Install]
WantedBy=multi-user.target
"""


def security_profile(config: AgentConfig) -> int | None:
    """OCPP 1.6 security profile the configuration amounts to (None: no CSMS configured)."""
    if config.ocpp is None:
        return None
    tls = config.ocpp.csms_url.startswith("wss://")
    if config.ocpp.password is None:
        return 0
    return 2 if tls else 1


def describe_config(config: AgentConfig) -> list[str]:
    """What commissioning writes, for the technician to check (never the password itself)."""
    lines = [f"charge point  {config.charge_point_id} ({config.identity.vendor} {config.identity.model}"
             f"{', serial ' + config.identity.serial_number if config.identity.serial_number else ''})"]
    if config.ocpp is None:
        lines.append("CSMS          none configured (hardware only)")
    else:
        profile = security_profile(config)
        lines.append(f"CSMS          {config.ocpp.csms_url} (OCPP {config.ocpp.version})")
        lines.append(f"security      profile {profile}, password {'set' if config.ocpp.password else 'none'}")
    for b in config.buses.values():
        lines.append(f"bus {b.name:<9} {b.port} {b.baudrate} {b.parity}{b.stopbits}")
    for c in config.connectors:
        where = c.board.port if c.board.port else f"bus {c.board.bus} unit {c.board.unit}"
        meter = f", meter {c.meter.model} on bus {c.meter.bus} unit {c.meter.unit}" if c.meter else ", no meter"
        lines.append(f"connector {c.id:<3} {c.max_current_a:g} A {c.phases}-phase, board {c.board.driver} on "
                     f"{where}{meter}")
    for i, r in enumerate(config.readers):
        served = ", ".join(map(str, r.connectors)) if r.connectors else "all"
        lines.append(f"reader{i + 1:<7} {r.driver} on {r.port} (connectors {served})")
    return lines
