"""The conntrack sensor's choices and renderings that need no privileges."""

import ipaddress
from types import SimpleNamespace

import pytest

from netagent.configschema import SchemaError, apply_schema
from netagent.conntrack.flows import merge
from netagent.errors import ProbeUnavailable, UsageError
from netagent.kallsyms import Symbolizer
from netagent.probes import conntrack as ct

KALLSYMS_ALL = """\
ffffffff81240fc0 t __nf_ct_resolve_clash
ffffffff812411f0 t nf_ct_resolve_clash
ffffffff81f37be0 T __nf_conntrack_confirm
ffffffff81f38a00 t early_drop
ffffffff81f38c60 t __nf_conntrack_alloc
"""


def test_plan_on_a_kernel_with_every_function():
    plan = ct.ProbePlan(Symbolizer(KALLSYMS_ALL), btf=None, kallsyms_text=KALLSYMS_ALL)
    assert plan.describe() == (
        "kprobe __nf_conntrack_confirm, kretprobe __nf_conntrack_confirm, kprobe __nf_conntrack_alloc, "
        "kprobe early_drop, kretprobe early_drop")
    # without a BTF prototype the clash probe's argument layout is unknown: not probed, and said so
    assert "nf_ct_resolve_clash" in plan.notes
    assert plan.macros["CONFIRM_SKB_ARG"] == 1 and plan.macros["ALLOC_ORIG_ARG"] == 3


class FakeBtf:
    """Just enough of netagent.btf.Btf for function_params()."""

    def __init__(self, protos):
        self.protos = protos


def test_plan_takes_argument_positions_from_btf_prototypes(monkeypatch):
    protos = {"__nf_conntrack_confirm": ["skb"], "nf_ct_resolve_clash": ["net", "skb", "ctinfo", "h"],
              "__nf_conntrack_alloc": ["net", "zone", "orig", "repl", "gfp", "hash"], "early_drop": ["net", "hash"]}
    monkeypatch.setattr(ct, "function_params", lambda btf, name: btf.protos.get(name))
    plan = ct.ProbePlan(Symbolizer(KALLSYMS_ALL), btf=FakeBtf(protos), kallsyms_text=KALLSYMS_ALL)
    assert plan.macros["CLASH_SKB_ARG"] == 2  # the pre-5.9 layout: (net, skb, ctinfo, h)
    assert ("kretprobe", "nf_ct_resolve_clash", "clash_return") in plan.probes


class FakeModuleBtf(FakeBtf):
    """Prototypes, type ids and owners, as KernelBtf answers them for a module's functions."""

    def function_id(self, name):
        return 90000 + sorted(self.protos).index(name), "nf_conntrack"


PROTOS_6_12 = {"__nf_conntrack_confirm": ["skb"], "nf_ct_resolve_clash": ["skb", "h", "reply_hash"],
               "__nf_conntrack_alloc": ["net", "zone", "orig", "repl", "gfp", "hash"], "early_drop": ["net", "hash"]}


def test_a_fentry_plan_uses_fexit_programs_argument_counts_and_the_modules_btf_ids(monkeypatch):
    monkeypatch.setattr(ct, "function_params", lambda btf, name: btf.protos.get(name))
    btf = FakeModuleBtf(PROTOS_6_12)
    # /proc/kallsyms unreadable (ProtectKernelTunables=yes): BTF alone says what exists
    plan = ct.ProbePlan(Symbolizer(""), btf=btf, kallsyms_text="", via="fentry")
    assert plan.probes == [("fentry", "__nf_conntrack_confirm", "confirm_fentry"),
                           ("fexit", "__nf_conntrack_confirm", "confirm_fexit"),
                           ("fentry", "nf_ct_resolve_clash", "clash_fentry"),
                           ("fexit", "nf_ct_resolve_clash", "clash_fexit"),
                           ("fentry", "__nf_conntrack_alloc", "alloc_fentry"),
                           ("fentry", "early_drop", "early_drop_fentry"),
                           ("fexit", "early_drop", "early_drop_fexit")]
    # the return value sits after the arguments: their count, from the prototype
    assert (plan.macros["CONFIRM_NARGS"], plan.macros["CLASH_NARGS"], plan.macros["ALLOC_NARGS"],
            plan.macros["EARLY_DROP_NARGS"]) == (1, 3, 6, 2)
    assert plan.btf_functions["__nf_conntrack_confirm"] == [btf.function_id("__nf_conntrack_confirm")[0], "nf_conntrack"]
    spec = ct.probes_spec(plan, dict(plan.macros))
    assert spec.attach == "fentry" and spec.btf_functions == plan.btf_functions
    assert [m[0] for m in spec.more] == ["fexit", "fentry", "fexit", "fentry", "fentry", "fexit"]


def test_the_btf_facts_a_restart_plans_from_answer_as_the_btf_did(monkeypatch):
    """ConntrackBtf (the cached facts) gives the plan the same answers as the BTF they came from."""
    monkeypatch.setattr(ct, "function_params", lambda btf, name: btf.function_params(name))
    live = FakeModuleBtf(PROTOS_6_12)
    live.function_params = live.protos.get
    facts = ct.ConntrackBtf({"functions": {name: {"params": p, "id": live.function_id(name)[0], "owner": "nf_conntrack"}
                                           for name, p in PROTOS_6_12.items()} | {"nf_ct_other": None},
                             "offsets": {"OFF_SKB_NFCT": 104}})
    from_live = ct.ProbePlan(Symbolizer(""), btf=live, kallsyms_text="", via="fentry")
    from_facts = ct.ProbePlan(Symbolizer(""), btf=facts, kallsyms_text="", via="fentry")
    assert (from_facts.probes, from_facts.macros, from_facts.btf_functions) == (
        from_live.probes, from_live.macros, from_live.btf_functions)
    assert facts.function_params("nf_ct_other") is None and ct.offsets_of(facts) == {"OFF_SKB_NFCT": 104}


def test_a_fentry_plan_needs_btf_prototypes(monkeypatch):
    monkeypatch.setattr(ct, "function_params", lambda btf, name: btf.protos.get(name))
    with pytest.raises(ProbeUnavailable, match="BTF"):
        ct.ProbePlan(Symbolizer(KALLSYMS_ALL), btf=None, kallsyms_text=KALLSYMS_ALL, via="fentry")
    # a function without a prototype (inlined) is not probed by trampoline, and said so
    protos = dict(PROTOS_6_12)
    del protos["early_drop"]
    plan = ct.ProbePlan(Symbolizer(""), btf=FakeModuleBtf(protos), kallsyms_text="", via="fentry")
    assert ("fexit", "__nf_conntrack_alloc", "alloc_fexit") in plan.probes and "early_drop" in plan.notes


def test_plan_falls_back_to_the_alloc_return_when_early_drop_is_inlined():
    syms = "\n".join(line for line in KALLSYMS_ALL.splitlines() if "early_drop" not in line)
    plan = ct.ProbePlan(Symbolizer(syms), btf=None, kallsyms_text=syms)
    assert ("kretprobe", "__nf_conntrack_alloc", "alloc_return") in plan.probes
    assert "early_drop" in plan.notes


def test_plan_needs_the_confirm_function():
    with pytest.raises(ProbeUnavailable, match="__nf_conntrack_confirm"):
        ct.ProbePlan(Symbolizer("ffffffff81f38a00 t early_drop\n"), btf=None,
                     kallsyms_text="ffffffff81f38a00 t early_drop\n")


def test_a_function_name_defined_twice_is_not_probed():
    syms = KALLSYMS_ALL + "ffffffff81f99999 t early_drop\n"
    plan = ct.ProbePlan(Symbolizer(syms), btf=None, kallsyms_text=syms)
    assert not any(fn == "early_drop" for _, fn, _ in plan.probes)
    assert ("kretprobe", "__nf_conntrack_alloc", "alloc_return") in plan.probes
    assert "2 kernel functions share this name" in plan.notes["early_drop"]


def _words(ip):
    raw = ipaddress.ip_address(ip).packed.ljust(16, b"\0")
    return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4)]


def test_kernel_flow_keys_render_as_ecs_per_kind():
    flows = {}
    for sport in (1000, 1001):
        key = SimpleNamespace(netns=42, kind=3, l3=ct.AF_INET, l4=17, saddr=_words("10.1.0.1"),
                              daddr=_words("10.1.0.2"), sport=sport, dport=53)
        merge(flows, netns=42, count=2, start="2026-01-01T00:00:00.000000Z", end="2026-01-01T00:00:01.000000Z",
              extra_key=(3,), **ct.decode_flow(key))
    (flow,) = flows.values()
    ev = ct.render_flow(flow, 3, netns_name="lab")
    assert ev["event"]["action"] == "table-full" and ev["event"]["kind"] == "alert"
    body = ev["netagent"]["conntrack"]
    assert body["count"] == 4 and body["source_ports"] == 2 and body["attribution"] == "kprobe"
    assert body["outcome"] == "dropped"
    assert ev["destination"] == {"ip": "10.1.0.2", "port": 53} and ev["source"] == {"ip": "10.1.0.1"}

    key6 = SimpleNamespace(netns=42, kind=2, l3=ct.AF_INET6, l4=17, saddr=_words("fd00::1"),
                           daddr=_words("fd00::2"), sport=5353, dport=53)
    flows6 = {}
    merge(flows6, netns=42, count=1, start=None, end=None, extra_key=(2,), **ct.decode_flow(key6))
    ev6 = ct.render_flow(next(iter(flows6.values())), 2, netns_name=None)
    assert ev6["event"]["action"] == "clash-resolved" and ev6["event"]["kind"] == "event"
    assert ev6["source"] == {"ip": "fd00::1", "port": 5353}
    assert ev6["network"]["type"] == "ipv6"

    icmp = SimpleNamespace(netns=1, kind=1, l3=ct.AF_INET, l4=1, saddr=_words("10.0.0.1"), daddr=_words("10.0.0.2"),
                           sport=8, dport=0)
    assert ct.decode_flow(icmp)["icmp"] == {"type": 8, "code": 0}


def test_config_schema_defaults_and_checks():
    cfg = apply_schema(ct.CONFIG_SCHEMA, {"netns": ["all"], "interval": "10s", "threshold": 0.8})
    sensor = ct.from_config(cfg)
    assert sensor.watch_all and sensor.interval == 10.0 and sensor.threshold == 0.8
    assert ct.CONFIG_SECTION == "conntrack"
    with pytest.raises(SchemaError, match="threshold"):
        apply_schema(ct.CONFIG_SCHEMA, {"threshold": 1.5})
    with pytest.raises(SchemaError, match="per_packet"):
        apply_schema(ct.CONFIG_SCHEMA, {"per_packet": "sometimes"})


@pytest.mark.parametrize("kwargs,needle", [
    ({"netns": ["all", "x"]}, "give it alone"),
    ({"threshold": 0}, "threshold"),
    ({"per_packet": "maybe"}, "per_packet"),
    ({"counters": "sometimes"}, "counters"),
])
def test_bad_sensor_arguments_are_usage_errors(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        ct.ConntrackSensor(**kwargs)


def test_the_sensor_is_registered_for_the_daemon():
    from netagent.registry import SENSOR_MODULES

    assert "netagent.probes.conntrack" in SENSOR_MODULES
