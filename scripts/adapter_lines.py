"""What each OCPP adapter adds, in code lines: every module of firmware/ocpp/v16/, firmware/ocpp/v201/ and the
shared firmware/ocpp/*.py, as the Markdown table of docs/ocpp201.md ("What each adapter adds").

A code line holds a code token: blank lines, comment-only lines and docstrings do not count.
Usage: python scripts/adapter_lines.py [checkout]
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
from pathlib import Path

_SKIP = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
FOLDERS = ("firmware/ocpp/v16", "firmware/ocpp/v201", "firmware/ocpp")


def code_lines(source: str) -> int:
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _SKIP:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return len(lines)


#: The two adapters' modules side by side, by what they do (a module not named here gets a row of its own).
ROWS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("routing, the features' context", ("client", "context"), ("client", "context")),
    ("OCPP-J dialect (actions, error codes)", ("dialect",), ("dialect",)),
    ("the machine's values as the version writes them", ("mapping",), ("mapping",)),
    ("boot, heartbeat", ("core",), ("provisioning",)),
    ("configuration keys / device model, reports", ("configuration", "keys", "features"),
     ("device_model", "inventory", "reports")),
    ("session settings from keys / variables", ("session_settings",), ("session_settings",)),
    ("statuses", ("status_report", "status_hold"), ("status",)),
    ("transactions, meter values", ("transactions", "meter_values"), ("transactions", "transaction_points")),
    ("authorization, cache", ("authorization",), ("authorization",)),
    ("local authorization list", ("local_auth_list",), ("local_auth_list",)),
    ("remote start/stop, availability, reset, unlock", ("remote_control",), ("remote_control",)),
    ("trigger message", ("remote_trigger",), ("remote_trigger",)),
    ("reservation", ("reservation",), ("reservation",)),
    ("smart charging", ("smart_charging",), ("smart_charging",)),
    ("firmware, logs", ("firmware_management",), ("firmware_management",)),
    ("security profile, certificates, network profile", ("security", "certificates"),
     ("security", "certificates", "network_profile")),
    ("data transfer", ("data_transfer",), ("data_transfer",)),
    ("events of components (NotifyEvent)", (), ("notify_event",)),
)


def _lines_of(folder: Path) -> dict[str, int]:
    return {p.stem: code_lines(p.read_text()) for p in sorted(folder.glob("*.py")) if p.stem != "__init__"}


def _cell(names: tuple[str, ...], lines: dict[str, int]) -> str:
    present = [n for n in names if n in lines]
    return ", ".join(f"{n} {lines[n]}" for n in present) if present else "-"


def table(root: Path) -> str:
    v16, v201, shared = (_lines_of(root / f) for f in FOLDERS)
    rows = list(ROWS)
    named = {n for _, a, b in rows for n in (*a, *b)}
    rows += [(n, (n,), (n,)) for n in sorted((set(v16) | set(v201)) - named)]
    out = ["| what | `v16/` modules (lines) | 1.6 | `v201/` modules (lines) | 2.0.1 |", "|---|---|---:|---|---:|"]
    for what, a, b in rows:
        out.append(f"| {what} | {_cell(a, v16)} | {sum(v16.get(n, 0) for n in a)} | {_cell(b, v201)} | "
                   f"{sum(v201.get(n, 0) for n in b)} |")
    out.append(f"| **the adapter** | | **{sum(v16.values())}** | | **{sum(v201.values())}** |")
    out += ["", "| shared `firmware/ocpp/*.py` | lines |", "|---|---:|"]
    out += [f"| {n} | {k} |" for n, k in shared.items()]
    out.append(f"| **shared** | **{sum(shared.values())}** |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
