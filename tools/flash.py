#!/usr/bin/env python3
"""The field technician's tool: build, sign, flash, verify, commission, roll back (issue 5).

Not implemented yet: this entry point exists so the layout is complete, and says so plainly.
"""

from __future__ import annotations

import sys


def main() -> int:
    print("tools/flash.py: not implemented yet (tracked in issue 5: build, flash, commission, selftest, "
          "rollback)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
