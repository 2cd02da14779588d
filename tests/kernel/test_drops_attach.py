"""`trace drops --attach PATH`: every attach path this kernel has counts the
same drops as the kernel's own counters, names reasons with this kernel's
numbers, and leaves nothing behind; a path it lacks is one line, exit 69.

Per path, one agent run sees UDP to a closed port over IPv4 and IPv6 (against
/proc/net/snmp{,6} NoPorts) and an iptables DROP (against the rule's
counter); then a second run attaches again and both leave no BPF program and
no kprobe of ours.
"""

import os
import re
import subprocess

import pytest

from agent_proc import NETAGENT, AgentProcess
from lab import veth_pair
from netagent.bpfinfo import loaded_program_ids
from netagent.btf import kernel_btf
from netagent.probes.drops import ATTACH_MODES, DropSensor
from timescale import scaled

PATHS = [m for m in ATTACH_MODES if m != "auto"]
SENDER = r"""
import socket, sys
family, src, dst, dport, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 40100))
sent = 0
while sent < count:
    try:
        s.sendto(b"x" * 64, (dst, dport))
        sent += 1
    except OSError:
        pass  # an ICMP error reported on this unconnected socket: send again
print(sent)
"""
# What NETFILTER_DROP is (enum skb_drop_reason) on the kernels we ran, by
# release prefix: the agent must read it from the kernel, this only checks that
# it did. Even one series differs: 6.1.0-57 (6.1.192) says 7, while the 6.1
# tracefs fixture (tests/fixtures/tracefs/kfree_skb-6.1.format) says 8.
NETFILTER_DROP_BY_KERNEL = {"6.1.0-57-": 7, "6.18.": 12}


@pytest.fixture
def pair(netns_factory):
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.76.0.1/24", "10.76.0.2/24", a_addr6="fd76::1/64", b_addr6="fd76::2/64")
    return client, server


def noports(ns, family):
    if family == "4":
        lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
        return int(lines[1][lines[0].index("NoPorts")])
    return next(int(v) for k, v in (ln.split() for ln in ns.read_proc("net/snmp6").splitlines()) if k == "Udp6NoPorts")


def send(ns, family, src, dst, dport, count):
    out = ns.run("python3", "-c", SENDER, family, src, dst, str(dport), str(count), timeout=scaled(120))
    assert int(out.stdout) == count


def probe_traces():
    """Our kprobes as the kernel lists them: tracefs kprobe_events lines and,
    where debugfs shows them, every registered kprobe (perf ones included)."""
    found = []
    for path in ("/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events",
                 "/sys/kernel/debug/kprobes/list"):
        try:
            with open(path) as f:
                found += [f"{path}: {line.strip()}" for line in f if line.strip()]
        except OSError:
            continue
    return found


def held_program_ids(pid: int) -> set[int]:
    """BPF programs a process and its children hold open (fdinfo prog_id)."""
    family, ids = {pid}, set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                if entry.isdigit() and int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    family.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    for p in family:
        try:
            fds = os.listdir(f"/proc/{p}/fdinfo")
        except OSError:
            continue
        for fd in fds:
            try:
                with open(f"/proc/{p}/fdinfo/{fd}") as f:
                    ids |= {int(ln.split()[1]) for ln in f if ln.startswith("prog_id:")}
            except OSError:
                continue
    return ids


def kprobe_lines(lines, function):
    return [ln for ln in lines if re.search(rf"\b{re.escape(function)}\b", ln)]


def start(server, mode):
    agent = AgentProcess("trace", "drops", "--netns", server.name, "--attach", mode, "--interval", "0.5",
                         "--output", "json")
    first = agent.wait_for_stderr("netagent", timeout=scaled(60))
    return agent, first


@pytest.mark.parametrize("mode", PATHS)
def test_each_attach_path_counts_what_the_kernel_counts(pair, mode):
    client, server = pair
    status = DropSensor(attach=mode).check()
    if not status.can_run:
        # this kernel lacks the path: one line naming it, exit 69, before any BPF work
        r = subprocess.run([NETAGENT, "trace", "drops", "--attach", mode, "--duration", "1"],
                           capture_output=True, text=True, timeout=scaled(60))
        assert r.returncode == 69, r.stderr
        assert r.stderr.count("\n") == 1 and f"attach path {mode} is not available on this kernel" in r.stderr
        assert r.stdout == ""
        return
    probes = probe_traces()
    server.run("iptables", "-A", "INPUT", "-p", "udp", "--dport", "5555", "-j", "DROP")
    agent, first = start(server, mode)
    try:
        if mode == "tp_btf" and "refused by the kernel" in first and "verifier" in first:
            # known: the tp_btf program with the --netns filter is refused (dev pointer loses its type)
            pytest.xfail(f"tp_btf with a netns filter: {first.strip()}")
        # the first line says which path was taken
        assert first.startswith(f"netagent: attached to {status.attach_path} "), first
        ours = held_program_ids(agent.proc.pid)
        assert ours, "the agent holds no BPF program"
        before = {f: noports(server, f) for f in "46"}
        send(client, "4", "10.76.0.1", "10.76.0.2", 9, 300)
        send(client, "6", "fd76::1", "fd76::2", 9, 200)
        send(client, "4", "10.76.0.1", "10.76.0.2", 5555, 100)
        kernel = {f: noports(server, f) - before[f] for f in "46"}
    finally:
        code, _ = agent.stop(timeout=scaled(10))
    assert code == 0, "".join(agent.stderr_lines)
    events = agent.events()
    assert kernel == {"4": 300, "6": 200}

    def counted(reason, family, port):
        return sum(e["netagent"]["drop"]["count"] for e in events
                   if e["event"]["reason"] == reason and e["network"]["type"] == f"ipv{family}"
                   and e["network"].get("transport") == "udp" and e["destination"]["port"] == port)

    assert counted("NO_SOCKET", "4", 9) == kernel["4"]
    assert counted("NO_SOCKET", "6", 9) == kernel["6"]
    rule = next(ln for ln in server.run("iptables", "-L", "INPUT", "-v", "-x", "-n").stdout.splitlines()
                if "dpt:5555" in ln)
    assert counted("NETFILTER_DROP", "4", 5555) == int(rule.split()[0]) == 100
    # reason numbers are this kernel's own
    value = {v: k for k, v in kernel_btf().enum("skb_drop_reason").items()}["SKB_DROP_REASON_NETFILTER_DROP"]
    raws = {e["netagent"]["drop"]["reason_raw"] for e in events if e["event"]["reason"] == "NETFILTER_DROP"}
    assert raws == {value}
    for prefix, known in NETFILTER_DROP_BY_KERNEL.items():
        if os.uname().release.startswith(prefix):
            assert value == known
    assert "lost: kernel 0" in "".join(agent.stderr_lines)

    # clean detach, then attach again: the second run works and also leaves nothing
    assert not ours & loaded_program_ids()
    function = status.attach_path.split()[-1]
    assert kprobe_lines(probe_traces(), function) == kprobe_lines(probes, function)
    again, first = start(server, mode)
    ours = held_program_ids(again.proc.pid)
    code, _ = again.stop(timeout=scaled(10))
    assert first.startswith(f"netagent: attached to {status.attach_path} ") and code == 0, again.stderr_lines
    assert ours and not ours & loaded_program_ids()
    assert kprobe_lines(probe_traces(), function) == kprobe_lines(probes, function)


def test_doctor_lists_every_attach_path_and_the_one_taken():
    import json

    out = subprocess.run([NETAGENT, "doctor", "-o", "json"], capture_output=True, text=True, timeout=scaled(300))
    report = json.loads(out.stdout)
    (drops,) = [s for s in report["sensors"] if s["name"] == "drops"]
    paths = drops["details"]["attach_paths"]
    assert set(paths) == set(PATHS)
    for mode in PATHS:
        expected = DropSensor(attach=mode).check()
        assert paths[mode] == (expected.attach_path if expected.can_run else
                               "unavailable: " + expected.reason.split(": ", 1)[1])
    assert drops["attach_path"] == next(p for p in paths.values() if not p.startswith("unavailable"))
