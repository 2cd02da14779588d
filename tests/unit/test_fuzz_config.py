"""Property tests of the configuration loader: whatever the file holds, `netagent config check`
says OK (exit 0) or exits 78 with one line on stderr naming the file and, for a document that
is valid TOML, the key at fault. Never a traceback, never another exit code.

Documents are built from the real schemas (every section, sensor, sink type and key the
loader knows, plus unknown ones) with values of every TOML type, so most examples get past
the first key and exercise the checks behind it.
"""

import datetime
import json
import math
import re
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netagent import config as config_mod
from netagent import registry
from netagent.cli import main
from netagent.findings.correlator import CONFIG_SCHEMA as FINDINGS_SCHEMA
from netagent.sinks import SINK_TYPES, sink_class
from netagent.sinks.base import COMMON_SCHEMA

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SENSOR_SCHEMAS = {m.section: m.schema for m in registry.load_modules() if m.loaded}
SINK_SCHEMAS = {t: {**COMMON_SCHEMA, **sink_class(t).CONFIG_SCHEMA} for t in SINK_TYPES}
JUNK_KEYS = st.text(min_size=1, max_size=12)

# values a user might plausibly write, and anything else TOML can hold
PLAUSIBLE = st.sampled_from(["", "1s", "500ms", "0s", "-1s", "10m", "1h", "256MiB", "0B", "1.5KiB", "127.0.0.1:0",
                             "127.0.0.1:9847", "[::1]:6514", "host:70000", "example.test:514", "/tmp/x",
                             "/nonexistent/ca.pem", "relative/path", "auto", "icmp", "udp", "tcp", "on", "off",
                             "always", "changes", "never", "kprobe", "correlation", "A", "AAAA", "NO_SOCKET",
                             "stdout", "file", "syslog", "prometheus", "json", "rfc5424", "\x00", "é", "1e309"])
SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    PLAUSIBLE,
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)),
    st.dates(),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(JUNK_KEYS, inner, max_size=3)), max_leaves=6)


def table_for(schema: dict):
    keys = st.one_of(st.sampled_from(sorted(schema)), JUNK_KEYS) if schema else JUNK_KEYS
    return st.dictionaries(keys, VALUES, max_size=5)


@st.composite
def sink_tables(draw):
    kind = draw(st.one_of(st.sampled_from(sorted(SINK_TYPES)), st.text(max_size=8), st.integers()))
    table = draw(table_for(SINK_SCHEMAS.get(kind, {})))
    if draw(st.booleans()):
        table["type"] = kind
    return table


@st.composite
def documents(draw):
    doc = {}
    for section in draw(st.lists(st.sampled_from(["agent", "sensors", "sinks", "findings", "junk"]), unique=True)):
        if section == "agent":
            doc["agent"] = draw(st.one_of(table_for(config_mod.AGENT_SCHEMA), VALUES))
        elif section == "findings":
            doc["findings"] = draw(table_for(FINDINGS_SCHEMA))
        elif section == "sensors":
            names = st.one_of(st.sampled_from(sorted(SENSOR_SCHEMAS)), JUNK_KEYS)
            doc["sensors"] = draw(st.dictionaries(
                names, st.one_of(st.deferred(lambda: table_for({})), VALUES), max_size=3))
            for name in list(doc["sensors"]):
                if name in SENSOR_SCHEMAS and draw(st.booleans()):
                    doc["sensors"][name] = draw(table_for(SENSOR_SCHEMAS[name]))
        elif section == "sinks":
            doc["sinks"] = draw(st.one_of(st.lists(sink_tables(), max_size=3), VALUES))
        else:
            doc[draw(JUNK_KEYS)] = draw(VALUES)
    return doc


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def to_toml(doc: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def config_check(path: str, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["config", "check", path])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def key_exists(doc: dict, key: str) -> bool:
    """Does the dotted key (sinks[2].ca_file counts tables from 1) lead into the document?
    The last part may be missing from it (a required key that was left out)."""
    parts = [json.loads(p) if p.startswith('"') else p
             for p in re.findall(r'"(?:[^"\\]|\\.)*"|\[\d+\]|[A-Za-z0-9_-]+', key)]
    node = doc
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if re.fullmatch(r"\[\d+\]", part):
            index = int(part[1:-1]) - 1
            if not isinstance(node, list) or not 0 <= index < len(node):
                return False
            node = node[index]
            continue
        if not isinstance(node, dict):
            return False
        if part not in node:
            return last
        node = node[part]
    return True


def check_result(path: str, code: int, out: str, err: str, doc: dict | None):
    assert code in (0, 78), (code, err)
    if code == 0:
        assert out.startswith(f"{path}: OK") and "Traceback" not in err
        return
    lines = err.splitlines()
    assert len(lines) == 1 and out == "", err
    assert lines[0].startswith(f"netagent: {path}"), lines[0]
    if doc is not None:
        rest = lines[0][len(f"netagent: {path}"):]
        assert rest.startswith(":") and not rest.startswith(": "), f"no key named: {lines[0]}"
        key = rest[1:].split(": ", 1)[0]
        assert key_exists(doc, key), f"{key!r} is not in the document: {lines[0]}"


def test_arbitrary_documents_are_accepted_or_named(tmp_path, capsys):
    path = str(tmp_path / "netagent.toml")

    @FUZZ
    @given(documents())
    def check(doc):
        text = to_toml(doc)
        parsed = tomllib.loads(text)  # the generator writes valid TOML
        with open(path, "w") as f:
            f.write(text)
        code, out, err = config_check(path, capsys)
        check_result(path, code, out, err, parsed if parsed else None)

    check()


def test_arbitrary_bytes_are_accepted_or_refused_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "netagent.toml")
    valid = config_mod.embedded_text().encode()

    @FUZZ
    @given(st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: valid + b),
                     st.integers(0, len(valid)).map(lambda n: valid[:n])))
    def check(data):
        with open(path, "wb") as f:
            f.write(data)
        code, out, err = config_check(path, capsys)
        try:
            doc = tomllib.loads(data.decode())
        except (UnicodeDecodeError, tomllib.TOMLDecodeError):
            doc = None
        check_result(path, code, out, err, doc or None)

    check()
