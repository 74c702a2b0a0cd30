"""Process exit codes of ``python -m firmware``, for the supervisor (systemd, the simulator, flash.py).

Documented in docs/configuration.md; keep the two in step.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # stopped on request (SIGTERM / SIGINT)
    FAILURE = 1  # unexpected error; the supervisor restarts the agent
    USAGE = 2  # bad command line
    CONFIG = 78  # configuration invalid (EX_CONFIG): restarting will not help, a technician must fix it
