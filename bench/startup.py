"""What an agent start spends its CPU on, in figures that depend far less on the machine's load than wall times.

Wall times on a shared machine stretch with the load (2x and more on a busy 2-core host); these move by some tens of
per cent at most (CPU time still grows on a busy host: caches, a shared core), and the module count not at all:

* the agent's own CPU time when its BootNotification reaches the CSMS (``/proc/<pid>/stat``);
* the modules a start imports and where their import time goes, from ``python -X importtime`` (the counts are
  exact; the times carry importtime's own overhead, so read them as shares);
* the CPU time compiling the agent's own sources costs on a start without bytecode (a checkout run with
  ``PYTHONDONTWRITEBYTECODE``, or a fresh one): a controller never pays it, its bundle ships the bytecode
  (docs/bundle-format.md), so the bench compiles the checkout first (:func:`ensure_bytecode`).
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

#: the packages of the checkout that the agent runs from source
AGENT_PACKAGES = ("firmware", "hal")
CHECKOUT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ImportLine:
    """One line of ``-X importtime``: a module, its own and its cumulative import time (us), its depth."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(text: str) -> list[ImportLine]:
    """The ``import time:`` lines of ``text`` (other output, such as the agent's log, is skipped)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:"):].split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue  # the header line
        name = fields[2].rstrip()
        stripped = name.lstrip(" ")
        out.append(ImportLine(stripped, int(fields[0]), int(fields[1]), (len(name) - len(stripped) - 1) // 2))
    return out


def group_of(module: str) -> str:
    """The package a module's import time is counted under: the top-level package, and for the agent's own code
    one level more (``firmware.ocpp`` two: the adapters ``firmware.ocpp.v16`` / ``.v201`` apart)."""
    parts = module.split(".")
    if parts[0] not in AGENT_PACKAGES:
        return parts[0]
    return ".".join(parts[:3] if parts[:2] == ["firmware", "ocpp"] else parts[:2])


def import_shares(lines: list[ImportLine]) -> Counter[str]:
    """Own import time (us) per :func:`group_of`, largest first with ``most_common``."""
    shares: Counter[str] = Counter()
    for line in lines:
        shares[group_of(line.module)] += line.self_us
    return shares


def total_import_us(lines: list[ImportLine]) -> int:
    """The import time of the whole start: the sum of the outermost imports' cumulative times."""
    return sum(line.cumulative_us for line in lines if line.depth == 0)


def ensure_bytecode() -> None:
    """Compile the checkout's agent packages (``__pycache__``, ignored by git), as a bundle ships them: the boot
    figures are then those of a controller, not of a checkout compiling itself at every start."""
    for package in AGENT_PACKAGES:
        compileall.compile_dir(str(CHECKOUT / package), quiet=1)


def compile_cpu_s(modules: list[str]) -> tuple[int, float]:
    """(files, CPU seconds) compiling the sources of ``modules`` that are the agent's own: what a start without
    bytecode adds."""
    files, spent = 0, 0.0
    for module in modules:
        if module.split(".")[0] not in AGENT_PACKAGES:
            continue
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        source = Path(spec.origin).read_bytes()
        t0 = time.process_time()
        compile(source, spec.origin, "exec", dont_inherit=True)
        spent += time.process_time() - t0
        files += 1
    return files, spent


def process_cpu_s(pid: int) -> float:
    """User + system CPU time of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK
