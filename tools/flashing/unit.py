"""The systemd units that run the agent from the active slot (``current``), and the config's summary.

The agent runs as its own user in a sandbox (docs/technician-guide.md, "Privileges": every directive, the
exposure ``systemd-analyze security`` gives it, and the directives left out and why). What needs root goes
through three small units the agent triggers by writing a request file (firmware/maintenance/privileged.py):
a reboot (OCPP Hard reset), and the install and the A/B switch of its updater.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from firmware.config import AgentConfig
from firmware.maintenance.access import AGENT_USER, SERIAL_GROUP
from firmware.maintenance.privileged import INSTALL_REQUEST, REBOOT_REQUEST, RUN_DIR, SWITCH_REQUEST

SYSTEMD_DIR = "etc/systemd/system"
UNIT_NAME = "evse-agent.service"
UNIT_PATH = f"{SYSTEMD_DIR}/{UNIT_NAME}"
STATE_DROPIN_PATH = f"{SYSTEMD_DIR}/{UNIT_NAME}.d/state-dir.conf"  # written by commissioning and flash
#: The switch unit snapshots and restores the agent's database (firmware/maintenance/db_rollback.py): the same dir.
SWITCH_DROPIN_PATH = f"{SYSTEMD_DIR}/evse-agent-switch.service.d/state-dir.conf"
CONFIG_PATH = "etc/evse-agent/agent.toml"
REVISION_PATH = "etc/evse-agent/hardware-revision"
FIRMWARE_TRUST_PATH = "etc/evse-agent/firmware-trust.pem"  # commission --firmware-trust; [firmware] trust
WATCHDOG_SEC = 30
#: How long the switch unit waits for a new slot's agent to confirm itself (after [firmware] health_timeout_s, 120 s
#: by default, of its own) before it switches back.
CONFIRM_TIMEOUT_S = 600
#: The path units waiting for the agent's requests, started with the agent.
HELPER_UNITS = ("evse-agent-reboot.path", "evse-agent-switch.path", "evse-agent-install.path")
#: Serial devices the agent may open, by the driver names of /proc/devices: on-board UARTs, USB adapters, CDC-ACM
#: boards, the PL011 of a Raspberry Pi.
SERIAL_DEVICES = ("char-ttyS", "char-ttyUSB", "char-ttyACM", "char-ttyAMA")

#: The agent's sandbox; each line was kept because the agent works with it (tests/test_privileges.py runs it
#: with what of it can be applied without systemd); what is left out and why: docs/technician-guide.md.
SANDBOX = f"""User={AGENT_USER}
Group={AGENT_USER}
SupplementaryGroups={SERIAL_GROUP}
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
DevicePolicy=closed
""" + "".join(f"DeviceAllow={d} rw\n" for d in SERIAL_DEVICES)


@dataclass(frozen=True)
class UnitFile:
    path: str  # relative to the controller's root
    text: str
    wanted_by: str | None = None  # the target whose .wants/ link enables it

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def link(self) -> str | None:
        return f"{SYSTEMD_DIR}/{self.wanted_by}.wants/{self.name}" if self.wanted_by else None


def _at(root: str, path: str) -> str:
    """``path`` (absolute on a controller) as the controller at ``root`` sees it (``/`` on a controller)."""
    return path if root == "/" else root.rstrip("/") + path


def _exe(python: str) -> str:
    return python if python.startswith("/") else f"/usr/bin/env {python}"


def unit_text(root: str, python: str) -> str:
    """The agent's unit. ``root``: the controller's root as the controller sees it (``/`` on a controller). Its
    state directory is writable through the drop-in of :func:`state_dropin` (storage.dir, from commissioning)."""
    base = _at(root, "/opt/evse-agent/current")
    config = _at(root, "/" + CONFIG_PATH)
    return f"""\
# Installed by tools/flash.py: the evse-agent, run from the active A/B slot, as its own user in a sandbox.
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
ExecStart={_exe(python)} -S -m firmware run --config {shlex.quote(config)}
Restart=on-failure
RestartSec=2
# 74: database unusable, 78: configuration invalid -- restarting will not help, a technician must look
RestartPreventExitStatus=74 78
WatchdogSec={WATCHDOG_SEC}
TimeoutStopSec=20
# requests for what needs root (a reboot, the A/B switch): see evse-agent-reboot.path, evse-agent-switch.path
RuntimeDirectory=evse-agent
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
{SANDBOX}
[Install]
WantedBy=multi-user.target
"""


def state_dropin(state_dir: str) -> str:
    """The one directory the agent may write (storage.dir: its database; the charge point's key once it has one)."""
    return f"""\
# Written by tools/flash.py (commission, flash): the agent's state directory, storage.dir of its configuration.
[Service]
ReadWritePaths={state_dir}
"""


def helper_units(root: str, python: str) -> list[UnitFile]:
    """The two privileged paths: a path unit waits for the agent's request file and starts a unit doing one thing."""
    run = RUN_DIR  # where RuntimeDirectory= is, whatever the root: systemd makes it under /run
    current = _at(root, "/opt/evse-agent/current")
    switch_args = json.dumps({"root": root, "request": f"{run}/{SWITCH_REQUEST}", "service": UNIT_NAME,
                              "confirm_timeout_s": CONFIRM_TIMEOUT_S})
    install_args = json.dumps({"root": root, "request": f"{run}/{INSTALL_REQUEST}"})
    return [
        UnitFile(f"{SYSTEMD_DIR}/evse-agent-reboot.path", f"""\
# Installed by tools/flash.py: the agent asks for a reboot (Hard reset).
[Unit]
Description=evse-agent: wait for the agent's reboot request

[Path]
PathExists={run}/{REBOOT_REQUEST}
Unit=evse-agent-reboot.service

[Install]
WantedBy=paths.target
""", "paths.target"),
        UnitFile(f"{SYSTEMD_DIR}/evse-agent-reboot.service", """\
# Installed by tools/flash.py: started by evse-agent-reboot.path.
# Runs nothing with privileges: systemd itself reboots (a clean shutdown, as systemctl reboot) once it succeeds.
[Unit]
Description=evse-agent: reboot the controller (OCPP Hard reset)
SuccessAction=reboot

[Service]
Type=oneshot
ExecStart=/bin/true
DynamicUser=yes
CapabilityBoundingSet=
PrivateNetwork=yes
PrivateDevices=yes
PrivateUsers=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
IPAddressDeny=any
UMask=0077
"""),
        UnitFile(f"{SYSTEMD_DIR}/evse-agent-switch.path", f"""\
# Installed by tools/flash.py: the agent's updater asks for the A/B switch.
[Unit]
Description=evse-agent: wait for the agent's slot switch request

[Path]
PathExists={run}/{SWITCH_REQUEST}
Unit=evse-agent-switch.service

[Install]
WantedBy=paths.target
""", "paths.target"),
        UnitFile(f"{SYSTEMD_DIR}/evse-agent-switch.service", f"""\
# Installed by tools/flash.py: started by evse-agent-switch.path.
# Root (the slots are root's), but only to switch to an installed slot that did not fail its health check and
# restart the agent from it (firmware/maintenance/slots.py apply_switch_request); code from the active slot.
# It snapshots the agent's database before a new slot first runs and restores it on a switch back (the state
# directory: state-dir.conf beside this unit; CAP_CHOWN/CAP_FOWNER keep the restored file the agent's).
[Unit]
Description=evse-agent: switch to the A/B slot the agent asked for

[Service]
Type=oneshot
Environment=PYTHONPATH={current}/app
ExecStart={_exe(python)} -S -m firmware.maintenance.slots apply_switch_request '{switch_args}'
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_CHOWN CAP_FOWNER
ProtectSystem=strict
ReadWritePaths={_at(root, "/opt/evse-agent")} {run}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0022
"""),
        UnitFile(f"{SYSTEMD_DIR}/evse-agent-install.path", f"""\
# Installed by tools/flash.py: the agent's updater asks for a downloaded bundle to be installed.
[Unit]
Description=evse-agent: wait for the agent's install request

[Path]
PathExists={run}/{INSTALL_REQUEST}
Unit=evse-agent-install.service

[Install]
WantedBy=paths.target
""", "paths.target"),
        UnitFile(f"{SYSTEMD_DIR}/evse-agent-install.service", f"""\
# Installed by tools/flash.py: started by evse-agent-install.path.
# Root (the slots are root's), but only to install a bundle the agent names by its SHA-256 into the inactive slot:
# copied out of the agent's state directory (read-only here), verified against the configuration's trust anchor
# and hardware revision (firmware/maintenance/slots.py apply_install_request); code and libraries from the active
# slot, which only root writes. The agent keeps running meanwhile; the switch is a request of its own.
[Unit]
Description=evse-agent: install the bundle the agent downloaded into the inactive slot

[Service]
Type=oneshot
Environment=PYTHONPATH={current}/app:{current}/lib
ExecStart={_exe(python)} -S -m firmware.maintenance.slots apply_install_request '{install_args}'
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH
ProtectSystem=strict
ReadWritePaths={_at(root, "/opt/evse-agent")} {run}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateNetwork=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
UMask=0022
"""),
    ]


def unit_files(root: str, python: str) -> list[UnitFile]:
    """Every unit flash installs: the agent's (enabled in multi-user.target) and the privileged paths."""
    return [UnitFile(UNIT_PATH, unit_text(root, python), "multi-user.target"), *helper_units(root, python)]


def security_profile(config: AgentConfig) -> int | None:
    """OCPP 1.6 security profile the configuration amounts to (None: no CSMS configured)."""
    if config.ocpp is None:
        return None
    return config.ocpp.security_profile


def describe_config(config: AgentConfig) -> list[str]:
    """What commissioning writes, for the technician to check (never the password itself)."""
    lines = [f"charge point  {config.charge_point_id} ({config.identity.vendor} {config.identity.model}"
             f"{', serial ' + config.identity.serial_number if config.identity.serial_number else ''})"]
    if config.ocpp is None:
        lines.append("CSMS          none configured (hardware only)")
    else:
        profile = security_profile(config)
        lines.append(f"CSMS          {config.ocpp.csms_url} (OCPP {config.ocpp.version})")
        o = config.ocpp
        lines.append(f"security      profile {profile}, password {'set' if o.password else 'none'}"
                     + (f", CSMS root {o.csms_ca}" if o.csms_ca else "")
                     + (f", charge point certificate {o.cp_cert}" if o.cp_cert else ""))
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
