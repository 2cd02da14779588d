"""Attribution by correlation: NETFILTER_DROP flows joined to counter rises."""

import ipaddress
from types import SimpleNamespace

from netagent.conntrack.correlate import correlated_events, likely_action
from netagent.conntrack.flows import merge
from netagent.conntrack.report import Interval
from netagent.probes.drops import render_flow
from test_conntrack_report import NS, snap

REASONS = {2: "NOT_SPECIFIED", 12: "NETFILTER_DROP", 3: "NO_SOCKET"}


def drop_event(src, sport, dst, dport, count, reason=12, netns=NS.inode, proto=17, iface="eth0"):
    """A drop event exactly as the drop sensor renders one."""
    def words(ip):
        raw = ipaddress.ip_address(ip).packed.ljust(16, b"\0")
        return [int.from_bytes(raw[i:i + 4], "little") for i in range(0, 16, 4)]

    key = SimpleNamespace(reason=reason, l3=0x0800, l4=proto, saddr=words(src), daddr=words(dst), sport=sport,
                          dport=dport, location=0xFFFFFFFF81F2AFCD, ifindex=2, netns=netns)
    val = SimpleNamespace(count=count, bytes=count * 29, first_ns=1_000_000_000, last_ns=2_000_000_000)
    return render_flow(key, val, reasons=REASONS, has_reason=True, symbolize=lambda a: "nf_hook_slow+0x7d",
                       interface=iface, netns_name="lab", to_wall=lambda ns: 1_700_000_000 + ns / 1e9)


def test_table_full_flood_becomes_one_event_per_service_with_its_source_port_count():
    iv = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=45))
    drops = [drop_event("10.78.0.1", 40000 + i, "10.78.0.2", 9999, 1) for i in range(45)]
    events = correlated_events({NS.inode: iv}, drops)
    assert len(events) == 1
    ev = events[0]
    ct = ev["netagent"]["conntrack"]
    assert ev["event"]["action"] == "table-full" and ev["event"]["kind"] == "alert"
    assert ct["count"] == 45 and ct["source_ports"] == 45
    assert ct["attribution"] == "correlation"
    assert ct["correlation"] == {"netfilter_drops": 45, "counter_drops": 45, "matches": True, "flows": 1,
                                 "flows_omitted": 0, "drops_omitted": 0}
    assert ev["source"] == {"ip": "10.78.0.1"}  # many source ports: none is "the" port
    assert ev["destination"] == {"ip": "10.78.0.2", "port": 9999}
    assert ev["network"]["transport"] == "udp"
    assert "attributed by correlation" in ev["message"]


def test_insert_race_keeps_the_single_source_port():
    iv = Interval(snap(0, 5, 1000), snap(1, 5, 1000, insert_failed=3, drop=3))
    drops = [drop_event("10.79.1.1", 20001, "10.79.2.1", 80, 2, proto=6),
             drop_event("10.79.1.1", 20001, "10.79.2.1", 80, 1, proto=6, iface="r2")]
    (ev,) = correlated_events({NS.inode: iv}, drops)
    assert ev["event"]["action"] == "insert-failed"
    assert ev["source"] == {"ip": "10.79.1.1", "port": 20001}
    assert ev["netagent"]["conntrack"]["count"] == 3
    assert ev["netagent"]["conntrack"]["interfaces"] == ["eth0", "r2"]


def test_rule_drops_in_a_quiet_namespace_are_not_blamed_on_conntrack():
    quiet = Interval(snap(0, 5, 1000), snap(1, 5, 1000))
    assert correlated_events({NS.inode: quiet}, [drop_event("10.0.0.1", 1, "10.0.0.2", 2, 9)]) == []


def test_other_reasons_and_other_namespaces_are_ignored():
    iv = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=2))
    drops = [drop_event("10.0.0.1", 1, "10.0.0.2", 2, 5, reason=3),
             drop_event("10.0.0.1", 1, "10.0.0.2", 2, 5, netns=999)]
    assert correlated_events({NS.inode: iv}, drops) == []


def test_a_mismatch_says_rule_drops_are_mixed_in():
    iv = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=2))
    drops = [drop_event("10.0.0.1", 1, "10.0.0.2", 53, 7)]
    (ev,) = correlated_events({NS.inode: iv}, drops)
    assert ev["netagent"]["conntrack"]["correlation"]["matches"] is False
    assert "firewall-rule drops" in ev["message"]


def test_flows_beyond_the_limit_are_summarized_not_lost():
    iv = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=10))
    drops = [drop_event("10.0.0.1", 1000, f"10.0.1.{i}", 53, 1 + (i == 0)) for i in range(9)]
    events = correlated_events({NS.inode: iv}, drops, max_flows=3)
    assert len(events) == 3
    corr = events[0]["netagent"]["conntrack"]["correlation"]
    assert corr["flows"] == 9 and corr["flows_omitted"] == 6 and corr["drops_omitted"] == 6
    assert events[0]["netagent"]["conntrack"]["count"] == 2  # biggest first


def test_likely_action_when_both_kinds_of_refusal_happened():
    both = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=12, insert_failed=2))
    assert likely_action(both) == ("table-full", ["table-full", "insert-failed"])
    mostly_races = Interval(snap(0, 20, 20), snap(1, 20, 20, drop=12, insert_failed=10))
    assert likely_action(mostly_races) == ("insert-failed", ["table-full", "insert-failed"])


def test_merge_keeps_time_bounds_and_ipv6_endpoints():
    flows = {}
    net = {"type": "ipv6", "transport": "udp"}
    merge(flows, netns=1, network=net, source={"ip": "fd00::1", "port": 5}, destination={"ip": "fd00::2", "port": 53},
          icmp=None, count=2, start="2026-01-01T00:00:02.000000Z", end="2026-01-01T00:00:03.000000Z")
    entry = merge(flows, netns=1, network=net, source={"ip": "fd00::1", "port": 5},
                  destination={"ip": "fd00::2", "port": 53}, icmp=None, count=1,
                  start="2026-01-01T00:00:01.000000Z", end="2026-01-01T00:00:02.500000Z")
    assert len(flows) == 1 and entry.count == 3
    assert entry.start == "2026-01-01T00:00:01.000000Z" and entry.end == "2026-01-01T00:00:03.000000Z"
    assert entry.describe() == "udp [fd00::1]:5 -> [fd00::2]:53"
