"""Pod labels on the prometheus sink's drop and conntrack series: from enriched events, bounded, removed when gone."""

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from netagent.enrich.cri import PodInfo
from netagent.enrich.processors import pod_fields
from netagent.events import new_event
from netagent.sinks.prometheus import PrometheusSink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(sink) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink.bound_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def pod_drop(namespace, name, count, reason="NO_SOCKET", interface="eth0"):
    ev = new_event(dataset="netagent.drops", action="packet-dropped",
                   netagent={"drop": {"count": count, "bytes": 64 * count, "interface": interface}})
    ev["event"]["reason"] = reason
    if name:
        ev.update(pod_fields(PodInfo("sb", namespace, name, "uid"), "node-1"))
    return ev


def conntrack_counters(namespace, name, deltas):
    ev = new_event(dataset="netagent.conntrack", action="counters",
                   netagent={"conntrack": {"netns": 1, "deltas": deltas}})
    if name:
        ev.update(pod_fields(PodInfo("sb", namespace, name, "uid"), "node-1"))
    return ev


def series(m: dict, metric: str) -> dict:
    """{(namespace, pod, other labels...): value} of one metric."""
    out = {}
    for (name, labels), value in m.items():
        if name == metric:
            d = dict(labels)
            out[(d.pop("namespace"), d.pop("pod"), *sorted(d.values()))] = value
    return out


def test_drop_and_conntrack_series_carry_the_pod_bounded_and_removed_when_the_pod_is_gone():
    live = {"shop/api-0", "shop/db-0", "shop/web-0"}
    sink = PrometheusSink("p", f"127.0.0.1:{free_port()}", max_pods=2, interface_grace=0.001,
                          interface_alive=lambda name: True, pod_alive=lambda key: key in live)
    sink.start()
    try:
        sink.submit(b"", pod_drop("shop", "api-0", 5))
        sink.submit(b"", pod_drop("shop", "api-0", 2))
        sink.submit(b"", pod_drop("shop", "db-0", 3))
        sink.submit(b"", pod_drop("shop", "web-0", 4))  # no slot left: counted under "other"
        sink.submit(b"", pod_drop("", "", 9, interface="ens5"))  # host network: namespace="" pod=""
        sink.submit(b"", conntrack_counters("shop", "db-0", {"insert_failed": 6, "drop": 0}))
        sink.submit(b"", conntrack_counters("", "", {"early_drop": 2}))
        m = scrape(sink)
        assert series(m, "netagent_drops_total") == {
            ("shop", "api-0", "NO_SOCKET", "eth0"): 7,
            ("shop", "db-0", "NO_SOCKET", "eth0"): 3,
            ("other", "other", "NO_SOCKET", "eth0"): 4,
            ("", "", "NO_SOCKET", "ens5"): 9,
        }
        assert series(m, "netagent_drop_bytes_total")[("shop", "api-0", "NO_SOCKET", "eth0")] == 7 * 64
        assert series(m, "netagent_conntrack_total") == {("shop", "db-0", "insert_failed"): 6,
                                                          ("", "", "early_drop"): 2}
        assert not any(name.startswith("netagent_pod_") and name != "netagent_pod_attribution_up" for name, _ in m)

        live.discard("shop/db-0")  # deleted, and the enrichment stage's grace period over
        m = scrape(sink)
        assert not any(("pod", "db-0") in labels for _, labels in m)  # drops, bytes and conntrack series gone
        assert series(m, "netagent_drops_total")[("shop", "api-0", "NO_SOCKET", "eth0")] == 7
        assert series(m, "netagent_conntrack_total") == {("", "", "early_drop"): 2}  # not a pod's: kept
        assert sink.status()["labels"]["pod"]["expired"] == 1
        sink.submit(b"", pod_drop("shop", "web-0", 1))  # the freed slot goes to the next pod
        assert series(scrape(sink), "netagent_drops_total")[("shop", "web-0", "NO_SOCKET", "eth0")] == 1
    finally:
        sink.close(1)


def test_a_pod_series_goes_with_its_interface_too():
    """A series is removed when either its interface or its pod is given back (no stale half)."""
    ifaces = {"eth0", "veth9"}
    sink = PrometheusSink("p", f"127.0.0.1:{free_port()}", interface_grace=0.001,
                          interface_alive=lambda name: name in ifaces, pod_alive=lambda key: True)
    sink.start()
    try:
        sink.submit(b"", pod_drop("shop", "api-0", 2, interface="veth9"))
        sink.submit(b"", pod_drop("shop", "api-0", 1))
        assert set(series(scrape(sink), "netagent_drops_total")) == {("shop", "api-0", "NO_SOCKET", "veth9"),
                                                                      ("shop", "api-0", "NO_SOCKET", "eth0")}
        ifaces.discard("veth9")
        assert set(series(scrape(sink), "netagent_drops_total")) == {("shop", "api-0", "NO_SOCKET", "eth0")}
    finally:
        sink.close(1)


def test_enrich_failures_by_cause_and_attribution_up_from_the_agent_snapshot():
    sink = PrometheusSink("p", f"127.0.0.1:{free_port()}")
    snap = {"enrich": {"enrich_failed": {"runtime_unavailable": 12}, "pods": {"healthy": False}}}
    sink.observe_agent(lambda: snap)
    sink.start()
    try:
        m = scrape(sink)
        assert m[("netagent_enrich_failed_total", (("cause", "runtime_unavailable"),))] == 12
        assert m[("netagent_pod_attribution_up", ())] == 0
    finally:
        sink.close(1)
