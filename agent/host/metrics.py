"""Two snapshots -> what happened in between (pure functions, unit-tested).

Everything reported is a delta over the interval except the things that
are gauges by nature (conntrack entries, socket counts, backlog length),
which are reported as the value at the end of the interval.
"""

from __future__ import annotations

from netagent.host import procfs
from netagent.host.snapshot import NetnsSnapshot, NodeSnapshot

# Our name -> "Proto.Counter" in /proc/net/snmp, netstat, snmp6. A counter
# the running kernel does not have is left out rather than reported as 0.
SNMP_COUNTERS = {
    "udp_in_datagrams": "Udp.InDatagrams",
    "udp_no_ports": "Udp.NoPorts",
    "udp_in_errors": "Udp.InErrors",
    "udp_rcvbuf_errors": "Udp.RcvbufErrors",
    "udp_sndbuf_errors": "Udp.SndbufErrors",
    "udp_mem_errors": "Udp.MemErrors",
    "udp6_in_datagrams": "Udp6.InDatagrams",
    "udp6_no_ports": "Udp6.NoPorts",
    "udp6_in_errors": "Udp6.InErrors",
    "udp6_rcvbuf_errors": "Udp6.RcvbufErrors",
    "ip_out_requests": "Ip.OutRequests",
    "ip_frag_oks": "Ip.FragOKs",
    "ip_frag_creates": "Ip.FragCreates",
    "ip_frag_fails": "Ip.FragFails",
    "ip_reasm_reqds": "Ip.ReasmReqds",
    "ip_reasm_fails": "Ip.ReasmFails",
    "ip_reasm_timeout": "Ip.ReasmTimeout",
    "ip_out_discards": "Ip.OutDiscards",
    "ip_in_discards": "Ip.InDiscards",
    "ip6_frag_oks": "Ip6.FragOKs",
    "ip6_frag_creates": "Ip6.FragCreates",
    "ip6_frag_fails": "Ip6.FragFails",
    "ip6_reasm_fails": "Ip6.ReasmFails",
    "icmp6_in_pkt_too_bigs": "Icmp6.InPktTooBigs",
    "icmp6_out_pkt_too_bigs": "Icmp6.OutPktTooBigs",
    "tcp_out_segs": "Tcp.OutSegs",
    "tcp_retrans_segs": "Tcp.RetransSegs",
    "tcp_in_errs": "Tcp.InErrs",
    "tcp_timeouts": "TcpExt.TCPTimeouts",
    "tcp_mtup_fail": "TcpExt.TCPMTUPFail",
    "tcp_mtup_success": "TcpExt.TCPMTUPSuccess",
    "tcp_listen_overflows": "TcpExt.ListenOverflows",
    "tcp_listen_drops": "TcpExt.ListenDrops",
    "tcp_backlog_drop": "TcpExt.TCPBacklogDrop",
    "tcp_time_wait_overflow": "TcpExt.TCPTimeWaitOverflow",
}

# Interface counters that mean loss (reported when any of them moved).
NIC_LOSS_COUNTERS = ("rx_dropped", "tx_dropped", "rx_errors", "tx_errors", "rx_fifo_errors",
                     "tx_fifo_errors", "rx_missed_errors", "rx_over_errors", "rx_crc_errors")
NIC_TRAFFIC_COUNTERS = ("rx_packets", "tx_packets")

# /proc/net/stat/nf_conntrack columns worth reporting, under our names, with
# the header names kernels have printed for them (5.15+ prints the
# chaintoolong counter under the header "chainlength").
CONNTRACK_STAT = {"insert_failed": ("insert_failed",), "drop": ("drop",), "early_drop": ("early_drop",),
                  "invalid": ("invalid",), "search_restart": ("search_restart",),
                  "clash_resolve": ("clashres", "clash_resolve"), "chain_too_long": ("chainlength", "chaintoolong")}


def counter_delta(before: int | None, after: int | None, bits: int = 64) -> int | None:
    """after - before for a counter; 32-bit counters wrap, a 64-bit one going back was reset."""
    if before is None or after is None:
        return None
    if after >= before:
        return after - before
    if bits == 32:
        return after + (1 << 32) - before
    return after  # reset (interface or namespace recreated): count from zero


def node_delta(a: NodeSnapshot, b: NodeSnapshot, per_cpu: bool = True) -> dict:
    """CPU time shares and softnet deltas between two node snapshots."""
    out: dict = {"interval_s": round(b.monotonic - a.monotonic, 3)}
    cpu = {}
    if "cpu" in a.cpu and "cpu" in b.cpu:
        cpu = procfs.cpu_percentages(a.cpu["cpu"], b.cpu["cpu"])
    cpus = []
    for name in sorted((n for n in b.cpu if n != "cpu"), key=lambda n: int(n[3:])):
        if name in a.cpu:
            shares = procfs.cpu_percentages(a.cpu[name], b.cpu[name])
            cpus.append({"cpu": int(name[3:]), "steal_pct": shares["steal_pct"],
                         "softirq_pct": shares["softirq_pct"], "busy_pct": shares["busy_pct"]})
    if cpus:
        worst = max(cpus, key=lambda c: c["steal_pct"])
        cpu["steal_max_pct"] = worst["steal_pct"]
        cpu["steal_max_cpu"] = worst["cpu"]
        cpu["softirq_max_pct"] = max(c["softirq_pct"] for c in cpus)
    cpu["count"] = len(cpus)
    out["cpu"] = cpu
    if per_cpu:
        out["cpus"] = cpus

    before = {row.cpu: row for row in a.softnet}
    rows = []
    totals = {"processed": 0, "dropped": 0, "time_squeeze": 0, "flow_limit_count": 0}
    backlog_max = None
    for row in b.softnet:
        prev = before.get(row.cpu)
        if prev is None:
            continue
        d = {"cpu": row.cpu,
             "processed": counter_delta(prev.processed, row.processed, 32),
             "dropped": counter_delta(prev.dropped, row.dropped, 32),
             "time_squeeze": counter_delta(prev.time_squeeze, row.time_squeeze, 32)}
        if row.flow_limit_count is not None and prev.flow_limit_count is not None:
            d["flow_limit_count"] = counter_delta(prev.flow_limit_count, row.flow_limit_count, 32)
        if row.backlog_len is not None:
            d["backlog_len"] = row.backlog_len
            backlog_max = max(backlog_max or 0, row.backlog_len)
        for key in totals:
            totals[key] += d.get(key) or 0
        rows.append(d)
    softnet = dict(totals)
    softnet["columns"] = b.softnet[0].columns if b.softnet else 0
    if backlog_max is not None:
        softnet["backlog_len_max"] = backlog_max
    if rows:
        softnet["dropped_max_cpu"] = max(rows, key=lambda r: r["dropped"] or 0)["cpu"]
        softnet["time_squeeze_max_cpu"] = max(rows, key=lambda r: r["time_squeeze"] or 0)["cpu"]
    out["softnet"] = softnet
    if per_cpu:
        out["softnet_cpus"] = rows
    if b.softnet_error:
        out["errors"] = [b.softnet_error]
    return out


def netns_delta(a: NetnsSnapshot, b: NetnsSnapshot, all_interfaces: bool = False, top_sockets: int = 10) -> dict:
    """Counter deltas of one namespace between two snapshots."""
    out: dict = {"interval_s": round(b.monotonic - a.monotonic, 3),
                 "netns": {"name": b.ns.name, "inode": b.ns.inode}}
    snmp = {}
    for ours, theirs in SNMP_COUNTERS.items():
        if theirs in b.snmp and theirs in a.snmp:
            snmp[ours] = counter_delta(a.snmp[theirs], b.snmp[theirs])
    out["snmp"] = snmp

    interfaces = []
    totals = {k: 0 for k in NIC_LOSS_COUNTERS}
    for name, after in sorted(b.nic.items()):
        before = a.nic.get(name)
        if before is None:
            continue
        d = {k: counter_delta(before.get(k), after.get(k)) for k in NIC_LOSS_COUNTERS + NIC_TRAFFIC_COUNTERS
             if k in after and k in before}
        lossy = any(d.get(k) for k in NIC_LOSS_COUNTERS)
        for k in NIC_LOSS_COUNTERS:
            totals[k] += d.get(k) or 0
        if lossy or all_interfaces:
            interfaces.append({"name": name, **d})
    out["interfaces"] = interfaces
    out["interfaces_total"] = totals

    ct: dict = {}
    if b.conntrack_count is not None:
        ct["count"] = b.conntrack_count
    if b.conntrack_max is not None:
        ct["max"] = b.conntrack_max
        if b.conntrack_count is not None and b.conntrack_max > 0:
            ct["fill_pct"] = round(100.0 * b.conntrack_count / b.conntrack_max, 2)
    for ours, headers in CONNTRACK_STAT.items():
        for theirs in headers:
            if theirs in b.conntrack_stat and theirs in a.conntrack_stat:
                ct[ours] = counter_delta(a.conntrack_stat[theirs], b.conntrack_stat[theirs], 32)
                break
    out["conntrack"] = ct

    sockets = []
    for key, after in b.udp_socket_drops.items():
        before = a.udp_socket_drops.get(key, {}).get("drops", 0)
        delta = counter_delta(before, after["drops"], 32)
        if delta:
            sockets.append({**after, "drops_total": after["drops"], "drops": delta})
    sockets.sort(key=lambda s: -s["drops"])
    out["udp_sockets"] = sockets[:top_sockets]

    tcp = b.sockstat.get("TCP", {})
    out["sockets"] = {"tcp_inuse": tcp.get("inuse"), "tcp_time_wait": tcp.get("tw"),
                      "udp_inuse": b.sockstat.get("UDP", {}).get("inuse")}
    out["sysctl"] = dict(b.sysctls)
    errors = sorted(set(a.errors) | set(b.errors))
    if errors:
        out["errors"] = errors
    return out
