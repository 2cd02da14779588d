"""The lab's CRI client: the calls kubelet makes to create and remove pod sandboxes.

The stubs come from cri_lab.proto at import time (grpc.protos_and_services,
which needs grpcio-tools), so no generated code is kept in the repository.
"""

import json
import os
import sys

import grpc

import layout

sys.path.insert(0, layout.LAB_DIR)
pb, services = grpc.protos_and_services("cri_lab.proto")


class Runtime:
    def __init__(self, socket: str = layout.SOCKET, timeout: float = layout.CRI_TIMEOUT):
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.stub = services.RuntimeServiceStub(self.channel)
        self.timeout = timeout

    def close(self):
        self.channel.close()

    def version(self, timeout: float | None = None):
        return self.stub.Version(pb.VersionRequest(version="v1"), timeout=timeout or self.timeout)

    def run_sandbox(self, namespace: str, name: str, uid: str, labels: dict, host_network: bool,
                    dns: pb.DNSConfig | None) -> str:
        """RunPodSandbox as kubelet sends it: metadata, kubelet's labels, DNS, namespaces."""
        mode = pb.NODE if host_network else pb.POD
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            # kubelet leaves the hostname empty for host-network pods (they keep the node's)
            hostname="" if host_network else name,
            log_directory=os.path.join(layout.LIB_DIR, "pods", f"{namespace}_{name}_{uid}"),
            dns_config=dns,
            labels=labels,
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=mode, pid=pb.CONTAINER, ipc=pb.POD))),
        )
        reply = self.stub.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=self.timeout)
        return reply.pod_sandbox_id

    def stop_and_remove(self, sandbox_id: str) -> None:
        # kubelet stops (tears down the network: CNI DEL, netns) before removing
        self.stub.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)
        self.stub.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)

    def sandboxes(self, ready_only: bool = True) -> list:
        request = pb.ListPodSandboxRequest()
        if ready_only:
            request.filter.state.state = pb.SANDBOX_READY
        items = self.stub.ListPodSandbox(request, timeout=self.timeout).items
        return sorted(items, key=lambda s: s.created_at)

    def describe(self, sandbox_id: str) -> dict:
        """The lab's view of one sandbox: what `pod create` and `pod list` print."""
        reply = self.stub.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=self.timeout)
        status = reply.status
        info = json.loads(reply.info.get("info", "{}"))
        pid = info.get("pid") or None
        host_network = status.linux.namespaces.options.network == pb.NODE
        netns = None
        for ns in info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", []):
            if ns.get("type") == "network" and ns.get("path"):
                netns = ns["path"]
        if netns is None and pid:
            # a host-network sandbox has no namespace of its own: it is the node's
            netns = f"/proc/{pid}/ns/net"
        return {
            "namespace": status.metadata.namespace,
            "name": status.metadata.name,
            "uid": status.metadata.uid,
            "netns": netns,
            "ip": (status.network.ip or None) if not host_network else None,
            "host_network": host_network,
            "pid": pid,
            "id": status.id,
            "labels": dict(status.labels),
        }
