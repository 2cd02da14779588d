"""The enrichment stage without a runtime: processors on events, with an index the test fills."""

import os
import subprocess
import sys

import pytest

from netagent.enrich import cri
from netagent.enrich.cri import PodInfo, sandbox_netns_file, sandbox_pid
from netagent.enrich.processors import Processor
from netagent.enrich.stage import Enricher
from netagent.events import new_event
from netagent.output import pod_cell

HERE = os.path.dirname(os.path.abspath(__file__))
ENRICH = os.path.join(HERE, "..", "..", "agent", "enrich")
HOST = os.stat("/proc/self/ns/net").st_ino


class StubIndex:
    """What the processors read of a PodIndex."""

    generation = 0

    def __init__(self, pods, healthy=True):
        self.by_netns = {p.netns_inode: p for p in pods if not p.host_network}
        self.by_ip = {ip: p for p in pods if not p.host_network for ip in p.ips}
        self.by_name = {p.key: p for p in pods}
        self.healthy = healthy
        self.misses = []

    def note_miss(self, inode):
        self.misses.append(inode)

    def status(self):
        return {"healthy": self.healthy, "pods": len(self.by_name)}

    def start(self):
        pass

    def stop(self):
        pass


def drop(netns, src="10.1.0.1", dst="10.1.0.2"):
    ev = new_event(dataset="netagent.drops", action="packet-dropped",
                   netagent={"drop": {"count": 3, "netns": netns, "ifindex": 0, "interface": None}},
                   source={"ip": src, "port": 1}, destination={"ip": dst, "port": 2})
    ev["event"]["reason"] = "NO_SOCKET"
    return ev


POD = PodInfo("sb1", "payments", "api-0", "u-1", pid=1, netns_inode=4026539999, ips=["10.1.0.2"],
              containers=[("c1", "api")])


def test_sandbox_pid_from_containerd_verbose_info():
    assert sandbox_pid({"info": '{"pid": 4242, "processStatus": "running"}'}) == 4242
    assert sandbox_pid({"info": '{"pid": 0}'}) is None
    assert sandbox_pid({"info": "not json"}) is None
    assert sandbox_pid({}) is None


def test_sandbox_netns_file_from_the_oci_spec_in_verbose_info():
    info = {"info": '{"pid": 7, "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, '
                    '{"type": "network", "path": "/var/run/netns/cni-1"}]}}}'}
    assert sandbox_netns_file(info) == "/var/run/netns/cni-1"
    assert sandbox_netns_file({"info": '{"pid": 7}'}) is None
    pod = PodInfo("sb", "a", "b", "u", pid=7, netns_file="/var/run/netns/cni-1")
    assert pod.netns_path == "/var/run/netns/cni-1"  # opened without access to the sandbox process
    assert PodInfo("sb", "a", "b", "u", pid=7).netns_path.endswith("/7/ns/net")


def test_pod_event_fields_and_the_pod_column():
    enricher = Enricher(StubIndex([POD]), node="node-1")
    ev = enricher(drop(POD.netns_inode))
    assert ev["orchestrator"] == {"type": "kubernetes", "namespace": "payments",
                                  "resource": {"type": "pod", "name": "api-0"}}
    assert ev["kubernetes"]["pod"] == {"name": "api-0", "uid": "u-1"}
    assert ev["container"] == {"id": "c1", "name": "api"}
    assert ev["netagent"]["kubernetes"] == {"destination": {"namespace": "payments", "pod": "api-0"}}
    assert ev["netagent"]["drop"]["netns_name"] == "pod payments/api-0"
    assert pod_cell(ev) == "payments/api-0"
    host = enricher(drop(HOST))
    assert host["netagent"]["host_network"] is True and pod_cell(host) == "(host)"
    assert pod_cell(drop(123)) is None


def test_unknown_netns_asks_for_a_refresh_but_is_no_failure_while_the_runtime_answers():
    index = StubIndex([POD])
    enricher = Enricher(index, node="n")
    ev = enricher(drop(4026530001))
    assert "orchestrator" not in ev and index.misses == [4026530001]
    assert enricher.failures.total == 0


def test_runtime_down_counts_each_unnamed_event_by_cause():
    enricher = Enricher(StubIndex([], healthy=False), node="n")
    for _ in range(7):
        enricher(drop(4026530001))
    assert enricher.failures.by_cause == {"runtime_unavailable": 7}
    assert enricher.status()["enrich_failed"] == {"runtime_unavailable": 7}


def test_a_failing_processor_keeps_the_event_and_is_counted():
    enricher = Enricher(StubIndex([POD]), node="n")

    class Broken(Processor):
        def process(self, events):
            for event in events:
                if event["netagent"]["drop"]["count"] == 3:
                    raise KeyError("bug")
            return events

    enricher.processors.insert(0, Broken())
    fine = drop(POD.netns_inode)
    fine["netagent"]["drop"]["count"] = 4
    events = enricher.process_batch([drop(POD.netns_inode), fine])
    assert [e["kubernetes"]["pod"]["name"] for e in events] == ["api-0", "api-0"]  # the rest of the chain ran
    assert enricher.failures.by_cause == {"error:Broken": 1}  # only the event it failed on


def test_without_kubernetes_events_keep_their_inode_and_gain_no_kubernetes_fields():
    enricher = Enricher(None)
    ev = enricher(drop(4026530001))
    assert ev["netagent"]["drop"]["netns"] == 4026530001
    assert "kubernetes" not in ev and "orchestrator" not in ev


def test_where_each_dataset_keeps_its_namespace():
    enricher = Enricher(StubIndex([POD]), node="n")
    ct = new_event(dataset="netagent.conntrack", action="counters",
                   netagent={"conntrack": {"netns": POD.netns_inode, "netns_name": "pid:1"}})
    mtu = new_event(dataset="netagent.mtu", action="path-mtu", netagent={"mtu": {"netns_inode": POD.netns_inode}})
    dns = new_event(dataset="netagent.dns", action="x", netagent={"dns": {"netns": "host"}})
    other = new_event(dataset="netagent.host", action="x", netagent={"host": {}})
    assert enricher(ct)["kubernetes"]["pod"]["name"] == "api-0"
    assert ct["netagent"]["conntrack"]["netns_name"] == "pod payments/api-0"
    assert enricher(mtu)["kubernetes"]["pod"]["name"] == "api-0"
    assert enricher(dns)["netagent"]["host_network"] is True
    assert enricher(other)["kubernetes"] == {"node": {"name": "n"}} and "host_network" not in other["netagent"]


def test_kept_answers_follow_the_index_deleted_pod_after_its_grace_and_a_new_pod_in_a_seen_namespace():
    """The stage keeps each namespace's answer until the index changes: a pod deleted is named
    for its grace period only, and a new pod in a namespace seen before is named after the refresh."""
    from netagent.enrich.pods import PodIndex

    sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
    try:
        from enrich_bench import StaticSource  # the pods of a node without a runtime: the test changes the list
    finally:
        sys.path.pop(0)

    now = [0.0]
    source = StaticSource([PodInfo("sb1", "payments", "api-0", "u-1", netns_inode=POD.netns_inode,
                                 ips=["10.1.0.2"], containers=[("c1", "api")])])
    index = PodIndex(source, refresh_interval=10.0, grace=30.0, clock=lambda: now[0])
    index.refresh()
    enricher = Enricher(index, node="n")
    assert enricher(drop(POD.netns_inode))["kubernetes"]["pod"]["name"] == "api-0"
    source.pods = []  # deleted: its last events, flushed later, still name it
    now[0] = 40.0  # refresh interval + grace after it was last listed
    index.refresh()
    late = enricher(drop(POD.netns_inode))
    assert late["kubernetes"]["pod"]["name"] == "api-0"
    assert late["netagent"]["kubernetes"] == {"destination": {"namespace": "payments", "pod": "api-0"}}
    now[0] = 40.5
    index.refresh()
    gone = enricher(drop(POD.netns_inode))
    assert "orchestrator" not in gone and gone["kubernetes"] == {"node": {"name": "n"}}
    assert "kubernetes" not in gone["netagent"]  # its IP names no pod either
    source.pods = [PodInfo("sb2", "shop", "web-0", "u-2", netns_inode=POD.netns_inode, ips=["10.1.0.2"],
                           containers=[("c2", "web")])]  # the inode reused by a new sandbox
    assert "orchestrator" not in enricher(drop(POD.netns_inode))  # not listed yet
    index.refresh()
    reused = enricher(drop(POD.netns_inode))
    assert reused["orchestrator"]["resource"]["name"] == "web-0" and reused["kubernetes"]["pod"]["uid"] == "u-2"
    assert reused["netagent"]["drop"]["netns_name"] == "pod shop/web-0"
    assert reused["netagent"]["kubernetes"] == {"destination": {"namespace": "shop", "pod": "web-0"}}


def test_answers_forgotten_at_their_bound_in_the_middle_of_a_batch_are_worked_out_again(monkeypatch):
    from netagent.enrich import processors

    monkeypatch.setattr(processors, "VIEW_LIMIT", 3)
    pods = [PodInfo(f"sb{i}", "shop", f"web-{i}", f"u-{i}", netns_inode=4026540000 + i, ips=[f"10.2.0.{i}"])
            for i in range(8)]
    enricher = Enricher(StubIndex(pods), node="n")
    events = enricher.process_batch([drop(pod.netns_inode, dst=pod.ips[0]) for pod in pods * 3])
    assert [e["kubernetes"]["pod"]["name"] for e in events] == [pod.name for pod in pods * 3]
    assert [e["netagent"]["kubernetes"]["destination"]["pod"] for e in events] == [pod.name for pod in pods * 3]
    assert sum(len(by_ifindex) for kind in enricher.processors[0]._views.values() for by_ifindex in kind.values()) <= 3


def test_peer_objects_shared_between_events_are_not_changed_by_the_api_server_processor():
    """Events between the same two pods share one netagent.kubernetes object; the API server's
    processor, adding a workload to one event, gives that event a new object instead."""
    from netagent.enrich.apiserver import ApiPeerAttributor, ClusterPods

    db = PodInfo("sb2", "payments", "db-0", "u-2", netns_inode=4026539998, ips=["10.1.0.3"])
    enricher = Enricher(StubIndex([POD, db]), node="n")
    cluster = ClusterPods(None, "in-process", grace=5.0)
    cluster.by_ip = {"10.1.0.3": {"namespace": "payments", "pod": "db-0", "workload": "StatefulSet/db"}}
    cluster.healthy = True
    enricher.processors.append(ApiPeerAttributor(cluster, enricher.failures))
    first = enricher(drop(POD.netns_inode, src="10.1.0.2", dst="10.1.0.3"))
    assert first["netagent"]["kubernetes"] == {"source": {"namespace": "payments", "pod": "api-0"},
                                               "destination": cluster.by_ip["10.1.0.3"]}
    enricher.processors.pop()  # the runtime's names only, for the same two pods
    second = enricher(drop(POD.netns_inode, src="10.1.0.2", dst="10.1.0.3"))
    assert second["netagent"]["kubernetes"] == {"source": {"namespace": "payments", "pod": "api-0"},
                                                "destination": {"namespace": "payments", "pod": "db-0"}}
    assert first["netagent"]["kubernetes"]["destination"]["workload"] == "StatefulSet/db"


def test_runtime_socket_detection_order(tmp_path, monkeypatch):
    monkeypatch.delenv("NETAGENT_RUNTIME_SOCKET", raising=False)
    first, second = tmp_path / "containerd.sock", tmp_path / "crio.sock"
    monkeypatch.setattr(cri, "RUNTIME_SOCKETS", (str(first), str(second)))
    assert cri.detect_socket() is None
    second.touch()
    assert cri.detect_socket() == str(second)
    first.touch()
    assert cri.detect_socket() == str(first)
    assert cri.detect_socket("/configured.sock") == "/configured.sock"


def test_committed_cri_pb2_is_what_the_proto_generates(tmp_path):
    """cri_pb2.py is generated and committed; it must match cri.proto (regenerate: make cri-proto)."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the test extra) generates the module")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ENRICH}", f"--python_out={tmp_path}",
                    os.path.join(ENRICH, "cri.proto")], check=True)
    generated = (tmp_path / "cri_pb2.py").read_text()
    committed = open(os.path.join(ENRICH, "cri_pb2.py")).read()
    strip = lambda text: [ln for ln in text.splitlines() if not ln.startswith("# Protobuf Python Version")]  # noqa: E731
    assert strip(generated) == strip(committed)


def test_findings_name_the_pod_when_enrichment_runs_before_the_correlator():
    from netagent.findings import Correlator

    enricher = Enricher(StubIndex([POD]), node="n")
    correlator = Correlator()
    alert = new_event(dataset="netagent.conntrack", action="insert-failed", kind="alert",
                      netagent={"conntrack": {"netns": POD.netns_inode, "netns_name": "pid:1", "entries": 10,
                                              "max": 1000, "fill_ratio": 0.01,
                                              "deltas": {"insert_failed": 31, "drop": 31}}})
    out = correlator(enricher(alert))
    tick = new_event(dataset="netagent.host", action="node-counters", kind="metric",  # findings are evaluated here
                     netagent={"host": {"interval_s": 10.0, "cpu": {}, "softnet": {}}})
    out += correlator(enricher(tick))
    findings = [e for e in out if e["event"]["dataset"] == "netagent.finding"]
    assert findings and "pod payments/api-0" in findings[0]["message"], out
