"""The enrichment stage: one chain of processors between the sensors and the sinks.

Both the CLI commands and the daemon build it with `Enricher.from_config`
and pass every event through it before anything shows or ships the event.
A processor that raises leaves the event as it was, counted by cause.
"""

from netagent.configschema import positive
from netagent.enrich.apiserver import APISERVER_SCHEMA, ApiPeerAttributor, ClusterPods
from netagent.enrich.pods import DEFAULT_GRACE, DEFAULT_REFRESH, CriSource, PodIndex
from netagent.enrich.processors import Attributor, Failures, InterfaceNamer, NetnsDirectory, node_name

CONFIG_SECTION = "kubernetes"
CONFIG_SCHEMA = {
    # pod attribution from the container runtime (CRI); off: events keep only their netns inode
    "enabled": ("bool", True),
    # "" = auto-detect containerd's, then CRI-O's socket
    "runtime_socket": ("str", ""),
    # how often the runtime is asked for the node's pods (a miss on a new namespace asks sooner)
    "refresh": ("duration", DEFAULT_REFRESH, positive),
    # how long a pod is still named after it was last listed (deleted pods' last events)
    "grace": ("duration", DEFAULT_GRACE),
    # kubernetes.node.name; "" = $NODE_NAME, else the hostname
    "node_name": ("str", ""),
    **APISERVER_SCHEMA,  # apiserver, apiserver_watch: the optional API server (netagent.enrich.apiserver)
}
DEFAULTS = {key: spec[1] for key, spec in CONFIG_SCHEMA.items()}


class Enricher:
    def __init__(self, pods: PodIndex | None, node: str | None = None, cluster: ClusterPods | None = None):
        self.pods = pods
        self.failures = Failures()
        self.directory = NetnsDirectory(pods)
        self.node = node
        self.namer = InterfaceNamer(self.directory, self.failures, pods=pods)
        # one processor does the per-event work (see Attributor: one pass is what keeps it cheap);
        # the list is the structlog-style chain, open to more
        self.processors = [Attributor(pods, self.directory, self.failures, node, self.namer)]
        self.cluster = cluster  # the API server's pods: peers on other nodes, workloads
        if cluster is not None:
            self.processors.append(ApiPeerAttributor(cluster, self.failures))
        self.enriched = 0

    @classmethod
    def from_config(cls, cfg: dict | None = None, log=None) -> "Enricher":
        cfg = {**DEFAULTS, **(cfg or {})}
        if not cfg["enabled"]:
            return cls(None)
        source = CriSource(cfg["runtime_socket"])
        pods = PodIndex(source, refresh_interval=cfg["refresh"], grace=cfg["grace"], log=log)
        return cls(pods, node_name(cfg["node_name"]), ClusterPods.from_config(cfg, log))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> str:
        """Start the pod refresher; returns one line saying what attribution does here."""
        if self.pods is None:
            return "pod attribution: off ([kubernetes] enabled = false)"
        self.pods.start()
        if self.cluster is not None:
            self.cluster.start()
            return f"{self.attribution_line()}; {self.cluster.describe()}"
        return self.attribution_line()

    def stop(self) -> None:
        if self.pods is not None:
            self.pods.stop()
        if self.cluster is not None:
            self.cluster.stop()

    def attribution_line(self) -> str:
        pods = self.pods
        if pods is None:
            return "pod attribution: off ([kubernetes] enabled = false)"
        if pods.healthy:
            return f"pod attribution: {pods.source.describe()}, {len(pods.by_name)} pods on node {self.node}"
        return (f"pod attribution: unavailable for now ({pods.last_error}); events keep their netns inode, "
                f"retrying every {pods.refresh_interval:g}s")

    # -- the chain ---------------------------------------------------------------------
    def process_batch(self, events: list[dict]) -> list[dict]:
        """Every event through every processor, in place; never raises, never drops one."""
        self.enriched += len(events)
        for processor in self.processors:
            try:
                processor.process(events)
            except Exception:
                # a bug, maybe on one event: the batch again one event at a time, that
                # event counted and passed on (processors only add fields: a rerun is harmless)
                for event in events:
                    try:
                        processor.process([event])
                    except Exception:
                        self.failures.count(f"error:{getattr(processor, '__name__', type(processor).__name__)}")
        return events

    def __call__(self, event: dict) -> dict:
        return self.process_batch([event])[0]

    def enrich_all(self, events: list[dict]) -> list[dict]:
        return self.process_batch(events)

    def status(self) -> dict:
        out = {"enriched": self.enriched, "enrich_failed": dict(self.failures.by_cause)}
        if self.pods is not None:
            out["pods"] = self.pods.status()
            out["node"] = self.node
        if self.cluster is not None:
            out["apiserver"] = self.cluster.status()
        return out


def attribution_report(runtime_socket: str = "") -> dict:
    """For `netagent doctor`: can events be attributed to pods here, and if not, why."""
    from netagent.enrich.cri import CriClient, RuntimeUnavailable, detect_socket  # noqa: PLC0415

    socket_path = detect_socket(runtime_socket)
    if socket_path is None:
        from netagent.enrich.cri import RUNTIME_SOCKETS  # noqa: PLC0415

        return {"available": False, "source": None,
                "detail": f"no container runtime socket ({', '.join(RUNTIME_SOCKETS)} absent; set "
                          "[kubernetes] runtime_socket): events keep their "
                          "netns inode, without pod names"}
    client = None
    try:
        client = CriClient(socket_path)
        version = client.version()
        pods = client.list_pods()
    except RuntimeUnavailable as exc:
        return {"available": False, "source": f"CRI at {socket_path}",
                "detail": f"{exc}: events keep their netns inode, without pod names"}
    except ImportError as exc:
        return {"available": False, "source": f"CRI at {socket_path}", "detail": f"gRPC client missing: {exc}"}
    finally:
        if client is not None:
            client.close()
    return {"available": True, "source": f"CRI at {socket_path}",
            "runtime": f"{version['runtime_name']} {version['runtime_version']}", "pods": len(pods),
            "detail": f"{len(pods)} pods on node {node_name()}, sandbox pid known for "
                      f"{sum(1 for p in pods if p.pid)}"}
