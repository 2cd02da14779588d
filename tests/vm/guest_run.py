"""Run the matrix's pytest inside a VM per kernel, and read what it reported.

Used by tests/vm/kernel_matrix.py (`make test-kernels`, the full matrix) and
tests/vm/test_kernel_matrix.py (`make test`, matrix.CORE).
"""

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from vm.matrix import DESELECT, GUEST_PATHS, KERNELS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.path.join(REPO, "packaging", "vm", "run")


def unavailable_reason() -> str | None:
    """Why no VM can boot here (the feature missing), or None."""
    if os.environ.get("NETAGENT_VM"):
        return "already inside a VM of the lab (no nested VMs)"
    if os.geteuid() != 0:
        return "VMs need root (CI runs as root)"
    if not shutil.which("qemu-system-x86_64"):
        return "no qemu-system-x86_64 (make setup installs qemu-system-x86)"
    if not os.path.exists(os.path.join(REPO, ".venv", "bin", "vng")):
        return "no virtme-ng in .venv (make setup installs it)"
    if not available_kernels():
        return "no Debian VM kernel installed (make setup installs linux-image-6.1/6.12)"
    return None


def available_kernels() -> dict[str, str]:
    """series -> release, the same list the runner uses."""
    loader = importlib.machinery.SourceFileLoader("netagent_vm_run", RUNNER)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module.installed_kernels()


@dataclass
class GuestRun:
    """One `packaging/vm/run --kernel SERIES -- pytest ...` in the background."""
    series: str
    out_dir: str
    proc: subprocess.Popen = None
    started: float = 0.0
    elapsed: float | None = None
    code: int | None = None
    counts: dict = field(default_factory=dict)
    # node ids to run instead of every matrix test under GUEST_PATHS (e.g. matrix.CORE)
    selection: tuple[str, ...] = ()

    @property
    def junit(self) -> str:
        return os.path.join(self.out_dir, f"junit-{self.series}.xml")

    @property
    def log(self) -> str:
        return os.path.join(self.out_dir, f"guest-{self.series}.log")

    def start(self, cpus: int = 2) -> "GuestRun":
        pytest_args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "vm", "-v", "-rfEs", "--durations=10",
                       "-o", "console_output_style=classic", f"--junitxml={self.junit}",
                       # BCC's str-not-bytes warnings would fill the output a failure shows
                       "-W", "ignore::DeprecationWarning",
                       *(self.selection or GUEST_PATHS)]
        for node_id in DESELECT.get(self.series, {}):
            pytest_args.append(f"--deselect={node_id}")
        cmd = [RUNNER, "--kernel", self.series, "--cpus", str(cpus), "--share", self.out_dir, "--", *pytest_args]
        self.started = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()
        return self

    def _reap(self):
        self.code = self.proc.wait()
        self.elapsed = time.monotonic() - self.started

    def wait(self, timeout: float) -> "GuestRun":
        """Until the run ends, at most `timeout` seconds after it started."""
        self._reaper.join(max(0.0, self.started + timeout - time.monotonic()))
        if self._reaper.is_alive():
            os.killpg(self.proc.pid, 9)  # the runner, vng and qemu: one session of ours
            self._reaper.join()
            with open(self.log, "a") as log:
                log.write(f"\n[matrix] killed after {timeout:.0f} s\n")
        self.counts = junit_counts(self.junit)
        return self

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            return f.read()

    def summary(self, release: str) -> str:
        c = self.counts
        if not c:
            return f"{self.series} ({release}): no junit report, runner exit {self.code}, {self.elapsed:.0f} s"
        return (f"{self.series} ({release}): {c['passed']} passed, {c['failed']} failed, "
                f"{c['skipped']} skipped in {self.elapsed:.0f} s (guest pytest exit {self.code})")


def start_runs(out_dir: str, selection: tuple[str, ...] = (),
               series: tuple[str, ...] = KERNELS) -> tuple[dict[str, str], dict[str, GuestRun]]:
    """(series -> release, series -> started run): each installed kernel of `series` at once, so the VMs overlap."""
    kernels = available_kernels()
    return kernels, {s: GuestRun(s, out_dir, selection=selection).start() for s in series if s in kernels}


def stop_runs(runs: dict[str, GuestRun]) -> None:
    for run in runs.values():
        if run.code is None:
            run.wait(timeout=0)


def check_run(series: str, kernels: dict[str, str], runs: dict[str, GuestRun], timeout: float,
              expect_passed: int | None = None) -> None:
    """Wait for one kernel's run; fail with the guest's output unless all passed
    (and, with expect_passed, exactly that many: a skip is a failure there)."""
    import pytest

    import runsummary

    if series not in runs:
        pytest.skip(f"Debian kernel {series} not installed (make setup installs it)")
    run = runs[series].wait(timeout=timeout)
    summary = run.summary(kernels[series])
    runsummary.note("VM kernel matrix", summary)
    output = run.output()
    assert run.counts, f"kernel {series}: the guest wrote no junit report (runner exit {run.code}):\n{output[-6000:]}"
    assert run.code == 0 and run.counts["failed"] == 0, f"kernel {series}: {summary}\n{output[-12000:]}"
    assert run.counts["passed"] > 0, f"kernel {series}: no test ran in the guest:\n{output[-4000:]}"
    if expect_passed is not None:
        assert run.counts["passed"] == expect_passed, (
            f"kernel {series}: {summary}, expected {expect_passed} passed; skips: {run.counts['skips']}\n"
            f"{output[-4000:]}")


def junit_counts(path: str) -> dict:
    """passed/failed/skipped from pytest's junit xml; {} when there is none."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    return {"passed": total - failures - errors - skipped, "failed": failures + errors, "skipped": skipped,
            "skips": [(case.get("classname", "") + "::" + case.get("name", ""), s.get("message", ""))
                      for case in suite.iter("testcase") for s in case.findall("skipped")]}
