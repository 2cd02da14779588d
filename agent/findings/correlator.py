"""The correlator: a pipeline processor that turns the event stream into findings.

    correlator = Correlator.from_config(cfg)      # cfg: the [findings] table
    for event in batch:
        out.extend(correlator(event))             # the event itself, then any findings

It passes every event through unchanged and remembers what it needs, by
the fields each producer documents:

  netagent.host     netns-counters: netagent.host.{netns, snmp, interfaces, conntrack, ...}
                    node-counters:  netagent.host.{cpu, softnet} - the end of a sample:
                                    the rules run then
  netagent.overlay  interface-seen/-changed/-removed: netagent.overlay.{interface, netns}
  netagent.drops    event.reason, netagent.drop.{count, interface, netns, netns_name, location},
                    destination.port, network.transport (merged per second: _remember_drop)
  netagent.conntrack  event.action table-full / insert-failed,
                    netagent.conntrack.{netns, netns_name, entries, max, fill_ratio, deltas}
  netagent.dns      netagent.dns.timeouts, dns.question.name, netagent.dns.netns (the namespace's name)
  netagent.mtu      netagent.mtu.{path_mtu, interface, netns (name)}, destination.ip (probe results)

Events from the window (default 60 s) are kept; older ones are forgotten
as each new one arrives, so memory is bounded by the window whatever
sensors run (with the host sensor off, no node-counters event ever comes
to prune them). A burst inside one window is bounded too: past
`max_records` per kind the oldest go, counted in status() as evicted.
Findings come out through a FindingTracker: raised once, cleared when gone.
The processor is called from the single dispatcher thread, but a lock
keeps it safe if a caller shares it.
"""

from __future__ import annotations

import collections
import threading
import time

from netagent import netns as netns_mod
from netagent.errors import UsageError
from netagent.findings.rules import CONFIG_SCHEMA, Context, RuleConfig, evaluate
from netagent.findings.tracker import FindingTracker

__all__ = ["Correlator", "CONFIG_SCHEMA", "CONFIG_SECTION"]

CONFIG_SECTION = "findings"


def _get(event: dict, *path, default=None):
    cur = event
    for key in path:
        if not isinstance(cur, dict):
            return default
        cur = cur.get(key)
        if cur is None:
            return default
    return cur


def _inode(value):
    """netns references arrive as an inode (int), a {"inode": ...} object or a numeric string."""
    if isinstance(value, dict):
        value = value.get("inode")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) else None


def _netns_inode_by_name(name: str, known: dict[int, str]) -> int | None:
    """The MTU and DNS probes name their namespace (Netns.name: "host", an ip-netns name, pid:N)."""
    for inode, known_name in known.items():
        if known_name == name:
            return inode
    try:
        ns = netns_mod.current() if name == "host" else netns_mod.resolve(name)
    except (UsageError, OSError):
        return None
    return ns.inode


# A drop record keeps this many of its flows' destination ports, the lowest: the rules quote
# the lowest ten of a window, and those are among the lowest ten of each record.
DROP_RECORD_PORTS = 10


def drop_record(event: dict) -> dict:
    drop = _get(event, "netagent", "drop", default={})
    port = _get(event, "destination", "port")
    return {"count": int(drop.get("count") or 1), "reason": _get(event, "event", "reason") or "UNKNOWN",
            "interface": drop.get("interface"), "netns": _inode(drop.get("netns")),
            "netns_name": drop.get("netns_name"), "location": drop.get("location"),
            "destination_ports": [port] if port else [],
            "transport": _get(event, "network", "transport")}


def _drop_record_key(record: dict) -> tuple:
    """What two drop records of the same second must share to be merged into one."""
    return (record["reason"], record["interface"], record["netns"], record["netns_name"], record["location"],
            record["transport"])


def conntrack_record(event: dict) -> dict:
    ct = _get(event, "netagent", "conntrack", default={})
    return {"action": _get(event, "event", "action"), "netns": _inode(ct.get("netns")),
            "netns_name": ct.get("netns_name"), "entries": ct.get("entries"), "max": ct.get("max"),
            "fill_ratio": ct.get("fill_ratio"), "deltas": ct.get("deltas") or {}}


def dns_record(event: dict) -> dict:
    dns = _get(event, "netagent", "dns", default={})
    timeouts = dns.get("timeouts")
    if timeouts is None and _get(event, "event", "action") in ("timeout", "dns-timeout", "query-timeout"):
        timeouts = 1
    return {"timeouts": int(timeouts or 0), "name": _get(event, "dns", "question", "name") or dns.get("name"),
            "server": _get(event, "destination", "ip") or dns.get("server"), "netns": _inode(dns.get("netns"))}


def mtu_record(event: dict) -> dict:
    mtu = _get(event, "netagent", "mtu", default={})
    return {"target": mtu.get("target") or _get(event, "destination", "ip"),
            "path_mtu": mtu.get("path_mtu") or mtu.get("pmtu"), "status": mtu.get("status"),
            "interface": mtu.get("interface"), "netns": _inode(mtu.get("netns"))}


class Correlator:
    """(event) -> [event, *finding events]. See the module docstring for what it reads."""

    status_name = "findings"  # its status() in the pipeline's snapshot, heartbeat and metrics

    # Per kind of record. The drop sensor aggregates per poll (one record per reason,
    # interface and port per second), so a real window holds far fewer than this.
    MAX_RECORDS = 50_000

    def __init__(self, rules: RuleConfig | None = None, window: float = 60.0, clear_after: int = 3,
                 clock=time.monotonic, max_records: int = MAX_RECORDS):
        self.rules = rules or RuleConfig()
        self.window = window
        self.max_records = max_records
        self.records_evicted = 0  # records forgotten inside the window because of max_records
        self.tracker = FindingTracker(clear_after)
        self.clock = clock
        self._lock = threading.Lock()
        self._netns: dict[int, dict] = {}  # latest netns-counters body per inode
        self._netns_seen: dict[int, float] = {}
        self._inventory: dict[int, dict[int, dict]] = collections.defaultdict(dict)
        self._names: dict[int, str] = {}
        self._recent: dict[str, collections.deque] = {
            k: collections.deque() for k in ("drops", "conntrack", "dns", "mtu")}
        self._kube_proxy: dict | None = None
        # this second's drop records by _drop_record_key (they are also in _recent["drops"])
        self._drop_second: int | None = None
        self._drop_merged: dict[tuple, dict] = {}
        self.evaluations = 0
        self.errors: list[str] = []  # rule failures (bugs), kept for the agent's status
        self.rule_errors = 0

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Correlator":
        cfg = cfg or {}
        return cls(RuleConfig.from_config(cfg), window=float(cfg.get("window", 60.0)),
                   clear_after=int(cfg.get("clear_after", 3)))

    # -- the processor -------------------------------------------------------------------
    def __call__(self, event: dict) -> list[dict]:
        with self._lock:
            return [event] + self._observe(event)

    def process(self, events: list[dict]) -> list[dict]:
        """A batch through the processor: every event, each followed by what it triggered."""
        out: list[dict] = []
        for event in events:
            out.extend(self(event))
        return out

    def _observe(self, event: dict) -> list[dict]:
        ev = event.get("event") or {}
        dataset, action = ev.get("dataset"), ev.get("action")
        now = self.clock()
        if dataset == "netagent.drops":
            self._remember_drop(now, drop_record(event))
        elif dataset == "netagent.conntrack" and action in ("table-full", "insert-failed"):
            self._remember("conntrack", now, conntrack_record(event))
        elif dataset == "netagent.dns":
            rec = dns_record(event)
            if rec["timeouts"]:
                self._resolve_netns(rec, _get(event, "netagent", "dns", "netns"))
                self._remember("dns", now, rec)
        elif dataset and dataset.startswith("netagent.mtu"):
            rec = mtu_record(event)
            if rec["path_mtu"]:
                self._resolve_netns(rec, _get(event, "netagent", "mtu", "netns"))
                self._remember("mtu", now, rec)
        elif dataset == "netagent.overlay":
            self._inventory_event(event, action)
        elif dataset == "netagent.host":
            body = _get(event, "netagent", "host", default={})
            if action == "netns-counters":
                inode = _inode(body.get("netns"))
                if inode is not None:
                    self._netns[inode] = body
                    self._netns_seen[inode] = now
                    self._names[inode] = body.get("netns", {}).get("name") or self._names.get(inode, str(inode))
            elif action == "node-counters":
                if body.get("kube_proxy") is not None:
                    self._kube_proxy = body["kube_proxy"]
                return self._evaluate(body, now)
        return []

    def _resolve_netns(self, record: dict, value) -> None:
        if record["netns"] is None and isinstance(value, str) and value:
            record["netns"] = _netns_inode_by_name(value, self._names)
            if record["netns"] is not None:
                self._names.setdefault(record["netns"], value)

    def _remember(self, kind: str, now: float, record: dict) -> None:
        queue = self._recent[kind]
        queue.append((now, record))
        self._forget_before(queue, now - self.window)
        while len(queue) > self.max_records:
            queue.popleft()
            self.records_evicted += 1
            if kind == "drops":
                self._drop_merged = {}  # never merge into a record already evicted

    def _remember_drop(self, now: float, record: dict) -> None:
        """Drops of one second that differ only in their flow (addresses, ports) become one
        record: a storm of many flows is one record per reason and place a second, not one
        per flow (counts add up; the lowest destination ports are kept)."""
        second = int(now)
        if self._drop_second != second:
            self._drop_second, self._drop_merged = second, {}
        key = _drop_record_key(record)
        merged = self._drop_merged.get(key)
        if merged is None:
            self._drop_merged[key] = record
            self._remember("drops", now, record)
            return
        merged["count"] += record["count"]
        if record["destination_ports"]:
            ports = merged["destination_ports"]
            ports.extend(p for p in record["destination_ports"] if p not in ports)
            if len(ports) > DROP_RECORD_PORTS:
                ports.sort()
                del ports[DROP_RECORD_PORTS:]

    @staticmethod
    def _forget_before(queue: collections.deque, horizon: float) -> None:
        while queue and queue[0][0] < horizon:
            queue.popleft()

    def _inventory_event(self, event: dict, action: str | None) -> None:
        ov = _get(event, "netagent", "overlay", default={})
        inode = _inode(ov.get("netns"))
        iface = ov.get("interface") or {}
        if inode is None or iface.get("index") is None:
            return
        if action == "interface-removed":
            self._inventory[inode].pop(iface["index"], None)
        else:
            self._inventory[inode][iface["index"]] = iface
            if ov.get("netns", {}).get("name"):
                self._names[inode] = ov["netns"]["name"]

    def _evaluate(self, node: dict, now: float) -> list[dict]:
        horizon = now - self.window
        # the sample's own interval, plus slack for events queued behind it
        interval = (node.get("interval_s") or self.window) * 1.5
        for queue in self._recent.values():
            self._forget_before(queue, horizon)
        # namespaces not reported for a whole window are gone (or no longer watched)
        for inode in [i for i, seen in self._netns_seen.items() if seen < horizon]:
            self._netns.pop(inode, None)
            self._netns_seen.pop(inode, None)
        self._forget_unreferenced_namespaces()
        ctx = Context(
            node=node,
            netns=dict(self._netns),
            inventory={i: list(v.values()) for i, v in self._inventory.items() if v},
            netns_names=dict(self._names),
            drops=[r for _, r in self._recent["drops"]],
            interval_drops=[r for t, r in self._recent["drops"] if t >= now - interval],
            conntrack_alerts=[r for _, r in self._recent["conntrack"]],
            dns=[r for _, r in self._recent["dns"]],
            mtu_probes=[r for _, r in self._recent["mtu"]],
            kube_proxy=self._kube_proxy,
            window_s=node.get("interval_s") or 0.0,
        )
        errors: list[str] = []
        found = evaluate(ctx, self.rules, errors)
        if errors:
            self.rule_errors += len(errors)
            self.errors = (self.errors + errors)[-10:]
        self.evaluations += 1
        return self.tracker.update(found)

    def _forget_unreferenced_namespaces(self) -> None:
        """Names and inventories of namespaces nothing refers to any more (pods come and go:
        kept, they would grow with every namespace the node ever had)."""
        for inode in [i for i, ifaces in self._inventory.items() if not ifaces]:
            del self._inventory[inode]
        live = set(self._netns) | set(self._inventory)
        for queue in self._recent.values():
            live.update(record.get("netns") for _, record in queue)
        for inode in [i for i in self._names if i not in live]:
            del self._names[inode]

    def status(self) -> dict:
        return {"evaluations": self.evaluations, "active": len(self.tracker.active), "raised": self.tracker.raised,
                "cleared": self.tracker.cleared, "rule_errors": self.rule_errors, "last_errors": self.errors,
                "records": sum(len(q) for q in self._recent.values()), "records_evicted": self.records_evicted,
                "namespaces": len(self._names), "namespaces_with_counters": len(self._netns),
                "namespaces_with_inventory": len(self._inventory)}
