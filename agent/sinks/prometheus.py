"""prometheus sink: a /metrics endpoint (prometheus_client), loopback by default.

Unlike the other sinks it keeps no buffer: submit() only increments
counters, which is cheap enough to do on the dispatcher thread, so it can
never fall behind or lose an event it was given.

Metrics:
  netagent_drops_total{reason,interface}          packets dropped by the kernel
  netagent_drop_bytes_total{reason,interface}     their bytes
  netagent_events_total{dataset}                  events emitted by the pipeline
  netagent_events_lost_total{place}               kernel | queue | sink | spool
  netagent_sink_events_lost_total{sink,type}      per-sink share of sink/spool losses
  netagent_sink_up{sink,type}                     0 while the sink's target fails
  netagent_sensor_up{sensor,attach_path}          1 attached, 0 off or failing
  netagent_queue_events / netagent_queue_capacity the pipeline queue
  netagent_config_last_reload_successful          0 after a rejected SIGHUP reload
  netagent_build_info{version,python,kernel}      always 1
  process_*                                       prometheus_client's process collector

Cardinality is bounded: no addresses or ports become labels; the first
`max_interfaces` interface names and `max_reasons` reasons get their own
series, later ones are counted under "other".
"""

import errno
import platform
import threading

from netagent import __version__
from netagent.configschema import SchemaError, parse_address, positive
from netagent.sinks.base import Sink

OVERFLOW_LABEL = "other"


class BoundedLabel:
    """Maps label values to themselves until `limit` distinct ones, then to "other"."""

    def __init__(self, limit: int):
        self.limit = limit
        self.seen: set[str] = set()
        self.overflowed = 0

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        self.overflowed += 1
        return OVERFLOW_LABEL


class PrometheusSink(Sink):
    TYPE = "prometheus"
    CONFIG_SCHEMA = {
        "listen": ("address", "127.0.0.1:9847"),
        "max_interfaces": ("int", 64, positive),
        "max_reasons": ("int", 256, positive),
    }

    def __init__(self, name: str = "prometheus", listen: str = "127.0.0.1:9847", max_interfaces: int = 64,
                 max_reasons: int = 256):
        self.name = name
        self.listen = listen
        self.host, self.port = parse_address(listen)
        self._interfaces = BoundedLabel(max_interfaces)
        self._reasons = BoundedLabel(max_reasons)
        self._snapshot = None
        self._httpd = None
        self._lock = threading.Lock()
        self.registry = None
        self._drops = None
        self._drop_bytes = None
        self.bound_port: int | None = None

    @classmethod
    def from_config(cls, cfg: dict) -> "PrometheusSink":
        return cls(cfg["name"] or cls.TYPE, cfg["listen"], cfg["max_interfaces"], cfg["max_reasons"])

    def observe_agent(self, snapshot) -> None:
        self._snapshot = snapshot

    def start(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, ProcessCollector, start_http_server

        try:
            # *_created series double every counter's cardinality for a value
            # nobody graphs; process-wide switch, fine for a single-purpose agent
            from prometheus_client import disable_created_metrics

            disable_created_metrics()
        except ImportError:  # prometheus_client < 0.18
            pass

        # A registry of our own: a reload builds a new sink without clashing
        # with the old one's metric names in the global registry.
        self.registry = CollectorRegistry(auto_describe=True)
        self._drops = Counter("netagent_drops", "Packets dropped by the kernel, by drop reason and interface",
                              ["reason", "interface"], registry=self.registry)
        self._drop_bytes = Counter("netagent_drop_bytes", "Bytes of packets dropped by the kernel",
                                   ["reason", "interface"], registry=self.registry)
        ProcessCollector(registry=self.registry)
        self.registry.register(_AgentCollector(self))
        try:
            self._httpd, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            hint = " (another netagent or exporter on this port?)" if exc.errno == errno.EADDRINUSE else ""
            raise SchemaError("listen", f"cannot listen on {self.listen}: {exc.strerror}{hint}") from None
        self.bound_port = self._httpd.server_address[1]

    def submit(self, line: bytes, event: dict) -> bool:
        ev = event.get("event", {})
        if ev.get("dataset") == "netagent.drops":
            drop = event.get("netagent", {}).get("drop", {})
            with self._lock:  # BoundedLabel is not thread-safe; submit has one caller but be sure
                reason = self._reasons(str(ev.get("reason") or "UNKNOWN"))
                iface = self._interfaces(str(drop.get("interface") or ""))
            self._drops.labels(reason, iface).inc(int(drop.get("count") or 0))
            self._drop_bytes.labels(reason, iface).inc(int(drop.get("bytes") or 0))
        return True

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> None:
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            httpd.shutdown()
            httpd.server_close()

    def losses(self) -> dict[str, int]:
        return {"sink": 0}

    def status(self) -> dict:
        return {"name": self.name, "type": self.TYPE, "listen": self.listen, "healthy": self._httpd is not None,
                "label_overflow": {"interface": self._interfaces.overflowed, "reason": self._reasons.overflowed}}


class _AgentCollector:
    """Agent-wide counters read from the daemon's snapshot at scrape time."""

    def __init__(self, sink: PrometheusSink):
        self.sink = sink
        self.kernel = platform.release()

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        info = GaugeMetricFamily("netagent_build_info", "netagent version, Python and kernel (always 1)",
                                 labels=["version", "python", "kernel"])
        info.add_metric([__version__, platform.python_version(), self.kernel], 1)
        yield info
        snap = self.sink._snapshot() if self.sink._snapshot else None
        if not snap:
            return
        events = CounterMetricFamily("netagent_events", "Events emitted by the pipeline, by event.dataset",
                                     labels=["dataset"])
        for dataset, n in sorted(snap.get("by_dataset", {}).items()):
            events.add_metric([dataset], n)
        yield events
        lost = CounterMetricFamily("netagent_events_lost",
                                   "Events lost, by where: kernel buffers, pipeline queue, sink buffers, spool",
                                   labels=["place"])
        for place, n in sorted(snap.get("lost", {}).items()):
            lost.add_metric([place], n)
        yield lost
        sink_lost = CounterMetricFamily("netagent_sink_events_lost", "Events a sink lost, by sink and place",
                                        labels=["sink", "type", "place"])
        sink_up = GaugeMetricFamily("netagent_sink_up", "1 while the sink delivers, 0 after recent failures",
                                    labels=["sink", "type"])
        for s in snap.get("sinks", []):
            for place, n in sorted(s.get("lost", {}).items()):
                sink_lost.add_metric([s["name"], s["type"], place], n)
            sink_up.add_metric([s["name"], s["type"]], 1 if s.get("healthy", True) else 0)
        yield sink_lost
        yield sink_up
        sensors = GaugeMetricFamily("netagent_sensor_up", "1 if the sensor is attached and polling, 0 if off",
                                    labels=["sensor", "attach_path"])
        for s in snap.get("sensors", []):
            sensors.add_metric([s["name"], s.get("attach_path") or ""], 1 if s.get("state") == "on" else 0)
        yield sensors
        if "queue_depth" in snap:
            yield GaugeMetricFamily("netagent_queue_events", "Events waiting in the pipeline queue",
                                    value=snap["queue_depth"])
            yield GaugeMetricFamily("netagent_queue_capacity", "Capacity of the pipeline queue",
                                    value=snap["queue_capacity"])
        if "config_reload_ok" in snap:
            yield GaugeMetricFamily("netagent_config_last_reload_successful",
                                    "0 if the last SIGHUP reload was rejected (the old configuration runs on)",
                                    value=1 if snap["config_reload_ok"] else 0)
        yield GaugeMetricFamily("netagent_start_time_seconds", "Start time of the agent (Unix seconds)",
                                value=snap.get("start_time", 0))
