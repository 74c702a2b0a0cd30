"""A real mosquitto broker for tests, on a free loopback port in a temporary directory.

``Mosquitto(dir, users={"name": "password"})`` requires authentication (a password file made with
``mosquitto_passwd``); ``tls=(cert, key)`` adds TLS on the same port. ``stop()`` / ``start()`` keep the
port, so a test can take the broker away mid-session and bring it back. ``Subscriber`` is an independent
client (paho, through aiomqtt) that records everything it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import getpass
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from tests.station import WAIT_S

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "evse-agent test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, directory: Path, *, users: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None, client_ca: Path | None = None) -> None:
        """``client_ca``: with ``tls``, every client must present a certificate issued by it (mutual TLS)."""
        self.dir = directory
        self.client_ca = client_ca
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.users = users
        self.tls = tls
        self.proc: asyncio.subprocess.Process | None = None
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"

    def _write_conf(self) -> None:
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence false",
                 "log_dest stderr", "log_type error", "log_type warning", "log_type notice"]
        if self.users:
            pw = self.dir / "passwd"
            for i, (name, password) in enumerate(self.users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(pw), name, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}"]
            if self.client_ca is not None:
                lines += [f"cafile {self.client_ca}", "require_certificate true"]
        self.conf.write_text("\n".join(lines) + "\n")

    async def start(self) -> None:
        self._write_conf()
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(MOSQUITTO, "-c", str(self.conf), stdout=log,
                                                             stderr=log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            if self.proc.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"mosquitto did not start: {self.log.read_text(errors='replace')}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

    async def __aenter__(self) -> Mosquitto:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@dataclass
class Seen:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """An independent MQTT client in the test: subscribes to ``filters`` and keeps every message."""

    def __init__(self, broker: Mosquitto, *filters: str, username: str | None = None,
                 password: str | None = None, ca_file: Path | None = None,
                 client_cert: tuple[Path, Path] | None = None) -> None:
        self.broker = broker
        self.tls_context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        if self.tls_context is not None and client_cert is not None:
            self.tls_context.load_cert_chain(client_cert[0], client_cert[1])
        self.filters = filters or ("#",)
        self.username, self.password = username, password
        self.seen: list[Seen] = []
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([self._task, ready], timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # the connection was refused: raise why
            raise RuntimeError("subscriber ended before subscribing")
        if not self._ready.is_set():
            raise TimeoutError(f"subscriber not connected within {WAIT_S} s")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task

    async def _run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.broker.port, username=self.username,
                                  password=self.password, tls_context=self.tls_context) as client:
            self._client = client
            for f in self.filters:
                await client.subscribe(f, qos=1)
            self._ready.set()
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                self.seen.append(Seen(str(m.topic), payload, bool(m.retain)))

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=retain)

    def on(self, topic: str, since: int = 0) -> list[Seen]:
        return [s for s in self.seen[since:] if s.topic == topic]

    def mark(self) -> int:
        return len(self.seen)

    async def wait_for(self, topic: str, predicate: Any = None, *, since: int = 0,
                       timeout_s: float = WAIT_S) -> Seen:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            for s in self.seen[since:]:
                if s.topic == topic and (predicate is None or predicate(s)):
                    return s
            if loop.time() > deadline:
                recent = [(s.topic, s.payload[:120]) for s in self.seen[-10:]]
                raise TimeoutError(f"no message on {topic} within {timeout_s} s; last seen: {recent}")
            await asyncio.sleep(0.02)
