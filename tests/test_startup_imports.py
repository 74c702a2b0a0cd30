"""What a start imports, pinned (bench_agent's boot figures): a 2.0.1 start's preset check loads neither the 1.6
adapter nor ``ocpp.v16`` (and a 1.6 start not the 2.0.1 ones), and the agent loads MQTT only with ``[mqtt]``. Each in
a fresh interpreter, so that nothing imported by the test run itself hides an import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_config import OCPP
from tests.test_ocpp201_device_model import V201

PROBE = """
import json, sys
from firmware.config import parse_config
from firmware.ocpp.presets import check_presets
config = check_presets(parse_config(open(sys.argv[1]).read(), "a.toml"))
assert config.ocpp is not None and config.ocpp.presets
import firmware.agent
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_the_preset_check(tmp_path: Path, text: str) -> set[str]:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    out = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return set(json.loads(out))


def test_a_201_start_checks_its_presets_without_the_16_adapter(tmp_path: Path) -> None:
    modules = modules_after_the_preset_check(tmp_path, V201)
    assert "firmware.ocpp.v201.device_model" in modules
    assert not {m for m in modules if m.startswith(("firmware.ocpp.v16", "ocpp.v16"))}
    assert not {m for m in modules if m.startswith(("aiomqtt", "paho", "firmware.telemetry.link"))}


def test_a_16_start_checks_its_presets_without_the_201_adapter(tmp_path: Path) -> None:
    modules = modules_after_the_preset_check(tmp_path, OCPP)
    assert "firmware.ocpp.v16.configuration" in modules
    assert not {m for m in modules if m.startswith(("firmware.ocpp.v201", "ocpp.v201"))}
