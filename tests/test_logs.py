"""Structured logs: JSON lines with context fields, and secrets never printed."""

from __future__ import annotations

import io
import json
import logging

from firmware.logs import setup_logging


def test_json_lines_with_context_and_redaction() -> None:
    out = io.StringIO()
    setup_logging("INFO", out)
    logging.getLogger("t").info("connecting", extra={"url": "wss://csms", "password": "hunter2",
                                                      "params": {"AuthorizationKey": "00ff", "n": 1}})
    line = json.loads(out.getvalue().strip())
    assert line["msg"] == "connecting" and line["level"] == "INFO" and line["url"] == "wss://csms"
    assert line["password"] == "***"
    assert line["params"] == {"AuthorizationKey": "***", "n": 1}
    assert "hunter2" not in out.getvalue() and "00ff" not in out.getvalue()


def test_a_device_librarys_error_is_a_warning_in_the_agents_log() -> None:
    """pymodbus's "No response received" is an expected event of the line: ERROR stays a fault of the agent."""
    import io
    import json
    import logging

    from firmware.logs import setup_logging

    out = io.StringIO()
    setup_logging("INFO", out)
    logging.getLogger("pymodbus.logging").error("No response received after 0 retries")
    logging.getLogger("firmware.agent").error("a fault of ours")
    levels = [json.loads(line)["level"] for line in out.getvalue().splitlines()]
    assert levels == ["WARNING", "ERROR"]
