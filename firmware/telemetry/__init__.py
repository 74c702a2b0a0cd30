"""MQTT telemetry and local site control (docs/mqtt.md).

Pure parts: ``topics`` (layout), ``codec`` (JSON/CBOR), ``payloads`` (what is published),
``discovery`` (Home Assistant), ``commands`` (parsing and validating what the site sends),
``buffer`` (bounded publish queue). I/O: ``link`` (the broker connection), ``service`` (wiring).
"""
