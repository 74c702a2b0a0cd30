"""Process exit codes of ``python -m firmware``, for the supervisor (systemd, the simulator, flash.py).

Documented in docs/configuration.md; keep the two in step.
"""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # stopped on request (SIGTERM / SIGINT)
    FAILURE = 1  # unexpected error; the supervisor restarts the agent
    USAGE = 2  # bad command line
    STORAGE = 74  # the database cannot be used (EX_IOERR); the message says what and where
    RESTART = 75  # restart requested (OCPP Reset); the supervisor starts the agent again
    CONFIG = 78  # configuration invalid (EX_CONFIG): restarting will not help, a technician must fix it
