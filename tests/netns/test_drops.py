"""`netagent trace drops` against real drops in namespaces the tests create.

Every count is compared with the kernel's own independent counter for the
same window: /proc/net/snmp{,6} NoPorts, or the iptables rule's counter.
"""

import os
import re
import signal
import time

import pytest

from agent_proc import AgentProcess
from lab import veth_pair
from timescale import scaled

SENDER = r"""
import socket, sys
family, src, sport, dst, dport, count = sys.argv[1:7]
fam = socket.AF_INET6 if family == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((src, int(sport)))
payload = b"x" * 64
n = int(count)
sent = 0
while sent < n:
    try:
        s.sendto(payload, (dst, int(dport)))
        sent += 1
    except (BlockingIOError, ConnectionRefusedError, OSError):
        pass  # ICMP errors surface on later sends of an unconnected socket only rarely; retry
print(sent)
"""


@pytest.fixture
def pair(netns_factory):
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.77.0.1/24", "10.77.0.2/24", a_addr6="fd77::1/64", b_addr6="fd77::2/64")
    return client, server


def snmp_counter(ns, family: str) -> int:
    if family == "4":
        lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
        header, values = lines[0], lines[1]
        return int(values[header.index("NoPorts")])
    for line in ns.read_proc("net/snmp6").splitlines():
        name, value = line.split()
        if name == "Udp6NoPorts":
            return int(value)
    raise AssertionError("Udp6NoPorts missing")


def send(ns, family, src, sport, dst, dport, count):
    out = ns.run("python3", "-c", SENDER, family, src, str(sport), dst, str(dport), str(count), timeout=scaled(120))
    assert int(out.stdout) == count


def run_agent(server, *extra):
    agent = AgentProcess("trace", "drops", "--netns", server.name, "--output", "json", "--interval", "0.5", *extra)
    # a filtered program compiles cold (its namespace is new): ~11 s at load 17 on 2 CPUs
    line = agent.wait_for_stderr("attached to", timeout=scaled(90))
    assert re.search(r"attached to (tp_btf|raw_tracepoint|tracepoint) skb:kfree_skb", line), line
    return agent


def flows(events, reason, transport):
    return [e for e in events if e["event"]["reason"] == reason and e.get("network", {}).get("transport") == transport]


@pytest.mark.parametrize("family,src,dst", [("4", "10.77.0.1", "10.77.0.2"), ("6", "fd77::1", "fd77::2")])
def test_udp_to_closed_port_matches_noports_exactly(pair, family, src, dst):
    client, server = pair
    agent = run_agent(server)
    try:
        before = snmp_counter(server, family)
        send(client, family, src, 40001, dst, 9, 500)
        time.sleep(0.3)
        after = snmp_counter(server, family)
    finally:
        code, elapsed = agent.stop()
    assert code == 0, agent.stderr_lines
    noports = after - before
    assert noports == 500
    matched = flows(agent.events(), "NO_SOCKET", "udp")
    assert sum(e["netagent"]["drop"]["count"] for e in matched) == noports
    for e in matched:
        assert e["source"] == {"ip": src, "port": 40001}
        assert e["destination"] == {"ip": dst, "port": 9}
        assert e["network"]["type"] == ("ipv4" if family == "4" else "ipv6")
        assert e["netagent"]["drop"]["interface"] == "eth0"
        assert e["netagent"]["drop"]["netns"] == server.inode
        assert e["netagent"]["drop"]["location"].startswith("__udp")
    seqs = [e["event"]["sequence"] for e in agent.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    summary = "".join(agent.stderr_lines)
    assert re.search(rf"\b{noports}\s+\d+ B\s+NO_SOCKET", summary), summary


def test_storm_of_100k_datagrams_is_counted_exactly(pair):
    client, server = pair
    agent = run_agent(server, "--reason", "NO_SOCKET", "--proto", "udp")
    try:
        before = snmp_counter(server, "4")
        send(client, "4", "10.77.0.1", 40002, "10.77.0.2", 9, 120_000)
        time.sleep(0.5)
        after = snmp_counter(server, "4")
    finally:
        code, _ = agent.stop()
    assert code == 0
    events = agent.events()
    counted = sum(e["netagent"]["drop"]["count"] for e in flows(events, "NO_SOCKET", "udp"))
    assert after - before > 100_000
    assert counted == after - before
    assert all(e["event"]["reason"] == "NO_SOCKET" for e in events)  # the --reason filter held
    assert "lost: kernel 0" in "".join(agent.stderr_lines)


MANY_PORTS_SENDER = r"""
import socket, sys
src, dst, first, ports, each = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 40003))
for port in range(first, first + ports):
    for _ in range(each):
        s.sendto(b"x" * 64, (dst, port))
print(ports * each)
"""


def test_flows_past_flow_events_are_summed_up_and_still_add_up_to_noports(pair):
    client, server = pair
    # one interval for the whole test (the final flush at stop drains it): 400 flows in one poll
    agent = AgentProcess("trace", "drops", "--netns", server.name, "--output", "json", "--interval", "600",
                         "--reason", "NO_SOCKET", "--proto", "udp", "--flow-events", "50")
    agent.wait_for_stderr("attached to", timeout=scaled(90))
    try:
        before = snmp_counter(server, "4")
        out = client.run("python3", "-c", MANY_PORTS_SENDER, "10.77.0.1", "10.77.0.2", "21000", "400", "3",
                         timeout=scaled(120))
        assert int(out.stdout) == 1200
        after = snmp_counter(server, "4")
    finally:
        code, _ = agent.stop()
    assert code == 0, agent.stderr_lines
    assert after - before == 1200
    events = flows(agent.events(), "NO_SOCKET", "udp")
    single = [e for e in events if "flows" not in e["netagent"]["drop"]]
    summaries = [e for e in events if "flows" in e["netagent"]["drop"]]
    assert len(single) == 50 and summaries, [e["netagent"]["drop"] for e in events]
    assert sum(e["netagent"]["drop"]["count"] for e in events) == after - before
    assert len(single) + sum(e["netagent"]["drop"]["flows"] for e in summaries) == 400
    for e in single:
        assert e["source"] == {"ip": "10.77.0.1", "port": 40003} and e["netagent"]["drop"]["count"] == 3
    for e in summaries:
        drop = e["netagent"]["drop"]
        assert "source" not in e and "destination" not in e
        assert drop["netns"] == server.inode and drop["interface"] == "eth0"
        assert drop["location"].startswith("__udp")
    assert re.search(r"\b1200\s+\d+ B\s+NO_SOCKET", "".join(agent.stderr_lines))


def test_iptables_drop_matches_rule_counter(pair):
    client, server = pair
    server.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "5555", "-j", "DROP")
    agent = run_agent(server)
    try:
        send(client, "4", "10.77.0.1", 40003, "10.77.0.2", 5555, 300)
        time.sleep(0.3)
    finally:
        code, _ = agent.stop()
    assert code == 0
    listing = server.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout
    rule = next(ln for ln in listing.splitlines() if "dpt:5555" in ln)
    rule_packets = int(rule.split()[0])
    assert rule_packets == 300
    matched = [e for e in flows(agent.events(), "NETFILTER_DROP", "udp") if e["destination"]["port"] == 5555]
    assert sum(e["netagent"]["drop"]["count"] for e in matched) == rule_packets
    # iptables-legacy drops in nf_hook_slow, iptables-nft in nft_do_chain, which Debian's
    # kernels have in the nf_tables module ("nft_do_chain+0x4a [nf_tables]")
    locations = {e["netagent"]["drop"]["location"] for e in matched}
    assert locations and all(re.fullmatch(r"(nf_hook_slow|nft_do_chain)\+0x[0-9a-f]+( \[nf_tables\])?", loc)
                             for loc in locations), locations


def programs_held_by(pid: int) -> set[int]:
    """IDs of the BPF programs a process holds descriptors of (/proc/PID/fdinfo prog_id)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                ids.update(int(ln.split()[1]) for ln in f if ln.startswith("prog_id:"))
        except OSError:
            continue  # closed in between
    return ids


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_0_quickly_and_leaves_no_bpf_program(pair, sig):
    from netagent.bpfinfo import loaded_program_ids

    _, server = pair
    agent = run_agent(server)
    # Other processes on the node load and unload programs too: judge only the ones the agent holds.
    ours = programs_held_by(agent.proc.pid)
    assert ours, "the sensor should have loaded a program"
    code, elapsed = agent.stop(sig)
    assert code == 0
    assert elapsed < 5
    assert not ours & loaded_program_ids()
    assert any("drops by reason" in ln for ln in agent.stderr_lines)


def test_not_root_exits_77_with_one_line():
    import subprocess

    from agent_proc import NETAGENT
    from unprivileged import run_as_nobody

    r = run_as_nobody([NETAGENT, "trace", "drops", "--duration", "1"])
    assert r.returncode == 77, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "CAP_BPF" in r.stderr
