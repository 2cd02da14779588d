"""The conntrack sensor's BPF programs against this kernel's BTF and verifier.

This kernel has no kprobes, so the programs cannot be attached here; loading
them needs no kprobe support, only attaching does, so the verifier still
proves they are valid for kernels that have kprobes.
"""

import ctypes
import ipaddress
import os
import subprocess
import sys

import pytest

from netagent.btf import kernel_btf
from netagent.probes import conntrack as ct

PROGRAMS = ["confirm_entry", "confirm_return", "clash_entry", "clash_return", "alloc_entry",
            "early_drop_entry", "early_drop_return", "alloc_return"]


def compiled(filter_netns=0):
    btf = kernel_btf()
    plan = ct.KprobePlan(btf=btf)
    return ct.compile_probes(ct.build_macros(plan, btf, filter_netns))


@pytest.fixture
def bpf():
    b = compiled()
    yield b
    b.cleanup()


@pytest.mark.parametrize("filter_netns", [0, os.stat("/proc/self/ns/net").st_ino])
def test_every_program_passes_the_verifier(filter_netns):
    from bcc import BPF

    b = compiled(filter_netns)
    try:
        for name in PROGRAMS:
            assert b.load_func(name.encode(), BPF.KPROBE).fd > 0, name
    finally:
        b.cleanup()


def test_argument_positions_and_offsets_come_from_this_kernels_btf():
    btf = kernel_btf()
    assert ct.function_params(btf, "__nf_conntrack_confirm")[0] == "skb"
    params = ct.function_params(btf, "__nf_conntrack_alloc")
    plan = ct.KprobePlan(btf=btf)
    assert plan.macros["ALLOC_ORIG_ARG"] == params.index("orig") + 1
    assert plan.macros["ALLOC_NET_ARG"] == params.index("net") + 1
    offsets = ct.struct_offsets(btf)
    # the original tuple sits inside struct nf_conn, after the hash node of tuplehash[0]
    assert offsets["OFF_CT_TUPLE_ORIG"] == (btf.member_offset("nf_conn", "tuplehash")
                                            + btf.member_offset("nf_conntrack_tuple_hash", "tuple"))
    tuple_size = btf.size(btf.struct_id("nf_conntrack_tuple"))
    for name in ("OFF_TUPLE_SRC_U3", "OFF_TUPLE_SRC_PORT", "OFF_TUPLE_L3NUM", "OFF_TUPLE_DST_U3",
                 "OFF_TUPLE_DST_PORT", "OFF_TUPLE_PROTONUM"):
        assert 0 <= offsets[name] < tuple_size


def test_flows_written_by_the_kernel_side_are_drained_and_rendered(bpf):
    """Fill the active buffer the way the programs do and flush it through the sensor."""
    sensor = ct.ConntrackSensor(per_packet="off")
    sensor._bpf = bpf
    sensor._buffers = (bpf[b"flows_a"], bpf[b"flows_b"])
    bpf[b"active_flows"][ctypes.c_int(0)] = ctypes.c_int(sensor._buffers[0].get_fd())
    sensor.watch_all = True
    table = bpf[b"flows_a"]
    key = table.Key()
    key.netns, key.kind, key.l3, key.l4 = 4026531840, 1, ct.AF_INET, 17
    key.saddr[0] = int.from_bytes(ipaddress.ip_address("10.9.0.1").packed, "little")
    key.daddr[0] = int.from_bytes(ipaddress.ip_address("10.9.0.2").packed, "little")
    key.sport, key.dport = 5353, 53
    val = table.Leaf()
    val.count, val.first_ns, val.last_ns = 7, 1, 2
    table[key] = val
    events = sensor._drain_per_packet(now=None)
    assert len(events) == 1
    ev = events[0]
    assert ev["event"]["action"] == "insert-failed" and ev["netagent"]["conntrack"]["count"] == 7
    assert ev["source"] == {"ip": "10.9.0.1", "port": 5353} and ev["destination"] == {"ip": "10.9.0.2", "port": 53}
    assert len(table) == 0  # drained and cleared
    assert sensor._drain_per_packet(now=None) == []  # the other buffer is empty
    assert sensor.losses() == {"kernel": 0}


@pytest.mark.skipif(ct.kprobes_unavailable_reason() is None, reason="this kernel has kprobes")
def test_without_kprobes_the_sensor_says_why_and_correlates():
    status = ct.ConntrackSensor().check()
    assert status.can_run
    assert status.reason.startswith("kprobes unavailable")
    assert "correlation with the drop sensor's NETFILTER_DROP" in status.reason
    assert status.attach_path.startswith(f"{ct.COUNTERS_PATH} + correlation with the drop sensor's NETFILTER_DROP (")
    forced = ct.ConntrackSensor(per_packet="kprobe").check()
    assert not forced.can_run and "kprobes unavailable" in forced.reason


@pytest.mark.skipif(ct.kprobes_unavailable_reason() is None, reason="this kernel has kprobes")
def test_doctor_reports_the_conntrack_path_and_reason():
    out = subprocess.run([os.path.join(sys.prefix, "bin", "netagent"), "doctor", "-o", "json"],
                         capture_output=True, text=True, timeout=120)
    import json

    report = json.loads(out.stdout)
    (status,) = [s for s in report["sensors"] if s["name"] == "conntrack"]
    assert status["can_run"] is True
    assert "CONFIG_KPROBES" in status["reason"] and "NETFILTER_DROP" in status["reason"]


@pytest.mark.skipif(ct.kprobes_unavailable_reason() is not None,
                    reason=f"kernel lacks kprobes: {ct.kprobes_unavailable_reason()}")
def test_kprobes_attach_where_the_kernel_has_them():
    sensor = ct.ConntrackSensor(per_packet="kprobe")
    path = sensor.attach()
    try:
        assert "kretprobe __nf_conntrack_confirm" in path
        assert sensor.poll() is not None
    finally:
        sensor.detach()
