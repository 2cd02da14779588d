"""The drop sensor's BPF programs against this kernel's verifier."""

import pytest

from netagent.probes.drops import TRACEPOINT, DropFilters, DropSensor, kprobes_available
from netagent.tracefs import tracepoint_format


@pytest.fixture
def compiled():
    sensor = DropSensor(DropFilters(proto="udp", port=53, host="fd00::1"))
    bpf = sensor.compile(tracepoint_format(*TRACEPOINT))
    yield bpf
    bpf.cleanup()


def test_kprobe_variant_compiles_and_passes_the_verifier(compiled):
    from bcc import BPF

    # Loading needs no kprobe support, only attaching does: this proves the
    # variant is valid for kernels that have kprobes.
    fn = compiled.load_func(b"kprobe_drop", BPF.KPROBE)
    assert fn.fd > 0


def test_tracepoint_program_passes_the_verifier_with_every_filter(compiled):
    from bcc import BPF

    fn = compiled.load_func(b"on_kfree_skb", BPF.TRACEPOINT)
    assert fn.fd > 0


@pytest.mark.skipif(not kprobes_available(), reason="kernel has no kprobes (CONFIG_KPROBES off)")
def test_kprobe_variant_attaches_where_kprobes_exist():
    from netagent.kallsyms import Symbolizer
    from netagent.probes.drops import kprobe_target

    sensor = DropSensor()
    bpf = sensor.compile(tracepoint_format(*TRACEPOINT))
    try:
        target = kprobe_target(Symbolizer())
        bpf.attach_kprobe(event=target[0], fn_name="kprobe_drop")
    finally:
        bpf.cleanup()


def test_flows_survive_a_full_map_as_counted_losses(netns):
    """With a 4-entry map, distinct flows beyond what the map and the per-CPU
    caches in front of it hold are counted as kernel losses, not silently dropped."""
    import time

    from netagent.bpfsys import possible_cpus
    from netagent.probes.drops import CACHE_SLOTS

    flows, per_flow = 300, 3
    sensor = DropSensor(DropFilters(netns=netns.name, proto="udp"), max_flows=4)
    sensor.attach()
    try:
        sender = (f"import socket\nfor p in range(20000, {20000 + flows}):\n"
                  "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "    s.bind(('127.0.0.1', p))\n"
                  f"    [s.sendto(b'x', ('127.0.0.1', 9)) for _ in range({per_flow})]\n")
        netns.run("python3", "-c", sender)
        time.sleep(0.2)
        events = sensor.poll()
    finally:
        sensor.detach()
    seen = sum(e["netagent"]["drop"]["count"] for e in events)
    lost = sensor.loss_details()["map_full"]
    assert seen + lost == flows * per_flow
    assert lost >= (flows - 4 - CACHE_SLOTS * possible_cpus()) * per_flow > 0
    assert len(events) <= 4 + CACHE_SLOTS * possible_cpus()
    assert sensor.losses()["kernel"] >= lost
