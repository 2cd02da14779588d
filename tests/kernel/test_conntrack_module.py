"""nf_conntrack loaded after the agent started (a freshly booted node).

The module is unloaded first; `trace conntrack` then waits for it, doctor
says "waiting for nf_conntrack", and once a rule loads the module the sensor
attaches (kprobes included, where the kernel has them) at its next interval
and says so in an event. Counters count from the module's load, so the
agent's sums equal the kernel's totals. On SIGTERM nothing of ours stays in
the kernel, and the next run attaches again (module loaded before start).
"""

import json
import os
import subprocess

import pytest

from agent_proc import NETAGENT, AgentProcess
from kmod import ensure_nf_conntrack, is_module, unload_nf_conntrack, wait_for
from lab import send_new_udp_flows, veth_pair
from netagent.conntrack.stats import parse
from netagent.probes.conntrack import WAITING, fentry_refused_reason, kprobes_unavailable_reason
from test_drops_attach import held_program_ids, kprobe_lines, probe_traces
from timescale import scaled

needs_module = pytest.mark.skipif(not is_module(), reason="nf_conntrack as a loadable module (built into this kernel)")

FLOWS = 40
PROBED = ("__nf_conntrack_confirm", "nf_ct_resolve_clash", "early_drop", "__nf_conntrack_alloc")


def totals(ns) -> dict[str, int]:
    return parse(ns.read_proc("net/stat/nf_conntrack")).totals()


def summed(events, name):
    return sum(e["netagent"]["conntrack"]["deltas"][name] or 0 for e in events if e["event"]["action"] == "counters")


def expected_return_probe() -> str | None:
    """What auto attaches on __nf_conntrack_confirm's return here: fexit where the kernel takes
    trampolines, else a kretprobe, else nothing (correlation). Asked once the module is loaded."""
    if fentry_refused_reason("__nf_conntrack_confirm") is None:
        return "fexit __nf_conntrack_confirm"
    return "kretprobe __nf_conntrack_confirm" if kprobes_unavailable_reason() is None else None


def doctor_conntrack() -> dict:
    out = subprocess.run([NETAGENT, "doctor", "-o", "json"], capture_output=True, text=True, timeout=scaled(300))
    return next(s for s in json.loads(out.stdout)["sensors"] if s["name"] == "conntrack")


@needs_module
@pytest.mark.timeout(900)
def test_the_sensor_waits_for_nf_conntrack_then_attaches_and_counts_from_the_load(netns_factory):
    client, server = netns_factory(), netns_factory()
    veth_pair(client, server, "10.75.0.1/24", "10.75.0.2/24")
    unload_nf_conntrack(timeout=scaled(60))
    status = doctor_conntrack()
    assert status["can_run"] and status["details"]["state"] == WAITING, status

    probes = probe_traces()
    interval = 1.0
    agent = AgentProcess("trace", "conntrack", "--netns", server.name, "--interval", f"{interval}s", "-o", "json")
    try:
        agent.wait_for_stderr(WAITING, timeout=scaled(60))
        assert not held_program_ids(agent.proc.pid)  # nothing attached while waiting
        # a rule that uses conntrack loads the module, as kube-proxy would
        server.run("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT")
        line = agent.wait_for_stderr("nf_conntrack loaded: conntrack sensor attached", timeout=scaled(interval + 120))
        # fentry/fexit on the module's functions need its BTF, which appeared only now
        probe = expected_return_probe()
        if probe:
            assert probe in line, line
        assert wait_for(lambda: any(b'"sensor-attached"' in ln for ln in agent.stdout_lines), scaled(10))
        assert held_program_ids(agent.proc.pid) or not probe
        # unreplied UDP entries expire after nf_conntrack_udp_timeout (30 s); under TCG with
        # a CPU hog the last counters event came later than that and showed 39 of 40 (a
        # fresh-clone run). Long-lived entries keep `entries` about the flows, not the clock.
        server.run("sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600")
        send_new_udp_flows(client, "10.75.0.2", 9999, FLOWS)
        assert wait_for(lambda: sum(1 for ln in agent.stdout_lines if b'"counters"' in ln) >= 2, scaled(30))
        ours = held_program_ids(agent.proc.pid)
    finally:
        code, _ = agent.stop(timeout=scaled(30))
    kernel = totals(server)  # everything since the module loaded
    events = agent.events()
    assert code == 0, "".join(agent.stderr_lines)
    (attached,) = [e for e in events if e["event"]["action"] == "sensor-attached"]
    assert attached["netagent"]["conntrack"]["attach_path"] in attached["message"]
    for name in ("drop", "early_drop", "insert_failed", "invalid"):
        assert summed(events, name) == kernel[name], name
    counters = [e for e in events if e["event"]["action"] == "counters"]
    assert counters[-1]["netagent"]["conntrack"]["entries"] >= FLOWS
    # clean detach
    assert not ours & set(_loaded())
    for function in PROBED:
        assert kprobe_lines(probe_traces(), function) == kprobe_lines(probes, function)


@pytest.mark.timeout(900)
def test_with_the_module_loaded_before_start_it_attaches_at_once_and_again():
    """The other order, twice in a row: both runs attach at start and clean up."""
    ensure_nf_conntrack(timeout=scaled(30))
    probes = probe_traces()
    for _ in range(2):
        agent = AgentProcess("trace", "conntrack", "--interval", "1s", "-o", "json")
        try:
            line = agent.wait_for_stderr("watching conntrack in", timeout=scaled(120))
            probe = expected_return_probe()
            if probe:
                assert probe in line, line
            ours = held_program_ids(agent.proc.pid)
        finally:
            code, _ = agent.stop(timeout=scaled(30))
        assert code == 0 and not [e for e in agent.events() if e["event"]["action"] == "sensor-attached"]
        assert not ours & set(_loaded())
        for function in PROBED:
            assert kprobe_lines(probe_traces(), function) == kprobe_lines(probes, function)
    assert os.path.exists("/proc/net/stat/nf_conntrack")


def _loaded():
    from netagent.bpfinfo import loaded_program_ids

    return loaded_program_ids()
