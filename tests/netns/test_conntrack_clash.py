"""The insert race: clashes resolved and inserts failed, counted exactly.

The lab is the kernel selftest's (conntrack_clash.sh): a router DNATs UDP to
random backends while a client sends the first packet of each new flow from
one socket on several CPUs at once. Whether two packets really meet in the
kernel is timing-dependent, so each test retries a few times and skips only
if the kernel never produced the event, saying so.
"""

import pytest

from lab import run_py
from netagent.conntrack.stats import delta
from netagent.probes.conntrack import ConntrackSensor
from test_conntrack_lab import (  # noqa: F401 - clash_lab is a fixture
    SYN_RACE,
    UDP_CLASH,
    clash_lab,
    kernel_counters,
    settled_counters,
    summed,
)
from timescale import scaled

ATTEMPTS = 5
ROUNDS = 150
WORKERS = 2


def race(sensor, router, send, wanted):
    """Run `send` until the kernel counts one of `wanted`; return (events, kernel deltas)."""
    events = []
    before = kernel_counters(router)
    for _ in range(ATTEMPTS):
        send()
        events += sensor.poll()
        kernel = delta(before, settled_counters(router))
        if any(kernel[name] for name in wanted):
            events += sensor.poll()  # the agent's last window ends after the kernel settled
            return events, kernel
    return events, None


@pytest.mark.timeout(scaled(120))
def test_udp_clash_through_dnat_is_counted_like_the_kernel(clash_lab):
    client, router, _ = clash_lab
    sensor = ConntrackSensor(netns=[router.name], interval=0.5)
    sensor.attach()
    try:
        events, kernel = race(sensor, router, lambda: run_py(client, UDP_CLASH, "10.79.1.99", 22111, ROUNDS, WORKERS),
                              ("clash_resolve", "insert_failed"))
    finally:
        sensor.detach()
    if kernel is None:
        pytest.skip(f"the kernel produced no UDP clash in {ATTEMPTS} x {ROUNDS} parallel sends")
    for name in ("clash_resolve", "insert_failed", "drop", "early_drop", "chaintoolong"):
        assert summed(events, name) == kernel[name], name
    if kernel["clash_resolve"]:
        resolved = [e for e in events if e["event"]["action"] == "clash-resolved"]
        assert resolved and all(e["event"]["kind"] == "event" for e in resolved)
        # from the counters, every kernel; per packet (no "deltas", a count and the flow) also
        # from the fexit program or kretprobe on nf_ct_resolve_clash where the kernel has them
        from_counters = [e for e in resolved if "deltas" in e["netagent"]["conntrack"]]
        assert sum(e["netagent"]["conntrack"]["deltas"]["clash_resolve"] for e in from_counters) == kernel[
            "clash_resolve"]
        per_packet = [e for e in resolved
                      if e["netagent"]["conntrack"].get("attribution") == sensor.per_packet_mode]
        if sensor.per_packet_mode in ("fentry", "kprobe") and per_packet:
            assert sum(e["netagent"]["conntrack"]["count"] for e in per_packet) == kernel["clash_resolve"]
            assert all(e["network"]["transport"] == "udp" for e in per_packet)
    if kernel["insert_failed"]:
        assert [e for e in events if e["event"]["action"] == "insert-failed"]


@pytest.mark.timeout(scaled(120))
def test_tcp_syn_race_is_an_insert_failure_with_its_flow(clash_lab):
    """TCP may not merge clashing entries: a lost race drops the packet
    (insert_failed + drop) in __nf_conntrack_confirm, which the drop sensor
    sees as NETFILTER_DROP; without trampolines or kprobes the flow comes by correlation."""
    client, router, _ = clash_lab
    router.run("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT")
    sensor = ConntrackSensor(netns=[router.name], interval=0.5)
    sensor.attach()
    base = iter(range(20000, 60000, ROUNDS))  # fresh source ports each attempt: a fresh flow each round
    try:
        events, kernel = race(
            sensor, router,
            lambda: run_py(client, SYN_RACE, "10.79.1.1", "10.79.2.1", 80, ROUNDS, WORKERS, next(base)),
            ("insert_failed",))
    finally:
        sensor.detach()
    if kernel is None:
        pytest.skip(f"the kernel produced no failed insert in {ATTEMPTS} x {ROUNDS} parallel SYNs")
    for name in ("insert_failed", "drop", "clash_resolve", "early_drop", "chaintoolong"):
        assert summed(events, name) == kernel[name], name
    alerts = [e for e in events if e["event"]["action"] == "insert-failed"]
    counter_alerts = [e for e in alerts if "deltas" in e["netagent"]["conntrack"]]
    assert counter_alerts and all(e["event"]["kind"] == "alert" for e in counter_alerts)
    assert sum(e["netagent"]["conntrack"]["deltas"]["insert_failed"] for e in counter_alerts) == kernel["insert_failed"]
    if sensor.per_packet_mode in ("fentry", "kprobe"):
        # every failed insert, per packet, with its 5-tuple, from the fexit program or kretprobe on
        # __nf_conntrack_confirm
        flows = [e for e in alerts if e["netagent"]["conntrack"].get("attribution") == sensor.per_packet_mode]
        assert sum(e["netagent"]["conntrack"]["count"] for e in flows) == kernel["insert_failed"]
        for e in flows:
            assert e["destination"] == {"ip": "10.79.2.1", "port": 80}
            assert e["source"]["ip"] == "10.79.1.1" and e["network"]["transport"] == "tcp"
            ports = e["netagent"]["conntrack"]["source_ports"]  # merged per service: one port is shown as such
            assert 20000 <= e["source"]["port"] < 60000 if ports == 1 else ports > 1
    else:
        assert sensor.per_packet_mode == "correlation", sensor.per_packet_reason
    if sensor.per_packet_mode == "correlation":
        flows = [e for e in alerts if "count" in e["netagent"]["conntrack"]]
        assert flows, "no per-flow insert-failed events"
        for e in flows:
            assert e["netagent"]["conntrack"]["attribution"] == "correlation"
            assert e["destination"] == {"ip": "10.79.2.1", "port": 80}
            assert e["source"]["ip"] == "10.79.1.1" and e["network"]["transport"] == "tcp"
        # every conntrack drop of the window is a NETFILTER_DROP of that flow
        assert sum(e["netagent"]["conntrack"]["count"] for e in flows) == kernel["drop"]
