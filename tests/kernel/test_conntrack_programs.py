"""The conntrack sensor's BPF programs against this kernel's BTF and verifier.

Loading the programs needs no kprobe support, only attaching does, so the
verifier proves them valid even on a kernel without kprobes (the development
one); where kprobes exist (Debian 6.1/6.12 in the VM lab) they are attached.
nf_conntrack is a module there: these tests load it first (kmod).
"""

import ctypes
import ipaddress
import os
import subprocess
import sys

import pytest

from kmod import ensure_nf_conntrack
from netagent.btf import FUNC, STRUCT, kernel_btf, module_btf_names
from netagent.probes import conntrack as ct
from timescale import scaled

PROGRAMS = ["confirm_entry", "confirm_return", "clash_entry", "clash_return", "alloc_entry",
            "early_drop_entry", "early_drop_return", "alloc_return"]


@pytest.fixture(autouse=True)
def nf_conntrack_loaded():
    ensure_nf_conntrack(timeout=scaled(30))


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
    tuple_size = btf.struct_size("nf_conntrack_tuple")
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


def test_the_sensor_says_which_per_packet_path_it_takes_and_why():
    status = ct.ConntrackSensor().check()
    assert status.can_run
    no_kprobes = ct.kprobes_unavailable_reason()
    if no_kprobes is None:
        assert "kretprobe __nf_conntrack_confirm" in status.attach_path and status.details["per_packet"] == "kprobe"
        forced = ct.ConntrackSensor(per_packet="correlation").check()
        assert forced.can_run and "(as configured)" in forced.reason
    else:
        assert status.reason.startswith("kprobes unavailable")
        assert "correlation with the drop sensor's NETFILTER_DROP" in status.reason
        assert status.attach_path.startswith(f"{ct.COUNTERS_PATH} + correlation with the drop sensor's "
                                             "NETFILTER_DROP (")
        forced = ct.ConntrackSensor(per_packet="kprobe").check()
        assert not forced.can_run and "kprobes unavailable" in forced.reason


def test_doctor_reports_the_conntrack_path_and_reason():
    import json

    out = subprocess.run([os.path.join(sys.prefix, "bin", "netagent"), "doctor", "-o", "json"],
                         capture_output=True, text=True, timeout=scaled(300))
    report = json.loads(out.stdout)
    (status,) = [s for s in report["sensors"] if s["name"] == "conntrack"]
    assert status["can_run"] is True
    assert report["kprobes"]["available"] is (ct.kprobes_unavailable_reason() is None)
    if report["kprobes"]["available"]:
        assert "kprobe __nf_conntrack_confirm" in status["attach_path"]
    else:
        assert "CONFIG_KPROBES" in status["reason"] and "NETFILTER_DROP" in status["reason"]
    if module_btf_names():
        assert report["module_btf"]["available"] and "nf_conntrack" in report["module_btf"]["modules"]


@pytest.mark.skipif(ct.kprobes_unavailable_reason() is not None,
                    reason=str(ct.kprobes_unavailable_reason()))
def test_kprobes_attach_where_the_kernel_has_them():
    sensor = ct.ConntrackSensor(per_packet="kprobe")
    path = sensor.attach()
    try:
        assert "kretprobe __nf_conntrack_confirm" in path
        assert sensor.poll() is not None
    finally:
        sensor.detach()


@pytest.mark.skipif(ct.kprobes_unavailable_reason() is not None,
                    reason=str(ct.kprobes_unavailable_reason()))
def test_a_kprobe_path_that_cannot_attach_falls_back_to_correlation_and_says_why(monkeypatch):
    """The plan names a function the kernel refuses to probe: the sensor keeps
    counters and correlation, and says why; it never goes off."""
    notes = []
    sensor = ct.ConntrackSensor(per_packet="auto", announce=notes.append)
    real_plan = ct.KprobePlan

    def refused_plan(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        plan.probes.append(("kprobe", "netagent_no_such_function", "confirm_entry"))
        return plan

    monkeypatch.setattr(ct, "KprobePlan", refused_plan)
    path = sensor.attach()
    try:
        assert sensor.per_packet_mode == "correlation"
        assert path.startswith(ct.COUNTERS_PATH + " + correlation with the drop sensor's NETFILTER_DROP")
        assert "kprobes could not be attached" in sensor.per_packet_reason
        assert "netagent_no_such_function" in sensor.per_packet_reason
        assert any("kprobes could not be attached" in n for n in notes)
        assert sensor.poll()  # counters still flow
    finally:
        sensor.detach()


def test_a_type_only_a_module_has_is_read_from_the_modules_btf():
    """Where nf_conntrack is a module with BTF, its own types (absent from
    vmlinux) and function prototypes come from /sys/kernel/btf/nf_conntrack."""
    if "nf_conntrack" not in (module_btf_names() or []):
        pytest.skip("module BTF for nf_conntrack (no /sys/kernel/btf/nf_conntrack: conntrack built in or "
                    "CONFIG_DEBUG_INFO_BTF_MODULES off)")
    btf = kernel_btf()
    module = btf.module("nf_conntrack")
    only_there = [module.name(i) for i in module.own_ids()
                  if module.kind(i) == STRUCT and module.name(i) and not btf.vmlinux.defines(module.name(i), STRUCT)
                  and module.members(i)]
    assert only_there, "nf_conntrack's BTF defines no struct of its own"
    name = only_there[0]
    first = module.members(module.struct_id(name))[0]
    with pytest.raises(Exception):
        btf.vmlinux.member_offset(name, first.name)
    assert btf.member_offset(name, first.name) == first.byte_offset
    assert btf.where(name, (STRUCT,)) == "nf_conntrack"
    # the prototypes of the module's functions are there too (on 6.12 nowhere else)
    assert btf.where("__nf_conntrack_confirm", (FUNC,)) == "nf_conntrack"
    assert btf.function_params("__nf_conntrack_confirm")[0] == "skb"
    plan = ct.KprobePlan(btf=btf)
    assert "__nf_conntrack_confirm" not in plan.notes  # positions from BTF, not assumed
