"""Turning two readings of a namespace's counters into events and alerts."""

from netagent.conntrack.namespaces import Snapshot
from netagent.conntrack.report import Interval, kernel_caveat, kernel_version
from netagent.conntrack.stats import parse
from netagent.netns import Netns

NS = Netns("lab", "/run/netns/lab", 4026532999, "lab")
HEADER = ("entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop "
          "icmp_error  expect_new expect_create expect_delete search_restart")
COLUMNS = ["entries", "clash_resolve", "found", "new", "invalid", "ignore", "delete", "chaintoolong", "insert",
           "insert_failed", "drop", "early_drop", "icmp_error", "expect_new", "expect_create", "expect_delete",
           "search_restart"]


def snap(t: float, entries: int, limit: int, cpus=2, **per_cpu0) -> Snapshot:
    """A reading with `per_cpu0` counters on CPU 0 (other CPUs zero)."""
    rows = []
    for cpu in range(cpus):
        values = [entries] + [per_cpu0.get(name, 0) if cpu == 0 else 0 for name in COLUMNS[1:]]
        rows.append(" ".join(f"{v:08x}" for v in values))
    return Snapshot(NS, t, 1_700_000_000 + t, parse(HEADER + "\n" + "\n".join(rows) + "\n"), entries, limit)


def actions(events):
    return [e["event"]["action"] for e in events]


def test_quiet_interval_gives_only_a_counters_metric():
    iv = Interval(snap(0, 10, 1000), snap(1, 12, 1000))
    events = iv.events()
    assert actions(events) == ["counters"]
    ev = events[0]
    assert ev["event"]["dataset"] == "netagent.conntrack" and ev["event"]["kind"] == "metric"
    ct = ev["netagent"]["conntrack"]
    assert ct["netns"] == NS.inode and ct["netns_name"] == "lab"
    assert ct["entries"] == 12 and ct["max"] == 1000 and ct["fill_ratio"] == 0.012
    assert ct["interval"] == 1.0
    assert ct["deltas"]["drop"] == 0 and list(ct["deltas"])[:7] == [
        "insert_failed", "drop", "early_drop", "clash_resolve", "chaintoolong", "invalid", "search_restart"]
    assert ev["event"]["start"] < ev["event"]["end"]


def test_drops_for_want_of_an_entry_are_table_full():
    iv = Interval(snap(0, 20, 20, drop=3), snap(1, 20, 20, drop=84))
    assert iv.allocation_drops == 81
    events = iv.events()
    assert actions(events) == ["counters", "table-full"]
    alert = events[1]
    assert alert["event"]["kind"] == "alert"
    assert alert["netagent"]["conntrack"]["deltas"]["drop"] == 81
    assert "81 packets dropped" in alert["message"] and "20 of 20 entries (100%)" in alert["message"]


def test_early_drop_alone_means_the_table_was_full_even_if_it_drained_since():
    iv = Interval(snap(0, 5, 1000), snap(1, 5, 1000, early_drop=2))
    assert iv.table_full
    assert "2 unreplied entries evicted" in iv.events()[1]["message"]


def test_crossing_the_threshold_alerts_once_then_only_with_new_drops():
    first = Interval(snap(0, 80, 100), snap(1, 91, 100), threshold=0.9, was_full=False)
    assert actions(first.events()) == ["counters", "table-full"]
    assert "above the 90% threshold" in first.events()[1]["message"]
    still = Interval(snap(1, 91, 100), snap(2, 95, 100), threshold=0.9, was_full=True)
    assert actions(still.events()) == ["counters"]
    worse = Interval(snap(2, 95, 100), snap(3, 100, 100, drop=4), threshold=0.9, was_full=True)
    assert actions(worse.events()) == ["counters", "table-full"]
    below = Interval(snap(0, 80, 100), snap(1, 89, 100), threshold=0.9)
    assert actions(below.events()) == ["counters"]


def test_no_limit_means_no_fill_ratio_and_no_threshold_alert():
    iv = Interval(snap(0, 10, 0), snap(1, 10_000, 0))
    assert iv.after.fill_ratio is None
    assert actions(iv.events()) == ["counters"]
    assert iv.events()[0]["netagent"]["conntrack"]["fill_ratio"] is None


def test_failed_inserts_are_their_own_alert_not_table_full():
    # an unresolvable clash counts drop and insert_failed together
    iv = Interval(snap(0, 5, 1000), snap(1, 5, 1000, insert_failed=7, drop=7))
    assert iv.allocation_drops == 0 and not iv.table_full
    events = iv.events()
    assert actions(events) == ["counters", "insert-failed"]
    assert events[1]["event"]["kind"] == "alert"
    assert "insert_failed +7" in events[1]["message"]


def test_chaintoolong_failures_do_not_hide_table_full_drops():
    # chain too long: insert_failed and chaintoolong, no drop; table full: drop only
    iv = Interval(snap(0, 5, 1000), snap(1, 5, 1000, insert_failed=2, chaintoolong=2, drop=9))
    assert iv.allocation_drops == 9
    assert actions(iv.events()) == ["counters", "table-full", "insert-failed"]


def test_resolved_clashes_are_an_event_not_an_alert():
    iv = Interval(snap(0, 5, 1000), snap(1, 6, 1000, clash_resolve=12))
    events = iv.events()
    assert actions(events) == ["counters", "clash-resolved"]
    assert events[1]["event"]["kind"] == "event"


def test_counters_can_be_left_out_while_alerts_stay():
    iv = Interval(snap(0, 5, 1000), snap(1, 6, 1000, clash_resolve=1))
    assert actions(iv.events(counters=False)) == ["clash-resolved"]


def test_pre_5_10_caveat_from_kernel_version_or_missing_clash_column():
    new = snap(0, 1, 10)
    assert kernel_caveat(new, "6.18.44") is None
    assert "older than 5.10" in kernel_caveat(new, "5.4.0-150-generic")
    assert kernel_version("5.9.16") == (5, 9)
    old_table = parse("entries  searched found new invalid ignore delete delete_list insert insert_failed drop "
                      "early_drop icmp_error  expect_new expect_create expect_delete search_restart\n"
                      + " ".join(["00000001"] * 17) + "\n")
    old = Snapshot(NS, 0, 0, old_table, 1, 10)
    caveat = kernel_caveat(old, "6.18.0")
    assert caveat and "insert_failed also counts clashes" in caveat
    iv = Interval(old, Snapshot(NS, 1, 1, old_table, 1, 10), caveat=caveat)
    assert iv.events()[0]["netagent"]["conntrack"]["caveat"] == caveat
