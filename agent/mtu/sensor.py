"""MTU targets probed on an interval by `netagent run` (the sensor contract).

    [sensors.mtu]
    enabled = true
    interval = "5m"
    targets = ["10.0.0.7", "db.internal", { target = "10.244.1.5", netns = "pid:4242", proto = "tcp", port = 443 }]
    proto = "icmp"          # default for targets that do not say
    timeout = "1s"
    retries = 2

Each poll probes every target in turn and returns one `netagent.mtu`
event per target, the same event `netagent probe mtu --output json`
prints. A target that cannot be probed (no route, name does not resolve,
namespace gone) still yields an event, with status "unreachable" and the
reason, so a SIEM sees the failure rather than a gap. Off by default:
active probes send traffic, which an operator opts into.
"""

from __future__ import annotations

import time

from netagent import netns as netns_mod
from netagent.configschema import non_negative, one_of
from netagent.errors import AgentError, InsufficientPrivilege, ProbeUnavailable
from netagent.mtu.search import PROTOS
from netagent.mtu.target import check_syntax

# netagent.mtu.probe and .report import scapy (~45 MB, ~1.5 s): only when a
# target is probed, not whenever the daemon reads its configuration.


def probe_path(text, ns, opts):
    """netagent.mtu.probe.probe_path, imported on first use."""
    from netagent.mtu.probe import probe_path as probe  # noqa: PLC0415

    return probe(text, ns, opts)
from netagent.privileges import effective_capabilities
from netagent.sensor import Sensor, SensorStatus

ATTACH_PATH = "raw sockets (active DF probes)"
TICK = 5.0  # seconds between the daemon's polls; targets are probed every `interval`
_TARGET_KEYS = {"target", "netns", "proto", "port", "min", "max"}


def _check_targets(entries: list) -> list[dict]:
    """Strings or {target=, netns=, proto=, port=, min=, max=} tables -> list of dicts."""
    out = []
    for i, entry in enumerate(entries):
        where = f"targets[{i}]"
        if isinstance(entry, str):
            entry = {"target": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a host/address string or a table with target = ...")
        unknown = set(entry) - _TARGET_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_TARGET_KEYS))})")
        text = entry.get("target")
        if not isinstance(text, str) or not text:
            raise ValueError(f"{where}: needs target = \"host or address\"")
        try:
            check_syntax(text)
        except AgentError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if "proto" in entry and entry["proto"] not in PROTOS:
            raise ValueError(f"{where}: proto must be one of {', '.join(PROTOS)}")
        for key in ("port", "min", "max"):
            if key in entry and (isinstance(entry[key], bool) or not isinstance(entry[key], int)):
                raise ValueError(f"{where}: {key} must be an integer")
        if "port" in entry and not 0 < entry["port"] < 65536:
            raise ValueError(f"{where}: port must be 1-65535")
        if "netns" in entry and not isinstance(entry["netns"], str):
            raise ValueError(f"{where}: netns must be a string (name, path or pid:N)")
        out.append(dict(entry))
    return out


def _port(value: int) -> int:
    if not 0 <= value < 65536:
        raise ValueError("must be 0 (the protocol's default) or 1-65535")
    return value


def _retries(value: int) -> int:
    non_negative(value)
    if value > 10:
        raise ValueError("must be 0-10")
    return value


CONFIG_SECTION = "mtu"
CONFIG_SCHEMA = {
    "enabled": ("bool", False),
    "interval": ("duration", 300.0),
    "targets": ("list", [], _check_targets),
    "netns": ("str", ""),  # default namespace for targets that do not say
    "proto": ("str", "icmp", one_of(*PROTOS)),
    "port": ("int", 0, _port),  # 0: 33434 for udp, 443 for tcp
    "min": ("int", 0, non_negative),  # 0: 552 (IPv4) / 1280 (IPv6)
    "max": ("int", 0, non_negative),  # 0: the egress interface MTU
    "timeout": ("duration", 1.0),
    "retries": ("int", 2, _retries),
}


class MtuSensor(Sensor):
    name = "mtu"
    dataset = "netagent.mtu"

    def __init__(self, targets: list[dict], *, interval: float = 300.0, netns: str = "", proto: str = "icmp",
                 port: int = 0, min_size: int = 0, max_size: int = 0, timeout: float = 1.0, retries: int = 2):
        self.targets = targets
        # The daemon polls every `interval` and waits one interval before the
        # first poll; probing targets every `period` from a short tick makes
        # the first results appear seconds after start, not minutes.
        self.period = interval
        self.interval = min(interval, TICK)
        self._next_due = 0.0
        self.default_netns = netns
        self.defaults = {"proto": proto, "port": port, "min": min_size, "max": max_size}
        self.timeout, self.retries = timeout, retries
        self.probes_run = 0
        self.probe_failures = 0

    def _options(self, entry: dict) -> MtuOptions:
        from netagent.mtu.probe import MtuOptions  # noqa: PLC0415 - scapy, see above

        get = lambda key: entry.get(key, self.defaults[key])  # noqa: E731
        proto = get("proto")
        return MtuOptions(
            proto=proto, port=(get("port") or None) if proto != "icmp" else None,
            min_size=get("min") or None, max_size=get("max") or None,
            timeout=self.timeout, retries=self.retries,
        )

    def _namespaces(self) -> set[str]:
        return {t.get("netns", self.default_netns) for t in self.targets} - {""}

    def check(self) -> SensorStatus:
        if not self.targets:
            return SensorStatus(self.name, False, None, "no targets configured ([sensors.mtu] targets = [...])")
        caps = effective_capabilities()
        need = ["CAP_NET_RAW"] + (["CAP_SYS_ADMIN"] if self._namespaces() else [])
        missing = [c for c in need if c not in caps]
        if missing:
            return SensorStatus(self.name, False, None, f"needs {' + '.join(missing)} to send raw probes")
        return SensorStatus(self.name, True, ATTACH_PATH, details={"targets": len(self.targets)})

    def attach(self) -> str:
        status = self.check()
        if not status.can_run:
            if status.reason and status.reason.startswith("needs"):
                raise InsufficientPrivilege(f"mtu sensor {status.reason}")
            raise ProbeUnavailable(f"mtu sensor: {status.reason}")
        return ATTACH_PATH

    def poll(self) -> list[dict]:
        now = time.monotonic()
        if now < self._next_due:
            return []
        self._next_due = now + self.period
        return [self.probe_one(entry) for entry in self.targets]

    def probe_one(self, entry: dict) -> dict:
        """One target's event; failures become an 'unreachable' event with the reason."""
        from netagent.mtu.report import error_event, to_event  # noqa: PLC0415 - scapy, see above

        spec = entry.get("netns", self.default_netns)
        opts = self._options(entry)
        started, t0 = time.time(), time.monotonic_ns()
        self.probes_run += 1
        try:
            ns = netns_mod.resolve(spec)  # per poll: a pod's namespace comes and goes
            return to_event(probe_path(entry["target"], ns, opts))
        except AgentError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must not cost the other targets their round
            error = f"internal error: {type(exc).__name__}: {exc}"
        self.probe_failures += 1
        return error_event(entry["target"], spec or "host", opts, error, started, time.monotonic_ns() - t0)

    def detach(self) -> None:
        pass  # sockets live only for the length of one probe

    def losses(self) -> dict[str, int]:
        return {}  # every poll returns one event per target, failures included


def from_config(cfg: dict) -> MtuSensor:
    return MtuSensor(
        cfg.get("targets", []), interval=cfg.get("interval", 300.0), netns=cfg.get("netns", ""),
        proto=cfg.get("proto", "icmp"), port=cfg.get("port", 0), min_size=cfg.get("min", 0),
        max_size=cfg.get("max", 0), timeout=cfg.get("timeout", 1.0), retries=cfg.get("retries", 2),
    )
