"""Facts read from the kernel's BTF, remembered across restarts.

Parsing /sys/kernel/btf/vmlinux costs about a second and 30 MB in Python;
the daemon needs only a few dozen numbers from it (struct offsets, argument
positions, type ids). They are kept in the cache directory (bpfchild's
NETAGENT_CACHE_DIR) under a name derived from this kernel's identity and
its BTF file, so a restart on the same kernel parses nothing. Where the
directory is not writable, every start parses, as before.
"""

import hashlib
import json
import os
import platform
import threading

from netagent.btf import VMLINUX_BTF
from netagent.cachedir import cache_path

_lock = threading.Lock()
_facts: dict | None = None


def _path() -> str | None:
    try:
        st = os.stat(VMLINUX_BTF)
    except OSError:
        return None
    ident = f"{platform.release()}\0{platform.version()}\0{st.st_size}\0{st.st_mtime_ns}"
    directory = cache_path("btf")
    return os.path.join(directory, hashlib.sha256(ident.encode()).hexdigest()[:32] + ".json")


def fact(name: str, compute):
    """compute()'s JSON-able value for this kernel, computed once per kernel; its exceptions propagate."""
    global _facts
    with _lock:
        path = _path()
        if _facts is None:
            _facts = {}
            if path:
                try:
                    with open(path) as f:
                        _facts = json.load(f)
                except (OSError, ValueError):
                    pass
        if name in _facts:
            return _facts[name]
    value = compute()
    with _lock:
        _facts[name] = value
        if path:
            try:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                with open(path + ".tmp", "w") as f:
                    json.dump(_facts, f)
                os.replace(path + ".tmp", path)
            except OSError:
                pass
    return value
