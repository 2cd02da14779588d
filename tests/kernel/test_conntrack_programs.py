"""The conntrack sensor's BPF programs against this kernel's BTF and verifier.

Loading the programs needs no kprobe support, only attaching does, so the
verifier proves them valid even on a kernel without kprobes (the development
one); where kprobes exist (Debian 6.1/6.12 in the VM lab) they are attached.
nf_conntrack is a module there: these tests load it first (kmod).
"""

import ipaddress
import os
import subprocess
import sys

import pytest

from kmod import ensure_nf_conntrack
from netagent import bpfchild, bpfsys
from netagent.btf import FUNC, STRUCT, kernel_btf, module_btf_names
from netagent.probes import conntrack as ct
from timescale import scaled

PROGRAMS = ["confirm_entry", "confirm_return", "clash_entry", "clash_return", "alloc_entry",
            "early_drop_entry", "early_drop_return", "alloc_return"]
# the same probes as fentry/fexit programs (loaded only where the kernel takes trampolines)
TRAMPOLINE_PROGRAMS = ["confirm_fentry", "confirm_fexit", "clash_fentry", "clash_fexit", "alloc_fentry",
                       "early_drop_fentry", "early_drop_fexit", "alloc_fexit"]


@pytest.fixture(autouse=True)
def nf_conntrack_loaded():
    ensure_nf_conntrack(timeout=scaled(30))


def compiled(filter_netns=0):
    btf = kernel_btf()
    plan = ct.ProbePlan(btf=btf)
    return ct.compile_probes(ct.build_macros(plan, ct.struct_offsets(btf), filter_netns))


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
    plan = ct.ProbePlan(btf=btf)
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


def kept_maps(bpf) -> dict:
    """The maps the sensor keeps (ct.PROBE_MAPS) of a BCC object, as the loader hands them over."""
    out = {}
    for name in ct.PROBE_MAPS:
        fd = bpf[name.encode()].get_fd()
        info = bpfchild.map_info(fd)
        out[name] = bpfsys.RawMap(fd, info["key_size"], info["value_size"], info["max_entries"],
                                  per_cpu=info["type"] == 6, name=name)  # 6: BPF_MAP_TYPE_PERCPU_ARRAY
    return out


def test_flows_written_by_the_kernel_side_are_drained_and_rendered(bpf):
    """Fill the active buffer the way the programs do and flush it through the sensor."""
    sensor = ct.ConntrackSensor(per_packet="off")
    maps = kept_maps(bpf)
    maps["active_flows"].update(b"\0" * 4, maps["flows_a"].fd.to_bytes(4, "little"))
    sensor._function_probes = bpfchild.LoadedProgram("kprobe", -1, -1, maps)
    sensor.watch_all = True
    assert maps["flows_a"].key_size == ct.CT_FLOW.size  # the layout conntrack.py unpacks
    saddr = int.from_bytes(ipaddress.ip_address("10.9.0.1").packed, "little")
    daddr = int.from_bytes(ipaddress.ip_address("10.9.0.2").packed, "little")
    maps["flows_a"].update(ct.CT_FLOW.pack(4026531840, 1, 17, ct.AF_INET, saddr, 0, 0, 0, daddr, 0, 0, 0, 5353, 53),
                           ct.CT_COUNT.pack(7, 1, 2))
    events = sensor._drain_per_packet(now=None)
    assert len(events) == 1
    ev = events[0]
    assert ev["event"]["action"] == "insert-failed" and ev["netagent"]["conntrack"]["count"] == 7
    assert ev["source"] == {"ip": "10.9.0.1", "port": 5353} and ev["destination"] == {"ip": "10.9.0.2", "port": 53}
    assert maps["flows_a"].keys() == []  # drained and cleared
    assert sensor._drain_per_packet(now=None) == []  # the other buffer is empty
    assert sensor.losses() == {"kernel": 0}


NO_KPROBES = ct.kprobes_unavailable_reason()


def no_fentry() -> str | None:
    """Why conntrack's fentry/fexit programs cannot go on here; asked in the test, once the
    autouse fixture has loaded nf_conntrack (its functions' BTF comes with the module)."""
    return ct.fentry_refused_reason("__nf_conntrack_confirm")
# what each per-packet path attaches first, as the attach path names it
RETURN_PROBE = {"fentry": "fexit __nf_conntrack_confirm", "kprobe": "kretprobe __nf_conntrack_confirm"}


def test_the_sensor_says_which_per_packet_path_it_takes_and_why():
    status = ct.ConntrackSensor().check()
    assert status.can_run
    refused = no_fentry()
    if refused is None:  # trampolines first: no perf event needed
        assert RETURN_PROBE["fentry"] in status.attach_path and status.details["per_packet"] == "fentry"
    elif NO_KPROBES is None:
        assert RETURN_PROBE["kprobe"] in status.attach_path and status.details["per_packet"] == "kprobe"
        assert refused in status.details["fentry"]
    if refused is None or NO_KPROBES is None:
        forced = ct.ConntrackSensor(per_packet="correlation").check()
        assert forced.can_run and "(as configured)" in forced.reason
    else:
        assert refused in status.reason and NO_KPROBES in status.reason
        assert "kprobes unavailable" in status.reason
        assert "correlation with the drop sensor's NETFILTER_DROP" in status.reason
        assert status.attach_path.startswith(f"{ct.COUNTERS_PATH} + correlation with the drop sensor's "
                                             "NETFILTER_DROP (")
        forced = ct.ConntrackSensor(per_packet="kprobe").check()
        assert not forced.can_run and "kprobes unavailable" in forced.reason
        forced = ct.ConntrackSensor(per_packet="fentry").check()
        assert not forced.can_run and refused in forced.reason


def test_doctor_reports_the_conntrack_path_and_reason():
    import json

    out = subprocess.run([os.path.join(sys.prefix, "bin", "netagent"), "doctor", "-o", "json"],
                         capture_output=True, text=True, timeout=scaled(300))
    report = json.loads(out.stdout)
    (status,) = [s for s in report["sensors"] if s["name"] == "conntrack"]
    assert status["can_run"] is True
    assert report["kprobes"]["available"] is (NO_KPROBES is None)
    if no_fentry() is None:
        assert RETURN_PROBE["fentry"] in status["attach_path"]
    elif report["kprobes"]["available"]:
        assert RETURN_PROBE["kprobe"] in status["attach_path"]
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


KPROBES_OUT_OF_PROCESS = """
import json, sys
from netagent import bpfchild, bpfsys
from netagent.bpfinfo import prog_stats
from netagent.probes import conntrack as ct

def ours():
    names = json.loads(sys.argv[1])  # every program in conntrack.bpf.c
    found = []
    for prog_id in bpfsys.prog_ids():
        try:
            fd = bpfsys.prog_fd_by_id(prog_id)
        except OSError:
            continue
        try:
            if prog_stats(fd).name in {n[:15] for n in names}:
                found.append(prog_stats(fd).name)
        finally:
            import os; os.close(fd)
    return found

out = {"before": ours(), "runs": []}
for via in json.loads(sys.argv[2]) * 2:
    sensor = ct.ConntrackSensor(per_packet=via)
    path = sensor.attach()
    maps = open("/proc/self/maps").read()
    out["runs"].append({"path": path, "hits": bpfchild.bytecode_cache.hits, "attached": sorted(ours()),
                        "plan": sorted({p[:15] for _, _, p in sensor._plan.probes}),
                        "bcc": "bcc" in sys.modules,
                        "llvm": "libLLVM" in maps or "libclang" in maps or "libbcc" in maps})
    sensor.poll()
    sensor.detach()
out["after"] = ours()
print(json.dumps(out))
"""


def test_kprobes_load_out_of_process_and_a_restart_loads_them_from_the_cache(tmp_path):
    """The agent never maps LLVM for the conntrack probes, fentry/fexit or kprobes (they are
    compiled in the loader's child process), a second attach of each loads every program
    from the bytecode cache, and a detach leaves none of them in the kernel. One process
    for both paths: a Python start under TCG takes seconds."""
    import json

    vias = [via for via, refused in (("fentry", no_fentry()), ("kprobe", NO_KPROBES)) if refused is None]
    if not vias:
        pytest.skip(f"{NO_KPROBES}; {no_fentry()}")
    env = dict(os.environ, NETAGENT_CACHE_DIR=str(tmp_path))  # empty: the first attach compiles
    run = subprocess.run([sys.executable, "-c", KPROBES_OUT_OF_PROCESS, json.dumps(PROGRAMS + TRAMPOLINE_PROGRAMS),
                          json.dumps(vias)],
                         capture_output=True, text=True, env=env, timeout=scaled(600))
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    firsts, seconds = out["runs"][:len(vias)], out["runs"][len(vias):]
    for i, (via, first, second) in enumerate(zip(vias, firsts, seconds)):
        assert RETURN_PROBE[via] in first["path"] and second["path"] == first["path"], via
        # the cache counts hits over the process: the first pass compiles each path once, the
        # second loads each from the cache in the same order
        assert (first["hits"], second["hits"]) == (0, 1 + i), via
        for attach in (first, second):
            assert attach["attached"] == attach["plan"] and not attach["bcc"] and not attach["llvm"], via
    assert out["after"] == out["before"] == []


@pytest.mark.skipif(ct.kprobes_unavailable_reason() is not None,
                    reason=str(ct.kprobes_unavailable_reason()))
def test_a_kprobe_path_that_cannot_attach_falls_back_to_correlation_and_says_why(monkeypatch):
    """The plan names a function the kernel refuses to probe: the sensor keeps
    counters and correlation, and says why; it never goes off."""
    notes = []
    sensor = ct.ConntrackSensor(per_packet="auto", announce=notes.append)
    planned = sensor.check().details["per_packet"]  # fentry where trampolines work, else kprobe
    refused = f"{ct.PROBES_NAMED[planned]} could not be attached"
    real_plan = ct.ProbePlan

    def refused_plan(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        plan.probes.append(("kprobe", "netagent_no_such_function", "confirm_entry"))
        return plan

    monkeypatch.setattr(ct, "ProbePlan", refused_plan)
    path = sensor.attach()
    try:
        assert sensor.per_packet_mode == "correlation"
        assert path.startswith(ct.COUNTERS_PATH + " + correlation with the drop sensor's NETFILTER_DROP")
        assert refused in sensor.per_packet_reason
        assert "netagent_no_such_function" in sensor.per_packet_reason
        assert any(refused in n for n in notes)
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
    plan = ct.ProbePlan(btf=btf)
    assert "__nf_conntrack_confirm" not in plan.notes  # positions from BTF, not assumed
