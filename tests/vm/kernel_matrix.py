"""The kernel-dependent tests, run inside a VM on each Debian kernel (make test-kernels).

All kernels boot at once when the module starts (one VM and one pytest per
kernel); each test here waits for its kernel's run and fails with the guest's
output when any test inside failed. What runs is chosen in tests/vm/matrix.py.
`make test` runs only its CORE selection (tests/vm/test_kernel_matrix.py).
"""

import tempfile

import pytest

from vm.guest_run import check_run, start_runs, stop_runs, unavailable_reason
from vm.matrix import GUEST_TIMEOUT_SECONDS, KERNELS

pytestmark = [pytest.mark.root, pytest.mark.timeout(GUEST_TIMEOUT_SECONDS + 120)]

REASON = unavailable_reason()


@pytest.fixture(scope="module")
def guest_runs(request):
    if REASON:
        pytest.skip(REASON)
    # only the kernels whose test was selected boot (`-k "not 6.12"` runs 6.1 alone)
    selected = {item.callspec.params["series"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")}
    with tempfile.TemporaryDirectory(prefix="netagent-matrix-") as out_dir:
        kernels, runs = start_runs(out_dir, series=tuple(s for s in KERNELS if s in selected))
        yield kernels, runs
        stop_runs(runs)


@pytest.mark.parametrize("series", KERNELS)
def test_kernel_dependent_tests_pass_on(series, guest_runs):
    check_run(series, *guest_runs, timeout=GUEST_TIMEOUT_SECONDS)
