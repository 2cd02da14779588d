"""The correlation rules: (context, config) -> findings. Pure functions.

A Context is what the node looked like over one window: the host sensor's
deltas (node and per namespace), the overlay inventory, and the events the
other sensors produced in the window (drops, conntrack alerts, DNS
timeouts, MTU probe results). `netagent check` builds one from two
snapshots; the daemon's Correlator builds one from the event stream. Both
run the same rules, so a finding means the same thing in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netagent.findings import reasons
from netagent.findings.model import Finding
from netagent.findings.reasons import ReasonFamily


@dataclass
class RuleConfig:
    """Thresholds. Defaults follow what the field guides call trouble."""

    steal_pct: float = 10.0  # CPU steal above this while packets drop
    min_drops: int = 1  # drops in the window before the CPU rules speak
    conntrack_fill_pct: float = 90.0  # conntrack entries / nf_conntrack_max
    min_port_range: int = 16384  # ip_local_port_range narrower than this is suspicious by itself
    port_use_fraction: float = 0.5  # TCP sockets + TIME_WAIT above this share of the range
    time_wait_fraction: float = 0.25  # TIME_WAIT above this share of the range -> tcp_tw_reuse
    retrans_pct: float = 2.0  # TCP retransmitted / sent segments
    min_segments: int = 1000  # ... over at least this many sent segments
    kube_services_rules: int = 1000  # iptables KUBE-SERVICES rules before recommending IPVS/nftables

    @classmethod
    def from_config(cls, cfg: dict | None) -> "RuleConfig":
        known = {k: v for k, v in (cfg or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


# The [findings] configuration table, in the registry's schema format.
CONFIG_SCHEMA = {
    "enabled": ("bool", True),
    "window": ("duration", 60.0),
    "clear_after": ("int", 3),
    "steal_pct": ("float", 10.0),
    "min_drops": ("int", 1),
    "conntrack_fill_pct": ("float", 90.0),
    "min_port_range": ("int", 16384),
    "port_use_fraction": ("float", 0.5),
    "time_wait_fraction": ("float", 0.25),
    "retrans_pct": ("float", 2.0),
    "min_segments": ("int", 1000),
    "kube_services_rules": ("int", 1000),
}


@dataclass
class Context:
    node: dict | None = None  # netagent.host node-counters body
    netns: dict[int, dict] = field(default_factory=dict)  # inode -> netns-counters body
    inventory: dict[int, list[dict]] = field(default_factory=dict)  # inode -> InterfaceInfo.as_dict()
    netns_names: dict[int, str] = field(default_factory=dict)
    drops: list[dict] = field(default_factory=list)  # {count, reason, interface, netns, ...}
    # drops of the last sampling interval only (for "drops *while* steal was high");
    # None: the same as `drops` (check: the window is one interval)
    interval_drops: list[dict] | None = None
    conntrack_alerts: list[dict] = field(default_factory=list)  # {action, netns, entries, max, deltas}
    dns: list[dict] = field(default_factory=list)  # {timeouts, name, server, netns}
    mtu_probes: list[dict] = field(default_factory=list)  # {target, path_mtu, interface, netns}
    kube_proxy: dict | None = None  # from netagent.host.kubeproxy.detect()
    window_s: float = 0.0

    def ns_name(self, inode: int) -> str:
        if inode in self.netns_names:
            return self.netns_names[inode]
        body = self.netns.get(inode)
        if body:
            return body.get("netns", {}).get("name") or str(inode)
        for iface in self.inventory.get(inode, []):
            if iface.get("netns"):
                return iface["netns"]
        for rec in self.conntrack_alerts + self.drops:
            if rec.get("netns") == inode and rec.get("netns_name"):
                return rec["netns_name"]
        return str(inode)

    def ns_ref(self, inode: int) -> dict:
        return {"name": self.ns_name(inode), "inode": inode}

    def drops_in(self, inode: int | None = None, family: ReasonFamily | None = None,
                 interfaces: tuple = ()) -> list[dict]:
        out = []
        for d in self.drops:
            if inode is not None and d.get("netns") != inode:
                continue
            if family is not None and d.get("reason") not in family:
                continue
            if interfaces and d.get("interface") not in interfaces:
                continue
            out.append(d)
        return out

    def dns_timeouts(self, inode: int | None = None) -> tuple[int, list[str]]:
        total, names = 0, []
        for rec in self.dns:
            if inode is not None and rec.get("netns") not in (None, inode):
                continue
            n = rec.get("timeouts") or 0
            total += n
            if n and rec.get("name") and rec["name"] not in names:
                names.append(rec["name"])
        return total, names[:5]


def _sum_drops(drops: list[dict]) -> int:
    return sum(int(d.get("count") or 0) for d in drops)


def _by_reason(drops: list[dict], top: int = 5) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in drops:
        out[d.get("reason") or "UNKNOWN"] = out.get(d.get("reason") or "UNKNOWN", 0) + int(d.get("count") or 0)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:top])


def _fmt_window(ctx: Context) -> str:
    return f"{ctx.window_s:g}s" if ctx.window_s else "the window"


# --------------------------------------------------------------------------
# Overlay MTU


def overlay_mtu(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    """A tunnel whose MTU is above underlay MTU minus encapsulation overhead."""
    out = []
    for inode, ifaces in ctx.inventory.items():
        for iface in ifaces:
            if not iface.get("mtu_exceeds"):
                continue
            under = iface.get("underlay") or {}
            name, mtu, expected = iface["name"], iface.get("mtu"), iface.get("expected_mtu")
            umtu = under.get("effective_mtu") or under.get("mtu")
            family = under.get("family", "ipv4")
            ns = ctx.ns_ref(inode)
            evidence: dict = {
                "device": name, "type": iface.get("type"), "configured_mtu": mtu,
                "underlay_device": under.get("device"), "underlay_mtu": under.get("mtu"),
                "underlay_route_mtu": under.get("route_mtu"), "underlay_found_by": under.get("found_by"),
                "underlay_family": family, "overhead": iface.get("overhead"), "expected_mtu": expected,
                "excess_bytes": (mtu - expected) if mtu and expected else None,
            }
            for key in ("vni", "port", "remote", "local", "cni"):
                if iface.get(key) is not None:
                    evidence[key] = iface[key]
            happening = []
            counters = (ctx.netns.get(inode) or {}).get("snmp", {})
            prefix = "ip6" if family == "ipv6" else "ip"
            frags = counters.get(f"{prefix}_frag_creates")
            if frags:
                evidence["fragments_created"] = frags
                evidence["fragmented_datagrams"] = counters.get(f"{prefix}_frag_oks")
                # per-namespace counter: the tunnel's underlay sends from this namespace
                happening.append(f"{frags} fragments created in {ns['name']} (where "
                                 f"{under.get('device') or 'the underlay'} sends) in {_fmt_window(ctx)}")
            fails = counters.get(f"{prefix}_frag_fails")
            if fails:
                evidence["fragmentation_failures"] = fails
                happening.append(f"{fails} packets could not be fragmented (DF set: EMSGSIZE / black hole)")
            reasm = counters.get(f"{prefix}_reasm_fails")
            if reasm:
                evidence["reassembly_failures"] = reasm
            too_big = counters.get("icmp6_out_pkt_too_bigs") if family == "ipv6" else None
            if too_big:
                evidence["icmp6_packet_too_big_sent"] = too_big
            drops = ctx.drops_in(inode, reasons.MTU)
            if drops:
                evidence["mtu_drops"] = _sum_drops(drops)
                evidence["mtu_drop_reasons"] = _by_reason(drops)
                happening.append(f"{_sum_drops(drops)} packets dropped as too big or unreassemblable")
            mtup = counters.get("tcp_mtup_fail")
            if mtup:
                evidence["tcp_mtu_probe_failures"] = mtup
            probes = [p for p in ctx.mtu_probes if p.get("netns") in (None, inode)
                      and (p.get("interface") in (None, name)) and p.get("path_mtu")]
            if probes:
                evidence["probes"] = probes[:5]
                smallest = min(p["path_mtu"] for p in probes)
                if mtu and smallest < mtu:
                    happening.append(f"probed path MTU {smallest}")
            cause = (f"{name} in {ns['name']}: MTU {mtu} is above what the underlay "
                     f"{under.get('device') or '?'} (MTU {umtu}) can carry: {iface.get('type')} over "
                     f"{family} adds {iface.get('overhead')} bytes, so the largest inner MTU is {expected}")
            if happening:
                cause += "; " + "; ".join(happening)
            remedy = (f"set the MTU of {name} to {expected} (ip link set dev {name} mtu {expected}) and the "
                      f"CNI's MTU setting to match so pod interfaces get it too (Calico: FELIX_VXLANMTU/veth_mtu; "
                      f"flannel: the backend MTU; Cilium: --mtu), or raise the underlay MTU to "
                      f"{(mtu or 0) + (iface.get('overhead') or 0)}")
            out.append(Finding("overlay-mtu", f"{ns['name']}/{name}", "high" if happening else "medium",
                               cause, remedy, evidence, ns, "overlay"))
    return out


# --------------------------------------------------------------------------
# Drops under CPU pressure (steal, softnet)


def _drop_totals(ctx: Context) -> tuple[int, dict]:
    """Drops in the window that CPU starvation can explain, and where they came from.

    Of the drop sensor's drops only reasons in reasons.CPU_STARVATION count
    (a NO_SOCKET drop happens however fast the CPU is); the others are shown
    as evidence but never blamed on the CPU.
    """
    sources: dict = {}
    window_drops = ctx.drops if ctx.interval_drops is None else ctx.interval_drops
    drops = [d for d in window_drops if d.get("reason") in reasons.CPU_STARVATION]
    other = [d for d in window_drops if d.get("reason") not in reasons.CPU_STARVATION]
    sensor = _sum_drops(drops)
    if sensor:
        sources["kernel_drops"] = sensor
        sources["kernel_drop_reasons"] = _by_reason(drops)
    if other:
        sources["kernel_drops_not_cpu"] = _sum_drops(other)
        sources["kernel_drop_reasons_not_cpu"] = _by_reason(other)
    nic_total = 0
    worst: list[tuple[int, str]] = []
    for inode, body in ctx.netns.items():
        for iface in body.get("interfaces", []):
            n = sum(iface.get(k) or 0 for k in ("rx_dropped", "tx_dropped", "rx_missed_errors",
                                                 "rx_fifo_errors", "tx_fifo_errors"))
            if n:
                nic_total += n
                worst.append((n, f"{ctx.ns_name(inode)}/{iface['name']}"))
    if nic_total:
        sources["interface_drops"] = nic_total
        sources["interfaces"] = {name: n for n, name in sorted(worst, reverse=True)[:5]}
    softnet = ((ctx.node or {}).get("softnet") or {}).get("dropped") or 0
    if softnet:
        sources["softnet_backlog_drops"] = softnet
    # The drop sensor sees NIC and backlog drops too; take the largest view
    # rather than the sum so one packet is not counted twice.
    return max(sensor, nic_total, softnet), sources


def drops_cpu_pressure(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    """Drops while the hypervisor steals CPU, or while softnet runs out of budget/backlog."""
    node = ctx.node or {}
    cpu, softnet = node.get("cpu") or {}, node.get("softnet") or {}
    drops, sources = _drop_totals(ctx)
    if drops < cfg.min_drops:
        return []
    out = []
    steal, steal_max = cpu.get("steal_pct") or 0.0, cpu.get("steal_max_pct") or 0.0
    if steal >= cfg.steal_pct or steal_max >= cfg.steal_pct:
        evidence = {"drops": drops, **sources, "steal_pct": steal, "steal_max_pct": steal_max,
                    "steal_max_cpu": cpu.get("steal_max_cpu"), "softirq_pct": cpu.get("softirq_pct"),
                    "threshold_pct": cfg.steal_pct, "time_squeeze": softnet.get("time_squeeze")}
        where = f" (cpu{cpu.get('steal_max_cpu')} {steal_max:g}%)" if steal_max > steal else ""
        cause = (f"{drops} packets dropped in {_fmt_window(ctx)} while the hypervisor stole {steal:g}% CPU"
                 f"{where}: the vCPUs that should process them were not running")
        remedy = ("move the node to instances that are not oversubscribed (dedicated or larger instance type; "
                  "check burstable CPU credits), spread receive processing over more CPUs (RSS/RPS), and keep "
                  "busy pods off the CPUs that take network interrupts")
        out.append(Finding("drops-cpu-steal", "node", "high", cause, remedy, evidence, None, "cpu"))
    squeeze, backlog = softnet.get("time_squeeze") or 0, softnet.get("dropped") or 0
    if backlog or squeeze:
        evidence = {"drops": drops, **sources, "softnet_dropped": backlog, "time_squeeze": squeeze,
                    "dropped_max_cpu": softnet.get("dropped_max_cpu"),
                    "time_squeeze_max_cpu": softnet.get("time_squeeze_max_cpu"),
                    "softirq_pct": cpu.get("softirq_pct"), "softirq_max_pct": cpu.get("softirq_max_pct")}
        sysctls = _node_sysctls(ctx)
        for key in ("net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs"):
            if key in sysctls:
                evidence[key] = sysctls[key]
        parts = []
        if backlog:
            parts.append(f"the per-CPU backlog overflowed {backlog} times (netdev_max_backlog "
                         f"{sysctls.get('net.core.netdev_max_backlog', '?')})")
        if squeeze:
            parts.append(f"softirq processing ran out of budget {squeeze} times (time_squeeze)")
        cause = f"{drops} packets dropped in {_fmt_window(ctx)} while " + " and ".join(parts)
        remedy = ("raise net.core.netdev_max_backlog (e.g. 2x current) for backlog drops and "
                  "net.core.netdev_budget / netdev_budget_usecs for time_squeeze; spread the load over more "
                  "CPUs with RSS/RPS so one CPU's softirq is not the bottleneck")
        out.append(Finding("drops-softnet", "node", "high" if backlog else "medium", cause, remedy, evidence,
                           None, "cpu"))
    return out


def _node_sysctls(ctx: Context) -> dict:
    """Sysctls read in the host namespace if watched, else any namespace (net.core ones are global)."""
    merged: dict = {}
    for body in ctx.netns.values():
        for k, v in (body.get("sysctl") or {}).items():
            merged.setdefault(k, v)
    return merged


# --------------------------------------------------------------------------
# Conntrack


def _recommended_conntrack_max(count: int, current: int) -> int:
    """Keep the table at most half full: the next power of two >= 2 * entries."""
    target = max(2 * count, current)
    power = 1
    while power < target:
        power <<= 1
    return power


def conntrack(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    """Conntrack table near full / entries dropped, and insert failures; with DNS timeouts alongside."""
    out = []
    inodes = set(ctx.netns) | {a.get("netns") for a in ctx.conntrack_alerts if a.get("netns") is not None}
    for inode in sorted(inodes):
        ct = (ctx.netns.get(inode) or {}).get("conntrack") or {}
        alerts = [a for a in ctx.conntrack_alerts if a.get("netns") == inode]
        count, limit, fill = ct.get("count"), ct.get("max"), ct.get("fill_pct")
        for a in alerts:  # the conntrack sensor's view when the host sensor does not watch this namespace
            if count is None and a.get("entries") is not None:
                count, limit = a.get("entries"), a.get("max")
                if a.get("fill_ratio") is not None:
                    fill = round(100.0 * a["fill_ratio"], 2)
        ns = ctx.ns_ref(inode)
        timeouts, names = ctx.dns_timeouts(inode)
        early, dropped, failed = (ct.get("early_drop") or 0), (ct.get("drop") or 0), (ct.get("insert_failed") or 0)
        full_alerts = [a for a in alerts if a.get("action") == "table-full"]
        failed_alerts = [a for a in alerts if a.get("action") == "insert-failed"]
        dns_note = f"; {timeouts} DNS timeouts in the same window" if timeouts else ""

        full = (fill is not None and fill >= cfg.conntrack_fill_pct) or early or full_alerts \
            or (dropped > failed)
        if full:
            evidence = {"entries": count, "max": limit, "fill_pct": fill, "threshold_pct": cfg.conntrack_fill_pct,
                        "early_drop": early, "drop": dropped, "table_full_alerts": len(full_alerts),
                        "recommended_max": _recommended_conntrack_max(count or 0, limit or 0) if limit else None,
                        "dns_timeouts": timeouts}
            if names:
                evidence["dns_names"] = names
            cause = f"conntrack table in {ns['name']} is {fill:g}% full ({count} of {limit} entries)" \
                if fill is not None else f"conntrack table in {ns['name']} is full"
            if dropped or early:
                cause += f"; {dropped} packets dropped, {early} entries evicted early"
            cause += dns_note
            remedy = (f"raise net.netfilter.nf_conntrack_max (now {limit}) to at least "
                      f"{evidence['recommended_max']} and nf_conntrack_buckets to a quarter of it, or find what "
                      "opens so many flows (conntrack -L | sort by source); shorter UDP/TIME_WAIT conntrack "
                      "timeouts free entries sooner")
            severity = "high" if (dropped or early or full_alerts) else "medium"
            out.append(Finding("conntrack-full", ns["name"], severity, cause, remedy, evidence, ns, "conntrack"))
        if failed or failed_alerts:
            evidence = {"insert_failed": failed, "drop": dropped, "clash_resolve": ct.get("clash_resolve"),
                        "chain_too_long": ct.get("chain_too_long"), "insert_failed_alerts": len(failed_alerts),
                        "dns_timeouts": timeouts}
            if names:
                evidence["dns_names"] = names
            cause = (f"conntrack insert failures in {ns['name']}: {failed} new connections lost the insert race "
                     f"and their packets were dropped" + dns_note)
            remedy = ("this is the parallel A/AAAA DNS race through DNAT: use `options single-request-reopen` "
                      "(glibc) or `use-vc`, NodeLocal DNSCache, or a kernel >= 5.0 with clash resolution; "
                      "long hash chains (chain_too_long) mean nf_conntrack_buckets is too small")
            out.append(Finding("conntrack-insert-failed", ns["name"], "high", cause, remedy, evidence, ns,
                               "conntrack"))
    return out


# --------------------------------------------------------------------------
# UDP receive buffers


def udp_rcvbuf(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    """UDP datagrams dropped because a socket's receive buffer was full."""
    out = []
    for inode, body in ctx.netns.items():
        snmp = body.get("snmp") or {}
        errors = (snmp.get("udp_rcvbuf_errors") or 0) + (snmp.get("udp6_rcvbuf_errors") or 0)
        drops = ctx.drops_in(inode, reasons.RCVBUF)
        if not errors and not drops:
            continue
        ns = ctx.ns_ref(inode)
        sockets = body.get("udp_sockets") or []
        evidence = {"rcvbuf_errors": errors, "udp_in_datagrams": snmp.get("udp_in_datagrams"),
                    "sockets": sockets[:5]}
        sysctls = body.get("sysctl") or {}
        for key in ("net.core.rmem_max", "net.core.rmem_default"):
            if key in sysctls:
                evidence[key] = sysctls[key]
        if drops:
            evidence["drop_reasons"] = _by_reason(drops)
            ports = sorted({p for d in drops for p in d.get("destination_ports") or [d.get("destination_port")] if p})
            if ports:
                evidence["drop_destination_ports"] = ports[:10]
        who = ""
        if sockets:
            s = sockets[0]
            owner = f" held by {s['process']['name']} (pid {s['process']['pid']})" if s.get("process") else ""
            who = f", worst socket {s['address']}:{s['port']}{owner} dropped {s['drops']}"
        reason = f" (drop reason {', '.join(evidence['drop_reasons'])})" if drops else ""
        count = errors or _sum_drops(drops)
        cause = f"{count} UDP datagrams dropped in {ns['name']} because a socket receive buffer was full{reason}{who}"
        remedy = (f"the receiving application does not read fast enough: give the socket a larger SO_RCVBUF "
                  f"(capped by net.core.rmem_max = {sysctls.get('net.core.rmem_max', '?')}; raise it, e.g. to "
                  "8388608), read with more threads (SO_REUSEPORT), or lower the incoming rate")
        subject = f"{ns['name']}/{sockets[0]['address']}:{sockets[0]['port']}" if sockets else ns["name"]
        out.append(Finding("udp-rcvbuf", subject, "high" if count >= 100 else "medium", cause, remedy, evidence,
                           ns, "udp"))
    return out


# --------------------------------------------------------------------------
# Field-guide checks: a setting against its recommended value, when it matters


def port_range(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    out = []
    for inode, body in ctx.netns.items():
        sysctls = body.get("sysctl") or {}
        text = sysctls.get("net.ipv4.ip_local_port_range")
        if not text:
            continue
        try:
            low, high = (int(x) for x in text.split())
        except ValueError:
            continue
        width = high - low + 1
        sockets = body.get("sockets") or {}
        in_use = (sockets.get("tcp_inuse") or 0) + (sockets.get("tcp_time_wait") or 0)
        narrow = width < cfg.min_port_range
        crowded = in_use >= cfg.port_use_fraction * width
        if not (narrow or crowded):
            continue
        ns = ctx.ns_ref(inode)
        evidence = {"current": f"{low} {high}", "width": width, "recommended": "1024 65535",
                    "tcp_sockets_in_use": sockets.get("tcp_inuse"), "tcp_time_wait": sockets.get("tcp_time_wait"),
                    "min_width": cfg.min_port_range}
        cause = (f"ip_local_port_range in {ns['name']} is {low}-{high} ({width} ports)"
                 + (f" while {in_use} TCP sockets/TIME_WAIT entries use it" if crowded else
                    f", narrower than {cfg.min_port_range}"))
        remedy = ("widen it: sysctl -w net.ipv4.ip_local_port_range='1024 65535' (reserve listening ports with "
                  "net.ipv4.ip_local_reserved_ports), and reuse connections (keep-alive, pooling)")
        out.append(Finding("port-range", ns["name"], "medium" if crowded else "low", cause, remedy, evidence, ns,
                           "field-guide"))
    return out


def tw_reuse(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    out = []
    for inode, body in ctx.netns.items():
        sysctls = body.get("sysctl") or {}
        value = sysctls.get("net.ipv4.tcp_tw_reuse")
        text = sysctls.get("net.ipv4.ip_local_port_range")
        tw = (body.get("sockets") or {}).get("tcp_time_wait") or 0
        if value is None or value == "1" or not text:
            continue
        try:
            low, high = (int(x) for x in text.split())
        except ValueError:
            continue
        width = high - low + 1
        if tw < cfg.time_wait_fraction * width:
            continue
        ns = ctx.ns_ref(inode)
        meaning = {"0": "off", "2": "loopback only"}.get(value, value)
        evidence = {"current": value, "recommended": "1", "tcp_time_wait": tw, "port_range_width": width}
        cause = (f"{tw} TCP connections in TIME_WAIT in {ns['name']} hold {100 * tw // width}% of the "
                 f"{width} local ports while net.ipv4.tcp_tw_reuse is {value} ({meaning})")
        remedy = ("sysctl -w net.ipv4.tcp_tw_reuse=1 lets new outgoing connections reuse TIME_WAIT ports "
                  "safely (with timestamps); better still, reuse connections")
        out.append(Finding("tcp-tw-reuse", ns["name"], "medium", cause, remedy, evidence, ns, "field-guide"))
    return out


def congestion_control(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    out = []
    for inode, body in ctx.netns.items():
        sysctls = body.get("sysctl") or {}
        algo = sysctls.get("net.ipv4.tcp_congestion_control")
        if not algo or algo == "bbr":
            continue
        snmp = body.get("snmp") or {}
        sent, retrans = snmp.get("tcp_out_segs") or 0, snmp.get("tcp_retrans_segs") or 0
        rate = 100.0 * retrans / sent if sent else 0.0
        lossy = sent >= cfg.min_segments and rate >= cfg.retrans_pct
        if algo != "reno" and not lossy:
            continue
        ns = ctx.ns_ref(inode)
        available = (sysctls.get("net.ipv4.tcp_available_congestion_control") or "").split()
        evidence = {"current": algo, "recommended": "bbr", "available": available,
                    "default_qdisc": sysctls.get("net.core.default_qdisc"),
                    "tcp_out_segs": sent, "tcp_retrans_segs": retrans, "retrans_pct": round(rate, 2)}
        if lossy:
            cause = (f"TCP in {ns['name']} retransmitted {rate:.1f}% of {sent} segments in {_fmt_window(ctx)} "
                     f"with loss-based congestion control {algo}")
        else:
            cause = f"TCP congestion control in {ns['name']} is reno, the oldest loss-based algorithm"
        how = "sysctl -w net.ipv4.tcp_congestion_control=bbr" if "bbr" in available else \
            "modprobe tcp_bbr, then sysctl -w net.ipv4.tcp_congestion_control=bbr"
        remedy = (f"on lossy or long paths BBR keeps throughput where {algo} backs off: {how}, with "
                  "net.core.default_qdisc=fq; and find where the loss comes from (drops findings, NIC counters)")
        out.append(Finding("congestion-control", ns["name"], "medium" if lossy else "low", cause, remedy,
                           evidence, ns, "field-guide"))
    return out


def kube_proxy(ctx: Context, cfg: RuleConfig) -> list[Finding]:
    info = ctx.kube_proxy
    if not info or info.get("mode") != "iptables":
        return []
    rules = info.get("kube_services_rules") or 0
    if rules < cfg.kube_services_rules:
        return []
    evidence = {"current": "iptables", "kube_services_rules": rules, "ipvs_available": info.get("ipvs_available"),
                "nftables_available": info.get("nftables_available"), "threshold": cfg.kube_services_rules,
                "recommended": "ipvs or nftables"}
    cause = (f"kube-proxy runs in iptables mode with {rules} rules in KUBE-SERVICES: every new connection "
             "walks them in order and every Service change rewrites the whole table")
    alternatives = [m for m, ok in (("nftables", info.get("nftables_available")), ("ipvs", info.get("ipvs_available")))
                    if ok]
    remedy = ("switch kube-proxy to " + (" or ".join(alternatives) if alternatives else "nftables (kernel >= 5.13) "
              "or ipvs (load ip_vs)") + " mode (kube-proxy --proxy-mode), or to a CNI that replaces kube-proxy")
    return [Finding("kube-proxy-mode", "node", "medium" if rules >= 5 * cfg.kube_services_rules else "low",
                    cause, remedy, evidence, None, "field-guide")]


RULES = [overlay_mtu, drops_cpu_pressure, conntrack, udp_rcvbuf, port_range, tw_reuse, congestion_control,
         kube_proxy]


def evaluate(ctx: Context, cfg: RuleConfig | None = None, errors: list[str] | None = None) -> list[Finding]:
    """Every rule over one context.

    A rule that raises is a bug; with an `errors` list it is recorded there
    (and the other rules still run), without one it propagates.
    """
    cfg = cfg or RuleConfig()
    found: list[Finding] = []
    for rule in RULES:
        try:
            found.extend(rule(ctx, cfg))
        except Exception as exc:
            if errors is None:
                raise
            errors.append(f"rule {rule.__name__}: {type(exc).__name__}: {exc}")
    return found
