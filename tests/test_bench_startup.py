"""bench/startup.py: the start-up figures read from ``-X importtime`` and the compile cost, on real output."""

from __future__ import annotations

import subprocess
import sys

from bench.startup import compile_cpu_s, group_of, import_shares, parse_importtime, total_import_us

SAMPLE = """\
{"level": "INFO", "msg": "a log line between the import lines"}
import time: self [us] | cumulative | imported package
import time:       120 |        120 |   firmware.session.events
import time:        30 |        150 | firmware.session
import time:       500 |        500 |     ocpp.v201.enums
import time:       200 |        700 |   ocpp.v201.call
import time:        10 |        710 | ocpp.v201
import time:        40 |         40 | firmware.ocpp.v201.dialect
"""


def test_parse_importtime_keeps_module_times_and_depth_and_skips_other_lines() -> None:
    lines = parse_importtime(SAMPLE)
    assert [(x.module, x.self_us, x.cumulative_us, x.depth) for x in lines] == [
        ("firmware.session.events", 120, 120, 1), ("firmware.session", 30, 150, 0), ("ocpp.v201.enums", 500, 500, 2),
        ("ocpp.v201.call", 200, 700, 1), ("ocpp.v201", 10, 710, 0), ("firmware.ocpp.v201.dialect", 40, 40, 0)]
    assert total_import_us(lines) == 150 + 710 + 40  # the outermost imports only: nothing counted twice


def test_shares_group_libraries_by_package_and_the_agent_by_layer() -> None:
    assert group_of("ocpp.v201.enums") == "ocpp"
    assert group_of("firmware.session.events") == "firmware.session"
    assert group_of("firmware.ocpp.v201.dialect") == "firmware.ocpp.v201"
    assert group_of("hal.pn532.codec") == "hal.pn532"
    shares = import_shares(parse_importtime(SAMPLE))
    assert shares.most_common(2) == [("ocpp", 710), ("firmware.session", 150)]


def test_a_real_importtime_run_parses_to_the_modules_imported() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import firmware.session"],
                         capture_output=True, text=True, check=True).stderr
    modules = {x.module for x in parse_importtime(out)}
    assert {"firmware", "firmware.session", "firmware.session.machine"} <= modules


def test_compile_cost_counts_only_the_agents_own_sources() -> None:
    files, spent = compile_cpu_s(["firmware.session.machine", "hal.interfaces", "json", "firmware.no_such_module"])
    assert files == 2
    assert spent > 0
