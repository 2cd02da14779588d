"""The benchmarks refuse bad arguments in one line, exit 2, before any kernel, VM or pipeline work."""

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")


@pytest.mark.parametrize("script, args, says", [
    ("drop_cost_bench.py", ["--paths", "fentry"], "--paths 'fentry': choose all or from bpftrace, empty, tp_btf"),
    ("drop_cost_bench.py", ["--paths", ","], "--paths ',': choose"),
    ("vm_drop_cost_bench.py", ["--kernels", "5.4"], "--kernels: choose from 6.1, 6.12"),
])
def test_bad_arguments_are_one_line_and_exit_2(script, args, says):
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and says in proc.stderr
    assert proc.stdout == ""


def test_vm_bench_wants_at_least_ten_rounds():
    env = dict(os.environ, BENCH_ROUNDS="3")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "vm_drop_cost_bench.py")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "BENCH_ROUNDS=3: at least 10 rounds" in proc.stderr


@pytest.mark.parametrize("script, args, env, says", [
    ("pipeline_bench.py", ["--rounds", "5"], {}, "pipeline_bench: --rounds 5: at least 10 rounds"),
    ("mtu_bench.py", [], {"BENCH_ROUNDS": "3"}, "mtu_bench: BENCH_ROUNDS=3: at least 10 rounds"),
])
def test_benches_want_at_least_ten_rounds(script, args, env, says):
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == says + "\n" and proc.stdout == ""
