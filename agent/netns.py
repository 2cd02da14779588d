"""Network namespaces: naming them the way users do, and working inside them.

A namespace is given as a name under /run/netns (what `ip netns add`
creates), a path to an nsfs file, or `pid:N` (the namespace of a process,
e.g. a pod's pause container). The kernel identifies it by the inode of
that nsfs file, which is what BPF programs see as net->ns.inum.
"""

import ctypes
import ctypes.util
import os
import socket
import threading
from dataclasses import dataclass

from netagent.errors import ProbeUnavailable, UsageError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


@dataclass(frozen=True)
class Netns:
    spec: str  # what the user typed ("" for the agent's own namespace)
    path: str
    inode: int
    name: str  # display name: ip-netns name, pid:N, or "host"

    def __str__(self):
        return self.name


def current() -> Netns:
    path = "/proc/self/ns/net"
    return Netns("", path, os.stat(path).st_ino, "host")


def resolve(spec: str | None) -> Netns:
    """Turn a --netns value into a Netns, or raise UsageError saying why not."""
    if not spec:
        return current()
    if spec.startswith("pid:"):
        pid = spec[4:]
        if not pid.isdigit():
            raise UsageError(f"--netns {spec!r}: pid:N needs a numeric pid")
        path = f"/proc/{pid}/ns/net"
        name = spec
    elif "/" in spec:
        path = spec
        name = spec
    else:
        path = os.path.join(NETNS_RUN_DIR, spec)
        name = spec
    try:
        st = os.stat(path)
    except FileNotFoundError:
        known = ", ".join(sorted(list_named())) or "none"
        raise UsageError(f"--netns {spec!r}: no such namespace ({path} missing; named namespaces: {known})") from None
    except PermissionError:
        raise UsageError(f"--netns {spec!r}: cannot read {path} (permission denied)") from None
    return Netns(spec, path, st.st_ino, name)


def list_named() -> list[str]:
    try:
        return [n for n in os.listdir(NETNS_RUN_DIR) if not n.startswith(".")]
    except OSError:
        return []


def known_namespaces() -> dict[int, Netns]:
    """Every namespace we can find, by inode: named ones first, then processes'."""
    found: dict[int, Netns] = {}
    host = current()
    found[host.inode] = host
    for name in list_named():
        try:
            ns = resolve(name)
        except UsageError:
            continue
        found.setdefault(ns.inode, ns)
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        path = f"/proc/{pid}/ns/net"
        try:
            inode = os.stat(path).st_ino
        except OSError:
            continue
        if inode not in found:
            found[inode] = Netns(f"pid:{pid}", path, inode, f"pid:{pid}")
    return found


def setns(path: str) -> None:
    """Move the calling thread into the namespace at `path`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:  # the namespace went away, or we may not open it
        raise ProbeUnavailable(f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise ProbeUnavailable(f"cannot enter network namespace {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in(ns: Netns, func, *args, **kwargs):
    """Run func inside namespace `ns` on a helper thread; return its result.

    setns() affects only the calling thread, so a throw-away thread keeps the
    caller (and every other thread of the agent) where it was.
    """
    if ns.inode == current().inode:
        return func(*args, **kwargs)
    result: dict = {}

    def target():
        try:
            setns(ns.path)
            result["value"] = func(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns.name}", daemon=True)
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def interface_names(ns: Netns) -> dict[int, str]:
    """ifindex -> name inside namespace `ns`."""
    return dict(run_in(ns, socket.if_nameindex))
