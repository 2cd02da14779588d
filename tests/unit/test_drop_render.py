"""Turning one aggregated kernel flow into the documented ECS event."""

import ipaddress
from types import SimpleNamespace

import orjson

from netagent.probes.drops import FlowTuple, reason_names, render_flow, summarize_flows, unpacked
from netagent.tracefs import parse_format


def words(addr: str):
    packed = ipaddress.ip_address(addr).packed.ljust(16, b"\0")
    return [int.from_bytes(packed[i:i + 4], "little") for i in range(0, 16, 4)]


def key(**kw):
    base = dict(netns=4026532000, ifindex=2, reason=3, l3=0x0800, l4=17, location=0xFFFFFFFF82048C10 + 0x4BC,
                saddr=words("10.1.0.1"), daddr=words("10.1.0.2"), sport=40000, dport=9)
    base.update(kw)
    return SimpleNamespace(**base)


VAL = SimpleNamespace(count=7, bytes=7 * 36, first_ns=1_000_000_000, last_ns=2_500_000_000)
REASONS = {2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP"}


def render(k, **kw):
    opts = dict(reasons=REASONS, has_reason=True, symbolize=lambda a: f"fn+{a & 0xfff:#x}", interface="eth0",
                netns_name="client", to_wall=lambda ns: 1_700_000_000 + ns / 1e9, now=1_700_000_010.0)
    opts.update(kw)
    return render_flow(k, VAL, **opts)


def test_udp_ipv4_event_has_every_required_field():
    e = render(key())
    assert e["ecs"]["version"] and e["@timestamp"].endswith("Z")
    ev = e["event"]
    assert ev["kind"] == "event" and ev["category"] == ["network"] and ev["type"] == ["denied"]
    assert ev["action"] == "packet-dropped" and ev["dataset"] == "netagent.drops"
    assert ev["reason"] == "NO_SOCKET"
    assert ev["start"] == "2023-11-14T22:13:21.000000Z" and ev["end"] == "2023-11-14T22:13:22.500000Z"
    assert e["network"] == {"type": "ipv4", "transport": "udp", "iana_number": "17"}
    assert e["source"] == {"ip": "10.1.0.1", "port": 40000}
    assert e["destination"] == {"ip": "10.1.0.2", "port": 9}
    assert e["host"]["name"] and e["agent"]["name"] == "netagent" and e["agent"]["version"]
    d = e["netagent"]["drop"]
    assert d == {"count": 7, "bytes": 252, "reason_raw": 3, "location": "fn+0xcc",
                 "location_raw": "0xffffffff820490cc", "interface": "eth0", "ifindex": 2,
                 "netns": 4026532000, "netns_name": "client"}
    orjson.dumps(e)  # serialisable as it is


def test_ipv6_icmp_has_type_and_code_not_ports():
    e = render(key(l3=0x86DD, l4=58, saddr=words("fd00::1"), daddr=words("fd00::2"), sport=128, dport=0))
    assert e["network"]["type"] == "ipv6" and e["network"]["transport"] == "ipv6-icmp"
    assert e["source"] == {"ip": "fd00::1"} and e["destination"] == {"ip": "fd00::2"}
    assert e["netagent"]["drop"]["icmp"] == {"type": 128, "code": 0}


def test_non_ip_frames_and_unknown_reason_numbers():
    e = render(key(l3=0x0806, l4=0, reason=999))
    assert e["network"] == {"type": "arp"}
    assert "source" not in e
    assert e["event"]["reason"] == "UNKNOWN_999" and e["netagent"]["drop"]["reason_raw"] == 999


def test_kernel_without_reason_field_reports_unknown():
    e = render(key(reason=0), has_reason=False)
    assert e["event"]["reason"] == "UNKNOWN"
    assert e["netagent"]["drop"]["location"].startswith("fn+")


def test_reason_names_come_from_the_format_file():
    text = ('print fmt: "x", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" })\n'
            "\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n")
    names, source = reason_names(parse_format(text))
    assert names == {2: "NOT_SPECIFIED", 3: "NO_SOCKET"} and source == "tracefs format"



def flow(n: int, count: int, *, reason=3, first=1_000, last=2_000):
    """One drained flow as the sensor holds it: the packed kernel key and its totals."""
    k = FlowTuple(netns=4026532000, ifindex=2, reason=reason, l3=0x0800, l4=17, location=0xFFFFFFFF820490CC,
                  saddr=bytes([10, 1, 0, 1]) + bytes(12), daddr=bytes([10, 1, 0, 2]) + bytes(12),
                  sport=40000, dport=20000 + n)
    return k.pack(), [count, count * 36, first, last]


def test_the_busiest_flows_stay_and_the_rest_add_up_per_reason_and_place():
    flows = dict(flow(n, count=1 + n % 7, first=1_000 + n, last=5_000 - n) for n in range(300))
    flows.update(flow(1000 + n, count=2, reason=12) for n in range(20))  # a second reason: its own summary
    kept, summaries = summarize_flows(flows, 50)
    assert len(kept) == 50
    kept_ports = {k.dport for k, _ in kept}
    unkept = [(k, v) for k, v in unpacked(flows) if k.dport not in kept_ports]
    assert min(v.count for _, v in kept) >= max(v.count for _, v in unkept)  # the busiest are the ones kept
    assert all(k.saddr == bytes([10, 1, 0, 1]) + bytes(12) and k.sport == 40000 for k, _ in kept)  # unpacked whole
    by_reason = {k.reason: (k, v, n) for k, v, n in summaries}
    assert set(by_reason) == {3, 12}  # the 50 busiest have 6 or 7 drops: all of reason 12's (2 each) are summed
    assert by_reason[12][1].count == 40 and by_reason[12][2] == 20
    assert sum(n for _, _, n in summaries) + len(kept) == 320  # every flow in exactly one event
    total = sum(v[0] for v in flows.values())
    assert sum(v.count for _, v, _ in summaries) + sum(v.count for _, v in kept) == total
    assert sum(v.bytes for _, v, _ in summaries) + sum(v.bytes for _, v in kept) == total * 36
    key, totals, _ = by_reason[3]
    summed = [v for k, v in unkept if k.reason == 3]
    assert totals.first_ns == min(v.first_ns for v in summed) and totals.last_ns == max(v.last_ns for v in summed)
    assert (key.netns, key.ifindex, key.l3, key.l4, key.location) == (4026532000, 2, 0x0800, 17, 0xFFFFFFFF820490CC)
    assert key.sport == key.dport == 0 and key.saddr == key.daddr == bytes(16)


def test_a_summary_event_names_what_its_flows_share_and_how_many_they_are():
    (key, totals, n), = summarize_flows(dict(flow(n, count=2) for n in range(5)), 1)[1]
    e = render_flow(key, totals, reasons=REASONS, has_reason=True, symbolize=lambda a: "fn+0xcc", interface=None,
                    netns_name=None, to_wall=lambda ns: 1_700_000_000 + ns / 1e9, now=1_700_000_010.0, flows=n)
    assert n == 4
    assert "source" not in e and "destination" not in e
    assert e["network"] == {"type": "ipv4", "transport": "udp", "iana_number": "17"}
    assert e["event"]["reason"] == "NO_SOCKET" and e["event"]["action"] == "packet-dropped"
    d = e["netagent"]["drop"]
    assert d["flows"] == 4 and d["count"] == 8 and d["ifindex"] == 2 and d["netns"] == 4026532000
    orjson.dumps(e)
