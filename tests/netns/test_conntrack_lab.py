"""Conntrack labs shared by the conntrack namespace tests, and checks of the
lab itself (reading counters inside a namespace).

The kernel's counters are always read independently of the agent, with
`ip netns exec NS cat /proc/net/stat/nf_conntrack` (another process, which
enters the namespace the way an operator would).
"""

import contextlib
import time

import pytest

from kmod import ensure_nf_conntrack
from lab import send_new_udp_flows, veth_pair
from netagent.conntrack.namespaces import read_snapshot
from netagent.conntrack.stats import delta, parse
from netagent.netns import current, resolve
from timescale import scaled

CONNTRACK_MAX = "/proc/sys/net/netfilter/nf_conntrack_max"

# The kernel selftest pattern (conntrack_clash.sh / udpclash.c): the first
# packet of a new flow sent from one socket by several CPUs at the same
# instant. Processes instead of threads (no GIL between them), pinned to
# different CPUs, released by the clock: round r fires at t0 + r * gap.
UDP_CLASH = r"""
import os, socket, sys, time
dst, port, rounds, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
socks = []
for _ in range(rounds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    socks.append(s)
t0, gap = time.monotonic() + 0.05, 0.002
pids = []
for w in range(workers):
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {w % os.cpu_count()})
        except OSError:
            pass
        for r, s in enumerate(socks):
            while time.monotonic() < t0 + r * gap:
                pass
            try:
                s.sendto(b"q%d" % r, (dst, port))
            except OSError:
                pass
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""

# The same race with identical TCP SYNs (raw sockets, one per process): TCP
# does not allow clash resolution, so a lost race is an insert failure and a
# dropped packet (insert_failed + drop).
SYN_RACE = r"""
import os, socket, struct, sys, time
src, dst, port, rounds, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def checksum(data):
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
def syn(sport):
    hdr = struct.pack("!HHIIBBHHH", sport, port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    return hdr[:16] + struct.pack("!H", checksum(pseudo + hdr)) + hdr[18:]
base = int(sys.argv[6])
packets = [syn(base + r) for r in range(rounds)]
t0, gap = time.monotonic() + 0.05, 0.002
pids = []
for w in range(workers):
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {w % os.cpu_count()})
        except OSError:
            pass
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
        for r, p in enumerate(packets):
            while time.monotonic() < t0 + r * gap:
                pass
            s.sendto(p, (dst, 0))
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
"""


def kernel_counters(ns):
    """The namespace's counters as the kernel prints them, read by another process."""
    return parse(ns.read_proc("net/stat/nf_conntrack"))


def settled_counters(ns, quiet=0.1, timeout=5.0):
    """The counters once they stopped moving: packets still queued in a
    backlog (softirq deferred to ksoftirqd) are processed before we compare."""
    last = kernel_counters(ns)
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = kernel_counters(ns)
        if now.per_cpu == last.per_cpu:
            return now
        last = now
    return last


def kernel_count(ns) -> int:
    return int(ns.run("cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)


@contextlib.contextmanager
def conntrack_max(value: int):
    """Lower the GLOBAL nf_conntrack_max for as short a time as possible and put
    back the exact original value whatever happens (it limits every namespace
    on the node, including other tests' ones)."""
    with open(CONNTRACK_MAX) as f:
        original = f.read().strip()
    try:
        with open(CONNTRACK_MAX, "w") as f:
            f.write(str(value))
        yield
    finally:
        with open(CONNTRACK_MAX, "w") as f:
            f.write(original)
        with open(CONNTRACK_MAX) as f:
            assert f.read().strip() == original


@pytest.fixture
def ct_pair(netns_factory):
    """client -> server over a veth; the server tracks connections (an
    iptables rule using conntrack state makes conntrack active there)."""
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.78.0.1/24", "10.78.0.2/24")
    server.run("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
    client.run("ping", "-c1", "-q", "-W", "2", "10.78.0.2")
    return client, server


NFT_DNAT = """
table ip t {
  chain lb {
    meta l4proto udp dnat to numgen random mod 3 map { 0 : 10.79.2.1 . 9000, 1 : 10.79.2.1 . 9001, 2 : 10.79.2.1 . 9002 }
  }
  chain prerouting {
    type nat hook prerouting priority dstnat
    udp dport 22111 counter jump lb
  }
}
"""


@pytest.fixture
def clash_lab(netns_factory):
    """client -- router -- server, as in the kernel selftest conntrack_clash.sh:
    the router DNATs UDP 22111 to one of three backends chosen at random."""
    client, router, server = netns_factory(), netns_factory(), netns_factory()
    veth_pair(client, router, "10.79.1.1/24", "10.79.1.99/24")
    veth_pair(server, router, "10.79.2.1/24", "10.79.2.99/24", b_if="eth1")
    client.run("ip", "route", "add", "default", "via", "10.79.1.99")
    server.run("ip", "route", "add", "default", "via", "10.79.2.99")
    router.sysctl("net.ipv4.ip_forward", 1)
    router.run("nft", "-f", "-", input=NFT_DNAT)
    client.run("ping", "-c1", "-q", "-W", "2", "10.79.2.1")
    return client, router, server


@pytest.mark.timeout(scaled(60))
def test_counters_are_read_inside_the_namespace_not_the_agents(ct_pair):
    """/proc/self/net would show the agent's main thread's namespace; the
    reader must see the target's, exactly as another process inside it does."""
    client, server = ct_pair
    send_new_udp_flows(client, "10.78.0.2", 9999, 5)
    ns = resolve(server.name)
    ours = read_snapshot(ns)
    theirs = kernel_counters(server)
    assert ours.table.per_cpu == theirs.per_cpu
    assert ours.count == kernel_count(server) >= 6  # ping + 5 UDP flows
    assert ours.table.entries == ours.count
    host = read_snapshot(current())
    assert host.netns.inode != ns.inode
    assert ours.active and ours.max == int(open(CONNTRACK_MAX).read())


@pytest.mark.timeout(scaled(60))
def test_conntrack_max_is_restored_when_the_block_fails():
    original = open(CONNTRACK_MAX).read().strip()
    with pytest.raises(RuntimeError):
        with conntrack_max(int(original) - 1):
            assert open(CONNTRACK_MAX).read().strip() == str(int(original) - 1)
            raise RuntimeError("boom")
    assert open(CONNTRACK_MAX).read().strip() == original


def summed(events, name: str) -> int:
    return sum(e["netagent"]["conntrack"]["deltas"][name] or 0 for e in events
               if e["event"]["action"] == "counters")


def wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


@pytest.mark.timeout(scaled(60))
def test_a_watched_namespace_that_disappears_is_dropped_with_a_note(netns_factory):
    from netagent.probes.conntrack import ConntrackSensor

    ensure_nf_conntrack()  # loaded before the agent starts (tests/kernel covers after)
    ns = netns_factory()
    notes = []
    sensor = ConntrackSensor(netns=[ns.name], per_packet="off", announce=notes.append)
    sensor.attach()
    try:
        assert len(sensor.poll()) == 1
        ns.delete()
        assert sensor.poll() == []
        assert sensor.namespaces == []
        assert any("stop watching netns" in n and ns.name in n for n in notes), notes
    finally:
        sensor.detach()
