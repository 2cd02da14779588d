"""Overlay arithmetic and classification, without a kernel.

This kernel has only vxlan/veth/bridge modules, so ipip, gre, geneve and
wireguard records are built here the way netlink reports them.
"""

import pytest

from netagent import overlay
from netagent.overlay import Underlay, build_info, classify, expected_inner_mtu, recognise_cni, tunnel_overhead


@pytest.mark.parametrize(
    "kind,family,expected",
    [
        ("vxlan", "ipv4", 50),
        ("vxlan", "ipv6", 70),
        ("geneve", "ipv4", 50),
        ("geneve", "ipv6", 70),
        ("ipip", "ipv4", 20),
        ("sit", "ipv6", 20),  # sit's outer header is IPv4 whatever the caller says
        ("ip6tnl", "ipv4", 40),
        ("gre", "ipv4", 24),
        ("gre", "ipv6", 44),
        ("ip6gre", "ipv4", 44),
        ("gretap", "ipv4", 38),
        ("wireguard", "ipv4", 60),
        ("wireguard", "ipv6", 80),
    ],
)
def test_overhead_table(kind, family, expected):
    assert tunnel_overhead(kind, family) == expected


def test_non_tunnels_have_no_overhead():
    for kind in ("veth", "bridge", "physical", "loopback", "dummy"):
        assert tunnel_overhead(kind) is None
        assert expected_inner_mtu(1500, kind) is None


def test_geneve_options_and_gre_flags_add_bytes():
    assert tunnel_overhead("geneve", "ipv4", geneve_option_bytes=8) == 58
    with pytest.raises(ValueError):
        tunnel_overhead("geneve", geneve_option_bytes=3)
    # key + csum, in network and in host byte order
    assert tunnel_overhead("gre", "ipv4", gre_flags=0x8000 | 0x2000) == 32
    assert tunnel_overhead("gre", "ipv4", gre_flags=0x0080 | 0x0020) == 32
    assert tunnel_overhead("gre", "ipv4", gre_flags=0x8000 | 0x2000 | 0x1000) == 36


def test_expected_inner_mtu():
    assert expected_inner_mtu(1500, "vxlan", "ipv4") == 1450
    assert expected_inner_mtu(1500, "vxlan", "ipv6") == 1430
    assert expected_inner_mtu(9001, "vxlan") == 8951  # AWS jumbo frames
    assert expected_inner_mtu(1500, "wireguard", "ipv4") == 1440
    assert expected_inner_mtu(1480, "ipip") == 1460
    assert expected_inner_mtu(None, "vxlan") is None
    with pytest.raises(ValueError):
        tunnel_overhead("vxlan", "ipx")


@pytest.mark.parametrize(
    "name,cni,role",
    [
        ("flannel.1", "flannel", "overlay"),
        ("vxlan.calico", "calico", "overlay"),
        ("tunl0", "calico", "overlay"),
        ("cilium_vxlan", "cilium", "overlay"),
        ("cilium_geneve", "cilium", "overlay"),
        ("wireguard.cali", "calico", "overlay"),
        ("cni0", "bridge-cni", "bridge"),
        ("cali1a2b3c4d5e6", "calico", "pod-veth"),
        ("lxc0123abcd", "cilium", "pod-veth"),
        ("eth0", None, None),
        ("calico", None, None),
    ],
)
def test_cni_names(name, cni, role):
    assert recognise_cni(name) == (cni, role)


def _rec(**kw):
    base = {"index": 5, "name": "x", "mtu": 1500, "ifi_type": 1, "up": True, "kind": None, "data": {},
            "master": None, "link": None, "link_netnsid": None, "parent_dev": None}
    base.update(kw)
    return base


def test_classify():
    assert classify(_rec(name="lo", ifi_type=772)) == "loopback"
    assert classify(_rec(name="eth0", parent_dev="virtio2")) == "physical"
    assert classify(_rec(name="ens5")) == "physical"
    assert classify(_rec(kind="ifb")) == "other"
    assert classify(_rec(kind="ip6gretap")) == "gre"
    assert classify(_rec(kind="wireguard", ifi_type=65534)) == "wireguard"


def test_vxlan_without_dev_uses_underlay_and_flags_excess():
    rec = _rec(name="vxlan.calico", kind="vxlan",
               data={"IFLA_VXLAN_ID": 4096, "IFLA_VXLAN_PORT": 4789, "IFLA_VXLAN_LOCAL": "10.0.0.5"})
    params = overlay.tunnel_params(rec)
    assert params["link"] is None and params["local"] == "10.0.0.5" and params["vni"] == 4096
    under = Underlay(device="ens5", ifindex=2, mtu=1500, family="ipv4", found_by="local-address")
    info = build_info(rec, {2: _rec(index=2, name="ens5")}, under, "host")
    assert (info.type, info.cni, info.role) == ("vxlan", "calico", "overlay")
    assert info.overhead == 50 and info.expected_mtu == 1450 and info.mtu_exceeds is True
    d = info.as_dict()
    assert d["underlay"]["device"] == "ens5" and d["underlay"]["effective_mtu"] == 1500


def test_route_mtu_lowers_the_underlay():
    rec = _rec(name="tunl0", kind="ipip", mtu=1480,
               data={"IFLA_IPTUN_REMOTE": "0.0.0.0", "IFLA_IPTUN_LOCAL": "0.0.0.0", "IFLA_IPTUN_LINK": 0})
    params = overlay.tunnel_params(rec)
    assert params["remote"] is None and params["link"] is None
    under = Underlay(device="eth0", ifindex=2, mtu=1500, family="ipv4", found_by="default-route", route_mtu=1400)
    info = build_info(rec, {}, under)
    assert info.expected_mtu == 1380 and info.mtu_exceeds is True
    ok = build_info(_rec(name="tunl0", kind="ipip", mtu=1380), {}, under)
    assert ok.mtu_exceeds is False


def test_unknown_underlay_gives_no_verdict():
    rec = _rec(name="cilium_geneve", kind="geneve", data={"IFLA_GENEVE_COLLECT_METADATA": True})
    info = build_info(rec, {}, Underlay(None, None, None, "ipv4", "unknown"))
    assert info.collect_metadata and info.expected_mtu is None and info.mtu_exceeds is None
    assert any("underlay not found" in n for n in info.notes)
