"""Probe packets: crafted with scapy, and every answer matched back to its probe.

A probe is a whole IP packet of exactly the size under test, IPv4 with DF
set (IPv6 routers never fragment). Each probe carries a tag that any answer
quotes back: the ICMP echo sequence number, or the UDP/TCP source port.
An answer is one of:

    arrival    echo reply, ICMP port unreachable from the target (UDP),
               SYN-ACK or RST from the target (TCP)
    too big    ICMP frag-needed / ICMPv6 Packet Too Big quoting the probe,
               with the MTU the sender announced
    error      any other ICMP error quoting the probe (host unreachable,
               administratively prohibited, time exceeded)

The quoted probe may sit inside an encapsulation when our own tunnel
device refused the outer packet (a VXLAN with `df set` quotes
IP/UDP/VXLAN/Ethernet/IP/ICMP): we find the probe at any depth, and
translate the announced outer MTU into the inner one by subtracting the
encapsulation bytes in front of the probe.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

# Only the layers we need: `import scapy.all` costs ~0.8 s more.
import scapy.layers.l2  # noqa: F401 - binds GRE/Ethernet for dissecting tunnelled quotes
import scapy.layers.vxlan  # noqa: F401 - binds UDP 4789 -> VXLAN for the same reason
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6Unknown,
    IPv6,
    icmp6typescls,
)
from scapy.packet import Raw

from netagent.mtu.search import ERROR, OK, PROTOS, TOO_BIG, Outcome  # noqa: F401 - PROTOS re-exported

DEFAULT_PORTS = {"udp": 33434, "tcp": 443}  # traceroute's first port; TLS, whose handshakes hang first

IPV4_HEADER = 20
IPV6_HEADER = 40
TRANSPORT_HEADER = {"icmp": 8, "udp": 8, "tcp": 20}

# ICMP (v4) types/codes
ICMP_ECHOREPLY, ICMP_UNREACH, ICMP_ECHO, ICMP_TIMXCEED, ICMP_PARAMPROB = 0, 3, 8, 11, 12
ICMP_PORT_UNREACH, ICMP_FRAG_NEEDED = 3, 4
# ICMPv6
ICMP6_UNREACH, ICMP6_PKT_TOOBIG, ICMP6_TIMXCEED, ICMP6_PARAMPROB = 1, 2, 3, 4
ICMP6_ECHO_REPLY = 129
ICMP6_PORT_UNREACH = 4

_UNREACH4 = {0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable", 3: "port-unreachable",
             4: "fragmentation-needed", 5: "source-route-failed", 6: "net-unknown", 7: "host-unknown",
             9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
_UNREACH6 = {0: "no-route", 1: "admin-prohibited", 2: "beyond-scope", 3: "address-unreachable",
             4: "port-unreachable", 5: "source-policy-failed", 6: "reject-route"}


def min_probe_size(family: int, proto: str) -> int:
    """The smallest whole packet a probe can be: IP header plus transport header."""
    return (IPV4_HEADER if family == 4 else IPV6_HEADER) + TRANSPORT_HEADER[proto]


@dataclass(frozen=True)
class Answer:
    """A received packet that belongs to one of our probes."""

    tag: int
    outcome: Outcome
    encap_bytes: int = 0  # bytes of encapsulation quoted in front of our probe


def _inner_mtu(announced: int, encap: int) -> tuple[int | None, str | None]:
    """The MTU our probe meets when the refused packet was our probe inside `encap` bytes of tunnel."""
    if not announced:
        return None, None
    if not encap:
        return announced, None
    return announced - encap, f"outer MTU {announced} - {encap} bytes encap"


def _norm(addr: str) -> str:
    return str(ipaddress.ip_address(addr.split("%", 1)[0]))


class ProbeFactory:
    """Builds probes of exact sizes from `src` to `dst` and recognises their answers."""

    def __init__(self, family: int, proto: str, src: str, dst: str, port: int | None = None,
                 rng: random.Random | None = None):
        if proto not in PROTOS:
            raise ValueError(f"unknown probe protocol {proto!r}")
        self.family, self.proto = family, proto
        self.src, self.dst = _norm(src), _norm(dst)
        self.port = port if port is not None else DEFAULT_PORTS.get(proto)
        rng = rng or random.SystemRandom()
        # Random bases so two runs (the daemon and an operator's CLI) probing
        # the same target never claim each other's answers.
        self.ident = rng.randrange(1, 0xFFFF)
        self._next_tag = rng.randrange(0, 0xFFFF)
        self._port_base = rng.randrange(33000, 60000)
        self._sport_to_tag: dict[int, int] = {}
        self._isn = rng.randrange(0, 2**32)

    @property
    def min_size(self) -> int:
        return min_probe_size(self.family, self.proto)

    def new_tag(self) -> int:
        self._next_tag = (self._next_tag + 1) & 0xFFFF
        return self._next_tag

    def _sport(self, tag: int) -> int:
        # A distinct source port per probe (within 33000-61999): answers
        # that quote only the transport header still name their probe.
        sport = 33000 + (self._port_base - 33000 + tag) % 29000
        self._sport_to_tag[sport] = tag
        return sport

    def build(self, size: int, tag: int) -> bytes:
        """The probe with `tag`, exactly `size` bytes on the wire (IP header included)."""
        if size < self.min_size:
            raise ValueError(f"probe size {size} is below the {self.min_size}-byte headers")
        if self.family == 4:
            # DF: no router may fragment it. TTL 64 like the kernel's default.
            ip = IP(src=self.src, dst=self.dst, flags="DF", id=tag, ttl=64)
        else:
            ip = IPv6(src=self.src, dst=self.dst, hlim=64)
        if self.proto == "icmp":
            l4 = ICMP(type=ICMP_ECHO, id=self.ident, seq=tag) if self.family == 4 else \
                ICMPv6EchoRequest(id=self.ident, seq=tag)
        elif self.proto == "udp":
            l4 = UDP(sport=self._sport(tag), dport=self.port)
        else:
            # A SYN carrying data: servers answer SYN-ACK (ignoring the data)
            # or RST, both of which prove the full-size segment arrived.
            l4 = TCP(sport=self._sport(tag), dport=self.port, flags="S", seq=(self._isn + tag) & 0xFFFFFFFF,
                     window=64240)
        pad = size - min_probe_size(self.family, self.proto)
        pkt = ip / l4 / Raw(b"\x00" * pad) if pad else ip / l4
        wire = bytes(pkt)
        assert len(wire) == size, (len(wire), size)
        return wire

    # -- answers ------------------------------------------------------------

    def match_icmp(self, data: bytes, sender: str) -> Answer | None:
        """An ICMP (v4: with IP header) or ICMPv6 (without) message, or None if not ours."""
        try:
            if self.family == 4:
                return self._match_icmp4(IP(data), _norm(sender))
            return self._match_icmp6(data, _norm(sender))
        except Exception:  # a malformed packet is simply not ours
            return None

    def match_tcp(self, data: bytes, sender: str) -> Answer | None:
        """A TCP segment (v4: with IP header) from the target answering a probe."""
        if self.proto != "tcp" or _norm(sender) != self.dst:
            return None
        try:
            seg = IP(data)[TCP] if self.family == 4 else TCP(data)
        except Exception:
            return None
        if seg.sport != self.port or seg.dport not in self._sport_to_tag:
            return None
        flags = int(seg.flags)
        syn_ack = flags & 0x12 == 0x12
        rst = bool(flags & 0x04)
        if not (syn_ack or rst):
            return None
        return Answer(self._sport_to_tag[seg.dport], Outcome(OK, sender=self.dst))

    def _match_icmp4(self, pkt, sender: str) -> Answer | None:
        if ICMP not in pkt:
            return None
        icmp = pkt[ICMP]
        if icmp.type == ICMP_ECHOREPLY:
            if self.proto != "icmp" or icmp.id != self.ident or sender != self.dst:
                return None
            return Answer(icmp.seq, Outcome(OK, sender=sender))
        if icmp.type not in (ICMP_UNREACH, ICMP_TIMXCEED, ICMP_PARAMPROB):
            return None
        found = self._find_probe(icmp.payload, bytes(icmp.payload))
        if found is None:
            return None
        tag, encap = found
        if icmp.type == ICMP_UNREACH and icmp.code == ICMP_FRAG_NEEDED:
            mtu, detail = _inner_mtu(icmp.nexthopmtu, encap)
            return Answer(tag, Outcome(TOO_BIG, mtu=mtu, sender=sender, detail=detail), encap)
        if (icmp.type == ICMP_UNREACH and icmp.code == ICMP_PORT_UNREACH and self.proto == "udp"
                and sender == self.dst and not encap):
            return Answer(tag, Outcome(OK, sender=sender))
        if icmp.type == ICMP_UNREACH:
            detail = _UNREACH4.get(icmp.code, f"unreachable-code-{icmp.code}")
        elif icmp.type == ICMP_TIMXCEED:
            detail = "time-exceeded"
        else:
            detail = "parameter-problem"
        return Answer(tag, Outcome(ERROR, sender=sender, detail=detail), encap)

    def _match_icmp6(self, data: bytes, sender: str) -> Answer | None:
        if not data:
            return None
        kind = data[0]
        cls = icmp6typescls.get(kind, ICMPv6Unknown)
        msg = cls(data)
        if kind == ICMP6_ECHO_REPLY:
            if self.proto != "icmp" or not isinstance(msg, ICMPv6EchoReply):
                return None
            if msg.id != self.ident or sender != self.dst:
                return None
            return Answer(msg.seq, Outcome(OK, sender=sender))
        if kind not in (ICMP6_UNREACH, ICMP6_PKT_TOOBIG, ICMP6_TIMXCEED, ICMP6_PARAMPROB):
            return None
        found = self._find_probe(msg.payload, bytes(msg.payload))
        if found is None:
            return None
        tag, encap = found
        if kind == ICMP6_PKT_TOOBIG:
            mtu, detail = _inner_mtu(msg.mtu, encap)
            return Answer(tag, Outcome(TOO_BIG, mtu=mtu, sender=sender, detail=detail), encap)
        if kind == ICMP6_UNREACH and msg.code == ICMP6_PORT_UNREACH and self.proto == "udp" \
                and sender == self.dst and not encap:
            return Answer(tag, Outcome(OK, sender=sender))
        if kind == ICMP6_UNREACH:
            detail = _UNREACH6.get(msg.code, f"unreachable-code-{msg.code}")
        elif kind == ICMP6_TIMXCEED:
            detail = "time-exceeded"
        else:
            detail = "parameter-problem"
        return Answer(tag, Outcome(ERROR, sender=sender, detail=detail), encap)

    def _find_probe(self, quoted, quoted_bytes: bytes) -> tuple[int, int] | None:
        """(tag, encapsulation bytes) of our probe quoted in an ICMP error, at any depth."""
        layer = quoted
        ip_cls = IP if self.family == 4 else IPv6
        while layer is not None and not isinstance(layer, Raw) and layer.__class__.__name__ != "NoPayload":
            if isinstance(layer, ip_cls):
                tag = self._tag_in(layer)
                if tag is not None:
                    encap = len(quoted_bytes) - len(bytes(layer))
                    return tag, max(encap, 0)
            layer = layer.payload
        return None

    def _tag_in(self, ip) -> int | None:
        """Our tag if this quoted IP header (and what follows) is one of our probes."""
        try:
            if _norm(ip.dst) != self.dst:
                return None
        except ValueError:
            return None
        l4 = ip.payload
        if self.proto == "icmp":
            if self.family == 4 and isinstance(l4, ICMP) and l4.type == ICMP_ECHO and l4.id == self.ident:
                return l4.seq
            if self.family == 6 and isinstance(l4, ICMPv6EchoRequest) and l4.id == self.ident:
                return l4.seq
            return None
        cls = UDP if self.proto == "udp" else TCP
        if isinstance(l4, cls) and l4.dport == self.port and l4.sport in self._sport_to_tag:
            return self._sport_to_tag[l4.sport]
        return None
