"""The kernel-dependent tests, run inside a VM on each Debian kernel (make test-kernels).

All kernels boot at once when the module starts (one VM and one pytest per
kernel); each test here waits for its kernel's run and fails with the guest's
output when any test inside failed. What runs is chosen in tests/vm/matrix.py.
"""

import tempfile

import pytest

from vm import conftest as vm_conftest
from vm.guest_run import GuestRun, available_kernels, unavailable_reason
from vm.matrix import GUEST_TIMEOUT_SECONDS, KERNELS

pytestmark = [pytest.mark.root, pytest.mark.timeout(GUEST_TIMEOUT_SECONDS + 120)]

REASON = unavailable_reason()


@pytest.fixture(scope="module")
def guest_runs():
    """Start every available kernel's run now, so the VMs overlap."""
    if REASON:
        pytest.skip(REASON)
    kernels = available_kernels()
    with tempfile.TemporaryDirectory(prefix="netagent-matrix-") as out_dir:
        runs = {series: GuestRun(series, out_dir).start() for series in KERNELS if series in kernels}
        yield kernels, runs
        for run in runs.values():
            if run.code is None:
                run.wait(timeout=0)


@pytest.mark.parametrize("series", KERNELS)
def test_kernel_dependent_tests_pass_on(series, guest_runs):
    kernels, runs = guest_runs
    if series not in runs:
        pytest.skip(f"Debian kernel {series} not installed (make setup installs it)")
    run = runs[series].wait(timeout=GUEST_TIMEOUT_SECONDS)
    vm_conftest.SUMMARIES.append(run.summary(kernels[series]))
    output = run.output()
    assert run.counts, f"kernel {series}: the guest wrote no junit report (runner exit {run.code}):\n{output[-6000:]}"
    assert run.code == 0 and run.counts["failed"] == 0, (
        f"kernel {series}: {run.summary(kernels[series])}\n{output[-12000:]}")
    assert run.counts["passed"] > 0, f"kernel {series}: no test ran in the guest:\n{output[-4000:]}"
