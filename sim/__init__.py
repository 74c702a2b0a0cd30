"""The simulator: simulated devices on pseudo-terminals, an EV model, a CSMS and a control API.

``devices/`` the simulated hardware and the EV, ``csms/`` the simulated central system, ``harness/`` the
charger assembly, the agent as a process, the control API and the demo; ``__main__`` is ``python -m sim``.
The agent reaches everything here only through serial ports and sockets, as it would real hardware.
"""
