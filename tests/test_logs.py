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
