"""What the VM kernel matrix runs (make test-kernels): the one place to change it.

Inside each guest (packaging/vm/run --kernel SERIES) one pytest runs
`-m vm` over GUEST_PATHS. A test is in the matrix when it
- lives under tests/kernel/ (all of them are marked automatically), or
- is in a module listed in VM_MODULES, or
- carries `@pytest.mark.vm` (or `pytestmark = pytest.mark.vm`) itself and lives
  under one of GUEST_PATHS.
See docs/kernels.md.
"""

KERNELS = ("6.1", "6.12")

# Collected inside the guest. Keep it to directories that hold matrix tests:
# every module here is imported under TCG, where an import costs ~5x.
GUEST_PATHS = ("tests/kernel", "tests/netns")

# Namespace-lab modules whose tests load BPF sensors (drops, conntrack), so the
# kernel decides whether they pass.
VM_MODULES = (
    "tests/netns/test_drops.py",
    "tests/netns/test_daemon_drops.py",
    "tests/netns/test_conntrack_table_full.py",
    "tests/netns/test_conntrack_clash.py",
    "tests/netns/test_conntrack_lab.py",
)

# Tests left out on a kernel, each with the reason and who is fixing it. An
# entry is a pytest node id relative to the checkout. Empty when all pass.
DESELECT: dict[str, dict[str, str]] = {
    "6.1": {},
    "6.12": {},
}

# One pytest run per kernel, both VMs at once: bound for the whole guest run.
GUEST_TIMEOUT_SECONDS = 1500
