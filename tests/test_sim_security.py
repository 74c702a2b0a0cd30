"""``python -m sim up --security-profile N``: with the builtin CSMS a newcomer gets a generated AuthorizationKey
and test PKI, the builtin CSMS serves wss:// (and asks for the client certificate with profile 3), and the
agent's configuration carries the profile and its files."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.test_sim_control import start_sim, stop_sim, wait_until


def _transcript(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "csms-transcript.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("profile", [2, 3])
def test_sim_up_with_a_security_profile_connects_over_tls(tmp_path: Path, profile: int) -> None:
    state = tmp_path / "state"
    sim = start_sim(state, "--id", "SIM-SEC-1", "--security-profile", str(profile))
    try:
        booted = wait_until(lambda: [e for e in _transcript(state) if e.get("action") == "BootNotification"],
                            what="BootNotification over TLS")
        connect = next(e for e in _transcript(state) if e.get("kind") == "connect")
        assert connect["detail"]["tls"] in ("TLSv1.2", "TLSv1.3"), connect
        assert connect["detail"]["client_certificate"] == ("SIM-SEC-1" if profile == 3 else None)
        assert booted
        ready = json.loads((state / "control.json").read_text())
        assert ready["security_profile"] == profile and any("test PKI" in g for g in ready["security_generated"])
        agent = tomllib.loads((state / "agent.toml").read_text())["ocpp"]
        assert agent["security_profile"] == profile and agent["csms_url"].startswith("wss://")
        assert Path(agent["csms_ca"]).is_file()
        if profile == 2:
            key = (state / "authorization-key").read_text().strip()
            assert agent["password"] == key and len(key) == 40
            assert (state / "authorization-key").stat().st_mode & 0o777 == 0o600
        else:
            assert "password" not in agent and Path(agent["cp_key"]).stat().st_mode & 0o777 == 0o600
            # the builtin CSMS signs CSRs with its test CA: a renewal through the control API, end to end
            answer = sim.ok("POST", "/csms/call", {"action": "ExtendedTriggerMessage",
                                                   "payload": {"requestedMessage": "SignChargePointCertificate"}})
            assert answer["response"] == {"status": "Accepted"}
            first = connect["detail"]["client_certificate_serial"]
            renewed = wait_until(lambda: [e for e in _transcript(state) if e.get("kind") == "connect"
                                          and e["detail"]["client_certificate_serial"] != first],
                                 what="a connection with the renewed certificate")
            assert renewed[0]["detail"]["client_certificate"] == "SIM-SEC-1"
    finally:
        stop_sim(sim)


def test_sim_up_refuses_profile_2_on_an_external_csms_without_its_root(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sim", "up", "--no-demo", "--csms", "wss://csms.example.com/ocpp",
                           "--security-profile", "2", "--state-dir", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--csms-ca" in proc.stderr
