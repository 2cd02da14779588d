"""The query engine end to end on loopback (no privileges): patterns, loss, TC, hostile packets.

Responders here are small threads on 127.0.0.1/127.0.0.2 written for the
test; the real server (dnsmasq) is exercised by tests/netns/.
"""

import select
import socket
import struct
import threading

import pytest
from dns_lab import HostileResponder, answer, split_query

from netagent.dns.exchange import Server
from netagent.dns.probe import ProbeSettings, run_probe
from netagent.dns.resolvconf import parse

pytestmark = pytest.mark.timeout(60)


class Responder:
    """UDP (and optionally TCP) DNS responder on loopback with knobs for misbehaviour."""

    def __init__(self, drop_types=(), truncate=False, addresses=("10.1.1.1", "fd00::1")):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = None
        if truncate:
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind(("127.0.0.1", self.port))
            self.tcp.listen(8)
        self.drop_types = set(drop_types)
        self.truncate = truncate
        self.addresses = list(addresses)
        self.seen: list[tuple[int, int]] = []  # (client port, qtype)
        self.tcp_queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        socks = [self.udp] + ([self.tcp] if self.tcp else [])
        while not self._stop.is_set():
            ready, _, _ = select.select(socks, [], [], 0.05)
            for s in ready:
                if s is self.udp:
                    query, client = self.udp.recvfrom(65535)
                    _, _, qtype = split_query(query)
                    self.seen.append((client[1], qtype))
                    if qtype in self.drop_types:
                        continue
                    flags = 0x8380 if self.truncate else 0x8180
                    self.udp.sendto(answer(query, self.addresses, flags=flags), client)
                else:
                    conn, _ = self.tcp.accept()
                    with conn:
                        conn.settimeout(2)
                        data = b""
                        while True:
                            while len(data) >= 2 and len(data) >= 2 + struct.unpack_from("!H", data)[0]:
                                n = struct.unpack_from("!H", data)[0]
                                query, data = data[2:2 + n], data[2 + n:]
                                self.tcp_queries += 1
                                reply = answer(query, self.addresses)
                                conn.sendall(struct.pack("!H", len(reply)) + reply)
                            try:
                                chunk = conn.recv(4096)
                            except OSError:
                                break
                            if not chunk:
                                break
                            data += chunk

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.udp.close()
        if self.tcp:
            self.tcp.close()


@pytest.fixture
def responder_factory():
    made = []

    def make(**kwargs):
        r = Responder(**kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def settings(port, **kwargs):
    base = dict(
        name="www.lab.test.",
        servers=[Server("127.0.0.1", port)],
        conf=parse("nameserver 127.0.0.1\n", hostname="h"),
        count=3,
        interval=0.0,
        timeout=0.3,
    )
    base.update(kwargs)
    return ProbeSettings(**base)


def tally(result, qtype, name="www.lab.test."):
    return result.servers[0].candidates[name].tallies[qtype]


def test_parallel_same_socket_sends_the_pair_from_one_port(responder_factory):
    r = responder_factory()
    result = run_probe(settings(r.port, mode="parallel-same-socket"))
    assert tally(result, "A").answered == 3 and tally(result, "AAAA").answered == 3
    assert tally(result, "A").resolved_ips == ["10.1.1.1"]
    assert tally(result, "AAAA").resolved_ips == ["fd00::1"]
    ports = [p for p, _ in r.seen]
    assert len(ports) == 6
    assert [ports[i] == ports[i + 1] for i in range(0, 6, 2)] == [True] * 3
    lookups = result.servers[0].lookup_ns
    assert len(lookups) == 3 and all(0 < ns < 0.3e9 for ns in lookups)


def test_parallel_sockets_uses_two_ports(responder_factory):
    r = responder_factory()
    run_probe(settings(r.port, mode="parallel-sockets", count=2))
    ports = [p for p, _ in r.seen]
    assert ports[0] != ports[1] and ports[2] != ports[3]


def test_lost_twin_on_one_socket_is_the_race_signature(responder_factory):
    r = responder_factory(drop_types={28})  # the server never answers AAAA
    result = run_probe(settings(r.port, mode="parallel-same-socket", count=4))
    race = result.servers[0].candidates["www.lab.test."].race
    assert tally(result, "AAAA").timeouts == 4 and tally(result, "A").answered == 4
    assert race.suspected and race.race == 4 and race.pairs == 4
    assert race.examples[0]["lost"] == "AAAA" and race.examples[0]["answered"] == "A"
    # the lookup waits for the lost twin: every round costs the full timeout
    lookups = result.servers[0].lookup_ns
    assert len(lookups) == 4 and min(lookups) >= 0.3e9


@pytest.mark.parametrize("mode", ["parallel-sockets", "sequential"])
def test_lost_twin_without_the_shared_socket_is_not_the_signature(responder_factory, mode):
    r = responder_factory(drop_types={28})
    result = run_probe(settings(r.port, mode=mode, count=2))
    race = result.servers[0].candidates["www.lab.test."].race
    assert tally(result, "AAAA").timeouts == 2
    assert not race.suspected and race.one_lost == 2


def test_sequential_waits_for_a_before_sending_aaaa(responder_factory):
    r = responder_factory(drop_types={1})  # A is lost: AAAA only goes out after A's timeout
    result = run_probe(settings(r.port, mode="sequential", count=1, timeout=0.2))
    a = tally(result, "A")
    assert a.timeouts == 1
    assert result.duration_s >= 0.2
    assert [q for _, q in r.seen] == [1, 28]


def test_truncated_answer_is_retried_over_tcp(responder_factory):
    r = responder_factory(truncate=True)
    result = run_probe(settings(r.port, types=("A",), count=2))
    t = tally(result, "A")
    assert t.truncated == 2 and t.tcp_retries == 2 and t.tcp_retry_answered == 2
    assert t.answered == 2 and t.resolved_ips == ["10.1.1.1"]
    assert r.tcp_queries == 2


def test_port_unreachable_is_refused_not_a_timeout():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: the kernel answers ICMP port unreachable
    result = run_probe(settings(port, types=("A",), count=1, timeout=2.0))
    t = tally(result, "A")
    assert t.refused == 1 and t.timeouts == 0
    assert result.duration_s < 1.0
    assert result.servers[0].walks[0].result.value == "connection-refused"


def test_hostile_packets_are_counted_and_the_genuine_answer_still_wins():
    main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    main.bind(("127.0.0.1", 0))
    port = main.getsockname()[1]
    other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_port.bind(("127.0.0.1", 0))
    other_addr = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_addr.bind(("127.0.0.2", port))
    h = HostileResponder(main, other_port, other_addr)
    try:
        result = run_probe(settings(port, types=("A",), count=3, timeout=1.0))
    finally:
        h.stop()
    t = tally(result, "A")
    per_query = h.expected_invalid_per_query()
    assert t.answered == 3 and t.resolved_ips == ["10.9.9.9"]
    assert t.invalid_total == 3 * per_query
    assert t.invalid["wrong_source"] == 6
    assert t.invalid["bad_compression_pointer"] == 3 and t.invalid["control_characters_in_name"] == 3
    assert h.errors == []
