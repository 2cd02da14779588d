"""Probe crafting and answer matching, with answers built the way routers and kernels build them."""

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6PacketTooBig, IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from netagent.mtu.packets import ProbeFactory, min_probe_size
from netagent.mtu.search import ERROR, OK, TOO_BIG

SRC, DST, ROUTER = "10.1.0.2", "10.2.0.2", "10.1.0.1"
SRC6, DST6, ROUTER6 = "fd01::2", "fd02::2", "fd01::1"


def factory(proto="icmp", family=4, port=None):
    src, dst = (SRC, DST) if family == 4 else (SRC6, DST6)
    return ProbeFactory(family, proto, src, dst, port, rng=random.Random(7))


def icmp_error(probe: bytes, *, type_=3, code=4, mtu=0, sender=ROUTER, quote=28) -> bytes:
    # Routers quote the IP header and at least 8 bytes of the datagram (RFC 792)
    return bytes(IP(src=sender, dst=SRC) / ICMP(type=type_, code=code, nexthopmtu=mtu) / probe[:quote])


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("proto", ["icmp", "udp", "tcp"])
@pytest.mark.parametrize("size", [None, 1280, 1500, 9000])
def test_probe_is_exactly_the_size_asked(family, proto, size):
    f = factory(proto, family)
    size = size or f.min_size
    wire = f.build(size, f.new_tag())
    assert len(wire) == size
    if family == 4:
        pkt = IP(wire)
        assert pkt.flags.DF and pkt.len == size and pkt.dst == DST
    else:
        pkt = IPv6(wire)
        assert pkt.plen == size - 40 and pkt.dst == DST6


def test_min_sizes():
    assert min_probe_size(4, "icmp") == 28 and min_probe_size(4, "tcp") == 40 and min_probe_size(6, "udp") == 48
    with pytest.raises(ValueError):
        factory().build(27, 1)


def test_tcp_probe_is_a_syn_with_data_and_a_unique_port():
    f = factory("tcp", port=443)
    a, b = f.build(1400, f.new_tag()), f.build(1400, f.new_tag())
    ta, tb = IP(a)[TCP], IP(b)[TCP]
    assert ta.flags == "S" and ta.dport == 443 and len(ta.payload) == 1400 - 40
    assert ta.sport != tb.sport


def test_echo_reply_matches_its_probe():
    f = factory()
    tag = f.new_tag()
    f.build(1400, tag)
    reply = bytes(IP(src=DST, dst=SRC) / ICMP(type=0, id=f.ident, seq=tag) / (b"\0" * 1372))
    ans = f.match_icmp(reply, DST)
    assert ans.tag == tag and ans.outcome.kind == OK


def test_echo_reply_of_someone_else_is_ignored():
    f = factory()
    tag = f.new_tag()
    other_ident = bytes(IP(src=DST, dst=SRC) / ICMP(type=0, id=(f.ident + 1) & 0xFFFF, seq=tag))
    assert f.match_icmp(other_ident, DST) is None
    spoofed_source = bytes(IP(src="10.9.9.9", dst=SRC) / ICMP(type=0, id=f.ident, seq=tag))
    assert f.match_icmp(spoofed_source, "10.9.9.9") is None


def test_frag_needed_quoting_the_probe():
    f = factory()
    tag = f.new_tag()
    probe = f.build(1500, tag)
    ans = f.match_icmp(icmp_error(probe, mtu=1400), ROUTER)
    assert ans.tag == tag
    assert (ans.outcome.kind, ans.outcome.mtu, ans.outcome.sender, ans.encap_bytes) == (TOO_BIG, 1400, ROUTER, 0)


def test_frag_needed_quoting_another_flow_is_not_ours():
    f = factory()
    other = bytes(IP(src=SRC, dst="10.3.3.3", flags="DF") / ICMP(type=8, id=f.ident, seq=1) / (b"x" * 1472))
    assert f.match_icmp(icmp_error(other, mtu=1400), ROUTER) is None


def test_frag_needed_for_our_encapsulated_probe_gives_the_inner_mtu():
    # A VXLAN device with `df set` refuses the outer packet; the ICMP from
    # our own underlay address quotes IP/UDP/VXLAN/Ethernet/our probe.
    f = factory()
    tag = f.new_tag()
    probe = f.build(1500, tag)
    outer = IP(src="192.168.50.1", dst="192.168.50.2", flags="DF") / UDP(sport=40000, dport=4789) / \
        VXLAN(vni=42) / Ether() / IP(probe)
    wire = bytes(IP(src="192.168.50.1", dst="192.168.50.1") / ICMP(type=3, code=4, nexthopmtu=1500) / bytes(outer)[:548])
    ans = f.match_icmp(wire, "192.168.50.1")
    assert ans.tag == tag and ans.encap_bytes == 50
    assert ans.outcome.kind == TOO_BIG and ans.outcome.mtu == 1450


def test_udp_port_unreachable_from_the_target_means_arrived():
    f = factory("udp")
    tag = f.new_tag()
    probe = f.build(1400, tag)
    ans = f.match_icmp(icmp_error(probe, code=3, sender=DST), DST)
    assert ans.tag == tag and ans.outcome.kind == OK


def test_host_unreachable_from_a_router_is_an_error_with_its_name():
    f = factory("udp")
    tag = f.new_tag()
    probe = f.build(1400, tag)
    ans = f.match_icmp(icmp_error(probe, code=1), ROUTER)
    assert (ans.outcome.kind, ans.outcome.detail, ans.outcome.sender) == (ERROR, "host-unreachable", ROUTER)
    te = f.match_icmp(icmp_error(probe, type_=11, code=0), ROUTER)
    assert te.outcome.detail == "time-exceeded"


@pytest.mark.parametrize("flags", ["SA", "RA", "R"])
def test_tcp_synack_or_rst_from_the_target_means_arrived(flags):
    f = factory("tcp", port=443)
    tag = f.new_tag()
    sport = IP(f.build(1400, tag))[TCP].sport
    seg = bytes(IP(src=DST, dst=SRC) / TCP(sport=443, dport=sport, flags=flags))
    ans = f.match_tcp(seg, DST)
    assert ans.tag == tag and ans.outcome.kind == OK


def test_tcp_segments_that_are_not_answers():
    f = factory("tcp", port=443)
    tag = f.new_tag()
    sport = IP(f.build(1400, tag))[TCP].sport
    assert f.match_tcp(bytes(IP(src=DST, dst=SRC) / TCP(sport=443, dport=sport, flags="A")), DST) is None
    assert f.match_tcp(bytes(IP(src=DST, dst=SRC) / TCP(sport=80, dport=sport, flags="SA")), DST) is None
    assert f.match_tcp(bytes(IP(src=DST, dst=SRC) / TCP(sport=443, dport=1, flags="SA")), DST) is None
    assert f.match_tcp(bytes(IP(src="10.9.9.9", dst=SRC) / TCP(sport=443, dport=sport, flags="SA")), "10.9.9.9") is None


def test_ipv6_packet_too_big():
    f = factory(family=6)
    tag = f.new_tag()
    probe = f.build(1500, tag)
    msg = bytes(ICMPv6PacketTooBig(mtu=1400) / probe[:1232])
    ans = f.match_icmp(msg, ROUTER6)
    assert ans.tag == tag and (ans.outcome.kind, ans.outcome.mtu, ans.outcome.sender) == (TOO_BIG, 1400, ROUTER6)


def test_ipv6_echo_reply_and_port_unreachable():
    f = factory(family=6)
    tag = f.new_tag()
    f.build(1400, tag)
    ans = f.match_icmp(bytes(ICMPv6EchoReply(id=f.ident, seq=tag)), DST6)
    assert ans.tag == tag and ans.outcome.kind == OK
    u = factory("udp", family=6)
    tag = u.new_tag()
    probe = u.build(1400, tag)
    ans = u.match_icmp(bytes(ICMPv6DestUnreach(code=4) / probe[:1232]), DST6)
    assert ans.tag == tag and ans.outcome.kind == OK
    ans = u.match_icmp(bytes(ICMPv6DestUnreach(code=1) / probe[:1232]), ROUTER6)
    assert ans.outcome.kind == ERROR and ans.outcome.detail == "admin-prohibited"


def test_ipv6_addresses_compare_in_any_spelling():
    f = ProbeFactory(6, "icmp", "fd01:0::2", "FD02::0002", rng=random.Random(1))
    tag = f.new_tag()
    f.build(1300, tag)
    assert f.match_icmp(bytes(ICMPv6EchoReply(id=f.ident, seq=tag)), "fd02::2").outcome.kind == OK


def test_hostile_and_malformed_input_never_raises():
    rng = random.Random(42)
    for family in (4, 6):
        for proto in ("icmp", "udp", "tcp"):
            f = factory(proto, family)
            tag = f.new_tag()
            probe = f.build(1400, tag)
            samples = [b"", b"\x03", b"\x45" * 3, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))]
            samples += [probe[:n] for n in (1, 10, 19, 20, 27)]
            samples += [icmp_error(probe, mtu=1400)[:n] for n in range(0, 56, 3)]
            samples += [bytes(rng.randrange(256) for _ in range(64)) for _ in range(200)]
            for data in samples:
                f.match_icmp(data, ROUTER if family == 4 else ROUTER6)
                f.match_tcp(data, DST if family == 4 else DST6)


def test_tags_are_distinct_across_many_probes():
    f = factory("udp")
    ports = set()
    for _ in range(500):
        ports.add(IP(f.build(100, f.new_tag()))[UDP].sport)
    assert len(ports) == 500
