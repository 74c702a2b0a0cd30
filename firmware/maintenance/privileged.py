"""What the agent may not do itself but asks systemd for: reboot the controller, install into and switch the A/B slot.

The agent runs as its own unprivileged user in a sandbox (docs/technician-guide.md, "Privileges"), so it cannot
reboot (OCPP Hard reset) nor switch the slot its code runs from (the updater). For each of the two it writes a
request file into its runtime directory (``RuntimeDirectory=evse-agent``: systemd passes it as
``$RUNTIME_DIRECTORY``, ``/run/evse-agent``), where a path unit installed by tools/flashing/unit.py waits for it
and starts a small unit that does that one thing and nothing else:

- ``reboot`` (any content): ``evse-agent-reboot.service`` runs ``/bin/true`` and reboots by systemd's own
  ``SuccessAction=reboot`` — a clean shutdown of every service, the agent's included. ``/run`` is a tmpfs, so the
  request is gone after the reboot (in the state directory it would reboot the controller forever).
- ``switch-slot`` (``a`` or ``b``): ``evse-agent-switch.service`` (root) checks that the slot holds an installed
  agent that did not fail its health check, switches ``current`` to it and restarts the agent from it
  (firmware/maintenance/slots.py, ``apply_switch_request``).

  After a slot's first run it waits (up to the unit's limit) for ``slot-confirmed`` naming the slot, written by
  the new agent once the CSMS accepted it; without it — the new agent cannot start, or gives up on itself with a
  switch request of its own — it switches back (the database restored) and marks the slot FAILED.
- ``install-bundle`` (the SHA-256 of a bundle the agent downloaded and verified into
  ``<state dir>/firmware-download/<sha256>.bundle``, and an id for the outcome): ``evse-agent-install.service``
  (root) copies it out of the agent's reach, verifies it again against the trust anchor of the configuration
  (root's) and the hardware revision, and unpacks it into the inactive slot (firmware/maintenance/slots.py,
  ``apply_install_request``); the agent reads the outcome in ``state.json``.

A file appears complete (written beside it, then renamed), as the path units watch for its name. Without
``$RUNTIME_DIRECTORY`` (not run by the unit: the simulator, tests, a technician's shell) there is no one to ask,
and the functions say so by returning None.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

RUN_DIR = "/run/evse-agent"  # RuntimeDirectory=evse-agent
REBOOT_REQUEST = "reboot"
SWITCH_REQUEST = "switch-slot"
INSTALL_REQUEST = "install-bundle"
CONFIRM = "slot-confirmed"  # the new agent is up and accepted: root stops waiting to roll it back
SLOTS = ("a", "b")


def request_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The runtime directory systemd made for the agent, or None when it was not started by its unit."""
    value = (os.environ if environ is None else environ).get("RUNTIME_DIRECTORY", "")
    return Path(value.split(":")[0]) if value else None


def _write(name: str, text: str, environ: Mapping[str, str] | None) -> Path | None:
    directory = request_dir(environ)
    if directory is None:
        return None
    path = directory / name
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def request_reboot(reason: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Ask for a reboot of the controller; the request file, or None when there is no one to ask."""
    return _write(REBOOT_REQUEST, reason + "\n", environ)


def clear_stale_reboot(environ: Mapping[str, str] | None = None) -> bool:
    """At start: a reboot request still there was not acted on (the reboot unit is missing or failed): remove it,
    so that enabling the unit later does not reboot the controller then; True if there was one."""
    directory = request_dir(environ)
    if directory is None:
        return False
    try:
        (directory / REBOOT_REQUEST).unlink()
    except FileNotFoundError:
        return False
    return True


def request_switch(slot: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Ask for the A/B switch to ``slot`` (and a restart of the agent from it); None when there is no one to ask."""
    if slot not in SLOTS:
        raise ValueError(f"slot {slot!r}: expected one of {', '.join(SLOTS)}")
    return _write(SWITCH_REQUEST, slot + "\n", environ)


def request_install(sha256: str, request_id: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """Ask root to install the bundle ``<state dir>/firmware-download/<sha256>.bundle`` into the inactive slot;
    ``request_id`` (hex) comes back with the outcome in ``state.json``. None when there is no one to ask."""
    for value, length in ((sha256, 64), (request_id, 32)):
        if len(value) != length or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{value!r} is not {length} hex digits")
    return _write(INSTALL_REQUEST, f"{sha256} {request_id}\n", environ)


def confirm_slot(slot: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """After a switch: the new agent is up and accepted by the CSMS. Root, waiting for this after a slot's first
    run, keeps the slot; without it in time, it switches back. None when there is no one to tell."""
    if slot not in SLOTS:
        raise ValueError(f"slot {slot!r}: expected one of {', '.join(SLOTS)}")
    return _write(CONFIRM, slot + "\n", environ)
