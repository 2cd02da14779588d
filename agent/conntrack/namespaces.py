"""Reading a namespace's conntrack counters from inside that namespace.

/proc/net is a link to /proc/self/net, and "self" is the thread-group
leader: a helper thread that entered another namespace with setns() would
still read the leader's namespace there. /proc/thread-self/net is the
calling thread's own view, so that is what we read inside run_in().

The sysctls under /proc/sys/net/netfilter are looked up in the calling
thread's namespace too. nf_conntrack_count is per namespace;
nf_conntrack_max is one global limit (writable only in the initial
namespace) that every namespace's count is checked against on its own.
"""

import os
import time
from dataclasses import dataclass

from netagent import netns as netns_mod
from netagent.conntrack.stats import StatTable, parse
from netagent.errors import InsufficientPrivilege, ProbeUnavailable
from netagent.netns import Netns

STAT_FILE = "net/stat/nf_conntrack"
SYSCTL_DIR = "/proc/sys/net/netfilter"


class ConntrackAbsent(ProbeUnavailable):
    """The namespace has no conntrack statistics (module not loaded)."""


class NamespaceGone(ProbeUnavailable):
    """The namespace disappeared (pod deleted, `ip netns del`)."""


@dataclass(frozen=True)
class Snapshot:
    netns: Netns
    monotonic: float  # CLOCK_MONOTONIC at the time of reading
    wall: float  # epoch seconds at the time of reading
    table: StatTable
    count: int | None  # nf_conntrack_count in this namespace
    max: int | None  # nf_conntrack_max (global; 0 = no limit)

    @property
    def entries(self) -> int | None:
        return self.count if self.count is not None else self.table.entries

    @property
    def fill_ratio(self) -> float | None:
        if not self.max or self.entries is None:
            return None
        return self.entries / self.max

    @property
    def active(self) -> bool:
        """Has conntrack tracked anything in this namespace? (a hook that
        never saw a packet leaves every counter at zero)"""
        return bool(self.entries) or any(any(row) for row in self.table.per_cpu)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _stat_path() -> str:
    base = "/proc/thread-self" if os.path.exists("/proc/thread-self") else "/proc/self"  # < 3.17
    return f"{base}/{STAT_FILE}"


def _read_here() -> tuple[str, int | None, int | None, float, float]:
    """Runs inside the target namespace (on run_in's helper thread)."""
    with open(_stat_path()) as f:
        text = f.read()
    mono, wall = time.monotonic(), time.time()
    count = _read_int(f"{SYSCTL_DIR}/nf_conntrack_count")
    limit = _read_int(f"{SYSCTL_DIR}/nf_conntrack_max")
    return text, count, limit, mono, wall


def read_snapshot(ns: Netns) -> Snapshot:
    """The namespace's counters now, or ConntrackAbsent / NamespaceGone /
    InsufficientPrivilege saying why not."""
    try:
        text, count, limit, mono, wall = netns_mod.run_in(ns, _read_here)
    except FileNotFoundError as exc:
        if not os.path.exists(ns.path):
            raise NamespaceGone(f"network namespace {ns.name} is gone") from None
        if STAT_FILE in str(exc.filename or ""):
            raise ConntrackAbsent(
                f"no /proc/net/stat/nf_conntrack in namespace {ns.name}: nf_conntrack is not loaded "
                "(no rule uses conntrack yet: `modprobe nf_conntrack` or add one) "
                "or the kernel lacks CONFIG_NF_CONNTRACK_PROCFS") from None
        raise NamespaceGone(f"network namespace {ns.name} is gone ({exc.strerror})") from None
    except PermissionError:
        raise InsufficientPrivilege(
            f"need root (or CAP_SYS_ADMIN) to enter network namespace {ns.name} and read its conntrack counters"
        ) from None
    except ProbeUnavailable:
        if not os.path.exists(ns.path):
            raise NamespaceGone(f"network namespace {ns.name} is gone") from None
        if os.geteuid() != 0:
            raise InsufficientPrivilege(
                f"need root (or CAP_SYS_ADMIN) to enter network namespace {ns.name}") from None
        raise
    return Snapshot(ns, mono, wall, parse(text), count, limit)


def candidate_namespaces() -> dict[int, Netns]:
    """Every network namespace on the node we can name, by inode."""
    return netns_mod.known_namespaces()
