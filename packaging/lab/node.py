"""`packaging/lab/node up | down | status`: a one-node Kubernetes runtime for tests.

up     starts (idempotently) a containerd with its CRI plugin, the CNI bridge
       plugin and the locally built pause image, and prints one JSON object
       describing the node (its CRI socket above all).
down   removes pods, containerd, its shims, mounts, namespaces, veths, the
       bridge and every file `up` wrote. Running it twice is fine.
status prints the same JSON as `up` when the node is up, else exits 69.

Exit codes: 0 ok, 2 usage, 69 unavailable (not up / a package missing), 77 not root.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import layout

REQUIRED = {  # binary -> Debian package that ships it
    "containerd": "containerd", "ctr": "containerd", "runc": "runc", "gcc": "gcc",
    os.path.join(layout.CNI_BIN_DIR, "bridge"): "containernetworking-plugins",
    os.path.join(layout.CNI_BIN_DIR, "host-local"): "containernetworking-plugins",
    os.path.join(layout.CNI_BIN_DIR, "loopback"): "containernetworking-plugins",
}


class LabError(Exception):
    def __init__(self, message: str, code: int = layout.EX_UNAVAILABLE):
        super().__init__(message)
        self.code = code


def containerd_config() -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""\
# written by packaging/lab/node up; removed by node down
version = 2
root = "{layout.LIB_DIR}/containerd"
state = "{layout.RUN_DIR}/containerd"
# plugins the lab has no use for: fewer to load, fewer warnings in the log
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{layout.SOCKET}"

[ttrpc]
  address = "{layout.RUN_DIR}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{layout.LIB_DIR}/opt"

[{cri}]
  sandbox_image = "{layout.PAUSE_IMAGE}"
  # the streaming server (exec/attach) listens on loopback only
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # kubelet asks for oom_score_adj -998 for sandboxes; lowering it needs
  # CAP_SYS_RESOURCE, which a root in a container (CI, this VM) may lack.
  # Restricted, containerd clamps it to its own value instead of failing.
  restrict_oom_score_adj = true

[{cri}.cni]
  bin_dir = "{layout.CNI_BIN_DIR}"
  conf_dir = "{layout.CNI_CONF_DIR}"
  max_conf_num = 1

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  # runc's state beside the lab's, not in the default /run/containerd/runc
  Root = "{layout.RUNC_ROOT}"
  SystemdCgroup = false
"""


def cni_config() -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": layout.CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": layout.BRIDGE,
            # `up` made the bridge and gave it the gateway address, so the host
            # reaches every pod; isGateway would also turn on the host's
            # net.ipv4.ip_forward, which the lab has no need to change
            "isGateway": False,
            # no masquerading: pod traffic never leaves this machine
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": layout.SUBNET, "gateway": layout.GATEWAY}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": layout.IPAM_DIR,
            },
        }],
    }


def read_pid() -> int | None:
    try:
        with open(layout.PIDFILE) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    # a recycled pid is not our containerd
    return pid if argv and os.path.basename(argv[0]) == b"containerd" and \
        layout.CONTAINERD_CONFIG.encode() in argv else None


def answers(timeout: float = 5.0) -> bool:
    """True when the lab's containerd answers a CRI Version call."""
    if not os.path.exists(layout.SOCKET):
        return False
    import cri
    runtime = cri.Runtime()
    try:
        runtime.version(timeout=timeout)
        return True
    except Exception:
        return False
    finally:
        runtime.close()


def is_up() -> bool:
    return read_pid() is not None and answers()


def describe() -> dict:
    return {
        "socket": layout.SOCKET,
        "runtime_endpoint": f"unix://{layout.SOCKET}",
        "containerd_pid": read_pid(),
        "bridge": layout.BRIDGE,
        "subnet": layout.SUBNET,
        "gateway": layout.GATEWAY,
        "pause_image": layout.PAUSE_IMAGE,
        "cni_conf_dir": layout.CNI_CONF_DIR,
        "name": layout.NAME,
    }


def check_requirements() -> None:
    for binary, package in REQUIRED.items():
        found = os.access(binary, os.X_OK) if os.path.isabs(binary) else shutil.which(binary)
        if not found:
            raise LabError(f"{binary} not found: apt-get install {package}")
    try:
        import grpc_tools  # noqa: F401  (cri.py builds its stubs with it)
    except ImportError:
        raise LabError("grpcio-tools is not importable: pip install grpcio grpcio-tools")


def ctr(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "--address", layout.SOCKET, "--namespace", layout.K8S_NAMESPACE,
                           *args], capture_output=True, text=True, **kwargs)


def ensure_pause_image() -> None:
    listed = ctr("images", "ls", "-q", check=True).stdout.split()
    if layout.PAUSE_IMAGE in listed:
        return
    import pauseimage
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "pause.tar")
        pauseimage.build(archive)
        done = ctr("images", "import", archive)
        if done.returncode != 0:
            raise LabError(f"ctr images import failed: {done.stderr.strip()}")
    # the CRI plugin's garbage collector keeps pinned images (the pause image is pinned on real nodes)
    ctr("images", "label", layout.PAUSE_IMAGE, "io.cri-containerd.pinned=pinned")


def write_files() -> None:
    os.makedirs(layout.RUN_DIR, mode=0o700, exist_ok=True)
    os.makedirs(layout.LIB_DIR, mode=0o700, exist_ok=True)
    os.makedirs(layout.CNI_CONF_DIR, exist_ok=True)
    if not os.path.exists(layout.STATEFILE):
        # what the host looked like before the lab, so `down` can put it back
        # (libcni caches results in /var/lib/cni, shims put sockets in /run/containerd/s)
        state = {"var_lib_cni_existed": os.path.exists("/var/lib/cni"),
                 "run_containerd_existed": os.path.exists("/run/containerd")}
        with open(layout.STATEFILE, "w") as f:
            json.dump(state, f)
    with open(layout.CONTAINERD_CONFIG, "w") as f:
        f.write(containerd_config())
    with open(os.path.join(layout.CNI_CONF_DIR, "10-netagent-lab.conflist"), "w") as f:
        json.dump(cni_config(), f, indent=2)
    if layout.BRIDGE not in _link_names():
        ip("link", "add", layout.BRIDGE, "type", "bridge")
        ip("addr", "add", layout.GATEWAY_CIDR, "dev", layout.BRIDGE)
        ip("link", "set", layout.BRIDGE, "up")


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def start_containerd() -> None:
    log = open(layout.CONTAINERD_LOG, "ab")
    proc = subprocess.Popen(["containerd", "--config", layout.CONTAINERD_CONFIG],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)  # outlives this command
    log.close()
    with open(layout.PIDFILE, "w") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + layout.START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(f"containerd exited with {proc.returncode}: {log_tail()}")
        if answers(timeout=2.0):
            return
        time.sleep(0.1)
    raise LabError(f"containerd did not answer on {layout.SOCKET} within {layout.START_TIMEOUT:.0f}s: {log_tail()}")


def log_tail() -> str:
    try:
        with open(layout.CONTAINERD_LOG, errors="replace") as f:
            lines = [line.strip() for line in f if "level=error" in line or "level=fatal" in line]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else f"see {layout.CONTAINERD_LOG}"


def up() -> dict:
    check_requirements()
    if read_pid() is None:
        # a node half made is no node: undo it all when any step fails
        try:
            write_files()
            start_containerd()
            ensure_pause_image()
        except (LabError, OSError, subprocess.CalledProcessError) as exc:
            down()
            raise LabError(str(exc)) from None
    elif not answers(timeout=15.0):
        raise LabError(f"the lab's containerd (pid {read_pid()}) does not answer on {layout.SOCKET}; "
                       "run packaging/lab/node down")
    else:
        ensure_pause_image()
    return describe()


# --- down ---------------------------------------------------------------------------

def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if os.path.exists(f"/proc/{p}")]
        if alive:
            time.sleep(0.05)
    return alive


def _terminate(pids: list[int], timeout: float = 20.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in _wait_gone(pids, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait_gone(pids, 5.0)


def _lab_shims() -> list[int]:
    """containerd-shim processes started by the lab's containerd (they outlive it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and b"containerd-shim" in os.path.basename(argv[0]) and layout.SOCKET.encode() in argv:
            found.append(int(entry))
    return found


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:
        pass
    return kids


def _mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4].replace("\\040", " ") for line in f]
    return [t for t in targets if t.startswith(prefixes)]


def _unmount(targets: list[str]) -> None:
    for target in sorted(set(targets), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)


def _link_names() -> dict[str, str | None]:
    """Interface name -> bridge it is enslaved to, in the host namespace."""
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return {link["ifname"]: link.get("master") for link in json.loads(out or "[]")}


def down() -> None:
    # 1. remove the pods through CRI, as kubelet would: CNI DEL frees veths, IPs and netns
    if read_pid() is not None and answers():
        import cri
        runtime = cri.Runtime()
        try:
            for sandbox in runtime.sandboxes(ready_only=False):
                runtime.stop_and_remove(sandbox.id)
        except Exception as exc:
            print(f"node down: removing pods through CRI failed ({exc}); removing them by force",
                  file=sys.stderr)
        finally:
            runtime.close()
    # 2. containerd, then the shims and whatever still runs under them (pause)
    pid = read_pid()
    if pid:
        _terminate([pid])
    shims = _lab_shims()
    if shims:
        _terminate([kid for shim in shims for kid in _children(shim)], timeout=5.0)
        _terminate(shims, timeout=5.0)
    # 3. namespaces and mounts the lab made (netns files live in /run/netns)
    netns_paths = []
    try:
        with open(layout.NETNS_LOG) as f:
            netns_paths = [line.strip() for line in f if line.strip().startswith("/run/netns/")]
    except OSError:
        pass
    _unmount(_mounts_under((layout.RUN_DIR + "/", layout.LIB_DIR + "/")) +
             [p for p in netns_paths if p in _mounts_under(("/run/netns/",))])
    for path in netns_paths:
        try:
            os.unlink(path)
        except OSError:
            pass
    # 4. the bridge and any veth still enslaved to it
    links = _link_names()
    for name, master in links.items():
        if master == layout.BRIDGE:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    if layout.BRIDGE in links:
        subprocess.run(["ip", "link", "del", layout.BRIDGE], capture_output=True)
    # 5. directories that did not exist before the lab
    state = {}
    try:
        with open(layout.STATEFILE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        pass
    if not state.get("var_lib_cni_existed", True):
        _remove_empty_tree("/var/lib/cni")
    if not state.get("run_containerd_existed", True):
        _remove_empty_tree("/run/containerd")
    for directory in (layout.RUN_DIR, layout.LIB_DIR):
        if _mounts_under((directory + "/",)):
            raise LabError(f"mounts remain under {directory}; not removing it")
        shutil.rmtree(directory, ignore_errors=True)


def _remove_empty_tree(top: str) -> None:
    """rmdir every directory below top, bottom up; anything with a file in it stays."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    usage = "usage: packaging/lab/node up | down | status"
    if len(argv) != 1 or argv[0] not in ("up", "down", "status"):
        print(usage, file=sys.stderr)
        return layout.EX_USAGE
    if os.geteuid() != 0:
        print("node: needs root (containerd, namespaces, mounts)", file=sys.stderr)
        return layout.EX_NOPERM
    try:
        if argv[0] == "up":
            print(json.dumps(up()))
        elif argv[0] == "down":
            down()
        elif is_up():
            print(json.dumps(describe()))
        else:
            print("node: the lab node is not up (packaging/lab/node up)", file=sys.stderr)
            return layout.EX_UNAVAILABLE
    except LabError as exc:
        print(f"node: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
