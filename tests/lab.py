"""Network labs for tests: namespaces, veths and commands run inside them.

Every namespace a test makes is named with a per-process prefix and removed
afterwards, and all traffic stays inside these namespaces or on loopback.
"""

import contextlib
import itertools
import os
import subprocess
import sys
import tempfile
import uuid

from timescale import scaled

_counter = itertools.count()
PREFIX = f"nat{os.getpid() % 10000}"


def sh(*args, check=True, capture=True, timeout=60, input=None):
    """Run a command (argv list or single string split on spaces).

    Output goes to anonymous files, not pipes, and the call waits for the
    command's exit, not for end-of-file on its output. Three fresh-clone runs
    failed with a 60 s timeout on `ip netns add` or `nsenter ... cat`: each time
    the command had exited 0 and its stderr pipe was closed, but its stdout
    pipe was still held open by some other process, so a pipe reader waited on.
    A file does not depend on who else holds a copy of it. If a command itself
    is still running at the timeout, the error says where it waits in the kernel.
    """
    if len(args) == 1 and isinstance(args[0], str):
        args = args[0].split()
    argv = list(args)
    with contextlib.ExitStack() as files:
        stdin = None
        if input is not None:
            stdin = files.enter_context(tempfile.TemporaryFile())
            stdin.write(input.encode())
            stdin.seek(0)
        out = err = None
        if capture:
            out, err = (files.enter_context(tempfile.TemporaryFile()) for _ in range(2))
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            where = _kernel_wait(proc.pid)
            proc.kill()
            proc.wait()
            raise CommandTimeout(argv, timeout, _read(out), _read(err), where) from None
        done = subprocess.CompletedProcess(argv, proc.returncode, _read(out), _read(err))
    if check:
        done.check_returncode()
    return done


class CommandTimeout(subprocess.TimeoutExpired):
    """TimeoutExpired whose message also says where the command was waiting."""

    def __init__(self, argv, timeout, output, stderr, where: str):
        super().__init__(argv, timeout, output=output, stderr=stderr)
        self.where = where

    def __str__(self):
        return f"{super().__str__()}; {self.where}"


def _read(f) -> str | None:
    if f is None:
        return None
    f.seek(0)
    return f.read().decode(errors="replace")


def _kernel_wait(pid: int) -> str:
    """State, wchan and kernel stack of a command that overran its timeout."""
    parts = []
    for name in ("status", "wchan", "stack"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                text = f.read()
        except OSError as exc:
            text = f"({exc.strerror})"
        if name == "status":
            text = " ".join(next((line for line in text.splitlines() if line.startswith("State:")), text).split())
        parts.append(f"{name}: {' | '.join(text.strip().splitlines())}")
    return f"still running at the timeout: {'; '.join(parts)}"


def unique_name(kind: str = "ns") -> str:
    """Short unique names: interface names are limited to 15 characters."""
    return f"{PREFIX[:6]}{kind[:2]}{next(_counter)}{uuid.uuid4().hex[:3]}"[:15]


class Namespace:
    def __init__(self, name: str | None = None):
        self.name = name or unique_name("ns")
        try:
            sh("ip", "netns", "add", self.name)
        except subprocess.SubprocessError:
            self.delete()  # a timed-out add may still have made it: leave no namespace behind
            raise
        self.path = f"/run/netns/{self.name}"
        self.inode = os.stat(self.path).st_ino
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *args, **kwargs):
        if len(args) == 1 and isinstance(args[0], str):
            args = tuple(args[0].split())
        return sh("ip", "netns", "exec", self.name, *args, **kwargs)

    def popen(self, *args, **kwargs):
        return subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)

    def sysctl(self, key: str, value) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def read_proc(self, rel: str) -> str:
        """Read /proc/net/... as seen from inside this namespace."""
        return self.run("cat", f"/proc/{rel}").stdout

    def delete(self):
        sh("ip", "netns", "del", self.name, check=False)


def veth_pair(a: Namespace, b: Namespace, a_addr: str, b_addr: str, mtu: int | None = None,
              a_if: str = "eth0", b_if: str = "eth0", a_addr6: str | None = None,
              b_addr6: str | None = None):
    """Connect two namespaces with a veth pair and address both ends."""
    tmp_a, tmp_b = unique_name("va"), unique_name("vb")
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    sh("ip", "link", "set", tmp_a, "netns", a.name)
    sh("ip", "link", "set", tmp_b, "netns", b.name)
    for ns, tmp, ifname, addr, addr6 in ((a, tmp_a, a_if, a_addr, a_addr6), (b, tmp_b, b_if, b_addr, b_addr6)):
        ns.run("ip", "link", "set", tmp, "name", ifname)
        if mtu:
            ns.run("ip", "link", "set", ifname, "mtu", str(mtu))
        if addr:
            ns.run("ip", "addr", "add", addr, "dev", ifname)
        if addr6:
            ns.run("ip", "-6", "addr", "add", addr6, "dev", ifname, "nodad")
        ns.run("ip", "link", "set", ifname, "up")


# One datagram for each of `count` new UDP flows. Every socket is bound before the
# first send and all stay open to the end, so each flow has a source port of its own.
# A sender that closed each socket after its send let the kernel hand a just-freed
# ephemeral port out again (about 28k ports: for 40 flows a ~3% chance per call that
# two "new" flows were one), and a test counting conntrack entries or table-full
# drops saw one fewer than it sent (drop 29 of 30 on 6.1, in a fresh-clone run).
NEW_UDP_FLOWS = r"""
import socket, sys
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    socks.append(s)
assert len({s.getsockname()[1] for s in socks}) == count
for s in socks:
    s.sendto(b"x", (dst, port))
"""


def run_py(ns: Namespace, code: str, *args, timeout: float = 60):
    """Python `code` inside `ns` with `args` as sys.argv[1:]; the timeout scaled to the machine."""
    return ns.run(sys.executable, "-c", code, *map(str, args), timeout=scaled(timeout))


def send_new_udp_flows(ns: Namespace, dst: str, port: int, count: int, timeout: float = 60):
    """`count` new UDP flows from `ns` to dst:port, one datagram each, each from its own
    source port. A send that fails fails the call (CalledProcessError with the reason)."""
    run_py(ns, NEW_UDP_FLOWS, dst, port, count, timeout=timeout)
