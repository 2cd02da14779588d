"""The cluster's pods from the Kubernetes API server (optional): peers on other nodes and workloads.

The container runtime (CRI, netagent.enrich.pods) knows only this node's
pods. With `[kubernetes] apiserver` set, a background thread keeps an index
of every pod in the cluster, IP -> {namespace, pod, workload}, so an event
whose source.ip / destination.ip is a pod on another node names it, and
every named peer carries its workload ("Deployment/api", "StatefulSet/db").

    apiserver = ""              off (the default): no connection is made
    apiserver = "in-cluster"    the pod's service account: $KUBERNETES_SERVICE_HOST/PORT,
                                token and ca.crt in /var/run/secrets/kubernetes.io/serviceaccount
    apiserver = "/path/config"  a kubeconfig file (its current context)

How the index is kept: list every pod, then watch from the list's
resourceVersion (lightkube re-opens the watch when the server ends it after
`apiserver_watch` seconds). Any failure (unreachable, 410 Gone, 403) ends
the watch: the thread waits (1 s doubling to 30 s) and lists again. Pods
listed before a failure stay named for `grace`, like deleted pods. While the
server is away, an address nothing named (it could be a pod we have not
heard of) is counted `apiserver_unavailable`, once per event.

Workload owner, from the pod's controller ownerReference:
    StatefulSet, DaemonSet, other kinds   the owner itself
    ReplicaSet   the ReplicaSet's own controller (a Deployment), read once per ReplicaSet
                 (GET apps/v1 replicasets); if it cannot be read (RBAC, gone), the
                 pod-template-hash convention: ReplicaSet "api-7d9f8" of a pod labelled
                 pod-template-hash=7d9f8 belongs to Deployment "api"
    Job          the Job's controller (a CronJob), else the Job

Lookups (the dispatcher thread) never wait for the API server: they read a
dict the thread replaces whole.
"""

import os
import threading
import time

from netagent.configschema import positive
from netagent.errors import ConfigError

IN_CLUSTER = "in-cluster"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_WATCH = 300.0  # seconds a watch request lasts before it is re-opened ([kubernetes] apiserver_watch)
REQUEST_TIMEOUT = 10.0  # seconds for a list page or an owner GET
WATCH_READ_SLACK = 30.0  # a watch silent this long past its server-side timeout is a dead connection
LIST_CHUNK = 500  # pods per list page
FIRST_BACKOFF, MAX_BACKOFF = 1.0, 30.0  # seconds between attempts after a failure
MAX_OWNERS = 20000  # bound on the ReplicaSet/Job -> owner cache (cleared at each full list)
# stop() waits this long for the thread; a watch blocked on a quiet stream is not interrupted
# (closing the client does not wake a blocked read): that daemon thread ends when the server
# ends the watch, or with the process
STOP_TIMEOUT = 1.0
MAX_PAIRS = 65536  # bound on the shared {source, destination} objects (ApiPeerAttributor)


def _check_apiserver(value: str) -> str:
    """[kubernetes] apiserver: "", "in-cluster" or a kubeconfig that loads (checked when the config is)."""
    if value in ("", IN_CLUSTER):
        return value
    load_kubeconfig(value)
    return value


APISERVER_SCHEMA = {
    # the API server, for pods on other nodes and workload owners: "" = off,
    # "in-cluster" = the pod's service account, else the path of a kubeconfig file
    "apiserver": ("str", "", _check_apiserver),
    # how long one watch request lasts before it is re-opened (the server's timeoutSeconds)
    "apiserver_watch": ("duration", DEFAULT_WATCH, positive),
}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_kubeconfig(path: str):
    """The kubeconfig's current context as a lightkube SingleConfig, or ValueError in one line."""
    try:
        from lightkube import KubeConfig  # noqa: PLC0415
    except ImportError as exc:
        raise ValueError(f"the API server needs the lightkube package ({exc})") from None
    try:
        config = KubeConfig.from_file(path).get()
    except Exception as exc:  # YAML errors, missing context, file errors: all a bad kubeconfig
        mark = getattr(exc, "problem_mark", None)  # a YAML syntax error: where, and what
        if mark is not None:
            raise ValueError(f"kubeconfig {path}: not valid YAML (line {mark.line + 1}, column {mark.column + 1}: "
                             f"{getattr(exc, 'problem', None) or 'syntax error'})") from None
        raise ValueError(f"kubeconfig {path}: {_one_line(exc)}") from None
    if config is None or not getattr(config.cluster, "server", None):
        raise ValueError(f"kubeconfig {path}: its current context names no cluster server")
    return config


def connection(setting: str):
    """(lightkube KubeConfig or SingleConfig, description) for a configured `apiserver`; ConfigError if
    it cannot be (in-cluster outside a pod)."""
    if setting == IN_CLUSTER:
        from lightkube import KubeConfig  # noqa: PLC0415

        account = os.environ.get("NETAGENT_SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR)
        if not os.environ.get("KUBERNETES_SERVICE_HOST") or not os.environ.get("KUBERNETES_SERVICE_PORT"):
            raise ConfigError("in-cluster needs $KUBERNETES_SERVICE_HOST and $KUBERNETES_SERVICE_PORT "
                              "(set in every pod; is netagent running in one?)", key="kubernetes.apiserver")
        try:
            config = KubeConfig.from_service_account(account)
        except Exception as exc:
            raise ConfigError(f"in-cluster service account {account}: {_one_line(exc)} (is the token "
                              "mounted? packaging/kubernetes/rbac-apiserver.yaml turns it on)",
                              key="kubernetes.apiserver") from None
        return config, f"in-cluster service account, {config.get().cluster.server}"
    try:
        config = load_kubeconfig(setting)
    except ValueError as exc:
        raise ConfigError(str(exc), key="kubernetes.apiserver") from None
    return config, f"kubeconfig {setting}, {config.cluster.server}"


def _controller(refs) -> tuple[str, str] | None:
    """(kind, name) of the controlling ownerReference, else the first one, else None."""
    if not refs:
        return None
    ref = next((r for r in refs if r.controller), refs[0])
    return ref.kind, ref.name


def deployment_by_hash(replicaset: str, labels: dict | None) -> str | None:
    """The Deployment a ReplicaSet belongs to by the naming convention, when the ReplicaSet
    cannot be read: "<deployment>-<pod-template-hash>"."""
    suffix = (labels or {}).get("pod-template-hash")
    if suffix and replicaset.endswith("-" + suffix) and len(replicaset) > len(suffix) + 1:
        return replicaset[: -len(suffix) - 1]
    return None


class ClusterPods:
    """IP -> {namespace, pod, workload} for every pod of the cluster, kept by list + watch."""

    def __init__(self, config, description: str, grace: float, watch_seconds: float = DEFAULT_WATCH,
                 log=None, clock=time.monotonic):
        self.config = config
        self.description = description
        self.grace = grace
        self.watch_seconds = watch_seconds
        self.log = log or (lambda message: None)
        self.clock = clock
        self.healthy: bool | None = None  # None until the first list
        self.answered = threading.Event()  # set by the first list or the first failure (a command waits on it)
        self.last_error: str | None = None
        self.failed_since: float | None = None
        self.lists = 0
        self.watch_events = 0
        self.failures = 0
        self.owner_fallbacks = 0  # workloads from the pod-template-hash convention
        self.by_ip: dict[str, dict] = {}  # replaced whole on each change; read without a lock
        self._pods: dict[str, tuple[tuple[str, ...], dict]] = {}  # uid -> (IPs, peer fields)
        self._gone: dict[str, float] = {}  # uid -> when deleted (or missing from a list)
        self._owners: dict[tuple[str, str, str], str | None] = {}
        self._forbidden: set[str] = set()  # kinds answered 403 (RBAC for pods only): not asked again until a list
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None

    @classmethod
    def from_config(cls, cfg: dict, log=None) -> "ClusterPods | None":
        if not cfg.get("apiserver"):
            return None
        config, description = connection(cfg["apiserver"])
        return cls(config, description, grace=cfg["grace"], watch_seconds=cfg["apiserver_watch"], log=log)

    # -- lookups (dispatcher thread; never block) ----------------------------------
    def peers(self) -> dict[str, dict]:
        """The IP index to name peers by; empty once a failure has lasted longer than the grace period."""
        if self.healthy is False and self.failed_since is not None and self.clock() - self.failed_since > self.grace:
            return {}
        return self.by_ip

    # -- the thread ----------------------------------------------------------------
    def start(self) -> None:
        from netagent.watchdog import WATCHDOG  # noqa: PLC0415

        self._thread = threading.Thread(
            target=WATCHDOG.run, args=("enrich-apiserver", self._run, self._stop),
            kwargs={"on_failure": self._failed}, name="enrich-apiserver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        client = self._client
        if client is not None:
            try:
                client.close()  # no new requests; a list under way fails at once
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)

    def _new_client(self):
        import httpx2  # noqa: PLC0415
        from lightkube import Client  # noqa: PLC0415

        client = Client(self.config, timeout=httpx2.Timeout(REQUEST_TIMEOUT), trust_env=False)
        # lightkube waits on a watch without a read timeout; a connection that died without a
        # FIN or RST would hold it for ever. The server ends each watch after watch_seconds,
        # so a silence much longer than that is a dead connection.
        inner = getattr(client, "_client", None)
        if inner is not None and hasattr(inner, "_watch_timeout"):
            inner._watch_timeout = httpx2.Timeout(REQUEST_TIMEOUT, read=self.watch_seconds + WATCH_READ_SLACK)
        return client

    def _run(self) -> None:
        backoff = FIRST_BACKOFF
        while not self._stop.is_set():
            try:
                self._list_and_watch()
            except Exception as exc:
                if self._stop.is_set():
                    return
                if not _is_api_failure(exc):
                    raise  # a bug: the watchdog counts it, says so and restarts this
                self._failed(exc)
                if self._stop.wait(backoff):
                    return
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            backoff = FIRST_BACKOFF

    def _failed(self, exc: BaseException) -> None:
        reason = _one_line(exc)
        self.failures += 1
        if self.healthy is not False or reason != self.last_error:
            kept = len(self._pods)
            self.log(f"API server: {reason}; the {kept} pods listed before stay named for {self.grace:g}s")
        if self.healthy is not False:
            self.failed_since = self.clock()
        self.healthy, self.last_error = False, reason
        self.answered.set()
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _list_and_watch(self) -> None:
        from lightkube import ALL_NS  # noqa: PLC0415
        from lightkube.resources.core_v1 import Pod  # noqa: PLC0415

        if self._client is None:
            self._client = self._new_client()
        client = self._client
        listing = client.list(Pod, namespace=ALL_NS, chunk_size=LIST_CHUNK)
        pods = list(listing)
        version = listing.resourceVersion
        self._owners.clear()  # owners are read again once per full list
        self._forbidden.clear()
        self._replace_all(pods)
        self.lists += 1
        if self.healthy is False:
            self.log(f"API server: answers again ({len(pods)} pods)")
        self.healthy, self.last_error, self.failed_since = True, None, None
        self.answered.set()
        for kind, pod in client.watch(Pod, namespace=ALL_NS, resource_version=version,
                                      server_timeout=int(self.watch_seconds)):
            if self._stop.is_set():
                return
            self.watch_events += 1
            if kind == "DELETED":
                self._forget(pod.metadata.uid)
            elif kind in ("ADDED", "MODIFIED"):
                self._put(pod)

    # -- the index (thread only) -----------------------------------------------------
    def _entry(self, pod) -> tuple[tuple[str, ...], dict]:
        meta = pod.metadata
        spec, status = pod.spec, pod.status
        ips: tuple[str, ...] = ()
        if status is not None and not (spec is not None and spec.hostNetwork):
            # a hostNetwork pod has the node's IP: it cannot name one pod (as for the node's netns)
            listed = [p.ip for p in (status.podIPs or []) if p.ip] or ([status.podIP] if status.podIP else [])
            ips = tuple(listed)
        peer = {"namespace": meta.namespace, "pod": meta.name}
        workload = self._workload(pod)
        if workload:
            peer["workload"] = workload
        return ips, peer

    def _replace_all(self, pods) -> None:
        now = self.clock()
        fresh = {}
        for pod in pods:
            fresh[pod.metadata.uid] = self._entry(pod)
        for uid in self._pods.keys() - fresh.keys():
            self._gone.setdefault(uid, now)  # deleted while we were not watching: kept for grace
        gone = {uid: self._pods[uid] for uid in self._gone if uid in self._pods and uid not in fresh}
        for uid in fresh:
            self._gone.pop(uid, None)
        self._pods = {**gone, **fresh}
        self._expire(now)
        self._publish()

    def _put(self, pod) -> None:
        """ADDED or MODIFIED. Most MODIFIED events (status, readiness) change nothing we keep:
        those leave the index as it is; a change copies it once (readers hold the old one)."""
        uid = pod.metadata.uid
        entry = self._entry(pod)
        old = self._pods.get(uid)
        was_gone = self._gone.pop(uid, None) is not None
        if old != entry or was_gone:
            self._pods[uid] = entry
            by_ip = dict(self.by_ip)
            if old is not None:
                for ip in old[0]:
                    if by_ip.get(ip) is old[1]:
                        del by_ip[ip]
            for ip in entry[0]:
                by_ip[ip] = entry[1]
            self.by_ip = by_ip
        if self._expire(self.clock()):
            self._publish()

    def _forget(self, uid: str) -> None:
        """DELETED: still named for the grace period (the pod's last events), then dropped."""
        now = self.clock()
        self._gone.setdefault(uid, now)
        if self._expire(now):
            self._publish()

    def _expire(self, now: float) -> bool:
        """Drop the pods deleted longer than the grace period ago; True if there were any."""
        expired = [uid for uid, when in self._gone.items() if now - when > self.grace]
        for uid in expired:
            self._pods.pop(uid, None)
            del self._gone[uid]
        return bool(expired)

    def _publish(self) -> None:
        """The IP index from scratch (after a list, or when deleted pods expire)."""
        by_ip: dict[str, dict] = {}
        gone = self._gone
        # deleted pods first, so an IP already reused names the pod that has it now
        for live in (False, True):
            for uid, (ips, peer) in self._pods.items():
                if (uid not in gone) is live:
                    for ip in ips:
                        by_ip[ip] = peer
        self.by_ip = by_ip

    # -- owners ------------------------------------------------------------------------
    def _workload(self, pod) -> str | None:
        meta = pod.metadata
        owner = _controller(meta.ownerReferences)
        if owner is None:
            return None  # a bare pod
        kind, name = owner
        if kind not in ("ReplicaSet", "Job"):
            return f"{kind}/{name}"
        key = (kind, meta.namespace, name)
        if key not in self._owners:
            if len(self._owners) > MAX_OWNERS:
                self._owners.clear()
            self._owners[key] = self._owner_of(kind, meta.namespace, name, meta.labels)
        return self._owners[key] or f"{kind}/{name}"

    def _owner_of(self, kind: str, namespace: str, name: str, labels) -> str | None:
        """The controller of a ReplicaSet or Job as "Kind/name", or None (it has none)."""
        from lightkube.resources.apps_v1 import ReplicaSet  # noqa: PLC0415
        from lightkube.resources.batch_v1 import Job  # noqa: PLC0415

        try:
            if kind in self._forbidden:
                raise PermissionError(kind)
            obj = self._client.get(ReplicaSet if kind == "ReplicaSet" else Job, name, namespace=namespace)
        except Exception as exc:
            if not _is_api_failure(exc):
                raise
            if getattr(getattr(exc, "status", None), "code", None) == 403:
                self._forbidden.add(kind)
            deployment = deployment_by_hash(name, labels) if kind == "ReplicaSet" else None
            if deployment:
                self.owner_fallbacks += 1
                return f"Deployment/{deployment}"
            return None
        owner = _controller(obj.metadata.ownerReferences)
        return f"{owner[0]}/{owner[1]}" if owner else None

    def status(self) -> dict:
        return {"source": self.description, "healthy": self.healthy, "pods": len(self._pods),
                "ips": len(self.by_ip), "lists": self.lists, "watch_events": self.watch_events,
                "failures": self.failures, "owner_fallbacks": self.owner_fallbacks, "last_error": self.last_error}

    def describe(self) -> str:
        if self.healthy is False:
            return f"API server: unavailable for now ({self.last_error}), retrying"
        return f"API server: {self.description}"


def _is_api_failure(exc: BaseException) -> bool:
    """A failure of the API server or the path to it (not a bug of ours)."""
    import httpx2  # noqa: PLC0415
    import msgspec  # noqa: PLC0415
    from lightkube import ApiError  # noqa: PLC0415
    from lightkube.core.exceptions import ConfigError as LightkubeConfigError  # noqa: PLC0415

    # msgspec.ValidationError: an object not in the shape the API documents (a proxy's error page, a
    # server of another version): the server's failure, said and retried like one
    return isinstance(exc, (httpx2.HTTPError, httpx2.StreamError, ApiError, LightkubeConfigError, OSError,
                            msgspec.ValidationError, msgspec.DecodeError))


class ApiPeerAttributor:
    """netagent.kubernetes.source / destination from the cluster's pods: names peers on other
    nodes, and adds `workload` to peers the node's runtime named. Runs after PeerAttributor;
    where the runtime named a different pod for the IP (this node's view is fresher), that stays."""

    __name__ = "ApiPeerAttributor"

    def __init__(self, cluster: ClusterPods, failures):
        self.cluster = cluster
        self.failures = failures
        # one {source, destination} object per pair of peers, shared by the events between them (as
        # pod_fields shares a pod's): no allocation per event. Valid for one index (ids of its dicts).
        self._pairs: dict[tuple[int, int], dict] = {}
        self._index = None

    def process(self, events: list[dict]) -> list[dict]:
        peers = self.cluster.peers()
        unavailable = self.cluster.healthy is False
        if not peers and not unavailable:
            return events
        if peers is not self._index or len(self._pairs) > MAX_PAIRS:
            self._index, self._pairs = peers, {}
        pairs = self._pairs
        lookup = peers.get
        missed = 0
        for event in events:
            src = event.get("source")
            dst = event.get("destination")
            src_ip = src.get("ip") if src else None
            dst_ip = dst.get("ip") if dst else None
            if src_ip is None and dst_ip is None:
                continue
            src_peer = lookup(src_ip) if src_ip else None
            dst_peer = lookup(dst_ip) if dst_ip else None
            body = event.get("netagent")
            if body is None:
                continue
            named = body.get("kubernetes")
            if src_peer is None and dst_peer is None:
                if unavailable and (named is None or (src_ip and "source" not in named)
                                    or (dst_ip and "destination" not in named)):
                    missed += 1  # may have been a pod: we cannot tell while the server is away
                continue
            if named is None:  # the common case: the runtime named neither side
                key = (id(src_peer), id(dst_peer))
                pair = pairs.get(key)
                if pair is None:
                    pair = pairs[key] = {side: peer for side, peer in (("source", src_peer),
                                                                      ("destination", dst_peer)) if peer is not None}
                body["kubernetes"] = pair
                if unavailable and ((src_ip and src_peer is None) or (dst_ip and dst_peer is None)):
                    missed += 1
                continue
            gap = False
            for side, ip, peer in (("source", src_ip, src_peer), ("destination", dst_ip, dst_peer)):
                local = named.get(side)
                if peer is None:
                    gap = gap or (ip is not None and local is None)
                elif local is None or (local["namespace"] == peer["namespace"] and local["pod"] == peer["pod"]):
                    # the same pod with its workload, or a pod of another node; in a new object:
                    # the runtime's is shared by the events between the same two pods (processors.Peer)
                    named = body["kubernetes"] = {**named, side: peer}
            if unavailable and gap:
                missed += 1
        if missed:
            self.failures.by_cause["apiserver_unavailable"] = self.failures.by_cause.get("apiserver_unavailable", 0) \
                + missed
        return events

    def __call__(self, event: dict) -> dict:
        return self.process([event])[0]


def apiserver_report(cfg: dict) -> dict:
    """For `netagent doctor`: is the API server used, and does it answer a pod list."""
    setting = cfg.get("apiserver", "")
    if not setting:
        return {"enabled": False, "available": None,
                "detail": "[kubernetes] apiserver not set: peers are named only when they run on this node, "
                          "without workload"}
    try:
        config, description = connection(setting)
    except ConfigError as exc:
        return {"enabled": True, "available": False, "detail": str(exc)}
    cluster = ClusterPods(config, description, grace=0.0)
    try:
        from lightkube import ALL_NS  # noqa: PLC0415
        from lightkube.resources.core_v1 import Pod  # noqa: PLC0415

        client = cluster._new_client()
        try:
            next(iter(client.list(Pod, namespace=ALL_NS, chunk_size=1)), None)
        finally:
            client.close()
    except Exception as exc:
        if not _is_api_failure(exc):
            raise
        return {"enabled": True, "available": False, "detail": f"{description}: {_one_line(exc)}"}
    return {"enabled": True, "available": True, "detail": f"{description}: pods readable"}
