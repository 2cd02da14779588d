"""The correlator's memory is bounded by its window whatever sensors run (issue 13, item 1)."""

from netagent.events import new_event
from netagent.findings import Correlator


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def drop(count: int = 1) -> dict:
    ev = new_event(dataset="netagent.drops", action="packet-dropped",
                   netagent={"drop": {"count": count, "interface": "eth0", "netns": 4026531840}})
    ev["event"]["reason"] = "NO_SOCKET"
    return ev


def test_records_stay_within_the_window_without_the_host_sensor():
    # no node-counters event ever arrives (host sensor off or failing)
    clock = Clock()
    c = Correlator(window=60, clock=clock)
    for _ in range(100_000):
        clock.now += 0.01  # 100 events a second for 1000 s
        c(drop())
    status = c.status()
    # 60 s at 100 a second, plus the one that arrived exactly on the horizon
    assert status["records"] <= 6001
    assert status["records"] >= 5999
    assert status["records_evicted"] == 0


def test_a_burst_inside_one_window_is_capped_and_counted():
    clock = Clock()
    c = Correlator(window=60, clock=clock, max_records=1000)
    for _ in range(5000):
        c(drop())  # all at one instant: the window alone would keep them all
    status = c.status()
    assert status["records"] == 1000
    assert status["records_evicted"] == 4000


def test_namespace_names_do_not_outlive_the_namespaces():
    clock = Clock()
    c = Correlator(window=60, clock=clock)
    for inode in range(1, 2001):  # pods come and go, one namespace each
        c(new_event(dataset="netagent.host", action="netns-counters",
                    netagent={"host": {"netns": {"inode": inode, "name": f"pod{inode}"}}}))
        c(new_event(dataset="netagent.overlay", action="interface-seen", netagent={"overlay": {
            "netns": {"inode": inode, "name": f"pod{inode}"}, "interface": {"index": 2, "name": "vxlan0"}}}))
        c(new_event(dataset="netagent.overlay", action="interface-removed", netagent={"overlay": {
            "netns": {"inode": inode}, "interface": {"index": 2}}}))
        clock.now += 1
        c(new_event(dataset="netagent.host", action="node-counters", netagent={"host": {"interval_s": 1.0}}))
    # only the namespaces reported within the window are remembered
    status = c.status()
    assert status["namespaces"] <= 61 and status["namespaces_with_counters"] <= 61
    assert status["namespaces_with_inventory"] == 0
