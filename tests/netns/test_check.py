"""`netagent check` against namespace labs this test builds (root).

    A (10.9.0.1) eth0 ==veth== eth0 (10.9.0.2) B      underlay, MTU 1500
    A vx0 10.10.0.1  ~~VXLAN 42, remote/local, no dev~~  vx0 10.10.0.2 B

VXLAN is created the way CNIs do it: with remote/local and without `dev`,
so check has to find the underlay by the route to the remote.
"""

import json
import socket
import struct
import subprocess
import time

import pytest

from lab import veth_pair

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]


def run_check(netagent_bin, *args, timeout=60):
    proc = subprocess.run([netagent_bin, "check", "--output", "json", *args], capture_output=True, text=True,
                          timeout=timeout)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc, events


def findings(events, rule=None):
    out = [e["netagent"]["finding"] for e in events if e["event"]["dataset"] == "netagent.finding"]
    return [f for f in out if rule is None or f["rule"] == rule]


def vxlan_lab(netns_factory, mtu=None):
    a, b = netns_factory(), netns_factory()
    veth_pair(a, b, "10.9.0.1/24", "10.9.0.2/24")
    for ns, me, peer, inner in ((a, "10.9.0.1", "10.9.0.2", "10.10.0.1/24"),
                                (b, "10.9.0.2", "10.9.0.1", "10.10.0.2/24")):
        ns.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", peer, "local", me, "dstport", "4789")
        if mtu:
            ns.run("ip", "link", "set", "vx0", "mtu", str(mtu))
        ns.run("ip", "addr", "add", inner, "dev", "vx0")
        ns.run("ip", "link", "set", "vx0", "up")
    return a, b


def test_vxlan_mtu_too_big_is_reported(netns_factory, netagent_bin):
    a, _ = vxlan_lab(netns_factory)
    proc, events = run_check(netagent_bin, "--netns", a.name, "--window", "300ms")
    assert proc.returncode == 1, proc.stderr
    (f,) = findings(events, "overlay-mtu")
    ev = f["evidence"]
    assert ev["device"] == "vx0" and ev["configured_mtu"] == 1500
    assert ev["underlay_device"] == "eth0" and ev["underlay_mtu"] == 1500
    assert ev["underlay_found_by"] == "route-to-remote"
    assert ev["overhead"] == 50 and ev["expected_mtu"] == 1450
    assert f["netns"]["name"] == a.name and f["severity"] == "medium"  # misconfigured, not yet seen hurting
    assert "fragments_created" not in ev
    summary = events[-1]
    assert summary["event"]["dataset"] == "netagent.check" and summary["netagent"]["check"]["exit_code"] == 1
    # the inventory is part of the report
    inv = [e["netagent"]["overlay"]["interface"] for e in events if e["event"]["dataset"] == "netagent.overlay"]
    vx = next(i for i in inv if i["name"] == "vx0")
    assert vx["type"] == "vxlan" and vx["vni"] == 42 and vx["port"] == 4789 and vx["mtu_exceeds"] is True


def test_fragments_on_the_underlay_become_evidence(netns_factory, netagent_bin):
    a, _ = vxlan_lab(netns_factory)
    # 1472 + 28 = a 1500-byte inner packet without DF: fits vx0 (1500), and
    # once wrapped (1550) the underlay (1500) has to fragment it.
    ping = a.popen("ping", "-q", "-c", "60", "-i", "0.05", "-s", "1472", "-M", "dont", "10.10.0.2",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        proc, events = run_check(netagent_bin, "--netns", a.name, "--window", "1s")
    finally:
        out, _ = ping.communicate(timeout=30)
    assert " 0 received" not in out, out  # the traffic really crossed the tunnel
    assert proc.returncode == 1, proc.stderr
    (f,) = findings(events, "overlay-mtu")
    assert f["severity"] == "high"
    assert f["evidence"]["fragments_created"] >= 2  # every 1550-byte outer packet makes two fragments
    assert f["evidence"]["expected_mtu"] == 1450
    assert "fragments created" in f["cause"]
    counters = next(e["netagent"]["host"] for e in events if e["event"]["action"] == "netns-counters")
    assert counters["snmp"]["ip_frag_creates"] == f["evidence"]["fragments_created"]


def test_correct_mtu_reports_nothing(netns_factory, netagent_bin):
    a, _ = vxlan_lab(netns_factory, mtu=1450)
    # full-size inner packets (1422 + 28 = 1450) cross without fragmenting
    a.run("ping", "-q", "-c", "5", "-i", "0.05", "-s", "1422", "-M", "do", "10.10.0.2")
    proc, events = run_check(netagent_bin, "--netns", a.name, "--window", "300ms")
    assert proc.returncode == 0, (proc.stderr, findings(events))
    assert findings(events) == []
    vx = next(e["netagent"]["overlay"]["interface"] for e in events
              if e["event"]["dataset"] == "netagent.overlay" and e["netagent"]["overlay"]["interface"]["name"] == "vx0")
    assert vx["expected_mtu"] == 1450 and vx["mtu_exceeds"] is False


def test_table_output_names_the_cause(netns_factory, netagent_bin):
    a, _ = vxlan_lab(netns_factory)
    proc = subprocess.run([netagent_bin, "check", "--netns", a.name, "--window", "200ms", "-o", "table"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "FINDINGS (1)" in proc.stdout and "[overlay-mtu]" in proc.stdout
    assert "largest inner MTU is 1450" in proc.stdout
    assert "\x1b[" not in proc.stdout  # no colour codes when stdout is not a terminal


# --- conntrack -------------------------------------------------------------------------

NLA_F_NESTED = 0x8000


def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _tuple(kind: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes:
    ip = _nla(1 | NLA_F_NESTED, _nla(1, src) + _nla(2, dst))  # CTA_TUPLE_IP: CTA_IP_V4_SRC/DST
    proto = _nla(2 | NLA_F_NESTED, _nla(1, b"\x11") + _nla(2, struct.pack("!H", sport)) +
                 _nla(3, struct.pack("!H", dport)))  # CTA_TUPLE_PROTO: UDP, ports
    return _nla(kind | NLA_F_NESTED, ip + proto)


def fill_conntrack(n: int, first: int = 0) -> None:
    """Create n UDP conntrack entries in the calling thread's namespace through ctnetlink.

    Batched IPCTNL_MSG_CT_NEW messages without acks: a quarter of a million
    entries take about a second. Runs inside the namespace via run_in.
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    sock.bind((0, 0))
    dst = socket.inet_aton("10.201.0.1")
    batch, size = [], 0
    try:
        for i in range(first, first + n):
            src = struct.pack("!I", (10 << 24) | (100 << 16) | ((i // 60000) << 8) | 1)
            sport = 1024 + i % 60000
            body = (struct.pack("=BBH", socket.AF_INET, 0, 0) + _tuple(1, src, dst, sport, 53)
                    + _tuple(2, dst, src, 53, sport) + _nla(7, struct.pack("!I", 600)))  # CTA_TIMEOUT
            # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW; REQUEST | CREATE | EXCL
            msg = struct.pack("=IHHII", 16 + len(body), 1 << 8, 0x1 | 0x400 | 0x200, i, 0) + body
            batch.append(msg)
            size += len(msg)
            if size > 60000:
                sock.send(b"".join(batch))
                batch, size = [], 0
        if batch:
            sock.send(b"".join(batch))
    finally:
        sock.close()


def test_conntrack_nearly_full_is_reported(netns, netagent_bin):
    """Fill this namespace's table to 92% of the (global) nf_conntrack_max; the max is never changed."""
    from netagent import netns as netns_mod

    ns = netns_mod.resolve(netns.name)
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as f:
        limit = int(f.read())
    target = int(limit * 0.92)
    made, count = 0, 0
    # top up if some inserts were refused (e.g. another test lowered the global
    # max for a moment): each round uses fresh tuples
    for _ in range(4):
        netns_mod.run_in(ns, fill_conntrack, target - count, made)
        made += target - count
        count = int(netns.read_proc("sys/net/netfilter/nf_conntrack_count"))
        if count >= target:
            break
    assert count >= int(limit * 0.9), f"filled {count} of {limit}"
    proc, events = run_check(netagent_bin, "--netns", netns.name, "--window", "200ms")
    assert proc.returncode == 1, proc.stderr
    (f,) = findings(events, "conntrack-full")
    assert f["evidence"]["entries"] >= count - 10 and f["evidence"]["max"] == limit
    assert f["evidence"]["fill_pct"] >= 90.0
    assert f["evidence"]["recommended_max"] >= 2 * f["evidence"]["entries"]
    assert f["netns"]["name"] == netns.name
    # the threshold is the user's to choose
    proc, events = run_check(netagent_bin, "--netns", netns.name, "--window", "200ms",
                             "--threshold", "conntrack_fill_pct=95")
    assert findings(events, "conntrack-full") == [] and proc.returncode == 0, findings(events)


def test_ipv6_underlay_uses_the_ipv6_overhead(netns_factory, netagent_bin):
    a, b = netns_factory(), netns_factory()
    veth_pair(a, b, None, None, a_addr6="fd00:9::1/64", b_addr6="fd00:9::2/64")
    a.run("ip", "link", "add", "vx6", "type", "vxlan", "id", "7", "remote", "fd00:9::2", "local", "fd00:9::1",
          "dstport", "4789")
    a.run("ip", "link", "set", "vx6", "mtu", "1450")  # right for IPv4, 20 bytes too big over IPv6
    a.run("ip", "link", "set", "vx6", "up")
    proc, events = run_check(netagent_bin, "--netns", a.name, "--window", "200ms")
    assert proc.returncode == 1, proc.stderr
    (f,) = findings(events, "overlay-mtu")
    assert f["evidence"]["underlay_family"] == "ipv6" and f["evidence"]["overhead"] == 70
    assert f["evidence"]["expected_mtu"] == 1430 and f["evidence"]["excess_bytes"] == 20
