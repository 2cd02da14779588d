"""Reading the node's and each namespace's counters at one instant.

A snapshot holds raw cumulative counters; netagent.host.metrics turns two
snapshots into deltas. Node-wide sources (/proc/stat, softnet_stat) are
read once; per-namespace ones (snmp, netstat, NIC statistics, conntrack)
are read inside each watched namespace.
"""

from __future__ import annotations

import ipaddress
import os
import struct
import time
from dataclasses import dataclass, field

from netagent import netns as netns_mod
from netagent.host import procfs


@dataclass
class NodeSnapshot:
    monotonic: float
    cpu: dict[str, procfs.CpuTimes]
    softnet: list[procfs.SoftnetRow]
    softnet_error: str | None = None


@dataclass
class NetnsSnapshot:
    monotonic: float
    ns: netns_mod.Netns
    # "Proto.Counter" -> value, from snmp, netstat and snmp6 ("Ip6.FragCreates")
    snmp: dict[str, int] = field(default_factory=dict)
    # interface name -> IFLA_STATS64 counters
    nic: dict[str, dict[str, int]] = field(default_factory=dict)
    conntrack_count: int | None = None
    conntrack_max: int | None = None
    conntrack_stat: dict[str, int] = field(default_factory=dict)
    # (local address, port, protocol) -> cumulative socket drops, from /proc/net/udp*
    udp_socket_drops: dict[tuple, dict] = field(default_factory=dict)
    sockstat: dict[str, dict[str, int]] = field(default_factory=dict)
    sysctls: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


# Settings the findings compare with field-guide recommendations. Most are
# per namespace; the net.core ones exist only in the initial namespace on
# some kernels and are then simply absent elsewhere.
SYSCTLS = (
    "net/ipv4/ip_local_port_range",
    "net/ipv4/tcp_tw_reuse",
    "net/ipv4/tcp_congestion_control",
    "net/ipv4/tcp_available_congestion_control",
    "net/core/default_qdisc",
    "net/core/netdev_max_backlog",
    "net/core/netdev_budget",
    "net/core/netdev_budget_usecs",
    "net/core/rmem_max",
    "net/core/rmem_default",
    "net/netfilter/nf_conntrack_buckets",
)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def read_node(proc: str = "/proc") -> NodeSnapshot:
    cpu = procfs.parse_proc_stat(_read(f"{proc}/stat"))
    try:
        softnet = procfs.parse_softnet_stat(_read(f"{proc}/net/softnet_stat"))
        err = None
    except (OSError, ValueError) as exc:
        softnet, err = [], f"softnet_stat unreadable: {exc}"
    return NodeSnapshot(time.monotonic(), cpu, softnet, err)


def _read_int(path: str) -> int | None:
    try:
        return int(_read(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def parse_proc_net_udp(text: str, proto: str) -> dict[tuple, dict]:
    """Sockets of /proc/net/udp or udp6 with their cumulative drop counts (only those that dropped)."""
    out: dict[tuple, dict] = {}
    lines = text.splitlines()
    if not lines:
        return out
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 13:
            continue
        local = parts[1]
        try:
            drops = int(parts[-1])
            inode = int(parts[9])
            uid = int(parts[7])
            rx_queue = int(parts[4].split(":")[1], 16)
        except (ValueError, IndexError):
            continue
        if not drops:
            continue
        address, port = _decode_proc_address(local)
        out[(address, port, proto, inode)] = {"address": address, "port": port, "transport": proto,
                                             "inode": inode, "uid": uid, "drops": drops, "rx_queue": rx_queue}
    return out


def _decode_proc_address(text: str) -> tuple[str, int]:
    """'0100007F:0035' -> ('127.0.0.1', 53); IPv6 as four host-order 32-bit words."""
    hexaddr, hexport = text.split(":")
    raw = bytes.fromhex(hexaddr)
    # The kernel prints each 32-bit word in host byte order.
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    packed = b"".join(struct.pack("!I", w) for w in words)
    return str(ipaddress.ip_address(packed)), int(hexport, 16)


def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/sockstat: 'TCP: inuse 1 orphan 0 tw 0 alloc 2 mem 113' -> {"TCP": {...}}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        proto, _, rest = line.partition(":")
        words = rest.split()
        table = {}
        for key, value in zip(words[::2], words[1::2]):
            try:
                table[key] = int(value)
            except ValueError:
                continue
        out[proto.strip()] = table
    return out


def netns_here(ns: netns_mod.Netns, with_sockets: bool, links: list | None = None) -> NetnsSnapshot:
    """Runs inside `ns` (on a helper thread): read every per-namespace source.
    `links`: a link dump (pyroute2 get_links()) already taken here, else one is taken."""
    snap = NetnsSnapshot(time.monotonic(), ns)
    for name in ("snmp", "netstat"):
        try:
            for proto, table in procfs.parse_snmp_table(_read(procfs.net_path(name))).items():
                for key, value in table.items():
                    snap.snmp[f"{proto}.{key}"] = value
        except OSError as exc:
            snap.errors.append(f"{name}: {exc.strerror}")
    try:
        for key, value in procfs.parse_snmp6(_read(procfs.net_path("snmp6"))).items():
            # Ip6FragCreates -> Ip6.FragCreates, Udp6RcvbufErrors -> Udp6.RcvbufErrors
            for prefix in ("Ip6", "Icmp6", "Udp6", "UdpLite6"):
                if key.startswith(prefix):
                    snap.snmp[f"{prefix}.{key[len(prefix):]}"] = value
                    break
    except OSError:
        pass  # IPv6 disabled in this namespace: no snmp6, nothing to report
    try:
        if links is None:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                links = list(ipr.get_links())
        for msg in links:
            stats = msg.get("IFLA_STATS64") or msg.get("IFLA_STATS")
            name = msg.get("IFLA_IFNAME")
            if stats and name:
                snap.nic[name] = {k: int(v) for k, v in dict(stats).items()}
    except Exception as exc:  # netlink refused: report it, keep the rest
        snap.errors.append(f"interface statistics: {exc}")
    snap.conntrack_count = _read_int("/proc/sys/net/netfilter/nf_conntrack_count")
    snap.conntrack_max = _read_int("/proc/sys/net/netfilter/nf_conntrack_max")
    try:
        snap.conntrack_stat = procfs.parse_nf_conntrack_stat(_read(procfs.net_path("stat/nf_conntrack")))
    except OSError:
        pass  # nf_conntrack not loaded: count/max are None too
    try:
        snap.sockstat = parse_sockstat(_read(procfs.net_path("sockstat")))
    except OSError:
        pass
    for key in SYSCTLS:
        try:
            snap.sysctls[key.replace("/", ".")] = " ".join(_read(f"/proc/sys/{key}").split())
        except OSError:
            continue
    if with_sockets:
        for proto, name in (("udp", "udp"), ("udp", "udp6"), ("udplite", "udplite")):
            try:
                snap.udp_socket_drops.update(parse_proc_net_udp(_read(procfs.net_path(name)), proto))
            except OSError:
                continue
    return snap


def read_netns(ns: netns_mod.Netns, with_sockets: bool = True) -> NetnsSnapshot:
    """Counters of namespace `ns` now. ProbeUnavailable if it cannot be entered."""
    return netns_mod.run_in(ns, netns_here, ns, with_sockets)


def socket_owners(inodes: set[int], proc: str = "/proc") -> dict[int, dict]:
    """Socket inode -> {"pid", "name"} for the processes holding them (best effort)."""
    found: dict[int, dict] = {}
    if not inodes:
        return found
    wanted = {f"socket:[{i}]": i for i in inodes}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            inode = wanted.get(target)
            if inode is not None and inode not in found:
                try:
                    comm = _read(f"{proc}/{pid}/comm").strip()
                except OSError:
                    comm = None
                found[inode] = {"pid": int(pid), "name": comm}
        if len(found) == len(wanted):
            break
    return found
