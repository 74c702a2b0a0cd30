"""Simulated hardware: each device speaks its real wire protocol on the device end of a serial wire.

``serial_wire`` is the cable (two pseudo-terminals and a relay that can damage the line); ``rs485_bus``
is a shared RS-485 line on which Modbus devices (``meters``, ``evse_din``) answer; ``ioboard``,
``pn532`` and ``rdm6300`` each own a UART. ``interfaces`` is what the rest of the simulator (physics,
fault injection, the control API) needs from them; ``ev`` is the vehicle at the end of the cable.
"""
