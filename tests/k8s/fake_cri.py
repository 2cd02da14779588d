"""FAKE CRI server for tests: a gRPC runtime.v1 RuntimeService on a unix socket.

Not containerd: it answers the four calls netagent makes (Version,
ListPodSandbox, PodSandboxStatus verbose, ListContainers) from a list of
FakePod that a test edits, with containerd's shape of the verbose info
({"pid": N, ...}). The real-runtime tests (test_pods_lab.py) use the lab's
containerd instead.
"""

import json
import os
import tempfile
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from netagent.enrich import cri_pb2 as pb


@dataclass
class FakePod:
    namespace: str
    name: str
    pid: int  # a real process: its /proc/<pid>/ns/net is the pod's namespace
    ips: list = field(default_factory=list)
    host_network: bool = False
    containers: list = field(default_factory=list)  # names
    uid: str = ""
    labels: dict = field(default_factory=dict)
    netns_file: str = ""  # like containerd's /var/run/netns/cni-...: in the verbose info's OCI spec

    @property
    def sandbox_id(self) -> str:
        return f"sb-{self.namespace}-{self.name}"


class FakeCriServer:
    def __init__(self, socket_path: str | None = None):
        self.dir = tempfile.mkdtemp(prefix="fakecri")
        self.socket_path = socket_path or os.path.join(self.dir, "fake-cri.sock")
        self.pods: list[FakePod] = []
        self.calls: dict[str, int] = {}
        self._server = None

    def _count(self, method):
        self.calls[method] = self.calls.get(method, 0) + 1

    def _version(self, request, context):
        self._count("Version")
        return pb.VersionResponse(version="0.1.0", runtime_name="fake-cri", runtime_version="0.0.0",
                                  runtime_api_version="v1")

    def _list(self, request, context):
        self._count("ListPodSandbox")
        items = [pb.PodSandbox(id=p.sandbox_id, state=pb.SANDBOX_READY, labels=p.labels,
                               metadata=pb.PodSandboxMetadata(name=p.name, namespace=p.namespace,
                                                              uid=p.uid or f"uid-{p.name}"))
                 for p in list(self.pods)]
        return pb.ListPodSandboxResponse(items=items)

    def _status(self, request, context):
        self._count("PodSandboxStatus")
        pod = next((p for p in self.pods if p.sandbox_id == request.pod_sandbox_id), None)
        if pod is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such sandbox")
        mode = pb.NODE if pod.host_network else pb.POD
        ips = list(pod.ips)
        status = pb.PodSandboxStatus(
            id=pod.sandbox_id, state=pb.SANDBOX_READY,
            metadata=pb.PodSandboxMetadata(name=pod.name, namespace=pod.namespace, uid=pod.uid or f"uid-{pod.name}"),
            network=pb.PodSandboxNetworkStatus(ip=ips[0] if ips else "",
                                               additional_ips=[pb.PodIP(ip=ip) for ip in ips[1:]]),
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(options=pb.NamespaceOption(network=mode))),
        )
        doc = {"pid": pod.pid, "processStatus": "running"}
        if pod.netns_file:
            doc["runtimeSpec"] = {"linux": {"namespaces": [{"type": "network", "path": pod.netns_file}]}}
        info = {"info": json.dumps(doc)} if request.verbose else {}
        return pb.PodSandboxStatusResponse(status=status, info=info)

    def _containers(self, request, context):
        self._count("ListContainers")
        out = []
        for p in list(self.pods):
            for name in p.containers:
                out.append(pb.Container(id=f"c-{p.name}-{name}", pod_sandbox_id=p.sandbox_id, state=pb.CONTAINER_RUNNING,
                                        metadata=pb.ContainerMetadata(name=name)))
        return pb.ListContainersResponse(containers=out)

    def start(self) -> "FakeCriServer":
        handlers = {
            "Version": (self._version, pb.VersionRequest, pb.VersionResponse),
            "ListPodSandbox": (self._list, pb.ListPodSandboxRequest, pb.ListPodSandboxResponse),
            "PodSandboxStatus": (self._status, pb.PodSandboxStatusRequest, pb.PodSandboxStatusResponse),
            "ListContainers": (self._containers, pb.ListContainersRequest, pb.ListContainersResponse),
        }
        rpc = {name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=req.FromString,
                                                         response_serializer=resp.SerializeToString)
               for name, (fn, req, resp) in handlers.items()}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", rpc),))
        self._server.add_insecure_port(f"unix://{self.socket_path}")
        self._server.start()
        return self

    def stop(self) -> None:
        """Like a killed runtime: the socket stops answering (and its file goes)."""
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.stop()
        try:
            os.rmdir(self.dir)
        except OSError:
            pass
