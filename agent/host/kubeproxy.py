"""Which mode kube-proxy runs in on this node, and how big its rule set is.

kube-proxy programs the host namespace, so this is a node-level fact:
  ipvs      a kube-ipvs0 dummy interface exists (kube-proxy creates it)
  nftables  an nftables table named kube-proxy exists (mode added in 1.29)
  iptables  the nat table has a KUBE-SERVICES chain
  none      none of these: not a Kubernetes node, or a CNI replaces kube-proxy
The rule count is what the field guides look at: iptables mode walks
KUBE-SERVICES linearly for every new connection.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

_TIMEOUT = 10.0


def _run(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def count_kube_services(iptables_save: str) -> int:
    """Rules appended to KUBE-SERVICES in `iptables-save -t nat` output."""
    return sum(1 for line in iptables_save.splitlines() if line.startswith("-A KUBE-SERVICES "))


def ipvs_available(release: str | None = None) -> bool:
    """ip_vs loaded (/proc/net/ip_vs) or installed as a module or built in."""
    if os.path.exists("/proc/net/ip_vs"):
        return True
    release = release or platform.release()
    for name in ("modules.builtin", "modules.dep"):
        try:
            with open(f"/lib/modules/{release}/{name}") as f:
                if any("/ip_vs.ko" in line for line in f):
                    return True
        except OSError:
            continue
    return False


def detect(interface_names: list[str] | None = None) -> dict:
    """{"mode", "kube_services_rules", "ipvs_available", "nftables_available", "source"} for this node."""
    names = set(interface_names or [])
    info: dict = {"mode": "none", "kube_services_rules": 0, "ipvs_available": ipvs_available(),
                  "nftables_available": shutil.which("nft") is not None}
    if "kube-ipvs0" in names:
        info["mode"] = "ipvs"
        info["source"] = "kube-ipvs0 interface"
        return info
    tables = _run(["nft", "list", "tables"]) or ""
    if any(line.split()[-1:] == ["kube-proxy"] for line in tables.splitlines()):
        info["mode"] = "nftables"
        info["source"] = "nftables table kube-proxy"
        return info
    # iptables-save shows whichever backend the distribution selected; the
    # legacy one is asked too because kube-proxy may use the other backend.
    for tool in ("iptables-save", "iptables-legacy-save", "iptables-nft-save"):
        text = _run([tool, "-t", "nat"])
        if text and ":KUBE-SERVICES" in text:
            info["mode"] = "iptables"
            info["kube_services_rules"] = count_kube_services(text)
            info["source"] = tool
            return info
    return info
