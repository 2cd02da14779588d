"""One path MTU check, start to finish: target, route, egress device, search.

    report = probe_path("10.2.0.2", netns.resolve("blue"), MtuOptions(proto="tcp"))

Name resolution, the route lookup and the probing run inside the chosen
namespace; the egress device (with its overlay facts) comes from
netagent.overlay, which enters the namespace itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from netagent import netns as netns_mod
from netagent.errors import UsageError
from netagent.mtu import target as target_mod
from netagent.mtu.packets import PROTOS, DEFAULT_PORTS, ProbeFactory, min_probe_size
from netagent.mtu.search import MtuSearch, SearchResult
from netagent.mtu.transport import RawProber

try:  # imported now so that event.duration measures probing, not module loading
    import pyroute2  # noqa: F401
except ImportError:  # overlay and target report what is missing when they need it
    pass

IPV4_DEFAULT_MIN = 552  # net.ipv4.route.min_pmtu: Linux never uses a smaller PMTU
IPV6_MIN_MTU = 1280  # RFC 8200: every IPv6 link carries 1280 bytes
MAX_PACKET = 65535  # the IP total/payload length field
FALLBACK_MTU = 1500  # when the egress device cannot be described


@dataclass
class MtuOptions:
    proto: str = "icmp"
    port: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    timeout: float = 1.0
    retries: int = 2
    family: int | None = None  # 4 or 6 to pick from a name's addresses

    def validate(self) -> None:
        if self.proto not in PROTOS:
            raise UsageError(f"--proto must be one of {', '.join(PROTOS)}, not {self.proto!r}")
        if self.port is not None and self.proto == "icmp":
            raise UsageError("--port applies to --proto udp or tcp only")
        if self.port is not None and not 0 < self.port < 65536:
            raise UsageError(f"--port {self.port}: must be 1-65535")
        if not 0 < self.timeout <= 60:
            raise UsageError(f"--timeout {self.timeout}s: must be above 0 and at most 60s")
        if not 0 <= self.retries <= 10:
            raise UsageError(f"--retries {self.retries}: must be 0-10")
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise UsageError(f"--min {self.min_size} is above --max {self.max_size}")
        if self.family not in (None, 4, 6):
            raise UsageError("address family must be 4 or 6")


@dataclass
class MtuReport:
    target: target_mod.Target
    netns: str
    netns_inode: int
    options: MtuOptions
    source: str
    interface: str | None
    interface_type: str | None
    interface_mtu: int | None
    overlay: dict | None
    lo: int
    hi: int
    result: SearchResult
    kernel_mtu_before: int | None
    kernel_mtu_after: int | None
    started: float  # wall clock
    duration_ns: int
    notes: list[str] = field(default_factory=list)

    @property
    def port(self) -> int | None:
        if self.options.proto == "icmp":
            return None
        return self.options.port or DEFAULT_PORTS[self.options.proto]


def _egress(ns: netns_mod.Netns, ip: str, notes: list[str]):
    """The egress InterfaceInfo from netagent.overlay, or None (with a note) if it cannot say."""
    try:
        from netagent import overlay
    except ImportError as exc:
        notes.append(f"egress device unknown: netagent.overlay not importable ({exc})")
        return None
    try:
        info = overlay.egress(ns, ip)
    except Exception as exc:  # netlink trouble must not stop the probe itself
        notes.append(f"egress device unknown: {type(exc).__name__}: {exc}")
        return None
    if info is None:
        notes.append("egress device unknown: no route found by netlink")
    return info


def overlay_facts(info) -> dict | None:
    """The event's `overlay` object when the egress device is a tunnel."""
    if info is None or not info.is_tunnel:
        return None
    under = info.underlay
    out = {
        "type": info.type,
        "kind": info.kind_raw,
        "underlay": under.device if under else None,
        "underlay_mtu": under.effective_mtu if under else None,
        "overhead": info.overhead,
        "expected_mtu": info.expected_mtu,
        "configured_mtu": info.mtu,
        "mismatch": info.mtu_exceeds,
    }
    if info.vni is not None:
        out["vni"] = info.vni
    if info.cni:
        out["cni"] = info.cni
    if info.notes:
        out["notes"] = list(info.notes)
    return {k: v for k, v in out.items() if v is not None}


def size_range(opts: MtuOptions, family: int, interface_mtu: int | None) -> tuple[int, int]:
    """(lo, hi) probe sizes from the options and the egress MTU; UsageError if impossible."""
    floor = min_probe_size(family, opts.proto)
    hi = opts.max_size if opts.max_size is not None else min(interface_mtu or FALLBACK_MTU, MAX_PACKET)
    if hi > MAX_PACKET:
        raise UsageError(f"--max {hi}: an IP packet is at most {MAX_PACKET} bytes")
    if hi < floor:
        raise UsageError(f"--max {hi}: a {opts.proto} probe over IPv{family} is at least {floor} bytes")
    if opts.min_size is not None:
        lo = opts.min_size
        if lo < floor:
            raise UsageError(f"--min {lo}: a {opts.proto} probe over IPv{family} is at least {floor} bytes")
        if lo > hi:
            raise UsageError(f"--min {lo} is above --max {hi}" if opts.max_size is not None
                             else f"--min {lo} is above the egress interface MTU {hi} (raise --max to probe above it)")
    else:
        lo = min(IPV4_DEFAULT_MIN if family == 4 else IPV6_MIN_MTU, hi)
    return lo, hi


def _search_here(target, source, opts, lo, hi, interface_mtu) -> SearchResult:
    factory = ProbeFactory(target.family, opts.proto, source, target.ip, opts.port)
    locals_ = target_mod.local_addresses()
    with RawProber(factory, target.sockaddr, timeout=opts.timeout, local_mtu=interface_mtu,
                   local_addresses=locals_) as prober:
        return MtuSearch(prober, lo, hi, retries=opts.retries).run()


def probe_path(text: str, ns: netns_mod.Netns | None = None, opts: MtuOptions | None = None) -> MtuReport:
    """Find the path MTU to `text` from namespace `ns` (default: ours).

    Raises UsageError (bad target or sizes), ProbeUnavailable (no route,
    name does not resolve), InsufficientPrivilege (no CAP_NET_RAW).
    """
    ns = ns or netns_mod.current()
    opts = opts or MtuOptions()
    opts.validate()
    target_mod.check_syntax(text)
    started = time.time()
    t0 = time.monotonic_ns()
    target = netns_mod.run_in(ns, target_mod.resolve, text, opts.family)
    route = netns_mod.run_in(ns, target_mod.route_to, target)
    notes: list[str] = []
    info = _egress(ns, target.ip, notes)
    interface_mtu = info.mtu if info is not None else None
    lo, hi = size_range(opts, target.family, interface_mtu)
    result = netns_mod.run_in(ns, _search_here, target, route.source, opts, lo, hi, interface_mtu)
    kernel_after = netns_mod.run_in(ns, target_mod.kernel_route_mtu, target)
    duration = time.monotonic_ns() - t0
    return MtuReport(
        target=target, netns=ns.name, netns_inode=ns.inode, options=opts, source=route.source,
        interface=info.name if info else None, interface_type=info.type if info else None,
        interface_mtu=interface_mtu, overlay=overlay_facts(info), lo=lo, hi=hi, result=result,
        kernel_mtu_before=route.kernel_mtu, kernel_mtu_after=kernel_after,
        started=started, duration_ns=duration, notes=notes,
    )
