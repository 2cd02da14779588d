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


@dataclass
class SensorPlan:
    """What a configured sensor will do, decided once for `run` and `doctor`.

    state: "ready"    from_config() and check() passed: `sensor` is built, attach() is next
           "off"      it cannot run here (module missing, kernel, privileges): `reason` says why
           "disabled" enabled = false in the configuration
    notes: how well a ready sensor will run (check()'s caveats), for the operator.
    """

    section: str
    state: str
    reason: str | None = None
    status: object = None  # netagent.sensor.SensorStatus when check() ran
    sensor: object = None
    notes: list = field(default_factory=list)
    error: Exception | None = None  # the AgentError that made it "off", if one did


class SensorConfigRejected(ValueError):
    """The sensor's own from_config()/check() refused its table (a bad filter, an unknown reason name)."""

    def __init__(self, section: str, message: str):
        self.section = section
        super().__init__(message)


def plan_sensor(module: SensorModule | None, cfg: dict, section: str | None = None, announce=None) -> SensorPlan:
    """Build and check one sensor from its validated [sensors.X] table, without attaching.

    The daemon attaches a "ready" plan's sensor; doctor reports the plan.
    A table the sensor rejects raises SensorConfigRejected (the daemon turns
    it into exit 78, doctor into a "cannot run" line naming the key).
    `announce` receives the sensor's remarks while it runs (if it makes any).
    """
    from netagent.configschema import SchemaError
    from netagent.errors import AgentError, UsageError

    section = section or (module.section if module else "?")
    if module is None or not module.loaded:
        return SensorPlan(section, "off", module.error if module else "no such sensor module")
    if not cfg.get("enabled", True):
        return SensorPlan(section, "disabled", "enabled = false")
    try:
        sensor = module.from_config(cfg)
        if announce is not None and hasattr(sensor, "announce"):  # sensors that narrate (drops, conntrack)
            sensor.announce = announce
        status = sensor.check()
    except (UsageError, SchemaError) as exc:
        raise SensorConfigRejected(section, str(exc)) from None
    except AgentError as exc:  # before ValueError: MalformedData may be both, and is the node's, not the config's
        return SensorPlan(section, "off", str(exc), error=exc)
    except ValueError as exc:
        raise SensorConfigRejected(section, str(exc)) from None
    except Exception as exc:  # a sensor bug must not hide the others
        return SensorPlan(section, "off", f"internal error while checking: {type(exc).__name__}: {exc}")
    if not status.can_run:
        return SensorPlan(section, "off", status.reason or "cannot run on this node", status)
    notes = [n for n in (status.reason, (status.details or {}).get("caveat")) if n]
    return SensorPlan(section, "ready", None, status, sensor, notes)
