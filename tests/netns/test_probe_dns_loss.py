"""Loss on the way to a real dnsmasq: timeouts in the right proportion, the pair signature.

Packets are dropped by iptables inside the server namespace only.
"""

import math
import re
import subprocess

import pytest
from dns_lab import SERVER_IP, DnsLab, by_question, json_events, run_netagent

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]


@pytest.fixture
def lab(netns_factory, tmp_path):
    lab = DnsLab(netns_factory, tmp_path)
    lab.server_dnsmasq = lab.dnsmasq({"www.lab.test": ["10.1.1.1", "fd00::11"]})
    yield lab
    lab.close()


def add_drop_rule(lab, match: str, *rule):
    """Append a DROP rule in the server namespace; skip if the kernel lacks the match."""
    try:
        lab.iptables("-A", "INPUT", *rule)
    except subprocess.CalledProcessError as exc:
        if "Couldn't load match" in (exc.stderr or "") or "No such file" in (exc.stderr or ""):
            pytest.skip(f"kernel lacks the iptables {match} match (xt_{match}): {exc.stderr.strip()}")
        raise


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """[lo, hi] holding Binomial(n, p) with probability >= 1 - alpha (alpha/2 per tail)."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    lo, tail = 0, 0.0
    while tail + pmf[lo] <= alpha / 2:
        tail += pmf[lo]
        lo += 1
    hi, tail = n, 0.0
    while tail + pmf[hi] <= alpha / 2:
        tail += pmf[hi]
        hi -= 1
    return lo, hi


def test_binomial_bounds_helper():
    lo, hi = binomial_bounds(200, 0.3)
    assert 20 < lo < 60 < hi < 100
    assert binomial_bounds(10, 0.5, alpha=0.5) == (4, 6)


def dropped_packets(lab) -> int:
    """Packets the DROP rule in the server's INPUT chain has counted."""
    out = lab.iptables("-L", "INPUT", "-v", "-x", "-n")
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "DROP":
            return int(fields[0])
    raise AssertionError(f"no DROP rule in:\n{out}")


def test_random_loss_is_reported_in_the_right_proportion(lab, netagent_bin):
    n, p = 200, 0.3
    add_drop_rule(lab, "statistic", "-p", "udp", "--dport", "53", "-m", "statistic", "--mode", "random",
                  "--probability", str(p), "-j", "DROP")
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.",
                     "--server", SERVER_IP, "--type", "A", "--count", str(n), "--interval", "0",
                     "--timeout", "200ms", "-o", "json")
    assert r.returncode == 0, r.stderr
    (event,) = json_events(r.stdout)
    d = event["netagent"]["dns"]
    dropped = dropped_packets(lab)
    assert d["queries"] == n
    assert d["answered"] + d["timeouts"] == n
    # every timeout is a query the firewall dropped (or an answer that came too late, if any)
    assert d["timeouts"] - d["late_answers"] == dropped
    lo, hi = binomial_bounds(n, p)
    assert lo <= d["timeouts"] <= hi, (lo, d["timeouts"], hi)
    assert d["loss_ratio"] == round(d["timeouts"] / n, 4)
    assert d["latency_ms"]["samples"] == d["answered"]
    assert event["event"]["outcome"] == "failure"
    # and dnsmasq saw exactly the queries that were not dropped
    assert len(lab.server_dnsmasq.queries()) == n - dropped


# the AAAA query for www.lab.test: the question type sits 8 (UDP) + 12 (DNS
# header) + 14 (the encoded name) = 34 octets into the UDP header
DROP_AAAA = ["-p", "udp", "--dport", "53", "-m", "u32", "--u32", "0>>22&0x3C@34>>16=0x1C", "-j", "DROP"]


def run_pair(lab, netagent_bin, mode, count=4):
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.",
                     "--server", SERVER_IP, "--mode", mode, "--count", str(count), "--interval", "0",
                     "--timeout", "300ms", "-o", "json")
    assert r.returncode == 0, r.stderr
    return by_question(json_events(r.stdout))


def test_lost_twin_from_the_same_port_is_the_race_signature(lab, netagent_bin):
    add_drop_rule(lab, "u32", *DROP_AAAA)
    mark = lab.server_dnsmasq.mark()
    events = run_pair(lab, netagent_bin, "parallel-same-socket")
    a, aaaa = events[("www.lab.test", "A")], events[("www.lab.test", "AAAA")]
    assert a["netagent"]["dns"]["answered"] == 4 and aaaa["netagent"]["dns"]["timeouts"] == 4
    for e in (a, aaaa):
        d = e["netagent"]["dns"]
        assert d["race_suspected"] is True
        assert d["race"]["pairs"] == 4 and d["race"]["same_port_one_lost"] == 4
        assert d["race"]["examples"][0]["answered"] == "A" and d["race"]["examples"][0]["lost"] == "AAAA"
    # the server side agrees: only A queries arrived, and from the ports we reported
    logged = lab.server_dnsmasq.queries(mark)
    assert [q.qtype for q in logged] == ["A"] * 4
    ports = {ex["source_port"] for ex in a["netagent"]["dns"]["race"]["examples"]}
    assert ports <= {q.port for q in logged}
    assert dropped_packets(lab) == 4


@pytest.mark.parametrize("mode", ["parallel-sockets", "sequential"])
def test_same_loss_without_a_shared_socket_is_not_called_a_race(lab, netagent_bin, mode):
    add_drop_rule(lab, "u32", *DROP_AAAA)
    events = run_pair(lab, netagent_bin, mode, count=3)
    d = events[("www.lab.test", "AAAA")]["netagent"]["dns"]
    assert d["timeouts"] == 3
    assert d["race_suspected"] is False
    assert d["race"]["same_port_one_lost"] == 0 and d["race"]["other_one_lost"] == 3


def test_table_names_the_race(lab, netagent_bin):
    add_drop_rule(lab, "u32", *DROP_AAAA)
    r = run_netagent(netagent_bin, "probe", "dns", "--netns", lab.client.name, "www.lab.test.",
                     "--server", SERVER_IP, "--count", "2", "--interval", "0", "--timeout", "300ms",
                     "-o", "table")
    assert r.returncode == 0, r.stderr
    assert re.search(r"A/AAAA race signature for www\.lab\.test\.: 2/2 pairs", r.stdout), r.stdout
