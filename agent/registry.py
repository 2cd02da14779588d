"""Which sensors the daemon runs, and how each is configured.

Every module in SENSOR_MODULES exposes

    CONFIG_SECTION = "drops"          # its table is [sensors.drops]
    CONFIG_SCHEMA = {"enabled": ("bool", True), "interval": ("duration", 1.0), ...}
    def from_config(cfg: dict) -> Sensor

(schema format: netagent.configschema). A module that fails to import
(a missing dependency, a syntax error in a half-installed upgrade) does not
stop the agent: it is reported as off with the reason, and its section of
the configuration is kept but cannot be checked.
"""

import importlib
from dataclasses import dataclass, field

# The daemon's sensors, in start order. A new sensor adds its module here.
SENSOR_MODULES = [
    "netagent.probes.drops",
    "netagent.probes.conntrack",
    "netagent.host.sensor",
    "netagent.dns.sensor",
    "netagent.mtu.sensor",
]

# Keys every [sensors.X] table has even if the module's schema omits them.
BASE_SENSOR_SCHEMA = {
    "enabled": ("bool", True),
    "interval": ("duration", 1.0),
}


@dataclass
class SensorModule:
    path: str  # "netagent.probes.drops"
    section: str  # "drops"
    schema: dict = field(default_factory=dict)
    module: object = None
    error: str | None = None  # why it could not be loaded

    @property
    def loaded(self) -> bool:
        return self.error is None

    def from_config(self, cfg: dict):
        return self.module.from_config(cfg)


def load_modules(paths: list[str] | None = None) -> list[SensorModule]:
    """Import each sensor module; failures become SensorModule(error=...)."""
    out = []
    for path in SENSOR_MODULES if paths is None else paths:
        fallback_section = path.rsplit(".", 1)[-1]
        try:
            module = importlib.import_module(path)
        except Exception as exc:  # ImportError, or any error raised while importing
            out.append(SensorModule(path, fallback_section, dict(BASE_SENSOR_SCHEMA),
                                    error=f"cannot import {path}: {type(exc).__name__}: {exc}"))
            continue
        missing = [name for name in ("CONFIG_SECTION", "CONFIG_SCHEMA", "from_config") if not hasattr(module, name)]
        if missing:
            out.append(SensorModule(path, getattr(module, "CONFIG_SECTION", fallback_section),
                                    dict(BASE_SENSOR_SCHEMA),
                                    error=f"{path} does not implement the sensor contract (missing {', '.join(missing)})"))
            continue
        schema = dict(BASE_SENSOR_SCHEMA)
        schema.update(module.CONFIG_SCHEMA)
        out.append(SensorModule(path, module.CONFIG_SECTION, schema, module))
    return out
