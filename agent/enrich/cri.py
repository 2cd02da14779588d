"""The container runtime's CRI (the gRPC API kubelet uses): which pods run on this node.

    ListPodSandbox                      every pod sandbox (id, namespace/name/uid, labels)
    PodSandboxStatus(verbose=true)      its IPs, whether it uses the node's network, and
                                        (in the verbose "info" JSON) the sandbox's pid
    ListContainers                      the containers of each sandbox (id, name)

The sandbox pid gives /proc/<pid>/ns/net, whose inode is what the kernel
sensors report as the packet's namespace. Only the messages and fields we
read are in cri.proto (field numbers as in the published runtime.v1 API).
"""

import json
import os
from dataclasses import dataclass, field

from netagent.errors import ProbeUnavailable

# Where runtimes put their CRI socket, in the order we look.
RUNTIME_SOCKETS = ("/run/containerd/containerd.sock", "/var/run/crio/crio.sock")
SERVICE = "/runtime.v1.RuntimeService/"
PROC_ROOT = os.environ.get("NETAGENT_PROC_ROOT", "/proc")  # /host/proc in a container without hostPID
CALL_TIMEOUT = 2.0  # seconds per CRI call: a hung runtime must not stall a refresh for long


class RuntimeUnavailable(ProbeUnavailable):
    """The runtime's socket is missing or does not answer."""


@dataclass
class PodInfo:
    sandbox_id: str
    namespace: str
    name: str
    uid: str
    pid: int | None = None
    netns_inode: int | None = None
    host_network: bool = False
    ips: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    containers: list[tuple[str, str]] = field(default_factory=list)  # (id, name)
    netns_file: str | None = None  # the runtime's bind mount of the namespace (/var/run/netns/cni-...)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def netns_path(self) -> str | None:
        """A file to open the namespace by: the runtime's own bind mount needs no access to the
        sandbox process (a pause running as another user is hidden by ProtectProc=invisible)."""
        if self.netns_file:
            return self.netns_file
        return f"{PROC_ROOT}/{self.pid}/ns/net" if self.pid else None


def detect_socket(configured: str = "") -> str | None:
    """The configured socket ([kubernetes] runtime_socket, else $NETAGENT_RUNTIME_SOCKET),
    else the first runtime socket present, else None."""
    configured = configured or os.environ.get("NETAGENT_RUNTIME_SOCKET", "")
    if configured:
        return configured
    for path in RUNTIME_SOCKETS:
        if os.path.exists(path):
            return path
    return None


def _verbose_info(info: dict[str, str]) -> dict:
    raw = info.get("info")
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def sandbox_pid(info: dict[str, str]) -> int | None:
    """The sandbox's pid from PodSandboxStatus(verbose)'s info map.

    containerd and CRI-O put a JSON document under "info" with a top-level
    "pid"; both keep the OCI runtime spec there too.
    """
    pid = _verbose_info(info).get("pid")
    return pid if isinstance(pid, int) and pid > 0 else None


def sandbox_netns_file(info: dict[str, str]) -> str | None:
    """The network namespace's path in the sandbox's OCI spec (runtimeSpec.linux.namespaces)."""
    spec = _verbose_info(info).get("runtimeSpec") or {}
    for ns in ((spec.get("linux") or {}).get("namespaces") or []):
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return ns["path"]
    return None


def netns_inode(pid: int | None, netns_file: str | None = None) -> int | None:
    """The namespace's inode: from the runtime's bind mount if it gave one, else from the sandbox's /proc."""
    for path in ([netns_file] if netns_file else []) + ([f"{PROC_ROOT}/{pid}/ns/net"] if pid else []):
        try:
            return os.stat(path).st_ino
        except OSError:  # the sandbox went away between the listing and now, or we may not look
            continue
    return None


class CriClient:
    """A few unary CRI calls over the runtime's unix socket."""

    def __init__(self, socket_path: str, timeout: float = CALL_TIMEOUT):
        # gRPC's core logs every dropped connection at INFO on stderr: the agent says it once itself
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        import grpc  # noqa: PLC0415 - only where Kubernetes attribution is used

        from netagent.enrich import cri_pb2  # noqa: PLC0415

        self.socket_path = socket_path
        self.timeout = timeout
        self._grpc = grpc
        self._pb = cri_pb2
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._calls = {}
        for method, req, resp in (
            ("Version", cri_pb2.VersionRequest, cri_pb2.VersionResponse),
            ("ListPodSandbox", cri_pb2.ListPodSandboxRequest, cri_pb2.ListPodSandboxResponse),
            ("PodSandboxStatus", cri_pb2.PodSandboxStatusRequest, cri_pb2.PodSandboxStatusResponse),
            ("ListContainers", cri_pb2.ListContainersRequest, cri_pb2.ListContainersResponse),
        ):
            self._calls[method] = self._channel.unary_unary(
                SERVICE + method, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request):
        if not os.path.exists(self.socket_path):
            raise RuntimeUnavailable(f"CRI socket {self.socket_path} is missing")
        try:
            return self._calls[method](request, timeout=self.timeout)
        except self._grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") and exc.code() else "error"
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise RuntimeUnavailable(f"CRI {method} on {self.socket_path} failed: {code}: {detail}") from None

    def version(self) -> dict:
        r = self._call("Version", self._pb.VersionRequest(version="v1"))
        return {"runtime_name": r.runtime_name, "runtime_version": r.runtime_version,
                "runtime_api_version": r.runtime_api_version}

    def list_pods(self) -> list[PodInfo]:
        """Every ready pod sandbox with its pid, netns inode, IPs, labels and containers."""
        pb = self._pb
        ready = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
        sandboxes = self._call("ListPodSandbox", pb.ListPodSandboxRequest(filter=ready)).items
        running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
        containers: dict[str, list[tuple[str, str]]] = {}
        for c in self._call("ListContainers", pb.ListContainersRequest(filter=running)).containers:
            containers.setdefault(c.pod_sandbox_id, []).append((c.id, c.metadata.name))
        pods = []
        for sb in sandboxes:
            try:
                status = self._call("PodSandboxStatus", pb.PodSandboxStatusRequest(pod_sandbox_id=sb.id, verbose=True))
            except RuntimeUnavailable:
                if not os.path.exists(self.socket_path):
                    raise
                continue  # removed between the listing and its status: gone anyway
            st = status.status
            ips = [ip for ip in [st.network.ip] + [a.ip for a in st.network.additional_ips] if ip]
            info = dict(status.info)
            pid = sandbox_pid(info)
            host_network = st.linux.namespaces.options.network == pb.NODE
            netns_file = None if host_network else sandbox_netns_file(info)
            pods.append(PodInfo(
                sandbox_id=sb.id, namespace=sb.metadata.namespace, name=sb.metadata.name, uid=sb.metadata.uid,
                pid=pid, netns_inode=netns_inode(pid, netns_file), host_network=host_network, netns_file=netns_file,
                ips=ips, labels=dict(sb.labels), containers=sorted(containers.get(sb.id, []), key=lambda c: c[1]),
            ))
        return pods
