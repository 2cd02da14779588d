"""The API-server source (netagent.enrich.apiserver) against the FAKE API server on loopback
(tests/k8s/apiserver_lab.py: real API JSON shapes, HTTPS with its own CA, a bearer token).
Not a real cluster: none can be installed here."""

import time

import pytest

from apiserver_lab import FakeApiServer, owner, pod_object
from netagent.enrich.apiserver import ApiPeerAttributor, ClusterPods, connection, deployment_by_hash
from netagent.enrich.processors import Failures
from netagent.errors import ConfigError
from pod_agent import wait_for

pytest.importorskip("lightkube")


def drop_event(src: str, dst: str) -> dict:
    return {"event": {"dataset": "netagent.drops"}, "source": {"ip": src, "port": 5353},
            "destination": {"ip": dst, "port": 9}, "netagent": {"drop": {"netns": 0}}}


@pytest.fixture
def lab(tmp_path):
    server = FakeApiServer(str(tmp_path / "apiserver")).start()
    yield server
    server.stop()


def cluster_of(lab, tmp_path, grace=30.0, watch=300.0, log=None) -> ClusterPods:
    config, description = connection(lab.kubeconfig(str(tmp_path / "kubeconfig")))
    return ClusterPods(config, description, grace=grace, watch_seconds=watch, log=log)


def populate(lab):
    """One pod of each kind of owner, as the controllers would leave them."""
    lab.put_object("ReplicaSet", "apps/v1", "payments", "api-7d9f8", owners=[owner("Deployment", "api")])
    lab.put_pod(pod_object("payments", "api-7d9f8-x2k4q", "10.244.1.7", labels={"pod-template-hash": "7d9f8"},
                           owners=[owner("ReplicaSet", "api-7d9f8")]))
    lab.put_pod(pod_object("payments", "db-0", "10.244.2.3", owners=[owner("StatefulSet", "db")]))
    lab.put_pod(pod_object("kube-system", "proxy-abcde", "10.244.3.9", owners=[owner("DaemonSet", "proxy")]))
    lab.put_object("Job", "batch/v1", "ops", "backup-29000000", owners=[owner("CronJob", "backup", "batch/v1")])
    lab.put_pod(pod_object("ops", "backup-29000000-q7z", "10.244.1.20",
                           owners=[owner("Job", "backup-29000000", "batch/v1")]))
    lab.put_pod(pod_object("default", "debug", "10.244.2.40"))  # a bare pod: no owner
    lab.put_pod(pod_object("kube-system", "node-exporter-z", "192.0.2.10", host_network=True,
                           owners=[owner("DaemonSet", "node-exporter")]))


def test_pods_of_the_cluster_named_by_ip_with_their_workload(lab, tmp_path):
    populate(lab)
    cluster = cluster_of(lab, tmp_path)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "first list")
        peers = cluster.peers()
        assert peers["10.244.1.7"] == {"namespace": "payments", "pod": "api-7d9f8-x2k4q",
                                       "workload": "Deployment/api"}
        assert peers["10.244.2.3"]["workload"] == "StatefulSet/db"
        assert peers["10.244.3.9"]["workload"] == "DaemonSet/proxy"
        assert peers["10.244.1.20"]["workload"] == "CronJob/backup"
        assert peers["10.244.2.40"] == {"namespace": "default", "pod": "debug"}
        assert "192.0.2.10" not in peers  # a hostNetwork pod has the node's IP: it names no pod
        # the ReplicaSet and Job were read through the API, with the token
        assert "/apis/apps/v1/namespaces/payments/replicasets/api-7d9f8" in lab.requests
        assert "/apis/batch/v1/namespaces/ops/jobs/backup-29000000" in lab.requests

        # the watch: a pod created now is named without another list
        lists = cluster.lists
        lab.put_pod(pod_object("payments", "api-7d9f8-n3w", "10.244.4.4", labels={"pod-template-hash": "7d9f8"},
                               owners=[owner("ReplicaSet", "api-7d9f8")]))
        wait_for(lambda: "10.244.4.4" in cluster.peers(), 30, "a new pod through the watch")
        assert cluster.peers()["10.244.4.4"]["workload"] == "Deployment/api"
        assert cluster.lists == lists

        # a status change that leaves IP and owner as they were leaves the index as it was
        index, seen = cluster.by_ip, cluster.watch_events
        pod = lab.pods[("payments", "api-7d9f8-n3w")]
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        lab.put_pod(pod)
        wait_for(lambda: cluster.watch_events > seen, 30, "the MODIFIED event")
        assert cluster.by_ip is index
        # a new IP (the pod re-created its sandbox) moves the name
        pod["status"]["podIP"], pod["status"]["podIPs"] = "10.244.4.5", [{"ip": "10.244.4.5"}]
        lab.put_pod(pod)
        wait_for(lambda: "10.244.4.5" in cluster.peers(), 30, "the new IP through the watch")
        assert "10.244.4.4" not in cluster.peers()
        assert cluster.peers()["10.244.4.5"]["pod"] == "api-7d9f8-n3w"
    finally:
        cluster.stop()


def test_replicaset_unreadable_falls_back_to_pod_template_hash(lab, tmp_path):
    lab.forbidden_kinds.add("ReplicaSet")  # RBAC for pods only
    lab.put_pod(pod_object("shop", "web-5c6b7d-aaaaa", "10.244.5.5", labels={"pod-template-hash": "5c6b7d"},
                           owners=[owner("ReplicaSet", "web-5c6b7d")]))
    lab.put_pod(pod_object("shop", "odd-bbbbb", "10.244.5.6", labels={"pod-template-hash": "zzz"},
                           owners=[owner("ReplicaSet", "odd-rs")]))
    cluster = cluster_of(lab, tmp_path)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "first list")
        assert cluster.peers()["10.244.5.5"]["workload"] == "Deployment/web"
        # the name does not follow the convention: the ReplicaSet is all we can say
        assert cluster.peers()["10.244.5.6"]["workload"] == "ReplicaSet/odd-rs"
        assert cluster.status()["owner_fallbacks"] == 1
        # a 403 is not asked again for every ReplicaSet until the next full list
        assert sum("/replicasets/" in path for path in lab.requests) == 1
    finally:
        cluster.stop()


def test_deployment_by_hash_only_when_the_name_has_the_hash():
    assert deployment_by_hash("api-7d9f8", {"pod-template-hash": "7d9f8"}) == "api"
    assert deployment_by_hash("my-api-v2-7d9f8", {"pod-template-hash": "7d9f8"}) == "my-api-v2"
    assert deployment_by_hash("api-7d9f8", {"pod-template-hash": "other"}) is None
    assert deployment_by_hash("7d9f8", {"pod-template-hash": "7d9f8"}) is None
    assert deployment_by_hash("api-7d9f8", None) is None


def test_deleted_pod_named_for_grace_then_gone(lab, tmp_path):
    lab.put_pod(pod_object("shop", "cart-0", "10.244.6.1", owners=[owner("StatefulSet", "cart")]))
    cluster = cluster_of(lab, tmp_path, grace=1.0)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "first list")
        lab.delete_pod("shop", "cart-0")
        wait_for(lambda: cluster.watch_events >= 1, 30, "the DELETED event")
        assert cluster.peers()["10.244.6.1"]["pod"] == "cart-0"  # its last events still name it
        # the next change after the grace period drops it
        time.sleep(1.2)
        lab.put_pod(pod_object("shop", "other", "10.244.6.2"))
        wait_for(lambda: "10.244.6.2" in cluster.peers(), 30, "the next event")
        assert "10.244.6.1" not in cluster.peers()
    finally:
        cluster.stop()


def test_server_down_events_flow_counted_then_named_again(lab, tmp_path):
    lab.put_object("ReplicaSet", "apps/v1", "payments", "api-7d9f8", owners=[owner("Deployment", "api")])
    lab.put_pod(pod_object("payments", "api-7d9f8-x2k4q", "10.244.1.7", labels={"pod-template-hash": "7d9f8"},
                           owners=[owner("ReplicaSet", "api-7d9f8")]))
    said = []
    cluster = cluster_of(lab, tmp_path, grace=1.0, log=said.append)
    failures = Failures()
    attributor = ApiPeerAttributor(cluster, failures)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "first list")
        out = attributor.process([drop_event("10.0.0.1", "10.244.1.7")])
        assert out[0]["netagent"]["kubernetes"]["destination"]["workload"] == "Deployment/api"
        assert failures.total == 0

        lab.stop()
        wait_for(lambda: cluster.healthy is False, 30, "the failure noticed")
        assert any("API server:" in line and "stay named" in line for line in said)
        wait_for(lambda: not cluster.peers(), 10, "the grace period to end")
        batch = [drop_event("10.0.0.1", "10.244.1.7") for _ in range(50)]
        out = attributor.process(batch)
        assert len(out) == 50 and all("kubernetes" not in e["netagent"] for e in out)  # kept, unnamed
        assert failures.by_cause == {"apiserver_unavailable": 50}

        lab.start()  # same port: the kubeconfig still points at it
        wait_for(lambda: cluster.healthy, 60, "recovery after the server returns")
        out = attributor.process([drop_event("10.0.0.1", "10.244.1.7")])
        assert out[0]["netagent"]["kubernetes"]["destination"]["pod"] == "api-7d9f8-x2k4q"
        assert failures.by_cause == {"apiserver_unavailable": 50}
        assert any("answers again" in line for line in said)
        assert cluster.status()["failures"] >= 1 and cluster.lists >= 2
    finally:
        cluster.stop()


def test_local_pod_named_by_the_runtime_gains_its_workload_a_different_pod_is_kept(lab, tmp_path):
    lab.put_pod(pod_object("shop", "db-0", "10.93.0.2", owners=[owner("StatefulSet", "db")]))
    cluster = cluster_of(lab, tmp_path)
    failures = Failures()
    attributor = ApiPeerAttributor(cluster, failures)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "first list")
        same = drop_event("10.93.0.1", "10.93.0.2")
        same["netagent"]["kubernetes"] = {"destination": {"namespace": "shop", "pod": "db-0"}}
        other = drop_event("10.93.0.1", "10.93.0.2")  # the runtime (fresher on its node) says another pod
        other["netagent"]["kubernetes"] = {"destination": {"namespace": "shop", "pod": "db-new"}}
        attributor.process([same, other])
        assert same["netagent"]["kubernetes"]["destination"] == {"namespace": "shop", "pod": "db-0",
                                                                 "workload": "StatefulSet/db"}
        assert other["netagent"]["kubernetes"]["destination"] == {"namespace": "shop", "pod": "db-new"}
    finally:
        cluster.stop()


def test_in_cluster_outside_a_pod_is_a_config_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        connection("in-cluster")


def test_in_cluster_service_account(lab, tmp_path, monkeypatch):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("netagent-test-token")
    (account / "namespace").write_text("netagent")
    (account / "ca.crt").write_text(open(lab.ca_file).read())
    monkeypatch.setenv("NETAGENT_SERVICE_ACCOUNT_DIR", str(account))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(lab.port))
    lab.put_pod(pod_object("payments", "db-0", "10.244.2.3", owners=[owner("StatefulSet", "db")]))
    config, description = connection("in-cluster")
    assert description.startswith("in-cluster service account, https://127.0.0.1:")
    cluster = ClusterPods(config, description, grace=30.0)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "first list")
        assert cluster.peers()["10.244.2.3"]["workload"] == "StatefulSet/db"
    finally:
        cluster.stop()


def test_doctor_report_off_reachable_unreachable(lab, tmp_path):
    from netagent.enrich.apiserver import apiserver_report

    off = apiserver_report({"apiserver": ""})
    assert off["enabled"] is False and off["available"] is None and "apiserver not set" in off["detail"]
    kubeconfig = lab.kubeconfig(str(tmp_path / "kubeconfig"))
    up = apiserver_report({"apiserver": kubeconfig})
    assert up["available"] is True and f"https://127.0.0.1:{lab.port}" in up["detail"]
    assert "pods readable" in up["detail"]
    lab.stop()
    down = apiserver_report({"apiserver": kubeconfig})
    assert down["enabled"] is True and down["available"] is False
    assert f"https://127.0.0.1:{lab.port}" in down["detail"] and "Connect" in down["detail"]
    wrong_token = apiserver_report({"apiserver": lab.start().kubeconfig(str(tmp_path / "bad"), token="nope")})
    assert wrong_token["available"] is False and "Unauthorized" in wrong_token["detail"], wrong_token


def test_attributor_during_an_outage_names_what_it_listed_counts_each_event_once():
    """No server: the index as the thread leaves it after a failure, within and after the grace period."""
    now = [100.0]
    cluster = ClusterPods(None, "in-process", grace=5.0, clock=lambda: now[0])
    cluster.by_ip = {"10.244.1.7": {"namespace": "payments", "pod": "api-0", "workload": "StatefulSet/api"}}
    cluster.healthy, cluster.failed_since = False, 99.0
    failures = Failures()
    attributor = ApiPeerAttributor(cluster, failures)
    both_known = drop_event("10.244.1.7", "10.244.1.7")
    one_unknown = drop_event("10.244.1.7", "10.9.9.9")
    runtime_named_other = drop_event("10.8.8.8", "10.244.1.7")  # the runtime named the source
    runtime_named_other["netagent"]["kubernetes"] = {"source": {"namespace": "shop", "pod": "web-0"}}
    no_addresses = {"event": {"dataset": "netagent.mtu"}, "netagent": {"mtu": {}}}
    attributor.process([both_known, one_unknown, runtime_named_other, no_addresses])
    assert both_known["netagent"]["kubernetes"] == {"source": cluster.by_ip["10.244.1.7"],
                                                    "destination": cluster.by_ip["10.244.1.7"]}
    assert one_unknown["netagent"]["kubernetes"] == {"source": cluster.by_ip["10.244.1.7"]}
    assert runtime_named_other["netagent"]["kubernetes"] == {"source": {"namespace": "shop", "pod": "web-0"},
                                                             "destination": cluster.by_ip["10.244.1.7"]}
    assert failures.by_cause == {"apiserver_unavailable": 1}  # only one_unknown had an address nothing named
    now[0] = 105.0  # 6 s into the outage: past the grace period, nothing listed is named any more
    late = drop_event("10.244.1.7", "10.9.9.9")
    attributor.process([late, dict(no_addresses)])
    assert "kubernetes" not in late["netagent"]
    assert failures.by_cause == {"apiserver_unavailable": 2}
    cluster.healthy = True  # healthy: a miss is an address that is no pod's, not a failure
    attributor.process([drop_event("10.1.1.1", "10.9.9.9")])
    assert failures.by_cause == {"apiserver_unavailable": 2}


def test_a_bug_in_the_thread_is_counted_by_the_watchdog_and_the_thread_restarted(lab, tmp_path, monkeypatch):
    from netagent.watchdog import WATCHDOG

    def restarts():
        return next((t["restarts"] for t in WATCHDOG.status()["threads"] if t["thread"] == "enrich-apiserver"), 0)

    lab.put_pod(pod_object("payments", "db-0", "10.244.2.3", owners=[owner("StatefulSet", "db")]))
    before = restarts()
    cluster = cluster_of(lab, tmp_path)
    real_entry = ClusterPods._entry
    calls = []

    def buggy_once(self, pod):
        calls.append(pod.metadata.name)
        if len(calls) == 1:
            raise KeyError("a bug of ours")  # not an API failure: the watchdog's business
        return real_entry(self, pod)

    monkeypatch.setattr(ClusterPods, "_entry", buggy_once)
    cluster.start()
    try:
        wait_for(lambda: cluster.healthy, 30, "the list after the restart")
        assert restarts() == before + 1
        record = next(t for t in WATCHDOG.status()["threads"] if t["thread"] == "enrich-apiserver")
        assert "KeyError" in record["last_reason"] and "a bug of ours" in record["last_reason"]
        assert cluster.peers()["10.244.2.3"]["workload"] == "StatefulSet/db"
    finally:
        cluster.stop()
