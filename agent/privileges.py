"""Effective privileges: root, or the capabilities the sensors need."""

import os

from netagent.errors import InsufficientPrivilege

# Capability numbers from linux/capability.h (stable ABI).
CAPABILITIES = {
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


def effective_capabilities() -> set[str]:
    """Names of the capabilities in this process's effective set."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    mask = int(line.split()[1], 16)
                    return {name for name, bit in CAPABILITIES.items() if mask >> bit & 1}
    except OSError:
        pass
    return set()


def missing_for_bpf() -> list[str]:
    """Capabilities missing to load and attach tracing BPF programs."""
    caps = effective_capabilities()
    if "CAP_SYS_ADMIN" in caps:
        return []
    return [c for c in ("CAP_BPF", "CAP_PERFMON") if c not in caps]


def running_as() -> str:
    """Who this process is, as a refusal names it: "root" or "uid N"."""
    euid = os.geteuid()
    return "root" if euid == 0 else f"uid {euid}"


def refuse(missing: list[str], action: str) -> InsufficientPrivilege:
    """The one wording of every privilege refusal: what is missing, for what, and who we are
    (root without them happens in containers and under systemd's CapabilityBoundingSet)."""
    return InsufficientPrivilege(
        f"need root or {' + '.join(missing)} to {action} (running as {running_as()} without them)")


def require_bpf(action: str = "attach BPF programs") -> None:
    missing = missing_for_bpf()
    if missing:
        raise refuse(missing, action)


def require_caps(names: list[str], action: str) -> None:
    caps = effective_capabilities()
    if "CAP_SYS_ADMIN" in caps and os.geteuid() == 0:
        return
    missing = [n for n in names if n not in caps]
    if missing:
        raise refuse(missing, action)
