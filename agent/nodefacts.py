"""What this node offers the sensors: kernel, BTF, tracefs, headers, kprobes, fentry, lockdown.

Each fact is gathered by a small function so `netagent doctor` and the
sensors' own support checks agree on one answer.
"""

import os
import platform

from netagent.bccloader import _captured_stderr, bcc_version, import_bcc
from netagent.btf import VMLINUX_BTF
from netagent.errors import BccMissing
from netagent.kheaders import headers_status
from netagent.privileges import effective_capabilities
from netagent.tracefs import find_tracefs

FENTRY_TEST_FUNCTION = "tcp_v4_rcv"  # exists on every kernel with IPv4


def kprobes_available() -> tuple[bool, str]:
    if os.path.isdir("/sys/bus/event_source/devices/kprobe"):
        return True, "kprobe PMU present"
    return False, "no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel built without CONFIG_KPROBES"


def fentry_available() -> tuple[bool, str]:
    """Load and attach a do-nothing fentry program, then remove it."""
    if not os.path.exists(VMLINUX_BTF):
        return False, "needs BTF"
    try:
        bcc = import_bcc()
    except BccMissing:
        return False, "BCC missing"
    if not bcc.BPF.support_kfunc():
        return False, "BCC/kernel report no fentry support"
    with _captured_stderr() as err:
        try:
            b = bcc.BPF(text=f"KFUNC_PROBE({FENTRY_TEST_FUNCTION}) {{ return 0; }}")
        except Exception as exc:
            kernel_said = next((ln for ln in err.read().splitlines() if "bpf:" in ln), str(exc))
            return False, f"refused by the kernel ({kernel_said.strip()})"
    b.cleanup()
    return True, f"fentry on {FENTRY_TEST_FUNCTION} attached and removed"


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
