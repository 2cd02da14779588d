"""The core of the VM kernel matrix, in `make test`: tests/vm/matrix.py CORE
inside a VM on each Debian kernel (6.1, 6.12), both at once.

Each test waits for its kernel's guest run and fails with the guest's output
when any CORE test inside failed or did not run (skipped included: both kernels
have every feature CORE uses). The full matrix is tests/vm/kernel_matrix.py
(`make test-kernels`). docs/kernels.md.
"""

import tempfile

import pytest

from vm.guest_run import check_run, start_runs, stop_runs, unavailable_reason
from vm.matrix import CORE, CORE_TIMEOUT_SECONDS, DESELECT, KERNELS

pytestmark = [pytest.mark.root, pytest.mark.timeout(CORE_TIMEOUT_SECONDS + 120)]

REASON = unavailable_reason()


@pytest.fixture(scope="module")
def core_runs():
    if REASON:
        pytest.skip(REASON)
    with tempfile.TemporaryDirectory(prefix="netagent-core-") as out_dir:
        kernels, runs = start_runs(out_dir, selection=CORE)
        yield kernels, runs
        stop_runs(runs)


@pytest.mark.parametrize("series", KERNELS)
def test_core_kernel_tests_pass_on(series, core_runs):
    expected = [node_id for node_id in CORE if node_id not in DESELECT.get(series, {})]
    check_run(series, *core_runs, timeout=CORE_TIMEOUT_SECONDS, expect_passed=len(expected))
