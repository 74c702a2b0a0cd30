"""How the update pipeline (:mod:`updater`) reaches the A/B slots (:mod:`slots`), in the two situations there are:

* :class:`PrivilegedInstaller` — the agent runs under its systemd unit as its own user and may not write its code:
  the install and the switch are asked of root through ``/run/evse-agent/install-bundle`` and ``switch-slot``
  (:mod:`privileged`): root copies the bundle out of the agent's reach, verifies it again and unpacks it into the
  inactive slot; for the switch it stops the agent, snapshots or restores the database, switches and starts it.
* :class:`SlotsInstaller` — the agent may write the slots root itself (the simulator's charger, a test root, an
  agent run as root without the unit): it stages with :func:`slots.install` and leaves the switch as a request in
  its state directory, which the next start applies before the database is opened
  (:func:`apply_pending_switch`) — the same :func:`slots.apply_switch_request` root runs, with the agent stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from cryptography import x509

from firmware.config import AgentConfig
from firmware.maintenance import access, privileged, slots, transfer
from firmware.maintenance.updater import InstallError, UpdaterSettings

log = logging.getLogger(__name__)

PENDING_SWITCH = "switch-slot"  # in the state dir, for SlotsInstaller (the same format as the privileged request)


def _state(root: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((Path(root) / slots.BASE / "state.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


class _SlotsReader:
    def __init__(self, root: str) -> None:
        self.root = root

    def running(self) -> tuple[str | None, str | None]:
        slot = slots.active_slot(self.root)
        if slot is None:
            return None, None
        version = (_state(self.root).get("slots", {}).get(slot) or {}).get("version")
        if version is None:
            try:
                version = json.loads((Path(self.root) / slots.BASE / "slots" / slot / "manifest.json").read_text())[
                    "version"]
            except (OSError, ValueError, KeyError):
                version = None
        return slot, version

    def slot_health(self, slot: str) -> str | None:
        entry = _state(self.root).get("slots", {}).get(slot)
        return None if entry is None else entry.get("health")


class SlotsInstaller(_SlotsReader):
    def __init__(self, root: str, state_dir: Path) -> None:
        super().__init__(root)
        self.state_dir = state_dir

    async def stage(self, bundle: Path, sha256: str, size: int) -> str:
        if slots.active_slot(self.root) is None:  # never create a slots tree where there is none
            raise InstallError(f"no agent runs from A/B slots under {self.root}: this charger cannot install an "
                               "update (firmware.slots_root in the configuration)")

        def install() -> str:
            up = slots.prepare_upload(self.root, sha256, size)
            part = Path(up["path"])
            part.unlink(missing_ok=True)
            try:  # the verified download itself (one more name for it), no copy; a copy on another file system
                os.link(bundle, part)
            except OSError:
                shutil.copyfile(bundle, part)
            return str(slots.install(self.root, sha256, size)["slot"])
        try:
            return await asyncio.to_thread(install)
        except (slots.SlotError, OSError) as exc:
            raise InstallError(f"cannot install into the inactive slot: {exc}") from None

    async def switch(self, slot: str) -> None:
        path = self.state_dir / PENDING_SWITCH
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w") as f:
            f.write(slot + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def confirm(self, slot: str) -> None:
        """Recorded in ``state.json``, and said beside the switch request (``slot-confirmed``): whoever applied the
        switch for us and waits for the new agent's word (the simulator's slot runner, as root's unit does on a
        controller) keeps the slot."""
        slots.record_health(self.root, slot, {"ok": True, "stage": "passed",
                                              "detail": "up and accepted by the CSMS after the update"})
        path = self.state_dir / slots.CONFIRM_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(slot + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.error("the new slot could not be confirmed", extra={"slot": slot, "error": str(exc)})


class PrivilegedInstaller(_SlotsReader):
    #: How long root may take to copy, verify and unpack a bundle (a full one: a few seconds).
    INSTALL_TIMEOUT_S = 600.0

    def __init__(self, root: str, state_dir: Path) -> None:
        super().__init__(root)
        self.state_dir = state_dir

    async def stage(self, bundle: Path, sha256: str, size: int) -> str:
        """Root installs it (``evse-agent-install.service``, :func:`slots.apply_install_request`): the bundle is
        put where root looks for it, the request names its hash, and the outcome is read from ``state.json``."""
        target = self.state_dir / slots.DOWNLOADS / f"{sha256}.bundle"

        def put_in_place() -> bool:
            target.parent.mkdir(parents=True, exist_ok=True)
            if bundle.exists():
                os.replace(bundle, target)
            return target.is_file()
        if not await asyncio.to_thread(put_in_place):
            raise InstallError(f"the verified bundle {target} is gone")
        request_id = uuid.uuid4().hex
        if privileged.request_install(sha256, request_id) is None:
            raise InstallError("no privileged install path (not run by the evse-agent unit)")
        deadline = asyncio.get_running_loop().time() + self.INSTALL_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            for event in _state(self.root).get("history", []):
                if event.get("request") != request_id:
                    continue
                target.unlink(missing_ok=True)
                if event.get("event") == "installed":
                    return str(event["slot"])
                raise InstallError(f"root refused the install: {event.get('reason')}")
        raise InstallError(f"root did not install the bundle within {self.INSTALL_TIMEOUT_S:g} s (is "
                           "evse-agent-install.path enabled?)")

    async def switch(self, slot: str) -> None:
        if privileged.request_switch(slot) is None:
            raise InstallError("no privileged switch path (not run by the evse-agent unit)")

    def confirm(self, slot: str) -> None:
        """Root waits for this after the switch (and records it in state.json); without it, it switches back."""
        try:
            privileged.confirm_slot(slot)
        except OSError as exc:
            log.error("the new slot could not be confirmed to root", extra={"slot": slot, "error": str(exc)})


def apply_pending_switch(root: str, state_dir: Path) -> dict[str, Any] | None:
    """At start, before the database is opened: a switch :class:`SlotsInstaller` left is applied now (snapshot
    or restore of the database included); None when there was none."""
    request = state_dir / PENDING_SWITCH
    if not request.exists():
        return None
    return slots.apply_switch_request(root, str(request))


def choose_installer(config: AgentConfig) -> SlotsInstaller | PrivilegedInstaller:
    """Under the agent's unit: through root (:class:`PrivilegedInstaller`); otherwise the agent writes the slots
    itself (:class:`SlotsInstaller`)."""
    root = config.firmware.slots_root
    if privileged.request_dir() is not None:
        return PrivilegedInstaller(root, Path(config.state_dir))
    return SlotsInstaller(root, Path(config.state_dir))


def switch_before_start(config: AgentConfig) -> bool:
    """At start, before the agent's modules are imported and its database is opened: a switch the last run of a
    :class:`SlotsInstaller` asked for is applied now (snapshot or restore of the database included). True when
    the active slot changed: this process still holds the previous slot's code and must start again (exec)."""
    if privileged.request_dir() is not None:  # root switches, and restarts the agent itself
        return False
    root, state_dir = config.firmware.slots_root, Path(config.state_dir)
    try:
        applied = apply_pending_switch(root, state_dir)
    except (OSError, slots.SlotError, access.AccessError) as exc:
        log.error("the pending slot switch could not be applied", extra={"root": root, "error": str(exc)})
        (state_dir / PENDING_SWITCH).unlink(missing_ok=True)
        return False
    if applied is None:
        return False
    log.info("pending slot switch applied", extra={"root": root, **applied})
    return bool(applied.get("switched"))


def updater_settings(config: AgentConfig) -> UpdaterSettings:
    """The trust anchor commissioning installed, the controller's hardware revision (None: not checked), the CAs of
    the file servers and the signing root's CRL."""
    fw = config.firmware
    trust: tuple[x509.Certificate, ...] = ()
    if fw.trust is not None:
        try:
            trust = tuple(x509.load_pem_x509_certificates(Path(fw.trust).read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("firmware trust anchor unreadable: every update will be refused", extra={
                "trust": fw.trust, "error": str(exc)})
    revision_file = access.on_root(fw.slots_root, "/" + access.REVISION)
    try:
        revision: str | None = revision_file.read_text().strip() or None
    except OSError:
        revision = None
    return UpdaterSettings(trust, revision, fw.max_bundle_mb << 20, fw.transfer_timeout_s, fw.health_timeout_s,
                           transfer_tls=transfer.tls_context(fw.transfer_ca),
                           crl=Path(fw.crl) if fw.crl is not None else None, crl_url=fw.crl_url)
