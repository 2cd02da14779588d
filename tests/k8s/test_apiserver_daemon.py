"""`netagent run` with `[kubernetes] apiserver` = a kubeconfig of the FAKE API server on loopback
(tests/k8s/apiserver_lab.py; not a real cluster): real drops in real namespaces whose addresses
the API server says are pods of other nodes; the server killed and brought back mid-run."""

import os
import subprocess
import sys

import pytest

from apiserver_lab import FakeApiServer, owner, pod_object
from fake_cri import FakeCriServer
from lab import Namespace, veth_pair
from pod_agent import NETAGENT, SENDER, read_events, start_agent, stop_agent, total, udp_no_ports, wait_for

pytest.importorskip("lightkube")


def heartbeats(events_path):
    return [e["netagent"]["agent"] for e in read_events(events_path) if e["event"]["action"] == "heartbeat"]


def apiserver_state(events_path):
    beats = heartbeats(events_path)
    return beats[-1]["enrich"].get("apiserver", {}) if beats else {}


def drops_into(events, inode):
    return [e for e in events if e["event"]["dataset"] == "netagent.drops" and e["event"]["reason"] == "NO_SOCKET"
            and e["netagent"]["drop"]["netns"] == inode]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF, network namespaces)")
@pytest.mark.timeout(300)
def test_remote_pods_named_with_workload_server_down_counted_then_named_again(tmp_path):
    api = FakeApiServer(str(tmp_path / "apiserver")).start()
    cri = FakeCriServer().start()  # a runtime with no pods: nothing on this node is named by it
    a, b = Namespace(), Namespace()
    agent = None
    try:
        veth_pair(a, b, "10.95.0.1/24", "10.95.0.2/24")
        api.put_object("ReplicaSet", "apps/v1", "payments", "api-7d9f8", owners=[owner("Deployment", "api")])
        api.put_pod(pod_object("payments", "api-7d9f8-x2k4q", "10.95.0.2", labels={"pod-template-hash": "7d9f8"},
                               owners=[owner("ReplicaSet", "api-7d9f8")]))
        api.put_pod(pod_object("shop", "web-0", "10.95.0.1", owners=[owner("StatefulSet", "web")]))
        kubeconfig = api.kubeconfig(str(tmp_path / "kubeconfig"))
        # only drops to or from the destination pod's address: other tests' floods stay out
        agent, events_path = start_agent(tmp_path, {"runtime_socket": cri.socket_path, "refresh": "1s",
                                                    "grace": "1s", "apiserver": kubeconfig},
                                         drops_filter='host = "10.95.0.2"')
        wait_for(lambda: apiserver_state(events_path).get("healthy"), 60, "the API server listed")

        def send(count):
            out = a.run(sys.executable, "-c", SENDER, "10.95.0.2", "9", str(count), "10.95.0.1").stdout
            assert int(out) == count

        def settle(expected):
            return wait_for(lambda: total(drops_into(read_events(events_path), b.inode)) >= expected, 30,
                            f"{expected} drops in the destination's namespace")

        start = udp_no_ports(b.read_proc("net/snmp"))
        send(30)
        settle(30)
        named = drops_into(read_events(events_path), b.inode)
        assert total(named) == 30
        for e in named:
            assert e["netagent"]["kubernetes"]["destination"] == {
                "namespace": "payments", "pod": "api-7d9f8-x2k4q", "workload": "Deployment/api"}
            assert e["netagent"]["kubernetes"]["source"] == {"namespace": "shop", "pod": "web-0",
                                                             "workload": "StatefulSet/web"}

        # the API server dies: events keep flowing; after the grace period they are unnamed and counted
        api.stop()
        wait_for(lambda: apiserver_state(events_path).get("healthy") is False, 60, "the outage noticed")
        sent = 30

        def unnamed_batch():
            nonlocal sent
            before = len(drops_into(read_events(events_path), b.inode))
            send(10)
            sent += 10
            settle(sent)
            latest = drops_into(read_events(events_path), b.inode)[before:]
            return all("kubernetes" not in e["netagent"] for e in latest) and latest

        unnamed = wait_for(unnamed_batch, 60, "drops unnamed once the grace period is over")
        # each unnamed event was counted (a heartbeat written after they were processed says so)
        failed = wait_for(lambda: (heartbeats(events_path)[-1]["enrich"]["enrich_failed"]
                                   .get("apiserver_unavailable", 0) >= len(unnamed)
                                   and heartbeats(events_path)[-1]["enrich"]["enrich_failed"]["apiserver_unavailable"]),
                          30, "apiserver_unavailable counted")

        api.start()  # back on the same port
        wait_for(lambda: apiserver_state(events_path).get("healthy"), 90, "recovery after the server returns")
        mark = len(drops_into(read_events(events_path), b.inode))
        send(12)
        sent += 12
        settle(sent)
        again = drops_into(read_events(events_path), b.inode)[mark:]
        assert total(again) == 12
        assert all(e["netagent"]["kubernetes"]["destination"]["workload"] == "Deployment/api" for e in again)
        # not one event lost across the outage: the sensor's count equals the kernel's
        assert total(drops_into(read_events(events_path), b.inode)) == udp_no_ports(b.read_proc("net/snmp")) - start
    finally:
        if agent is not None:
            stop_agent(agent)
        for ns in (a, b):
            ns.delete()
        cri.close()
        api.stop()
    stderr = (tmp_path / "agent.stderr").read_text()
    assert "API server:" in stderr and "answers again" in stderr
    stopped = [e for e in read_events(events_path) if e["event"]["action"] == "agent-stopped"]
    assert stopped and stopped[-1]["netagent"]["agent"]["enrich"]["enrich_failed"]["apiserver_unavailable"] >= failed


@pytest.mark.parametrize("content, says", [
    ("clusters: [oops", "kubeconfig"),  # not YAML
    (None, "not found"),  # no such file
    ('{"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}', "context"),
])
def test_bad_kubeconfig_one_line_exit_78(tmp_path, content, says):
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    config = tmp_path / "agent.toml"
    config.write_text(f'[kubernetes]\napiserver = "{kubeconfig}"\n')
    for command in (["run"], ["doctor"]):
        proc = subprocess.run([NETAGENT, *command, "--config", str(config)], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 78, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "kubernetes.apiserver" in lines[0] and says in lines[0] and "Traceback" not in proc.stderr


def test_doctor_says_whether_the_api_server_answers(tmp_path):
    api = FakeApiServer(str(tmp_path / "apiserver")).start()
    try:
        config = tmp_path / "agent.toml"
        config.write_text(f'[kubernetes]\napiserver = "{api.kubeconfig(str(tmp_path / "kubeconfig"))}"\n')
        proc = subprocess.run([NETAGENT, "doctor", "-o", "table", "--config", str(config)], capture_output=True,
                              text=True, timeout=120)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("API server")]
        assert line == [f"API server       yes (kubeconfig {tmp_path / 'kubeconfig'}, "
                        f"https://127.0.0.1:{api.port}: pods readable)"], proc.stdout + proc.stderr
    finally:
        api.stop()


@pytest.mark.parametrize("env, says", [
    ({}, "KUBERNETES_SERVICE_HOST"),  # not in a pod
    ({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, "token"),  # no token mounted
])
def test_in_cluster_where_it_cannot_be_one_line_exit_78(tmp_path, env, says):
    config = tmp_path / "agent.toml"
    config.write_text('[kubernetes]\napiserver = "in-cluster"\n')
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    clean.update(env, NETAGENT_SERVICE_ACCOUNT_DIR=str(tmp_path / "no-serviceaccount"))
    proc = subprocess.run([NETAGENT, "run", "--config", str(config)], capture_output=True, text=True, timeout=120,
                          env=clean)
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "kubernetes.apiserver" in lines[0] and says in lines[0], proc.stderr
