"""Network labs for tests: namespaces, veths and commands run inside them.

Every namespace a test makes is named with a per-process prefix and removed
afterwards, and all traffic stays inside these namespaces or on loopback.
"""

import itertools
import os
import subprocess
import uuid

_counter = itertools.count()
PREFIX = f"nat{os.getpid() % 10000}"


def sh(*args, check=True, capture=True, timeout=60, input=None):
    """Run a command (argv list or single string split on spaces)."""
    if len(args) == 1 and isinstance(args[0], str):
        args = args[0].split()
    return subprocess.run(
        list(args), check=check, capture_output=capture, text=True, timeout=timeout, input=input
    )


def unique_name(kind: str = "ns") -> str:
    """Short unique names: interface names are limited to 15 characters."""
    return f"{PREFIX[:6]}{kind[:2]}{next(_counter)}{uuid.uuid4().hex[:3]}"[:15]


class Namespace:
    def __init__(self, name: str | None = None):
        self.name = name or unique_name("ns")
        sh("ip", "netns", "add", self.name)
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
