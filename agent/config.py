"""The agent's configuration: TOML in, validated and defaults merged out.

    [agent]            AGENT_SCHEMA below
    [sensors.<name>]   each sensor module's CONFIG_SCHEMA (netagent.registry)
    [[sinks]]          each sink class's CONFIG_SCHEMA (netagent.sinks)

Every error names the file and the key (`sinks[2].ca_file`, counting
[[sinks]] tables from 1) and raises ConfigError, exit code 78, which
systemd is told not to restart on.
"""

import importlib.resources
import os
import tomllib
from dataclasses import dataclass, field

from netagent.configschema import SchemaError, apply_schema, format_value, positive, toml_key
from netagent.errors import ConfigError

DEFAULT_PATH = "/etc/netagent/netagent.toml"
EMBEDDED = "<embedded default>"

AGENT_SCHEMA = {
    # how often a metric event reports counters, losses, RSS and CPU
    "heartbeat": ("duration", 60.0),
    # capacity of the one queue between sensors and sinks, in events
    "queue_events": ("int", 65536, positive),
    # bound on the time SIGTERM may take to flush sinks
    "shutdown_timeout": ("duration", 5.0),
}

TOP_LEVEL = ("agent", "sensors", "sinks", "findings", "kubernetes")


@dataclass
class AgentConfig:
    source: str  # file path or EMBEDDED
    agent: dict
    sensors: dict  # section -> validated table (or the raw table if its module failed)
    sinks: list  # validated tables, each with "type" and a unique "name"
    sensor_modules: list = field(default_factory=list)  # registry.SensorModule list used to validate
    findings: dict = field(default_factory=dict)  # [findings]: the correlator's rules (netagent.findings)
    kubernetes: dict = field(default_factory=dict)  # [kubernetes]: pod attribution (netagent.enrich.stage)

    def sensor_module(self, section: str):
        for module in self.sensor_modules:
            if module.section == section:
                return module
        return None

    def as_document(self) -> dict:
        """The effective configuration in the form a user writes it (for `config show`)."""
        from netagent.sinks import sink_class
        from netagent.sinks.base import COMMON_SCHEMA

        from netagent.findings.correlator import CONFIG_SCHEMA as FINDINGS_SCHEMA

        from netagent.enrich.stage import CONFIG_SCHEMA as KUBERNETES_SCHEMA

        doc = {"agent": _formatted(AGENT_SCHEMA, self.agent), "sensors": {}, "sinks": [],
               "findings": _formatted(FINDINGS_SCHEMA, self.findings),
               "kubernetes": _formatted(KUBERNETES_SCHEMA, self.kubernetes)}
        for section, table in self.sensors.items():
            module = self.sensor_module(section)
            doc["sensors"][section] = _formatted(module.schema, table) if module and module.loaded else dict(table)
        for table in self.sinks:
            schema = dict(COMMON_SCHEMA)
            schema.update(sink_class(table["type"]).CONFIG_SCHEMA)
            doc["sinks"].append(_formatted(schema, table))
        return doc


def _formatted(schema: dict, table: dict) -> dict:
    return {key: format_value(schema[key][0], value) if key in schema else value for key, value in table.items()}


def embedded_text() -> str:
    return importlib.resources.files("netagent").joinpath("default.toml").read_text()


def load(path: str | None = None, *, sensor_paths: list[str] | None = None) -> AgentConfig:
    """Load `path`; with None, /etc/netagent/netagent.toml if present, else the embedded default."""
    if path is None:
        if os.path.exists(DEFAULT_PATH):
            path = DEFAULT_PATH
        else:
            return parse(embedded_text(), EMBEDDED, sensor_paths=sensor_paths)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError("no such file", path=path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML file", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", path=path) from None
    return parse(text, path, sensor_paths=sensor_paths)


def parse(text: str, source: str, *, sensor_paths: list[str] | None = None) -> AgentConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=source) from None
    return validate(doc, source, sensor_paths=sensor_paths)


def validate(doc: dict, source: str, *, sensor_paths: list[str] | None = None) -> AgentConfig:
    from netagent import registry

    for key in doc:
        if key not in TOP_LEVEL:
            raise ConfigError(f"unknown section (known: {', '.join(TOP_LEVEL)})", path=source, key=toml_key(key))

    agent_table = _table(doc, "agent", source)
    agent = _apply(AGENT_SCHEMA, agent_table, source, "agent")

    modules = registry.load_modules(sensor_paths)
    sensors_table = _table(doc, "sensors", source)
    by_section = {m.section: m for m in modules}
    for section in sensors_table:
        if section not in by_section:
            known = ", ".join(sorted(by_section)) or "none"
            raise ConfigError(f"unknown sensor (known sensors: {known})", path=source, key=f"sensors.{toml_key(section)}")
    sensors = {}
    for module in modules:
        user = sensors_table.get(module.section, {})
        if not isinstance(user, dict):
            raise ConfigError("must be a table", path=source, key=f"sensors.{module.section}")
        if module.loaded:
            sensors[module.section] = _apply(module.schema, user, source, f"sensors.{module.section}")
        else:
            # Cannot check keys we do not know; the sensor is reported off anyway.
            sensors[module.section] = dict(user)

    if "sinks" in doc:
        sinks_doc = doc["sinks"]
        if not isinstance(sinks_doc, list) or not all(isinstance(t, dict) for t in sinks_doc):
            raise ConfigError("must be an array of tables ([[sinks]])", path=source, key="sinks")
        if not sinks_doc:
            raise ConfigError("is empty: events would go nowhere (add a [[sinks]] table)", path=source, key="sinks")
    else:
        sinks_doc = [{"type": "stdout"}]
    sinks = [_sink(table, i, source) for i, table in enumerate(sinks_doc, start=1)]
    _check_sink_conflicts(sinks, source)
    from netagent.findings.correlator import CONFIG_SCHEMA as FINDINGS_SCHEMA

    findings = _apply(FINDINGS_SCHEMA, _table(doc, "findings", source), source, "findings")
    from netagent.enrich.stage import CONFIG_SCHEMA as KUBERNETES_SCHEMA

    kubernetes = _apply(KUBERNETES_SCHEMA, _table(doc, "kubernetes", source), source, "kubernetes")
    return AgentConfig(source, agent, sensors, sinks, modules, findings, kubernetes)


def _table(doc: dict, key: str, source: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError("must be a table", path=source, key=key)
    return value


def _apply(schema: dict, values: dict, source: str, prefix: str) -> dict:
    try:
        return apply_schema(schema, values)
    except SchemaError as exc:
        raise ConfigError(exc.message, path=source, key=f"{prefix}.{exc.key}") from None


def _sink(table: dict, index: int, source: str) -> dict:
    from netagent.sinks import SINK_TYPES, sink_class
    from netagent.sinks.base import COMMON_SCHEMA

    prefix = f"sinks[{index}]"
    kind = table.get("type")
    if kind is None:
        raise ConfigError(f"missing (one of: {', '.join(SINK_TYPES)})", path=source, key=f"{prefix}.type")
    if not isinstance(kind, str) or kind not in SINK_TYPES:
        raise ConfigError(f"unknown sink type {kind!r} (one of: {', '.join(SINK_TYPES)})", path=source,
                          key=f"{prefix}.type")
    try:
        cls = sink_class(kind)
    except Exception as exc:
        raise ConfigError(f"sink type {kind!r} is not available in this build ({type(exc).__name__}: {exc})",
                          path=source, key=f"{prefix}.type") from None
    schema = dict(COMMON_SCHEMA)
    schema.update(cls.CONFIG_SCHEMA)
    cfg = _apply(schema, table, source, prefix)
    try:
        cls.validate_config(cfg)
    except SchemaError as exc:
        raise ConfigError(exc.message, path=source, key=f"{prefix}.{exc.key}") from None
    return cfg


def _check_sink_conflicts(sinks: list[dict], source: str) -> None:
    """Unique names (defaulting to the type), and no two sinks on one file or port."""
    counts: dict[str, int] = {}
    names = set()
    for table in sinks:
        if not table["name"]:
            counts[table["type"]] = counts.get(table["type"], 0) + 1
            n = counts[table["type"]]
            table["name"] = table["type"] if n == 1 else f"{table['type']}-{n}"
    for i, table in enumerate(sinks, start=1):
        if table["name"] in names:
            raise ConfigError(f"duplicate sink name {table['name']!r}", path=source, key=f"sinks[{i}].name")
        names.add(table["name"])
    seen: dict[tuple, int] = {}
    for i, table in enumerate(sinks, start=1):
        for key in ("path", "listen", "spool_dir"):
            if key in table and table[key]:
                target = (key, table[key] if key == "listen" else os.path.abspath(table[key]))
                if target in seen:
                    raise ConfigError(f"{table[key]!r} is already used by sinks[{seen[target]}]", path=source,
                                      key=f"sinks[{i}].{key}")
                seen[target] = i
    # stdout twice would interleave the same lines twice on one stream
    stdout = [i for i, t in enumerate(sinks, start=1) if t["type"] == "stdout"]
    if len(stdout) > 1:
        raise ConfigError("only one stdout sink makes sense", path=source, key=f"sinks[{stdout[1]}].type")


def to_toml(doc: dict) -> str:
    """Render the document `as_document()` returns (tables, arrays of tables, scalars)."""
    lines: list[str] = []

    def scalar(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{_key(k)} = {scalar(v)}" for k, v in value.items()) + "}"
        return scalar(str(value))

    def table(header: str, values: dict):
        lines.append(header)
        for k, v in values.items():
            lines.append(f"{_key(k)} = {scalar(v)}")
        lines.append("")

    table("[agent]", doc["agent"])
    for section, values in doc["sensors"].items():
        table(f"[sensors.{_key(section)}]", values)
    if doc.get("findings"):
        table("[findings]", doc["findings"])
    if doc.get("kubernetes"):
        table("[kubernetes]", doc["kubernetes"])
    for values in doc["sinks"]:
        table("[[sinks]]", values)
    return "\n".join(lines)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else '"' + key + '"'
