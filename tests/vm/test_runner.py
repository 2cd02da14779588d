"""packaging/vm/run itself: exit status, stdin, errors, and what the guest offers."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from vm.guest_run import RUNNER, available_kernels, unavailable_reason

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]


def run(*args, stdin=None, timeout=600):
    return subprocess.run([RUNNER, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_unknown_kernel_is_one_line_listing_the_available_ones_exit_2():
    r = run("--kernel", "5.4", "--", "true")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "5.4" in lines[0] and "Traceback" not in r.stderr
    for series in available_kernels():
        assert series in lines[0]


def test_missing_command_is_a_usage_error_exit_2():
    r = run("--kernel", "6.1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


GUEST_SCRIPT = r"""
set -eu
echo "from stdin: $(uname -r)"
echo "modules before: $(grep -c '^nf_conntrack ' /proc/modules || true)"
grep -E ' /sys/kernel/tracing tracefs | /sys/fs/bpf bpf | /sys/kernel/debug debugfs ' /proc/mounts | cut -d' ' -f2,3
ip netns add smoke-a
ip netns add smoke-b
ip link add va netns smoke-a type veth peer name vb netns smoke-b
ip -n smoke-a addr add 10.201.0.1/24 dev va
ip -n smoke-b addr add 10.201.0.2/24 dev vb
ip -n smoke-a link set va up
ip -n smoke-b link set vb up
ip netns exec smoke-a ping -c 1 -W 10 10.201.0.2 >/dev/null && echo "veth ping: ok"
ip netns exec smoke-a iptables -A OUTPUT -p udp --dport 9 -j DROP && echo "iptables: ok"
modprobe nf_conntrack
echo "modules after: $(grep -c '^nf_conntrack ' /proc/modules)"
echo "conntrack_max: $(cat /proc/sys/net/netfilter/nf_conntrack_max)"
echo "headers: $(readlink -f /lib/modules/$(uname -r)/build)"
echo "time scale: $NETAGENT_TIME_SCALE"
touch /tmp/netagent-vm-smoke-$$ && echo "tmp: writable"
echo "checkout: $(cat @CHECKOUT@/marker) in $(pwd)"
echo "to stderr" >&2
exit 42
"""


@pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))
def test_guest_runs_a_script_from_stdin_with_netns_veth_iptables_and_conntrack_module():
    release = available_kernels()["6.1"]
    # The runner from a checkout below /var/tmp, which virtme-ng covers with an empty
    # tmpfs in the guest (a fresh clone there once ran nothing): a copy of packaging/vm
    # (runner and guest entry), run from that copy's root.
    checkout = Path(tempfile.mkdtemp(prefix="netagent-vm-checkout-", dir="/var/tmp"))
    try:
        shutil.copytree(Path(RUNNER).parent, checkout / "packaging" / "vm")
        (checkout / "marker").write_text("the host's copy\n")
        vng_dir = str(Path(RUNNER).parents[2] / ".venv" / "bin")  # the copy has no .venv
        r = subprocess.run([str(checkout / "packaging" / "vm" / "run"), "--kernel", "6.1", "--", "bash", "-s"],
                           input=GUEST_SCRIPT.replace("@CHECKOUT@", str(checkout)), capture_output=True,
                           text=True, timeout=600, cwd=checkout,
                           env={**os.environ, "PATH": f"{vng_dir}:{os.environ['PATH']}"})
    finally:
        shutil.rmtree(checkout)
    out = r.stdout.splitlines()
    assert r.returncode == 42, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert f"from stdin: {release}" in out
    assert f"kernel {release}" in r.stderr and ("accelerator tcg" in r.stderr or "accelerator kvm" in r.stderr)
    assert "to stderr" in r.stderr.splitlines()
    assert {"/sys/kernel/tracing tracefs", "/sys/fs/bpf bpf", "/sys/kernel/debug debugfs"} <= set(out)
    assert "veth ping: ok" in out and "iptables: ok" in out
    # nf_conntrack is a module on Debian's kernels, loaded only when asked.
    assert "modules before: 0" in out and "modules after: 1" in out
    assert any(line.startswith("conntrack_max: ") and int(line.split()[-1]) > 0 for line in out)
    assert f"headers: /usr/src/linux-headers-{release}" in out
    assert float(next(line for line in out if line.startswith("time scale:")).split()[-1]) >= 1
    assert "tmp: writable" in out
    assert f"checkout: the host's copy in {checkout}" in out
    # The guest's /tmp is its own: nothing it writes reaches this machine.
    assert not [n for n in os.listdir("/tmp") if n.startswith("netagent-vm-smoke-")]


def test_node_without_its_hook_is_one_line_exit_69(tmp_path):
    # A copy of the runner in a directory without packaging/vm/node-boot.
    lone = tmp_path / "run"
    lone.write_bytes(open(RUNNER, "rb").read())
    lone.chmod(0o755)
    r = subprocess.run([str(lone), "--node", "--", "true"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 69
    assert len(r.stderr.strip().splitlines()) == 1 and "node-boot" in r.stderr, r.stderr
