"""The [mqtt] section: absent means off; every bad value names the file, the key and the expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import ConfigError, parse_config

BASE = """
[charge_point]
id = "CP-0001"

[[connectors]]
id = 1
max_current_a = 32
board = { driver = "ioboard", port = "/dev/ttyS1" }

[[connectors]]
id = 2
max_current_a = 16
board = { driver = "ioboard", port = "/dev/ttyS3" }
"""

MQTT = BASE + """
[mqtt]
url = "mqtt://broker.local:1884"
username = "charger"
password = "s3cret-broker-pw"
base_topic = "site/evse"
failsafe_timeout_s = 60
failsafe_limit_a = 16
"""


def test_absent_section_means_mqtt_off() -> None:
    assert parse_config(BASE, "a.toml").mqtt is None


def test_good_section_and_defaults() -> None:
    m = parse_config(MQTT, "a.toml").mqtt
    assert m is not None
    assert (m.host, m.port, m.tls, m.username, m.base_topic) == ("broker.local", 1884, False, "charger", "site/evse")
    assert (m.payload_format, m.meter_interval_s, m.buffer_size, m.discovery, m.site_limits) == (
        "json", 10.0, 1000, True, True)
    assert m.local_availability is False and (m.failsafe_timeout_s, m.failsafe_limit_a) == (60.0, 16.0)
    assert "s3cret-broker-pw" not in repr(m)
    default_ports = parse_config(BASE + '[mqtt]\nurl = "mqtts://b"\n', "a.toml").mqtt
    assert default_ports is not None and default_ports.port == 8883 and default_ports.tls


def test_ca_file_must_exist_and_needs_mqtts(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    m = parse_config(BASE + f'[mqtt]\nurl = "mqtts://b:8883"\nca_file = "{ca}"\n', "a.toml").mqtt
    assert m is not None and m.ca_file == str(ca)
    with pytest.raises(ConfigError, match=r"a\.toml: mqtt\.ca_file: expected an existing CA certificate file"):
        parse_config(BASE + f'[mqtt]\nurl = "mqtts://b"\nca_file = "{tmp_path}/nope.pem"\n', "a.toml")
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file: expected to be set only with an mqtts:// url"):
        parse_config(BASE + f'[mqtt]\nurl = "mqtt://b"\nca_file = "{ca}"\n', "a.toml")


def test_client_certificate_needs_mqtts_its_key_and_existing_files(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    m = parse_config(BASE + f'[mqtt]\nurl = "mqtts://b"\nclient_cert = "{cert}"\nclient_key = "{key}"\n',
                     "a.toml").mqtt
    assert m is not None and (m.client_cert, m.client_key) == (str(cert), str(key))
    with pytest.raises(ConfigError, match=r"mqtt\.client_cert: expected to be set only with an mqtts:// url"):
        parse_config(BASE + f'[mqtt]\nurl = "mqtt://b"\nclient_cert = "{cert}"\nclient_key = "{key}"\n', "a.toml")
    with pytest.raises(ConfigError, match=r"mqtt\.client_key: expected client_cert and client_key together"):
        parse_config(BASE + f'[mqtt]\nurl = "mqtts://b"\nclient_cert = "{cert}"\n', "a.toml")
    with pytest.raises(ConfigError, match=r"mqtt\.client_key: expected an existing file"):
        parse_config(BASE + f'[mqtt]\nurl = "mqtts://b"\nclient_cert = "{cert}"\nclient_key = "{tmp_path}/no"\n',
                     "a.toml")


@pytest.mark.parametrize(("old", "new", "message"), [
    ('url = "mqtt://broker.local:1884"', 'url = "http://broker.local"', "mqtt.url: expected mqtt://HOST[:PORT]"),
    ('url = "mqtt://broker.local:1884"', 'url = "mqtt://broker.local:70000"', "mqtt.url: expected mqtt://"),
    ('url = "mqtt://broker.local:1884"', 'url = "mqtt://broker.local:0"', "mqtt.url: expected mqtt://"),
    ('url = "mqtt://broker.local:1884"', 'url = "mqtt://u:p@broker.local"', "credentials go in username"),
    ('url = "mqtt://broker.local:1884"', 'url = "mqtt://broker.local/x"', "mqtt.url: expected"),
    ('url = "mqtt://broker.local:1884"', 'url = "mqtt://"', "mqtt.url: expected"),
    ('url = "mqtt://broker.local:1884"', "", "mqtt.url: expected a string (required, missing)"),
    ('base_topic = "site/evse"', 'base_topic = "site/#"', "mqtt.base_topic: expected a non-empty MQTT topic"),
    ('base_topic = "site/evse"', 'base_topic = "site/+/x"', "mqtt.base_topic: expected a non-empty MQTT topic"),
    ('base_topic = "site/evse"', 'base_topic = ""', "mqtt.base_topic: expected a non-empty MQTT topic"),
    ('base_topic = "site/evse"', 'base_topic = "/evse"', "mqtt.base_topic: expected a non-empty MQTT topic"),
    ('base_topic = "site/evse"', 'discovery_prefix = "ha/#"', "mqtt.discovery_prefix: expected a non-empty"),
    ('base_topic = "site/evse"', 'payload_format = "xml"', "mqtt.payload_format: expected one of json, cbor"),
    ('base_topic = "site/evse"', "meter_interval_s = 0", "mqtt.meter_interval_s: expected a number from 0.1"),
    ('base_topic = "site/evse"', "health_interval_s = -1", "mqtt.health_interval_s: expected a number from"),
    ('base_topic = "site/evse"', "buffer_size = 0", "mqtt.buffer_size: expected an integer from 1"),
    ('base_topic = "site/evse"', "discovery = 1", "mqtt.discovery: expected true or false"),
    ('base_topic = "site/evse"', "reconnect_min_s = 5\nreconnect_max_s = 1",
     "mqtt.reconnect_max_s: expected a number not below reconnect_min_s"),
    ('base_topic = "site/evse"', "keepalive_s = 1", "mqtt.keepalive_s: expected an integer from 5 to 3600"),
    ('base_topic = "site/evse"', "brokr = 1", "mqtt.brokr: expected no such key here"),
    ("failsafe_limit_a = 16", "failsafe_limit_a = 49", "mqtt.failsafe_limit_a: expected a number from 0.0 to 48.0"),
    ("failsafe_limit_a = 16", "failsafe_limit_a = -1", "mqtt.failsafe_limit_a: expected a number from 0.0"),
    ("failsafe_limit_a = 16", "failsafe_limit_a = nan", "mqtt.failsafe_limit_a: expected a number from 0.0"),
    ("failsafe_limit_a = 16", "", "mqtt.failsafe_limit_a: expected to be set together with failsafe_timeout_s"),
    ("failsafe_timeout_s = 60", "", "mqtt.failsafe_timeout_s: expected to be set together with failsafe_limit_a"),
    ("failsafe_timeout_s = 60", "failsafe_timeout_s = 0", "mqtt.failsafe_timeout_s: expected a number from 1.0"),
    ('username = "charger"', "", "mqtt.password: expected to be set only together with username; got '***'"),
    ('base_topic = "site/evse"', "site_limits = false", "mqtt.failsafe_timeout_s: expected no fail-safe when"),
])
def test_bad_mqtt_values(old: str, new: str, message: str) -> None:
    assert old in MQTT
    with pytest.raises(ConfigError) as info:
        parse_config(MQTT.replace(old, new, 1), "a.toml")
    assert str(info.value).startswith("a.toml: ") and message in str(info.value)
    assert "s3cret-broker-pw" not in str(info.value)


def test_charge_point_id_with_a_wildcard_is_refused_with_mqtt() -> None:
    text = MQTT.replace('id = "CP-0001"', 'id = "CP+1"')
    with pytest.raises(ConfigError, match=r"charge_point\.id: expected no '\+' when \[mqtt\] is configured"):
        parse_config(text, "a.toml")
    assert parse_config(BASE.replace('id = "CP-0001"', 'id = "CP+1"'), "a.toml").charge_point_id == "CP+1"
