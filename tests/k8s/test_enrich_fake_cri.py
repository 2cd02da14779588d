"""Pod attribution against the FAKE CRI server (tests/k8s/fake_cri.py), with real namespaces.

Each fake pod is a real process (`sleep`) in a real network namespace made by
the test, so inodes, /proc paths and netlink lookups are the kernel's own;
only the runtime's answers are scripted. The lab tests (test_pods_lab.py)
run the same checks against a real containerd.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from fake_cri import FakeCriServer, FakePod
from lab import Namespace
from pod_agent import Sandbox, wait_for

from netagent.enrich.cri import CriClient
from netagent.enrich.pods import CriSource, PodIndex
from netagent.enrich.stage import Enricher
from netagent.events import new_event

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


class PodProcess(Sandbox):
    """A sandbox stand-in in a fresh namespace of its own."""

    def __init__(self):
        super().__init__(Namespace())

    def close(self):
        self.kill()
        self.ns.delete()


@pytest.fixture
def sandboxes():
    made = []

    def make():
        p = PodProcess()
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def drop_event(netns: int, ifindex: int = 0, src: str = "10.0.0.1", dst: str = "10.0.0.2") -> dict:
    ev = new_event(dataset="netagent.drops", action="packet-dropped", type=["denied"],
                   netagent={"drop": {"count": 1, "bytes": 84, "netns": netns, "ifindex": ifindex,
                                      "interface": None}},
                   source={"ip": src, "port": 1000}, destination={"ip": dst, "port": 9})
    ev["event"]["reason"] = "NO_SOCKET"
    return ev


def test_cri_client_reads_pid_inode_ips_host_network_and_containers(cri, sandboxes):
    sb = sandboxes()
    cri.pods += [FakePod("shop", "api-0", sb.pid, ips=["10.44.0.7", "fd44::7"], containers=["api"]),
                 FakePod("kube-system", "proxy", os.getpid(), host_network=True, containers=["a", "b"])]
    pods = {p.key: p for p in CriClient(cri.socket_path).list_pods()}
    api = pods["shop/api-0"]
    assert (api.pid, api.netns_inode, api.ips, api.host_network) == (sb.pid, sb.ns.inode, ["10.44.0.7", "fd44::7"],
                                                                     False)
    assert api.containers == [("c-api-0-api", "api")]
    assert pods["kube-system/proxy"].host_network is True
    assert cri.calls["PodSandboxStatus"] == 2


def test_events_name_their_pod_host_network_is_flagged_and_peers_resolved(cri, sandboxes):
    a, b = sandboxes(), sandboxes()
    cri.pods += [FakePod("shop", "api-0", a.pid, ips=["10.44.0.7"], containers=["api"], uid="u-1"),
                 FakePod("shop", "db-0", b.pid, ips=["10.44.0.8"], containers=["db", "sidecar"]),
                 FakePod("kube-system", "proxy", 1, host_network=True)]
    enricher = Enricher(PodIndex(CriSource(cri.socket_path), refresh_interval=60), node="node-a")
    enricher.start()
    try:
        ev = enricher(drop_event(a.ns.inode, src="10.44.0.8", dst="10.44.0.7"))
        assert ev["orchestrator"] == {"type": "kubernetes", "namespace": "shop",
                                      "resource": {"type": "pod", "name": "api-0"}}
        assert ev["kubernetes"] == {"namespace": "shop", "pod": {"name": "api-0", "uid": "u-1"},
                                    "node": {"name": "node-a"}, "container": {"name": "api"}}
        assert ev["container"] == {"id": "c-api-0-api", "name": "api"}
        assert ev["netagent"]["kubernetes"] == {"source": {"namespace": "shop", "pod": "db-0"},
                                                "destination": {"namespace": "shop", "pod": "api-0"}}
        # two containers share db-0's namespace: the pod is named, no single container
        ev = enricher(drop_event(b.ns.inode))
        assert ev["kubernetes"]["pod"]["name"] == "db-0" and "container" not in ev
        # the node's namespace (hostNetwork pods live there): flagged, no pod guessed
        ev = enricher(drop_event(os.stat("/proc/self/ns/net").st_ino))
        assert ev["netagent"]["host_network"] is True and "pod" not in ev["kubernetes"]
        assert ev["kubernetes"] == {"node": {"name": "node-a"}}
        assert enricher.failures.total == 0
    finally:
        enricher.stop()


def test_interface_name_from_netlink_netnsid_without_entering_the_namespace(cri, sandboxes):
    sb = sandboxes()
    sb.ns.run("ip", "link", "add", "podeth7", "type", "veth", "peer", "name", "podpeer7")
    ifindex = int(sb.ns.run("cat", "/sys/class/net/podeth7/ifindex").stdout)
    cri.pods.append(FakePod("shop", "api-0", sb.pid))
    enricher = Enricher(PodIndex(CriSource(cri.socket_path), refresh_interval=60), node="n")
    enricher.start()
    try:
        ev = enricher(drop_event(sb.ns.inode, ifindex=ifindex))
        assert ev["netagent"]["drop"]["interface"] == "podeth7"
        assert ev["netagent"]["drop"]["netns_name"] == "pod shop/api-0"
    finally:
        enricher.stop()


def test_new_pod_named_within_one_refresh_and_deleted_pod_kept_for_grace(cri, sandboxes):
    refresh, grace = 1.0, 3.0
    index = PodIndex(CriSource(cri.socket_path), refresh_interval=refresh, grace=grace)
    enricher = Enricher(index, node="n")
    enricher.start()
    try:
        sb = sandboxes()
        t0 = time.monotonic()
        cri.pods.append(FakePod("shop", "late-0", sb.pid))
        # no event asks for it: the periodic refresh alone must find it within one interval (+ slack)
        wait_for(lambda: sb.ns.inode in index.by_netns, timeout=refresh + 5, what="periodic refresh")
        assert time.monotonic() - t0 <= refresh + 2.0
        cri.pods.clear()  # deleted
        t_deleted = time.monotonic()
        wait_for(lambda: index.refreshes >= 3, what="refreshes after the delete")
        ev = enricher(drop_event(sb.ns.inode))
        if time.monotonic() - t_deleted < grace:
            assert ev["kubernetes"]["pod"]["name"] == "late-0"
        wait_for(lambda: sb.ns.inode not in index.by_netns, timeout=refresh + grace + 5, what="grace expiry")
        assert "pod" not in enricher(drop_event(sb.ns.inode)).get("kubernetes", {})
        assert enricher.failures.total == 0  # a namespace that is no pod's is no failure
    finally:
        enricher.stop()


def test_miss_on_unknown_netns_refreshes_at_once_not_at_the_interval(cri, sandboxes):
    index = PodIndex(CriSource(cri.socket_path), refresh_interval=60)
    enricher = Enricher(index, node="n")
    enricher.start()
    try:
        sb = sandboxes()
        cri.pods.append(FakePod("shop", "new-0", sb.pid))
        first = enricher(drop_event(sb.ns.inode))  # unknown: passes unnamed, asks for a refresh
        assert "orchestrator" not in first
        wait_for(lambda: sb.ns.inode in index.by_netns, timeout=10, what="miss-triggered refresh")
        assert enricher(drop_event(sb.ns.inode))["kubernetes"]["pod"]["name"] == "new-0"
        # a namespace that is no pod's asks once, not on every event
        other = Namespace()
        try:
            before = cri.calls["ListPodSandbox"]
            for _ in range(50):
                enricher(drop_event(other.inode))
            wait_for(lambda: cri.calls["ListPodSandbox"] > before, what="one refresh")
            time.sleep(1.5)  # a second miss refresh would come after MISS_REFRESH_SPACING (1 s)
            for _ in range(50):
                enricher(drop_event(other.inode))
            time.sleep(1.5)
            assert cri.calls["ListPodSandbox"] == before + 1
        finally:
            other.delete()
    finally:
        enricher.stop()


def test_runtime_killed_events_flow_unnamed_counted_then_attribution_returns(cri, sandboxes):
    sb = sandboxes()
    cri.pods.append(FakePod("shop", "api-0", sb.pid))
    index = PodIndex(CriSource(cri.socket_path), refresh_interval=0.5, grace=1.0)
    enricher = Enricher(index, node="n")
    enricher.start()
    try:
        assert enricher(drop_event(sb.ns.inode))["kubernetes"]["pod"]["name"] == "api-0"
        cri.stop()  # the runtime dies
        wait_for(lambda: index.healthy is False, what="refresh failure")
        wait_for(lambda: sb.ns.inode not in index.by_netns, what="grace expiry")
        t0 = time.monotonic()
        events = [enricher(drop_event(sb.ns.inode)) for _ in range(100)]
        assert time.monotonic() - t0 < 0.5  # never waits for the runtime
        assert len(events) == 100 and all("orchestrator" not in e for e in events)
        assert enricher.failures.by_cause == {"runtime_unavailable": 100}
        assert "unavailable" in enricher.attribution_line()
        restarted = FakeCriServer(cri.socket_path).start()  # back, same socket
        restarted.pods.append(FakePod("shop", "api-0", sb.pid))
        try:
            wait_for(lambda: index.healthy, timeout=10, what="runtime back")
            assert enricher(drop_event(sb.ns.inode))["kubernetes"]["pod"]["name"] == "api-0"
            assert enricher.failures.by_cause == {"runtime_unavailable": 100}
        finally:
            restarted.close()
    finally:
        enricher.stop()


def test_no_runtime_socket_at_start_is_a_notice_not_a_failure(tmp_path, monkeypatch):
    from netagent.enrich import cri

    monkeypatch.delenv("NETAGENT_RUNTIME_SOCKET", raising=False)
    monkeypatch.setattr(cri, "RUNTIME_SOCKETS", (str(tmp_path / "containerd.sock"), str(tmp_path / "crio.sock")))
    index = PodIndex(CriSource(""), refresh_interval=60)
    enricher = Enricher(index, node="n")
    line = enricher.start()
    try:
        assert "unavailable" in line and "containerd.sock" in line and "\n" not in line
        ev = enricher(drop_event(12345))
        assert "orchestrator" not in ev and ev["netagent"]["drop"]["netns"] == 12345
        assert "kubernetes" not in ev  # no runtime: nothing says this is a Kubernetes node
        assert enricher.failures.total == 0
    finally:
        enricher.stop()


@pytest.fixture
def cli_env(cri):
    return dict(os.environ, NETAGENT_RUNTIME_SOCKET=cri.socket_path, NODE_NAME="node-t")


def netagent(*args, env):
    return subprocess.run([sys.executable, "-m", "netagent", *args], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.mark.parametrize("command", [["trace", "drops"], ["trace", "conntrack"], ["probe", "mtu", "127.0.0.1"],
                                     ["probe", "dns", "example.test"], ["check"]])
def test_pod_option_errors(command, cli_env, cri):
    r = netagent(*command, "--pod", "shop/ghost", "--duration", "1", env=cli_env) if command[0] == "trace" else \
        netagent(*command, "--pod", "shop/ghost", env=cli_env)
    assert r.returncode == 69, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "shop/ghost" in lines[0] and "node-t" in lines[0], r.stderr
    r = netagent(*command, "--pod", "shop/ghost", "--netns", "x", env=cli_env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--pod" in r.stderr and "--netns" in r.stderr


def test_doctor_says_whether_pods_can_be_named_and_why_not(cli_env, cri, sandboxes, tmp_path):
    sb = sandboxes()
    cri.pods.append(FakePod("shop", "api-0", sb.pid))
    r = netagent("doctor", "--output", "json", env=cli_env)
    report = json.loads(r.stdout)["pod_attribution"]
    assert report["available"] is True and report["pods"] == 1 and "fake-cri" in report["runtime"]
    r = netagent("doctor", "--output", "table", env=dict(cli_env, NETAGENT_RUNTIME_SOCKET=str(tmp_path / "no.sock")))
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("pod attribution"))
    assert "no (" in line and "no.sock" in line and "netns inode" in line


CHECK_WITHOUT_SYS_ADMIN = r"""
import json, sys
from netagent import netns
from netagent.enrich.ifnames import RtNetlink, links_of
cap_eff = int(next(l for l in open("/proc/self/status") if l.startswith("CapEff")).split()[1], 16)
try:
    netns.setns(sys.argv[1])
    entered = True
except Exception as exc:
    entered = str(exc)
print(json.dumps({"sys_admin": bool(cap_eff >> 21 & 1), "setns": entered,
                  "links": links_of(RtNetlink(), sys.argv[1])}))
"""


def test_interface_names_need_no_cap_sys_admin(sandboxes):
    """Issue 10 item 8: the hardened unit has no CAP_SYS_ADMIN, so no setns; netlink with a netnsid works."""
    sb = sandboxes()
    sb.ns.run("ip", "link", "add", "podeth9", "type", "veth", "peer", "name", "podpeer9")
    r = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", "--inh-caps", "-sys_admin", sys.executable, "-c",
                        CHECK_WITHOUT_SYS_ADMIN, f"/proc/{sb.pid}/ns/net"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["sys_admin"] is False and out["setns"] is not True  # entering the namespace is refused...
    assert "podeth9" in out["links"].values() and "podpeer9" in out["links"].values()  # ...naming works
