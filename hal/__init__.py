"""Hardware abstraction layer: small typed interfaces and the drivers that speak real wire protocols.

Drivers are thin translators between a device's wire protocol and the interfaces in
:mod:`hal.interfaces`; charging logic (IEC 61851 sequencing, sessions) lives in ``firmware/``.
"""
