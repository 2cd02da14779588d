"""Search expansion against the real glibc resolver, judged by what dnsmasq logged.

The client namespace gets /etc/netns/<ns>/resolv.conf with ndots:5 and three
search domains. glibc's getaddrinfo runs inside the namespace (through
`ip netns exec`, which bind-mounts that file over /etc/resolv.conf) and
dnsmasq logs every name it is asked; then netagent runs with --netns and the
same file, and must predict -- and itself send -- the same names in the
same order.
"""

import pytest
from dns_lab import SERVER_IP, DnsLab, json_events, run_netagent

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

SEARCH = ("a.lab.test", "b.lab.test", "c.lab.test")
HOSTS = {"www.b.lab.test": ["10.2.2.2"], "svc.c.lab.test": ["10.3.3.3"], "www.lab.test": ["10.1.1.1"]}

GETADDRINFO = (
    "import socket, sys\n"
    "try:\n"
    "    socket.getaddrinfo(sys.argv[1], None, proto=socket.IPPROTO_UDP)\n"
    "    print('found')\n"
    "except socket.gaierror as e:\n"
    "    print('error', e.errno)\n"
)


@pytest.fixture
def lab(netns_factory, tmp_path):
    lab = DnsLab(netns_factory, tmp_path)
    # "#": every name is local, so names outside lab.test get NXDOMAIN, not REFUSED
    lab.server_dnsmasq = lab.dnsmasq(HOSTS, local_domains=("#",))
    yield lab
    lab.close()


def glibc_lookup(lab, name):
    """Run the real resolver in the client namespace; return what the server saw, in order."""
    server = lab.server_dnsmasq
    mark = server.mark()
    out = lab.client.run("/usr/bin/python3", "-c", GETADDRINFO, name, timeout=60).stdout.strip()
    return out, server.queries(mark)


def netagent_lookup(lab, netagent_bin, name, *extra):
    server = lab.server_dnsmasq
    mark = server.mark()
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, name, "--count", "1",
                     "--timeout", "2s", "-o", "json", *extra)
    assert r.returncode == 0, r.stderr
    return json_events(r.stdout), server.queries(mark)


def names_in_order(logged):
    """Names the server was asked, one per lookup step (A and AAAA of a step collapse)."""
    out = []
    for q in logged:
        if not out or out[-1] != q.name:
            out.append(q.name)
    return out


@pytest.mark.parametrize(
    "name, expected",
    [
        # fewer than ndots dots: each search domain first, the name as is last
        ("nothere", [f"nothere.{d}" for d in SEARCH] + ["nothere"]),
        ("api.example.com", [f"api.example.com.{d}" for d in SEARCH] + ["api.example.com"]),
        # five dots >= ndots:5: as is first, then the search list
        ("a.b.c.d.e.f", ["a.b.c.d.e.f"] + [f"a.b.c.d.e.f.{d}" for d in SEARCH]),
        # trailing dot: absolute, as is only
        ("api.example.com.", ["api.example.com"]),
    ],
)
def test_expansion_of_a_missing_name_matches_glibc(lab, netagent_bin, name, expected):
    lab.resolv_conf(f"nameserver {SERVER_IP}\nsearch {' '.join(SEARCH)}\noptions ndots:5\n")
    result, glibc_log = glibc_lookup(lab, name)
    assert result.startswith("error")
    assert names_in_order(glibc_log) == expected  # the rules above are what glibc really does

    events, our_log = netagent_lookup(lab, netagent_bin, name)
    # what we predicted
    expansion = events[0]["netagent"]["dns"]["search_expansion"]
    assert [n.rstrip(".") for n in expansion] == expected
    assert [n.rstrip(".") for n in events[0]["netagent"]["dns"]["resolver_walk"]] == expected
    assert events[0]["netagent"]["dns"]["resolver_result"] == "NXDOMAIN"
    # what we sent, as the server saw it: same names, same order, A then AAAA
    assert [(q.name, q.qtype) for q in our_log] == [(q.name, q.qtype) for q in glibc_log]
    # like glibc, each pair shares a source port; each step a new socket
    for logged in (glibc_log, our_log):
        ports = [q.port for q in logged]
        assert all(ports[i] == ports[i + 1] for i in range(0, len(ports), 2))
        assert len(set(ports[::2])) == len(ports) // 2
    # one event per name and type, indexed by its place in the expansion
    assert sorted((e["netagent"]["dns"]["candidate_index"], e["dns"]["question"]["type"]) for e in events) == [
        (i, t) for i in range(len(expected)) for t in ("A", "AAAA")]


@pytest.mark.parametrize(
    "name, walk",
    [
        ("www", ["www.a.lab.test", "www.b.lab.test"]),
        ("svc", ["svc.a.lab.test", "svc.b.lab.test", "svc.c.lab.test"]),
    ],
)
def test_walk_stops_where_glibc_stops(lab, netagent_bin, name, walk):
    lab.resolv_conf(f"nameserver {SERVER_IP}\nsearch {' '.join(SEARCH)}\noptions ndots:5\n")
    result, glibc_log = glibc_lookup(lab, name)
    assert result == "found"
    assert names_in_order(glibc_log) == walk

    events, our_log = netagent_lookup(lab, netagent_bin, name)
    d = events[0]["netagent"]["dns"]
    assert [n.rstrip(".") for n in d["resolver_walk"]] == walk
    assert d["resolver_answer"].rstrip(".") == walk[-1]
    assert names_in_order(our_log) == walk  # and we did not query past it
    # --all-candidates goes on through the rest of the expansion, the prediction stays
    events, our_log = netagent_lookup(lab, netagent_bin, name, "--all-candidates")
    assert names_in_order(our_log) == [f"{name}.{d}" for d in SEARCH] + [name]
    assert [n.rstrip(".") for n in events[0]["netagent"]["dns"]["resolver_walk"]] == walk


def test_single_request_is_sequential_on_one_socket_like_glibc(lab, netagent_bin):
    lab.resolv_conf(f"nameserver {SERVER_IP}\nsearch {SEARCH[0]}\noptions ndots:5 single-request\n")
    _, glibc_log = glibc_lookup(lab, "nothere")
    events, our_log = netagent_lookup(lab, netagent_bin, "nothere")
    assert events[0]["netagent"]["dns"]["mode"] == "sequential"
    assert [(q.name, q.qtype) for q in our_log] == [(q.name, q.qtype) for q in glibc_log]
    for logged in (glibc_log, our_log):
        assert logged[0].port == logged[1].port


def test_domain_from_hostname_when_no_search_line(lab, netagent_bin):
    # glibc takes the search domain from the host name of the namespace's
    # UTS namespace; ours is the host's, so this only checks the resolv.conf
    # without search/domain gives no search list when the host name has no dot
    import socket

    lab.resolv_conf(f"nameserver {SERVER_IP}\noptions ndots:1\n")
    events, our_log = netagent_lookup(lab, netagent_bin, "nothere")
    hostname = socket.gethostname()
    expected = ["nothere"] if "." not in hostname else [f"nothere.{hostname.split('.', 1)[1]}", "nothere"]
    assert names_in_order(our_log) == expected
    _, glibc_log = glibc_lookup(lab, "nothere")
    assert names_in_order(glibc_log) == expected
