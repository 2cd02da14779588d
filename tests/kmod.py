"""nf_conntrack in tests: loaded before the agent starts, or after it.

On the development kernel conntrack is built in; on Debian's 6.1 and 6.12
(the VM lab) it is a module that nothing loads until a rule needs it. Tests
that need it loaded say so with ensure_nf_conntrack(); the tests of the
"loaded after the agent started" case unload it first with
unload_nf_conntrack().
"""

import os
import subprocess
import time

from netagent.conntrack.module import LOADABLE, MODULE, STAT_PATH, built_in, module_state

SYS_MODULE = "/sys/module"


def is_module() -> bool:
    """nf_conntrack is a loadable module on this kernel (loaded or not)."""
    return module_state() == LOADABLE or os.path.isdir(f"{SYS_MODULE}/{MODULE}/sections") or (
        not built_in() and os.path.isdir(f"{SYS_MODULE}/{MODULE}"))


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def ensure_nf_conntrack(timeout: float = 30.0) -> None:
    """Load nf_conntrack if it is a module that is not loaded yet."""
    if os.path.exists(STAT_PATH):
        return
    if module_state() == LOADABLE:
        subprocess.run(["modprobe", MODULE], check=True, capture_output=True, text=True, timeout=timeout)
    assert wait_for(lambda: os.path.exists(STAT_PATH), timeout), f"{STAT_PATH} did not appear"


def _holders(name: str) -> list[str]:
    try:
        return os.listdir(f"{SYS_MODULE}/{name}/holders")
    except OSError:
        return []


def _unload(name: str) -> None:
    for holder in _holders(name):
        _unload(holder)
    subprocess.run(["modprobe", "-r", name], capture_output=True, text=True, timeout=60)


def unload_nf_conntrack(timeout: float = 60.0) -> None:
    """Unload nf_conntrack and every module that holds it (xt_conntrack, nf_nat,
    nft_ct, ...). Rules in namespaces being deleted keep references until the
    kernel's netns cleanup runs, so this retries until the timeout."""
    def gone():
        if os.path.isdir(f"{SYS_MODULE}/{MODULE}"):
            _unload(MODULE)
        return not os.path.isdir(f"{SYS_MODULE}/{MODULE}")

    if not wait_for(gone, timeout, step=0.5):
        refs = open(f"{SYS_MODULE}/{MODULE}/refcnt").read().strip()
        raise AssertionError(f"nf_conntrack could not be unloaded within {timeout:.0f}s "
                             f"(refcnt {refs}, holders {_holders(MODULE)})")
