"""The layer contracts of `make lint` (pyproject.toml, [tool.importlinter]) hold, and a forbidden import breaks
them: the check is real, not a list nobody enforces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(tree))  # the copy's packages come before the checkout's
    return subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("firmware", "hal", "sim", "tools"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree)
    return tree


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_imports(_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    for module, forbidden in (("firmware/session/status.py", "firmware.storage"),
                              ("hal/types.py", "sim.harness.charger"), ("sim/devices/ev.py", "sim.csms.transcript"),
                              ("firmware/ocpp/rpc.py", "firmware.ocpp.v16.keys")):
        path = tree / module
        path.write_text(path.read_text() + f"\nimport {forbidden}  # noqa: E402,F401\n")
    adapter = tree / "firmware" / "ocpp" / "v16" / "client.py"
    adapter.write_text(adapter.read_text() + "\nimport firmware.telemetry.service  # noqa: E402,F401\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert "the agent and its drivers never import the simulator BROKEN" in result.stdout
    assert "the session state machine imports nothing of the agent BROKEN" in result.stdout
    assert "OCPP adapters import no telemetry BROKEN" in result.stdout
    assert "the OCPP-J layer (link, rpc, delivery) knows no OCPP version BROKEN" in result.stdout
    assert "firmware.session.status -> firmware.storage" in result.stdout
    assert "hal.types -> sim.harness.charger" in result.stdout
    assert "the simulated devices know neither the simulated CSMS nor the harness BROKEN" in result.stdout
    assert "sim.devices.ev -> sim.csms.transcript" in result.stdout
