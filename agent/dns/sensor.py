"""DNS names probed on an interval by `netagent run` ([sensors.dns]).

    [sensors.dns]
    names = ["kubernetes.default", "example.com"]
    interval = "60s"
    netns = "pid:4242"         # probe from inside a pod (optional)
    count = 3                  # rounds per name per poll

Each poll runs the same probe as `netagent probe dns` for every name and
returns its events (one per server, candidate name and type). The
namespace's resolv.conf is read again at every poll, so an edited
resolv.conf (or a restarted pod) is followed. With no names configured the
sensor reports itself off with that reason.
"""

import time

from netagent import netns as netns_mod
from netagent.configschema import one_of, positive
from netagent.dns import report
from netagent.dns.probe import MODES, run_probe
from netagent.dns.settings import parse_server, prepare
from netagent.errors import AgentError, UsageError
from netagent.events import new_event, safe_text
from netagent.sensor import Sensor, SensorStatus


def _positive_int(value):
    if value < 1:
        raise ValueError(f"must be 1 or more, got {value}")
    return value


def _names(value):
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"names must be non-empty strings, got {item!r}")
    return value


def _servers(value):
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"servers must be strings like \"10.96.0.10\" or \"[fd00::a]:53\", got {item!r}")
        try:
            parse_server(item)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return value


CONFIG_SECTION = "dns"
CONFIG_SCHEMA = {
    "enabled": ("bool", True),
    "interval": ("duration", 60.0, positive),
    "names": ("list", [], _names),
    "servers": ("list", [], _servers),  # [] = the nameservers of the namespace's resolv.conf
    "netns": ("str", ""),  # "" = the agent's own namespace
    "resolv_conf": ("str", ""),  # "" = the namespace's own resolv.conf
    "type": ("str", "", one_of("", "A", "AAAA", "both")),  # "" = as getaddrinfo asks
    "mode": ("str", "", one_of("", *MODES)),  # "" = what the namespace's resolv.conf implies
    "transport": ("str", "", one_of("", "udp", "tcp")),  # "" = udp, tcp with options use-vc
    "count": ("int", 3, _positive_int),
    "probe_interval": ("duration", 0.2, positive),  # between rounds within one poll
    "timeout": ("duration", 2.0, positive),
    "all_candidates": ("bool", False),
}


def from_config(cfg: dict) -> "DnsSensor":
    return DnsSensor(
        names=list(cfg.get("names", [])),
        servers=list(cfg.get("servers", [])),
        netns=cfg.get("netns") or None,
        resolv_conf=cfg.get("resolv_conf") or None,
        qtype=cfg.get("type") or None,
        mode=cfg.get("mode") or None,
        transport=cfg.get("transport") or None,
        count=int(cfg.get("count", 3)),
        probe_interval=float(cfg.get("probe_interval", 0.2)),
        timeout=float(cfg.get("timeout", 2.0)),
        all_candidates=bool(cfg.get("all_candidates", False)),
        interval=float(cfg.get("interval", 60.0)),
    )


class DnsSensor(Sensor):
    name = "dns"
    dataset = report.DATASET

    def __init__(self, names, servers=(), netns=None, resolv_conf=None, qtype=None, mode=None,
                 transport=None, count=3, probe_interval=0.2, timeout=2.0, all_candidates=False,
                 interval=60.0):
        self.names = list(names)
        self.servers = list(servers)
        self.netns = netns
        self.resolv_conf = resolv_conf
        self.qtype = qtype
        self.mode = mode
        self.tcp = None if transport is None else transport == "tcp"
        self.count = count
        self.probe_interval = probe_interval
        self.timeout = timeout
        self.all_candidates = all_candidates
        self.interval = interval
        self.polls = 0
        self.probe_errors = 0
        self._last_poll_end: float | None = None

    def _prepare(self, name):
        return prepare(
            name, servers=self.servers, netns=self.netns, resolv_conf=self.resolv_conf, qtype=self.qtype,
            count=self.count, interval=self.probe_interval, timeout=self.timeout, mode=self.mode,
            tcp=self.tcp, all_candidates=self.all_candidates,
        )

    def check(self) -> SensorStatus:
        if not self.names:
            return SensorStatus(self.name, False, reason="no names configured ([sensors.dns] names = [...])")
        return SensorStatus(self.name, True, attach_path=self._path())

    def _path(self) -> str:
        where = f"netns {self.netns}" if self.netns else "own netns"
        return f"active DNS probe ({len(self.names)} names, {where})"

    def attach(self) -> str:
        # Every name and option checked now, so a typo is a configuration
        # error at start-up rather than an error event every interval.
        for name in self.names:
            self._prepare(name)
        return self._path()

    def poll(self) -> list[dict]:
        now = time.monotonic()
        if self._last_poll_end is not None and now - self._last_poll_end < self.interval / 2:
            # the daemon's extra poll at shutdown: a probe just ran, do not
            # hold the shutdown up with another one
            return []
        events: list[dict] = []
        for name in self.names:
            try:
                prepared = self._prepare(name)
                result = netns_mod.run_in(prepared.netns, run_probe, prepared.settings)
                events.extend(report.events(result, prepared.netns.name))
            except (AgentError, OSError) as exc:
                self.probe_errors += 1
                events.append(new_event(
                    dataset=report.DATASET,
                    action="dns-probe-error",
                    kind="event",
                    category=["network"],
                    type=["error"],
                    dns={"question": {"name": safe_text(name)}},
                    error={"message": safe_text(str(exc), 500), "type": type(exc).__name__},
                    **{"event": {"outcome": "failure"}},
                ))
        self.polls += 1
        self._last_poll_end = time.monotonic()
        return events

    def detach(self) -> None:
        pass

    def losses(self) -> dict[str, int]:
        # an active probe loses no events; failed probes are reported as events
        return {}

