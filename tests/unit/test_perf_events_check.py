"""Kprobes need perf_event_open: whether this process may open it, and why not, in one line.

Debian's and Ubuntu's kernels refuse perf_event_open to anything but
CAP_SYS_ADMIN at their default kernel.perf_event_paranoid=3 (measured in the
6.1 VM: a kprobe attach with CAP_BPF + CAP_PERFMON fails there and succeeds
after perf_event_paranoid=2). doctor and the conntrack sensor say so instead of
BCC's "not traceable (either non-existing, inlined, or marked as notrace)".
"""

import os
import subprocess
import sys

import pytest

from netagent import bpfsys, nodefacts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASK = "from netagent.nodefacts import perf_events_refused_reason as r; print(r())"


def run_with_bounding_set(caps: str) -> str:
    # uid 0 keeps the checkout readable; only the capabilities change
    r = subprocess.run(["setpriv", "--inh-caps=-all", f"--bounding-set=-all,{caps}", sys.executable, "-c", ASK],
                       capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.root
def test_root_may_open_perf_events():
    if os.geteuid() != 0:
        pytest.fail("needs root (CI runs as root)")
    assert bpfsys.perf_event_open_errno() == 0
    assert nodefacts.perf_events_refused_reason() is None


@pytest.mark.root
def test_without_perfmon_the_refusal_names_the_capability():
    if os.geteuid() != 0:
        pytest.fail("needs root (CI runs as root)")
    paranoid = nodefacts.perf_event_paranoid()
    out = run_with_bounding_set("+bpf,+net_admin,+dac_override")
    if paranoid is not None and paranoid > 2:
        assert "perf_event_paranoid" in out and "CAP_SYS_ADMIN" in out, out
    else:
        assert out.startswith("kprobes refused: perf_event_open failed") and "CAP_PERFMON" in out, out
    # with CAP_PERFMON the same process may, unless the Debian patch's level is set
    with_perfmon = run_with_bounding_set("+bpf,+perfmon,+net_admin,+dac_override")
    assert (with_perfmon == "None") == (paranoid is None or paranoid <= 2), with_perfmon


def test_debian_paranoid_level_without_sys_admin_is_named(monkeypatch):
    monkeypatch.setattr(bpfsys, "perf_event_open_errno", lambda: 13)
    monkeypatch.setattr(nodefacts, "perf_event_paranoid", lambda: 3)
    monkeypatch.setattr(nodefacts, "effective_capabilities", lambda: {"CAP_BPF", "CAP_PERFMON"})
    reason = nodefacts.perf_events_refused_reason()
    assert reason == ("kprobes refused: kernel.perf_event_paranoid=3 lets only CAP_SYS_ADMIN open perf events "
                      "(a Debian/Ubuntu kernel patch), and this process lacks it")


def test_refusal_without_the_debian_level_names_perfmon(monkeypatch):
    monkeypatch.setattr(bpfsys, "perf_event_open_errno", lambda: 13)
    monkeypatch.setattr(nodefacts, "perf_event_paranoid", lambda: 2)
    assert nodefacts.perf_events_refused_reason() == (
        "kprobes refused: perf_event_open failed: Permission denied (needs CAP_PERFMON)")
