"""`packaging/lab/pod`: pod sandboxes on the lab node, created through CRI as kubelet does.

  pod create NAMESPACE/NAME [--host-network] [--label KEY=VALUE ...] [--dns-server IP]
      RunPodSandbox with the pod's name, namespace, a fresh uid, kubelet's labels
      and a kubelet-style resolv.conf (ndots:5, NAMESPACE.svc.cluster.local ...);
      prints one JSON object {"namespace","name","uid","netns","ip",...}, ip null
      for a host-network pod (whose netns is the node's).
  pod delete NAMESPACE/NAME
      StopPodSandbox + RemovePodSandbox: CNI removes the veth, IP and netns.
  pod list
      one JSON object per pod, one per line, oldest first.

Exit codes: 0 ok, 1 the pod exists already, 2 usage, 69 lab node not up or no
such pod, 77 not root.
"""

import argparse
import json
import os
import re
import sys
import uuid

import layout

# a Kubernetes namespace and a pod name are DNS labels / subdomains
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class Usage(Exception):
    pass


class Unavailable(Exception):
    pass


def pod_ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not NAMESPACE_RE.match(namespace) or not NAME_RE.match(name):
        raise argparse.ArgumentTypeError(f"{text!r} is not NAMESPACE/NAME (lowercase DNS names)")
    return namespace, name


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def parser() -> argparse.ArgumentParser:
    class OneLine(argparse.ArgumentParser):
        def error(self, message):
            raise Usage(message)

    p = OneLine(prog="packaging/lab/pod")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLine)
    create = sub.add_parser("create")
    create.add_argument("pod", type=pod_ref)
    create.add_argument("--host-network", action="store_true")
    create.add_argument("--label", type=label, action="append", default=[])
    create.add_argument("--dns-server", default=layout.GATEWAY,
                        help="nameserver in the pod's resolv.conf (default: the lab bridge, "
                             "an address of this machine)")
    delete = sub.add_parser("delete")
    delete.add_argument("pod", type=pod_ref)
    sub.add_parser("list")
    return p


def kubelet_dns(namespace: str, server: str):
    """What kubelet writes for dnsPolicy ClusterFirst: the cluster search path and ndots:5."""
    import cri
    domain = layout.CLUSTER_DOMAIN
    return cri.pb.DNSConfig(servers=[server],
                            searches=[f"{namespace}.svc.{domain}", f"svc.{domain}", domain],
                            options=["ndots:5"])


def find(runtime, namespace: str, name: str) -> list:
    return [s for s in runtime.sandboxes(ready_only=False)
            if s.metadata.namespace == namespace and s.metadata.name == name]


def create(runtime, namespace: str, name: str, host_network: bool, labels: list, dns_server: str) -> dict:
    if find(runtime, namespace, name):
        raise FileExistsError(f"pod {namespace}/{name} exists on the lab node")
    uid = str(uuid.uuid4())
    all_labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                  "io.kubernetes.pod.uid": uid, **dict(labels)}
    # kubelet gives a host-network ClusterFirst pod the node's resolv.conf: no DNSConfig
    dns = None if host_network else kubelet_dns(namespace, dns_server)
    sandbox_id = runtime.run_sandbox(namespace, name, uid, all_labels, host_network, dns)
    pod = runtime.describe(sandbox_id)
    netns = os.path.realpath(pod["netns"] or "")  # containerd says /var/run/netns/...
    if netns.startswith("/run/netns/"):
        with open(layout.NETNS_LOG, "a") as f:  # for `node down` if containerd is gone by then
            f.write(netns + "\n")
    return pod


def delete(runtime, namespace: str, name: str) -> None:
    sandboxes = find(runtime, namespace, name)
    if not sandboxes:
        raise Unavailable(f"no pod {namespace}/{name} on the lab node")
    for sandbox in sandboxes:
        runtime.stop_and_remove(sandbox.id)


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except Usage as exc:
        print(f"pod: {exc}", file=sys.stderr)
        return layout.EX_USAGE
    if os.geteuid() != 0:
        print("pod: needs root (the lab's CRI socket is root's)", file=sys.stderr)
        return layout.EX_NOPERM
    import node
    if not node.is_up():
        print("pod: the lab node is not up (packaging/lab/node up)", file=sys.stderr)
        return layout.EX_UNAVAILABLE
    import cri
    import grpc
    runtime = cri.Runtime()
    try:
        if args.command == "create":
            pod = create(runtime, *args.pod, args.host_network, args.label, args.dns_server)
            print(json.dumps(pod))
        elif args.command == "delete":
            delete(runtime, *args.pod)
        else:
            for sandbox in runtime.sandboxes(ready_only=False):
                print(json.dumps(runtime.describe(sandbox.id)))
    except FileExistsError as exc:
        print(f"pod: {exc}", file=sys.stderr)
        return 1
    except Unavailable as exc:
        print(f"pod: {exc}", file=sys.stderr)
        return layout.EX_UNAVAILABLE
    except grpc.RpcError as exc:
        print(f"pod: {args.command} failed: CRI {exc.code().name}: {exc.details()}", file=sys.stderr)
        return layout.EX_UNAVAILABLE
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
