"""Correlation rules, the tracker and the correlator, on injected readings.

CPU steal cannot be produced on this machine, so the steal tests inject
/proc/stat text; everything from the parser to the finding is real code.
"""

import pytest

from netagent.events import new_event
from netagent.findings import Context, Correlator, RuleConfig, evaluate
from netagent.findings.model import Finding
from netagent.findings.rules import conntrack, congestion_control, kube_proxy, port_range, tw_reuse, udp_rcvbuf
from netagent.findings.tracker import FindingTracker
from netagent.host import procfs
from netagent.host.kubeproxy import count_kube_services
from netagent.host.metrics import node_delta
from netagent.host.snapshot import NodeSnapshot

SOFTNET_QUIET = "00000100 00000000 00000000 0 0 0 0 0 0 0 0 0 00000000\n"


def node_body(steal_ticks: int, total_ticks: int = 1000, t0: float = 0.0, softnet_b: str = SOFTNET_QUIET) -> dict:
    """A node-counters body from two injected /proc/stat readings, through the real parser and deltas."""
    busy = total_ticks - steal_ticks - total_ticks // 2
    a = NodeSnapshot(t0, procfs.parse_proc_stat("cpu  1000 0 0 1000 0 0 0 0\ncpu0 1000 0 0 1000 0 0 0 0\n"),
                     procfs.parse_softnet_stat(SOFTNET_QUIET))
    b = NodeSnapshot(t0 + 10, procfs.parse_proc_stat(
        f"cpu  {1000 + busy} 0 0 {1000 + total_ticks // 2} 0 0 0 {steal_ticks}\n"
        f"cpu0 {1000 + busy} 0 0 {1000 + total_ticks // 2} 0 0 0 {steal_ticks}\n"),
        procfs.parse_softnet_stat(softnet_b))
    return node_delta(a, b)


def host_event(body: dict, action: str = "node-counters") -> dict:
    return new_event(dataset="netagent.host", action=action, kind="metric", netagent={"host": body})


def drop_event(count: int, reason: str = "NO_SOCKET", netns: int = 4026531840, interface: str = "eth0") -> dict:
    """A netagent.drops event with the fields probes/drops.py documents."""
    ev = new_event(dataset="netagent.drops", action="packet-dropped", type=["denied"],
                   netagent={"drop": {"count": count, "bytes": 100 * count, "reason_raw": 2, "location": "x",
                                      "interface": interface, "ifindex": 2, "netns": netns}},
                   destination={"ip": "10.0.0.1", "port": 53})
    ev["event"]["reason"] = reason
    return ev


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# --- steal ----------------------------------------------------------------------------


def test_steal_injected_through_parser():
    body = node_body(steal_ticks=230)
    assert body["cpu"]["steal_pct"] == 23.0


def test_drops_while_steal_fires_once_and_clears():
    clock = Clock()
    c = Correlator(window=60, clear_after=2, clock=clock)
    # steal without drops: nothing to explain
    assert [e for e in c(host_event(node_body(300))) if e["event"]["dataset"] == "netagent.finding"] == []
    clock.now += 10
    ev = drop_event(42, reason="CPU_BACKLOG")
    assert c(ev) == [ev]  # passed through unchanged, nothing triggered yet
    out = c(host_event(node_body(230)))
    findings = [e for e in out if e["event"]["dataset"] == "netagent.finding"]
    assert len(findings) == 1
    f = findings[0]
    assert f["event"]["kind"] == "alert" and f["event"]["action"] == "finding-raised"
    body = f["netagent"]["finding"]
    assert body["rule"] == "drops-cpu-steal"
    assert body["evidence"]["steal_pct"] == 23.0 and body["evidence"]["kernel_drops"] == 42
    assert "stole 23% CPU" in body["cause"]
    # same cause next sample (more drops): no repeat
    clock.now += 10
    c(drop_event(5, reason="CPU_BACKLOG"))
    assert not [e for e in c(host_event(node_body(250))) if e["event"]["dataset"] == "netagent.finding"]
    # steal gone: cleared after clear_after=2 quiet evaluations
    clock.now += 10
    assert not [e for e in c(host_event(node_body(0))) if e["event"]["dataset"] == "netagent.finding"]
    clock.now += 10
    cleared = [e for e in c(host_event(node_body(0))) if e["event"]["dataset"] == "netagent.finding"]
    assert [e["event"]["action"] for e in cleared] == ["finding-cleared"]
    assert cleared[0]["netagent"]["finding"]["state"] == "cleared"


def test_steal_below_threshold_is_quiet_and_threshold_is_configurable():
    clock = Clock()
    c = Correlator(clock=clock)
    c(drop_event(10, reason="QDISC_DROP"))
    assert not [e for e in c(host_event(node_body(80))) if e["event"]["dataset"] == "netagent.finding"]
    c2 = Correlator(RuleConfig(steal_pct=5.0), clock=clock)
    c2(drop_event(10, reason="QDISC_DROP"))
    out = [e for e in c2(host_event(node_body(80))) if e["event"]["dataset"] == "netagent.finding"]
    assert out and out[0]["netagent"]["finding"]["evidence"]["threshold_pct"] == 5.0


def test_old_drops_do_not_count_for_steal():
    clock = Clock()
    c = Correlator(window=60, clock=clock)
    c(drop_event(10, reason="CPU_BACKLOG"))
    clock.now += 45  # still in the 60 s window, but not in this 10 s sample
    assert not [e for e in c(host_event(node_body(300))) if e["event"]["dataset"] == "netagent.finding"]


def _findings(events: list[dict]) -> list[dict]:
    return [e["netagent"]["finding"] for e in events if e["event"]["dataset"] == "netagent.finding"]


def test_no_socket_drops_during_steal_are_not_blamed_on_the_cpu():
    clock = Clock()
    c = Correlator(window=60, clock=clock)
    c(drop_event(500, reason="NO_SOCKET"))
    c(drop_event(3, reason="NETFILTER_DROP"))
    assert _findings(c(host_event(node_body(300)))) == []  # 30% steal, yet nothing starvation can explain
    # the same steal with one backlog drop: blamed, and only that drop is counted
    clock.now += 61  # the first drops have left the window
    c(drop_event(500, reason="NO_SOCKET"))
    c(drop_event(1, reason="CPU_BACKLOG"))
    (steal,) = _findings(c(host_event(node_body(300))))
    assert steal["rule"] == "drops-cpu-steal"
    assert steal["cause"].startswith("1 packets dropped")
    assert steal["evidence"]["kernel_drop_reasons"] == {"CPU_BACKLOG": 1}
    assert steal["evidence"]["kernel_drops_not_cpu"] == 500


def test_no_socket_drops_with_time_squeeze_are_not_blamed_on_softnet():
    squeezed = node_body(0, softnet_b="00000200 00000000 00000001 0 0 0 0 0 0 0 0 0 00000000\n")
    ctx = Context(node=squeezed, drops=[{"count": 500, "reason": "NO_SOCKET"}], window_s=10)
    assert evaluate(ctx) == []
    ctx.drops.append({"count": 7, "reason": "SOCKET_RCVBUFF"})
    found = [f for f in evaluate(ctx) if f.rule == "drops-softnet"]
    assert len(found) == 1 and found[0].cause.startswith("7 packets dropped")


def test_softnet_backlog_drops():
    body = node_body(0, softnet_b="00000200 00000007 00000003 0 0 0 0 0 0 0 0 0 00000000\n")
    ctx = Context(node=body, window_s=10)
    found = evaluate(ctx)
    assert [f.rule for f in found] == ["drops-softnet"]
    assert found[0].evidence["softnet_dropped"] == 7 and found[0].evidence["time_squeeze"] == 3
    assert found[0].severity == "high"


# --- overlay MTU ----------------------------------------------------------------------


def vxlan(mtu: int, expected: int = 1450) -> dict:
    return {"index": 3, "name": "vxlan.calico", "type": "vxlan", "mtu": mtu, "up": True, "cni": "calico",
            "underlay": {"device": "ens5", "mtu": 1500, "effective_mtu": 1500, "family": "ipv4",
                         "found_by": "local-address"},
            "overhead": 50, "expected_mtu": expected, "mtu_exceeds": mtu > expected}


def test_overlay_mtu_config_and_evidence():
    ctx = Context(inventory={1: [vxlan(1500)]}, netns_names={1: "host"}, window_s=10)
    (f,) = evaluate(ctx)
    assert f.rule == "overlay-mtu" and f.severity == "medium" and f.subject == "host/vxlan.calico"
    assert f.evidence["configured_mtu"] == 1500 and f.evidence["expected_mtu"] == 1450
    assert f.evidence["underlay_device"] == "ens5" and "fragments_created" not in f.evidence
    # with fragments on the underlay side and too-big drops, it is happening: high
    ctx.netns = {1: {"netns": {"name": "host", "inode": 1}, "snmp": {"ip_frag_creates": 18, "ip_frag_oks": 9}}}
    ctx.drops = [{"count": 3, "reason": "PKT_TOO_BIG", "netns": 1, "interface": "vxlan.calico"}]
    ctx.mtu_probes = [{"target": "10.0.0.2", "path_mtu": 1450, "interface": "vxlan.calico", "netns": 1}]
    (f,) = evaluate(ctx)
    assert f.severity == "high"
    assert f.evidence["fragments_created"] == 18 and f.evidence["mtu_drops"] == 3
    assert f.evidence["probes"][0]["path_mtu"] == 1450
    assert "18 fragments" in f.cause and "probed path MTU 1450" in f.cause
    # the correct MTU: nothing
    assert evaluate(Context(inventory={1: [vxlan(1450)]})) == []


# --- conntrack ------------------------------------------------------------------------


def ns_body(inode=7, name="pod", **parts):
    body = {"netns": {"name": name, "inode": inode}, "snmp": {}, "interfaces": [], "conntrack": {},
            "udp_sockets": [], "sockets": {}, "sysctl": {}}
    body.update(parts)
    return body


def test_conntrack_near_full_with_dns_timeouts():
    ctx = Context(netns={7: ns_body(conntrack={"count": 950, "max": 1000, "fill_pct": 95.0})},
                  dns=[{"timeouts": 4, "name": "api.example.", "netns": 7}], window_s=10)
    (f,) = conntrack(ctx, RuleConfig())
    assert f.rule == "conntrack-full" and f.severity == "medium"
    assert f.evidence["fill_pct"] == 95.0 and f.evidence["dns_timeouts"] == 4
    assert f.evidence["recommended_max"] == 2048
    assert "4 DNS timeouts" in f.cause
    assert conntrack(Context(netns={7: ns_body(conntrack={"count": 10, "max": 1000, "fill_pct": 1.0})}),
                     RuleConfig()) == []


def test_conntrack_alerts_from_the_conntrack_sensor():
    """A table-full / insert-failed alert of netagent.conntrack is enough, by its documented fields."""
    clock = Clock()
    c = Correlator(clock=clock)
    for action in ("table-full", "insert-failed"):
        ev = new_event(dataset="netagent.conntrack", action=action, kind="alert",
                       netagent={"conntrack": {"netns": 9, "netns_name": "pod9", "entries": 100, "max": 100,
                                               "fill_ratio": 1.0, "deltas": {"drop": 5}}})
        c(ev)
    dns = new_event(dataset="netagent.dns", action="query", netagent={"dns": {"timeouts": 2}},
                    dns={"question": {"name": "kubernetes.default."}})
    c(dns)
    out = [e["netagent"]["finding"] for e in c(host_event(node_body(0))) if e["event"]["dataset"] == "netagent.finding"]
    rules = sorted(f["rule"] for f in out)
    assert rules == ["conntrack-full", "conntrack-insert-failed"]
    full = next(f for f in out if f["rule"] == "conntrack-full")
    assert full["severity"] == "high" and full["evidence"]["fill_pct"] == 100.0
    assert full["evidence"]["dns_timeouts"] == 2 and full["evidence"]["dns_names"] == ["kubernetes.default."]
    assert full["netns"] == {"name": "pod9", "inode": 9}


def test_conntrack_insert_failed_counter():
    ctx = Context(netns={7: ns_body(conntrack={"count": 5, "max": 1000, "fill_pct": 0.5, "insert_failed": 3,
                                               "drop": 3})})
    (f,) = conntrack(ctx, RuleConfig())
    assert f.rule == "conntrack-insert-failed" and f.evidence["insert_failed"] == 3


# --- UDP receive buffers ---------------------------------------------------------------


def test_udp_rcvbuf_with_drop_reason_and_socket():
    sock = {"address": "0.0.0.0", "port": 5353, "transport": "udp", "inode": 1, "drops": 150,
            "process": {"pid": 77, "name": "coredns"}}
    ctx = Context(netns={7: ns_body(snmp={"udp_rcvbuf_errors": 150}, udp_sockets=[sock],
                                    sysctl={"net.core.rmem_max": "212992"})},
                  drops=[{"count": 150, "reason": "SOCKET_RCVBUFF", "netns": 7, "destination_port": 5353}])
    (f,) = udp_rcvbuf(ctx, RuleConfig())
    assert f.subject == "pod/0.0.0.0:5353" and f.severity == "high"
    assert f.evidence["drop_reasons"] == {"SOCKET_RCVBUFF": 150}
    assert "coredns (pid 77)" in f.cause and "SOCKET_RCVBUFF" in f.cause and "212992" in f.remedy


# --- field guides ----------------------------------------------------------------------

DEFAULTS = {"net.ipv4.ip_local_port_range": "32768 60999", "net.ipv4.tcp_tw_reuse": "2",
            "net.ipv4.tcp_congestion_control": "cubic", "net.ipv4.tcp_available_congestion_control": "reno cubic"}


def test_field_guides_quiet_on_a_fresh_namespace():
    ctx = Context(netns={7: ns_body(sysctl=dict(DEFAULTS), sockets={"tcp_inuse": 0, "tcp_time_wait": 0},
                                    conntrack={"count": 0, "max": 262144, "fill_pct": 0.0})})
    assert evaluate(ctx) == []


def test_port_range_and_tw_reuse_fire_when_crowded():
    sockets = {"tcp_inuse": 2000, "tcp_time_wait": 14000}
    ctx = Context(netns={7: ns_body(sysctl=dict(DEFAULTS), sockets=sockets)})
    (pr,) = port_range(ctx, RuleConfig())
    assert pr.evidence["current"] == "32768 60999" and pr.evidence["recommended"] == "1024 65535"
    assert pr.evidence["width"] == 28232 and pr.severity == "medium"
    (tw,) = tw_reuse(ctx, RuleConfig())
    assert tw.evidence == {"current": "2", "recommended": "1", "tcp_time_wait": 14000, "port_range_width": 28232}
    narrow = Context(netns={7: ns_body(sysctl={**DEFAULTS, "net.ipv4.ip_local_port_range": "60000 61000"})})
    assert port_range(narrow, RuleConfig())[0].severity == "low"


def test_congestion_control_needs_loss():
    quiet = Context(netns={7: ns_body(sysctl=dict(DEFAULTS), snmp={"tcp_out_segs": 10000, "tcp_retrans_segs": 10})})
    assert congestion_control(quiet, RuleConfig()) == []
    lossy = Context(netns={7: ns_body(sysctl=dict(DEFAULTS), snmp={"tcp_out_segs": 10000, "tcp_retrans_segs": 500})})
    (f,) = congestion_control(lossy, RuleConfig())
    assert f.evidence["retrans_pct"] == 5.0 and f.evidence["current"] == "cubic"
    assert "modprobe tcp_bbr" in f.remedy  # bbr not in the available list


def test_kube_proxy_rule_counts():
    save = "*nat\n:KUBE-SERVICES - [0:0]\n" + "".join(
        f"-A KUBE-SERVICES -d 10.96.{i // 250}.{i % 250}/32 -p tcp -j KUBE-SVC-X{i}\n" for i in range(1500)) + \
        "-A KUBE-NODEPORTS -p tcp -j X\nCOMMIT\n"
    n = count_kube_services(save)
    assert n == 1500
    (f,) = kube_proxy(Context(kube_proxy={"mode": "iptables", "kube_services_rules": n, "ipvs_available": True,
                                          "nftables_available": True}), RuleConfig())
    assert f.evidence["kube_services_rules"] == 1500 and "nftables or ipvs" in f.remedy
    assert kube_proxy(Context(kube_proxy={"mode": "ipvs"}), RuleConfig()) == []
    assert kube_proxy(Context(kube_proxy={"mode": "iptables", "kube_services_rules": 10}), RuleConfig()) == []


# --- tracker ---------------------------------------------------------------------------


def _f(sev="medium", subject="a"):
    return Finding("r", subject, sev, "cause", "remedy", {"x": 1})


def test_tracker_raise_update_clear():
    t = FindingTracker(clear_after=1)
    assert [e["event"]["action"] for e in t.update([_f()])] == ["finding-raised"]
    assert t.update([_f()]) == []
    assert [e["event"]["action"] for e in t.update([_f("high")])] == ["finding-updated"]
    out = t.update([])
    assert [e["event"]["action"] for e in out] == ["finding-cleared"]
    assert out[0]["event"]["type"] == ["end"] and out[0]["event"]["severity"] == 3
    assert t.raised == 1 and t.cleared == 1


def test_tracker_keeps_the_worse_duplicate_and_rejects_bad_severity():
    t = FindingTracker()
    (e,) = t.update([_f("low"), _f("high")])
    assert e["netagent"]["finding"]["severity"] == "high"
    with pytest.raises(ValueError):
        _f("urgent")
    with pytest.raises(ValueError):
        FindingTracker(0)


def test_a_broken_rule_does_not_hide_the_others(monkeypatch):
    from netagent.findings import rules

    def broken(ctx, cfg):
        raise KeyError("boom")

    monkeypatch.setattr(rules, "RULES", [broken, rules.overlay_mtu])
    errors = []
    found = rules.evaluate(Context(inventory={1: [vxlan(1500)]}), errors=errors)
    assert [f.rule for f in found] == ["overlay-mtu"] and "boom" in errors[0]


def test_correlator_inventory_from_overlay_events():
    clock = Clock()
    c = Correlator(clock=clock)
    ev = new_event(dataset="netagent.overlay", action="interface-seen", kind="state",
                   netagent={"overlay": {"interface": vxlan(1500), "netns": {"name": "host", "inode": 1}}})
    c(ev)
    out = [e for e in c(host_event(node_body(0))) if e["event"]["dataset"] == "netagent.finding"]
    assert out[0]["netagent"]["finding"]["subject"] == "host/vxlan.calico"
    fixed = new_event(dataset="netagent.overlay", action="interface-changed", kind="state",
                      netagent={"overlay": {"interface": vxlan(1450), "netns": {"name": "host", "inode": 1}}})
    c(fixed)
    actions = []
    for _ in range(3):
        actions += [e["event"]["action"] for e in c(host_event(node_body(0)))
                    if e["event"]["dataset"] == "netagent.finding"]
    assert actions == ["finding-cleared"]
    assert c.status()["cleared"] == 1


def test_probe_events_name_their_namespace():
    """netagent.mtu / netagent.dns carry the namespace's name; the correlator maps it to the inode."""
    from netagent import netns as netns_mod

    host = netns_mod.current()
    clock = Clock()
    c = Correlator(clock=clock)
    c(new_event(dataset="netagent.overlay", action="interface-seen", kind="state",
                netagent={"overlay": {"interface": vxlan(1500), "netns": {"name": "host", "inode": host.inode}}}))
    c(new_event(dataset="netagent.mtu", action="mtu-probe", destination={"ip": "10.0.0.9"},
                netagent={"mtu": {"path_mtu": 1450, "status": "ok", "interface": "vxlan.calico", "netns": "host"}}))
    c(new_event(dataset="netagent.conntrack", action="table-full", kind="alert",
                netagent={"conntrack": {"netns": host.inode, "netns_name": "host", "entries": 10, "max": 10,
                                        "fill_ratio": 1.0, "deltas": {}}}))
    c(new_event(dataset="netagent.dns", action="dns-probe", dns={"question": {"name": "example.org"}},
                netagent={"dns": {"timeouts": 3, "queries": 5, "netns": "host"}}))
    out = {e["netagent"]["finding"]["rule"]: e["netagent"]["finding"]
           for e in c(host_event(node_body(0))) if e["event"]["dataset"] == "netagent.finding"}
    assert out["overlay-mtu"]["evidence"]["probes"][0]["path_mtu"] == 1450
    assert out["overlay-mtu"]["evidence"]["probes"][0]["netns"] == host.inode
    assert out["conntrack-full"]["evidence"]["dns_timeouts"] == 3
    assert out["conntrack-full"]["evidence"]["dns_names"] == ["example.org"]
