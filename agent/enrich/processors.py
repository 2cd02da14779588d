"""The enrichment processors: each is `(event) -> event`, run in a chain (structlog style).

    NetnsNamer       netns inode -> its display name (ip-netns name, pid:N, host)
    InterfaceNamer   (netns inode, ifindex) -> interface name, by netlink with a netnsid
    PodAttributor    netns inode -> pod and container; host namespace -> host_network
    PeerAttributor   source.ip / destination.ip -> the pod that has that IP
    NodeNamer        kubernetes.node.name

A processor adds fields and returns the event; it never drops or holds one.
What it could not find for a reason that is a failure (the runtime does not
answer, a netlink lookup fails) it counts in `Failures`, by cause.

Where each dataset keeps its namespace (the sensors' own field names):
"""

import os
import threading
import time

from netagent import netns as netns_mod
from netagent.enrich.cri import PodInfo
from netagent.enrich.ifnames import RtNetlink, links_of

# dataset -> (object under `netagent`, key holding the netns inode or a --netns spec)
NETNS_FIELD = {
    "netagent.drops": ("drop", "netns"),
    "netagent.conntrack": ("conntrack", "netns"),
    "netagent.mtu": ("mtu", "netns_inode"),
    "netagent.dns": ("dns", "netns"),
}
DIRECTORY_RESCAN_SPACING = 2.0  # seconds between /proc scans for unknown namespaces
IFNAME_RETRY = 2.0  # seconds before a missing (netns, ifindex) is looked up again


class Failures:
    """enrich_failed counts by cause; one writer (the dispatcher), read by heartbeats."""

    def __init__(self):
        self.by_cause: dict[str, int] = {}

    def count(self, cause: str) -> None:
        self.by_cause[cause] = self.by_cause.get(cause, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_cause.values())


class NetnsDirectory:
    """inode -> Netns (path and display name) for every namespace we can see, cached.

    A miss rescans /run/netns and /proc/*/ns/net, at most once per
    DIRECTORY_RESCAN_SPACING; pods add their sandbox's path (from the index)."""

    def __init__(self, pods=None, clock=time.monotonic):
        self.pods = pods
        self.clock = clock
        self.host = netns_mod.current()
        self._known: dict[int, netns_mod.Netns] = {self.host.inode: self.host}
        self._last_scan = -1e9
        self._lock = threading.Lock()  # CLI threads and the dispatcher may both ask

    def get(self, inode: int) -> netns_mod.Netns | None:
        ns = self._known.get(inode)
        if ns is not None:
            return ns
        pod = self.pods.by_netns.get(inode) if self.pods is not None else None
        if pod is not None and pod.netns_path:
            ns = netns_mod.Netns(f"pid:{pod.pid}", pod.netns_path, inode, f"pid:{pod.pid}")
            self._known[inode] = ns
            return ns
        with self._lock:
            if self.clock() - self._last_scan < DIRECTORY_RESCAN_SPACING:
                return None
            self._last_scan = self.clock()
            self._known = {**netns_mod.known_namespaces(), **self._known}
        return self._known.get(inode)

    def inode_of(self, spec: str) -> int | None:
        """A --netns style spec ("host", a name, pid:N) as an inode, or None."""
        if spec in ("", "host"):
            return self.host.inode
        for ns in list(self._known.values()):
            if ns.name == spec:
                return ns.inode
        try:
            ns = netns_mod.resolve(spec)
        except Exception:
            return None
        self._known.setdefault(ns.inode, ns)
        return ns.inode


def event_netns(event: dict, directory: NetnsDirectory) -> int | None:
    """The namespace inode an event is about, or None."""
    where = NETNS_FIELD.get(event["event"].get("dataset"))
    if where is None:
        return None
    body = event.get("netagent", {}).get(where[0])
    if not body:
        return None
    value = body.get(where[1])
    if isinstance(value, int):
        return value or None
    if isinstance(value, str):
        return directory.inode_of(value)
    return None


class NetnsNamer:
    """netagent.drop.netns_name: the namespace's display name when the sensor left it out."""

    def __init__(self, directory: NetnsDirectory):
        self.directory = directory

    def __call__(self, event: dict) -> dict:
        if event["event"].get("dataset") != "netagent.drops":
            return event
        drop = event["netagent"]["drop"]
        inode = drop.get("netns")
        if inode and not drop.get("netns_name"):
            ns = self.directory.get(inode)
            if ns is not None:
                drop["netns_name"] = ns.name
        return event


class InterfaceNamer:
    """netagent.drop.interface from (netns, ifindex), by netlink, cached per namespace."""

    def __init__(self, directory: NetnsDirectory, failures: Failures, clock=time.monotonic):
        self.directory = directory
        self.failures = failures
        self.clock = clock
        self._names: dict[int, dict[int, str]] = {}
        self._missing: dict[tuple[int, int], float] = {}
        self._rtnl: RtNetlink | None = None
        self._lock = threading.Lock()

    def __call__(self, event: dict) -> dict:
        if event["event"].get("dataset") != "netagent.drops":
            return event
        drop = event["netagent"]["drop"]
        ifindex = drop.get("ifindex")
        if not ifindex or drop.get("interface"):
            return event
        inode = drop.get("netns") or self.directory.host.inode
        names = self._names.get(inode)
        name = names.get(ifindex) if names else None
        if name is None:
            name = self.lookup(inode, ifindex)
        if name is not None:
            drop["interface"] = name
        return event

    def lookup(self, inode: int, ifindex: int) -> str | None:
        key = (inode, ifindex)
        if self.clock() - self._missing.get(key, -1e9) < IFNAME_RETRY:
            return None
        ns = self.directory.get(inode)
        if ns is None:
            self._missing[key] = self.clock()
            self.failures.count("netns_unknown")  # gone before we could name it
            return None
        path = None if inode == self.directory.host.inode else ns.path
        try:
            with self._lock:
                if self._rtnl is None:
                    self._rtnl = RtNetlink()
                names = links_of(self._rtnl, path)
        except OSError:
            self._missing[key] = self.clock()
            self.failures.count("interface_lookup")
            return None
        self._names[inode] = names
        if ifindex not in names:
            self._missing[key] = self.clock()
            self.failures.count("interface_gone")
            return None
        return names[ifindex]


_SHARED_NAMER: InterfaceNamer | None = None


def interface_namer() -> InterfaceNamer:
    """One process-wide InterfaceNamer for code that needs names before the stage runs."""
    global _SHARED_NAMER
    if _SHARED_NAMER is None:
        _SHARED_NAMER = InterfaceNamer(NetnsDirectory(None), Failures())
    return _SHARED_NAMER


def pod_fields(pod: PodInfo, node: str | None) -> dict:
    """The top-level ECS / Kubernetes-integration objects naming `pod`, built once per pod."""
    cached = pod.__dict__.get("_fields")
    if cached is not None:
        return cached
    kubernetes = {"namespace": pod.namespace, "pod": {"name": pod.name, "uid": pod.uid}}
    if node:
        kubernetes["node"] = {"name": node}
    fields = {
        "orchestrator": {"type": "kubernetes", "namespace": pod.namespace,
                         "resource": {"type": "pod", "name": pod.name}},
        "kubernetes": kubernetes,
    }
    if len(pod.containers) == 1:  # a namespace is shared by the pod's containers: name one only if unambiguous
        cid, cname = pod.containers[0]
        fields["container"] = {"id": cid, "name": cname}
        kubernetes["container"] = {"name": cname}
    pod.__dict__["_fields"] = fields
    return fields


def pod_label(pod: PodInfo) -> str:
    """How a pod's network namespace is shown: 'pod NAMESPACE/NAME'."""
    return f"pod {pod.namespace}/{pod.name}"


def peer_fields(pod: PodInfo) -> dict:
    cached = pod.__dict__.get("_peer")
    if cached is None:
        cached = {"namespace": pod.namespace, "pod": pod.name}
        workload = pod.__dict__.get("workload")
        if workload:
            cached["workload"] = workload
        pod.__dict__["_peer"] = cached
    return cached


class PodAttributor:
    """The pod whose namespace the event happened in; host-namespace events are flagged."""

    def __init__(self, pods, directory: NetnsDirectory, failures: Failures, node: str | None):
        self.pods = pods
        self.directory = directory
        self.failures = failures
        self.node = node
        self.host_inode = directory.host.inode

    def __call__(self, event: dict) -> dict:
        inode = event_netns(event, self.directory)
        if inode is None:
            return event
        if inode == self.host_inode:
            # the node's own namespace, shared by every hostNetwork pod: no single pod to name
            event["netagent"]["host_network"] = True
            return event
        pod = self.pods.by_netns.get(inode)
        if pod is None:
            if self.pods.healthy is False:
                self.failures.count("runtime_unavailable")
            else:
                self.pods.note_miss(inode)
            return event
        fields = pod_fields(pod, self.node)
        for key, value in fields.items():
            event[key] = value
        body = event["netagent"].get(NETNS_FIELD[event["event"]["dataset"]][0])
        if "netns_name" in body or "netns" in body and isinstance(body["netns"], int):
            # the namespace's display name, which findings and tables show, is the pod users know
            body["netns_name"] = pod_label(pod)
        return event


class PeerAttributor:
    """netagent.kubernetes.source / destination: the pods that own the event's addresses."""

    def __init__(self, pods):
        self.pods = pods

    def __call__(self, event: dict) -> dict:
        by_ip = self.pods.by_ip
        if not by_ip:
            return event
        src = event.get("source")
        dst = event.get("destination")
        peers = None
        if src:
            pod = by_ip.get(src.get("ip"))
            if pod is not None:
                peers = {"source": peer_fields(pod)}
        if dst:
            pod = by_ip.get(dst.get("ip"))
            if pod is not None:
                peers = peers or {}
                peers["destination"] = peer_fields(pod)
        if peers:
            event["netagent"]["kubernetes"] = peers
        return event


class NodeNamer:
    """kubernetes.node.name on every event, once Kubernetes attribution is on."""

    def __init__(self, node: str):
        self.node = {"name": node}

    def __call__(self, event: dict) -> dict:
        k8s = event.get("kubernetes")
        if k8s is None:
            event["kubernetes"] = {"node": self.node}
        elif "node" not in k8s:
            k8s["node"] = self.node
        return event


def node_name(configured: str = "") -> str:
    """[kubernetes] node_name, else $NODE_NAME (the DaemonSet's downward API), else the hostname."""
    return configured or os.environ.get("NODE_NAME") or os.uname().nodename
