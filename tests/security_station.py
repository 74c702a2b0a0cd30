"""What the security end-to-end tests of both OCPP versions share: the agent's ``[ocpp]`` lines for a security
profile with the test PKI (sim/harness/pki.py), and the connections the simulated CSMS saw."""

from __future__ import annotations

from sim.csms.transcript import EntryKind, TranscriptEntry
from sim.harness.pki import TlsPki
from tests.station import Station


def ocpp_lines(profile: int, pki: TlsPki, *, password: str | None, cp_cert: bool = False) -> str:
    """``[ocpp]`` lines: the profile, the CSMS root, the Basic-auth key (``password``), the station's certificate."""
    lines = [f"security_profile = {profile}", f'csms_ca = "{pki.csms_root.path}"']
    if password is not None:
        lines.append(f'password = "{password}"')
    if cp_cert:
        assert pki.charge_point is not None
        lines += [f'cp_cert = "{pki.charge_point.cert}"', f'cp_key = "{pki.charge_point.key}"']
    return "\n".join(lines) + "\n"


def connects(s: Station, since: int = 0) -> list[TranscriptEntry]:
    return [e for e in s.csms.transcript.entries if e.kind is EntryKind.CONNECT and e.seq >= since]


async def wait_connect(s: Station, since: int, what: str) -> TranscriptEntry:
    await s.wait_until(lambda: bool(connects(s, since)), what=what)
    return connects(s, since)[0]
