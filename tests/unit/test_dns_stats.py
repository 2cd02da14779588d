"""Latency statistics, tallies and the A/AAAA race signature."""

import pytest

from netagent.dns import wire
from netagent.dns.exchange import Exchange, Server
from netagent.dns.race import RaceTally, signature
from netagent.dns.stats import Tally, latency_summary_ms, percentile


@pytest.mark.parametrize(
    "values, p, expected",
    [
        ([1], 50, 1),
        ([1, 2], 50, 1),
        ([1, 2, 3, 4], 50, 2),
        ([1, 2, 3, 4, 5], 50, 3),
        (list(range(1, 21)), 95, 19),  # 20 samples: the 19th
        (list(range(1, 20)), 95, 19),  # fewer than 20: the largest
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 100, 100),
    ],
)
def test_nearest_rank_percentile(values, p, expected):
    assert percentile(values, p) == expected


def test_percentile_edges():
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_latency_summary_reports_measured_values_in_ms():
    ns = [3_000_000, 1_000_000, 2_000_000, 10_000_000]
    s = latency_summary_ms(ns)
    assert s == {"min": 1.0, "p50": 2.0, "p95": 10.0, "max": 10.0, "mean": 4.0, "samples": 4}
    assert latency_summary_ms([]) is None


def ex(qtype, status, port=40000, sent=0, finished=None, transport="udp", tcp_retry=False, rcode="NOERROR",
       ips=()):
    e = Exchange(wire.build_query("x.example", qtype, msg_id=1 if qtype == "A" else 2), Server("10.0.0.1"), 1.0,
                 transport=transport)
    e.source_port = port
    e.sent_ns = sent
    e.tcp_retry = tcp_retry
    if status == "answer":
        e.response = wire.Response(rcode=rcode, flags=["QR"], truncated=False, ancount=len(ips),
                                   resolved_ips=list(ips))
    e.finish(status, finished if finished is not None else sent + 1_000_000)
    return e


def test_tally_counts_every_kind_of_outcome():
    t = Tally()
    t.add(ex("A", "answer", ips=["10.0.0.5"]))
    t.add(ex("A", "answer", rcode="NXDOMAIN"))
    t.add(ex("A", "timeout"))
    t.add(ex("A", "refused"))
    t.add(ex("A", "unreachable"))
    t.add(ex("A", "error"))
    assert (t.queries, t.answered, t.timeouts, t.refused, t.unreachable, t.errors) == (6, 2, 1, 1, 1, 1)
    assert t.lost == 4
    assert t.resolved_ips == ["10.0.0.5"]
    assert dict(t.rcodes) == {"NOERROR": 1, "NXDOMAIN": 1}
    assert t.latencies_ns == [1_000_000, 1_000_000]


def test_race_signature_needs_same_port_and_both_in_flight():
    # A answered, AAAA timed out, same port, sent together
    assert signature(ex("A", "answer", sent=0), ex("AAAA", "timeout", sent=10, finished=5_000_000)) == "race"
    # different source ports
    assert signature(ex("A", "answer", port=1), ex("AAAA", "timeout", port=2, sent=10)) == "one_lost"
    # sequential: AAAA sent after A had finished
    assert signature(ex("A", "answer", sent=0, finished=100), ex("AAAA", "timeout", sent=200)) == "one_lost"
    # over TCP there is no such race
    assert signature(ex("A", "answer", transport="tcp"), ex("AAAA", "timeout", transport="tcp", sent=5)) == "one_lost"
    assert signature(ex("A", "timeout"), ex("AAAA", "timeout")) == "both_lost"
    assert signature(ex("A", "answer"), ex("AAAA", "answer")) is None
    assert signature(ex("A", "answer"), ex("AAAA", "refused")) is None
    assert signature(ex("A", "answer"), None) is None


def test_race_tally_keeps_counts_and_examples():
    r = RaceTally()
    for i in range(7):
        r.add(ex("A", "timeout", sent=0), ex("AAAA", "answer", sent=5), i + 1)
    r.add(ex("A", "timeout"), ex("AAAA", "timeout"), 8)
    r.add(ex("A", "answer"), ex("AAAA", "answer"), 9)
    assert r.pairs == 9 and r.race == 7 and r.both_lost == 1 and r.suspected
    assert len(r.examples) == 5
    assert r.examples[0] == {"round": 1, "source_port": 40000, "answered": "AAAA", "lost": "A"}
    assert r.as_dict()["same_port_one_lost"] == 7
