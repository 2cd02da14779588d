"""Search-list expansion against glibc's __res_context_search rules (glibc 2.36).

Each expected list below is worked out from the rules in resolv/res_query.c;
tests/netns/test_probe_dns_search.py checks the same thing against the real
glibc resolver and what a real server logged.
"""

import pytest

from netagent.dns.resolvconf import parse
from netagent.dns.search import Outcome, pair_outcome, plan, walk


def conf(text, hostname="h"):
    return parse(text, hostname=hostname)


K8S = "search a.example b.example c.example\noptions ndots:5\n"


@pytest.mark.parametrize(
    "text, name, expected",
    [
        # fewer dots than ndots: search first, the name as is last
        (K8S, "www", ["www.a.example.", "www.b.example.", "www.c.example.", "www."]),
        (K8S, "api.example.com",
         ["api.example.com.a.example.", "api.example.com.b.example.", "api.example.com.c.example.",
          "api.example.com."]),
        # >= ndots dots: as is first, then the search list (not as is again)
        ("search a.example b.example\noptions ndots:1\n", "api.example.com",
         ["api.example.com.", "api.example.com.a.example.", "api.example.com.b.example."]),
        ("search a.example\noptions ndots:2\n", "x.y.z", ["x.y.z.", "x.y.z.a.example."]),
        ("search a.example\noptions ndots:3\n", "x.y.z", ["x.y.z.a.example.", "x.y.z."]),
        # a trailing dot means absolute: as is only
        (K8S, "api.example.com.", ["api.example.com."]),
        (K8S, "www.", ["www."]),
        # ndots:0: even a dotless name is tried as is first
        ("search a.example\noptions ndots:0\n", "www", ["www.", "www.a.example."]),
        # no-tld-query: a dotless name is never sent as is once searched...
        ("search a.example b.example\noptions no-tld-query\n", "www", ["www.a.example.", "www.b.example."]),
        # ...but it is when there was no search list to try
        ("nameserver 10.0.0.1\noptions no-tld-query\n", "www", ["www."]),
        # ...and names with dots still are
        ("search a.example\noptions ndots:5 no-tld-query\n", "a.b", ["a.b.a.example.", "a.b."]),
        # the root in the search list stands for the as-is try, in its place
        ("search a.example . b.example\n", "www", ["www.a.example.", "www.", "www.b.example."]),
        # a leading dot on a search domain is dropped
        ("search .a.example\n", "www", ["www.a.example.", "www."]),
        # domain gives a one-entry search list
        ("domain corp.example\n", "db", ["db.corp.example.", "db."]),
    ],
)
def test_plan_matches_glibc(text, name, expected):
    assert [c.name for c in plan(name, conf(text))] == expected


def test_default_search_list_comes_from_the_hostname():
    assert [c.name for c in plan("db", conf("nameserver 10.0.0.1\n", hostname="n1.corp.example"))] == [
        "db.corp.example.", "db."]


def test_steps_are_labelled():
    steps = plan("www", conf(K8S))
    assert [c.step for c in steps] == ["search", "search", "search", "as-is-last"]
    assert [c.origin for c in steps] == ["a.example", "b.example", "c.example", "as-is"]
    assert [c.step for c in plan("a.b.c.d.e.f", conf(K8S))][:1] == ["as-is-first"]


def test_unencodable_candidate_ends_the_search_loop_but_not_the_as_is_try():
    long_domain = ".".join(["x" * 62] * 4)  # 253 octets on the wire: fine alone, too long with a prefix
    steps = walk("host", conf(f"search a.example {long_domain} b.example\n"), lambda c: Outcome.NXDOMAIN).steps
    names = [c.name for c, _ in steps]
    assert names[0] == "host.a.example."
    assert steps[1][0].error == "name longer than 255 octets" and steps[1][1] is Outcome.NO_RECOVERY
    # glibc sets NO_RECOVERY, which ends the search loop: b.example is never tried
    assert names[2:] == ["host."]


def _script(outcomes):
    """An outcome function answering from a {name: Outcome} dict (NXDOMAIN otherwise)."""
    asked = []

    def outcome(candidate):
        asked.append(candidate.name)
        return outcomes.get(candidate.name, Outcome.NXDOMAIN)

    return outcome, asked


def test_walk_stops_at_the_first_answer():
    fn, asked = _script({"www.b.example.": Outcome.ANSWER})
    w = walk("www", conf(K8S), fn)
    assert asked == ["www.a.example.", "www.b.example."]
    assert w.result is Outcome.ANSWER and w.answered_by.name == "www.b.example."


@pytest.mark.parametrize("soft", [Outcome.NXDOMAIN, Outcome.NODATA, Outcome.SERVFAIL])
def test_nxdomain_nodata_and_servfail_keep_searching(soft):
    fn, asked = _script({"www.a.example.": soft, "www.c.example.": Outcome.ANSWER})
    w = walk("www", conf(K8S), fn)
    assert asked == ["www.a.example.", "www.b.example.", "www.c.example."]
    assert w.answered_by.name == "www.c.example."


@pytest.mark.parametrize("hard", [Outcome.NO_ANSWER, Outcome.NO_RECOVERY])
def test_timeout_and_hard_errors_end_the_search_loop_then_try_as_is(hard):
    fn, asked = _script({"www.a.example.": hard, "www.": Outcome.ANSWER})
    w = walk("www", conf(K8S), fn)
    assert asked == ["www.a.example.", "www."]
    assert w.result is Outcome.ANSWER


def test_port_unreachable_ends_the_whole_lookup():
    fn, asked = _script({"www.a.example.": Outcome.CONN_REFUSED})
    w = walk("www", conf(K8S), fn)
    assert asked == ["www.a.example."]
    assert w.result is Outcome.CONN_REFUSED and w.answered_by is None


def test_absolute_name_returns_whatever_it_gets():
    fn, asked = _script({"www.": Outcome.SERVFAIL})
    w = walk("www.", conf(K8S), fn)
    assert asked == ["www."] and w.result is Outcome.SERVFAIL


def test_final_error_prefers_the_as_is_result_then_nodata_then_servfail():
    # as is first (NODATA) wins over later NXDOMAINs
    fn, _ = _script({"a.b.c.d.e.f.": Outcome.NODATA})
    assert walk("a.b.c.d.e.f", conf(K8S), fn).result is Outcome.NODATA
    # otherwise any NODATA seen while searching
    fn, _ = _script({"www.b.example.": Outcome.NODATA})
    assert walk("www", conf(K8S), fn).result is Outcome.NODATA
    # otherwise SERVFAIL seen while searching
    fn, _ = _script({"www.b.example.": Outcome.SERVFAIL})
    assert walk("www", conf(K8S), fn).result is Outcome.SERVFAIL
    # otherwise the last one
    fn, _ = _script({})
    assert walk("www", conf(K8S), fn).result is Outcome.NXDOMAIN


def ans(rcode, ancount=0):
    return ("answer", rcode, ancount)


@pytest.mark.parametrize(
    "a, aaaa, expected",
    [
        (ans("NOERROR", 1), ans("NOERROR", 0), Outcome.ANSWER),
        (ans("NOERROR", 0), ans("NOERROR", 2), Outcome.ANSWER),
        (ans("NOERROR", 0), ans("NOERROR", 0), Outcome.NODATA),
        (ans("NXDOMAIN"), ans("NXDOMAIN"), Outcome.NXDOMAIN),
        (ans("NOERROR", 0), ans("NXDOMAIN"), Outcome.NXDOMAIN),  # hp NOERROR: hp2's code decides
        (ans("SERVFAIL"), ans("NOERROR", 0), Outcome.SERVFAIL),
        (ans("NOERROR", 0), ans("SERVFAIL"), Outcome.SERVFAIL),
        (ans("REFUSED"), ans("REFUSED"), Outcome.NO_RECOVERY),
        (ans("NOTIMP"), ans("NOERROR", 1), Outcome.ANSWER),
        (ans("FORMERR"), ans("NOERROR", 0), Outcome.NO_RECOVERY),
        (("timeout", None, 0), ans("NOERROR", 1), Outcome.ANSWER),  # the twin lost: still an answer
        (ans("NXDOMAIN"), ("timeout", None, 0), Outcome.NXDOMAIN),
        (("timeout", None, 0), ("timeout", None, 0), Outcome.NO_ANSWER),
        (("refused", None, 0), ("refused", None, 0), Outcome.CONN_REFUSED),
        (("refused", None, 0), ("timeout", None, 0), Outcome.NO_ANSWER),
        (ans("NOERROR", 3), None, Outcome.ANSWER),
        (None, ans("NXDOMAIN"), Outcome.NXDOMAIN),
    ],
)
def test_pair_outcome_follows_res_context_query(a, aaaa, expected):
    assert pair_outcome(a, aaaa) is expected
