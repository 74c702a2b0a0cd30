#!/usr/bin/env python3
"""The field technician's tool: build, flash, commission, self-test and roll back a charger controller.

    python tools/flash.py --help            (docs/technician-guide.md walks through a first installation)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout: firmware/ and tools/

from tools.flashing.cli import main

if __name__ == "__main__":
    sys.exit(main())
