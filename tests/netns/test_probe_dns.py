"""`netagent probe dns` against a real dnsmasq in a namespace, compared with dig.

client ns (10.53.0.1, fd53::1) <-veth-> server ns (10.53.0.2, fd53::2, 10.53.0.3)
"""

import os
import statistics
import subprocess

import pytest
from dns_lab import (
    SERVER_IP,
    SERVER_IP6,
    SPARE_IP,
    DelayProxy,
    DnsLab,
    by_question,
    dig,
    dig_answers,
    dig_query_time_ms,
    json_events,
    run_netagent,
)

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

HOSTS = {
    "www.lab.test": ["10.1.1.1", "10.1.1.2", "fd00::11"],
    "v4only.lab.test": ["10.1.2.1"],
    # 40 A records: 12 + 18 + 40 * 16 = 670 octets, over the 512 of a plain UDP answer
    "big.lab.test": [f"10.2.0.{i}" for i in range(1, 41)],
}


@pytest.fixture
def lab(netns_factory, tmp_path):
    lab = DnsLab(netns_factory, tmp_path, ipv6=True)
    lab.dnsmasq(HOSTS, listen=(SERVER_IP, SERVER_IP6))
    yield lab
    lab.close()


def probe(netagent_bin, lab, *args, timeout=120):
    # a wide "terminal" so table rows are not cut to the caller's COLUMNS
    return run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, *args, timeout=timeout,
                        env={**os.environ, "COLUMNS": "250"})


def test_answers_and_rcodes_agree_with_dig(lab, netagent_bin):
    r = probe(netagent_bin, lab, "www.lab.test.", "--server", SERVER_IP, "--count", "3", "--interval", "0",
              "--timeout", "2s", "-o", "json")
    assert r.returncode == 0, r.stderr
    events = by_question(json_events(r.stdout))
    for qtype in ("A", "AAAA"):
        ours = events[("www.lab.test", qtype)]
        theirs = dig_answers(dig(lab.client, f"@{SERVER_IP}", "www.lab.test", qtype), qtype)
        assert sorted(ours["dns"]["resolved_ip"]) == sorted(theirs) and theirs
        assert ours["dns"]["response_code"] == "NOERROR"
        assert ours["netagent"]["dns"]["answered"] == 3
        assert ours["destination"] == {"ip": SERVER_IP, "port": 53}
        assert ours["event"]["dataset"] == "netagent.dns" and ours["event"]["outcome"] == "success"

    r = probe(netagent_bin, lab, "missing.lab.test.", "--server", SERVER_IP, "--count", "1", "-o", "json")
    out = dig(lab.client, f"@{SERVER_IP}", "missing.lab.test", "A")
    assert "status: NXDOMAIN" in out
    events = by_question(json_events(r.stdout))
    assert events[("missing.lab.test", "A")]["dns"]["response_code"] == "NXDOMAIN"
    assert "resolved_ip" not in events[("missing.lab.test", "A")]["dns"]
    # v4only has no AAAA: NOERROR without records (NODATA), as dig shows
    r = probe(netagent_bin, lab, "v4only.lab.test.", "--server", SERVER_IP, "--count", "1", "-o", "json")
    aaaa = by_question(json_events(r.stdout))[("v4only.lab.test", "AAAA")]
    assert aaaa["dns"]["response_code"] == "NOERROR" and "resolved_ip" not in aaaa["dns"]
    assert dig_answers(dig(lab.client, f"@{SERVER_IP}", "v4only.lab.test", "AAAA"), "AAAA") == []


def test_latency_agrees_with_dig_on_a_slow_path(lab, netagent_bin):
    """A 50 ms forwarding delay in front of dnsmasq: both tools must see it."""
    delay = 0.050
    listen = lab.server_socket(bind=(SPARE_IP, 53))
    upstream = lab.server_socket(bind=(SPARE_IP, 0))
    proxy = DelayProxy(listen, upstream, (SERVER_IP, 53), delay)
    try:
        dig_ms = [dig_query_time_ms(dig(lab.client, f"@{SPARE_IP}", "www.lab.test", "A")) for _ in range(7)]
        r = probe(netagent_bin, lab, "www.lab.test.", "--server", SPARE_IP, "--type", "A", "--count", "7",
                  "--interval", "0", "--timeout", "2s", "-o", "json")
    finally:
        proxy.stop()
    assert r.returncode == 0, r.stderr
    assert None not in dig_ms
    (event,) = json_events(r.stdout)
    lat = event["netagent"]["dns"]["latency_ms"]
    assert lat["samples"] == 7
    assert lat["min"] >= delay * 1000  # nothing can come back faster than the delay
    assert lat["p50"] < delay * 1000 + 20
    # dig reads a coarse clock (CLOCK_REALTIME_COARSE: one jiffy, 4 ms at HZ=250) and
    # prints whole milliseconds, so with a 50 ms path it says 47, 51 or 55
    assert abs(statistics.median(dig_ms) - lat["p50"]) <= 8, (dig_ms, lat)
    assert lat["min"] <= lat["p50"] <= lat["p95"] <= lat["max"]


def test_truncated_answer_is_retried_over_tcp_like_dig(lab, netagent_bin):
    out = dig(lab.client, f"@{SERVER_IP}", "+noedns", "big.lab.test", "A")
    assert "Truncated, retrying in TCP mode" in out
    theirs = dig_answers(out, "A")
    assert len(theirs) == 40
    r = probe(netagent_bin, lab, "big.lab.test.", "--server", SERVER_IP, "--type", "A", "--count", "2",
              "--interval", "0", "--timeout", "2s", "-o", "json")
    assert r.returncode == 0, r.stderr
    (event,) = json_events(r.stdout)
    d = event["netagent"]["dns"]
    assert d["truncated"] == 2 and d["tcp_retries"] == 2 and d["tcp_retry_answered"] == 2
    assert sorted(event["dns"]["resolved_ip"]) == sorted(theirs)


def test_tcp_mode(lab, netagent_bin):
    r = probe(netagent_bin, lab, "www.lab.test.", "--server", SERVER_IP, "--tcp", "--count", "2",
              "--interval", "0", "--timeout", "2s", "-o", "json")
    assert r.returncode == 0, r.stderr
    events = by_question(json_events(r.stdout))
    assert events[("www.lab.test", "A")]["network"]["transport"] == "tcp"
    assert sorted(events[("www.lab.test", "A")]["dns"]["resolved_ip"]) == ["10.1.1.1", "10.1.1.2"]
    assert events[("www.lab.test", "AAAA")]["dns"]["resolved_ip"] == ["fd00::11"]
    assert events[("www.lab.test", "A")]["netagent"]["dns"]["answered"] == 2


def test_ipv6_server(lab, netagent_bin):
    r = probe(netagent_bin, lab, "www.lab.test.", "--server", f"[{SERVER_IP6}]:53", "--count", "1", "-o", "json")
    assert r.returncode == 0, r.stderr
    events = by_question(json_events(r.stdout))
    assert events[("www.lab.test", "AAAA")]["dns"]["resolved_ip"] == ["fd00::11"]
    assert events[("www.lab.test", "A")]["network"]["type"] == "ipv6"
    assert events[("www.lab.test", "A")]["destination"]["ip"] == SERVER_IP6


def test_servers_come_from_the_named_namespaces_resolv_conf(lab, netagent_bin):
    path = lab.resolv_conf(f"nameserver {SERVER_IP}\nnameserver {SERVER_IP6}\noptions ndots:1\n")
    r = probe(netagent_bin, lab, "www.lab.test", "--count", "1", "-o", "json")
    assert r.returncode == 0, r.stderr
    events = json_events(r.stdout)
    assert {e["destination"]["ip"] for e in events} == {SERVER_IP, SERVER_IP6}
    assert all(e["netagent"]["dns"]["resolv_conf"] == path for e in events)
    assert all(e["netagent"]["dns"]["netns"] == lab.client.name for e in events)


def test_table_output_shows_expansion_and_stats(lab, netagent_bin):
    lab.resolv_conf(f"nameserver {SERVER_IP}\nsearch lab.test\noptions ndots:2\n")
    r = probe(netagent_bin, lab, "www", "--count", "2", "--interval", "0", "-o", "table")
    assert r.returncode == 0, r.stderr
    assert "tries: www.lab.test. www." in r.stdout
    assert "answered by www.lab.test." in r.stdout
    lines = [line for line in r.stdout.splitlines() if line.startswith("www.lab.test.")]
    assert len(lines) == 2 and "10.1.1.1,10.1.1.2" in lines[0]


def test_port_unreachable_exits_69(lab, netagent_bin):
    r = probe(netagent_bin, lab, "www.lab.test.", "--server", SPARE_IP, "--count", "2", "--interval", "0",
              "--timeout", "2s", "-o", "json")
    assert r.returncode == 69
    assert r.stderr.count("\n") == 1 and "no DNS server answered" in r.stderr and "refused" in r.stderr
    for event in json_events(r.stdout):
        assert event["netagent"]["dns"]["refused"] == 2 and event["event"]["outcome"] == "failure"


def test_no_route_exits_69(lab, netagent_bin):
    # 10.54.0.1 is not routed anywhere inside the client namespace: the kernel refuses the send
    r = probe(netagent_bin, lab, "www.lab.test.", "--server", "10.54.0.1", "--count", "1", "--timeout", "1s",
              "-o", "json")
    assert r.returncode == 69
    assert r.stderr.count("\n") == 1 and "unreachable" in r.stderr.lower()


def test_silent_server_exits_69_after_timeouts(lab, netagent_bin):
    lab.iptables("-A", "INPUT", "-p", "udp", "--dport", "53", "-j", "DROP")
    r = probe(netagent_bin, lab, "www.lab.test.", "--server", SERVER_IP, "--type", "A", "--count", "2",
              "--interval", "0", "--timeout", "300ms", "-o", "json")
    assert r.returncode == 69
    assert "2 timeouts" in r.stderr
    (event,) = json_events(r.stdout)
    assert event["netagent"]["dns"]["timeouts"] == 2 and event["netagent"]["dns"]["loss_ratio"] == 1.0


def test_bad_input_from_the_real_binary_exits_2(lab, netagent_bin):
    r = probe(netagent_bin, lab, "bad..name", "--server", SERVER_IP)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "empty label" in r.stderr
    r = probe(netagent_bin, lab, "www.lab.test", "--server", "300.1.1.1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not an IP address" in r.stderr


def test_not_root_with_netns_exits_77(lab, netagent_bin):
    from unprivileged import run_as_nobody

    r = run_as_nobody([netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.",
                       "--server", SERVER_IP])
    assert r.returncode == 77, r.stderr
    assert r.stderr.count("\n") == 1 and "CAP_SYS_ADMIN" in r.stderr


def test_not_root_without_netns_needs_no_privilege(lab, netagent_bin):
    """Plain UDP queries need no capability: run unprivileged from inside the client namespace."""
    from unprivileged import nobody_prefix

    with nobody_prefix() as nobody:
        r = subprocess.run(["ip", "netns", "exec", lab.client.name, *nobody, netagent_bin,
                            "probe", "dns", "www.lab.test.", "--server", SERVER_IP, "--count", "1", "-o", "json"],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/"})
    assert r.returncode == 0, r.stderr
    events = by_question(json_events(r.stdout))
    assert sorted(events[("www.lab.test", "A")]["dns"]["resolved_ip"]) == ["10.1.1.1", "10.1.1.2"]
