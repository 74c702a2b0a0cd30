"""The simulator: simulated devices on pseudo-terminals, an EV model, a CSMS and a control API.

The agent reaches everything here only through serial ports and sockets, as it would real hardware.
"""
