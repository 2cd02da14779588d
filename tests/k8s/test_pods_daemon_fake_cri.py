"""`netagent run` names the pod of every drop: real drops counted by the real drop sensor in
real namespaces, pod metadata from the FAKE CRI server (tests/k8s/fake_cri.py).

Counts are compared with each pod namespace's own Udp NoPorts counter.
test_pods_lab.py repeats the core of this against the lab's real containerd.
"""

import os
import subprocess
import sys
import time

import pytest

from fake_cri import FakeCriServer, FakePod
from lab import Namespace, veth_pair
from pod_agent import SENDER, Sandbox, no_socket_drops, read_events, start_agent, stop_agent, total, udp_no_ports, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF, network namespaces)")


def no_ports(ns) -> int:
    return udp_no_ports(ns.read_proc("net/snmp"))


def send(ns, src, dst, port, count):
    out = ns.run(sys.executable, "-c", SENDER, dst, str(port), str(count), src).stdout
    assert int(out) == count


@pytest.mark.timeout(240)
def test_drops_counted_exactly_per_pod_host_network_flagged_new_and_deleted_pods_named(tmp_path):
    cri = FakeCriServer().start()
    a, b, c = Namespace(), Namespace(), Namespace()
    sandboxes = []
    agent = None
    try:
        veth_pair(a, b, "10.93.0.1/24", "10.93.0.2/24")
        sa, sb, shost = Sandbox(a), Sandbox(b), Sandbox(None)
        sandboxes += [sa, sb, shost]
        # the namespace files, as containerd gives them: db-0's sandbox process is killed below
        cri.pods += [FakePod("shop", "api-0", sa.pid, ips=["10.93.0.1"], containers=["api"], netns_file=a.path),
                     FakePod("shop", "db-0", sb.pid, ips=["10.93.0.2"], containers=["db"], netns_file=b.path),
                     FakePod("kube-system", "node-exporter", shost.pid, host_network=True, containers=["exp"])]
        refresh = 1.0
        agent, events_path = start_agent(tmp_path, {"runtime_socket": cri.socket_path, "refresh": f"{refresh}s",
                                                    "node_name": "node-t"})

        host_port = 41000 + os.getpid() % 1000
        before = {"a": no_ports(a), "b": no_ports(b)}
        send(a, "10.93.0.1", "10.93.0.2", 9, 300)  # dropped in db-0, sent by api-0
        send(b, "10.93.0.2", "10.93.0.1", 9, 200)  # dropped in api-0, sent by db-0
        subprocess.run([sys.executable, "-c", SENDER, "127.0.0.1", str(host_port), "50"], check=True,
                       capture_output=True)  # the node's namespace: where hostNetwork pods live
        # db-0 is deleted right after its drops, before the sensor's next flush
        send(a, "10.93.0.1", "10.93.0.2", 9, 40)
        cri.pods[:] = [p for p in cri.pods if p.name != "db-0"]
        sb.kill()
        after = {"a": no_ports(a), "b": no_ports(b)}
        assert after["b"] - before["b"] == 340 and after["a"] - before["a"] == 200

        # a pod created now is named within one refresh interval
        sc = Sandbox(c)
        sandboxes.append(sc)
        c.run("ip", "addr", "add", "10.93.1.1/32", "dev", "lo")
        cri.pods.append(FakePod("shop", "late-0", sc.pid, ips=["10.93.1.1"]))
        time.sleep(refresh + 0.5)
        send(c, "127.0.0.1", "127.0.0.1", 9, 25)

        for inode, n, what in ((b.inode, 340, "db-0"), (c.inode, 25, "late-0"), (a.inode, 200, "api-0")):
            wait_for(lambda: total(no_socket_drops(read_events(events_path), inode)) >= n, 30, f"{what} drops")
    finally:
        if agent is not None:
            stop_agent(agent)
        for s in sandboxes:
            s.kill() if s.proc.poll() is None else None
        for ns in (a, b, c):
            ns.delete()
        cri.close()
    events = read_events(events_path)
    drops = [e for e in events if e["event"]["dataset"] == "netagent.drops" and e["event"]["reason"] == "NO_SOCKET"]

    def of(inode):
        return no_socket_drops(events, inode)

    # exact: each pod's events add up to its namespace's NoPorts rise, all named for that pod
    for inode, pod, peer, count in ((b.inode, "db-0", "api-0", 340), (a.inode, "api-0", "db-0", 200)):
        mine = of(inode)
        assert total(mine) == count
        for e in mine:
            assert e["kubernetes"]["pod"]["name"] == pod and e["kubernetes"]["namespace"] == "shop"
            assert e["orchestrator"]["resource"] == {"type": "pod", "name": pod}
            assert e["kubernetes"]["node"] == {"name": "node-t"}
            assert e["netagent"]["drop"]["netns_name"] == f"pod shop/{pod}"
            assert e["netagent"]["drop"]["interface"] == "eth0"
            assert e["netagent"]["kubernetes"]["source"] == {"namespace": "shop", "pod": peer}
            assert e["netagent"]["kubernetes"]["destination"] == {"namespace": "shop", "pod": pod}
    late = of(c.inode)
    assert total(late) == 25
    assert all(e["kubernetes"]["pod"]["name"] == "late-0" for e in late)
    host = [e for e in drops if e.get("destination", {}).get("port") == host_port]
    assert total(host) == 50
    for e in host:  # the node's namespace: flagged, and no pod (not even the hostNetwork one) claimed
        assert e["netagent"]["host_network"] is True
        assert "pod" not in e["kubernetes"] and "orchestrator" not in e
    stopped = [e for e in events if e["event"]["action"] == "agent-stopped"]
    assert stopped and stopped[-1]["netagent"]["agent"]["enrich_failed_total"] == 0
    assert stopped[-1]["netagent"]["agent"]["enrich"]["pods"]["healthy"] is True


@pytest.mark.timeout(240)
def test_runtime_socket_absent_at_start_one_line_notice_then_attribution_when_it_appears(tmp_path):
    socket_path = str(tmp_path / "later.sock")
    ns = Namespace()
    sandbox = Sandbox(ns)
    agent = None
    server = None
    try:
        agent, events_path = start_agent(tmp_path, {"runtime_socket": socket_path, "refresh": "1s"},
                                         agent_table="")
        stderr_path = tmp_path / "agent.stderr"
        notices = [ln for ln in stderr_path.read_text().splitlines() if "pod attribution" in ln]
        assert len(notices) == 1 and socket_path in notices[0], stderr_path.read_text()
        send(ns, "127.0.0.1", "127.0.0.1", 9, 12)
        unnamed = wait_for(lambda: [e for e in read_events(events_path) if e["event"]["dataset"] == "netagent.drops"
                                    and e["netagent"]["drop"]["netns"] == ns.inode], 30, "drops without a runtime")
        assert all("orchestrator" not in e and e["netagent"]["drop"]["netns"] == ns.inode for e in unnamed)
        server = FakeCriServer(socket_path).start()  # the runtime starts after the agent
        server.pods.append(FakePod("shop", "early-0", sandbox.pid))
        wait_for(lambda: "answers again" in stderr_path.read_text(), 30, "attribution starts")
        mark = len(read_events(events_path))
        send(ns, "127.0.0.1", "127.0.0.1", 9, 8)
        named = wait_for(lambda: no_socket_drops(read_events(events_path)[mark:], ns.inode), 30, "drops, runtime up")
        assert total(named) == 8
        assert all(e["kubernetes"]["pod"]["name"] == "early-0" for e in named)
    finally:
        if agent is not None:
            stop_agent(agent)
        sandbox.kill()
        ns.delete()
        if server is not None:
            server.close()
