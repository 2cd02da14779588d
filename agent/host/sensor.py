"""The host context sensor: node and namespace counters every interval.

Each poll emits, in this order:
  * one `netagent.overlay` event per interface that appeared or changed
    (type, MTU, underlay, expected MTU) and one per interface removed;
  * one `netagent.host` event (action "netns-counters") per watched
    namespace: snmp/netstat deltas, NIC loss counters, conntrack fill,
    UDP sockets that dropped, the sysctls the findings look at;
  * one `netagent.host` event (action "node-counters"): CPU steal and
    softirq per CPU and overall, softnet_stat deltas per CPU.
The node event comes last so a consumer (the correlator) can treat it as
"this sample is complete".

Configuration ([sensors.host]): interval (default 10 s), netns (list of
namespace specs; "*" means every namespace under /run/netns, re-read each
poll so pods that come and go are followed), per_cpu, all_interfaces,
inventory.
"""

from __future__ import annotations

import itertools

from netagent import netns as netns_mod
from netagent import overlay
from netagent.errors import AgentError, ProbeUnavailable, UsageError
from netagent.events import new_event
from netagent.host import kubeproxy, metrics, snapshot
from netagent.sensor import CounterHandover, Sensor, SensorStatus

CONFIG_SECTION = "host"
CONFIG_SCHEMA = {
    "enabled": ("bool", True),
    "interval": ("duration", 10.0),
    "netns": ("list", []),  # [] = the agent's own namespace; "*" = every named namespace too
    "per_cpu": ("bool", True),
    "all_interfaces": ("bool", False),
    "inventory": ("bool", True),
    "kube_proxy_interval": ("duration", 300.0),  # how often to look at kube-proxy's rule set
}


def from_config(cfg: dict) -> "HostSensor":
    return HostSensor(
        namespaces=list(cfg.get("netns", [])),
        interval=float(cfg.get("interval", 10.0)),
        per_cpu=bool(cfg.get("per_cpu", True)),
        all_interfaces=bool(cfg.get("all_interfaces", False)),
        inventory=bool(cfg.get("inventory", True)),
        kube_proxy_interval=float(cfg.get("kube_proxy_interval", 300.0)),
    )


def _inventory_key(info: overlay.InterfaceInfo) -> tuple:
    """What makes an interface 'changed' for the inventory events."""
    u = info.underlay
    return (info.type, info.mtu, info.up, info.master, info.vni, info.port, info.remote, info.local,
            u.device if u else None, u.effective_mtu if u else None, info.expected_mtu)


class HostSensor(CounterHandover, Sensor):
    name = "host"
    dataset = "netagent.host"

    def __init__(self, namespaces: list[str] | None = None, interval: float = 10.0, per_cpu: bool = True,
                 all_interfaces: bool = False, inventory: bool = True, kube_proxy_interval: float = 300.0):
        self.specs = list(namespaces or [])
        self.interval = interval
        self.per_cpu = per_cpu
        self.all_interfaces = all_interfaces
        self.inventory = inventory
        self._node: snapshot.NodeSnapshot | None = None
        self._netns: dict[int, snapshot.NetnsSnapshot] = {}
        self._known: dict[tuple[int, int], tuple] = {}  # (netns inode, ifindex) -> key
        self._names: dict[tuple[int, int], str] = {}
        self._sample = itertools.count(1)
        self.kube_proxy_interval = kube_proxy_interval
        self._kube_proxy: dict | None = None
        self._kube_proxy_at = float("-inf")
        self.errors = 0

    # -- which namespaces -------------------------------------------------------------
    def namespaces(self) -> list[netns_mod.Netns]:
        """The watched namespaces now (UsageError for a spec that does not resolve)."""
        found: dict[int, netns_mod.Netns] = {}
        specs = self.specs or [""]
        for spec in specs:
            if spec == "*":
                host = netns_mod.current()
                found.setdefault(host.inode, host)
                for name in sorted(netns_mod.list_named()):
                    try:
                        ns = netns_mod.resolve(name)
                    except UsageError:
                        continue  # removed between listing and resolving
                    found.setdefault(ns.inode, ns)
            else:
                ns = netns_mod.resolve(spec)
                found.setdefault(ns.inode, ns)
        return list(found.values())

    # -- contract ---------------------------------------------------------------------
    def check(self) -> SensorStatus:
        try:
            snapshot.read_node()
        except OSError as exc:
            return SensorStatus(self.name, False, reason=f"/proc unreadable: {exc}")
        try:
            spaces = self.namespaces()
        except UsageError as exc:
            return SensorStatus(self.name, False, reason=str(exc))
        return SensorStatus(self.name, True, attach_path="procfs + netlink",
                            details={"netns": [ns.name for ns in spaces], "interval_s": self.interval})

    def attach(self, predecessor: "HostSensor | None" = None) -> str:
        """`predecessor`: the running host sensor this one replaces (reload): this one
        reports nothing until it takes over its readings (CounterHandover)."""
        if predecessor is not None:
            self._standby_for(predecessor)
        try:
            self._node = snapshot.read_node()
        except OSError as exc:
            raise ProbeUnavailable(f"host sensor: cannot read /proc ({exc})") from None
        for ns in self.namespaces():
            try:
                self._netns[ns.inode] = snapshot.read_netns(ns)
            except (AgentError, OSError):
                self.errors += 1  # removed between listing and entering: not ours to fail on
        return "procfs + netlink"

    def detach(self) -> None:
        self._node = None
        self._netns.clear()

    def _adopt(self, predecessor: "HostSensor") -> None:
        """Count on from the predecessor's last readings (node, and the namespaces both
        watch), and know the interfaces it announced, so none is announced twice."""
        if predecessor._node is not None:
            self._node = predecessor._node
        for inode, snap in list(predecessor._netns.items()):
            if inode in self._netns:
                self._netns[inode] = snap
        for ident, key in list(predecessor._known.items()):
            if ident[0] in self._netns:
                self._known[ident] = key
                self._names[ident] = predecessor._names.get(ident)
        self._sample = predecessor._sample

    def poll(self) -> list[dict]:
        if self.in_standby:
            return []  # the predecessor reports these counters until it hands over
        if self._node is None:
            self.attach()
            return []
        sample = next(self._sample)
        events: list[dict] = []
        seen: set[int] = set()
        try:
            spaces = self.namespaces()
        except UsageError:
            # a configured namespace is gone: keep watching the ones still there
            self.errors += 1
            spaces = [ns for ns in netns_mod.known_namespaces().values() if ns.inode in self._netns]
        for ns in spaces:
            seen.add(ns.inode)
            try:
                cur, infos = netns_mod.run_in(ns, _readings_here, ns, self.inventory)
            except (AgentError, OSError):
                self.errors += 1  # namespace vanished between listing and entering it
                continue
            prev = self._netns.get(ns.inode)
            self._netns[ns.inode] = cur
            if self.inventory:
                events.extend(self._inventory_events(ns, infos))
            if prev is not None:
                body = metrics.netns_delta(prev, cur, all_interfaces=self.all_interfaces)
                body["sample"] = sample
                events.append(new_event(dataset="netagent.host", action="netns-counters", kind="metric",
                                        category=["host", "network"], type=["info"], netagent={"host": body}))
        for inode in [i for i in self._netns if i not in seen]:
            del self._netns[inode]
            events.extend(self._removed_events(inode, keep=set()))
        node = snapshot.read_node()
        body = metrics.node_delta(self._node, node, per_cpu=self.per_cpu)
        self._node = node
        body["sample"] = sample
        body["netns_watched"] = len(seen)
        kp = self._kube_proxy_info(node.monotonic)
        if kp is not None:
            body["kube_proxy"] = kp
        events.append(new_event(dataset="netagent.host", action="node-counters", kind="metric",
                                category=["host"], type=["info"], netagent={"host": body}))
        return events

    def _kube_proxy_info(self, now: float) -> dict | None:
        """kube-proxy's mode and rule count, looked at every kube_proxy_interval (it runs iptables-save)."""
        if now - self._kube_proxy_at >= self.kube_proxy_interval:
            self._kube_proxy_at = now
            try:
                names = list(netns_mod.interface_names(netns_mod.current()).values())
                self._kube_proxy = kubeproxy.detect(names)
            except OSError:
                self._kube_proxy = None
        return self._kube_proxy

    # -- overlay inventory events --------------------------------------------------------
    def _inventory_events(self, ns: netns_mod.Netns, infos: list | Exception) -> list[dict]:
        if isinstance(infos, Exception):  # the inventory could not be read (see _readings_here)
            self.errors += 1
            return []
        out = []
        present = set()
        for info in infos:
            ident = (ns.inode, info.index)
            present.add(ident)
            key = _inventory_key(info)
            if self._known.get(ident) == key:
                continue
            action = "interface-changed" if ident in self._known else "interface-seen"
            self._known[ident] = key
            self._names[ident] = info.name
            out.append(inventory_event(info, ns, action))
        out.extend(self._removed_events(ns.inode, keep=present))
        return out

    def _removed_events(self, inode: int, keep: set) -> list[dict]:
        out = []
        for ident in [i for i in self._known if i[0] == inode and i not in keep]:
            del self._known[ident]
            name = self._names.pop(ident, None)
            out.append(new_event(dataset="netagent.overlay", action="interface-removed", kind="state",
                                 category=["network"], type=["deletion"],
                                 netagent={"overlay": {"interface": {"name": name, "index": ident[1]},
                                                       "netns": {"inode": inode}}}))
        return out


def _readings_here(ns: netns_mod.Netns, inventory: bool) -> tuple[snapshot.NetnsSnapshot, list | Exception | None]:
    """Inside `ns`: its counters and, with `inventory`, its interfaces (or why they could not
    be read), from one netlink session and one link dump: each reading on its own takes the
    dump again, and decoding it (pyroute2) is most of a host poll's CPU time."""
    if not inventory:
        return snapshot.netns_here(ns, True), None
    try:
        ipr = overlay.rtnetlink()
    except (AgentError, OSError) as exc:
        return snapshot.netns_here(ns, True), exc
    with ipr:
        try:
            links = list(ipr.get_links())
        except Exception:
            links = None  # each reading takes its own dump and reports the failure its own way
        snap = snapshot.netns_here(ns, True, links)
        try:
            return snap, overlay.inventory_here(ns.name, ipr, links)
        except (AgentError, OSError) as exc:
            return snap, exc


def inventory_event(info: overlay.InterfaceInfo, ns: netns_mod.Netns, action: str = "interface-seen") -> dict:
    """One interface of the inventory as a `netagent.overlay` state event."""
    return new_event(dataset="netagent.overlay", action=action, kind="state", category=["network"],
                     type=["info"] if action == "interface-seen" else ["change"],
                     netagent={"overlay": {"interface": info.as_dict(),
                                           "netns": {"name": ns.name, "inode": ns.inode}}})
