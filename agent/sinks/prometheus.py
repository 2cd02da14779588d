"""prometheus sink: a /metrics endpoint (prometheus_client), loopback by default.

Unlike the other sinks it keeps no buffer: submit() only increments
counters, which is cheap enough to do on the dispatcher thread, so it can
never fall behind or lose an event it was given.

Metrics:
  netagent_drops_total{reason,interface,namespace,pod}       packets dropped by the kernel; namespace
                                                  and pod name the pod whose network namespace dropped
                                                  them (enrichment stage), "" when not a pod's (host
                                                  network, other namespaces)
  netagent_drop_bytes_total{reason,interface,namespace,pod}  their bytes
  netagent_conntrack_total{counter,namespace,pod} conntrack counter rises (insert_failed, drop,
                                                  early_drop, ...) per network namespace's pod, "" as above
  netagent_mtu_probes_total{status}               path MTU probes by outcome (ok, icmp, blackhole,
                                                  local, unreachable): blackhole = PMTU black hole
  netagent_dns_queries_total / netagent_dns_lost_total   DNS probe queries sent / not answered
  netagent_events_total{dataset}                  events emitted by the pipeline
  netagent_events_lost_total{place,sensor}        kernel | queue | sink | spool; sensor="" when the
                                                  loss is not one sensor's (sinks, spool, retired sensors)
  netagent_enrich_failed_total{cause}             events passed on without a name enrichment could not find
  netagent_pod_attribution_up                     1 while the container runtime (CRI) answers
  netagent_processor_failures_total               events a pipeline processor failed on (passed on as they were)
  netagent_findings_active / _raised_total / _rule_errors_total / _records_evicted_total   the correlator
  netagent_sensor_notes_total{sensor}             remarks a sensor made on how it runs (heartbeat: notes)
  netagent_sink_events_lost_total{sink,type}      per-sink share of sink/spool losses
  netagent_sink_up{sink,type}                     0 while the sink's target fails
  netagent_sensor_up{sensor,attach_path}          1 attached, 0 off or failing
  netagent_queue_events / netagent_queue_capacity the pipeline queue
  netagent_config_last_reload_successful          0 after a rejected SIGHUP reload
  netagent_thread_restarts_total{thread}          agent threads the watchdog restarted (netagent.watchdog)
  netagent_build_info{version,python,kernel}      always 1
  process_*                                       prometheus_client's process collector

Cardinality is bounded: no addresses or ports become labels; at most
`max_interfaces` interface names, `max_reasons` reasons and `max_pods` pods
have their own series at a time, the rest are counted under "other"
(netagent.sinks.labels; a pod past the bound is namespace="other", pod="other").
Interface slots are given back: an interface that no longer exists (not in
/sys/class/net) and has had no drop for `interface_grace`, or any that has
had none for `interface_idle`, loses its series, so churning pod veths do
not use the slots up for good. Pod slots likewise: a pod's series are
removed once the enrichment stage has forgotten it (its grace period after
deletion) and it has been quiet for `interface_grace`, or after
`interface_idle` without events. A pod's drops are seen inside its own
namespace, on its own interfaces (eth0, lo): the pod labels add a few series
per pod, not interfaces x pods.
"""

import errno
import os
import platform
import threading

from netagent import __version__
from netagent.configschema import SchemaError, parse_address, positive
from netagent.sinks.base import Sink
from netagent.sinks.labels import OVERFLOW_LABEL, LabelSlots  # noqa: F401 - OVERFLOW_LABEL re-exported
from netagent.watchdog import WATCHDOG


def interface_exists(name: str) -> bool:
    """Whether the agent's network namespace has this interface. An interface seen only in another
    namespace reads as gone here, so its slot goes after interface_grace without drops."""
    return bool(name) and "/" not in name and os.path.exists(os.path.join("/sys/class/net", name))


DROP_LABELS = ["reason", "interface", "namespace", "pod"]
CONNTRACK_LABELS = ["counter", "namespace", "pod"]


class PrometheusSink(Sink):
    TYPE = "prometheus"
    CONFIG_SCHEMA = {
        "listen": ("address", "127.0.0.1:9847"),
        "max_interfaces": ("int", 64, positive),
        "max_reasons": ("int", 256, positive),
        "interface_grace": ("duration", 60.0, positive),
        "interface_idle": ("duration", 900.0, positive),
        "max_pods": ("int", 256, positive),
    }

    def __init__(self, name: str = "prometheus", listen: str = "127.0.0.1:9847", max_interfaces: int = 64,
                 max_reasons: int = 256, interface_grace: float = 60.0, interface_idle: float = 900.0,
                 interface_alive=interface_exists, max_pods: int = 256, pod_alive=None):
        self.name = name
        self.listen = listen
        self.host, self.port = parse_address(listen)
        self._interfaces = LabelSlots(max_interfaces, alive=interface_alive, grace=interface_grace,
                                      idle=interface_idle)
        # reasons come from the kernel's enum: bounded by it, never expired
        self._reasons = LabelSlots(max_reasons, idle=float("inf"))
        if pod_alive is None:
            from netagent.enrich.pods import pod_alive  # noqa: PLC0415
        self._pods = LabelSlots(max_pods, alive=pod_alive, grace=interface_grace, idle=interface_idle)
        self._conntrack = None
        self._snapshot = None
        self._httpd = None
        self._lock = threading.Lock()
        self.registry = None
        self._drops = None
        self._drop_bytes = None
        self.bound_port: int | None = None

    @classmethod
    def from_config(cls, cfg: dict) -> "PrometheusSink":
        return cls(cfg["name"] or cls.TYPE, cfg["listen"], cfg["max_interfaces"], cfg["max_reasons"],
                   cfg["interface_grace"], cfg["interface_idle"], max_pods=cfg["max_pods"])

    def observe_agent(self, snapshot) -> None:
        self._snapshot = snapshot

    def start(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, ProcessCollector

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
        # first, so the label sweep at each scrape runs before the drop series are collected
        self.registry.register(_AgentCollector(self))
        self._drops = Counter("netagent_drops", "Packets dropped by the kernel, by drop reason, interface and the "
                              "pod whose network namespace dropped them (\"\": not a pod's)",
                              DROP_LABELS, registry=self.registry)
        self._drop_bytes = Counter("netagent_drop_bytes", "Bytes of packets dropped by the kernel",
                                   DROP_LABELS, registry=self.registry)
        self._conntrack = Counter("netagent_conntrack", "Conntrack counter rises (insert_failed, drop, early_drop, "
                                  "...) by the pod of the network namespace (\"\": not a pod's)",
                                  CONNTRACK_LABELS, registry=self.registry)
        # probe outcomes without the target as a label (no addresses become labels);
        # the events carry the target
        self._mtu_probes = Counter("netagent_mtu_probes", "Path MTU probes by outcome (blackhole: large "
                                   "packets vanish without an ICMP error)", ["status"], registry=self.registry)
        self._dns_queries = Counter("netagent_dns_queries", "DNS probe queries sent", registry=self.registry)
        self._dns_lost = Counter("netagent_dns_lost", "DNS probe queries without an answer (timeouts, refused, "
                                 "unreachable, errors)", registry=self.registry)
        ProcessCollector(registry=self.registry)
        try:
            self._httpd = _metrics_server(self.host, self.port, self.registry)
        except OSError as exc:
            hint = " (another netagent or exporter on this port?)" if exc.errno == errno.EADDRINUSE else ""
            raise SchemaError("listen", f"cannot listen on {self.listen}: {exc.strerror}{hint}") from None
        self.bound_port = self._httpd.server_address[1]
        # the accept loop is an agent thread like any other: a failure restarts it on the
        # same socket, counted and explained in the heartbeat (netagent.watchdog)
        self._http_stop = threading.Event()
        self._http_thread = WATCHDOG.start(f"sink-{self.name}-http", self._httpd.serve_forever, self._http_stop)

    def submit(self, line: bytes, event: dict) -> bool:
        ev = event.get("event", {})
        if ev.get("dataset") == "netagent.drops":
            drop = event.get("netagent", {}).get("drop", {})
            with self._lock:  # one series update at a time against expiry from the scrape thread
                reason = self._reasons(str(ev.get("reason") or "UNKNOWN"))
                iface = self._interfaces(str(drop.get("interface") or ""))
                slot, namespace, pod = self._pod_labels(event)
                labels = (reason, iface, namespace, pod)
                self._drops.labels(*labels).inc(int(drop.get("count") or 0))
                self._drop_bytes.labels(*labels).inc(int(drop.get("bytes") or 0))
                for metric in (self._drops, self._drop_bytes):
                    # removed when either the interface or the pod is given back
                    self._interfaces.track(iface, metric, labels)
                    if slot is not None:
                        self._pods.track(slot, metric, labels)
        elif ev.get("dataset") == "netagent.mtu" and ev.get("action") == "mtu-probe":
            status = event.get("netagent", {}).get("mtu", {}).get("status")
            if status:
                self._mtu_probes.labels(str(status)).inc()
        elif ev.get("dataset") == "netagent.dns" and ev.get("action") == "dns-probe":
            dns = event.get("netagent", {}).get("dns", {})
            queries, answered = dns.get("queries"), dns.get("answered")
            if isinstance(queries, int) and isinstance(answered, int):
                self._dns_queries.inc(queries)
                self._dns_lost.inc(max(0, queries - answered))
        elif ev.get("dataset") == "netagent.conntrack" and ev.get("action") == "counters":
            deltas = event.get("netagent", {}).get("conntrack", {}).get("deltas") or {}
            with self._lock:
                slot, namespace, pod = self._pod_labels(event)
                for counter, n in deltas.items():
                    if isinstance(n, int) and n > 0:
                        labels = (counter, namespace, pod)
                        self._conntrack.labels(*labels).inc(n)
                        if slot is not None:
                            self._pods.track(slot, self._conntrack, labels)
        return True

    def _pod_labels(self, event: dict) -> tuple[str | None, str, str]:
        """(pod slot, namespace label, pod label) of the event's pod, bounded by the pod slots:
        (None, "", "") when no pod is named (host network, other namespaces), and
        ("other", "other", "other") when every slot is taken."""
        k8s = event.get("kubernetes")
        pod = k8s.get("pod") if k8s else None
        if not pod:
            return None, "", ""
        namespace, name = str(k8s.get("namespace", "")), str(pod.get("name", ""))
        slot = self._pods(f"{namespace}/{name}")
        if slot == OVERFLOW_LABEL:
            return slot, OVERFLOW_LABEL, OVERFLOW_LABEL
        return slot, namespace, name

    def sweep_labels(self) -> None:
        """Give back the slots of interfaces that are gone (also run at every scrape)."""
        with self._lock:
            self._interfaces.sweep()
            self._pods.sweep()

    def flush(self, timeout: float) -> bool:
        return True

    def close(self, timeout: float) -> None:
        if self._httpd is not None:
            httpd, self._httpd = self._httpd, None
            self._http_stop.set()  # before shutdown(): a restart pending in the watchdog is not made
            httpd.shutdown()
            self._http_thread.join(max(0.5, timeout))
            httpd.server_close()

    def losses(self) -> dict[str, int]:
        return {"sink": 0}

    def status(self) -> dict:
        return {"name": self.name, "type": self.TYPE, "listen": self.listen, "healthy": self._httpd is not None,
                "label_overflow": {"interface": self._interfaces.overflowed, "reason": self._reasons.overflowed,
                                   "pod": self._pods.overflowed},
                "labels": {"interface": self._interfaces.status(), "reason": self._reasons.status(),
                           "pod": self._pods.status()}}


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
        self.sink.sweep_labels()  # before the registry collects the drop series: gone ones are not served
        snap = self.sink._snapshot() if self.sink._snapshot else None
        if not snap:
            return
        events = CounterMetricFamily("netagent_events", "Events emitted by the pipeline, by event.dataset",
                                     labels=["dataset"])
        for dataset, n in sorted(snap.get("by_dataset", {}).items()):
            events.add_metric([dataset], n)
        yield events
        lost = CounterMetricFamily("netagent_events_lost",
                                   "Events lost, by where (kernel buffers, pipeline queue, sink buffers, spool) and "
                                   "by sensor (empty: not one sensor's)", labels=["place", "sensor"])
        for (place, sensor), n in sorted(losses_by_sensor(snap).items()):
            lost.add_metric([place, sensor], n)
        yield lost
        yield from _processing_metrics(snap.get("processing") or {})
        enrich = snap.get("enrich") or {}
        failed = CounterMetricFamily("netagent_enrich_failed", "Events that went on without a name the enrichment "
                                     "stage could not find (runtime_unavailable, interface_lookup, ...)",
                                     labels=["cause"])
        for cause, n in sorted((enrich.get("enrich_failed") or {}).items()):
            failed.add_metric([cause], n)
        yield failed
        pods = enrich.get("pods")
        if pods:
            yield GaugeMetricFamily("netagent_pod_attribution_up", "1 while the container runtime (CRI) answers",
                                    value=1 if pods.get("healthy") else 0)
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
        notes = CounterMetricFamily("netagent_sensor_notes", "Remarks a sensor made on how it runs "
                                    "(degraded modes such as conntrack counters only; the heartbeat has the text)",
                                    labels=["sensor"])
        for s in snap.get("sensors", []):
            sensors.add_metric([s["name"], s.get("attach_path") or ""], 1 if s.get("state") == "on" else 0)
            notes.add_metric([s["name"]], s.get("notes_total", 0))
        yield sensors
        yield notes
        if "queue_depth" in snap:
            yield GaugeMetricFamily("netagent_queue_events", "Events waiting in the pipeline queue",
                                    value=snap["queue_depth"])
            yield GaugeMetricFamily("netagent_queue_capacity", "Capacity of the pipeline queue",
                                    value=snap["queue_capacity"])
        if "config_reload_ok" in snap:
            yield GaugeMetricFamily("netagent_config_last_reload_successful",
                                    "0 if the last SIGHUP reload was rejected (the old configuration runs on)",
                                    value=1 if snap["config_reload_ok"] else 0)
        restarts = CounterMetricFamily("netagent_thread_restarts", "Agent threads the watchdog restarted after a "
                                       "failure (the heartbeat has the reason)", labels=["thread"])
        for rec in WATCHDOG.status()["threads"]:
            restarts.add_metric([rec["thread"]], rec["restarts"])
        yield restarts
        yield GaugeMetricFamily("netagent_start_time_seconds", "Start time of the agent (Unix seconds)",
                                value=snap.get("start_time", 0))


def _metrics_server(host: str, port: int, registry):
    """A bound /metrics HTTP server (one thread per request) whose accept loop the caller runs.
    prometheus_client's start_http_server() would start that loop on a thread of its own,
    outside the watchdog."""
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a slow scraper never holds up the agent's exit
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass  # one line per scrape on stderr would drown the agent's own diagnostics

    return make_server(host, port, make_wsgi_app(registry), Server, handler_class=QuietHandler)


def losses_by_sensor(snap: dict) -> dict[tuple[str, str], int]:
    """(place, sensor) -> count. A sensor's own kernel losses and the queue losses of its
    events carry its name; the rest of each place's total has sensor "" (so summing over
    sensor gives the place's total, as before the label existed)."""
    out: dict[tuple[str, str], int] = {}
    for s in snap.get("sensors", []):
        parts = dict(s.get("lost") or {})
        if s.get("queue_lost"):
            parts["queue"] = parts.get("queue", 0) + s["queue_lost"]
        for place, n in parts.items():
            if n:
                out[(place, s["name"])] = out.get((place, s["name"]), 0) + n
    for place, total in snap.get("lost", {}).items():
        named = sum(n for (p, _), n in out.items() if p == place)
        out[(place, "")] = max(0, total - named)
    return out


def _processing_metrics(processing: dict):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if "failed" in processing:
        yield CounterMetricFamily("netagent_processor_failures", "Events a pipeline processor (enrichment, "
                                  "correlation) failed on; they were passed on unprocessed", value=processing["failed"])
    findings = processing.get("findings")
    if isinstance(findings, dict) and "active" in findings:
        yield GaugeMetricFamily("netagent_findings_active", "Findings raised and not yet cleared",
                                value=findings["active"])
        yield CounterMetricFamily("netagent_findings_raised", "Findings raised", value=findings.get("raised", 0))
        yield CounterMetricFamily("netagent_findings_rule_errors", "Correlation rule failures (bugs; the heartbeat "
                                  "has the last errors)", value=findings.get("rule_errors", 0))
        yield CounterMetricFamily("netagent_findings_records_evicted", "Events the correlator forgot inside its "
                                  "window because of its record bound", value=findings.get("records_evicted", 0))
