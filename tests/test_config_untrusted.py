"""A configuration file is untrusted input too (issue 16): whatever it holds, the loader answers with one
ConfigError naming the file, the key (or line) and what is expected, and the agent exits 78 without a
traceback. Deep nesting, huge numbers, NaN, control characters, invalid UTF-8, binary files, directories,
devices and pipes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from firmware.config import MAX_CONFIG_BYTES, MAX_NESTING, ConfigError, load_config, parse_config
from firmware.exitcodes import ExitCode

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

GOOD = """\
[charge_point]
id = "CP-0001"

[buses.rs485]
port = "/dev/ttyUSB0"

[[connectors]]
id = 1
max_current_a = 16
board = { driver = "ioboard", port = "/dev/ttyS1" }
meter = { model = "sdm630", bus = "rs485", unit = 1 }
"""


def _refused(path: Path) -> str:
    """The loader's message for ``path``: a ConfigError, one line, naming the file."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    assert len(message) < 1200
    return message


def _write(tmp_path: Path, content: str | bytes, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(("content", "says"), [
    ("a = " + "[" * 5000 + "]" * 5000, f"line 1: expected arrays and tables nested at most {MAX_NESTING} deep"),
    ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "line 1: expected arrays and tables nested at most"),
    (GOOD + "x = [" + "[" * 40 + "]" * 40 + "]\n", "line 12: expected arrays and tables nested at most"),
    ("a" + ".a" * 20000 + " = 1", f"line 1: expected dotted keys of at most {MAX_NESTING} parts"),
    ("[" + "a." * 20000 + "a]", "line 1: expected dotted keys of at most"),
    ("x = { " + "y." * 100 + "z = 1 }", "line 1: expected dotted keys of at most"),
])
def test_deep_nesting_is_refused_before_the_parser_recurses(tmp_path: Path, content: str, says: str) -> None:
    started = time.monotonic()
    message = _refused(_write(tmp_path, content))
    assert says in message
    assert time.monotonic() - started < 2.0  # a dotted key of 20000 parts used to take tomllib 1 GB and seconds


def test_nesting_and_dots_in_values_strings_and_comments_are_not_keys() -> None:
    text = GOOD.replace('[charge_point]\nid = "CP-0001"', '[charge_point]\nid = "CP-0001" # ' + "[{." * 100
                        + '\nserial_number = "' + '\\"' + "{." * 100 + '"\nmodel = \'' + "[." * 10 + "'")
    identity = parse_config(text, "a.toml").identity
    assert (identity.serial_number, identity.model) == ('"' + "{." * 100, "[." * 10)


@pytest.mark.parametrize(("line", "key", "expected"), [
    ("max_current_a = " + "9" * 5000, "", "valid TOML with integers of at most 4300 digits"),
    ("max_current_a = 0x" + "f" * 5000, "connectors[0].max_current_a", "got a 20000-bit integer"),
    ("max_current_a = nan", "connectors[0].max_current_a", "a number from 6.0 to 80.0; got nan"),
    ("max_current_a = -inf", "connectors[0].max_current_a", "a number from 6.0 to 80.0; got -inf"),
    ("max_current_a = 1e400", "connectors[0].max_current_a", "got inf"),
    ("phases = 99999999999999999999999999", "connectors[0].phases", "an integer from 1 to 3"),
])
def test_huge_and_non_finite_numbers_are_named(tmp_path: Path, line: str, key: str, expected: str) -> None:
    message = _refused(_write(tmp_path, GOOD.replace("max_current_a = 16", line)))
    if key:
        assert message.startswith(f"{tmp_path / 'agent.toml'}: {key}: expected ")
    assert expected in message


@pytest.mark.parametrize(("old", "new", "key"), [
    ('port = "/dev/ttyS1"', r'port = "/dev/tty\u0000S1"', "connectors[0].board.port"),
    ('id = "CP-0001"', r'id = "CP-0001\r\nX-Injected: 1"', "charge_point.id"),
    ('port = "/dev/ttyUSB0"', 'port = "/dev/tty\tUSB0"', "buses.rs485.port"),
    ('port = "/dev/ttyUSB0"', r'port = "\u001b[31m/dev/ttyUSB0"', "buses.rs485.port"),
    ('port = "/dev/ttyUSB0"', r'port = "/dev/\u0085ttyUSB0"', "buses.rs485.port"),
    ("[buses.rs485]", r'[buses."rs\n485"]', r"buses.rs\n485"),
])
def test_control_characters_in_strings_and_keys_are_refused_on_one_line(tmp_path: Path, old: str, new: str,
                                                                         key: str) -> None:
    assert old in GOOD
    message = _refused(_write(tmp_path, GOOD.replace(old, new).replace('bus = "rs485"', 'bus = "x"')))
    assert message.startswith(f"{tmp_path / 'agent.toml'}: {key}: expected ")
    assert "without control characters" in message


def test_odd_but_printable_characters_are_fine() -> None:
    cfg = parse_config(GOOD.replace('"CP-0001"', '"Ladesäule-Ω-充电-🚗"'), "a.toml")
    assert cfg.charge_point_id == "Ladesäule-Ω-充电-🚗"


def test_a_lone_surrogate_is_refused_as_toml_or_as_text() -> None:
    with pytest.raises(ConfigError, match="valid TOML"):
        parse_config(GOOD.replace('"CP-0001"', r'"\ud800"'), "a.toml")  # tomllib refuses the escape
    with pytest.raises(ConfigError, match=r"charge_point\.id: expected text without control characters"):
        parse_config(GOOD.replace('"CP-0001"', '"\ud800"'), "a.toml")  # parse_config called with such a str


@pytest.mark.parametrize(("content", "expected"), [
    (GOOD.encode() + b"# caf\xe9\n", "expected a UTF-8 text file; got 'invalid UTF-8 on line 12 (byte "),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "expected a text file; got 'binary data (a NUL"),
    (b"\xff\xfe[\x00c\x00", "expected a text file; got 'binary data"),  # UTF-16
    (b"\xed\xa0\x80 = 1", "expected a UTF-8 text file"),  # an encoded surrogate is not UTF-8
    (b"", "charge_point: expected a table (required, missing)"),
    (b"x" * (MAX_CONFIG_BYTES + 1), f"expected a configuration file of at most {MAX_CONFIG_BYTES} bytes"),
])
def test_what_is_not_a_text_file_is_named(tmp_path: Path, content: bytes, expected: str) -> None:
    assert expected in _refused(_write(tmp_path, content))


def test_a_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, b"\xef\xbb\xbf" + GOOD.encode())).charge_point_id == "CP-0001"


def test_a_directory_a_device_a_pipe_and_a_missing_file_are_named(tmp_path: Path) -> None:
    assert _refused(tmp_path).endswith("expected a configuration file; got 'a directory'")
    assert _refused(tmp_path / "nope.toml").endswith("expected an existing configuration file; got 'file not found'")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nobody writes to it: opening it would block for ever
    assert _refused(fifo).endswith("expected a regular configuration file; got 'a device, pipe or socket'")
    assert _refused(Path("/dev/zero")).endswith("got 'a device, pipe or socket'")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    path.chmod(0)
    assert "expected a readable configuration file; got" in _refused(path)


def test_odd_file_names_stay_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a\nb\udcff.toml"  # a newline and a byte that is not UTF-8 (surrogate-escaped)
    path.write_bytes(b"[charge_point\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and "a\\nb\\udcff.toml: expected valid TOML" in message
    message.encode("utf-8")  # printable to any terminal or log


# --- the command line --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "expected"), [
    ("a = " + "[" * 5000 + "]" * 5000, "line 1: expected arrays and tables nested at most"),
    (b"\x7fELF\x02\x01\x01\x00" + bytes(200), "expected a text file"),
    (GOOD.replace("max_current_a = 16", "max_current_a = nan"), "connectors[0].max_current_a: expected a number"),
    (GOOD.replace("max_current_a = 16", "max_current_a = " + "9" * 5000), "integers of at most 4300 digits"),
])
def test_agent_exits_78_with_one_line_and_no_traceback(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = _write(tmp_path, content)
    proc = subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.CONFIG, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"configuration error: {path}: ")
    assert expected in lines[0]


def test_agent_given_a_directory_exits_78(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "firmware", "run", "--config", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitCode.CONFIG
    assert proc.stderr == f"configuration error: {tmp_path}: expected a configuration file; got 'a directory'\n"


# --- properties ------------------------------------------------------------------------------------------------

TOML_ALPHABET = st.sampled_from([*"[]{}=.,\"'#\\\n \t0123456789abcxyz+-_:eEinfaTZ", '"""', "'''", "\x00", "\u00e9",
                                 "\ud800"])


@FUZZ
@given(st.one_of(st.lists(TOML_ALPHABET, max_size=200).map("".join), st.text(max_size=200),
                 st.lists(TOML_ALPHABET, max_size=60).map(lambda xs: GOOD + "".join(xs))))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("fuzz.toml: ") and "\n" not in message
        message.encode("utf-8")


@FUZZ
@given(st.binary(max_size=300))
def test_any_file_is_a_config_or_a_config_error(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "agent.toml"
    path.write_bytes(content)
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


# Valid TOML the nesting pre-scan must let through: strings and comments full of brackets, dots and
# quotes, floats and dates in arrays, multi-line strings, quoted keys with dots.
STRINGS = st.text(st.sampled_from(list("[]{}.#'\"\\ ab\n")), max_size=20)


@st.composite
def toml_values(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["int", "float", "date", "basic", "literal", "mlbasic", "mlliteral"]
                                + (["array", "inline"] if depth < 4 else [])))
    if kind == "int":
        return str(draw(st.integers()))
    if kind == "float":
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))
    if kind == "date":
        return "1979-05-27T07:32:00.999999Z"
    s = draw(STRINGS)
    if kind == "basic":
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if kind == "literal":
        return "'" + s.replace("'", "").replace("\n", "") + "'"
    if kind == "mlbasic":
        return '"""' + s.replace("\\", "\\\\").replace('"', '\\"') + '"""'
    if kind == "mlliteral":
        return "'''" + s.replace("'", "") + "'''"
    items = draw(st.lists(toml_values(depth + 1), max_size=4))
    if kind == "array":
        return "[" + ", ".join(items) + "]"
    keys = draw(st.lists(toml_keys(), min_size=len(items), max_size=len(items), unique=True))
    return "{" + ", ".join(f"{k} = {v}" for k, v in zip(keys, items, strict=True)) + "}"


def toml_keys() -> st.SearchStrategy[str]:
    part = st.one_of(st.from_regex(r"[a-z_][a-z0-9_-]{0,6}", fullmatch=True),
                     STRINGS.map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                                 + '"'))
    return st.lists(part, min_size=1, max_size=3).map(".".join)


@FUZZ
@given(st.lists(st.tuples(toml_keys(), toml_values(), st.one_of(st.just(""), STRINGS.map(
    lambda s: " # " + s.replace("\n", " ")))), max_size=8))
def test_the_nesting_limit_never_refuses_shallow_valid_toml(entries: list[tuple[str, str, str]]) -> None:
    text = "".join(f"{key} = {value}{comment}\n" for key, value, comment in entries)
    import tomllib

    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)  # e.g. the same key twice: not what this test is about
    try:
        parse_config(text, "shallow.toml")
    except ConfigError as exc:
        assert "nested at most" not in str(exc) and "dotted keys" not in str(exc), text
