"""What the one-off commands share of enrichment: `--pod NAMESPACE/NAME` and the stage.

`--pod` turns into the pod sandbox's namespace (`pid:<sandbox pid>`), the
same thing `--netns pid:N` selects, so every command handles it through the
code it already has for --netns. An unknown pod is "unavailable" (exit 69),
naming the pod and the node; --pod with --netns is a usage error (exit 2).
"""

import click

from netagent.enrich.cri import PROC_ROOT, PodInfo, RuntimeUnavailable
from netagent.enrich.pods import CriSource
from netagent.enrich.processors import node_name
from netagent.errors import ProbeUnavailable, UsageError


def pod_option(func):
    return click.option(
        "--pod", default=None, metavar="NAMESPACE/NAME",
        help="Work in this Kubernetes pod's network namespace (found through the container runtime, CRI). "
             "Not with --netns.",
    )(func)


def find_pod(spec: str, runtime_socket: str = "") -> PodInfo:
    """The running pod `spec` (NAMESPACE/NAME) on this node, or a one-line error."""
    namespace, sep, name = spec.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise UsageError(f"--pod {spec!r}: expected NAMESPACE/NAME, e.g. kube-system/coredns-5d78c9869d-abcde")
    node = node_name()
    source = CriSource(runtime_socket)
    try:
        pods = source.list_pods()
    except RuntimeUnavailable as exc:
        raise ProbeUnavailable(f"pod {spec} on node {node}: cannot ask the container runtime: {exc}") from None
    finally:
        source.close()
    for pod in pods:
        if pod.namespace == namespace and pod.name == name:
            if not pod.pid:
                raise ProbeUnavailable(f"pod {spec} on node {node}: the runtime gives no sandbox pid "
                                       f"({source.describe()}), so its network namespace is unknown")
            return pod
    raise ProbeUnavailable(f"pod {spec} not found on node {node} ({len(pods)} pods running here)")


def pod_netns(pod_spec: str | None, netns_spec, runtime_socket: str = ""):
    """(netns spec to use, PodInfo or None) for a command with --pod and --netns."""
    if not pod_spec:
        return netns_spec, None
    if netns_spec:
        raise UsageError("--pod and --netns both select a namespace: give one of them")
    pod = find_pod(pod_spec, runtime_socket)
    return f"pid:{pod.pid}", pod


def pod_resolv_conf(pod: PodInfo) -> str:
    """The pod's own resolv.conf, seen through its sandbox's root."""
    return f"{PROC_ROOT}/{pod.pid}/root/etc/resolv.conf"


def command_enricher(note=None, kubernetes: dict | None = None):
    """The enrichment stage for a one-off command, started, from the [kubernetes] section of
    --config (None: the defaults). Says why attribution is off only where it was expected: a
    runtime socket exists but does not answer, or the configured API server does not."""
    from netagent.enrich.apiserver import REQUEST_TIMEOUT  # noqa: PLC0415
    from netagent.enrich.stage import Enricher  # noqa: PLC0415

    enricher = Enricher.from_config(kubernetes)
    line = enricher.start()
    pods = enricher.pods
    if note and pods is not None and pods.healthy is False:
        note(f"netagent: {line}")
    cluster = enricher.cluster
    if cluster is not None:
        # the runtime's pods are listed before start() returns; the API server's are listed by
        # a thread: wait for its first answer, so this command's events name remote pods too
        if not cluster.answered.wait(REQUEST_TIMEOUT):
            if note:
                note(f"netagent: API server: no answer in {REQUEST_TIMEOUT:g}s ({cluster.description}); "
                     "pods of other nodes are not named")
        elif note and cluster.healthy is False:
            note(f"netagent: {cluster.describe()}")
    return enricher
