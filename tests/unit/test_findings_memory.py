"""The correlator's memory is bounded by its window whatever sensors run (issue 13, item 1)."""

from netagent.events import new_event
from netagent.findings import Correlator


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def drop(count: int = 1, interface: str = "eth0", port: int | None = None) -> dict:
    ev = new_event(dataset="netagent.drops", action="packet-dropped",
                   netagent={"drop": {"count": count, "interface": interface, "netns": 4026531840}})
    ev["event"]["reason"] = "NO_SOCKET"
    if port is not None:
        ev["destination"] = {"port": port}
    return ev


def test_records_stay_within_the_window_without_the_host_sensor():
    # no node-counters event ever arrives (host sensor off or failing)
    clock = Clock()
    c = Correlator(window=60, clock=clock)
    for _ in range(100_000):
        clock.now += 0.01  # 100 events a second for 1000 s
        c(drop())
    status = c.status()
    # one record a second (the same reason and place merge), 60 s of them
    assert 59 <= status["records"] <= 61
    assert status["records_evicted"] == 0
    assert 5900 <= sum(r["count"] for _, r in c._recent["drops"]) <= 6100


def test_a_storm_of_many_flows_is_one_record_a_second_with_its_counts_and_lowest_ports():
    clock = Clock()
    c = Correlator(window=60, clock=clock)
    for second in range(120):
        for port in range(10_000, 10_500):  # 500 flows a second
            c(drop(count=3, port=port))
        clock.now += 1
    records = [r for _, r in c._recent["drops"]]
    assert len(records) == 61  # the window's seconds, plus the one on the horizon
    assert all(r["count"] == 1500 for r in records)
    assert all(r["destination_ports"] == list(range(10_000, 10_010)) for r in records)
    # a different place is a record of its own
    c(drop(interface="eth1", port=53))
    c(drop(interface="eth0", port=9))
    last = [r for _, r in c._recent["drops"] if r["count"] == 1]
    assert [(r["interface"], r["destination_ports"]) for r in last] == [("eth1", [53]), ("eth0", [9])]


def test_a_burst_inside_one_window_is_capped_and_counted():
    clock = Clock()
    c = Correlator(window=60, clock=clock, max_records=1000)
    for i in range(5000):
        c(drop(interface=f"veth{i}"))  # all at one instant: the window alone would keep them all
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
