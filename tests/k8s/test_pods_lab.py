"""Pod attribution against a REAL containerd: the lab node (packaging/lab), pods made through CRI.

The agent asks the lab containerd's CRI socket, exactly as on a node; drops are
made inside the pods' own namespaces (CNI bridge veths) and counted by the
kernel (each pod namespace's Udp NoPorts) to compare with what the agent says.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from k8s_lab import POD, LabNode
from lab import sh
from pod_agent import (
    NETAGENT, SENDER, no_socket_drops, read_events, start_agent, stop_agent, total, udp_no_ports, wait_for,
)

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (containerd, BPF)")]


def in_pod(pod: dict, *argv, check=True):
    return sh("nsenter", f"--net={pod['netns']}", *argv, check=check)


def send(pod: dict, dst: str, port: int, count: int) -> None:
    assert int(in_pod(pod, sys.executable, "-c", SENDER, dst, str(port), str(count)).stdout) == count


def no_ports(pod: dict) -> int:
    return udp_no_ports(in_pod(pod, "cat", "/proc/net/snmp").stdout)


def netns_inode(pod: dict) -> int:
    return os.stat(pod["netns"]).st_ino


@pytest.fixture(scope="module")
def node():
    lab = LabNode(name=f"h7pods{os.getpid() % 10000}", subnet=f"10.246.{os.getpid() % 250}.0/24")
    lab.up()
    yield lab
    lab.down()


@pytest.mark.timeout(300)
def test_real_containerd_pods_counted_exactly_host_network_flagged_new_and_deleted_named(node, tmp_path):
    api = node.create_pod("shop/api-0", labels={"app": "api"})
    db = node.create_pod("shop/db-0")
    db_inode, api_inode = netns_inode(db), netns_inode(api)
    hostnet = node.create_pod("kube-system/hostnet-0", host_network=True)
    late_name = "shop/late-0"
    agent, events_path = start_agent(tmp_path, {"runtime_socket": node.socket, "refresh": "1s",
                                                "node_name": "lab-node"})
    try:
        before = {"api": no_ports(api), "db": no_ports(db)}
        send(api, db["ip"], 9, 300)  # dropped in db-0's namespace
        send(db, api["ip"], 9, 200)  # dropped in api-0's namespace
        host_port = 42000 + os.getpid() % 1000
        send(hostnet, "127.0.0.1", host_port, 30)  # the node's namespace
        send(api, db["ip"], 9, 40)
        after_db = no_ports(db)
        node.delete_pod("shop/db-0")  # deleted before the sensor's next flush: still named (grace)
        after_api = no_ports(api)
        assert after_db - before["db"] == 340 and after_api - before["api"] == 200

        late = node.create_pod(late_name)
        time.sleep(1.0 + 0.5)  # one refresh interval
        send(late, "127.0.0.1", 9, 25)
        late_inode = netns_inode(late)
        for inode, n, what in ((late_inode, 25, "late-0"), (db_inode, 340, "db-0"), (api_inode, 200, "api-0")):
            wait_for(lambda: total(no_socket_drops(read_events(events_path), inode)) >= n, 30, f"{what} drops")
    finally:
        stop_agent(agent)
        for ref in ("shop/api-0", late_name, "kube-system/hostnet-0"):
            node.run(POD, "delete", ref, check=False)
    events = read_events(events_path)
    # the kernel reuses a freed namespace's inode: late-0 may get deleted db-0's, so each
    # pod's drops are told apart by their sender as well (db-0's came from api-0's address)
    for pod, inode, name, peer, count in ((db, db_inode, "db-0", api, 340), (api, api_inode, "api-0", db, 200)):
        mine = [e for e in no_socket_drops(events, inode) if e["source"]["ip"] == peer["ip"]]
        assert total(mine) == count, name
        for e in mine:
            assert e["kubernetes"]["pod"]["name"] == name and e["kubernetes"]["namespace"] == "shop"
            assert e["kubernetes"]["pod"]["uid"] == pod["uid"]
            assert e["orchestrator"] == {"type": "kubernetes", "namespace": "shop",
                                         "resource": {"type": "pod", "name": name}}
            assert e["kubernetes"]["node"] == {"name": "lab-node"}
            assert e["netagent"]["drop"]["interface"] == "eth0"  # named inside the pod's namespace, by netnsid
            assert e["netagent"]["kubernetes"]["source"]["pod"] == peer["name"]
    late_events = [e for e in no_socket_drops(events, late_inode) if e["source"]["ip"] == "127.0.0.1"]
    assert total(late_events) == 25
    assert all(e["kubernetes"]["pod"]["name"] == "late-0" for e in late_events)
    host = [e for e in events if e["event"]["dataset"] == "netagent.drops"
            and e.get("destination", {}).get("port") == host_port]
    assert total(host) == 30
    for e in host:
        assert e["netagent"]["host_network"] is True and "pod" not in e["kubernetes"]
    stopped = [e for e in events if e["event"]["action"] == "agent-stopped"][-1]
    failed = stopped["netagent"]["agent"]["enrich"]["enrich_failed"]
    assert "runtime_unavailable" not in failed, failed


@pytest.mark.timeout(300)
def test_containerd_killed_events_flow_unnamed_and_counted_then_attribution_returns(node, tmp_path):
    pod = node.create_pod("shop/victim-0")
    inode = netns_inode(pod)
    agent, events_path = start_agent(tmp_path, {"runtime_socket": node.socket, "refresh": "500ms", "grace": "1s",
                                                "node_name": "lab-node"})
    try:
        send(pod, "127.0.0.1", 9, 10)
        wait_for(lambda: total(no_socket_drops(read_events(events_path), inode)) >= 10, 30, "first drops")
        assert all(e["kubernetes"]["pod"]["name"] == "victim-0"
                   for e in no_socket_drops(read_events(events_path), inode))
        os.kill(node.info["containerd_pid"], signal.SIGKILL)  # the runtime dies; the pod's sandbox lives on
        wait_for(lambda: "pod attribution" in (tmp_path / "agent.stderr").read_text(), 30, "the agent says so")
        time.sleep(0.5 + 1.0 + 1.0)  # a refresh interval and the grace period: the old answer has expired
        mark = len(read_events(events_path))
        send(pod, "127.0.0.1", 9, 20)
        wait_for(lambda: total(no_socket_drops(read_events(events_path)[mark:], inode)) >= 20, 30, "drops, runtime down")
        down = no_socket_drops(read_events(events_path)[mark:], inode)
        assert total(down) == 20 and all("orchestrator" not in e for e in down)
        beat = wait_for(lambda: [e for e in read_events(events_path)[mark:] if e["event"]["action"] == "heartbeat"
                                 and e["netagent"]["agent"]["enrich_failed_total"] >= len(down)], 30, "heartbeat")
        assert beat[-1]["netagent"]["agent"]["enrich"]["enrich_failed"]["runtime_unavailable"] >= len(down)
        node.up()  # containerd back (same socket, same state)
        wait_for(lambda: "answers again" in (tmp_path / "agent.stderr").read_text(), 30, "runtime back")
        mark = len(read_events(events_path))
        send(pod, "127.0.0.1", 9, 15)
        wait_for(lambda: total(no_socket_drops(read_events(events_path)[mark:], inode)) >= 15, 30, "drops, runtime up")
        back = no_socket_drops(read_events(events_path)[mark:], inode)
        assert total(back) == 15 and all(e["kubernetes"]["pod"]["name"] == "victim-0" for e in back)
    finally:
        stop_agent(agent)
        node.run(POD, "delete", "shop/victim-0", check=False)


def netagent(*args, env):
    return subprocess.run([NETAGENT, *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.timeout(300)
def test_pod_option_selects_exactly_that_pod(node):
    a = node.create_pod("team/a-0")
    b = node.create_pod("team/b-0")
    env = dict(os.environ, NETAGENT_RUNTIME_SOCKET=node.socket, NODE_NAME="lab-node")
    try:
        proc = subprocess.Popen([NETAGENT, "trace", "drops", "--pod", "team/b-0", "--interval", "0.5", "--duration",
                                 "8", "-o", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        line = proc.stderr.readline()
        assert "attached to" in line, line + proc.stderr.read()
        before = {"a": no_ports(a), "b": no_ports(b)}
        send(a, b["ip"], 9, 70)  # into b-0
        send(b, a["ip"], 9, 30)  # into a-0: must not show
        send(a, "127.0.0.1", 9, 11)  # inside a-0: must not show
        delta_b = no_ports(b) - before["b"]
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        events = [json.loads(ln) for ln in out.splitlines()]
        assert delta_b == 70 and no_ports(a) - before["a"] == 41
        assert events and all(e["netagent"]["drop"]["netns"] == os.stat(b["netns"]).st_ino for e in events)
        assert total([e for e in events if e["event"]["reason"] == "NO_SOCKET"]) == delta_b
        assert all(e["kubernetes"]["pod"]["name"] == "b-0" for e in events)
        # the table has a POD column naming it
        proc = subprocess.Popen([NETAGENT, "trace", "drops", "--pod", "team/a-0", "--interval", "0.5", "--duration",
                                 "4", "-o", "table"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        assert "attached to" in proc.stderr.readline()
        send(b, a["ip"], 9, 5)
        out, err = proc.communicate(timeout=60)
        header = next(ln for ln in out.splitlines() if ln.startswith("COUNT"))
        assert "POD" in header.split(), out
        rows = [ln for ln in out.splitlines() if "NO_SOCKET" in ln]
        assert rows and all("team/a-0" in ln for ln in rows), out
        r = netagent("trace", "drops", "--pod", "team/nope-0", "--duration", "1", env=env)
        assert r.returncode == 69 and "team/nope-0" in r.stderr and "lab-node" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        for ref in ("team/a-0", "team/b-0"):
            node.run(POD, "delete", ref, check=False)


@pytest.mark.timeout(180)
def test_probe_dns_pod_uses_the_pods_own_resolv_conf(node):
    # the pod's nameserver: an address on the lab's own bridge subnet where nothing answers
    silent = node.info["gateway"].rsplit(".", 1)[0] + ".253"
    pod = node.create_pod("shop/dns-0", dns_server=silent)
    env = dict(os.environ, NETAGENT_RUNTIME_SOCKET=node.socket, NODE_NAME="lab-node")
    try:
        r = netagent("probe", "dns", "--pod", "shop/dns-0", "web", "--count", "1", "--timeout", "200ms", "-o", "json",
                     env=env)
        events = [json.loads(ln) for ln in r.stdout.splitlines()]
        assert events, r.stderr
        conf = f"/proc/{pod['pid']}/root/etc/resolv.conf"
        for e in events:
            dns = e["netagent"]["dns"]
            assert dns["resolv_conf"] == conf
            assert dns["ndots"] == 5
            assert dns["search"] == ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
            assert e["kubernetes"]["pod"]["name"] == "dns-0"
            assert e["destination"] == {"ip": silent, "port": 53}
        # ndots:5: "web" has fewer dots, so the pod's search list is walked first
        assert events[0]["dns"]["question"]["name"] == "web.shop.svc.cluster.local"
        r = netagent("probe", "dns", "--pod", "shop/dns-0", "--netns", "x", "web", env=env)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    finally:
        node.run(POD, "delete", "shop/dns-0", check=False)


@pytest.mark.timeout(300)
def test_pod_option_on_check_probe_mtu_and_trace_conntrack(node):
    pod = node.create_pod("web/front-0")
    peer = node.create_pod("web/back-0")
    inode = netns_inode(pod)
    env = dict(os.environ, NETAGENT_RUNTIME_SOCKET=node.socket, NODE_NAME="lab-node")
    try:
        r = netagent("check", "--pod", "web/front-0", "--window", "300ms", "-o", "json", env=env)
        assert r.returncode in (0, 1), r.stderr
        summary = [json.loads(ln) for ln in r.stdout.splitlines()][-1]
        assert summary["netagent"]["check"]["netns"] == [{"name": "pod web/front-0", "inode": inode}]

        r = netagent("probe", "mtu", "--pod", "web/front-0", peer["ip"], "--timeout", "300ms", "-o", "json", env=env)
        assert r.returncode == 0, r.stderr
        event = json.loads(r.stdout.splitlines()[-1])
        assert event["netagent"]["mtu"]["netns_inode"] == inode
        assert event["kubernetes"]["pod"]["name"] == "front-0"
        assert event["netagent"]["kubernetes"]["destination"] == {"namespace": "web", "pod": "back-0"}

        r = netagent("trace", "conntrack", "--pod", "web/front-0", "--interval", "500ms", "--duration", "2",
                     "--per-packet", "off", "-o", "json", env=env)
        assert r.returncode == 0, r.stderr
        counters = [json.loads(ln) for ln in r.stdout.splitlines()]
        counters = [e for e in counters if e["event"]["action"] == "counters"]
        assert counters and all(e["netagent"]["conntrack"]["netns"] == inode for e in counters)
        assert all(e["kubernetes"]["pod"]["name"] == "front-0" for e in counters)
        assert all(e["netagent"]["conntrack"]["netns_name"] == "pod web/front-0" for e in counters)
    finally:
        for ref in ("web/front-0", "web/back-0"):
            node.run(POD, "delete", ref, check=False)
