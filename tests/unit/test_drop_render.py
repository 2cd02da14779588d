"""Turning one aggregated kernel flow into the documented ECS event."""

import ipaddress
from types import SimpleNamespace

import orjson

from netagent.probes.drops import render_flow, reason_names
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
