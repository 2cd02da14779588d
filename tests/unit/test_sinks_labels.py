"""LabelSlots: bounded label values that give their slot back when the value is gone."""

import time

from prometheus_client import CollectorRegistry, Counter
from test_sinks_prometheus import drop, free_port, scrape

from netagent.sinks.labels import LabelSlots
from netagent.sinks.prometheus import PrometheusSink


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def series(registry) -> set[tuple]:
    return {tuple(sorted(s.labels.items())) for fam in registry.collect() for s in fam.samples
            if s.name == "x_total"}


def test_gone_values_give_their_slot_and_series_back():
    clock, alive = Clock(), {"veth0", "veth1"}
    registry = CollectorRegistry()
    counter = Counter("x", "test", ["iface"], registry=registry)
    slots = LabelSlots(2, alive=lambda v: v in alive, grace=60, idle=900, clock=clock)
    for name in ("veth0", "veth1"):
        label = slots(name)
        counter.labels(label).inc()
        slots.track(label, counter, (label,))
    assert slots("veth2") == "other"  # full
    alive.discard("veth0")  # the pod went away
    clock.now += 30
    assert slots("veth2") == "other"  # still within the grace: a late drop keeps its name
    clock.now += 31
    assert slots("veth2") == "veth2"  # veth0 is gone and quiet: its slot is free
    assert series(registry) == {(("iface", "veth1"),)}  # veth0's series removed
    assert slots.status() == {"used": 2, "limit": 2, "overflowed": 2, "expired": 1}


def test_idle_values_expire_even_when_alive_and_forget_is_immediate():
    clock = Clock()
    slots = LabelSlots(4, alive=lambda v: True, grace=60, idle=900, clock=clock)
    slots("eth0")
    slots("eth1")
    clock.now += 600
    slots("eth1")  # eth1 stays busy
    clock.now += 400
    assert slots.sweep() == ["eth0"]
    slots.forget("eth1")
    assert slots.values == []


def test_churning_veths_never_run_out_of_slots():
    clock, alive = Clock(), set()
    slots = LabelSlots(8, alive=lambda v: v in alive, grace=60, clock=clock)
    for i in range(1000):  # a pod a minute, each veth dropping once then deleted
        alive.add(f"veth{i}")
        assert slots(f"veth{i}") == f"veth{i}"
        alive.discard(f"veth{i}")
        clock.now += 61
    assert slots.overflowed == 0 and len(slots.values) <= 8


def scraped_interfaces(sink) -> set[str]:
    return {dict(labels)["interface"] for name, labels in scrape(sink) if name == "netagent_drops_total"}


def test_prometheus_expires_interfaces_that_are_gone():
    alive = {"veth0", "veth1", "veth2"}
    sink = PrometheusSink("prometheus", f"127.0.0.1:{free_port()}", max_interfaces=3, interface_grace=0.001,
                          interface_alive=lambda name: name in alive)
    sink.start()
    try:
        for name in ("veth0", "veth1", "veth2"):
            sink.submit(b"", drop("NO_SOCKET", name, 1))
        alive.discard("veth0")
        alive.add("veth3")
        # a scrape sweeps first: once veth0 has been quiet for the grace it is not served,
        # and its slot is free for veth3
        deadline = time.monotonic() + 10
        while (served := scraped_interfaces(sink)) != {"veth1", "veth2"} and time.monotonic() < deadline:
            assert served == {"veth0", "veth1", "veth2"}  # nothing else happens while waiting
        assert served == {"veth1", "veth2"}
        sink.submit(b"", drop("NO_SOCKET", "veth3", 1))
        assert scraped_interfaces(sink) == {"veth1", "veth2", "veth3"}
        assert sink.status()["label_overflow"]["interface"] == 0
        assert sink.status()["labels"]["interface"]["expired"] == 1
    finally:
        sink.close(1)
