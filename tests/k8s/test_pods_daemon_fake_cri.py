"""`netagent run` names the pod of every drop: real drops counted by the real drop sensor in
real namespaces, pod metadata from the FAKE CRI server (tests/k8s/fake_cri.py).

Counts are compared with each pod namespace's own Udp NoPorts counter.
test_pods_lab.py repeats the core of this against the lab's real containerd.
"""

import os
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from fake_cri import FakeCriServer, FakePod
from lab import Namespace, veth_pair
from netagent import registry

SENDER = r"""
import socket, sys
src, dst, dport, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
sent = 0
while sent < count:
    try:
        s.sendto(b"x" * 64, (dst, dport))
        sent += 1
    except OSError:
        pass  # an ICMP error reported on this unconnected socket: send again
print(sent)
"""
NETAGENT = os.path.join(sys.prefix, "bin", "netagent")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF, network namespaces)")


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def read_events(path):
    try:
        with open(path, "rb") as f:
            return [orjson.loads(line) for line in f if line.endswith(b"\n")]
    except FileNotFoundError:
        return []


def no_ports(ns) -> int:
    lines = [ln.split() for ln in ns.read_proc("net/snmp").splitlines() if ln.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def send(ns, src, dst, port, count):
    out = ns.run("python3", "-c", SENDER, src, dst, str(port), str(count)).stdout
    assert int(out) == count


class Sandbox:
    def __init__(self, ns):
        self.ns = ns
        self.proc = ns.popen("sleep", "600") if ns else subprocess.Popen(["sleep", "600"])
        want = ns.inode if ns else os.stat("/proc/self/ns/net").st_ino
        wait_for(lambda: os.stat(f"/proc/{self.proc.pid}/ns/net").st_ino == want, 10, "sandbox process")

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        self.proc.kill()
        self.proc.wait()


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
        cri.pods += [FakePod("shop", "api-0", sa.pid, ips=["10.93.0.1"], containers=["api"]),
                     FakePod("shop", "db-0", sb.pid, ips=["10.93.0.2"], containers=["db"]),
                     FakePod("kube-system", "node-exporter", shost.pid, host_network=True, containers=["exp"])]
        others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                         if m.loaded and m.section != "drops")
        events_path = tmp_path / "events.json"
        config = tmp_path / "agent.toml"
        refresh = 1.0
        config.write_text(textwrap.dedent(f"""
            [agent]
            heartbeat = "1s"
            [sensors.drops]
            interval = "500ms"
            [kubernetes]
            runtime_socket = "{cri.socket_path}"
            refresh = "{refresh}s"
            node_name = "node-t"
            [[sinks]]
            type = "file"
            path = "{events_path}"
            """) + others)
        agent = subprocess.Popen([NETAGENT, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        wait_for(lambda: any(e["event"]["action"] == "agent-started" for e in read_events(events_path))
                 or agent.poll() is not None, 90, "agent-started")
        assert agent.poll() is None, agent.communicate()[1].decode()

        host_port = 41000 + os.getpid() % 1000
        before = {"a": no_ports(a), "b": no_ports(b)}
        send(a, "10.93.0.1", "10.93.0.2", 9, 300)  # dropped in db-0, sent by api-0
        send(b, "10.93.0.2", "10.93.0.1", 9, 200)  # dropped in api-0, sent by db-0
        subprocess.run(["python3", "-c", SENDER, "127.0.0.1", "127.0.0.1", str(host_port), "50"], check=True,
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

        def drops_in(inode):
            return [e for e in read_events(events_path)
                    if e["event"]["dataset"] == "netagent.drops" and e["netagent"]["drop"]["netns"] == inode
                    and e["event"]["reason"] == "NO_SOCKET"]

        wait_for(lambda: sum(e["netagent"]["drop"]["count"] for e in drops_in(b.inode)) >= 340, 30, "db-0 drops")
        wait_for(lambda: sum(e["netagent"]["drop"]["count"] for e in drops_in(c.inode)) >= 25, 30, "late-0 drops")
        wait_for(lambda: sum(e["netagent"]["drop"]["count"] for e in drops_in(a.inode)) >= 200, 30, "api-0 drops")
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(30)
        for s in sandboxes:
            s.kill() if s.proc.poll() is None else None
        for ns in (a, b, c):
            ns.delete()
        cri.close()
    events = read_events(events_path)
    drops = [e for e in events if e["event"]["dataset"] == "netagent.drops" and e["event"]["reason"] == "NO_SOCKET"]

    def of(inode):
        return [e for e in drops if e["netagent"]["drop"]["netns"] == inode]

    # exact: each pod's events add up to its namespace's NoPorts rise, all named for that pod
    for inode, pod, peer, total in ((b.inode, "db-0", "api-0", 340), (a.inode, "api-0", "db-0", 200)):
        mine = of(inode)
        assert sum(e["netagent"]["drop"]["count"] for e in mine) == total
        for e in mine:
            assert e["kubernetes"]["pod"]["name"] == pod and e["kubernetes"]["namespace"] == "shop"
            assert e["orchestrator"]["resource"] == {"type": "pod", "name": pod}
            assert e["kubernetes"]["node"] == {"name": "node-t"}
            assert e["netagent"]["drop"]["netns_name"] == f"pod shop/{pod}"
            assert e["netagent"]["drop"]["interface"] == "eth0"
            assert e["netagent"]["kubernetes"]["source"] == {"namespace": "shop", "pod": peer}
            assert e["netagent"]["kubernetes"]["destination"] == {"namespace": "shop", "pod": pod}
    late = of(c.inode)
    assert sum(e["netagent"]["drop"]["count"] for e in late) == 25
    assert all(e["kubernetes"]["pod"]["name"] == "late-0" for e in late)
    host = [e for e in drops if e.get("destination", {}).get("port") == host_port]
    assert sum(e["netagent"]["drop"]["count"] for e in host) == 50
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
        others = "".join(f"[sensors.{m.section}]\nenabled = false\n" for m in registry.load_modules()
                         if m.loaded and m.section != "drops")
        events_path = tmp_path / "events.json"
        config = tmp_path / "agent.toml"
        config.write_text(textwrap.dedent(f"""
            [sensors.drops]
            interval = "500ms"
            [kubernetes]
            runtime_socket = "{socket_path}"
            refresh = "1s"
            [[sinks]]
            type = "file"
            path = "{events_path}"
            """) + others)
        stderr_path = tmp_path / "stderr"
        with open(stderr_path, "w") as err:
            agent = subprocess.Popen([NETAGENT, "run", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda: any(e["event"]["action"] == "agent-started" for e in read_events(events_path))
                 or agent.poll() is not None, 90, "agent-started")
        assert agent.poll() is None, stderr_path.read_text()
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
        named = wait_for(lambda: [e for e in read_events(events_path)[mark:]
                                  if e["event"]["dataset"] == "netagent.drops"
                                  and e["netagent"]["drop"]["netns"] == ns.inode], 30, "drops with a runtime")
        assert sum(e["netagent"]["drop"]["count"] for e in named) == 8
        assert all(e["kubernetes"]["pod"]["name"] == "early-0" for e in named)
    finally:
        if agent is not None and agent.poll() is None:
            agent.terminate()
            agent.wait(30)
        sandbox.kill()
        ns.delete()
        if server is not None:
            server.close()
