"""`make image`: the offline-built OCI image runs `netagent doctor` under the DaemonSet's terms.

The podman command line is derived from packaging/kubernetes/daemonset.yaml (its
capabilities, seccomp, read-only root, host mounts and ConfigMap), so the test
checks the DaemonSet's security context, not a hand-written copy of it. A lab
node (packaging/lab) provides a real CRI socket and pod for attribution.
"""

import json
import os
import shutil
import socket
import subprocess

import pytest
import yaml

from k8s_lab import LabNode

# Cold: build-deb + debootstrap ~8 min on this 2-core VM; warm (cached root and .deb): ~1 min
BUILD_TIMEOUT = 1500

pytestmark = [pytest.mark.root, pytest.mark.timeout(BUILD_TIMEOUT + 600)]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAEMONSET = os.path.join(REPO, "packaging", "kubernetes", "daemonset.yaml")
BUILD = os.path.join(REPO, "packaging", "image", "build-image.sh")

# Flags this sandbox needs and a normal node does not: crun 1.8 refuses cgroup v1
# hierarchies with a cgroup2 "unified" mount beside them (hybrid mode), runc accepts
# them; and this root lacks CAP_SYS_RESOURCE, so the container's rlimits may not
# exceed podman's own (a node's container runtime sets them as it likes).
SANDBOX_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    if not shutil.which("podman"):
        pytest.fail("podman missing: make setup installs it")
    out = tmp_path_factory.mktemp("image")
    env = dict(os.environ, SAVE="0")
    done = subprocess.run(["bash", BUILD, str(out)], capture_output=True, text=True, timeout=BUILD_TIMEOUT,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def lab():
    node = LabNode(name=f"naimg{os.getpid()}", subnet=f"10.244.{160 + os.getpid() % 40}.0/24")
    node.up()
    yield node
    node.down()


def daemonset_documents() -> dict:
    with open(DAEMONSET) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


def daemonset_container(docs: dict) -> dict:
    (c,) = docs["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    return c


def daemonset_capabilities() -> list[str]:
    return daemonset_container(daemonset_documents())["securityContext"]["capabilities"]["add"]


def daemonset_run_args(tmp_path, extra_mounts=()) -> list[str]:
    """podman run options equivalent to the DaemonSet's pod (hostPID/hostNetwork included)."""
    docs = daemonset_documents()
    pod = docs["DaemonSet"]["spec"]["template"]["spec"]
    c = daemonset_container(docs)
    sc = c["securityContext"]
    assert pod["hostPID"] and pod["hostNetwork"]
    args = ["--pid=host", "--net=host", "--cap-drop", "ALL"]
    for cap in sc["capabilities"]["add"]:
        args += ["--cap-add", cap]
    if sc["seccompProfile"]["type"] == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    args += ["--user", str(sc.get("runAsUser", 0))]
    assert not sc.get("privileged")
    for e in c.get("env", []):
        if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            args += ["-e", f"{e['name']}={socket.gethostname()}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        ro = ",ro" if m.get("readOnly") else ""
        if "configMap" in v:
            data = docs["ConfigMap"]["data"]
            cm_dir = tmp_path / m["name"]
            cm_dir.mkdir()
            for key, text in data.items():
                (cm_dir / key).write_text(text)
            args += ["-v", f"{cm_dir}:{m['mountPath']}{ro or ',ro'}".replace(":,", ":")]
        elif "emptyDir" in v:
            args += ["--tmpfs", m["mountPath"]]
        else:
            host = v["hostPath"]["path"]
            kind = v["hostPath"].get("type", "")
            if m["mountPath"] in ("/var/lib/netagent", "/var/cache/netagent"):
                # the agent's state and cache: not the host's own directories
                host = str(tmp_path / m["name"])
                os.makedirs(host)
            elif kind == "DirectoryOrCreate":
                os.makedirs(host, exist_ok=True)
            elif not os.path.exists(host) and kind == "":
                continue  # the other runtime's socket directory: kubelet would make it empty
            prop = ",rslave" if m.get("mountPropagation") == "HostToContainer" else ""
            args += ["-v", f"{host}:{m['mountPath']}:{(ro + prop).lstrip(',') or 'rw'}"]
    for host, target in extra_mounts:
        args += ["-v", f"{host}:{target}:ro"]
    return args


def podman_run(image, args, *command, entrypoint=None, timeout=300):
    argv = ["podman", "run", "--rm", *SANDBOX_FLAGS, *args]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    return subprocess.run([*argv, image, *command], capture_output=True, text=True, timeout=timeout)


def test_doctor_passes_in_the_image_with_the_daemonsets_privileges(image, lab, tmp_path):
    pod = lab.create_pod("payments/api-0")
    run_dir = os.path.dirname(lab.socket)
    args = daemonset_run_args(tmp_path, extra_mounts=[(run_dir, run_dir)])
    args += ["-e", f"NETAGENT_RUNTIME_SOCKET={lab.socket}"]
    done = podman_run(image, args, "doctor", "--config", "/etc/netagent/netagent.toml", "--output", "json")
    assert done.returncode == 0, f"doctor exited {done.returncode}: {done.stderr[-2000:]}"
    report = json.loads(done.stdout)
    caps = set(report["privileges"]["capabilities"])
    # the DaemonSet's capabilities (SYS_ADMIN: the conntrack kprobes), nothing beyond them
    # (doctor names the ones the agent uses)
    assert {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"} <= caps <= {"CAP_" + c for c in daemonset_capabilities()}, caps
    drops = next(s for s in report["sensors"] if s["name"] == "drops")
    assert drops["can_run"], drops
    assert report["config"] == "/etc/netagent/netagent.toml"
    attribution = report["pod_attribution"]
    assert attribution["available"] is True, attribution
    assert attribution["pods"] >= 1

    # the pod's namespace file (the runtime's, under the /run/netns mount) is readable in the
    # container; its resolv.conf (`probe dns --pod`) only with SYS_PTRACE, which is why the
    # DaemonSet adds it: without it the kernel's ptrace-read check refuses
    inode = os.stat(pod["netns"]).st_ino
    code = ("import os, sys\n"
            f"print(os.stat({pod['netns']!r}).st_ino)\n"
            "try:\n"
            f"    print(open('/proc/{pod['pid']}/root/etc/resolv.conf').read())\n"
            "except PermissionError as exc:\n"
            "    print('refused:', exc)\n")
    seen = podman_run(image, args, "-c", code, entrypoint="/usr/bin/python3", timeout=120)
    assert seen.returncode == 0, seen.stderr
    first, rest = seen.stdout.split("\n", 1)
    assert int(first) == inode
    assert "options ndots:5" in rest and "search payments.svc.cluster.local" in rest
    i = args.index("SYS_PTRACE")
    without = args[:i - 1] + args[i + 1:]
    refused = podman_run(image, without, "-c", code, entrypoint="/usr/bin/python3", timeout=120)
    assert refused.returncode == 0, refused.stderr
    first, rest = refused.stdout.split("\n", 1)
    assert int(first) == inode, "the namespace file needs no ptrace check"
    assert rest.startswith("refused:") and "Permission denied" in rest
