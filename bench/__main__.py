"""`make bench`: run every bench/bench_*.py module's ``main()`` and print its figures."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def run() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    only = sys.argv[1:]
    for name in names:
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(run())
