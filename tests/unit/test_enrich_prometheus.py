"""Pod series of the prometheus sink: namespace/pod labels from enriched events, bounded, removed when gone."""

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


def pod_drop(namespace, name, count, reason="NO_SOCKET"):
    ev = new_event(dataset="netagent.drops", action="packet-dropped",
                   netagent={"drop": {"count": count, "bytes": 64 * count, "interface": "eth0"}})
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


def test_pod_series_counted_bounded_and_removed_when_the_pod_is_gone():
    live = {"shop/api-0", "shop/db-0", "shop/web-0"}
    sink = PrometheusSink("p", f"127.0.0.1:{free_port()}", max_pods=2, interface_grace=0.001,
                          pod_alive=lambda key: key in live)
    sink.start()
    try:
        sink.submit(b"", pod_drop("shop", "api-0", 5))
        sink.submit(b"", pod_drop("shop", "api-0", 2))
        sink.submit(b"", pod_drop("shop", "db-0", 3))
        sink.submit(b"", pod_drop("shop", "web-0", 4))  # no slot left: counted under "other"
        sink.submit(b"", pod_drop("", "", 9))  # not a pod's namespace: no pod series
        sink.submit(b"", conntrack_counters("shop", "db-0", {"insert_failed": 6, "drop": 0}))
        m = scrape(sink)
        series = {k: v for k, v in m.items() if k[0] == "netagent_pod_drops_total"}
        assert series == {
            ("netagent_pod_drops_total", (("namespace", "shop"), ("pod", "api-0"), ("reason", "NO_SOCKET"))): 7,
            ("netagent_pod_drops_total", (("namespace", "shop"), ("pod", "db-0"), ("reason", "NO_SOCKET"))): 3,
            ("netagent_pod_drops_total", (("namespace", "other"), ("pod", "other"), ("reason", "NO_SOCKET"))): 4,
        }
        assert m[("netagent_pod_conntrack_total", (("counter", "insert_failed"), ("namespace", "shop"),
                                                    ("pod", "db-0")))] == 6
        assert not any(k[0] == "netagent_pod_conntrack_total" and ("counter", "drop") in k[1] for k in m)
        live.discard("shop/db-0")  # deleted, and its grace period over
        m = scrape(sink)
        assert not any(("pod", "db-0") in labels for name, labels in m if name.startswith("netagent_pod_"))
        assert m[("netagent_pod_drops_total", (("namespace", "shop"), ("pod", "api-0"), ("reason", "NO_SOCKET")))] == 7
        assert sink.status()["labels"]["pod"]["expired"] == 1
        sink.submit(b"", pod_drop("shop", "web-0", 1))  # the freed slot goes to the next pod
        assert scrape(sink)[("netagent_pod_drops_total", (("namespace", "shop"), ("pod", "web-0"),
                                                          ("reason", "NO_SOCKET")))] == 1
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
