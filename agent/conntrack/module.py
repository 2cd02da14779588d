"""Is nf_conntrack in the kernel, loaded, or a module that may still load?

On users' nodes nf_conntrack is a module that the first iptables/nftables
rule using conntrack (or kube-proxy) loads, often after the agent started.
The sensor then waits for it instead of giving up (see probes/conntrack.py).
"""

import os
import platform

STAT_PATH = "/proc/net/stat/nf_conntrack"
MODULE = "nf_conntrack"

LOADED = "loaded"  # in the kernel now (built in, or the module is loaded)
LOADABLE = "loadable"  # a module of this kernel that is not loaded yet
ABSENT = "absent"  # neither: this kernel has no conntrack


def module_state(release: str | None = None, sys_module: str = "/sys/module",
                 modules_dir: str = "/lib/modules", proc_modules: str = "/proc/modules") -> str:
    if os.path.exists(STAT_PATH) or os.path.isdir(os.path.join(sys_module, MODULE)):
        return LOADED
    if _module_file_exists(os.path.join(modules_dir, release or platform.release()), proc_modules):
        return LOADABLE
    return ABSENT


def _module_file_exists(tree: str, proc_modules: str) -> bool:
    """The module is listed in this kernel's modules.dep (what modprobe loads from).
    A modules tree we cannot see, on a kernel that loads modules, counts as listing it:
    systemd's ProtectKernelModules=yes shows the unit an empty /lib/modules, and a
    sensor that waits for a module that never comes costs nothing, while one that
    gives up misses conntrack for good."""
    try:
        with open(os.path.join(tree, "modules.dep")) as f:
            for line in f:
                path = line.split(":", 1)[0]
                if os.path.basename(path).split(".ko", 1)[0] == MODULE:
                    return True
    except OSError:
        return os.path.exists(proc_modules)  # no tree to read: loadable if the kernel loads modules
    return False


def built_in(release: str | None = None, modules_dir: str = "/lib/modules") -> bool:
    """nf_conntrack is compiled into this kernel (modules.builtin names it)."""
    try:
        with open(os.path.join(modules_dir, release or platform.release(), "modules.builtin")) as f:
            return any(os.path.basename(line.strip()).split(".ko", 1)[0] == MODULE for line in f)
    except OSError:
        return os.path.exists(STAT_PATH) and not os.path.isdir(f"/sys/module/{MODULE}/sections")
