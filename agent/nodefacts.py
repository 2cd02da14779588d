"""What this node offers the sensors: kernel, BTF, tracefs, headers, kprobes, fentry, lockdown.

Each fact is gathered by a small function so `netagent doctor` and the
sensors' own support checks agree on one answer.
"""

import gzip
import os
import platform

from netagent.bccloader import bcc_version
from netagent.btf import VMLINUX_BTF, module_btf_names
from netagent.errors import ProbeUnavailable
from netagent.kheaders import headers_status
from netagent.privileges import effective_capabilities
from netagent.tracefs import find_tracefs

FENTRY_TEST_FUNCTION = "tcp_v4_rcv"  # exists on every kernel with IPv4


def kprobes_unavailable_reason() -> str | None:
    """Why kprobes cannot be attached here, or None when they can."""
    tracefs = find_tracefs()
    if os.path.isdir("/sys/bus/event_source/devices/kprobe") or (
            tracefs and os.path.exists(os.path.join(tracefs, "kprobe_events"))):
        return perf_events_refused_reason()
    if _kernel_config_says("# CONFIG_KPROBES is not set"):
        return "kprobes unavailable (CONFIG_KPROBES off)"
    return "kprobes unavailable (no kprobe PMU and no kprobe_events in tracefs)"


def perf_event_paranoid() -> int | None:
    try:
        with open("/proc/sys/kernel/perf_event_paranoid") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def perf_events_refused_reason() -> str | None:
    """Why this process may not open the perf events every kprobe attach needs, or None.
    Debian's and Ubuntu's kernels carry a patch: kernel.perf_event_paranoid=3 (their default)
    lets only CAP_SYS_ADMIN call perf_event_open, where upstream accepts CAP_PERFMON."""
    from netagent.bpfsys import perf_event_open_errno  # noqa: PLC0415 (ctypes libc, only when kprobes exist)

    try:
        err = perf_event_open_errno()
    except ProbeUnavailable as exc:  # an architecture without a known syscall number
        return f"kprobes unusable: {exc}"
    if err == 0:
        return None
    paranoid = perf_event_paranoid()
    if paranoid is not None and paranoid > 2 and "CAP_SYS_ADMIN" not in effective_capabilities():
        return (f"kprobes refused: kernel.perf_event_paranoid={paranoid} lets only CAP_SYS_ADMIN open perf "
                f"events (a Debian/Ubuntu kernel patch), and this process lacks it")
    return f"kprobes refused: perf_event_open failed: {os.strerror(err)} (needs CAP_PERFMON)"


def _kernel_config_says(line: str) -> bool:
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{platform.release()}", open)):
        try:
            with opener(path, "rt") as f:
                return any(ln.strip() == line for ln in f)
        except OSError:
            continue
    return False


def kprobes_available() -> tuple[bool, str]:
    why = kprobes_unavailable_reason()
    return (True, "kprobe PMU or tracefs kprobe_events present") if why is None else (False, why)


def fentry_refused_reason(function: str, btf_id: int | None = None, owner: str = "vmlinux") -> str | None:
    """Why a fentry/fexit program (a BPF trampoline) cannot go on kernel function
    `function` here, or None when the kernel loads and attaches one for this process.

    Asked of the kernel with a do-nothing program loaded against the function's
    BTF id (vmlinux's or its module's) and closed at once: no compiler, no child
    process. Trampolines need no perf event, so Debian's perf_event_paranoid patch,
    which keeps kprobes from a process without CAP_SYS_ADMIN, does not apply."""
    from netagent.bpfsys import trampoline_refused  # noqa: PLC0415 (ctypes libc, only when asked)
    from netagent.btf import BtfError, kernel_btf  # noqa: PLC0415

    if not os.path.exists(VMLINUX_BTF):
        return "fentry needs BTF (CONFIG_DEBUG_INFO_BTF off)"
    if btf_id is None:  # not known to the caller: looked up (a parse of the kernel's BTF)
        try:
            btf_id, owner = kernel_btf().function_id(function)
        except BtfError:
            return f"fentry on {function}: no BTF prototype for it (inlined, or its module has no BTF)"
    try:
        refused = trampoline_refused(btf_id, owner)
    except ProbeUnavailable as exc:  # an architecture without a known syscall number
        return f"fentry unusable: {exc}"
    return f"fentry on {function}: {refused}" if refused else None


def fentry_available() -> tuple[bool, str]:
    why = fentry_refused_reason(FENTRY_TEST_FUNCTION)
    return (True, f"fentry on {FENTRY_TEST_FUNCTION} attached and removed") if why is None else (False, why)


def module_btf() -> dict:
    """Whether loaded modules carry their own (split) BTF: a module's types and
    function prototypes (nf_conntrack's on 6.12) are only there, not in vmlinux."""
    names = module_btf_names()
    if names is None or not os.path.exists(VMLINUX_BTF):
        return {"available": False, "modules": [], "detail": "no BTF at all (CONFIG_DEBUG_INFO_BTF off)"}
    if names:
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        return {"available": True, "modules": names, "detail": f"/sys/kernel/btf/<module> for {shown}"}
    return {"available": False, "modules": [],
            "detail": "no loaded module has BTF (everything built in, or CONFIG_DEBUG_INFO_BTF_MODULES off)"}


def lockdown_mode() -> str:
    try:
        with open("/sys/kernel/security/lockdown") as f:
            text = f.read()
        # "none [integrity] confidentiality": the bracketed one is active
        for word in text.split():
            if word.startswith("["):
                return word.strip("[]")
        return text.strip()
    except FileNotFoundError:
        return "not reported (no lockdown LSM or securityfs not mounted)"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def node_facts(probe_fentry: bool = True) -> dict:
    caps = sorted(effective_capabilities())
    headers = headers_status()
    kprobes, kprobes_why = kprobes_available()
    facts = {
        "kernel": platform.release(),
        "btf": os.path.exists(VMLINUX_BTF),
        "module_btf": module_btf(),
        "tracefs": find_tracefs(),
        "kernel_headers": {"status": headers.status, "path": headers.path, "version": headers.version,
                           "detail": headers.describe()},
        "kprobes": {"available": kprobes, "detail": kprobes_why},
        "lockdown": lockdown_mode(),
        "privileges": {"euid": os.geteuid(), "capabilities": caps},
        "bcc_version": bcc_version(),
    }
    if probe_fentry and os.geteuid() == 0:
        ok, why = fentry_available()
        facts["fentry"] = {"available": ok, "detail": why}
    else:
        facts["fentry"] = {"available": None, "detail": "not tested (needs root)"}
    return facts
