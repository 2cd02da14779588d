"""Raw sockets that send probes past the kernel's PMTU cache and collect answers.

Sending: a raw socket with our own IP header (IPPROTO_RAW) and
IP_MTU_DISCOVER / IPV6_MTU_DISCOVER = PMTUDISC_PROBE. PROBE matters: with
the default (WANT) the kernel checks every packet against the route's
cached PMTU, so after one frag-needed (ours, tracepath's, any
application's) it refuses larger probes locally and answers itself — the
probe would "find" the cached value forever. PROBE checks only the device
MTU, so every probe really goes out and the path answers.

Receiving: one raw ICMP (or ICMPv6) socket with a type filter, plus for
TCP probes one raw TCP socket connected to the target (the kernel then
delivers only the target's segments to it). Answers are matched to probes
by ProbeFactory; the kernel still handles the same packets normally.

Timeouts adapt: until something answers, a probe may take the whole
`timeout`; after that a probe is given up after 4 x the slowest round trip
seen (at least `floor`), doubled for every retry, never more than
`timeout`. Answers that come after their probe was given up are kept and
handed to the search as late outcomes.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time

from netagent.errors import InsufficientPrivilege, ProbeUnavailable
from netagent.mtu.packets import (
    ICMP6_ECHO_REPLY,
    ICMP6_PARAMPROB,
    ICMP6_PKT_TOOBIG,
    ICMP6_TIMXCEED,
    ICMP6_UNREACH,
    ICMP_ECHOREPLY,
    ICMP_PARAMPROB,
    ICMP_TIMXCEED,
    ICMP_UNREACH,
    ProbeFactory,
)
from netagent.mtu.search import ERROR, LOCAL, LOST, OK, TOO_BIG, Outcome

# From linux/in.h, linux/in6.h, linux/icmp.h, linux/icmpv6.h (stable ABI).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_PROBE = 3
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_PROBE = 3
SOL_RAW = 255
ICMP_FILTER = 1
ICMPV6_FILTER = 1

RECV_SIZE = 65536 + 64
DEFAULT_FLOOR = 0.1


def _icmp4_filter() -> bytes:
    """Bit set = drop: keep echo replies and the errors that quote probes."""
    keep = (1 << ICMP_ECHOREPLY) | (1 << ICMP_UNREACH) | (1 << ICMP_TIMXCEED) | (1 << ICMP_PARAMPROB)
    return struct.pack("I", ~keep & 0xFFFFFFFF)


def _icmp6_filter() -> bytes:
    words = [0xFFFFFFFF] * 8
    for t in (ICMP6_UNREACH, ICMP6_PKT_TOOBIG, ICMP6_TIMXCEED, ICMP6_PARAMPROB, ICMP6_ECHO_REPLY):
        words[t >> 5] &= ~(1 << (t & 31)) & 0xFFFFFFFF
    return struct.pack("8I", *words)


class RawProber:
    """The Prober the search drives; open it inside the namespace to probe from."""

    def __init__(self, factory: ProbeFactory, dst_sockaddr: tuple, *, timeout: float, local_mtu: int | None,
                 local_addresses: set[str] | None = None, floor: float = DEFAULT_FLOOR, clock=time.monotonic):
        self.factory = factory
        self.dst_sockaddr = dst_sockaddr
        self.timeout = timeout
        self.floor = min(floor, timeout)
        self.local_mtu = local_mtu
        self.local_addresses = local_addresses or set()
        self.clock = clock
        self.max_rtt: float | None = None
        self._sent: dict[int, tuple[int, float]] = {}  # tag -> (size, send time)
        self._resolved: dict[int, str] = {}  # tag -> outcome kind once decided
        self._late: list[tuple[int, Outcome]] = []
        self._socks: list[socket.socket] = []
        self._open()

    # -- sockets ----------------------------------------------------------

    def _open(self) -> None:
        fam = socket.AF_INET if self.factory.family == 4 else socket.AF_INET6
        try:
            self.send_sock = self._sock(fam, socket.IPPROTO_RAW)
            if fam == socket.AF_INET:
                self.send_sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_PROBE)
                self.icmp_sock = self._sock(fam, socket.IPPROTO_ICMP)
                self.icmp_sock.setsockopt(SOL_RAW, ICMP_FILTER, _icmp4_filter())
            else:
                self.send_sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_PROBE)
                self.icmp_sock = self._sock(fam, socket.IPPROTO_ICMPV6)
                self.icmp_sock.setsockopt(socket.IPPROTO_ICMPV6, ICMPV6_FILTER, _icmp6_filter())
            self.tcp_sock = None
            if self.factory.proto == "tcp":
                self.tcp_sock = self._sock(fam, socket.IPPROTO_TCP)
                # connect() on a raw socket filters input to the target's packets
                self.tcp_sock.connect(self.dst_sockaddr)
        except PermissionError:
            self.close()
            raise InsufficientPrivilege("need root or CAP_NET_RAW to send raw probe packets") from None
        except OSError as exc:
            self.close()
            raise ProbeUnavailable(f"cannot open raw sockets: {exc.strerror or exc}") from None

    def _sock(self, fam: int, proto: int) -> socket.socket:
        s = socket.socket(fam, socket.SOCK_RAW, proto)
        self._socks.append(s)
        s.setblocking(False)
        return s

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # -- the Prober protocol ----------------------------------------------

    def late(self) -> list[tuple[int, Outcome]]:
        out, self._late = self._late, []
        return out

    def wait_for(self, attempt: int) -> float:
        """How long to wait for a probe's answer."""
        if self.max_rtt is None:
            return self.timeout
        base = max(self.floor, 4 * self.max_rtt)
        return min(self.timeout, base * (2 ** attempt))

    def probe(self, sizes: list[int], attempt: int = 0) -> list[Outcome]:
        batch: dict[int, Outcome | None] = {}
        order: list[int] = []
        start = self.clock()
        for size in sizes:
            tag = self.factory.new_tag()
            order.append(tag)
            batch[tag] = None
            wire = self.factory.build(size, tag)
            self._sent[tag] = (size, self.clock())
            immediate = self._send(wire)
            if immediate is not None:
                batch[tag] = immediate
                self._resolved[tag] = immediate.kind
        had_rtt = self.max_rtt is not None
        deadline = start + self.wait_for(attempt)
        while any(v is None for v in batch.values()):
            now = self.clock()
            if now >= deadline:
                # Our own process may have been descheduled: take what the
                # kernel already queued before calling anything lost.
                self._drain(batch)
                break
            socks = [s for s in (self.icmp_sock, self.tcp_sock) if s is not None]
            readable, _, _ = select.select(socks, [], [], deadline - now)
            if readable:
                self._drain(batch)
                if not had_rtt and self.max_rtt is not None:
                    # the first round trip is known: stop waiting the full timeout
                    had_rtt = True
                    deadline = min(deadline, self.clock() + self.wait_for(attempt))
        outcomes = []
        for tag in order:
            outcome = batch[tag] or Outcome(LOST)
            self._resolved.setdefault(tag, outcome.kind)
            outcomes.append(outcome)
        return outcomes

    # -- internals ----------------------------------------------------------

    def _send(self, wire: bytes) -> Outcome | None:
        try:
            self.send_sock.sendto(wire, self.dst_sockaddr)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                # Bigger than the egress device takes: refused before leaving.
                return Outcome(LOCAL, mtu=self.local_mtu, detail="EMSGSIZE")
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EACCES, errno.EPERM, errno.EINVAL,
                             errno.ENOBUFS, errno.EADDRNOTAVAIL):
                return Outcome(ERROR, detail=os.strerror(exc.errno))
            raise ProbeUnavailable(f"cannot send probe: {exc.strerror or exc}") from None
        return None

    def _drain(self, batch: dict[int, Outcome | None]) -> None:
        for sock, is_tcp in ((self.icmp_sock, False), (self.tcp_sock, True)):
            if sock is None:
                continue
            while True:
                try:
                    data, addr = sock.recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break  # e.g. a queued ICMP error on the socket itself
                received = self.clock()
                sender = addr[0]
                answer = self.factory.match_tcp(data, sender) if is_tcp else self.factory.match_icmp(data, sender)
                if answer is None or answer.tag not in self._sent:
                    continue
                self._handle(answer.tag, answer.outcome, received, batch)

    def _handle(self, tag: int, outcome: Outcome, received: float, batch: dict[int, Outcome | None]) -> None:
        size, sent_at = self._sent[tag]
        rtt = max(received - sent_at, 0.0)
        if outcome.kind == TOO_BIG and outcome.sender and outcome.sender in self.local_addresses:
            # Our own stack refused it (e.g. a tunnel whose underlay is too
            # small): the kernel answered itself.
            outcome = Outcome(LOCAL, mtu=outcome.mtu, sender=outcome.sender,
                              detail=outcome.detail or "ICMP from a local address")
        outcome = Outcome(outcome.kind, mtu=outcome.mtu, sender=outcome.sender, rtt=rtt, detail=outcome.detail)
        if outcome.kind == OK:
            # only the target's own answers: a near router's quick ICMP says
            # nothing about how long the target takes
            self.max_rtt = rtt if self.max_rtt is None else max(self.max_rtt, rtt)
        if tag in batch:
            if batch[tag] is None:
                batch[tag] = outcome
                self._resolved[tag] = outcome.kind
            return
        if self._resolved.get(tag) == LOST:
            # Given up too early: let the search correct itself.
            self._resolved[tag] = outcome.kind
            self._late.append((size, outcome))
