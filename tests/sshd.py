"""A real OpenSSH server on loopback for the flashing tests: generated host and user keys, its own config.

It stands for a charger controller: the tool logs in as the current user with the generated key and
installs into a directory that plays the controller's root (``ssh://user@127.0.0.1:PORT/that/dir``).
``CuttingProxy`` sits between client and server and cuts a connection once it has carried a given number
of bytes towards the server: a mobile link dropping in the middle of a transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.controller import agent_python

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshServer:
    port: int
    user: str
    client_key: Path
    known_hosts: Path

    def url(self, root: Path, port: int | None = None) -> str:
        return f"ssh://{self.user}@127.0.0.1:{port or self.port}{root}"

    @property
    def tool_options(self) -> list[str]:
        """What flash.py needs to log in (a technician's ~/.ssh/config does this in the field), and the Python
        the agent runs with there: one the agent's user may run (a login here may find root's own pyenv first)."""
        return ["--ssh-key", str(self.client_key), "--ssh-option", "StrictHostKeyChecking=no",
                "--ssh-option", f"UserKnownHostsFile={self.known_hosts}", "--python", agent_python()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running_sshd(tmp: Path) -> Iterator[SshServer]:
    tmp.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / name)], check=True)
    (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
    port = _free_port()
    config = tmp / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {tmp / 'host_key'}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {tmp / 'authorized_keys'}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 100
MaxSessions 100
LogLevel ERROR
""")
    log = (tmp / "sshd.log").open("wb")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {proc.returncode}: {(tmp / 'sshd.log').read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("sshd did not start listening within 10 s")
            time.sleep(0.05)
        os.chmod(tmp / "client_key", 0o600)
        yield SshServer(port, getpass.getuser(), tmp / "client_key", tmp / "known_hosts")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class CuttingProxy:
    """Forwards loopback TCP connections to ``target_port``; a connection that has carried ``cut_after`` bytes
    towards the server is closed at once in both directions (RST-like: no orderly shutdown of the SSH
    session). Shorter connections pass untouched."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        writers = (writer, up_writer)

        def cut() -> None:
            for w in writers:
                with contextlib.suppress(Exception):
                    w.transport.abort()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            carried = 0
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if count and carried + len(data) > self.cut_after:
                        self.cuts += 1
                        cut()
                        return
                    carried += len(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        for t in (asyncio.create_task(pump(reader, up_writer, True)),
                  asyncio.create_task(pump(up_reader, writer, False))):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
