"""The enrichment processors: each is `(event) -> event`, run in a chain (structlog style).

    Attributor       the stage's processor, one pass per batch:
                       netns inode -> pod and container, else the namespace's name (ip-netns
                       name, pid:N); the node's namespace -> host_network; kubernetes.node.name;
                       (netns inode, ifindex) -> interface name (through InterfaceNamer);
                       source.ip / destination.ip -> the pod that has that IP
    InterfaceNamer   (netns inode, ifindex) -> interface name, by netlink with a netnsid, cached;
                     also a processor of its own for code that needs names before the stage
                     (the conntrack sensor's per-flow interfaces)

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

# dataset -> (object under `netagent`, key holding the netns inode or a --netns spec,
#             whether it is a drop: has ifindex/interface and always shows its namespace's name)
NETNS_FIELD = {
    "netagent.drops": ("drop", "netns", True),
    "netagent.conntrack": ("conntrack", "netns", False),
    "netagent.mtu": ("mtu", "netns_inode", False),
    "netagent.dns": ("dns", "netns", False),
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


class Processor:
    """A processor works on a batch (the pipeline hands over up to a thousand events at a
    time): one Python call per batch, not per event, is what keeps the stage cheap.
    Calling it with one event is the structlog form, `(event) -> event`."""

    def process(self, events: list[dict]) -> list[dict]:
        raise NotImplementedError

    def __call__(self, event: dict) -> dict:
        return self.process([event])[0]


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


class InterfaceNamer(Processor):
    """netagent.drop.interface from (netns, ifindex), by netlink, cached per namespace."""

    def __init__(self, directory: NetnsDirectory, failures: Failures, clock=time.monotonic, pods=None):
        self.directory = directory
        self.failures = failures
        self.clock = clock
        self.pods = pods
        self._pods_seen = -1  # the pod index generation whose namespaces were named ahead
        self._names: dict[int, dict[int, str]] = {}
        self._missing: dict[tuple[int, int], float] = {}
        self._rtnl: RtNetlink | None = None
        self._lock = threading.Lock()

    def process(self, events: list[dict]) -> list[dict]:
        if self.pods is not None and self.pods.generation != self._pods_seen:
            self.name_new_pods_ahead()
        host = self.directory.host.inode
        for event in events:
            if event["event"]["dataset"] != "netagent.drops":
                continue
            drop = event["netagent"]["drop"]
            ifindex = drop["ifindex"]
            if not ifindex or drop["interface"]:
                continue
            name = self.name(drop["netns"] or host, ifindex)
            if name is not None:
                drop["interface"] = name
        return events

    def name(self, inode: int, ifindex: int) -> str | None:
        """The interface's name from the cache, else by netlink (None: not found, counted)."""
        names = self._names.get(inode)
        name = names.get(ifindex) if names else None
        return name if name is not None else self.lookup(inode, ifindex)

    def name_new_pods_ahead(self) -> None:
        """Read the interfaces of every pod namespace new to the index now, while it exists:
        a pod deleted before the sensor's next flush still gets its drops' interface names
        (its namespace, and so its links, are gone by the time those events arrive)."""
        self._pods_seen = self.pods.generation
        for inode, pod in list(self.pods.by_netns.items()):
            if inode in self._names or not pod.netns_path:
                continue
            try:
                with self._lock:
                    if self._rtnl is None:
                        self._rtnl = RtNetlink()
                    self._names[inode] = links_of(self._rtnl, pod.netns_path)
            except OSError:
                continue  # named on demand later, and counted there if that fails too

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


class Peer:
    """A pod as the peer of a flow, with the netagent.kubernetes objects it is part of.

    One {source, destination} object per pair of pods, built on the pair's first
    event and shared by the events after it (as pod_fields shares a pod's
    fields): no allocation per event, for the dispatcher or for the garbage
    collector. Shared, so nothing may change one in place (ApiPeerAttributor
    replaces it instead). Valid for one pod index: Attributor builds new Peers
    at each refresh."""

    __slots__ = ("fields", "as_destination", "pairs")

    def __init__(self, pod: PodInfo):
        self.fields = peer_fields(pod)
        self.as_destination = {"destination": self.fields}  # the source is no pod of ours
        self.pairs: dict[Peer | None, dict] = {}  # with this pod as the source: destination's Peer or None

    def pair_with(self, destination: "Peer | None") -> dict:
        """The object for a flow from this pod to `destination` (None: no pod of ours), kept."""
        pair = {"source": self.fields}
        if destination is not None:
            pair["destination"] = destination.fields
        self.pairs[destination] = pair  # bounded by the pods of the node
        return pair


HOST_NETWORK, ATTRIBUTION_FAILED, NAMES_POD = 1, 2, 4
VIEW_LIMIT = 65536  # (namespace, interface) answers kept between index changes


class Attributor(Processor):
    """Everything the stage adds to an event, in one pass over the batch:

      netns inode -> pod and container (top-level ECS and kubernetes.* fields), else the
                     namespace's own name (ip-netns name, pid:N); the node's namespace is
                     flagged host_network (every hostNetwork pod shares it: no single pod
                     to name); other events get kubernetes.node.name
      (netns inode, ifindex) -> netagent.drop.interface (InterfaceNamer, by netlink)
      source.ip / destination.ip -> netagent.kubernetes.source / destination (pod IPs)

    Why one pass, not one processor each: at 50k events/s the stage's cost is
    per-event interpreter work, and each separate pass repeats the loop and the
    dataset lookup. The answer for a (namespace, interface) pair is worked out
    once and kept until the pod index changes (each refresh): an event then
    costs two dict lookups and two dict.update() calls, and allocates nothing
    (the answers and the peers' objects are shared; see Peer). An answer nothing
    could give (unknown namespace, interface lookup failed) is worked out again
    after its retry time, so a pod or a link that appears later is named.
    """

    def __init__(self, pods, directory: NetnsDirectory, failures: Failures, node: str | None,
                 namer: InterfaceNamer, clock=time.monotonic):
        self.pods = pods
        self.directory = directory
        self.failures = failures
        self.namer = namer
        self.node = node
        self.clock = clock
        self.host_inode = directory.host.inode
        self._node_fields = {"kubernetes": {"node": {"name": node}}} if node and pods is not None else None
        self.node_fields = None  # set while this is a Kubernetes node (a runtime found), see _sync()
        # the answers, by whether the dataset is a drop (see NETNS_FIELD), then by the namespace
        # as the sensor wrote it, then by ifindex (0 for other datasets): nested dicts, so that
        # finding one builds no key tuple per event
        self._views: dict[bool, dict] = {True: {}, False: {}}
        self._view_count = 0
        self._peers: dict[str, Peer] = {}  # ip -> the pod that has it
        self._generation = None

    def _sync(self) -> None:
        """Drop the derived answers when the pod index changed (a refresh published)."""
        pods = self.pods
        generation = pods.generation if pods is not None else 0
        if generation == self._generation:
            return
        self._generation = generation
        self._forget_views()
        if pods is not None:
            self.namer.name_new_pods_ahead()
        # no runtime found (healthy None): not a Kubernetes node as far as we know, no kubernetes.*
        self.node_fields = self._node_fields if pods is not None and pods.healthy is not None else None
        self._peers = {}
        if pods is not None:
            of_pod: dict[int, Peer] = {}  # one Peer per pod, whatever the number of its IPs
            for ip, pod in pods.by_ip.items():
                peer = of_pod.get(id(pod))
                if peer is None:
                    peer = of_pod[id(pod)] = Peer(pod)
                self._peers[ip] = peer

    def _forget_views(self) -> None:
        for kind in self._views.values():
            kind.clear()  # in place: process() holds the dicts for the rest of its batch
        self._view_count = 0

    def process(self, events: list[dict]) -> list[dict]:
        self._sync()
        # one clock read per batch: retry times are seconds apart, a batch takes milliseconds
        now = self.clock()
        views = self._views
        peers = self._peers.get if self._peers else None
        node_fields = self.node_fields
        where_of = NETNS_FIELD.get
        for event in events:
            netagent = event["netagent"]
            where = where_of(event["event"]["dataset"])
            if where is None:
                if node_fields is not None and "kubernetes" not in event:
                    event.update(node_fields)  # heartbeats, host metrics: the node, no namespace
            else:
                # keyed by the value as the sensor wrote it (an inode, or a --netns spec such as
                # "host"); a drop's answer also depends on its interface, unless the sensor named it.
                # Subscripts, not .get(): a missing field or a namespace seen for the first time is
                # the rare case (_first_answer), and a try costs nothing while nothing is raised
                part, field, is_drop = where
                try:
                    body = netagent[part]
                    key = body[field]
                    ifindex = (0 if body["interface"] else body["ifindex"] or 0) if is_drop else 0
                    view = views[is_drop][key][ifindex]
                except (KeyError, TypeError):
                    body, view = self._first_answer(netagent, where, now)
                else:
                    if view[3] and now >= view[3]:  # nothing could answer it: worked out again
                        view = self._remember(key, ifindex, is_drop, now)
                if view is not None:
                    top, add, flags, _retry = view
                    if top:
                        event.update(top)
                    if add:
                        body.update(add)
                    if flags:
                        if flags & HOST_NETWORK:
                            netagent["host_network"] = True
                        if flags & ATTRIBUTION_FAILED:
                            self.failures.count("runtime_unavailable")
            if peers is not None:
                # subscripts, not .get(): an event without an address is the rare case, and a
                # try costs nothing when nothing is raised (four method calls fewer per event)
                try:
                    src = peers(event["source"]["ip"])
                except (KeyError, TypeError):
                    src = None
                try:
                    dst = peers(event["destination"]["ip"])
                except (KeyError, TypeError):
                    dst = None
                if src is not None:
                    netagent["kubernetes"] = src.pairs.get(dst) or src.pair_with(dst)
                elif dst is not None:
                    netagent["kubernetes"] = dst.as_destination
        return events

    def _first_answer(self, netagent: dict, where: tuple, now: float) -> tuple:
        """(the dataset's object, its answer) for an event process() could not answer by
        subscripts: a field missing, or the first event of its namespace and interface.
        The answer is None when there is nothing to answer for (no object, or an empty one)."""
        part, field, is_drop = where
        body = netagent.get(part)
        if not body:
            return body, None
        key = body.get(field)
        ifindex = (0 if body.get("interface") else body.get("ifindex") or 0) if is_drop else 0
        try:
            view = self._views[is_drop][key][ifindex]
        except KeyError:
            view = None
        if view is None or (view[3] and now >= view[3]):
            view = self._remember(key, ifindex, is_drop, now)
        return body, view

    def _remember(self, key, ifindex: int, is_drop: bool, now: float) -> tuple:
        """Work out the answer for (namespace, interface) and keep it (bounded)."""
        view = self._view(key, ifindex, is_drop, now)
        if self._view_count >= VIEW_LIMIT:
            self._forget_views()
        by_ifindex = self._views[is_drop].setdefault(key, {})
        self._view_count += ifindex not in by_ifindex
        by_ifindex[ifindex] = view
        return view

    def _view(self, inode, ifindex: int, is_drop: bool, now: float) -> tuple:
        """(top-level fields, fields for the dataset's object, flags, retry time or 0)."""
        if type(inode) is not int and inode is not None:
            inode = self.directory.inode_of(inode) if isinstance(inode, str) else None
        top, name, flags, retry = self._netns_view(inode, now) if inode is not None else (None, None, 0, 0)
        # a drop always shows its namespace's name; other datasets keep their own unless it is a pod's
        add = {"netns_name": name} if name and (is_drop or flags & NAMES_POD) else {}
        flags &= ~NAMES_POD
        if ifindex:
            ifname = self.namer.name(inode or self.host_inode, ifindex)
            if ifname is not None:
                add["interface"] = ifname
            else:
                again = now + IFNAME_RETRY
                retry = min(retry, again) if retry else again
        return top, add, flags, retry

    def _netns_view(self, inode: int, now: float) -> tuple:
        """(top-level fields, netns display name, flags, retry time or 0) for a namespace."""
        if inode == self.host_inode:
            return self.node_fields, "host", HOST_NETWORK, 0
        pods = self.pods
        pod = pods.by_netns.get(inode) if pods is not None else None
        if pod is not None:
            return pod_fields(pod, self.node), pod_label(pod), NAMES_POD, 0
        flags = 0
        if pods is not None:
            if pods.healthy is False:
                flags = ATTRIBUTION_FAILED  # may be a pod: we cannot tell while the runtime is down
            else:
                pods.note_miss(inode)
        ns = self.directory.get(inode)
        retry = 0 if ns is not None else now + DIRECTORY_RESCAN_SPACING
        return self.node_fields, ns.name if ns else None, flags, retry


def node_name(configured: str = "") -> str:
    """[kubernetes] node_name, else $NODE_NAME (the DaemonSet's downward API), else the hostname."""
    return configured or os.environ.get("NODE_NAME") or os.uname().nodename
