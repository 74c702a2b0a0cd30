"""evse-agent I/O board firmware (MicroPython): docs/ioboard-firmware.md."""
