"""The prometheus sink: metrics a scraper sees, parsed with the Prometheus text parser."""

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netagent.configschema import SchemaError
from netagent.events import new_event
from netagent.sinks.prometheus import PrometheusSink
from netagent.sinks.stdout import StdoutSink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop(reason, interface, count, nbytes=100, addr="10.0.0.1", port=5555):
    ev = new_event(dataset="netagent.drops", action="packet-dropped",
                   netagent={"drop": {"count": count, "bytes": nbytes, "interface": interface}},
                   source={"ip": addr, "port": port}, destination={"ip": addr, "port": port})
    ev["event"]["reason"] = reason
    return ev


def scrape(sink) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{sink.bound_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def sink():
    s = PrometheusSink("prometheus", f"127.0.0.1:{free_port()}", max_interfaces=3, max_reasons=50)
    s.start()
    yield s
    s.close(1)


def test_drops_counted_by_reason_and_interface(sink):
    sink.submit(b"", drop("NO_SOCKET", "eth0", 5, 500))
    sink.submit(b"", drop("NO_SOCKET", "eth0", 2, 200))
    sink.submit(b"", drop("NETFILTER_DROP", "veth1", 1))
    sink.submit(b"", new_event(dataset="netagent.agent", action="heartbeat"))  # not a drop
    m = scrape(sink)
    no_pod = (("namespace", ""), ("pod", ""))  # events no pod is named in (no enrichment here)
    assert m[("netagent_drops_total", (("interface", "eth0"), *no_pod, ("reason", "NO_SOCKET")))] == 7
    assert m[("netagent_drop_bytes_total", (("interface", "eth0"), *no_pod, ("reason", "NO_SOCKET")))] == 700
    assert m[("netagent_drops_total", (("interface", "veth1"), *no_pod, ("reason", "NETFILTER_DROP")))] == 1
    assert ("netagent_build_info", ()) not in m
    assert any(name == "netagent_build_info" for name, _ in m)
    # no *_created twins, no addresses or ports anywhere in the labels
    assert not any(name.endswith("_created") for name, _ in m)
    assert not any(k in ("ip", "port", "source", "destination") for _, labels in m for k, _ in labels)


def test_label_cardinality_is_bounded(sink):
    for i in range(20):
        sink.submit(b"", drop("NO_SOCKET", f"veth{i}", 1))
    m = scrape(sink)
    ifaces = {dict(labels)["interface"] for name, labels in m if name == "netagent_drops_total"}
    assert ifaces == {"veth0", "veth1", "veth2", "other"}
    assert m[("netagent_drops_total", (("interface", "other"), ("namespace", ""), ("pod", ""),
                                       ("reason", "NO_SOCKET")))] == 17
    assert sink.status()["label_overflow"]["interface"] == 17


def test_agent_snapshot_is_exported(sink):
    sink.observe_agent(lambda: {
        "by_dataset": {"netagent.drops": 12, "netagent.agent": 3},
        "lost": {"kernel": 4, "queue": 5, "sink": 7, "spool": 1},
        "sinks": [{"name": "syslog", "type": "syslog", "lost": {"sink": 7, "spool": 1}, "healthy": False}],
        "sensors": [{"name": "drops", "state": "on", "attach_path": "tracepoint skb:kfree_skb",
                     "lost": {"kernel": 3}, "queue_lost": 2},
                    {"name": "conntrack", "state": "on", "attach_path": "counters", "lost": {"kernel": 1},
                     "notes": ["per-packet part failed: no kprobes; counters only"], "notes_total": 1},
                    {"name": "dns", "state": "off", "attach_path": None}],
        "processing": {"failed": 6, "findings": {"evaluations": 9, "active": 2, "raised": 3, "cleared": 1,
                                                 "rule_errors": 1, "last_errors": ["rule x: bug"], "records": 10,
                                                 "records_evicted": 8}},
        "queue_depth": 2, "queue_capacity": 100, "config_reload_ok": False, "start_time": 1700000000.0,
    })
    m = scrape(sink)
    assert m[("netagent_events_total", (("dataset", "netagent.drops"),))] == 12
    # every loss by place and sensor; "" is the part that is no one sensor's
    lost = {(dict(labels)["place"], dict(labels)["sensor"]): v for (name, labels), v in m.items()
            if name == "netagent_events_lost_total"}
    assert lost == {("kernel", "drops"): 3, ("kernel", "conntrack"): 1, ("kernel", ""): 0,
                    ("queue", "drops"): 2, ("queue", ""): 3, ("sink", ""): 7, ("spool", ""): 1}
    assert m[("netagent_processor_failures_total", ())] == 6
    assert m[("netagent_findings_active", ())] == 2
    assert m[("netagent_findings_rule_errors_total", ())] == 1
    assert m[("netagent_findings_records_evicted_total", ())] == 8
    assert m[("netagent_sensor_notes_total", (("sensor", "conntrack"),))] == 1
    assert m[("netagent_sensor_notes_total", (("sensor", "drops"),))] == 0
    assert m[("netagent_sink_events_lost_total", (("place", "sink"), ("sink", "syslog"), ("type", "syslog")))] == 7
    assert m[("netagent_sink_up", (("sink", "syslog"), ("type", "syslog")))] == 0
    assert m[("netagent_sensor_up", (("attach_path", "tracepoint skb:kfree_skb"), ("sensor", "drops")))] == 1
    assert m[("netagent_sensor_up", (("attach_path", ""), ("sensor", "dns")))] == 0
    assert m[("netagent_queue_events", ())] == 2
    assert m[("netagent_config_last_reload_successful", ())] == 0
    assert ("process_resident_memory_bytes", ()) in m


def test_port_in_use_fails_start_naming_listen():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s = PrometheusSink("p", f"127.0.0.1:{port}")
        with pytest.raises(SchemaError) as exc:
            s.start()
    assert exc.value.key == "listen" and "Address already in use" in exc.value.message


def test_stdout_sink_counts_a_closed_reader():
    class Closed:
        def write(self, data):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    s = StdoutSink("stdout", stream=Closed())
    s.start()
    for _ in range(10):
        s.submit(b"{}\n", {})
    assert s.flush(5)
    s.close(1)
    assert s.losses() == {"sink": 10}
