"""Reason families pick their members from the kernel's own reason names (tracefs formats of 3 kernels)."""

import pathlib

import pytest

from netagent.findings import reasons
from netagent.tracefs import parse_format

FIXTURES = pathlib.Path(__file__).parent.parent / "fixtures" / "tracefs"


def kernel_reason_names(version: str) -> list[str]:
    fmt = parse_format((FIXTURES / f"kfree_skb-{version}.format").read_text(), "skb", "kfree_skb")
    return list(fmt.symbolic["reason"].values())


@pytest.mark.parametrize("version", ["6.1", "6.18"])  # 5.15's tracepoint has no reason
def test_cpu_starvation_reasons_of_each_kernel(version):
    names = kernel_reason_names(version)
    chosen = reasons.CPU_STARVATION.among(names)
    assert "SOCKET_RCVBUFF" in chosen and "SOCKET_BACKLOG" in chosen
    for never in ("NO_SOCKET", "NETFILTER_DROP", "TCP_CSUM", "NOT_SPECIFIED", "OTHERHOST"):
        assert never not in chosen
    # every chosen name is one this kernel has: no name of ours is invented
    assert set(chosen) <= set(names)


def test_newer_kernels_add_members_without_a_table():
    old, new = (set(reasons.CPU_STARVATION.among(kernel_reason_names(v))) for v in ("6.1", "6.18"))
    assert {"CPU_BACKLOG", "QDISC_DROP", "FULL_RING"} <= old
    # reasons 6.1 did not have join by their names
    assert {"QDISC_CONGESTED", "QDISC_OVERLIMIT", "FQ_FLOW_LIMIT", "CAKE_FLOOD", "TCP_LISTEN_OVERFLOW"} <= new - old
    assert "FQ_HORIZON_LIMIT" not in new  # a timestamp too far ahead is not a slow CPU


def test_membership_is_by_name():
    assert "CPU_BACKLOG" in reasons.CPU_STARVATION
    assert "NO_SOCKET" not in reasons.CPU_STARVATION
    assert None not in reasons.CPU_STARVATION and 2 not in reasons.CPU_STARVATION
    assert "PKT_TOO_BIG" in reasons.MTU and "FRAG_REASM_TIMEOUT" in reasons.MTU
