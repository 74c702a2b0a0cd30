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
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.maintenance import slots
from firmware.maintenance.bundle import write_bundle

REPO = Path(__file__).resolve().parents[2]
REVISION = "sim"
PACKAGES = ("firmware", "hal")


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
