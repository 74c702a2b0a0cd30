"""The simulator's charger runs its agent out of A/B slots (``python -m sim up --ab-slots``), so that an update from
the simulated CSMS really replaces the code that runs (docs/firmware-update.md).

The state directory is the controller's root (``opt/evse-agent/slots/{a,b}``, ``current``,
``etc/evse-agent/hardware-revision``, and ``etc/evse-agent/agent.toml`` naming the state directory as storage.dir,
which is what the slots read to find the database they snapshot and restore); ``firmware-pki/`` holds a signing
CA and key of this simulator (the agent trusts the CA: ``[firmware] trust``). At start, slot a gets a signed
bundle of this checkout's ``firmware/`` and ``hal/``; the agent process imports them from
``opt/evse-agent/current/app`` (``PYTHONPATH``, resolved again at every start, so after a switch the new slot's
code runs). The dependencies are the simulator's own (its venv),
not wheels in the slot: a bundle of the simulator is the agent's code only.

:class:`SlotRunner` does for the simulator's agent what root's ``evse-agent-switch`` unit does on a controller
(firmware/maintenance/slots.py, the same functions): the switch the agent asked for is applied before it is started
again (the database snapshotted or restored), and after a slot's first start its agent must confirm itself
(``slot-confirmed``, once the CSMS accepted it) within the confirmation timeout; otherwise — the new agent crashes
at start, hangs, or gives up on itself — the agent is stopped, the previous slot comes back with the database
restored, the new slot is marked FAILED and the old agent is started, which reports InstallationFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.maintenance import slots
from firmware.maintenance.bundle import write_bundle
from firmware.maintenance.installers import PENDING_SWITCH
from sim.harness.agent_supervisor import AgentSupervisor

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
REVISION = "sim"
PACKAGES = ("firmware", "hal")
#: How long a new slot's agent has to confirm itself. Longer than the agent's own health timeout
#: (``health_timeout_s`` below): the agent judges itself first (not accepted by the CSMS: it rolls back by itself);
#: this catches an agent that cannot judge at all. On a controller: tools/flashing/unit.py CONFIRM_TIMEOUT_S.
CONFIRM_TIMEOUT_S = 90.0


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evse-agent simulator"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class SimSlots:
    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir

    @property
    def pki(self) -> Path:
        return self.state_dir / "firmware-pki"

    @property
    def trust(self) -> Path:
        return self.pki / "ca.pem"

    @property
    def code_path(self) -> str:
        """What the agent's PYTHONPATH starts with: the active slot's code, through ``current``."""
        return str(self.root / slots.BASE / "current" / "app")

    def config_section(self) -> str:
        return f'\n[firmware]\ntrust = "{self.trust}"\nslots_root = "{self.root}"\nhealth_timeout_s = 30\n'

    def _keys(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key_file, cert_file = self.pki / "signing-key.pem", self.pki / "signing-cert.pem"
        if key_file.exists() and cert_file.exists() and self.trust.exists():
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return key, x509.load_pem_x509_certificate(cert_file.read_bytes())
        self.pki.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC) - timedelta(minutes=5)
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(_name("Simulator firmware CA"))
              .issuer_name(_name("Simulator firmware CA")).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now)
              .not_valid_after(now + timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        cert = (x509.CertificateBuilder().subject_name(_name("Simulator firmware signing")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now)
                .not_valid_after(now + timedelta(days=3650))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.trust.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_file.chmod(0o600)
        return key, cert

    def build(self, out: Path, version: str, source: Path = REPO) -> Path:
        """A bundle of ``source``'s agent code (``firmware/``, ``hal/``), signed with this simulator's key."""
        files: dict[str, Path] = {}
        for package in PACKAGES:
            for path in sorted((source / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    files[f"app/{path.relative_to(source).as_posix()}"] = path
        key, cert = self._keys()
        write_bundle(out, files, version=version, hardware_revisions=[REVISION], python="any", platform="any",
                     key=key, certificate=cert)
        return out

    def prepare(self, version: str) -> None:
        """The controller root with slot a holding this checkout (once: an existing root is kept as it is)."""
        if slots.active_slot(str(self.root)) is not None:
            return
        (self.root / "etc/evse-agent").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/evse-agent/hardware-revision").write_text(REVISION + "\n")
        (self.root / "etc/evse-agent/agent.toml").write_text(f'[storage]\ndir = "{self.state_dir}"\n')
        bundle = self.build(self.state_dir / "first.bundle", version)
        sha, size = slots.sha256_file(bundle), bundle.stat().st_size
        shutil.copyfile(bundle, slots.prepare_upload(str(self.root), sha, size)["path"])
        slots.install(str(self.root), sha, size)
        slots.activate(str(self.root), "a", "installed by the simulator")
        bundle.unlink()


class _Service:
    """The supervisor, as :func:`slots.await_confirmation` stops and starts the agent (from its thread)."""

    def __init__(self, supervisor: AgentSupervisor, loop: asyncio.AbstractEventLoop) -> None:
        self.supervisor, self.loop = supervisor, loop

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.supervisor.shut_down(), self.loop).result()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self.supervisor.power_on(), self.loop)  # not waited for: it starts after us


class SlotRunner:
    """The simulator's root side of the A/B switch; ``before_start`` is the supervisor's hook."""

    def __init__(self, ab: SimSlots, supervisor: AgentSupervisor, confirm_timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        self.ab, self.supervisor, self.confirm_timeout_s = ab, supervisor, confirm_timeout_s
        self._watch: asyncio.Future[bool] | None = None
        self.results: list[dict[str, object]] = []  # every switch applied, and its confirmation (for tests)

    @property
    def request(self) -> Path:
        return self.ab.state_dir / PENDING_SWITCH

    async def before_start(self) -> None:
        """Before each start of the agent: a switch it asked for is applied now (it is down). While a new slot's
        confirmation is awaited, a request is the new agent giving up on itself: the wait ends with the switch
        back, and the agent starts after it, from the old slot."""
        if self._watch is not None and not self._watch.done():
            if self.request.exists():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._watch)
            return
        if not self.request.exists():
            return
        root = str(self.ab.root)
        result = await asyncio.to_thread(slots.apply_switch_request, root, str(self.request))
        log.info("slot switch applied", extra={"result": result})
        self.results.append(result)
        if slots.needs_confirmation(result):
            self._watch = self._await_confirmation(str(result["active"]), str(result.get("previous")))

    def _await_confirmation(self, slot: str, previous: str) -> asyncio.Future[bool]:
        """:func:`slots.await_confirmation` in a daemon thread (it sleeps between looks: a simulator that stops
        meanwhile must not wait for it)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def settle(confirmed: bool | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                log.error("the slot confirmation failed", extra={"slot": slot, "error": str(error)})
                done.set_exception(error)
                return
            self.results.append({"slot": slot, "confirmed": confirmed})
            log.log(logging.INFO if confirmed else logging.WARNING, "slot confirmation",
                    extra={"slot": slot, "confirmed": confirmed})
            done.set_result(bool(confirmed))

        def run() -> None:
            try:
                confirmed: bool | None = slots.await_confirmation(
                    str(self.ab.root), self.request, slot, previous, _Service(self.supervisor, loop),
                    self.confirm_timeout_s)
                error: BaseException | None = None
            except BaseException as exc:  # reported on the loop, whatever it is
                confirmed, error = None, exc
            with contextlib.suppress(RuntimeError):  # the simulator stopped meanwhile
                loop.call_soon_threadsafe(settle, confirmed, error)
        threading.Thread(target=run, name="slot-confirmation", daemon=True).start()
        return done

