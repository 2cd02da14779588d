"""The Kubernetes lab node (packaging/lab): real containerd, CRI pods, CNI bridge.

Each test uses a lab node of its own name and subnet, so taking it down never
disturbs the default lab node that enrichment tests may be using.
"""

import json
import os
import subprocess

import pytest

from k8s_lab import NODE, POD, LabNode
from lab import sh

pytestmark = pytest.mark.root

_SUFFIX = os.getpid() % 100


def _node(tag: str, octet: int) -> LabNode:
    return LabNode(name=f"natest{os.getpid()}{tag}", subnet=f"10.244.{octet}.0/24")


@pytest.fixture(scope="module")
def node():
    lab = _node("p", 100 + _SUFFIX)
    lab.up()
    yield lab
    lab.down()


def _links() -> dict:
    return {link["ifname"]: link for link in json.loads(sh("ip", "-j", "-d", "link", "show").stdout)}


def _mount_targets() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


def _lab_processes(lab: LabNode) -> list[str]:
    """Command lines naming the node's config or socket (containerd, its shims)."""
    found = []
    marker = f"/run/{lab.env['NETAGENT_LAB_NAME']}/".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _addresses_in(netns: str) -> set[str]:
    out = sh("nsenter", f"--net={netns}", "ip", "-j", "addr", "show").stdout
    return {a["local"] for link in json.loads(out) for a in link.get("addr_info", [])}


def _pause_pids() -> set[int]:
    return {int(p) for p in sh("pgrep", "-x", "pause", check=False).stdout.split()}


def test_up_is_idempotent_and_down_leaves_nothing():
    lab = _node("n", 200 + _SUFFIX % 50)
    name = lab.env["NETAGENT_LAB_NAME"]
    netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    pause_before = _pause_pids()
    try:
        first = lab.up()
        second = lab.up()
        assert second["containerd_pid"] == first["containerd_pid"], "a second up started another containerd"
        assert os.path.exists(first["socket"])
        pods = [lab.create_pod("default/a"), lab.create_pod("default/b"),
                lab.create_pod("kube-system/hostnet", host_network=True)]
        assert {p["pid"] for p in pods} <= _pause_pids() - pause_before, "each pod runs its own pause"
        assert {p["name"] for p in lab.pods()} == {"a", "b", "hostnet"}
        assert _lab_processes(lab), "containerd runs under the node's own paths"
        bridge = first["bridge"]
        assert sum(1 for l in _links().values() if l.get("master") == bridge) == 2
    finally:
        lab.down()
    lab.down()  # a second down is fine too

    assert _lab_processes(lab) == []
    assert not any(p["pid"] in _pause_pids() for p in pods), "a pause process outlived down"
    assert [t for t in _mount_targets() if f"/{name}/" in t or t.startswith("/run/netns/cni-")
            and os.path.basename(t) not in netns_before] == []
    netns_after = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    assert {n for n in netns_after - netns_before if n.startswith("cni-")} == set()
    links = _links()
    assert bridge not in links
    assert [n for n, l in links.items() if l.get("master") == bridge] == []
    assert not os.path.exists(f"/run/{name}") and not os.path.exists(f"/var/lib/{name}")


def test_pod_create_list_delete(node):
    a = node.create_pod("payments/api-0", labels={"app": "api"})
    b = node.create_pod("payments/api-1")
    h = node.create_pod("kube-system/agent", host_network=True)

    for pod in (a, b):
        assert pod["ip"] and pod["netns"] and pod["uid"]
        assert pod["ip"] in _addresses_in(pod["netns"]), "the pod's IP is in its own netns"
        inode = os.stat(pod["netns"]).st_ino
        assert os.stat(f"/proc/{pod['pid']}/ns/net").st_ino == inode, "sandbox pid lives in that netns"
        assert inode != os.stat("/proc/self/ns/net").st_ino
        # reachable from the host over the lab bridge
        sh("ping", "-c1", "-W5", pod["ip"])
    assert a["uid"] != b["uid"] and a["ip"] != b["ip"]
    assert a["labels"]["app"] == "api" and a["labels"]["io.kubernetes.pod.uid"] == a["uid"]

    assert h["ip"] is None and h["host_network"] is True
    assert os.stat(h["netns"]).st_ino == os.stat("/proc/self/ns/net").st_ino

    # kubelet's ClusterFirst resolv.conf, visible as the pod's own /etc/resolv.conf
    with open(f"/proc/{a['pid']}/root/etc/resolv.conf") as f:
        resolv = f.read().split("\n")
    assert "search payments.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "options ndots:5" in resolv
    assert f"nameserver {node.info['gateway']}" in resolv

    listed = {(p["namespace"], p["name"]): p for p in node.pods()}
    assert set(listed) >= {("payments", "api-0"), ("payments", "api-1"), ("kube-system", "agent")}
    assert listed[("payments", "api-0")]["uid"] == a["uid"]
    assert listed[("payments", "api-0")]["netns"] == a["netns"]

    # an existing name is refused, an unknown one is unavailable
    dup = node.run(POD, "create", "payments/api-0", check=False)
    assert dup.returncode == 1 and "exists" in dup.stderr
    missing = node.run(POD, "delete", "payments/nope", check=False)
    assert missing.returncode == 69 and len(missing.stderr.strip().splitlines()) == 1

    host_veths = {n for n, l in _links().items() if l.get("master") == node.info["bridge"]}
    node.delete_pod("payments/api-0")
    assert ("payments", "api-0") not in {(p["namespace"], p["name"]) for p in node.pods()}
    assert not os.path.exists(a["netns"])
    assert len(host_veths) - len({n for n, l in _links().items() if l.get("master") == node.info["bridge"]}) == 1
    assert not os.path.exists(f"/proc/{a['pid']}") or _pause_pids().isdisjoint({a["pid"]})
    assert sh("ping", "-c1", "-W1", a["ip"], check=False).returncode != 0
    for ref in ("payments/api-1", "kube-system/agent"):
        node.delete_pod(ref)
    assert node.pods() == []


@pytest.mark.parametrize("argv", [[POD, "list"], [POD, "create", "x/y"], [POD, "delete", "x/y"],
                                  [NODE, "status"]])
def test_not_up_exits_69_with_one_line(argv):
    lab = _node("d", 250)  # never brought up
    done = lab.run(argv[0], *argv[1:], check=False)
    assert done.returncode == 69
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not up" in lines[0]


@pytest.mark.parametrize("argv", [[POD], [POD, "create", "noslash"], [POD, "create", "A/b"],
                                  [POD, "frob"], [NODE], [NODE, "sideways"]])
def test_usage_errors_exit_2(argv):
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("env", [{"NETAGENT_LAB_NAME": "Bad Name"}, {"NETAGENT_LAB_SUBNET": "10.1.2.3/24"},
                                 {"NETAGENT_LAB_SUBNET": "nonsense"}])
def test_bad_lab_settings_exit_2(env):
    done = subprocess.run([NODE, "up"], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "NETAGENT_LAB_" in done.stderr
