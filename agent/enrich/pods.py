"""The pods of this node, indexed by netns inode, IP and namespace/name, kept fresh.

A background thread asks the runtime (CRI) for the pods every
`refresh_interval` seconds, and sooner when a lookup misses on a namespace
it has not seen (at most once per `MISS_REFRESH_SPACING`, and once per
unknown inode, so a namespace that is no pod's does not keep asking).

Lookups never wait for the runtime: they read the last index (a dict swapped
whole by the refresher). A pod stays in the index for `grace` seconds after
the last listing that had it, so the events of its last interval, flushed
after it was deleted, still name it. The same rule covers a runtime that
stops answering: what it said last holds for the grace period, then the
pods expire and events go unnamed (counted as enrich failures).
"""

import threading
import time
from dataclasses import dataclass

from netagent.enrich.cri import RUNTIME_SOCKETS, CriClient, PodInfo, RuntimeUnavailable, detect_socket
from netagent.watchdog import WATCHDOG

DEFAULT_REFRESH = 10.0  # seconds between runtime listings (config: [kubernetes] refresh)
DEFAULT_GRACE = 30.0  # seconds a pod is still named after it was last listed ([kubernetes] grace)
MISS_REFRESH_SPACING = 1.0  # at most one miss-triggered refresh a second
MAX_CHECKED_MISSES = 4096  # bound on remembered non-pod namespaces
STOP_TIMEOUT = 10.0  # a refresh under way is a few CRI calls of cri.CALL_TIMEOUT each


class CriSource:
    """Pods from the CRI runtime; finds the socket at each try until it has one."""

    def __init__(self, configured_socket: str = ""):
        self.configured = configured_socket
        self.socket_path = detect_socket(configured_socket)
        self._client: CriClient | None = None

    @property
    def present(self) -> bool:
        if self.socket_path is None:
            self.socket_path = detect_socket(self.configured)
        return self.socket_path is not None

    def describe(self) -> str:
        if self.socket_path:
            return f"CRI at {self.socket_path}"
        return "no CRI socket (looked for " + ", ".join(RUNTIME_SOCKETS) + ")"

    def list_pods(self) -> list[PodInfo]:
        if not self.present:
            raise RuntimeUnavailable(self.describe())
        if self._client is None:
            self._client = CriClient(self.socket_path)
        return self._client.list_pods()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@dataclass
class _Entry:
    pod: PodInfo
    last_seen: float


_RUNNING: list["PodIndex"] = []  # started indexes, for pod_alive()


def pod_alive(key: str) -> bool:
    """Whether NAMESPACE/NAME is still a pod of this node (or still within its grace period).

    For label expiry in the Prometheus sink. True when no index runs or the
    runtime does not answer: we cannot tell, so series stay until idle."""
    for index in list(_RUNNING):
        if index.healthy:
            return key in index.by_name
    return True


class PodIndex:
    def __init__(self, source, refresh_interval: float = DEFAULT_REFRESH, grace: float = DEFAULT_GRACE,
                 clock=time.monotonic, log=None):
        self.source = source
        self.refresh_interval = refresh_interval
        self.grace = grace
        self.clock = clock
        self.log = log or (lambda message: None)
        self._entries: dict[str, _Entry] = {}  # sandbox id -> entry
        # read without a lock by lookups: each is replaced whole by _publish()
        self.by_netns: dict[int, PodInfo] = {}
        self.by_ip: dict[str, PodInfo] = {}
        self.by_name: dict[str, PodInfo] = {}
        self.generation = 0
        self.healthy: bool | None = None  # None until the first refresh
        self.last_error: str | None = None
        self.refreshes = 0
        self.refresh_failures = 0
        self.last_refresh: float | None = None
        self._refresh_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_miss_refresh = -1e9
        self._checked: set[int] = set()  # inodes a refresh after their miss did not find
        self._pending: set[int] = set()

    # -- lookups (dispatcher thread; never block) ----------------------------------
    def note_miss(self, inode: int) -> None:
        """An event named a namespace we do not know: ask for a refresh soon."""
        if inode in self._checked or inode in self._pending or self._thread is None:
            return
        self._pending.add(inode)
        self._wake.set()

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        return self.by_name.get(f"{namespace}/{name}")

    # -- refreshing ----------------------------------------------------------------
    def refresh(self) -> bool:
        """List the pods now; True if the runtime answered."""
        with self._refresh_lock:
            pending = set(self._pending)
            now = self.clock()
            if not getattr(self.source, "present", True):
                # no runtime on this node (yet): not a failure, nothing to count; looked for again next time
                self.last_error = self.source.describe()
                self._publish(now)
                return False
            try:
                pods = self.source.list_pods()
            except RuntimeUnavailable as exc:
                self.refresh_failures += 1
                first = self.healthy is None and self.last_refresh is None  # Enricher.start() says that one
                if not first and (self.healthy is not False or exc.args[0] != self.last_error):
                    self.log(f"pod attribution: {exc}; pods listed before stay named for {self.grace:g}s")
                self.healthy, self.last_error = False, str(exc)
                self._publish(now)
                return False
            if self.healthy is False:
                self.log(f"pod attribution: runtime answers again ({len(pods)} pods)")
            self.healthy, self.last_error = True, None
            for pod in pods:
                self._entries[pod.sandbox_id] = _Entry(pod, now)
            self.refreshes += 1
            self.last_refresh = now
            self._publish(now)
            found = pending & self.by_netns.keys()
            if len(self._checked) > MAX_CHECKED_MISSES:
                self._checked.clear()
            self._checked |= pending - found
            self._pending -= pending
            return True

    def _publish(self, now: float) -> None:
        keep = self.refresh_interval + self.grace
        self._entries = {sid: e for sid, e in self._entries.items() if now - e.last_seen <= keep}
        by_netns, by_ip, by_name = {}, {}, {}
        # newest listing last, so a reused IP or inode names the pod that has it now
        for e in sorted(self._entries.values(), key=lambda e: e.last_seen):
            pod = e.pod
            if pod.netns_inode and not pod.host_network:
                by_netns[pod.netns_inode] = pod
            if not pod.host_network:
                for ip in pod.ips:
                    by_ip[ip] = pod
            by_name[pod.key] = pod
        self.by_netns, self.by_ip, self.by_name = by_netns, by_ip, by_name
        self.generation += 1  # answers derived from the index (processors.Attributor) are rebuilt

    def start(self) -> None:
        self.refresh()
        # a failure outside refresh() (a bug) restarts the loop, counted and said (heartbeat)
        self._thread = WATCHDOG.start("enrich-pods", self._run, self._stop)
        _RUNNING.append(self)

    def _run(self) -> None:
        next_periodic = self.clock() + self.refresh_interval
        while not self._stop.is_set():
            woke = self._wake.wait(max(0.0, next_periodic - self.clock()))
            if self._stop.is_set():
                return
            if woke:
                self._wake.clear()
                # a miss while the runtime is down waits for the periodic retry
                wait = self._last_miss_refresh + MISS_REFRESH_SPACING - self.clock()
                if self.healthy is False or (wait > 0 and self._stop.wait(wait)):
                    continue
                self._last_miss_refresh = self.clock()
            else:
                next_periodic = self.clock() + self.refresh_interval
            try:
                self.refresh()
            except Exception as exc:  # a bug here must not end attribution silently
                self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"
                self.log(f"pod attribution: refresh failed: {self.last_error}")

    def stop(self) -> None:
        if self in _RUNNING:
            _RUNNING.remove(self)
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)
        close = getattr(self.source, "close", None)
        if close:
            close()

    def status(self) -> dict:
        return {"source": self.source.describe() if hasattr(self.source, "describe") else str(self.source),
                "healthy": self.healthy, "pods": len(self.by_name), "refreshes": self.refreshes,
                "refresh_failures": self.refresh_failures, "last_error": self.last_error}

