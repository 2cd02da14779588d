"""Overlay inventory: every interface of a namespace, and what its MTU should be.

For each interface we report its type (vxlan, geneve, ipip, gre, wireguard,
veth, bridge, physical, loopback, other), its MTU, and for tunnels the
underlay device that carries the encapsulated packets, the VNI/port, and
the inner MTU the tunnel can carry without fragmenting on the underlay:

    expected_mtu = underlay MTU - encapsulation overhead

A tunnel whose configured MTU is above that is the classic overlay MTU
mistake: the kernel fragments (or, with DF, drops) every full-size packet.

The underlay is found the way the kernel finds it when it transmits:
the `dev` the tunnel is bound to if there is one; otherwise the route to
the remote address; otherwise the interface owning the local address;
otherwise (collect-metadata devices such as cilium_vxlan) the default
route. Real CNIs (Calico, Cilium, many flannel set-ups) create VXLAN
without `dev`, so the route lookup is the common case, not a fallback.

Public API (stable; the MTU probe and `netagent check` use it):
    inventory(ns) -> list[InterfaceInfo]
    describe(ns, ifname) -> InterfaceInfo
    egress(ns, dst) -> InterfaceInfo        the device a packet to dst leaves by
    tunnel_overhead(kind, underlay_family, ...) -> int | None   (pure)
    expected_inner_mtu(underlay_mtu, kind, underlay_family, ...) -> int | None
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import asdict, dataclass, field

from netagent import netns as netns_mod
from netagent.errors import ProbeUnavailable, UsageError

# Interface types we report (the `type` field).
TUNNEL_TYPES = ("vxlan", "geneve", "ipip", "gre", "wireguard")

# Kernel link kinds (IFLA_INFO_KIND) -> our type. Kinds not listed are
# "other" (their raw kind is still reported as kind_raw).
_KIND_TO_TYPE = {
    "vxlan": "vxlan",
    "geneve": "geneve",
    "ipip": "ipip",
    "sit": "ipip",  # IPv6-in-IPv4: same 20-byte outer IPv4 header
    "ip6tnl": "ipip",  # IPv4/IPv6-in-IPv6: 40-byte outer IPv6 header
    "gre": "gre",
    "gretap": "gre",
    "ip6gre": "gre",
    "ip6gretap": "gre",
    "erspan": "gre",
    "ip6erspan": "gre",
    "wireguard": "wireguard",
    "veth": "veth",
    "bridge": "bridge",
}

# Encapsulation sizes in bytes. The inner Ethernet header counts for the
# L2 tunnels (VXLAN, Geneve, gretap) because the inner MTU excludes it
# while the underlay has to carry it.
_IPV4_HDR = 20
_IPV6_HDR = 40
_UDP_HDR = 8
_ETH_HDR = 14
_VXLAN_HDR = 8
_GENEVE_HDR = 8  # fixed part; options come on top
_GRE_BASE = 4
_GRE_OPTION = 4  # each of checksum, key, sequence adds 4 bytes
_WG_HDR = 32  # 16-byte data header + 16-byte Poly1305 tag

# GRE flag bits as the kernel reports them in IFLA_GRE_[IO]FLAGS
# (big-endian on the wire; pyroute2 may hand us either byte order).
_GRE_CSUM, _GRE_KEY, _GRE_SEQ = 0x8000, 0x2000, 0x1000

ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772

# CNI device names users recognise; (regex, cni, role).
_CNI_NAMES = [
    (re.compile(r"^flannel\.\d+$"), "flannel", "overlay"),
    (re.compile(r"^flannel-wg(-v6)?$"), "flannel", "overlay"),
    (re.compile(r"^vxlan\.calico$"), "calico", "overlay"),
    (re.compile(r"^vxlan-v6\.calico$"), "calico", "overlay"),
    (re.compile(r"^tunl0$"), "calico", "overlay"),  # Calico IPIP mode uses the fallback ipip device
    (re.compile(r"^wireguard\.cali$"), "calico", "overlay"),
    (re.compile(r"^wg-v6\.cali$"), "calico", "overlay"),
    (re.compile(r"^cali[0-9a-f]{6,}$"), "calico", "pod-veth"),
    (re.compile(r"^cilium_vxlan$"), "cilium", "overlay"),
    (re.compile(r"^cilium_geneve$"), "cilium", "overlay"),
    (re.compile(r"^cilium_wg0$"), "cilium", "overlay"),
    (re.compile(r"^cilium_(host|net)$"), "cilium", "host-veth"),
    (re.compile(r"^lxc[0-9a-f]{6,}$"), "cilium", "pod-veth"),
    (re.compile(r"^lxc_health$"), "cilium", "pod-veth"),
    (re.compile(r"^cni0$"), "bridge-cni", "bridge"),  # flannel / bridge plugin
    (re.compile(r"^kube-bridge$"), "kube-router", "bridge"),
    (re.compile(r"^weave$"), "weave", "bridge"),
    (re.compile(r"^vethwe-"), "weave", "host-veth"),
    (re.compile(r"^eni[0-9a-f]{6,}$"), "aws-vpc-cni", "pod-veth"),
    (re.compile(r"^azv[0-9a-f]{6,}$"), "azure-cni", "pod-veth"),
    (re.compile(r"^gke[0-9a-f]{6,}$"), "gke", "pod-veth"),
]


@dataclass
class Underlay:
    """The device that carries a tunnel's encapsulated packets."""

    device: str | None
    ifindex: int | None
    mtu: int | None
    family: str  # "ipv4" or "ipv6": the outer header's family
    found_by: str  # "dev", "route-to-remote", "local-address", "default-route", "unknown"
    route_mtu: int | None = None  # an MTU on the route (locked metric or learnt PMTU)

    @property
    def effective_mtu(self) -> int | None:
        """What the underlay can carry toward the remote: the smaller of device and route MTU."""
        values = [v for v in (self.mtu, self.route_mtu) if v]
        return min(values) if values else None


@dataclass
class InterfaceInfo:
    """One interface of a namespace, as `netagent check` and the MTU probe see it."""

    index: int
    name: str
    type: str  # vxlan geneve ipip gre wireguard veth bridge physical loopback other
    kind_raw: str | None  # IFLA_INFO_KIND as the kernel names it (None for plain NICs)
    mtu: int | None
    up: bool
    netns: str = ""
    cni: str | None = None  # which CNI this name belongs to, when recognised
    role: str | None = None  # overlay, bridge, pod-veth, host-veth
    master: str | None = None  # bridge/bond this interface is enslaved to
    vni: int | None = None
    port: int | None = None
    remote: str | None = None
    local: str | None = None
    collect_metadata: bool = False  # "external" mode: remote chosen per packet (Cilium)
    underlay: Underlay | None = None
    overhead: int | None = None
    expected_mtu: int | None = None
    mtu_exceeds: bool | None = None  # configured MTU above expected_mtu (None: cannot tell)
    notes: list[str] = field(default_factory=list)

    @property
    def is_tunnel(self) -> bool:
        return self.type in TUNNEL_TYPES

    def as_dict(self) -> dict:
        out = asdict(self)
        if self.underlay is not None:
            out["underlay"]["effective_mtu"] = self.underlay.effective_mtu
        keep = ("up", "mtu_exceeds") if self.is_tunnel else ("up",)
        return {k: v for k, v in out.items() if v not in (None, [], False) or k in keep}


# --------------------------------------------------------------------------
# Pure arithmetic (unit-tested without a kernel)


def gre_option_bytes(flags: int | None) -> int:
    """Extra GRE header bytes for the checksum/key/sequence flags in `flags`."""
    if not flags:
        return 0
    # Accept the flags in network or host byte order: whichever has bits in
    # the GRE flag positions is the right reading.
    swapped = ((flags & 0xFF) << 8) | ((flags >> 8) & 0xFF)
    if not flags & (_GRE_CSUM | _GRE_KEY | _GRE_SEQ) and swapped & (_GRE_CSUM | _GRE_KEY | _GRE_SEQ):
        flags = swapped
    return _GRE_OPTION * sum(1 for bit in (_GRE_CSUM, _GRE_KEY, _GRE_SEQ) if flags & bit)


def tunnel_overhead(
    kind: str,
    underlay_family: str = "ipv4",
    *,
    geneve_option_bytes: int = 0,
    gre_flags: int | None = None,
) -> int | None:
    """Bytes a tunnel adds to every inner packet, or None for a non-tunnel kind.

    `kind` is our type or the kernel's raw kind (gretap, ip6gre, sit, ...).
    `underlay_family` is the outer header's family: "ipv4" or "ipv6".

        VXLAN      outer IP + UDP 8 + VXLAN 8 + inner Ethernet 14 = 50 / 70
        Geneve     outer IP + UDP 8 + Geneve 8 + inner Ethernet 14 (+ options) = 50 / 70
        IPIP       outer IP = 20 / 40 (sit is always IPv4, ip6tnl always IPv6)
        GRE        outer IP + GRE 4 (+4 each for csum, key, seq) = 24 / 44; gretap adds 14
        WireGuard  outer IP + UDP 8 + WireGuard 32 = 60 / 80
    """
    if underlay_family not in ("ipv4", "ipv6"):
        raise ValueError(f"underlay_family must be ipv4 or ipv6, not {underlay_family!r}")
    if kind == "sit":
        underlay_family = "ipv4"
    elif kind in ("ip6tnl", "ip6gre", "ip6gretap", "ip6erspan"):
        underlay_family = "ipv6"
    ip = _IPV4_HDR if underlay_family == "ipv4" else _IPV6_HDR
    typ = _KIND_TO_TYPE.get(kind, kind)
    if typ == "vxlan":
        return ip + _UDP_HDR + _VXLAN_HDR + _ETH_HDR
    if typ == "geneve":
        if geneve_option_bytes < 0 or geneve_option_bytes % 4:
            raise ValueError("Geneve option length is a non-negative multiple of 4 bytes")
        return ip + _UDP_HDR + _GENEVE_HDR + _ETH_HDR + geneve_option_bytes
    if typ == "ipip":
        return ip
    if typ == "gre":
        size = ip + _GRE_BASE + gre_option_bytes(gre_flags)
        if kind in ("gretap", "ip6gretap"):
            size += _ETH_HDR
        if kind in ("erspan", "ip6erspan"):
            size += 8 + _ETH_HDR  # ERSPAN type II header + mirrored Ethernet frame
        return size
    if typ == "wireguard":
        return ip + _UDP_HDR + _WG_HDR
    return None


def expected_inner_mtu(
    underlay_mtu: int | None,
    kind: str,
    underlay_family: str = "ipv4",
    *,
    geneve_option_bytes: int = 0,
    gre_flags: int | None = None,
) -> int | None:
    """Largest inner MTU that crosses `underlay_mtu` without fragmenting, or None if unknown."""
    overhead = tunnel_overhead(kind, underlay_family, geneve_option_bytes=geneve_option_bytes, gre_flags=gre_flags)
    if overhead is None or not underlay_mtu:
        return None
    return underlay_mtu - overhead


def recognise_cni(name: str) -> tuple[str | None, str | None]:
    """(cni, role) for a device name CNIs use, or (None, None)."""
    for pattern, cni, role in _CNI_NAMES:
        if pattern.match(name):
            return cni, role
    return None, None


def classify(record: dict) -> str:
    """Our interface type from a link record (see _link_record)."""
    kind = record.get("kind")
    if kind:
        return _KIND_TO_TYPE.get(kind, "other")
    if record.get("ifi_type") == ARPHRD_LOOPBACK or record.get("name") == "lo":
        return "loopback"
    # A NIC driver registers no rtnl link kind; a parent bus device
    # (virtio, PCI) confirms it when the kernel exposes one.
    if record.get("parent_dev") or record.get("ifi_type") == ARPHRD_ETHER:
        return "physical"
    return "other"


def _family_of(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"
    except ValueError:
        return None


def tunnel_params(record: dict) -> dict:
    """VNI, port, remote, local, bound device index and options from IFLA_INFO_DATA."""
    data = record.get("data") or {}
    typ = classify(record)
    out: dict = {"vni": None, "port": None, "remote": None, "local": None, "link": None,
                 "collect_metadata": False, "gre_flags": None}
    if typ == "vxlan":
        out["vni"] = data.get("IFLA_VXLAN_ID")
        out["port"] = data.get("IFLA_VXLAN_PORT")
        out["remote"] = data.get("IFLA_VXLAN_GROUP") or data.get("IFLA_VXLAN_GROUP6")
        out["local"] = data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6")
        out["link"] = data.get("IFLA_VXLAN_LINK")
        out["collect_metadata"] = bool(data.get("IFLA_VXLAN_COLLECT_METADATA"))
    elif typ == "geneve":
        out["vni"] = data.get("IFLA_GENEVE_ID")
        out["port"] = data.get("IFLA_GENEVE_PORT")
        out["remote"] = data.get("IFLA_GENEVE_REMOTE") or data.get("IFLA_GENEVE_REMOTE6")
        out["collect_metadata"] = bool(data.get("IFLA_GENEVE_COLLECT_METADATA"))
    elif typ == "ipip":
        out["remote"] = data.get("IFLA_IPTUN_REMOTE")
        out["local"] = data.get("IFLA_IPTUN_LOCAL")
        out["link"] = data.get("IFLA_IPTUN_LINK")
        out["collect_metadata"] = bool(data.get("IFLA_IPTUN_COLLECT_METADATA"))
    elif typ == "gre":
        out["remote"] = data.get("IFLA_GRE_REMOTE")
        out["local"] = data.get("IFLA_GRE_LOCAL")
        out["link"] = data.get("IFLA_GRE_LINK")
        out["gre_flags"] = data.get("IFLA_GRE_OFLAGS")
        out["collect_metadata"] = bool(data.get("IFLA_GRE_COLLECT_METADATA"))
    for key in ("remote", "local"):
        # An unset endpoint is reported as the any-address.
        if out[key] in ("0.0.0.0", "::"):
            out[key] = None
    if out["link"] == 0:
        out["link"] = None
    return out


# --------------------------------------------------------------------------
# Netlink


def _link_record(msg) -> dict:
    """The parts of an RTM_NEWLINK message we use, as a plain dict (testable)."""
    info = msg.get("IFLA_LINKINFO")
    kind = data = None
    if info is not None:
        kind = info.get("IFLA_INFO_KIND")
        raw = info.get("IFLA_INFO_DATA")
        if raw is not None:
            data = {name: value for name, value in raw["attrs"] if name != "UNKNOWN"}
    flags = msg.get("flags") or 0
    return {
        "index": msg.get("index"),
        "name": msg.get("IFLA_IFNAME"),
        "mtu": msg.get("IFLA_MTU"),
        "ifi_type": msg.get("ifi_type"),
        "up": bool(flags & 0x1),  # IFF_UP
        "oper": msg.get("IFLA_OPERSTATE"),
        "kind": kind,
        "data": data or {},
        "master": msg.get("IFLA_MASTER"),
        "link": msg.get("IFLA_LINK"),
        "link_netnsid": msg.get("IFLA_LINK_NETNSID"),
        "parent_dev": msg.get("IFLA_PARENT_DEV_NAME"),
    }


def rtnetlink():
    """A netlink (pyroute2 IPRoute) session in the calling thread's namespace; close it (`with`)."""
    try:
        from pyroute2 import IPRoute
    except ImportError as exc:  # a broken install, not a user error
        raise ProbeUnavailable(f"pyroute2 is not importable ({exc}); run `make setup`") from None
    return IPRoute()


def _route_get(ipr, dst: str) -> tuple[int | None, int | None]:
    """(output ifindex, route MTU) for dst, or (None, None) when unroutable."""
    family = socket.AF_INET6 if _family_of(dst) == "ipv6" else socket.AF_INET
    try:
        routes = ipr.route("get", dst=dst, family=family)
    except Exception:  # NetlinkError (ENETUNREACH...) or a bad address
        return None, None
    if not routes:
        return None, None
    route = routes[0]
    mtu = None
    metrics = route.get("RTA_METRICS")
    if metrics is not None:
        mtu = metrics.get("RTAX_MTU")
    return route.get("RTA_OIF"), mtu


def _address_owner(ipr, address: str) -> int | None:
    family = socket.AF_INET6 if _family_of(address) == "ipv6" else socket.AF_INET
    try:
        for msg in ipr.get_addr(family=family):
            if address in (msg.get("IFA_ADDRESS"), msg.get("IFA_LOCAL")):
                return msg.get("index")
    except Exception:
        return None
    return None


def _default_route_oif(ipr, family: str) -> tuple[int | None, int | None]:
    try:
        fam = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
        for route in ipr.get_default_routes(family=fam):
            oif = route.get("RTA_OIF")
            if oif is None:
                multipath = route.get("RTA_MULTIPATH") or []
                oif = multipath[0]["oif"] if multipath else None
            if oif:
                return oif, None
    except Exception:
        pass
    return None, None


def _resolve_underlay(ipr, rec: dict, params: dict, by_index: dict[int, dict]) -> Underlay:
    family = _family_of(params["remote"]) or _family_of(params["local"]) or "ipv4"
    if rec.get("kind") in ("ip6tnl", "ip6gre", "ip6gretap", "ip6erspan"):
        family = "ipv6"
    ifindex = route_mtu = None
    found_by = "unknown"
    if params["link"]:
        ifindex, found_by = params["link"], "dev"
        if params["remote"]:
            _, route_mtu = _route_get(ipr, params["remote"])
    elif params["remote"] and not ipaddress.ip_address(params["remote"]).is_multicast:
        ifindex, route_mtu = _route_get(ipr, params["remote"])
        found_by = "route-to-remote" if ifindex else "unknown"
    if not ifindex and params["local"]:
        ifindex = _address_owner(ipr, params["local"])
        found_by = "local-address" if ifindex else "unknown"
    if not ifindex:
        ifindex, _ = _default_route_oif(ipr, family)
        found_by = "default-route" if ifindex else "unknown"
    if ifindex == rec["index"]:  # a route through the tunnel itself tells us nothing
        ifindex, found_by = None, "unknown"
    under = by_index.get(ifindex) if ifindex else None
    return Underlay(
        device=under["name"] if under else None,
        ifindex=ifindex,
        mtu=under["mtu"] if under else None,
        family=family,
        found_by=found_by,
        route_mtu=route_mtu,
    )


def build_info(rec: dict, by_index: dict[int, dict], underlay: Underlay | None, ns_name: str = "") -> InterfaceInfo:
    """Assemble an InterfaceInfo from a link record and its resolved underlay (pure)."""
    typ = classify(rec)
    cni, role = recognise_cni(rec["name"] or "")
    if role is None and typ == "veth" and rec.get("link_netnsid") is not None:
        role = "pod-veth" if rec.get("master") is not None or cni else None
    master = by_index.get(rec["master"], {}).get("name") if rec.get("master") else None
    info = InterfaceInfo(
        index=rec["index"], name=rec["name"], type=typ, kind_raw=rec.get("kind"), mtu=rec.get("mtu"),
        up=bool(rec.get("up")), netns=ns_name, cni=cni, role=role, master=master,
    )
    if typ not in TUNNEL_TYPES:
        return info
    params = tunnel_params(rec)
    info.vni, info.port = params["vni"], params["port"]
    info.remote, info.local = params["remote"], params["local"]
    info.collect_metadata = params["collect_metadata"]
    info.underlay = underlay
    family = underlay.family if underlay else (_family_of(params["remote"]) or "ipv4")
    info.overhead = tunnel_overhead(rec.get("kind") or typ, family, gre_flags=params["gre_flags"])
    if typ == "geneve":
        info.notes.append("Geneve options (e.g. Cilium DSR) add to the overhead; not counted")
    if typ == "wireguard":
        info.notes.append("WireGuard endpoints are per peer; underlay taken from the default route")
    if underlay is not None and underlay.effective_mtu:
        info.expected_mtu = underlay.effective_mtu - info.overhead
        if info.mtu:
            info.mtu_exceeds = info.mtu > info.expected_mtu
    else:
        info.notes.append("underlay not found: expected MTU unknown")
    return info


def inventory_here(ns_name: str, ipr=None, links: list | None = None) -> list[InterfaceInfo]:
    """Every interface of the namespace the calling thread is in. `ipr` (rtnetlink()) and
    `links` (its get_links()): a session and a link dump already taken here, to share."""
    if ipr is None:
        with rtnetlink() as ipr:
            return inventory_here(ns_name, ipr, links)
    records = [_link_record(m) for m in (links if links is not None else ipr.get_links())]
    by_index = {r["index"]: r for r in records}
    out = []
    for rec in sorted(records, key=lambda r: r["index"]):
        underlay = None
        if classify(rec) in TUNNEL_TYPES:
            if rec.get("link_netnsid") is not None:
                # Created in another namespace and moved here: its UDP socket and
                # routes live there, so a lookup here would name the wrong device.
                params = tunnel_params(rec)
                family = _family_of(params["remote"]) or _family_of(params["local"]) or "ipv4"
                underlay = Underlay(None, None, None, family, "other-namespace")
            else:
                underlay = _resolve_underlay(ipr, rec, tunnel_params(rec), by_index)
        info = build_info(rec, by_index, underlay, ns_name)
        if underlay is not None and underlay.found_by == "other-namespace":
            info.notes.insert(0, f"underlay is in another namespace (link-netnsid {rec['link_netnsid']}); "
                                 "check that namespace for its device")
        out.append(info)
    return out


def inventory(ns: netns_mod.Netns | None = None) -> list[InterfaceInfo]:
    """Every interface of namespace `ns` (default: our own), by ifindex.

    Raises ProbeUnavailable if the namespace cannot be entered.
    """
    ns = ns or netns_mod.current()
    return netns_mod.run_in(ns, inventory_here, ns.name)


def describe(ns: netns_mod.Netns | None, ifname: str) -> InterfaceInfo:
    """One interface of `ns` by name; UsageError if there is none."""
    for info in inventory(ns):
        if info.name == ifname:
            return info
    raise UsageError(f"no interface {ifname!r} in namespace {(ns or netns_mod.current()).name}")


def _egress_index(dst: str) -> int | None:
    with rtnetlink() as ipr:
        oif, _ = _route_get(ipr, dst)
        return oif


def egress(ns: netns_mod.Netns | None, dst: str) -> InterfaceInfo | None:
    """The interface a packet to `dst` leaves namespace `ns` by (None when unroutable).

    The MTU probe uses it to say "this path goes through vxlan.calico, whose
    MTU should be at most N".
    """
    ns = ns or netns_mod.current()
    if _family_of(dst) is None:
        raise UsageError(f"not an IP address: {dst!r}")
    oif = netns_mod.run_in(ns, _egress_index, dst)
    if oif is None:
        return None
    for info in inventory(ns):
        if info.index == oif:
            return info
    return None
