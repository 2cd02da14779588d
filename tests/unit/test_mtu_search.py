"""The path MTU search and classification, driven by a simulated path (no sockets)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from test_mtu_fakes import FakePath, blackhole, icmp  # noqa: E402

from netagent.mtu.search import (  # noqa: E402
    COMMON_MTUS,
    ERROR,
    LOCAL,
    LOST,
    OK,
    TOO_BIG,
    MtuSearch,
    Outcome,
    bisect_cost,
    candidate_sizes,
    pick_candidate,
    search,
)


def test_clean_path_is_ok_in_two_probes():
    path = FakePath([(1500, "r", True)])
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu, r.largest_ok, r.smallest_lost, r.probes) == ("ok", 1500, 1500, None, 2)
    assert path.sent == [(552, 0), (1500, 0)]


def test_icmp_frag_needed_gives_the_announced_mtu_and_router():
    path = icmp(1400, router="10.1.0.1")
    r = search(path, 552, 1500)
    assert r.status == "icmp"
    assert r.path_mtu == 1400
    assert r.icmp_from == "10.1.0.1" and r.icmp_mtu == 1400
    assert r.smallest_lost == 1500  # the smallest size actually sent that failed
    assert r.probes == 3  # lo, hi, then the announced MTU


def test_two_routers_each_announcing_a_smaller_mtu():
    path = FakePath([(1480, "r1", True), (1400, "r2", True)])
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu, r.icmp_from, r.icmp_mtu) == ("icmp", 1400, "r2", 1400)
    assert [s for s, _ in path.sent] == [552, 1500, 1480, 1400]


@pytest.mark.parametrize("mtu", [1500 - 1, 1480, 1476, 1450, 1440, 1430, 1420, 1400, 1380, 1280, 1300, 1281, 1399])
def test_blackhole_exact_mtu(mtu):
    r = search(blackhole(mtu), 552, 1500)
    assert r.status == "blackhole"
    assert (r.path_mtu, r.largest_ok, r.smallest_lost) == (mtu, mtu, mtu + 1)
    assert r.icmp_from is None


def test_blackhole_probe_budget_for_every_mtu_an_ethernet_path_can_have():
    # The budget: a black hole characterised in <= 14 probes with
    # the defaults (IPv4 min 552, max = interface MTU 1500, 2 retries), for
    # every path MTU from the IPv6 minimum up; below that 16 at most.
    for mtu in range(552, 1500):
        r = search(blackhole(mtu), 552, 1500)
        assert r.path_mtu == mtu and r.status == "blackhole", mtu
        assert r.probes <= (14 if mtu >= 1280 else 16), (mtu, r.probes, [s.size for s in r.steps])


def test_ipv6_defaults_budget():
    for mtu in range(1280, 1500):
        r = search(blackhole(mtu), 1280, 1500)
        assert r.path_mtu == mtu and r.probes <= 14, mtu


def test_overlay_mtus_are_found_quickly():
    for mtu in (1480, 1450, 1440, 1420, 1400):
        assert search(blackhole(mtu), 552, 1500).probes <= 10, mtu


def test_jumbo_interface_still_exact():
    for mtu in (1500, 1450, 8950, 4000, 8999):
        r = search(blackhole(mtu), 552, 9000)
        assert r.path_mtu == mtu and r.status == "blackhole"


def test_retries_only_for_the_deciding_size():
    path = blackhole(1400)
    r = search(path, 552, 1500, retries=2)
    lost_sizes = [s for s, _ in path.sent if s > 1400]
    # every lost size is sent once, except the boundary (1401): 1 + 2 retries
    assert lost_sizes.count(1401) == 3
    assert all(lost_sizes.count(s) == 1 for s in set(lost_sizes) - {1401})
    assert [a for s, a in path.sent if s == 1401] == [0, 1, 2]
    assert r.path_mtu == 1400


def test_retries_zero_sends_the_boundary_once():
    path = blackhole(1400)
    r = search(path, 552, 1500, retries=0)
    assert [s for s, _ in path.sent].count(1401) == 1 and r.path_mtu == 1400


def test_random_loss_at_the_boundary_is_retried_not_believed():
    # The path carries 1450, but the first 1450 probe is lost by chance.
    path = FakePath([(1450, "r", False)], drop={1450: 1})
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu) == ("blackhole", 1450)


def test_random_loss_of_the_largest_probe_on_a_clean_path():
    path = FakePath([(1500, "r", False)], drop={1500: 1})
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu, r.smallest_lost) == ("ok", 1500, None)


def test_loss_of_the_first_small_probe_is_retried():
    path = FakePath([(1400, "r", True)], drop={552: 1})
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu) == ("icmp", 1400)


def test_an_answer_that_comes_late_corrects_the_search():
    # 1450 answers only after its probe was given up: the search must not
    # conclude 1449 or below.
    path = FakePath([(1450, "r", False)], late={1450: 5})
    r = search(path, 552, 1500)
    assert r.path_mtu == 1450
    assert any(s.late and s.size == 1450 for s in r.steps)


def test_dead_target_is_unreachable_after_retries():
    path = FakePath([], dead=True)
    r = search(path, 552, 1500, retries=2)
    assert r.status == "unreachable"
    assert r.path_mtu is None and r.largest_ok is None
    assert [s for s, _ in path.sent] == [552, 1500, 552, 552]
    assert r.error == "no answer"


def test_icmp_error_on_every_probe_is_unreachable_with_the_reason():
    path = FakePath([], error=("host-unreachable", "10.1.0.1"))
    r = search(path, 552, 1500)
    assert (r.status, r.error, r.error_from) == ("unreachable", "host-unreachable", "10.1.0.1")
    assert r.probes == 2  # an explicit "no" is not retried


def test_even_the_smallest_probe_too_big():
    path = icmp(500, router="10.9.9.9")
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu, r.icmp_from, r.largest_ok) == ("icmp", 500, "10.9.9.9", None)


def test_bogus_announced_mtu_falls_back_to_searching():
    class Bogus(FakePath):
        def _fate(self, size):
            if size > 1400:
                return Outcome(TOO_BIG, mtu=0, sender="old-router")  # RFC 792 routers send 0
            return Outcome(OK, sender="t", rtt=0.001)

    r = search(Bogus([]), 552, 1500)
    assert (r.status, r.path_mtu, r.icmp_from) == ("icmp", 1400, "old-router")


def test_icmp_then_blackhole_further_along():
    # r1 announces 1450 correctly, but a later hop silently drops above 1400
    path = FakePath([(1450, "r1", True), (1400, "r2", False)])
    r = search(path, 552, 1500)
    assert (r.status, r.path_mtu, r.icmp_from) == ("blackhole", 1400, "r1")


def test_local_refusal_above_the_device_mtu():
    # --max above the egress device MTU: the kernel says EMSGSIZE locally
    path = FakePath([(9000, "r", True)], local_mtu=1500)
    r = search(path, 552, 9000)
    assert (r.status, r.path_mtu) == ("local", 1500)
    assert [s for s, _ in path.sent] == [552, 9000, 1500]


def test_local_tunnel_refusal_with_translated_mtu():
    class Tunnel(FakePath):
        def _fate(self, size):
            if size > 1450:
                return Outcome(LOCAL, mtu=1450, sender="192.168.50.1")
            return Outcome(OK, sender="t", rtt=0.001)

    r = search(Tunnel([]), 552, 1500)
    assert (r.status, r.path_mtu, r.icmp_from, r.probes) == ("local", 1450, "192.168.50.1", 3)


def test_size_specific_rejection_is_reported():
    class Firewall(FakePath):
        def _fate(self, size):
            if size > 1000:
                return Outcome(ERROR, sender="10.0.0.1", detail="admin-prohibited")
            return Outcome(OK, sender="t", rtt=0.001)

    r = search(Firewall([]), 552, 1500)
    assert (r.status, r.path_mtu, r.error, r.error_from) == ("blackhole", 1000, "admin-prohibited", "10.0.0.1")


def test_lo_equals_hi():
    r = search(icmp(1500), 1400, 1400)
    assert (r.status, r.path_mtu, r.probes) == ("ok", 1400, 1)


def test_invalid_ranges():
    with pytest.raises(ValueError):
        MtuSearch(icmp(1500), 1500, 1400)
    with pytest.raises(ValueError):
        MtuSearch(icmp(1500), 552, 1500, retries=-1)


def test_contradicting_prober_is_bounded():
    class Chaos:
        n = 0

        def probe(self, sizes, attempt=0):
            out = []
            for s in sizes:
                Chaos.n += 1
                out.append(Outcome(OK if (Chaos.n * 7 + s) % 3 else LOST, rtt=0.001))
            return out

        def late(self):
            return []

    r = MtuSearch(Chaos(), 552, 1500, max_probes=40).run()
    assert r.probes <= 40


def test_trace_records_every_probe():
    r = search(icmp(1400, router="10.1.0.1"), 552, 1500)
    trace = [s.as_dict() for s in r.steps]
    assert trace[0] == {"size": 552, "result": "ok", "rtt_ms": 2.0}
    assert trace[1] == {"size": 1500, "result": "too_big", "rtt_ms": 1.0, "mtu": 1400, "from": "10.1.0.1"}


def test_candidates_include_common_and_interface_minus_overheads():
    assert candidate_sizes(552, 1500) == sorted({1280, 1380, 1400, 1420, 1430, 1440, 1450, 1476, 1480})
    c = candidate_sizes(552, 9000)
    assert {8980, 8976, 8950, 8940, 8930, 8920}.issubset(c)
    assert set(COMMON_MTUS).issubset(c)  # 1500 too: a jumbo host behind a 1500 path
    assert candidate_sizes(1400, 1450) == [1420, 1426, 1430, 1440]  # 1426: 1450 - GRE 24


def test_bisect_cost():
    assert bisect_cost(1400, 1401, True) == 0
    assert bisect_cost(1400, 1402, False) == 1
    assert bisect_cost(1280, 1380, False) == 7
    assert bisect_cost(1280, 1380, True) == 8  # the "1281 first" gamble costs one in the worst case


def test_pick_candidate_prefers_the_top_on_ties():
    assert pick_candidate(1440, 1500, [1450, 1476, 1480]) in (1476, 1480)
    # with a wide gap below, the worst case forces a split that bounds it
    assert pick_candidate(552, 1500, candidate_sizes(552, 1500)) == 1380


def test_outcome_failed_property():
    assert not Outcome(OK).failed and Outcome(LOST).failed
